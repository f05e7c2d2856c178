using System.Text;
using Infra.Client.Cache;

namespace Infra.Client.Tests;

public class CachePlacementTests
{
    private static readonly CacheNode[] Three =
    [
        new("a", "127.0.0.1:7001"),
        new("b", "127.0.0.1:7002"),
        new("c", "127.0.0.1:7003"),
    ];

    private static byte[] Key(int i) => Encoding.UTF8.GetBytes("key:" + i);

    [Fact]
    public void Keys_spread_over_the_nodes_by_weight()
    {
        var placement = new CachePlacement([new("a", "x:1", 1), new("b", "x:2", 1), new("c", "x:3", 2)]);
        var counts = new int[3];
        for (var i = 0; i < 40_000; i++)
        {
            counts[placement.NodeFor(Key(i))]++;
        }

        Assert.InRange(counts[0], 9_000, 11_000);
        Assert.InRange(counts[1], 9_000, 11_000);
        Assert.InRange(counts[2], 19_000, 21_000);
    }

    [Fact]
    public void Placement_is_the_same_for_every_client_and_ignores_node_order_and_address()
    {
        var one = new CachePlacement(Three);
        var other = new CachePlacement([Three[2] with { EndPoint = "10.0.0.9:6379" }, Three[0], Three[1]]);
        for (var i = 0; i < 1000; i++)
        {
            Assert.Equal(one.Nodes[one.NodeFor(Key(i))].Name, other.Nodes[other.NodeFor(Key(i))].Name);
        }
    }

    [Fact]
    public void A_node_marked_down_loses_only_its_own_keys_and_gets_them_back()
    {
        var placement = new CachePlacement(Three);
        var before = Enumerable.Range(0, 10_000).Select(i => placement.NodeFor(Key(i))).ToArray();

        Assert.True(placement.MarkDown(1));
        Assert.False(placement.MarkDown(1));
        Assert.True(placement.IsDown(1));
        var during = Enumerable.Range(0, 10_000).Select(i => placement.NodeFor(Key(i))).ToArray();
        for (var i = 0; i < before.Length; i++)
        {
            if (before[i] == 1)
            {
                Assert.NotEqual(1, during[i]);
            }
            else
            {
                Assert.Equal(before[i], during[i]);
            }
        }

        // The orphans spread over both survivors, not onto one.
        var moved = during.Where((n, i) => before[i] == 1).ToArray();
        Assert.InRange(moved.Count(n => n == 0), moved.Length / 3, moved.Length * 2 / 3);

        Assert.True(placement.MarkUp(1));
        Assert.Equal(before, Enumerable.Range(0, 10_000).Select(i => placement.NodeFor(Key(i))));
    }

    [Fact]
    public void A_key_is_always_on_its_home_or_its_runner_up_whichever_node_a_client_thinks_is_down()
    {
        var placement = new CachePlacement(Three);
        var other = new CachePlacement(Three);
        for (var i = 0; i < 300; i++)
        {
            var key = Encoding.UTF8.GetBytes($"session:{i}");
            var (home, runnerUp) = placement.Candidates(key);
            Assert.NotEqual(home, runnerUp);
            Assert.Equal(home, placement.NodeFor(key));
            other.MarkDown(home);
            Assert.Equal(runnerUp, other.NodeFor(key));
            other.MarkUp(home);
        }

        Assert.Equal((0, 0), new CachePlacement([Three[0]]).Candidates("k"u8));
    }

    [Fact]
    public void With_every_node_down_keys_stay_on_their_own_nodes()
    {
        var placement = new CachePlacement(Three);
        var before = Enumerable.Range(0, 1000).Select(i => placement.NodeFor(Key(i))).ToArray();
        placement.MarkDown(0);
        placement.MarkDown(1);
        placement.MarkDown(2);
        Assert.Equal(before, Enumerable.Range(0, 1000).Select(i => placement.NodeFor(Key(i))));
    }

    [Theory]
    [InlineData("{user:42}:profile", "user:42")]
    [InlineData("session:{user:42}", "user:42")]
    [InlineData("{user:42}{other}", "user:42")]
    [InlineData("plain", "plain")]
    [InlineData("{}empty", "{}empty")]
    [InlineData("{unclosed", "{unclosed")]
    [InlineData("a{b}c{d}", "b")]
    [InlineData("", "")]
    public void Hash_tags_follow_redis_cluster(string key, string hashed) =>
        Assert.Equal(hashed, Encoding.UTF8.GetString(CachePlacement.HashPart(Encoding.UTF8.GetBytes(key))));

    [Fact]
    public void Keys_sharing_a_hash_tag_share_a_node()
    {
        var placement = new CachePlacement(Three);
        for (var i = 0; i < 200; i++)
        {
            var tag = "{user:" + i + "}";
            Assert.Equal(placement.NodeFor(Encoding.UTF8.GetBytes(tag + ":profile")), placement.NodeFor(Encoding.UTF8.GetBytes(tag + ":cart")));
        }
    }

    [Fact]
    public void Bad_node_sets_are_refused()
    {
        Assert.Throws<ArgumentException>(() => new CachePlacement([]));
        Assert.Throws<ArgumentException>(() => new CachePlacement([new("a", "x:1"), new("a", "x:2")]));
        Assert.Throws<ArgumentException>(() => new CachePlacement([new("a", "x:1", 0)]));
        Assert.Throws<ArgumentOutOfRangeException>(() => new CachePlacement(Three).MarkDown(3));
    }
}
