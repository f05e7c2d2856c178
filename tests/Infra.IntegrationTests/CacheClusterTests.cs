using Infra.Client.Cache;
using Infra.IntegrationTests.Harness;
using StackExchange.Redis;

namespace Infra.IntegrationTests;

/// <summary>Three real cache servers behind the client-side picker; one of them is SIGKILLed.</summary>
public class CacheClusterTests
{
    private const int Keys = 3000;

    [Fact]
    public async Task Each_key_lives_on_the_node_the_picker_names_and_killing_a_node_loses_only_its_keys()
    {
        var servers = await StartServersAsync();
        try
        {
            await using var cluster = await ConnectAsync(servers, eject: false);
            var owners = await WriteKeysAsync(cluster);

            // Each key is on its owner and nowhere else, and every node got a fair share.
            for (var n = 0; n < servers.Length; n++)
            {
                await using var direct = await servers[n].ConnectAsync();
                var server = direct.GetServer(servers[n].EndPoint);
                var size = await server.DatabaseSizeAsync();
                Assert.Equal(owners.Count(o => o == n), size);
                Assert.InRange(size, Keys / 3 * 0.8, Keys / 3 * 1.2);
                var db = direct.GetDatabase();
                for (var i = 0; i < Keys; i += 7)
                {
                    Assert.Equal(owners[i] == n, await db.KeyExistsAsync("key:" + i));
                }
            }

            servers[1].Process.Kill();
            await Eventually.HoldsAsync(() => Task.FromResult(!cluster.GetConnection(1).IsConnected), "the client to see node 1 gone");

            for (var i = 0; i < Keys; i++)
            {
                var db = cluster.GetDatabase("key:" + i);
                if (owners[i] == 1)
                {
                    // Fails fast (no backlog) with the client's connection error: a read-through cache's miss.
                    await Assert.ThrowsAsync<RedisConnectionException>(() => db.StringGetAsync("key:" + i));
                }
                else
                {
                    Assert.Equal("value:" + i, await db.StringGetAsync("key:" + i));
                }
            }
        }
        finally
        {
            await DisposeAllAsync(servers);
        }
    }

    [Fact]
    public async Task With_ejection_a_dead_nodes_keys_move_to_the_survivors_and_no_other_key_moves()
    {
        var servers = await StartServersAsync();
        try
        {
            await using var cluster = await ConnectAsync(servers, eject: true);
            var owners = await WriteKeysAsync(cluster);
            var ejected = new TaskCompletionSource<CacheNodeEventArgs>(TaskCreationOptions.RunContinuationsAsynchronously);
            cluster.NodeChanged += (_, e) => ejected.TrySetResult(e);

            servers[1].Process.Kill();
            await Eventually.HoldsAsync(() => Task.FromResult(cluster.Placement.IsDown(1)), "node 1 to be ejected");
            var change = await ejected.Task.WaitAsync(TimeSpan.FromSeconds(5));
            Assert.Equal(1, change.Index);
            Assert.False(change.Up);

            var orphans = 0;
            for (var i = 0; i < Keys; i++)
            {
                var key = "key:" + i;
                var now = cluster.NodeFor(key);
                if (owners[i] == 1)
                {
                    orphans++;
                    Assert.NotEqual(1, now);
                    Assert.True((await cluster.GetDatabase(key).StringGetAsync(key)).IsNull);
                    Assert.True(await cluster.GetDatabase(key).StringSetAsync(key, "again:" + i));
                }
                else
                {
                    Assert.Equal(owners[i], now);
                }
            }

            Assert.True(orphans > 0);
            for (var i = 0; i < Keys; i++)
            {
                var key = "key:" + i;
                Assert.Equal((owners[i] == 1 ? "again:" : "value:") + i, await cluster.GetDatabase(key).StringGetAsync(key));
            }
        }
        finally
        {
            await DisposeAllAsync(servers);
        }
    }

    private static async Task<CacheServerProcess[]> StartServersAsync() =>
        await Task.WhenAll(Enumerable.Range(0, 3).Select(_ => CacheServerProcess.StartAsync("--shards", "4")));

    private static Task<CacheCluster> ConnectAsync(CacheServerProcess[] servers, bool eject)
    {
        var options = new CacheClusterOptions { EjectFailedNodes = eject };
        for (var n = 0; n < servers.Length; n++)
        {
            options.Nodes.Add(new CacheNode("cache-" + n, servers[n].EndPoint));
        }

        options.Configure = config =>
        {
            config.ConnectTimeout = 10_000;
            config.SyncTimeout = 10_000;
            config.AsyncTimeout = 10_000;
        };
        return CacheCluster.ConnectAsync(options);
    }

    private static async Task<int[]> WriteKeysAsync(CacheCluster cluster)
    {
        var owners = new int[Keys];
        for (var i = 0; i < Keys; i++)
        {
            var key = "key:" + i;
            owners[i] = cluster.NodeFor(key);
            Assert.True(await cluster.GetDatabase(key).StringSetAsync(key, "value:" + i));
        }

        return owners;
    }

    private static async Task DisposeAllAsync(CacheServerProcess[] servers)
    {
        foreach (var server in servers)
        {
            await server.DisposeAsync();
        }
    }
}
