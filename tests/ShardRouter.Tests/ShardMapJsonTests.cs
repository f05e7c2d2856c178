using System.Text;
using System.Text.Json;
using Infra.ShardRouter.Placement;

namespace Infra.ShardRouter.Tests;

/// <summary>
/// The shard map as JSON: what is written reads back the same, the map's changes bump its version,
/// and anything hostile or malformed is a <see cref="FormatException"/> saying what is wrong.
/// </summary>
public sealed class ShardMapJsonTests
{
    private const string Valid = """
        {"version": 7, "slots": 8,
         "shards": [{"id": "a", "master": "127.0.0.1:7001", "replicas": ["127.0.0.1:7002"], "epoch": 3, "weight": 2},
                    {"id": "b", "master": "127.0.0.1:7003", "replicas": [], "draining": true}],
         "tables": [{"name": "users", "shardKey": "id"}],
         "owners": [["a", 0, 3], ["b", 4, 5], ["a", 6, 7]]}
        """;

    private static ShardMap Parse(string json) => ShardMap.Parse(Encoding.UTF8.GetBytes(json));

    private static ShardMap Sample(int slots = 4096)
    {
        ShardInfo[] shards =
        [
            new("s-0", "127.0.0.1:7000", ["127.0.0.1:7100", "[::1]:7200"], Epoch: 4, Weight: 1.5),
            new("s_1", "localhost:7001", [], Epoch: 0, Weight: 0.25),
            new("s.2", "db2.example:7002", ["db2-r.example:7102"], Weight: 3),
        ];
        var map = ShardMap.Seed(shards, slots);
        map = map.WithShard(map.Shards[1] with { Draining = true });
        map = map.WithTables([new TableInfo("users", "user_id"), new TableInfo("Orders", "customer")]);

        // Owners that are not what placement would pick: runs of every length.
        map = map.WithOwner(0, "s_1").WithOwner(1, "s.2").WithOwner(slots - 1, "s-0");
        return map;
    }

    [Fact]
    public void A_map_reads_back_as_it_was_written()
    {
        var map = Sample();
        var json = map.ToJson();
        var back = ShardMap.Parse(json);

        Assert.Equal(map.Version, back.Version);
        Assert.Equal(map.Slots, back.Slots);
        Assert.Equal(map.Shards.Count, back.Shards.Count);
        for (var i = 0; i < map.Shards.Count; i++)
        {
            var (a, b) = (map.Shards[i], back.Shards[i]);
            Assert.Equal(a.Id, b.Id);
            Assert.Equal(a.Master, b.Master);
            Assert.Equal(a.Replicas, b.Replicas);
            Assert.Equal(a.Epoch, b.Epoch);
            Assert.Equal(a.Weight, b.Weight);
            Assert.Equal(a.Draining, b.Draining);
        }

        Assert.Equal(map.Tables, back.Tables);
        Assert.Equal(map.Owners, back.Owners);
        Assert.Equal("s_1", back.OwnerOf(0).Id);
        Assert.Equal("s.2", back.OwnerOf(1).Id);
        Assert.Equal("s-0", back.OwnerOf(4095).Id);
        Assert.True(back.Find("s_1")!.Draining);
        Assert.Equal(0, back.Find("s_1")!.Epoch);

        // And again: the text is stable.
        Assert.Equal(json, back.ToJson());
    }

    [Fact]
    public void A_hand_written_map_reads_as_written()
    {
        var map = Parse(Valid);
        Assert.Equal(7, map.Version);
        Assert.Equal(8, map.Slots);
        Assert.Equal(["a", "b"], map.Shards.Select(s => s.Id));
        Assert.Equal(["127.0.0.1:7002"], map.Shards[0].Replicas);
        Assert.Equal(3, map.Shards[0].Epoch);
        Assert.Equal(2.0, map.Shards[0].Weight);
        Assert.False(map.Shards[0].Draining);
        Assert.Equal(1, map.Shards[1].Epoch);
        Assert.Equal(1.0, map.Shards[1].Weight);
        Assert.True(map.Shards[1].Draining);
        Assert.Equal([new TableInfo("users", "id")], map.Tables);
        Assert.Equal([0, 0, 0, 0, 1, 1, 0, 0], map.Owners);
        Assert.Equal([("a", 0, 3), ("b", 4, 5), ("a", 6, 7)], map.Runs().Select(r => (map.Shards[r.Owner].Id, r.First, r.Last)));
        Assert.Equal([6, 2], map.SlotCounts());
    }

    [Fact]
    public void A_seed_file_places_slots_by_itself()
    {
        var map = Parse("""{"shards": [{"id": "a", "master": "h1:1"}, {"id": "b", "master": "h2:1", "replicas": null, "weight": 3}]}""");
        Assert.Equal(1, map.Version);
        Assert.Equal(4096, map.Slots);
        Assert.Empty(map.Tables);
        Assert.Empty(map.Shards[0].Replicas);
        Assert.Equal(1, map.Shards[0].Epoch);
        var seeded = ShardMap.Seed([new ShardInfo("a", "h1:1", []), new ShardInfo("b", "h2:1", [], Weight: 3)]);
        Assert.Equal(seeded.Owners, map.Owners);
        Assert.Equal([1024, 3072], map.SlotCounts());
    }

    [Fact]
    public void A_slot_move_records_the_cleanup_of_its_old_owner_durably_until_it_is_done()
    {
        var map = ShardMap.Seed([new ShardInfo("a", "h1:1", []), new ShardInfo("b", "h2:1", []), new ShardInfo("c", "h3:1", [])]);
        var from = map.OwnerOf(7).Id;
        var to = map.Shards.First(s => s.Id != from).Id;
        var moved = map.WithOwner(7, to);
        Assert.Equal([new SlotCleanup(7, from)], moved.Cleanups);

        // Written with the flip, read back after a restart.
        var reread = ShardMap.Parse(moved.ToJson());
        Assert.Equal(moved.Cleanups, reread.Cleanups);
        Assert.Equal(moved.Owners, reread.Owners);

        // The slot cannot go back to a shard that still holds its stale rows.
        Assert.Throws<InvalidOperationException>(() => reread.WithOwner(7, from));

        var done = reread.WithoutCleanup(new SlotCleanup(7, from));
        Assert.Empty(done.Cleanups);
        Assert.Equal(reread.Version + 1, done.Version);
        Assert.Same(done, done.WithoutCleanup(new SlotCleanup(7, from)));
        Assert.Equal(from, done.WithOwner(7, from).OwnerOf(7).Id);

        // Other changes keep pending cleanups.
        var other = map.Shards.First(s => s.Id != from && s.Id != to).Id;
        var two = moved.WithOwner(8, moved.OwnerOf(8).Id == other ? to : other);
        Assert.Equal(2, two.Cleanups.Count);
        Assert.Equal(two.Cleanups, two.WithTables([new TableInfo("t", "k")]).WithShard(two.Shards[0] with { Weight = 2 }).Cleanups);
    }

    [Theory]
    [InlineData("[[1, \"nope\"]]")]
    [InlineData("[[4096, \"a\"]]")]
    [InlineData("[[-1, \"a\"]]")]
    [InlineData("[[1]]")]
    [InlineData("[[\"1\", \"a\"]]")]
    [InlineData("{\"slot\": 1}")]
    [InlineData("[[1, 2]]")]
    public void Bad_cleanups_are_refused(string cleanups)
    {
        var json = "{\"slots\": 4096, \"shards\": [{\"id\": \"a\", \"master\": \"h1:1\"}], \"owners\": [[\"a\", 0, 4095]], \"cleanups\": " + cleanups + "}";
        Assert.Throws<FormatException>(() => Parse(json));
    }

    [Fact]
    public void Changes_bump_the_version()
    {
        var map = ShardMap.Seed([new ShardInfo("a", "h1:1", []), new ShardInfo("b", "h2:1", [])]);
        Assert.Equal(1, map.Version);

        var moved = map.WithOwner(0, map.Shards[1 - map.Owners[0]].Id);
        Assert.Equal(2, moved.Version);
        Assert.NotEqual(map.Owners[0], moved.Owners[0]);
        Assert.Equal(map.Owners.Skip(1), moved.Owners.Skip(1));
        Assert.Throws<ArgumentException>(() => map.WithOwner(0, "nope"));

        var tabled = moved.WithTables([new TableInfo("t", "k")]);
        Assert.Equal(3, tabled.Version);
        Assert.Equal([new TableInfo("t", "k")], tabled.Tables);

        // Re-registering a table (any case) replaces it; tables stay sorted by name.
        var retabled = tabled.WithTables([new TableInfo("T", "k2"), new TableInfo("a", "x")]);
        Assert.Equal(4, retabled.Version);
        Assert.Equal([new TableInfo("T", "k2"), new TableInfo("a", "x")], retabled.Tables);

        var grown = retabled.WithShard(new ShardInfo("c", "h3:1", []));
        Assert.Equal(5, grown.Version);
        Assert.Equal(retabled.Tables, grown.Tables);
        Assert.Equal(retabled.Owners, grown.Owners);

        // "c" owns nothing yet, so it can go; indices of later shards shift down.
        var shrunk = grown.Without("c");
        Assert.Equal(6, shrunk.Version);
        Assert.Equal(["a", "b"], shrunk.Shards.Select(s => s.Id));
        Assert.Equal(retabled.Owners, shrunk.Owners);
        Assert.Same(shrunk, shrunk.Without("nope"));

        var empty = grown.WithShard(grown.Shards[0] with { Draining = true });
        for (var slot = 0; slot < empty.Slots; slot++)
        {
            if (empty.OwnerOf(slot).Id == "a")
            {
                empty = empty.WithOwner(slot, "c");
            }
        }

        var withoutA = empty.Without("a");
        Assert.Equal(empty.Version + 1, withoutA.Version);
        Assert.Equal(["b", "c"], withoutA.Shards.Select(s => s.Id));
        for (var slot = 0; slot < empty.Slots; slot++)
        {
            Assert.Equal(empty.OwnerOf(slot).Id, withoutA.OwnerOf(slot).Id);
        }
    }

    [Fact]
    public void A_shard_that_owns_slots_cannot_be_dropped()
    {
        var map = ShardMap.Seed([new ShardInfo("a", "h1:1", []), new ShardInfo("b", "h2:1", [])]);
        var error = Assert.Throws<InvalidOperationException>(() => map.Without("a"));
        Assert.Contains("still owns slots", error.Message, StringComparison.Ordinal);
        var draining = map.WithShard(map.Shards[0] with { Draining = true });
        Assert.Throws<InvalidOperationException>(() => draining.Without("a"));
    }

    [Fact]
    public void Invalid_shard_lists_are_refused_when_changing_the_map()
    {
        var map = ShardMap.Seed([new ShardInfo("a", "h1:1", [])]);
        Assert.Throws<FormatException>(() => ShardMap.Seed([]));
        Assert.Throws<FormatException>(() => map.WithShard(map.Shards[0] with { Draining = true }));
        Assert.Throws<FormatException>(() => map.WithShard(new ShardInfo("b", "H1:1", [])));
        Assert.Throws<FormatException>(() => ShardMap.Seed([.. Enumerable.Range(0, 257).Select(i => new ShardInfo($"s{i}", $"h:{i + 1}", []))]));
        var two = ShardMap.Seed([new ShardInfo("a", "h1:1", []), new ShardInfo("b", "h2:1", [])]).WithShard(new ShardInfo("a", "h1:1", [], Draining: true));
        Assert.Contains("every shard is draining", Assert.Throws<FormatException>(() => two.WithShard(new ShardInfo("b", "h2:1", [], Draining: true))).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_finished_cleanup_keeps_its_fan_out_floor_in_the_map_across_restarts_and_changes()
    {
        var map = ShardMap.Seed([new ShardInfo("a", "h1:1", []), new ShardInfo("b", "h2:1", [])]);
        var from = map.OwnerOf(7).Id;
        var to = map.Shards.First(s => s.Id != from).Id;
        var done = map.WithOwner(7, to).WithoutCleanup(new SlotCleanup(7, from)).WithFanOutFloor(from, 42);
        Assert.Equal(42, done.Find(from)!.FanOutFloor);
        Assert.Equal(0, done.Find(to)!.FanOutFloor);

        // Only raised; unknown shards change nothing.
        Assert.Same(done, done.WithFanOutFloor(from, 41));
        Assert.Same(done, done.WithFanOutFloor(from, 42));
        Assert.Same(done, done.WithFanOutFloor("nope", 99));
        Assert.Equal(43, done.WithFanOutFloor(from, 43).Find(from)!.FanOutFloor);

        // Read back after a restart; kept by a failover's change of master and by other map changes.
        var reread = ShardMap.Parse(done.ToJson());
        Assert.Equal(42, reread.Find(from)!.FanOutFloor);
        var failedOver = reread.WithShard(reread.Find(from)! with { Master = "h9:1", Epoch = 2 }).WithTables([new TableInfo("t", "k")]);
        Assert.Equal(42, ShardMap.Parse(failedOver.ToJson()).Find(from)!.FanOutFloor);

        // A map without floors is written without the field, and reads back (as a map written before the field existed) with floor 0.
        Assert.DoesNotContain("fanOutFloor", System.Text.Encoding.UTF8.GetString(map.ToJson()), StringComparison.Ordinal);
        Assert.All(ShardMap.Parse(map.ToJson()).Shards, s => Assert.Equal(0, s.FanOutFloor));
    }

    public static TheoryData<string, string> Hostile => new()
    {
        // Not a map at all
        { "", "not valid JSON" },
        { "   ", "not valid JSON" },
        { "not json", "not valid JSON" },
        { "{\"shards\": [}", "not valid JSON" },
        { "{\"shards\": []} trailing", "not valid JSON" },
        { "null", "expected {\"shards\"" },
        { "42", "expected {\"shards\"" },
        { "\"shards\"", "expected {\"shards\"" },
        { "[]", "expected {\"shards\"" },
        { "{}", "expected {\"shards\"" },
        { "{\"shards\": null}", "expected {\"shards\"" },
        { "{\"shards\": {}}", "expected {\"shards\"" },
        { "{\"shards\": \"a\"}", "expected {\"shards\"" },
        { "{\"shards\": []}", "at least one shard" },
        { "{\"shards\": [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]}", "not valid JSON" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"x\": {\"a\": {\"b\": {\"c\": {\"d\": {\"e\": {\"f\": {\"g\": 1}}}}}}}}]}", "not valid JSON" },

        // Shards
        { "{\"shards\": [1]}", "shard 1 is not an object" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}, null]}", "shard 2 is not an object" },
        { "{\"shards\": [{\"master\": \"h:1\"}]}", "has no \"id\"" },
        { "{\"shards\": [{\"id\": 5, \"master\": \"h:1\"}]}", "has no \"id\"" },
        { "{\"shards\": [{\"id\": \"\", \"master\": \"h:1\"}]}", "must be 1-64 letters" },
        { "{\"shards\": [{\"id\": \"a b\", \"master\": \"h:1\"}]}", "must be 1-64 letters" },
        { "{\"shards\": [{\"id\": \"a/b\", \"master\": \"h:1\"}]}", "must be 1-64 letters" },
        { "{\"shards\": [{\"id\": \"a\\\"b\", \"master\": \"h:1\"}]}", "must be 1-64 letters" },
        { "{\"shards\": [{\"id\": \"\\u00e9\", \"master\": \"h:1\"}]}", "must be 1-64 letters" },
        { "{\"shards\": [{\"id\": \"a\\u0000\", \"master\": \"h:1\"}]}", "must be 1-64 letters" },
        { "{\"shards\": [{\"id\": \"" + new string('x', 65) + "\", \"master\": \"h:1\"}]}", "must be 1-64 letters" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}, {\"id\": \"a\", \"master\": \"h:2\"}]}", "shard id a appears twice" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}, {\"id\": \"b\", \"master\": \"h:1\"}]}", "node h:1 appears twice" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"replicas\": [\"h:2\"]}, {\"id\": \"b\", \"master\": \"H:2\"}]}", "appears twice" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"replicas\": [\"h:1\"]}]}", "node h:1 appears twice" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"replicas\": [\"h:2\", \"h:2\"]}]}", "node h:2 appears twice" },
        { "{\"shards\": [{\"id\": \"a\"}]}", "has no \"master\"" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": 7001}]}", "has no \"master\"" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"localhost\"}]}", "is not host:port" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"localhost:0\"}]}", "is not host:port" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"localhost:65536\"}]}", "is not host:port" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"localhost:-1\"}]}", "is not host:port" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \":7001\"}]}", "is not host:port" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"\"}]}", "is not host:port" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"replicas\": \"h:2\"}]}", "\"replicas\" must be an array" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"replicas\": {}}]}", "\"replicas\" must be an array" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"replicas\": [2]}]}", "a replica is not a string" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"replicas\": [null]}]}", "a replica is not a string" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"replicas\": [[\"h:2\"]]}]}", "a replica is not a string" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"replicas\": [\"h2\"]}]}", "replica 'h2' is not host:port" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"weight\": 0}]}", "\"weight\" must be" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"weight\": -1}]}", "\"weight\" must be" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"weight\": -0.0}]}", "\"weight\" must be" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"weight\": 1000001}]}", "\"weight\" must be" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"weight\": 1e308}]}", "\"weight\" must be" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"weight\": 1e400}]}", "\"weight\" must be" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"weight\": \"2\"}]}", "\"weight\" must be" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"weight\": true}]}", "\"weight\" must be" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"weight\": null}]}", "\"weight\" must be" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"epoch\": -1}]}", "\"epoch\" must be" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"draining\": \"yes\"}]}", "\"draining\" must be true or false" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"tables\": [{\"name\": \"t\", \"shardKey\": \"k\"}, {\"name\": \"T\", \"shardKey\": \"k\"}]}", "table T appears twice" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"epoch\": 1.5}]}", "\"epoch\" must be" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"epoch\": 1e30}]}", "\"epoch\" must be" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"fanOutFloor\": -1}]}", "\"fanOutFloor\" must be" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"fanOutFloor\": 2.5}]}", "\"fanOutFloor\" must be" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"fanOutFloor\": \"7\"}]}", "\"fanOutFloor\" must be" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"fanOutFloor\": 1e30}]}", "\"fanOutFloor\" must be" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"fanOutFloor\": null}]}", "\"fanOutFloor\" must be" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"epoch\": \"1\"}]}", "\"epoch\" must be" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"epoch\": null}]}", "\"epoch\" must be" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"draining\": true}]}", "every shard is draining" },

        // Map fields
        { "{\"slots\": 0, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}]}", "\"slots\" must be" },
        { "{\"slots\": -4096, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}]}", "\"slots\" must be" },
        { "{\"slots\": 1048577, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}]}", "\"slots\" must be" },
        { "{\"slots\": 99999999999, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}]}", "\"slots\" must be" },
        { "{\"slots\": 4096.5, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}]}", "\"slots\" must be" },
        { "{\"slots\": \"4096\", \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}]}", "\"slots\" must be" },
        { "{\"slots\": null, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}]}", "\"slots\" must be" },
        { "{\"version\": 0, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}]}", "\"version\" must be" },
        { "{\"version\": -3, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}]}", "\"version\" must be" },
        { "{\"version\": \"2\", \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}]}", "\"version\" must be" },
        { "{\"version\": [], \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}]}", "\"version\" must be" },

        // Owners
        { "{\"slots\": 4, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"owners\": {}}", "\"owners\" must be an array" },
        { "{\"slots\": 4, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"owners\": null}", "\"owners\" must be an array" },
        { "{\"slots\": 4, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"owners\": []}", "slot 0 has no owner" },
        { "{\"slots\": 4, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"owners\": [[\"a\", 0, 2]]}", "slot 3 has no owner" },
        { "{\"slots\": 4, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"owners\": [[\"a\", 0, 1], [\"a\", 3, 3]]}", "slot 2 has no owner" },
        { "{\"slots\": 4, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}, {\"id\": \"b\", \"master\": \"h:2\"}], \"owners\": [[\"a\", 0, 2], [\"b\", 2, 3]]}", "slot 2 has two owners" },
        { "{\"slots\": 4, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"owners\": [[\"a\", 0, 3], [\"a\", 0, 3]]}", "slot 0 has two owners" },
        { "{\"slots\": 4, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"owners\": [[\"b\", 0, 3]]}", "names shard 'b', which is not in \"shards\"" },
        { "{\"slots\": 4, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"owners\": [[\"A\", 0, 3]]}", "names shard 'A'" },
        { "{\"slots\": 4, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"owners\": [[\"a\", 0, 4]]}", "within the slots" },
        { "{\"slots\": 4, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"owners\": [[\"a\", -1, 3]]}", "within the slots" },
        { "{\"slots\": 4, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"owners\": [[\"a\", 3, 0]]}", "within the slots" },
        { "{\"slots\": 4, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"owners\": [[\"a\", 0, 99999999999]]}", "within the slots" },
        { "{\"slots\": 4, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"owners\": [[\"a\", 0, 3.5]]}", "within the slots" },
        { "{\"slots\": 4, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"owners\": [[\"a\", \"0\", \"3\"]]}", "within the slots" },
        { "{\"slots\": 4, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"owners\": [[\"a\", null, 3]]}", "within the slots" },
        { "{\"slots\": 4, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"owners\": [[\"a\", 0]]}", "within the slots" },
        { "{\"slots\": 4, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"owners\": [[\"a\", 0, 3, 4]]}", "within the slots" },
        { "{\"slots\": 4, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"owners\": [[0, 0, 3]]}", "within the slots" },
        { "{\"slots\": 4, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"owners\": [\"a\"]}", "within the slots" },
        { "{\"slots\": 4, \"shards\": [{\"id\": \"a\", \"master\": \"h:1\", \"draining\": true}], \"owners\": [[\"a\", 0, 3]]}", "every shard is draining" },
        { "{\"slots\": 4, \"shards\": [], \"owners\": [[\"a\", 0, 3]]}", "at least one shard" },

        // Tables
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"tables\": {}}", "\"tables\" must be an array" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"tables\": [\"users\"]}", "a table is {\"name\", \"shardKey\"}" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"tables\": [{\"name\": \"users\"}]}", "a table is {\"name\", \"shardKey\"}" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"tables\": [{\"name\": 1, \"shardKey\": \"id\"}]}", "a table is {\"name\", \"shardKey\"}" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"tables\": [{\"name\": \"\", \"shardKey\": \"id\"}]}", "must be a plain identifier" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"tables\": [{\"name\": \"1users\", \"shardKey\": \"id\"}]}", "must be a plain identifier" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"tables\": [{\"name\": \"users; DROP TABLE x\", \"shardKey\": \"id\"}]}", "must be a plain identifier" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"tables\": [{\"name\": \"us\\\"ers\", \"shardKey\": \"id\"}]}", "must be a plain identifier" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"tables\": [{\"name\": \"main.users\", \"shardKey\": \"id\"}]}", "must be a plain identifier" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"tables\": [{\"name\": \"us\\u00e9rs\", \"shardKey\": \"id\"}]}", "must be a plain identifier" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"tables\": [{\"name\": \"" + new string('t', 129) + "\", \"shardKey\": \"id\"}]}", "must be a plain identifier" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"tables\": [{\"name\": \"users\", \"shardKey\": \"user id\"}]}", "table users: shard key 'user id' must be a plain identifier" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"tables\": [{\"name\": \"_infra_log\", \"shardKey\": \"id\"}]}", "is reserved" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"tables\": [{\"name\": \"_INFRAmeta\", \"shardKey\": \"id\"}]}", "is reserved" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"tables\": [{\"name\": \"sqlite_master\", \"shardKey\": \"id\"}]}", "is reserved" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"tables\": [{\"name\": \"SQLite_x\", \"shardKey\": \"id\"}]}", "is reserved" },
        { "{\"shards\": [{\"id\": \"a\", \"master\": \"h:1\"}], \"tables\": [{\"name\": \"users\", \"shardKey\": \"_infra_slot\"}]}", "is reserved" },
    };

    [Theory]
    [MemberData(nameof(Hostile))]
    public void Hostile_maps_are_refused_with_the_reason(string json, string reason)
    {
        var error = Assert.Throws<FormatException>(() => Parse(json));
        Assert.Contains(reason, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Every_prefix_of_a_valid_map_is_refused()
    {
        var full = Encoding.UTF8.GetBytes(Valid);
        Assert.Equal(7, ShardMap.Parse(full).Version);
        for (var length = 0; length < full.Length; length++)
        {
            // A prefix that ends in whitespace after the closing brace would be whole; there is none here.
            var error = Assert.Throws<FormatException>(() => ShardMap.Parse(full.AsSpan(0, length)));
            Assert.False(string.IsNullOrWhiteSpace(error.Message));
        }

        var written = Sample(slots: 16).ToJson();
        for (var length = 0; length < written.Length; length++)
        {
            Assert.Throws<FormatException>(() => ShardMap.Parse(written.AsSpan(0, length)));
        }
    }

    [Theory]
    [InlineData("""{"shards": [{"id": "aX", "master": "h:1"}]}""", "\"id\" is not valid UTF-8")]
    [InlineData("""{"shards": [{"id": "a", "master": "hX:1"}]}""", "\"master\" is not valid UTF-8")]
    [InlineData("""{"shards": [{"id": "a", "master": "h:1", "replicas": ["X:2"]}]}""", "a replica is not valid UTF-8")]
    [InlineData("""{"shards": [{"id": "a", "master": "h:1"}], "tables": [{"name": "tX", "shardKey": "k"}]}""", "table name is not valid UTF-8")]
    [InlineData("""{"shards": [{"id": "a", "master": "h:1"}], "tables": [{"name": "t", "shardKey": "kX"}]}""", "shard key is not valid UTF-8")]
    [InlineData("""{"slots": 1, "shards": [{"id": "a", "master": "h:1"}], "owners": [["aX", 0, 0]]}""", "\"owners\" is not valid UTF-8")]
    public void Invalid_utf8_is_refused(string text, string reason)
    {
        var json = Encoding.UTF8.GetBytes(text);
        json[Array.IndexOf(json, (byte)'X')] = 0xFF;
        var error = Assert.Throws<FormatException>(() => ShardMap.Parse(json));
        Assert.Contains(reason, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Three_hundred_shards_are_too_many()
    {
        var json = "{\"shards\": [" + string.Join(", ", Enumerable.Range(0, 300).Select(i => $"{{\"id\": \"s{i}\", \"master\": \"h:{i + 1}\"}}")) + "]}";
        var error = Assert.Throws<FormatException>(() => Parse(json));
        Assert.Contains("300 shards; the limit is 256", error.Message, StringComparison.Ordinal);

        // The limit itself is fine.
        var most = "{\"shards\": [" + string.Join(", ", Enumerable.Range(0, 256).Select(i => $"{{\"id\": \"s{i}\", \"master\": \"h:{i + 1}\"}}")) + "]}";
        var map = Parse(most);
        Assert.Equal(256, map.Shards.Count);
        Assert.All(map.SlotCounts(), c => Assert.Equal(16, c));
    }

    [Fact]
    public void Unknown_fields_and_duplicate_keys_do_not_break_the_map()
    {
        var map = Parse("""{"comment": "x", "shards": [{"id": "a", "master": "h:1", "zone": "eu"}], "shards": [{"id": "b", "master": "h:2"}]}""");
        Assert.Single(map.Shards);
        Assert.All(map.Owners, o => Assert.Equal(0, o));

        var roundTrip = JsonDocument.Parse(map.ToJson()).RootElement;
        Assert.Equal(map.Shards[0].Id, roundTrip.GetProperty("shards")[0].GetProperty("id").GetString());
    }
}
