using System.Collections.Concurrent;
using System.Globalization;
using System.Text.Json;
using Infra.Client.Data;
using Infra.Core.Placement;
using Infra.IntegrationTests.Harness;

namespace Infra.IntegrationTests;

/// <summary>The shard router over real data nodes: routing, tokens, fan-out, DDL, SIGKILL failover, resharding under load.</summary>
public sealed class ShardRouterTests
{
    private static async Task CreateAccountsAsync(ShardCluster cluster)
    {
        var (status, body) = await cluster.PostAsync("/db/schema", new
        {
            statements = new[] { "CREATE TABLE acct(k TEXT PRIMARY KEY, v INTEGER NOT NULL)" },
            tables = new[] { new { name = "acct", shardKey = "k" } },
        });
        Assert.True(status == 200, body.ToString());
    }

    /// <summary>
    /// Creates the accounts table; the router's map, its slot count, and its owners with one of s0's slots
    /// given to s1 (a router seeded with those owners moves one of s1's slots to s0).
    /// </summary>
    private static async Task<(JsonElement Map, int Slots, string[] Owners)> OneSlotTooManyOnS1Async(ShardCluster cluster)
    {
        await CreateAccountsAsync(cluster);
        var map = await cluster.ShardsAsync();
        var owners = ShardCluster.SlotOwners(map);
        owners[Array.IndexOf(owners, "s0")] = "s1";
        return (map, map.GetProperty("slots").GetInt32(), owners);
    }

    [Fact]
    public async Task Routes_by_key_reads_with_session_tokens_fans_out_with_order_and_broadcasts_ddl()
    {
        await using var cluster = await ShardCluster.StartAsync(2);

        // DDL reaches every shard, reported per shard; the table is registered with its shard key.
        var (status, schema) = await cluster.PostAsync("/db/schema", new
        {
            statements = new[] { "CREATE TABLE acct(k TEXT PRIMARY KEY, v INTEGER NOT NULL)" },
            tables = new[] { new { name = "acct", shardKey = "k" } },
        });
        Assert.True(status == 200, schema.ToString());
        Assert.Equal(["s0", "s1"], schema.GetProperty("shards").EnumerateArray().Select(s => s.GetProperty("shard").GetString()!));
        Assert.All(schema.GetProperty("shards").EnumerateArray(), s => Assert.True(s.GetProperty("ok").GetBoolean()));
        var map = await cluster.ShardsAsync();
        Assert.Equal("k", map.GetProperty("tables")[0].GetProperty("shardKey").GetString());
        var (badTable, _) = await cluster.PostAsync("/db/schema", new { statements = new[] { "CREATE TABLE x(id INTEGER PRIMARY KEY)" }, tables = new[] { new { name = "x", shardKey = "nope" } } });
        Assert.Equal(400, badTable);

        // Writes land on the shard that owns the key's slot, and return a token for that shard.
        var bySharding = new Dictionary<string, int>();
        for (var i = 0; i < 40; i++)
        {
            var key = $"user:{i}";
            var (written, answer) = await cluster.ExecuteAsync(key, ["INSERT INTO acct(k, v) VALUES(?, ?)", key, i]);
            Assert.True(written == 200, answer.ToString());
            var shard = answer.GetProperty("shard").GetString()!;
            Assert.Equal(ShardCluster.OwnerOf(map, key), shard);
            Assert.Equal(shard, answer.GetProperty("token").GetProperty("shard").GetString());
            Assert.True(answer.GetProperty("token").GetProperty("lsn").GetInt64() > 0);
            bySharding[shard] = bySharding.GetValueOrDefault(shard) + 1;
        }

        Assert.Equal(2, bySharding.Count);

        // Each shard's master holds exactly its own keys.
        foreach (var shard in cluster.Shards)
        {
            var rows = await shard.Master.QueryAsync("SELECT k FROM acct");
            Assert.All(rows.GetProperty("rows").EnumerateArray(), r => Assert.Equal(shard.Id, ShardCluster.OwnerOf(map, r[0].GetString()!)));
            Assert.Equal(bySharding[shard.Id], rows.GetProperty("rows").GetArrayLength());
        }

        // Session consistency: a read presenting the token never sees older data, whichever node answers.
        for (var i = 0; i < 20; i++)
        {
            var key = "user:7";
            var (written, answer) = await cluster.ExecuteAsync(key, ["UPDATE acct SET v = ? WHERE k = ?", 1000 + i, key]);
            Assert.Equal(200, written);
            var read = await cluster.QueryAsync(new { key, sql = "SELECT v FROM acct WHERE k = ?", @params = new object[] { key }, consistency = "session", token = answer.GetProperty("token") });
            Assert.Equal(1000 + i, read.GetProperty("rows")[0][0].GetInt64());
        }

        // Bodies in chunked encoding and bodies over the inline limit (received whole, then parsed off the
        // socket thread), and a keyed result too large to write on the socket thread.
        var (chunked, chunkedAnswer) = await cluster.PostChunkedAsync("/db/execute", new { key = "user:big", statements = new[] { new object[] { "INSERT INTO acct(k, v) VALUES(?, ?)", "user:big", 1 } } });
        Assert.True(chunked == 200, chunkedAnswer.ToString());
        var padding = new string('x', 6000);
        var (large, largeAnswer) = await cluster.ExecuteAsync("user:big", ["UPDATE acct SET v = length(?) WHERE k = ?", padding, "user:big"]);
        Assert.True(large == 200, largeAnswer.ToString());
        var chunkedRead = await cluster.PostChunkedAsync("/db/query", new { key = "user:big", sql = "SELECT v, ? FROM acct WHERE k = ?", @params = new object[] { padding, "user:big" }, consistency = "strong" });
        Assert.Equal(6000, chunkedRead.Body.GetProperty("rows")[0][0].GetInt64());
        var many = await cluster.QueryAsync(new { key = "user:big", sql = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) SELECT i FROM n", consistency = "strong" });
        Assert.Equal(Enumerable.Range(1, 1000).Select(i => (long)i), many.GetProperty("rows").EnumerateArray().Select(r => r[0].GetInt64()));
        Assert.Equal(200, (await cluster.ExecuteAsync("user:big", ["DELETE FROM acct WHERE k = ?", "user:big"])).Status);

        // Replica reads go to the replica once it is in rotation; strong reads to the master.
        var shard0 = cluster.Shards[0];
        var key0 = Enumerable.Range(0, 40).Select(i => $"user:{i}").First(k => ShardCluster.OwnerOf(map, k) == "s0");
        await Eventually.HoldsAsync(async () =>
        {
            var read = await cluster.QueryAsync(new { key = key0, sql = "SELECT v FROM acct WHERE k = ?", @params = new object[] { key0 } });
            return read.GetProperty("shards")[0].GetProperty("node").GetString() == shard0.Replica.ReplicationAddress;
        }, "a replica read is served by the replica");
        var strong = await cluster.QueryAsync(new { key = key0, sql = "SELECT v FROM acct WHERE k = ?", @params = new object[] { key0 }, consistency = "strong" });
        Assert.Equal(shard0.Master.ReplicationAddress, strong.GetProperty("shards")[0].GetProperty("node").GetString());

        // Keyless reads fan out; ORDER BY/LIMIT is merged across shards.
        var all = await cluster.QueryAsync(new { sql = "SELECT k, v FROM acct ORDER BY v DESC", orderBy = "v DESC", limit = 5, consistency = "strong" });
        var expected = Enumerable.Range(0, 40).Select(i => i == 7 ? 1019L : i).OrderByDescending(v => v).Take(5).ToArray();
        Assert.Equal(expected, all.GetProperty("rows").EnumerateArray().Select(r => r[1].GetInt64()));
        Assert.Equal(2, all.GetProperty("shards").GetArrayLength());
        var concatenated = await cluster.QueryAsync(new { sql = "SELECT count(*) FROM acct", consistency = "strong" });
        Assert.Equal(40, concatenated.GetProperty("rows").EnumerateArray().Sum(r => r[0].GetInt64()));

        // The MessagePack protocol through the C# client.
        await using (var client = await ShardRouterClient.ConnectAsync(cluster.RouterAddress))
        {
            var write = await client.ExecuteAsync("user:mp", [["INSERT INTO acct(k, v) VALUES(?, ?)", "user:mp", 5L]]);
            Assert.Equal(ShardCluster.OwnerOf(map, "user:mp"), write.Shard);
            var read = await client.QueryAsync("SELECT v FROM acct WHERE k = ?", ["user:mp"], new QueryOptions { Key = "user:mp", Consistency = ReadConsistency.Session, Tokens = [write.Token] });
            Assert.Equal(5L, read.Rows[0][0]);
            var top = await client.QueryAsync("SELECT k, v FROM acct ORDER BY v", [], new QueryOptions { OrderBy = ["v"], Limit = 3, Consistency = ReadConsistency.Strong });
            Assert.Equal([0L, 1L, 2L], top.Rows.Select(r => (long)r[1]!));
            var error = await Assert.ThrowsAsync<DataException>(() => client.ExecuteAsync("user:mp", [["INSERT INTO acct(k, v) VALUES(?, ?)", "user:mp", 6L]]));
            Assert.Equal("SqlError", error.Code);
        }

        // A view registered as sharded cannot have the slot index: the schema still applies on every shard,
        // with a warning (moves would read it whole), not as a failed shard; a table registered with it
        // gets its index all the same.
        var (viewed, view) = await cluster.PostAsync("/db/schema", new
        {
            statements = new[] { "CREATE VIEW acct_view AS SELECT k, v FROM acct", "CREATE TABLE notes(k TEXT PRIMARY KEY, body TEXT)" },
            tables = new[] { new { name = "acct_view", shardKey = "k" }, new { name = "notes", shardKey = "k" } },
        });
        Assert.True(viewed == 200, view.ToString());
        Assert.All(view.GetProperty("shards").EnumerateArray(), o =>
        {
            Assert.True(o.GetProperty("ok").GetBoolean());
            Assert.Contains("slot index of acct_view", o.GetProperty("warning").GetString(), StringComparison.Ordinal);
            Assert.DoesNotContain("notes", o.GetProperty("warning").GetString(), StringComparison.Ordinal);
        });
        foreach (var shard in cluster.Shards)
        {
            var plan = await shard.Master.QueryAsync("EXPLAIN QUERY PLAN SELECT k FROM notes WHERE infra_slot(\"k\", 4096) = 7");
            Assert.Contains("USING INDEX notes_infra_slot", plan.GetProperty("rows").ToString(), StringComparison.Ordinal);
        }

        // A shard with no reachable node fails a fan-out by name, unless partial answers are allowed.
        await cluster.Shards[1].Replica.DisposeAsync();
        await cluster.Shards[1].Master.DisposeAsync();
        var (failed, failure) = await cluster.PostAsync("/db/query", new { sql = "SELECT count(*) FROM acct" });
        Assert.Equal(503, failed);
        Assert.Equal("ShardsFailed", failure.GetProperty("code").GetString());
        Assert.Equal("s1", failure.GetProperty("failedShards")[0].GetProperty("shard").GetString());
        var partial = await cluster.QueryAsync(new { sql = "SELECT count(*) FROM acct", allowPartial = true });
        Assert.Equal("s0", partial.GetProperty("shards")[0].GetProperty("shard").GetString());
        Assert.Equal("s1", partial.GetProperty("failedShards")[0].GetProperty("shard").GetString());
    }

    [Fact]
    public async Task Hostile_requests_get_clear_errors_and_the_router_keeps_serving()
    {
        await using var cluster = await ShardCluster.StartAsync(1);
        await CreateAccountsAsync(cluster);
        string[] bodies =
        [
            "", "{", "[]", "null", "{\"key\":\"a\"}", "{\"key\":{\"x\":1},\"statements\":[\"SELECT 1\"]}", "{\"statements\":[\"SELECT 1\"]}",
            "{\"key\":\"a\",\"statements\":[]}", "{\"key\":\"a\",\"statements\":[[1,2]]}", "{\"key\":\"a\",\"statements\":[[\"INSERT INTO acct VALUES(?,?)\",[1],2]]}",
            "{\"key\":\"a\",\"statements\":[[\"INSERT INTO acct VALUES(?,?)\",{\"base64\":\"!!\"},2]]}", "{\"key\":\"" + new string('k', 5000) + "\",\"statements\":[\"SELECT 1\"]}",
            new string('[', 10_000),
            "\"\\ud800\"", "{\"key\":\"\\udc00\",\"statements\":[\"SELECT 1\"]}", "{\"\\ud800\":1}", // lone surrogates: were 500s (found by a protocol fuzzer)
        ];
        foreach (var body in bodies)
        {
            var (status, answer) = await cluster.PostRawAsync("/db/execute", body);
            Assert.True(status == 400, $"{body[..Math.Min(body.Length, 60)]}: {status} {answer}");
            Assert.Equal("BadRequest", answer.GetProperty("code").GetString());
        }

        string[] queries =
        [
            "{\"sql\":1}", "{\"sql\":\"SELECT 1\",\"consistency\":\"eventual\"}", "{\"sql\":\"SELECT 1\",\"consistency\":\"session\"}",
            "{\"sql\":\"SELECT 1\",\"limit\":-1}", "{\"sql\":\"SELECT 1\",\"orderBy\":\"a b c\"}", "{\"sql\":\"SELECT 1\",\"token\":{\"shard\":\"s0\"}}",
            "{\"sql\":\"SELECT 1 AS a\",\"orderBy\":\"b\"}", "{\"sql\":\"SELECT * FROM nowhere\"}",
        ];
        foreach (var body in queries)
        {
            var (status, answer) = await cluster.PostRawAsync("/db/query", body);
            Assert.True(status == 400, $"{body}: {status} {answer}");
        }

        var (sqlError, sqlAnswer) = await cluster.ExecuteAsync("a", ["INSERT INTO acct(k, v) VALUES(?, NULL)", "a"]);
        Assert.Equal(400, sqlError);
        Assert.Equal("SqlError", sqlAnswer.GetProperty("code").GetString());
        var (notAllowed, _) = await cluster.ExecuteAsync("a", ["ATTACH DATABASE '/tmp/x' AS x"]);
        Assert.Equal(400, notAllowed);
        var (added, _) = await cluster.PostRawAsync("/shards", "{\"id\":\"bad id\",\"master\":\"nowhere\"}");
        Assert.Equal(400, added);
        var (missing, _) = await cluster.PostRawAsync("/shards", "{\"id\":\"s9\",\"master\":\"127.0.0.1:1\"}");
        Assert.Equal(503, missing);

        // Garbage on the MessagePack port closes that connection only.
        using (var socket = new System.Net.Sockets.TcpClient())
        {
            await socket.ConnectAsync("127.0.0.1", int.Parse(cluster.RouterAddress.Split(':')[1], System.Globalization.CultureInfo.InvariantCulture));
            await socket.GetStream().WriteAsync(new byte[] { 0x7f, 0xff, 0xff, 0xff, 1, 2, 3 });
            var buffer = new byte[256];
            while (await socket.GetStream().ReadAsync(buffer) > 0)
            {
                // Drains the error answer until the router closes the connection.
            }
        }

        var (ok, okAnswer) = await cluster.ExecuteAsync("a", ["INSERT INTO acct(k, v) VALUES(?, ?)", "a", 1]);
        Assert.True(ok == 200, okAnswer.ToString());
        Assert.False(cluster.Router.HasExited);
    }

    [Fact]
    public async Task Sigkill_of_a_master_under_load_fails_over_without_losing_acknowledged_writes()
    {
        await using var cluster = await ShardCluster.StartAsync(2);
        await CreateAccountsAsync(cluster);
        var map = await cluster.ShardsAsync();
        var acked = new ConcurrentDictionary<string, long>();
        var otherShardErrors = new ConcurrentQueue<string>();
        var victimErrors = 0;
        var victim = cluster.Shards[0];
        using var stop = new CancellationTokenSource();
        var sequence = 0;
        var killed = 0;
        var victimAckedAfterKill = 0;

        async Task WriterAsync(int id)
        {
            while (!stop.IsCancellationRequested)
            {
                var n = Interlocked.Increment(ref sequence);
                var key = $"w{id}:{n}";
                var sentAfterKill = Volatile.Read(ref killed) == 1; // then only the promoted replica can acknowledge it
                var (status, body) = await cluster.ExecuteAsync(key, ["INSERT INTO acct(k, v) VALUES(?, ?)", key, n]);
                if (status == 200)
                {
                    acked[key] = n;
                    if (sentAfterKill && ShardCluster.OwnerOf(map, key) == victim.Id)
                    {
                        Interlocked.Increment(ref victimAckedAfterKill);
                    }
                }
                else if (ShardCluster.OwnerOf(map, key) == victim.Id)
                {
                    Assert.True(status == 503, $"{key}: {status} {body}");
                    Interlocked.Increment(ref victimErrors);
                }
                else
                {
                    otherShardErrors.Enqueue($"{key}: {status} {body}");
                }
            }
        }

        async Task ReaderAsync()
        {
            while (!stop.IsCancellationRequested)
            {
                var key = $"w0:{Random.Shared.Next(1, Math.Max(2, Volatile.Read(ref sequence)))}";
                var (status, body) = await cluster.PostAsync("/db/query", new { key, sql = "SELECT v FROM acct WHERE k = ?", @params = new object[] { key } });
                if (status != 200 && ShardCluster.OwnerOf(map, key) != victim.Id)
                {
                    otherShardErrors.Enqueue($"read {key}: {status} {body}");
                }
            }
        }

        var load = Enumerable.Range(0, 4).Select(WriterAsync).Append(ReaderAsync()).ToList();
        await Eventually.HoldsAsync(() => acked.Count >= 200, "writes flow before the kill", TimeSpan.FromSeconds(60));
        victim.Master.Process.Kill();
        Volatile.Write(ref killed, 1);

        // Writes to the victim's keys resume on the promoted replica. (Counted per write sent after the
        // kill: the dictionary's key order says nothing about when a key was acknowledged.)
        await Eventually.HoldsAsync(() => Volatile.Read(ref victimAckedAfterKill) >= 20, "writes to the failed shard resume", TimeSpan.FromSeconds(60));
        var resumed = acked.Count;
        await Eventually.HoldsAsync(() => acked.Count >= resumed + 100, "writes keep flowing", TimeSpan.FromSeconds(60));
        await stop.CancelAsync();
        await Task.WhenAll(load);

        Assert.True(otherShardErrors.IsEmpty, string.Join('\n', otherShardErrors.Take(5)));
        var after = await cluster.ShardsAsync();
        var shard0 = after.GetProperty("shards")[0];
        Assert.Equal(victim.Replica.ReplicationAddress, shard0.GetProperty("master").GetString());
        Assert.Equal(2, shard0.GetProperty("epoch").GetInt64());

        // Nothing acknowledged was lost.
        var rows = await cluster.QueryAsync(new { sql = "SELECT k, v FROM acct", consistency = "strong" });
        var stored = rows.GetProperty("rows").EnumerateArray().ToDictionary(r => r[0].GetString()!, r => r[1].GetInt64());
        var lost = acked.Where(a => !stored.TryGetValue(a.Key, out var v) || v != a.Value).Select(a => a.Key).ToList();
        Assert.True(lost.Count == 0, $"{lost.Count} acknowledged writes lost, e.g. {string.Join(", ", lost.Take(5))}");

        // The old master comes back at its address, is told to follow, and converges.
        await RestartOldMasterAndAwaitItFollowsAsync(victim);
        var other = cluster.Shards[1];
        await Eventually.HoldsAsync(async () => await other.Replica.LsnAsync() == await other.Master.LsnAsync(), "the other shard's replica is caught up");
        Assert.Equal(await other.Master.ChecksumAsync(), await other.Replica.ChecksumAsync());
    }

    [Fact]
    public async Task Adding_a_shard_under_load_moves_only_its_slots_without_losing_or_duplicating_rows()
    {
        await using var cluster = await ShardCluster.StartAsync(2);
        await CreateAccountsAsync(cluster);
        for (var i = 0; i < 600; i += 50)
        {
            var batch = Enumerable.Range(i, 50).ToList();
            await Task.WhenAll(batch.Select(async n =>
            {
                var key = $"seed:{n}";
                var (status, body) = await cluster.ExecuteAsync(key, ["INSERT INTO acct(k, v) VALUES(?, ?)", key, n]);
                Assert.True(status == 200, body.ToString());
            }));
        }

        async Task<(long Count, long Sum)> TotalsAsync()
        {
            var rows = await cluster.QueryAsync(new { sql = "SELECT count(*), coalesce(sum(v), 0), count(DISTINCT k) FROM acct", consistency = "strong" });
            return (rows.GetProperty("rows").EnumerateArray().Sum(r => r[0].GetInt64()), rows.GetProperty("rows").EnumerateArray().Sum(r => r[1].GetInt64()));
        }

        var before = await TotalsAsync();
        Assert.Equal((600L, Enumerable.Range(0, 600).Sum(n => (long)n)), before);
        var mapBefore = await cluster.ShardsAsync();

        // Load: inserts of new keys, each counted once acknowledged; every request must succeed.
        var errors = new ConcurrentQueue<string>();
        var added = new ConcurrentDictionary<string, long>();
        using var stop = new CancellationTokenSource();
        var next = 10_000;
        async Task WriterAsync()
        {
            while (!stop.IsCancellationRequested)
            {
                var n = Interlocked.Increment(ref next);
                var key = $"live:{n}";
                var (status, body) = await cluster.ExecuteAsync(key, ["INSERT INTO acct(k, v) VALUES(?, ?)", key, n]);
                if (status == 200)
                {
                    added[key] = n;
                }
                else
                {
                    errors.Enqueue($"{key}: {status} {body}");
                }

                var (read, answer) = await cluster.PostAsync("/db/query", new { key, sql = "SELECT v FROM acct WHERE k = ?", @params = new object[] { key }, consistency = "strong" });
                if (read != 200 || (status == 200 && answer.GetProperty("rows").GetArrayLength() != 1))
                {
                    errors.Enqueue($"read {key}: {read} {answer}");
                }
            }
        }

        var load = Enumerable.Range(0, 3).Select(_ => WriterAsync()).ToList();
        await using var third = await ShardNodes.StartAsync("s2", cluster.NewDir).ContinueWith(t => new DisposableShard(t.Result));
        var (accepted, answer) = await cluster.PostRawAsync("/shards", third.Shard.Json);
        Assert.True(accepted == 202, answer.ToString());
        var toMove = answer.GetProperty("slotsToMove").GetInt32();
        Assert.InRange(toMove, 1, (int)(1.05 * 4096 / 3));
        await Eventually.HoldsAsync(async () => (await cluster.ShardsAsync()).GetProperty("resharding").GetProperty("pendingSlots").GetInt32() == 0, "every slot the new shard wins has moved", TimeSpan.FromSeconds(120));
        await Eventually.HoldsAsync(() => added.Count >= 50, "writes flowed during the move", TimeSpan.FromSeconds(30));
        await stop.CancelAsync();
        await Task.WhenAll(load);

        Assert.True(errors.IsEmpty, string.Join('\n', errors.Take(5)));
        var after = await TotalsAsync();
        Assert.Equal(before.Count + added.Count, after.Count);
        Assert.Equal(before.Sum + added.Values.Sum(), after.Sum);

        // Only slots won by the new shard moved; every row sits on the shard that owns its slot now.
        var mapAfter = await cluster.ShardsAsync();
        var counts = mapAfter.GetProperty("shards").EnumerateArray().ToDictionary(s => s.GetProperty("id").GetString()!, s => s.GetProperty("slotCount").GetInt32());
        Assert.Equal(toMove, counts["s2"]);

        // Reads that must see the moved rows (fan-outs; session reads holding the old shard's token) wait for a
        // replica of s2 that has the copies: each flip raised s2's fan-out floor to its LSN after the copy.
        var s2Floor = mapAfter.GetProperty("shards").EnumerateArray().Single(s => s.GetProperty("id").GetString() == "s2")
            .TryGetProperty("fanOutFloor", out var floor) ? floor.GetInt64() : 0;
        Assert.True(s2Floor > 0 && s2Floor <= await third.Shard.Master.LsnAsync(), $"s2's fan-out floor {s2Floor}");
        for (var slotKey = 0; slotKey < 2000; slotKey++)
        {
            var key = $"probe:{slotKey}";
            var owner = ShardCluster.OwnerOf(mapAfter, key);
            Assert.True(owner == "s2" || owner == ShardCluster.OwnerOf(mapBefore, key), $"{key} moved from {ShardCluster.OwnerOf(mapBefore, key)} to {owner}");
        }

        foreach (var node in cluster.Shards.Select(s => (Id: s.Id, s.Master)).Append((Id: "s2", third.Shard.Master)))
        {
            var rows = await node.Master.QueryAsync("SELECT k FROM acct");
            Assert.All(rows.GetProperty("rows").EnumerateArray(), r => Assert.Equal(node.Id, ShardCluster.OwnerOf(mapAfter, r[0].GetString()!)));

            // Every shard, the new one too (from the copied schema), has the slot index, and selecting a
            // slot's rows as a move does reads it instead of hashing the whole table.
            var plan = await node.Master.QueryAsync("EXPLAIN QUERY PLAN SELECT k FROM acct WHERE infra_slot(\"k\", 4096) = 7");
            Assert.Contains("USING INDEX acct_infra_slot", plan.GetProperty("rows").ToString(), StringComparison.Ordinal);
        }

        // A slot that moved is closed on the master it left: a write for it that reaches that master late
        // (one the router gave up on, still queued there) is refused instead of landing on a shard that no
        // longer owns the slot, whose copy of it is gone. Slots the master still owns take tagged writes as before.
        var movedKey = Enumerable.Range(0, 2000).Select(n => $"late:{n}").First(k => ShardCluster.OwnerOf(mapAfter, k) == "s2");
        var source = cluster.Shards.Single(s => s.Id == ShardCluster.OwnerOf(mapBefore, movedKey)).Master;
        var movedSlot = Infra.Core.Placement.ShardKey.Slot(movedKey, mapAfter.GetProperty("slots").GetInt32());
        Assert.Contains(movedSlot, (await source.StatusAsync()).GetProperty("closedSlots").EnumerateArray().Select(e => e.GetInt32()));
        await using (var late = await DataNodeClient.ConnectAsync(source.ReplicationAddress))
        {
            var refused = await Assert.ThrowsAsync<DataException>(() => late.ExecuteAsync([["INSERT INTO acct(k, v) VALUES(?, ?)", movedKey, 1L]], slot: movedSlot));
            Assert.Equal("SlotClosed", refused.Code);
            Assert.Equal(0, (await source.QueryAsync("SELECT count(*) FROM acct WHERE k = '" + movedKey + "'")).GetProperty("rows")[0][0].GetInt64());
            var stillOpen = Infra.Core.Placement.ShardKey.Slot("seed:0", mapAfter.GetProperty("slots").GetInt32());
            if (ShardCluster.OwnerOf(mapAfter, "seed:0") == ShardCluster.OwnerOf(mapBefore, movedKey))
            {
                await late.ExecuteAsync([["UPDATE acct SET v = v WHERE k = ?", "seed:0"]], slot: stillOpen);
            }
        }

        // Through the router the key's writes go to its new owner as usual.
        var (routed, routedAnswer) = await cluster.ExecuteAsync(movedKey, ["INSERT INTO acct(k, v) VALUES(?, ?)", movedKey, 1]);
        Assert.True(routed == 200, routedAnswer.ToString());
        Assert.Equal("s2", routedAnswer.GetProperty("shard").GetString());
    }

    [Fact]
    public async Task A_master_that_stops_being_master_is_replaced_and_told_to_follow()
    {
        await using var cluster = await ShardCluster.StartAsync(1);
        await CreateAccountsAsync(cluster);
        var (written, _) = await cluster.ExecuteAsync("a", ["INSERT INTO acct(k, v) VALUES(?, ?)", "a", 1]);
        Assert.Equal(200, written);
        var shard = cluster.Shards[0];

        // Someone claims a newer epoch on the master for a node that does not exist: it steps down and answers as a replica.
        var (claimed, body) = await shard.Master.PostAsync("/claim", new { epoch = 2, leader = "nobody" });
        Assert.True(claimed == 200, body.ToString());
        await Eventually.HoldsAsync(async () =>
        {
            var map = await cluster.ShardsAsync();
            return map.GetProperty("shards")[0].GetProperty("master").GetString() == shard.Replica.ReplicationAddress;
        }, "the router promotes the replica", TimeSpan.FromSeconds(30));
        var epoch = (await cluster.ShardsAsync()).GetProperty("shards")[0].GetProperty("epoch").GetInt64();
        Assert.True(epoch >= 3, $"epoch {epoch}: the new master's epoch is above the one claimed on the old master");
        // The map names the new master just before the shard stops answering FailingOver (retriable by contract).
        await Eventually.HoldsAsync(async () =>
        {
            var (after, answer) = await cluster.ExecuteAsync("a", ["UPDATE acct SET v = 2 WHERE k = ?", "a"]);
            Assert.True(after is 200 or 503, answer.ToString());
            return after == 200;
        }, "a write goes through on the new master", TimeSpan.FromSeconds(30));
        await Eventually.HoldsAsync(async () =>
        {
            var status = await shard.Master.StatusAsync();
            return status.GetProperty("role").GetString() == "replica" && status.GetProperty("master").GetString() == shard.Replica.ReplicationAddress
                && await shard.Master.LsnAsync() == await shard.Replica.LsnAsync();
        }, "the old master follows the new one", TimeSpan.FromSeconds(30));
        Assert.Equal(await shard.Replica.ChecksumAsync(), await shard.Master.ChecksumAsync());
    }

    [Fact]
    public async Task A_master_whose_wal_fsync_failed_is_replaced_without_losing_acknowledged_writes_and_rejoins_once_restarted()
    {
        await using var cluster = await ShardCluster.StartAsync(1);
        await CreateAccountsAsync(cluster);
        var shard = cluster.Shards[0];
        var acked = new List<string>();
        for (var i = 0; i < 20; i++)
        {
            var (status, body) = await cluster.ExecuteAsync($"k{i}", ["INSERT INTO acct(k, v) VALUES(?, ?)", $"k{i}", i]);
            Assert.True(status == 200, body.ToString());
            acked.Add($"k{i}");
        }

        // The master's disk starts failing its WAL fsyncs: its next write is not acknowledged, and it
        // refuses every write after; the router must treat it as failed although it still answers.
        var fault = DataNodeProcess.WalSyncFaultFile(shard.MasterDir);
        await File.WriteAllTextAsync(fault, "");
        var (failed, failedBody) = await cluster.ExecuteAsync("x", ["INSERT INTO acct(k, v) VALUES(?, ?)", "x", 0]);
        Assert.True(failed == 503, failedBody.ToString());
        var masterStatus = await shard.Master.StatusAsync();
        Assert.Contains("injected", masterStatus.GetProperty("walSyncFailed").GetString(), StringComparison.Ordinal);

        await Eventually.HoldsAsync(async () =>
        {
            var map = await cluster.ShardsAsync();
            return map.GetProperty("shards")[0].GetProperty("master").GetString() == shard.Replica.ReplicationAddress;
        }, "the router promotes the replica", TimeSpan.FromSeconds(30));
        for (var i = 20; i < 30; i++)
        {
            var key = $"k{i}";
            await Eventually.HoldsAsync(async () =>
            {
                // OR REPLACE: a retried write whose 503 came after its commit must not fail as a duplicate.
                var (status, body) = await cluster.ExecuteAsync(key, ["INSERT OR REPLACE INTO acct(k, v) VALUES(?, ?)", key, i]);
                Assert.True(status is 200 or 503, body.ToString());
                return status == 200;
            }, "writes go through on the new master", TimeSpan.FromSeconds(30));
            acked.Add(key);
        }

        var rows = await cluster.QueryAsync(new { sql = "SELECT k FROM acct", consistency = "strong" });
        var stored = rows.GetProperty("rows").EnumerateArray().Select(r => r[0].GetString()!).ToHashSet();
        var lost = acked.Where(k => !stored.Contains(k)).ToList();
        Assert.True(lost.Count == 0, $"acknowledged writes lost: {string.Join(", ", lost)}");

        // Restarted on a healthy disk, the old master learns the new epoch and follows the new master.
        File.Delete(fault);
        await RestartOldMasterAndAwaitItFollowsAsync(shard);
    }

    /// <summary>
    /// Restarts the shard's old master (dead or unfit; the router promoted its replica) at its address:
    /// the router tells it to follow the new master, and it must catch up to the same checksum.
    /// </summary>
    private static async Task RestartOldMasterAndAwaitItFollowsAsync(ShardNodes shard)
    {
        var oldAddress = shard.Master.ReplicationAddress;
        await shard.Master.DisposeAsync();
        shard.Master = await DataNodeProcess.StartAsync(shard.MasterDir, "--role", "master", "--listen", oldAddress);
        await Eventually.HoldsAsync(async () =>
        {
            var status = await shard.Master.StatusAsync();
            return status.GetProperty("role").GetString() == "replica" && await shard.Master.LsnAsync() == await shard.Replica.LsnAsync();
        }, "the old master follows the new one and catches up", TimeSpan.FromSeconds(60));
        Assert.Equal(await shard.Replica.ChecksumAsync(), await shard.Master.ChecksumAsync());
    }

    [Fact]
    public async Task A_failed_move_whose_copy_cannot_be_deleted_leaves_a_cleanup_so_fan_outs_never_repeat_its_rows()
    {
        // The map gives s1 one slot of s0 too many, so one of s1's slots (each holds 3 rows) moves to s0.
        // s0's master sits behind a proxy that lets the move's first copy batch (2 statements: the clear and
        // one row) through and drops every later execute: the copy fails, and so does deleting it.
        await using var cluster = await ShardCluster.StartAsync(2, "--fail-after", "1000");
        await CreateAccountsAsync(cluster);
        var map = await cluster.ShardsAsync();
        var slots = map.GetProperty("slots").GetInt32();
        var (s0, s1) = (cluster.Shards[0], cluster.Shards[1]);
        var owners = ShardCluster.SlotOwners(map);

        owners[Array.IndexOf(owners, "s0")] = "s1";
        var perSlot = new int[slots];
        var keys = new List<string>();
        for (var i = 0; perSlot.Where((n, slot) => owners[slot] == "s1" && n < 3).Any(); i++)
        {
            var key = $"m{i}";
            var slot = ShardKey.Slot(key, slots);
            if (owners[slot] == "s1" && perSlot[slot] < 3)
            {
                perSlot[slot]++;
                keys.Add(key);
            }
        }

        foreach (var chunk in keys.Chunk(400))
        {
            var (put, body) = await s1.Master.ExecuteAsync([$"INSERT INTO acct(k, v) VALUES {string.Join(",", chunk.Select(_ => "(?, 1)"))}", .. chunk]);
            Assert.True(put == 200, body.ToString());
        }

        var healed = false;
        FrameDropProxy? proxy = null;
        proxy = new FrameDropProxy(s0.Master.ReplicationAddress, op => op == "execute" && proxy!.Seen("execute") >= 2 && !Volatile.Read(ref healed));
        await using var dropping = proxy;
        var seed = ShardCluster.SeedMap(map, $$"""{"id":"s0","master":"{{proxy.Address}}","replicas":["{{s0.Replica.ReplicationAddress}}"]},{{s1.Json}}""", owners);
        await cluster.StartRouterAsync(seed, "--fail-after", "1000", "--request-timeout", "300ms", "--copy-batch", "2");

        // The move failed and its copy could not be deleted: a cleanup of s0 is pending, and s0's replica
        // holds the copied row. A fan-out leaves s0 out (or fails) instead of returning that row twice.
        // (Another error may come first on a busy machine, e.g. a read timing out at 300 ms: the move is
        // retried until the proxy has dropped one of its writes and the move has failed on it.)
        await Eventually.HoldsAsync(async () => proxy.Dropped("execute") > 0 && (await cluster.ShardsAsync()).GetProperty("resharding").GetProperty("pendingCleanups").GetInt32() > 0,
            "the move fails with its copy on s0", TimeSpan.FromSeconds(90));
        var partial = await cluster.QueryAsync(new { sql = "SELECT k FROM acct", allowPartial = true });
        var seen = partial.GetProperty("rows").EnumerateArray().Select(r => r[0].GetString()!).ToList();
        Assert.Equal(seen.Count, seen.Distinct().Count());
        Assert.Contains(partial.GetProperty("failedShards").EnumerateArray(), f => f.GetProperty("shard").GetString() == "s0" && f.GetProperty("code").GetString() == "CleanupPending");
        var (failed, failure) = await cluster.PostAsync("/db/query", new { sql = "SELECT k FROM acct" });
        Assert.True(failed == 503, failure.ToString());

        // s0 answers again: the cleanup runs, the slot moves, and every row is there once.
        Volatile.Write(ref healed, true);
        await Eventually.HoldsAsync(async () =>
        {
            var resharding = (await cluster.ShardsAsync()).GetProperty("resharding");
            return resharding.GetProperty("pendingSlots").GetInt32() == 0 && resharding.GetProperty("pendingCleanups").GetInt32() == 0;
        }, "the move finishes", TimeSpan.FromSeconds(60));
        var whole = await cluster.QueryAsync(new { sql = "SELECT k FROM acct ORDER BY k", orderBy = new[] { "k" } });
        Assert.Equal(keys.Order(StringComparer.Ordinal), whole.GetProperty("rows").EnumerateArray().Select(r => r[0].GetString()!));
    }

    [Fact]
    public async Task A_move_that_would_overwrite_a_row_of_another_slot_stops_with_a_clear_error_and_loses_nothing()
    {
        // docs' primary key (id) does not hold its shard key (owner), and each shard numbered its own rows
        // from 1: every row of s1 has the id of a row of s0 in another slot. The map gives s1 one slot too
        // many, so one of s1's slots moves to s0; its row must not replace s0's row with the same id.
        await using var cluster = await ShardCluster.StartAsync(2, "--fail-after", "1000");
        var (created, createBody) = await cluster.PostAsync("/db/schema", new
        {
            statements = new[] { "CREATE TABLE docs(id INTEGER PRIMARY KEY, owner TEXT NOT NULL)" },
            tables = new[] { new { name = "docs", shardKey = "owner" } },
        });
        Assert.True(created == 200, createBody.ToString());
        var map = await cluster.ShardsAsync();
        var slots = map.GetProperty("slots").GetInt32();
        var owners = ShardCluster.SlotOwners(map);

        // Two of s0's slots go to s1, so s1 gives two back: those it scores lowest, found by letting a first
        // router move them while the shards hold no rows. Then every slot of s1 but the later of the two holds
        // a row that collides: that one must move all the same — one slot that could not move held up every
        // slot after it for good.
        owners[Array.IndexOf(owners, "s0")] = "s1";
        owners[Array.LastIndexOf(owners, "s0")] = "s1";
        var trial = ShardCluster.SeedMap(map, string.Join(",", cluster.Shards.Select(s => s.Json)), owners);
        await cluster.StartRouterAsync(trial, "--fail-after", "1000");
        await Eventually.HoldsAsync(async () => (await cluster.ShardsAsync()).GetProperty("resharding").GetProperty("pendingSlots").GetInt32() == 0, "the empty slots move", TimeSpan.FromSeconds(60));
        var placed = ShardCluster.SlotOwners(await cluster.ShardsAsync());
        var givenBack = Enumerable.Range(0, slots).Where(s => owners[s] == "s1" && placed[s] == "s0").ToList();
        Assert.Equal(2, givenBack.Count);
        var empty = givenBack.Max();
        var onS1 = new Dictionary<int, string>();
        var onS0 = new List<string>();
        for (var i = 0; onS1.Count < owners.Count(o => o == "s1") - 1; i++)
        {
            var key = $"d{i}";
            var slot = ShardKey.Slot(key, slots);
            if (slot == empty)
            {
                continue; // no row anywhere
            }

            if (owners[slot] == "s1")
            {
                onS1.TryAdd(slot, key);
            }
            else if (onS0.Count < owners.Count(o => o == "s1") - 1)
            {
                onS0.Add(key);
            }
        }

        foreach (var (node, keys) in new[] { (cluster.Shards[1].Master, onS1.Values.ToList()), (cluster.Shards[0].Master, onS0) })
        {
            foreach (var chunk in keys.Select((k, n) => (Id: (long)n + 1, Key: k)).Chunk(400))
            {
                var (put, body) = await node.ExecuteAsync([$"INSERT INTO docs(id, owner) VALUES {string.Join(",", chunk.Select(_ => "(?, ?)"))}", .. chunk.SelectMany(r => new object[] { r.Id, r.Key })]);
                Assert.True(put == 200, body.ToString());
            }
        }

        var seed = ShardCluster.SeedMap(map, string.Join(",", cluster.Shards.Select(s => s.Json)), owners);
        await cluster.StartRouterAsync(seed, "--fail-after", "1000");
        await Eventually.HoldsAsync(async () =>
            (await cluster.ShardsAsync()).GetProperty("resharding").TryGetProperty("lastError", out var error) && error.GetString()!.Contains("unique across shards", StringComparison.Ordinal),
            "the move stops on the colliding key", TimeSpan.FromSeconds(60));

        // Nothing was overwritten or left behind: each shard holds exactly its own rows, and the slot did not move.
        string Dump(JsonElement rows) => string.Join(",", rows.GetProperty("rows").EnumerateArray().Select(r => $"{r[0].GetInt64()}:{r[1].GetString()}"));
        var s0Rows = await cluster.Shards[0].Master.QueryAsync("SELECT id, owner FROM docs ORDER BY id");
        Assert.Equal(string.Join(",", onS0.Select((k, n) => $"{n + 1}:{k}")), Dump(s0Rows));
        var s1Rows = await cluster.Shards[1].Master.QueryAsync("SELECT id, owner FROM docs ORDER BY id");
        Assert.Equal(string.Join(",", onS1.Values.Select((k, n) => $"{n + 1}:{k}")), Dump(s1Rows));
        await Eventually.HoldsAsync(async () => (await cluster.ShardsAsync()).GetProperty("resharding").GetProperty("pendingSlots").GetInt32() == 1,
            "the empty slot moves while the colliding one waits", TimeSpan.FromSeconds(60));
        Assert.Equal("s0", ShardCluster.SlotOwners(await cluster.ShardsAsync())[empty]);
    }

    [Fact]
    public async Task Two_concurrent_adds_of_the_same_shard_id_add_it_once()
    {
        await using var cluster = await ShardCluster.StartAsync(1);
        await CreateAccountsAsync(cluster);
        await using var first = await DataNodeProcess.StartAsync(cluster.NewDir(), "--role", "master");
        await using var second = await DataNodeProcess.StartAsync(cluster.NewDir(), "--role", "master");
        var adds = await Task.WhenAll(new[] { first, second }.Select(node =>
            cluster.PostRawAsync("/shards", $$"""{"id":"s1","master":"{{node.ReplicationAddress}}","replicas":[]}""")));

        // One is added; the other is refused, whichever came second — never a second s1 replacing the first.
        Assert.Equal([202, 409], adds.Select(a => a.Status).Order());
        var winner = adds[0].Status == 202 ? first : second;
        var shards = (await cluster.ShardsAsync()).GetProperty("shards").EnumerateArray().Where(s => s.GetProperty("id").GetString() == "s1").ToList();
        Assert.Equal(winner.ReplicationAddress, Assert.Single(shards).GetProperty("master").GetString());
    }

    [Theory]
    [InlineData("follow")]
    [InlineData("claim")]
    public async Task A_replica_that_hangs_holds_up_neither_its_failed_over_shard_nor_failure_detection(string hangsOn)
    {
        // s0 has two replicas: its own, and one that never answers `hangsOn` (a proxy in front of a replica of
        // an unrelated empty master: it answers probes, and has too little data to be chosen). Hanging on
        // "follow", it is told to follow after the promotion; hanging on "claim", s0's failover waits for
        // its vote (a majority of 2 needs it) until the request timeout.
        await using var cluster = await ShardCluster.StartAsync(2);
        await using var otherMaster = await DataNodeProcess.StartAsync(cluster.NewDir(), "--role", "master");
        await using var hung = await DataNodeProcess.StartAsync(cluster.NewDir(), "--role", "replica", "--master", otherMaster.ReplicationAddress);
        await using var proxy = new FrameDropProxy(hung.ReplicationAddress, op => op == hangsOn);
        var map = await cluster.ShardsAsync();
        var (s0, s1) = (cluster.Shards[0], cluster.Shards[1]);
        var seed = $$"""
            {"version":{{map.GetProperty("version").GetInt64() + 1}},"slots":{{map.GetProperty("slots").GetInt32()}},
             "shards":[{"id":"s0","master":"{{s0.Master.ReplicationAddress}}","replicas":["{{s0.Replica.ReplicationAddress}}","{{proxy.Address}}"]},{{s1.Json}}],
             "owners":{{map.GetProperty("owners").GetRawText()}}}
            """;
        await cluster.StartRouterAsync(seed, "--request-timeout", "120s");
        await CreateAccountsAsync(cluster);
        var keys = Enumerable.Range(0, 200).Select(i => $"f{i}").ToList();
        var onS0 = keys.First(k => ShardCluster.OwnerOf(map, k) == "s0");
        var onS1 = keys.First(k => ShardCluster.OwnerOf(map, k) == "s1");
        foreach (var key in keys.Take(20))
        {
            var (status, body) = await cluster.ExecuteAsync(key, ["INSERT INTO acct(k, v) VALUES(?, 1)", key]);
            Assert.True(status == 200, body.ToString());
        }

        // s0's master dies. Hanging on "follow": its replica is promoted, the hung node is told to follow it
        // (that call hangs for the 120 s request timeout), and writes to s0 go on at the new master well
        // before that. Hanging on "claim": s0's failover waits for the vote.
        s0.Master.Process.Kill();
        if (hangsOn == "follow")
        {
            await Eventually.HoldsAsync(async () => (await cluster.ShardsAsync()).GetProperty("shards")[0].GetProperty("master").GetString() == s0.Replica.ReplicationAddress,
                "the router promotes s0's replica", TimeSpan.FromSeconds(30));
        }

        await Eventually.HoldsAsync(() => Task.FromResult(proxy.Dropped(hangsOn) > 0), $"the hung node is asked to {hangsOn}", TimeSpan.FromSeconds(30));
        if (hangsOn == "follow")
        {
            await Eventually.HoldsAsync(async () => (await cluster.ExecuteAsync(onS0, ["UPDATE acct SET v = 2 WHERE k = ?", onS0])).Status == 200,
                "a write to s0 goes through on its new master", TimeSpan.FromSeconds(30));
        }

        // Failure detection goes on meanwhile: s1's master dies too and is replaced.
        s1.Master.Process.Kill();
        await Eventually.HoldsAsync(async () => (await cluster.ShardsAsync()).GetProperty("shards")[1].GetProperty("master").GetString() == s1.Replica.ReplicationAddress,
            "the router promotes s1's replica while s0's hung node has not answered", TimeSpan.FromSeconds(30));
        await Eventually.HoldsAsync(async () => (await cluster.ExecuteAsync(onS1, ["UPDATE acct SET v = 2 WHERE k = ?", onS1])).Status == 200,
            "a write to s1 goes through on its new master", TimeSpan.FromSeconds(30));
        Assert.Equal(1, proxy.Seen(hangsOn));
        if (hangsOn == "claim")
        {
            // s0's failover is still waiting for the vote; its writes fail fast, retriable.
            Assert.Equal(s0.Master.ReplicationAddress, (await cluster.ShardsAsync()).GetProperty("shards")[0].GetProperty("master").GetString());
            var (refused, refusal) = await cluster.ExecuteAsync(onS0, ["UPDATE acct SET v = 3 WHERE k = ?", onS0]);
            Assert.True(refused == 503 && refusal.GetProperty("code").GetString() == "FailingOver", refusal.ToString());
        }
    }

    [Fact]
    public async Task A_slot_written_while_it_moves_is_copied_then_caught_up_from_the_log_without_losing_a_write()
    {
        await using var cluster = await ShardCluster.StartAsync(2);
        var (created, schemaAnswer) = await cluster.PostAsync("/db/schema", new
        {
            statements = new[] { "CREATE TABLE items(owner TEXT NOT NULL, n INTEGER NOT NULL, v INTEGER NOT NULL, PRIMARY KEY(owner, n))" },
            tables = new[] { new { name = "items", shardKey = "owner" } },
        });
        Assert.True(created == 200, schemaAnswer.ToString());

        // A light third shard takes a few slots; one of them gets a heavy key (20,000 rows).
        await using var third = await ShardNodes.StartAsync("s2", cluster.NewDir).ContinueWith(t => new DisposableShard(t.Result));
        var shardJson = third.Shard.Json.TrimEnd('}') + ",\"weight\":0.02}";
        var (accepted, added) = await cluster.PostRawAsync("/shards", shardJson);
        Assert.True(accepted == 202, added.ToString());
        await Eventually.HoldsAsync(async () => (await cluster.ShardsAsync()).GetProperty("resharding").GetProperty("pendingSlots").GetInt32() == 0, "the third shard has its slots", TimeSpan.FromSeconds(60));
        var map = await cluster.ShardsAsync();
        var heavy = Enumerable.Range(0, 100_000).Select(i => $"heavy:{i}").First(k => ShardCluster.OwnerOf(map, k) == "s2");
        const int Rows = 20_000;
        var (loaded, loadAnswer) = await cluster.ExecuteAsync(heavy,
            ["INSERT INTO items(owner, n, v) WITH RECURSIVE c(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM c WHERE n < ?) SELECT ?, n, n FROM c", Rows - 1, heavy]);
        Assert.True(loaded == 200, loadAnswer.ToString());

        // Writes to the heavy key go on while the third shard drains (its slots, the heavy one too, move away).
        var errors = new ConcurrentQueue<string>();
        long inserted = 0, insertedSum = 0, updates = 0;
        using var stop = new CancellationTokenSource();
        async Task WriterAsync()
        {
            for (var i = 0; !stop.IsCancellationRequested; i++)
            {
                var (status, body) = await cluster.ExecuteAsync(heavy,
                    ["INSERT INTO items(owner, n, v) VALUES(?, ?, ?)", heavy, Rows + i, i],
                    ["UPDATE items SET v = v + 1 WHERE owner = ? AND n = ?", heavy, i % Rows]);
                if (status == 200)
                {
                    inserted++;
                    insertedSum += i;
                    updates++;
                }
                else
                {
                    errors.Enqueue($"write {i}: {status} {body}");
                }
            }
        }

        var writer = WriterAsync();
        await Eventually.HoldsAsync(() => Volatile.Read(ref inserted) >= 20, "the writer is under way");
        using (var drain = await cluster.Http.DeleteAsync("/shards/s2"))
        {
            Assert.True((int)drain.StatusCode == 202, await drain.Content.ReadAsStringAsync());
        }

        await Eventually.HoldsAsync(async () => (await cluster.ShardsAsync()).GetProperty("shards").GetArrayLength() == 2, "the third shard drained and left the map", TimeSpan.FromSeconds(120));
        await stop.CancelAsync();
        await writer;
        Assert.True(errors.IsEmpty, string.Join('\n', errors.Take(5)));

        var after = await cluster.ShardsAsync();
        Assert.True(after.GetProperty("resharding").GetProperty("caughtUpRows").GetInt64() > 0, after.ToString());
        var (read, totals) = await cluster.PostAsync("/db/query", new { key = heavy, sql = "SELECT count(*), sum(v) FROM items WHERE owner = ?", @params = new object[] { heavy }, consistency = "strong" });
        Assert.True(read == 200, totals.ToString());
        var row = totals.GetProperty("rows")[0];
        Assert.Equal(Rows + inserted, row[0].GetInt64());
        Assert.Equal(((long)Rows * (Rows - 1) / 2) + insertedSum + updates, row[1].GetInt64());
        var left = await third.Shard.Master.QueryAsync("SELECT count(*) FROM items");
        Assert.Equal(0, left.GetProperty("rows")[0][0].GetInt64());
    }

    [Fact]
    public async Task A_registered_table_dropped_through_the_router_does_not_stop_resharding_or_fan_outs()
    {
        // DROP TABLE leaves the table registered. Every move then failed reading it from the source, each left a
        // cleanup whose delete named it too and failed for good, and every fan-out answered CleanupPending.
        await using var cluster = await ShardCluster.StartAsync(2, "--fail-after", "1000");
        await CreateAccountsAsync(cluster);
        var (created, schemaAnswer) = await cluster.PostAsync("/db/schema", new
        {
            statements = new[] { "CREATE TABLE gone(k TEXT PRIMARY KEY)" },
            tables = new[] { new { name = "gone", shardKey = "k" } },
        });
        Assert.True(created == 200, schemaAnswer.ToString());
        var keys = Enumerable.Range(0, 200).Select(i => $"a{i}").ToList();
        foreach (var key in keys)
        {
            var (status, body) = await cluster.ExecuteAsync(key, ["INSERT INTO acct(k, v) VALUES(?, 1)", key], ["INSERT INTO gone(k) VALUES(?)", key]);
            Assert.True(status == 200, body.ToString());
        }

        var (dropped, dropAnswer) = await cluster.PostAsync("/db/schema", new { statements = new[] { "DROP TABLE gone" } });
        Assert.True(dropped == 200, dropAnswer.ToString());

        await using var third = await ShardNodes.StartAsync("s2", cluster.NewDir).ContinueWith(t => new DisposableShard(t.Result));
        var (accepted, added) = await cluster.PostRawAsync("/shards", third.Shard.Json.TrimEnd('}') + ",\"weight\":0.05}");
        Assert.True(accepted == 202, added.ToString());
        await Eventually.HoldsAsync(async () =>
        {
            var resharding = (await cluster.ShardsAsync()).GetProperty("resharding");
            return resharding.GetProperty("pendingSlots").GetInt32() == 0 && resharding.GetProperty("pendingCleanups").GetInt32() == 0;
        }, "the third shard has its slots, nothing left to clean up", TimeSpan.FromSeconds(60));

        var (read, rows) = await cluster.PostAsync("/db/query", new { sql = "SELECT k FROM acct", consistency = "strong" });
        Assert.True(read == 200, rows.ToString());
        Assert.Equal(keys.Order(StringComparer.Ordinal), rows.GetProperty("rows").EnumerateArray().Select(r => r[0].GetString()!).Order(StringComparer.Ordinal));
        var moved = await third.Shard.Master.QueryAsync("SELECT count(*) FROM acct");
        Assert.True(moved.GetProperty("rows")[0][0].GetInt64() > 0, moved.ToString());
    }

    [Fact]
    public async Task A_shard_added_while_ddl_is_being_broadcast_gets_that_ddl_too()
    {
        // The broadcast took the shard list before the add and reached the first shard after the new shard had
        // copied its schema from there: the new shard never got that index or table.
        await using var cluster = await ShardCluster.StartAsync(2, "--fail-after", "1000");
        var (created, createAnswer) = await cluster.PostAsync("/db/schema", new { statements = new[] { "CREATE TABLE big(id INTEGER PRIMARY KEY, v INTEGER)" } });
        Assert.True(created == 200, createAnswer.ToString());
        var (filled, fillAnswer) = await cluster.Shards[0].Master.ExecuteAsync(["INSERT INTO big(v) WITH RECURSIVE c(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM c WHERE n < 400000) SELECT abs(random()) FROM c"]);
        Assert.True(filled == 200, fillAnswer.ToString());

        await using var third = await ShardNodes.StartAsync("s2", cluster.NewDir).ContinueWith(t => new DisposableShard(t.Result));
        var ddl = cluster.PostAsync("/db/schema", new
        {
            statements = new[] { "CREATE INDEX big_v ON big(v)", "CREATE TABLE later(k TEXT PRIMARY KEY)" }, // the index takes a while on s0
            tables = new[] { new { name = "later", shardKey = "k" } },
        });
        await Task.Delay(50); // the add lands while the index is being built
        var (accepted, added) = await cluster.PostRawAsync("/shards", third.Shard.Json.TrimEnd('}') + ",\"weight\":0.01}");
        Assert.True(accepted == 202, added.ToString());
        var (schemaStatus, schemaAnswer) = await ddl;
        Assert.True(schemaStatus == 200, schemaAnswer.ToString());

        var names = await third.Shard.Master.QueryAsync("SELECT name FROM sqlite_master WHERE name IN ('big_v', 'later') ORDER BY name");
        Assert.Equal(["big_v", "later"], names.GetProperty("rows").EnumerateArray().Select(r => r[0].GetString()!));
    }

    [Fact]
    public async Task A_shard_whose_master_already_holds_rows_of_a_sharded_table_is_refused()
    {
        // A node drained once and added back with rows a cleanup never deleted: every fan-out would return
        // them beside their owners' copies.
        await using var cluster = await ShardCluster.StartAsync(2, "--fail-after", "1000");
        await CreateAccountsAsync(cluster);
        await using var third = await ShardNodes.StartAsync("s2", cluster.NewDir).ContinueWith(t => new DisposableShard(t.Result));
        var (put, putAnswer) = await third.Shard.Master.ExecuteAsync(["CREATE TABLE acct(k TEXT PRIMARY KEY, v INTEGER NOT NULL)"], ["INSERT INTO acct(k, v) VALUES('stale', 1)"]);
        Assert.True(put == 200, putAnswer.ToString());
        var json = third.Shard.Json.TrimEnd('}') + ",\"weight\":0.01}";
        var (refused, refusal) = await cluster.PostRawAsync("/shards", json);
        Assert.True(refused == 409, refusal.ToString());
        Assert.Contains("must start empty", refusal.GetProperty("error").GetString(), StringComparison.Ordinal);
        Assert.Equal(2, (await cluster.ShardsAsync()).GetProperty("shards").GetArrayLength());

        Assert.Equal(200, (await third.Shard.Master.ExecuteAsync(["DELETE FROM acct"])).Status);
        var (accepted, added) = await cluster.PostRawAsync("/shards", json);
        Assert.True(accepted == 202, added.ToString());
    }

    [Fact]
    public async Task A_slot_of_large_rows_moves_in_writes_a_node_accepts()
    {
        // The copy went in batches of 500 rows whatever their size: 300 rows of 150 KB in one request passed the
        // node's frame limit, the node closed the connection, and the slot could never move.
        await using var cluster = await ShardCluster.StartAsync(2, "--fail-after", "1000");
        var (created, schemaAnswer) = await cluster.PostAsync("/db/schema", new
        {
            statements = new[] { "CREATE TABLE blobs(owner TEXT NOT NULL, n INTEGER NOT NULL, v BLOB NOT NULL, PRIMARY KEY(owner, n))" },
            tables = new[] { new { name = "blobs", shardKey = "owner" } },
        });
        Assert.True(created == 200, schemaAnswer.ToString());
        await using var third = await ShardNodes.StartAsync("s2", cluster.NewDir).ContinueWith(t => new DisposableShard(t.Result));
        var (accepted, added) = await cluster.PostRawAsync("/shards", third.Shard.Json.TrimEnd('}') + ",\"weight\":0.01}");
        Assert.True(accepted == 202, added.ToString());
        await Eventually.HoldsAsync(async () => (await cluster.ShardsAsync()).GetProperty("resharding").GetProperty("pendingSlots").GetInt32() == 0, "the third shard has its slots", TimeSpan.FromSeconds(60));
        var map = await cluster.ShardsAsync();
        var heavy = Enumerable.Range(0, 100_000).Select(i => $"heavy:{i}").First(k => ShardCluster.OwnerOf(map, k) == "s2");
        for (var part = 0; part < 6; part++)
        {
            var (loaded, loadAnswer) = await cluster.ExecuteAsync(heavy,
                ["INSERT INTO blobs(owner, n, v) WITH RECURSIVE c(n) AS (SELECT ? UNION ALL SELECT n + 1 FROM c WHERE n < ?) SELECT ?, n, randomblob(150000) FROM c", part * 50, (part * 50) + 49, heavy]);
            Assert.True(loaded == 200, loadAnswer.ToString());
        }

        using (var drain = await cluster.Http.DeleteAsync("/shards/s2"))
        {
            Assert.True((int)drain.StatusCode == 202, await drain.Content.ReadAsStringAsync());
        }

        await Eventually.HoldsAsync(async () => (await cluster.ShardsAsync()).GetProperty("shards").GetArrayLength() == 2, "the third shard drained and left the map", TimeSpan.FromSeconds(120));
        var (read, totals) = await cluster.PostAsync("/db/query", new { key = heavy, sql = "SELECT count(*), sum(length(v)) FROM blobs WHERE owner = ?", @params = new object[] { heavy }, consistency = "strong" });
        Assert.True(read == 200, totals.ToString());
        Assert.Equal(300, totals.GetProperty("rows")[0][0].GetInt64());
        Assert.Equal(300L * 150_000, totals.GetProperty("rows")[0][1].GetInt64());
    }

    [Fact]
    public async Task A_shard_can_be_added_to_a_schema_of_more_objects_than_one_request_may_hold()
    {
        // The schema went to the new shard in one request: 600 sharded tables (each with its slot index) are
        // 1,200 statements, over a node's 1,000, and the shard could never be added.
        await using var cluster = await ShardCluster.StartAsync(2, "--fail-after", "1000");
        for (var part = 0; part < 2; part++)
        {
            var names = Enumerable.Range(part * 300, 300).Select(i => $"t{i}").ToList();
            var (created, answer) = await cluster.PostAsync("/db/schema", new
            {
                statements = names.Select(n => $"CREATE TABLE {n}(k TEXT PRIMARY KEY)").ToArray(),
                tables = names.Select(n => new { name = n, shardKey = "k" }).ToArray(),
            });
            Assert.True(created == 200, answer.ToString());
        }

        await using var third = await ShardNodes.StartAsync("s2", cluster.NewDir).ContinueWith(t => new DisposableShard(t.Result));
        var (accepted, added) = await cluster.PostRawAsync("/shards", third.Shard.Json.TrimEnd('}') + ",\"weight\":0.001}");
        Assert.True(accepted == 202, added.ToString());
        var objects = await third.Shard.Master.QueryAsync("SELECT count(*) FROM sqlite_master WHERE name LIKE 't%'");
        Assert.Equal(1200, objects.GetProperty("rows")[0][0].GetInt64());
    }

    [Fact]
    public async Task A_fan_out_never_repeats_rows_a_moved_slot_left_on_its_old_shard()
    {
        // A slot moved from s1 to s0 and the delete of its rows on s1 failed: the map records the cleanup.
        // s1's master is down, so the cleanup cannot finish, but s1's replica still answers reads.
        await using var cluster = await ShardCluster.StartAsync(2, "--fail-after", "1000");
        await CreateAccountsAsync(cluster);
        var map = await cluster.ShardsAsync();
        var keys = Enumerable.Range(0, 40).Select(i => $"a{i}").ToList();
        foreach (var key in keys)
        {
            var (status, body) = await cluster.ExecuteAsync(key, ["INSERT INTO acct(k, v) VALUES(?, ?)", key, 1]);
            Assert.True(status == 200, body.ToString());
        }

        var moved = keys.First(k => ShardCluster.OwnerOf(map, k) == "s0");
        var slot = ShardKey.Slot(moved, map.GetProperty("slots").GetInt32());
        var s1 = cluster.Shards[1];
        var (left, leftBody) = await s1.Master.ExecuteAsync(["INSERT INTO acct(k, v) VALUES(?, ?)", moved, 1]); // semi-sync: on the replica too
        Assert.True(left == 200, leftBody.ToString());

        var seed = $$"""
            {"version":{{map.GetProperty("version").GetInt64() + 1}},"slots":{{map.GetProperty("slots").GetInt32()}},
             "shards":[{{string.Join(",", cluster.Shards.Select(s => s.Json))}}],
             "tables":{{map.GetProperty("tables").GetRawText()}},"owners":{{map.GetProperty("owners").GetRawText()}},
             "cleanups":[[{{slot}},"s1"]]}
            """;
        var oldAddress = s1.Master.ReplicationAddress;
        s1.Master.Process.Kill();
        await cluster.StartRouterAsync(seed, "--fail-after", "1000");

        // Without the whole answer of s1 the fan-out fails (or leaves s1 out when partial answers are allowed), never repeats the row.
        var (failed, failure) = await cluster.PostAsync("/db/query", new { sql = "SELECT k FROM acct" });
        Assert.True(failed == 503, failure.ToString());
        Assert.Contains("s1", failure.ToString(), StringComparison.Ordinal);
        var partial = await cluster.QueryAsync(new { sql = "SELECT k FROM acct", allowPartial = true });
        var seen = partial.GetProperty("rows").EnumerateArray().Select(r => r[0].GetString()).ToList();
        Assert.Equal(seen.Distinct().Count(), seen.Count);
        Assert.Contains(moved, seen);
        Assert.Contains(partial.GetProperty("failedShards").EnumerateArray(), f => f.GetProperty("shard").GetString() == "s1" && f.GetProperty("code").GetString() == "CleanupPending");

        // s1's master is back: the next fan-out deletes the leftovers first and answers every row once.
        s1.Master = await DataNodeProcess.StartAsync(s1.MasterDir, "--role", "master", "--listen", oldAddress);
        await Eventually.HoldsAsync(async () => (await cluster.PostAsync("/db/query", new { sql = "SELECT k FROM acct" })).Status == 200, "the fan-out answers again", TimeSpan.FromSeconds(60));
        var whole = await cluster.QueryAsync(new { sql = "SELECT k FROM acct ORDER BY k", orderBy = new[] { "k" } });
        Assert.Equal(keys.Order(StringComparer.Ordinal), whole.GetProperty("rows").EnumerateArray().Select(r => r[0].GetString()!));
        Assert.Equal(0, (await cluster.ShardsAsync()).GetProperty("resharding").GetProperty("pendingCleanups").GetInt32());
        Assert.Equal(0, (await s1.Master.QueryAsync("SELECT count(*) FROM acct WHERE k = ?", moved)).GetProperty("rows")[0][0].GetInt64());
    }

    [Fact]
    public async Task A_slot_a_failed_move_left_closed_on_its_source_is_opened_again_once_the_source_answers()
    {
        // The map gives s1 one slot of s0 too many, so the router moves one of s1's slots to s0. s1's master
        // sits behind a proxy: once the move has closed the slot there, the proxy drops s1's slotRows requests
        // (the move fails) and, until the test allows them, its openSlot requests (the reopen fails). Every
        // later try of the move fails on its first read, before it would close and reopen the slot itself.
        await using var cluster = await ShardCluster.StartAsync(2, "--fail-after", "1000");
        var (map, slots, owners) = await OneSlotTooManyOnS1Async(cluster);
        var s1 = cluster.Shards[1];
        var openAllowed = false;
        FrameDropProxy? proxy = null;
        proxy = new FrameDropProxy(s1.Master.ReplicationAddress, op =>
            (op == "slotRows" && proxy!.Seen("closeSlot") > 0) || (op == "openSlot" && !Volatile.Read(ref openAllowed)));
        await using var _ = proxy;
        var seed = ShardCluster.SeedMap(map, $$"""{{cluster.Shards[0].Json}},{"id":"s1","master":"{{proxy.Address}}","replicas":["{{s1.Replica.ReplicationAddress}}"]}""", owners);
        await cluster.StartRouterAsync(seed, "--fail-after", "1000", "--request-timeout", "1s");

        async Task<int[]> ClosedOnS1Async() =>
            (await s1.Master.StatusAsync()).TryGetProperty("closedSlots", out var closed) ? [.. closed.EnumerateArray().Select(c => c.GetInt32())] : [];

        await Eventually.HoldsAsync(() => Task.FromResult(proxy.Dropped("openSlot") > 0), "the move closed a slot on s1 and could not reopen it", TimeSpan.FromSeconds(60));
        var slot = Assert.Single(await ClosedOnS1Async());
        var key = Enumerable.Range(0, 1_000_000).Select(i => $"r{i}").First(k => ShardKey.Slot(k, slots) == slot);
        var (refused, refusal) = await cluster.ExecuteAsync(key, ["INSERT INTO acct(k, v) VALUES(?, 1)", key]);
        Assert.True(refused == 503 && refusal.GetProperty("code").GetString() == "SlotClosed", refusal.ToString());

        // s1 answers openSlot again (its reads for the move still hang): the slot opens and takes writes,
        // though the move itself cannot finish.
        Volatile.Write(ref openAllowed, true);
        await Eventually.HoldsAsync(async () => !(await ClosedOnS1Async()).Contains(slot), "s1 opens the slot again", TimeSpan.FromSeconds(30));
        var (written, writeBody) = await cluster.ExecuteAsync(key, ["INSERT INTO acct(k, v) VALUES(?, 1)", key]);
        Assert.True(written == 200, writeBody.ToString());
        Assert.Equal("s1", writeBody.GetProperty("shard").GetString());
        Assert.Equal(1, (await s1.Master.QueryAsync("SELECT count(*) FROM acct WHERE k = ?", key)).GetProperty("rows")[0][0].GetInt64());
        var resharding = (await cluster.ShardsAsync()).GetProperty("resharding");
        Assert.Equal(0, resharding.GetProperty("pendingReopens").GetInt32());
        Assert.True(resharding.GetProperty("pendingSlots").GetInt32() == 1, resharding.ToString());
    }

    [Fact]
    public async Task A_read_after_its_slot_moved_does_not_read_a_replica_that_lacks_the_copy()
    {
        // Keys written on s0 and s1 (each write's token names its shard); then a third shard takes some
        // of their slots while its replica receives nothing (its master's replication answers are held;
        // it stays connected and, with a 60 s lag bound, in the read rotation). A session read of a moved
        // key with its old token must not be answered by that replica, which lacks the copy.
        await using var cluster = await ShardCluster.StartAsync(2, "--max-replica-lag", "60s");
        await CreateAccountsAsync(cluster);
        var dir = cluster.NewDir();
        await using var master = await DataNodeProcess.StartAsync(dir, "--role", "master", "--sync", "async"); // semi-sync would wait for the held replica
        var (created, createBody) = await master.ExecuteAsync(["CREATE TABLE IF NOT EXISTS acct(k TEXT PRIMARY KEY, v INTEGER NOT NULL)"]);
        Assert.True(created == 200, createBody.ToString());
        await using var proxy = new FrameDropProxy(master.ReplicationAddress, _ => false);
        await using var replica = await DataNodeProcess.StartAsync(cluster.NewDir(), "--role", "replica", "--master", proxy.Address);
        await Eventually.HoldsAsync(async () => await replica.LsnAsync() == await master.LsnAsync(), "the new replica has the table", TimeSpan.FromSeconds(30));

        var tokens = new Dictionary<string, JsonElement>();
        foreach (var key in Enumerable.Range(0, 300).Select(i => $"s{i}"))
        {
            var (written, answer) = await cluster.ExecuteAsync(key, ["INSERT INTO acct(k, v) VALUES(?, 7)", key]);
            Assert.True(written == 200, answer.ToString());
            tokens[key] = answer.GetProperty("token").Clone();
        }

        // The moves must finish within the replica's 5 s idle timeout: a replica that has heard nothing
        // for that long reconnects, and the router then points it at the master itself (past the proxy).
        // A small weight keeps the moves few (~100 slots; with 0.2, ~370 of them sometimes took longer).
        proxy.PauseAnswers();
        var (accepted, added) = await cluster.PostRawAsync("/shards", $$"""{"id":"s2","master":"{{master.ReplicationAddress}}","replicas":["{{replica.ReplicationAddress}}"],"weight":0.05}""");
        Assert.True(accepted == 202, added.ToString());
        await Eventually.HoldsAsync(async () => (await cluster.ShardsAsync()).GetProperty("resharding").GetProperty("pendingSlots").GetInt32() == 0, "s2 has its slots", TimeSpan.FromSeconds(60));
        var map = await cluster.ShardsAsync();
        var moved = tokens.Keys.Where(k => ShardCluster.OwnerOf(map, k) == "s2").ToList();
        Assert.NotEmpty(moved);
        var replicaLsn = await replica.LsnAsync();
        Assert.True(map.GetProperty("shards")[2].GetProperty("fanOutFloor").GetInt64() > replicaLsn, $"replica at {replicaLsn}, master at {await master.LsnAsync()}: {map.GetProperty("shards")[2]}");

        foreach (var key in moved)
        {
            var read = await cluster.QueryAsync(new { key, sql = "SELECT v FROM acct WHERE k = ?", @params = new object[] { key }, consistency = "session", token = tokens[key] });
            Assert.True(read.GetProperty("rows").GetArrayLength() == 1, $"{key}: {read}");

            // Nor a plain replica read: "absent" for a row that was never deleted is no past state at all.
            var plain = await cluster.QueryAsync(new { key, sql = "SELECT v FROM acct WHERE k = ?", @params = new object[] { key } });
            Assert.True(plain.GetProperty("rows").GetArrayLength() == 1, $"{key} (replica consistency): {plain}");
        }

        // Nor are the moved rows deleted from the shards they left while s2's only copy is on its master (its
        // replica has none of it): a SIGKILL of that master would have lost them.
        Assert.True((await cluster.ShardsAsync()).GetProperty("resharding").GetProperty("pendingCleanups").GetInt32() > 0);
        long left = 0;
        foreach (var shard in cluster.Shards)
        {
            left += (await shard.Master.QueryAsync("SELECT count(*) FROM acct")).GetProperty("rows")[0][0].GetInt64();
        }

        Assert.Equal(tokens.Count, left);

        proxy.ResumeAnswers();
        await Eventually.HoldsAsync(async () => (await cluster.ShardsAsync()).GetProperty("resharding").GetProperty("pendingCleanups").GetInt32() == 0,
            "the cleanups finish once s2's replica has the copies", TimeSpan.FromSeconds(60));
        left = 0;
        foreach (var shard in cluster.Shards)
        {
            left += (await shard.Master.QueryAsync("SELECT count(*) FROM acct")).GetProperty("rows")[0][0].GetInt64();
        }

        Assert.Equal(tokens.Count - moved.Count, left);
    }

    [Fact]
    public async Task A_slot_closed_on_its_owner_with_no_move_holding_it_is_opened_again()
    {
        // What a close that reached the node after the reopen meant to undo it leaves behind (or a move of a
        // router that was restarted): the owner refuses the slot's writes though nothing holds them. The
        // router sees in its probes that it closed the slot itself and opens it; a slot another router
        // closed (its map may say the slot has moved) is left alone.
        await using var cluster = await ShardCluster.StartAsync(2);
        await CreateAccountsAsync(cluster);
        var map = await cluster.ShardsAsync();
        var slots = map.GetProperty("slots").GetInt32();
        var keys = Enumerable.Range(0, 1000).Select(i => $"c{i}").Where(k => ShardCluster.OwnerOf(map, k) == "s0").DistinctBy(k => ShardKey.Slot(k, slots)).Take(3).ToList();
        var (mine, others, later) = (keys[0], keys[1], keys[2]);
        var epoch = map.GetProperty("shards")[0].GetProperty("epoch").GetInt64();
        var routerId = (await File.ReadAllLinesAsync(Path.Combine(cluster.RouterDir, "router-id")))[0]; // then the machine and directory it was made for
        await using var node = await DataNodeClient.ConnectAsync(cluster.Shards[0].Master.ReplicationAddress);
        Assert.Contains(ShardKey.Slot(mine, slots), await node.CloseSlotAsync(ShardKey.Slot(mine, slots), epoch, by: routerId + "#test"));
        Assert.Contains(ShardKey.Slot(others, slots), await node.CloseSlotAsync(ShardKey.Slot(others, slots), epoch, by: "another-router#test"));
        foreach (var key in keys.Take(2))
        {
            var (refused, refusal) = await cluster.ExecuteAsync(key, ["INSERT INTO acct(k, v) VALUES(?, 1)", key]);
            Assert.True(refused == 503 && refusal.GetProperty("code").GetString() == "SlotClosed", refusal.ToString());
        }

        await Eventually.HoldsAsync(async () => (await cluster.ExecuteAsync(mine, ["INSERT OR REPLACE INTO acct(k, v) VALUES(?, 1)", mine])).Status == 200,
            "the router opens the slot it closed on s0", TimeSpan.FromSeconds(30));

        // A later round of the same kind has run since (the slot closed now is opened too), so the other
        // router's close, seen as long as the first, has been passed over rather than not reached yet.
        await node.CloseSlotAsync(ShardKey.Slot(later, slots), epoch, by: routerId + "#later");
        await Eventually.HoldsAsync(async () => (await cluster.ExecuteAsync(later, ["INSERT OR REPLACE INTO acct(k, v) VALUES(?, 1)", later])).Status == 200,
            "the router opens the slot it closed later", TimeSpan.FromSeconds(30));
        var status = await cluster.Shards[0].Master.StatusAsync();
        Assert.Equal([ShardKey.Slot(others, slots)], status.GetProperty("closedSlots").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal("another-router#test", status.GetProperty("closedBy").GetProperty(ShardKey.Slot(others, slots).ToString(CultureInfo.InvariantCulture)).GetString());
        var (stillRefused, stillRefusal) = await cluster.ExecuteAsync(others, ["INSERT INTO acct(k, v) VALUES(?, 1)", others]);
        Assert.True(stillRefused == 503 && stillRefusal.GetProperty("code").GetString() == "SlotClosed", stillRefusal.ToString());
        Assert.Equal(0, (await cluster.ShardsAsync()).GetProperty("resharding").GetProperty("pendingReopens").GetInt32());
    }

    [Fact]
    public async Task A_flip_whose_map_cannot_be_saved_undoes_the_move_and_the_router_goes_on()
    {
        // The map gives s1 one slot of s0 too many, so the router moves one of s1's slots (each holds a row)
        // to s0. When the move closes the slot on s1 (just before the flip), a directory appears where the
        // router writes its map's temporary file: the flip cannot be saved. The router must not stop, and the
        // slot must take writes on s1 again; once the map can be saved, the move finishes and loses nothing.
        await using var cluster = await ShardCluster.StartAsync(2, "--fail-after", "1000");
        var (map, slots, owners) = await OneSlotTooManyOnS1Async(cluster);
        var s1 = cluster.Shards[1];
        var keyOfSlot = new Dictionary<int, string>();
        for (var i = 0; keyOfSlot.Count < owners.Count(o => o == "s1"); i++)
        {
            var key = $"m{i}";
            if (owners[ShardKey.Slot(key, slots)] == "s1")
            {
                keyOfSlot.TryAdd(ShardKey.Slot(key, slots), key);
            }
        }

        var keys = keyOfSlot.Values.ToList();
        foreach (var chunk in keys.Chunk(400))
        {
            var (put, body) = await s1.Master.ExecuteAsync([$"INSERT INTO acct(k, v) VALUES {string.Join(",", chunk.Select(_ => "(?, 1)"))}", .. chunk]);
            Assert.True(put == 200, body.ToString());
        }

        // The router's data directory is set before the router starts, so the rule never sees another one.
        string Blocker() => Path.Combine(cluster.RouterDir, "shard-map.json.tmp");
        var healed = false;
        await using var proxy = new FrameDropProxy(s1.Master.ReplicationAddress, op =>
        {
            if (op == "closeSlot" && !Volatile.Read(ref healed))
            {
                Directory.CreateDirectory(Blocker());
            }

            return false;
        });
        var seed = ShardCluster.SeedMap(map, $$"""{{cluster.Shards[0].Json}},{"id":"s1","master":"{{proxy.Address}}","replicas":["{{s1.Replica.ReplicationAddress}}"]}""", owners);
        await cluster.StartRouterAsync(seed, "--fail-after", "1000", "--request-timeout", "2s");

        await Eventually.HoldsAsync(async () =>
            (await cluster.ShardsAsync()).GetProperty("resharding").TryGetProperty("lastError", out var error) && error.GetString()!.Contains("cannot save the shard map", StringComparison.Ordinal),
            "the flip fails to save the map", TimeSpan.FromSeconds(60));
        Assert.False(cluster.Router.HasExited);
        Assert.True(proxy.Seen("closeSlot") > 0);
        var moving = (await cluster.ShardsAsync()).GetProperty("resharding").GetProperty("moving").GetString()!;
        Assert.EndsWith(": s1 -> s0", moving, StringComparison.Ordinal);
        var slot = int.Parse(moving["slot ".Length..moving.IndexOf(':', StringComparison.Ordinal)], CultureInfo.InvariantCulture);

        // The slot is still s1's and takes writes there (the move reopened it; a retry may hold it briefly).
        var fresh = Enumerable.Range(0, 1_000_000).Select(i => $"n{i}").First(k => ShardKey.Slot(k, slots) == slot);
        await Eventually.HoldsAsync(async () => (await cluster.ExecuteAsync(fresh, ["INSERT OR REPLACE INTO acct(k, v) VALUES(?, 1)", fresh])).Status == 200,
            "a write to the slot goes through on s1", TimeSpan.FromSeconds(30));
        Assert.DoesNotContain("with no move holding it", cluster.Router.Output, StringComparison.Ordinal); // the move reopened it, not the stray-close sweep
        Assert.Equal(1, (await s1.Master.QueryAsync("SELECT count(*) FROM acct WHERE k = ?", fresh)).GetProperty("rows")[0][0].GetInt64());
        Assert.Equal("s1", ShardCluster.SlotOwners(await cluster.ShardsAsync())[slot]);

        // The map can be saved again: the move finishes, every row once, on s0.
        Volatile.Write(ref healed, true);
        Directory.Delete(Blocker());
        await Eventually.HoldsAsync(async () =>
        {
            var resharding = (await cluster.ShardsAsync()).GetProperty("resharding");
            return resharding.GetProperty("pendingSlots").GetInt32() == 0 && resharding.GetProperty("pendingCleanups").GetInt32() == 0;
        }, "the move finishes", TimeSpan.FromSeconds(60));
        Assert.Equal("s0", ShardCluster.SlotOwners(await cluster.ShardsAsync())[slot]);
        var all = keys.Append(fresh).Order(StringComparer.Ordinal).ToList();
        var whole = await cluster.QueryAsync(new { sql = "SELECT k FROM acct ORDER BY k", orderBy = new[] { "k" } });
        Assert.Equal(all, whole.GetProperty("rows").EnumerateArray().Select(r => r[0].GetString()!));
        Assert.Equal(2, (await cluster.Shards[0].Master.QueryAsync("SELECT count(*) FROM acct")).GetProperty("rows")[0][0].GetInt64());
        Assert.Equal(0, (await s1.Master.QueryAsync("SELECT count(*) FROM acct WHERE k IN (?, ?)", keyOfSlot[slot], fresh)).GetProperty("rows")[0][0].GetInt64());
    }

    [Fact]
    public async Task Killing_the_router_during_a_move_loses_and_duplicates_nothing_and_the_move_finishes_after_a_restart()
    {
        await using var cluster = await ShardCluster.StartAsync(2);
        await CreateAccountsAsync(cluster);
        const int Seeds = 1500;
        for (var i = 0; i < Seeds; i += 50)
        {
            await Task.WhenAll(Enumerable.Range(i, 50).Select(async n =>
            {
                var (status, body) = await cluster.ExecuteAsync($"seed:{n}", ["INSERT INTO acct(k, v) VALUES(?, ?)", $"seed:{n}", n]);
                Assert.True(status == 200, body.ToString());
            }));
        }

        // Load through every restart: a write acknowledged must survive; one whose answer was lost with
        // the router (or refused while it was down) may or may not have landed, but never twice.
        var acknowledged = new ConcurrentDictionary<string, long>();
        var unknown = new ConcurrentDictionary<string, long>();
        using var stop = new CancellationTokenSource();
        var next = 100_000;
        async Task WriterAsync()
        {
            while (!stop.IsCancellationRequested)
            {
                var n = Interlocked.Increment(ref next);
                var key = $"live:{n}";
                try
                {
                    var (status, _) = await cluster.ExecuteAsync(key, ["INSERT INTO acct(k, v) VALUES(?, ?)", key, n]);
                    (status == 200 ? acknowledged : unknown)[key] = n;
                    if (status == 200)
                    {
                        continue;
                    }
                }
                catch (Exception ex) when (ex is HttpRequestException or ObjectDisposedException or TaskCanceledException or InvalidOperationException)
                {
                    unknown[key] = n;
                }

                await Task.Delay(20); // the router is restarting
            }
        }

        var load = Enumerable.Range(0, 3).Select(_ => WriterAsync()).ToList();
        await using var third = await ShardNodes.StartAsync("s2", cluster.NewDir).ContinueWith(t => new DisposableShard(t.Result));
        var (accepted, answer) = await cluster.PostRawAsync("/shards", third.Shard.Json);
        Assert.True(accepted == 202, answer.ToString());
        var toMove = answer.GetProperty("slotsToMove").GetInt32();

        // SIGKILL the router three times while slots move (wherever in a move it happens to be), each
        // time after the new process has moved some slots itself.
        for (var kill = 0; kill < 3; kill++)
        {
            await Eventually.HoldsAsync(async () => (await cluster.ShardsAsync()).GetProperty("resharding").GetProperty("movedSlots").GetInt32() >= 40,
                "the router moves slots", TimeSpan.FromSeconds(120));
            var pending = (await cluster.ShardsAsync()).GetProperty("resharding").GetProperty("pendingSlots").GetInt32();
            Assert.True(pending > 1, $"the move finished before kill {kill + 1}; {pending} slots left");
            await cluster.RestartRouterAsync();
            await Eventually.HoldsAsync(async () => (await cluster.Http.GetAsync("/healthz")).IsSuccessStatusCode, "the restarted router is ready", TimeSpan.FromSeconds(30));
        }

        await Eventually.HoldsAsync(async () =>
        {
            var resharding = (await cluster.ShardsAsync()).GetProperty("resharding");
            return resharding.GetProperty("pendingSlots").GetInt32() == 0 && resharding.GetProperty("pendingCleanups").GetInt32() == 0;
        }, "the restarted router finishes the move and its cleanups", TimeSpan.FromSeconds(180));
        await Eventually.HoldsAsync(() => acknowledged.Count >= 50, "writes flowed", TimeSpan.FromSeconds(30));
        await stop.CancelAsync();
        await Task.WhenAll(load);

        var map = await cluster.ShardsAsync();
        Assert.Equal(toMove, map.GetProperty("shards").EnumerateArray().Single(s => s.GetProperty("id").GetString() == "s2").GetProperty("slotCount").GetInt32());

        // The fan-out floors are in the stored map: the sources' (the LSNs of the deletes that cleared the
        // moved slots) and the destination's (its LSN after the copies): a router restarted now still reads
        // each shard only where those writes are applied.
        await cluster.RestartRouterAsync();
        await Eventually.HoldsAsync(async () => (await cluster.Http.GetAsync("/healthz")).IsSuccessStatusCode, "the restarted router is ready", TimeSpan.FromSeconds(30));
        var floors = (await cluster.ShardsAsync()).GetProperty("shards").EnumerateArray()
            .ToDictionary(s => s.GetProperty("id").GetString()!, s => s.TryGetProperty("fanOutFloor", out var f) ? f.GetInt64() : 0);
        Assert.True(floors["s0"] > 0 && floors["s1"] > 0 && floors["s2"] > 0, string.Join(", ", floors));

        // Every row once, every acknowledged write there; nothing that was never attempted.
        var rows = (await cluster.QueryAsync(new { sql = "SELECT k, v FROM acct", consistency = "strong" })).GetProperty("rows").EnumerateArray()
            .Select(r => (Key: r[0].GetString()!, Value: r[1].GetInt64())).ToList();
        var duplicated = rows.GroupBy(r => r.Key).Where(g => g.Count() > 1).Select(g => g.Key).ToList();
        Assert.True(duplicated.Count == 0, "rows twice: " + string.Join(", ", duplicated.Take(5)));
        var present = rows.ToDictionary(r => r.Key, r => r.Value);
        for (var n = 0; n < Seeds; n++)
        {
            Assert.Equal(n, present[$"seed:{n}"]);
        }

        var lost = acknowledged.Where(a => !present.TryGetValue(a.Key, out var v) || v != a.Value).Select(a => a.Key).ToList();
        Assert.True(lost.Count == 0, $"{lost.Count} acknowledged writes lost: " + string.Join(", ", lost.Take(5)));
        Assert.All(present.Keys.Where(k => k.StartsWith("live:", StringComparison.Ordinal)), k => Assert.True(acknowledged.ContainsKey(k) || unknown.ContainsKey(k), k));

        // Every row on the shard that owns its slot, and no master refuses a slot it owns (a kill between
        // closing a slot on its source and flipping it must not leave it closed there for good).
        var slots = map.GetProperty("slots").GetInt32();
        var owners = new string[slots];
        foreach (var run in map.GetProperty("owners").EnumerateArray())
        {
            for (var slot = run[1].GetInt32(); slot <= run[2].GetInt32(); slot++)
            {
                owners[slot] = run[0].GetString()!;
            }
        }

        foreach (var (id, master) in cluster.Shards.Select(s => (s.Id, s.Master)).Append(("s2", third.Shard.Master)))
        {
            var held = await master.QueryAsync("SELECT k FROM acct");
            Assert.All(held.GetProperty("rows").EnumerateArray(), r => Assert.Equal(id, owners[ShardKey.Slot(r[0].GetString()!, slots)]));
            if ((await master.StatusAsync()).TryGetProperty("closedSlots", out var closed))
            {
                Assert.All(closed.EnumerateArray(), slot => Assert.NotEqual(id, owners[slot.GetInt32()]));
            }
        }
    }

    private sealed class DisposableShard(ShardNodes shard) : IAsyncDisposable
    {
        public ShardNodes Shard { get; } = shard;

        public async ValueTask DisposeAsync()
        {
            await Shard.Replica.DisposeAsync();
            await Shard.Master.DisposeAsync();
        }
    }
}
