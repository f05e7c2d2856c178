using System.Collections.Concurrent;
using System.Text.Json;
using Infra.IntegrationTests.Harness;

namespace Infra.IntegrationTests;

/// <summary>Data nodes as real processes: replication, catch-up, re-clone, failover with SIGKILL, fencing, bad input.</summary>
public sealed class DataNodeTests : IDisposable
{
    private readonly List<string> _dirs = [];

    private string NewDir()
    {
        var dir = DataNodeProcess.NewDataDir();
        _dirs.Add(dir);
        return dir;
    }

    public void Dispose()
    {
        foreach (var dir in _dirs.Where(Directory.Exists))
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static async Task CreateTableAsync(DataNodeProcess master)
    {
        var (status, body) = await master.ExecuteAsync(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, r INTEGER, at TEXT)"]);
        Assert.True(status == 200, body.ToString());
    }

    private static async Task ConvergedAsync(DataNodeProcess master, params DataNodeProcess[] replicas)
    {
        foreach (var replica in replicas)
        {
            await Eventually.HoldsAsync(async () => await replica.LsnAsync() == await master.LsnAsync(), "the replica catches up", TimeSpan.FromSeconds(30));
            Assert.Equal(await master.ChecksumAsync(), await replica.ChecksumAsync());
        }
    }

    [Fact]
    public async Task Replica_serves_reads_with_read_your_writes_and_refuses_writes()
    {
        await using var master = await DataNodeProcess.StartAsync(NewDir(), "--role", "master");
        await using var replica = await DataNodeProcess.StartAsync(NewDir(), "--role", "replica", "--master", master.ReplicationAddress);
        await CreateTableAsync(master);
        var (status, body) = await master.ExecuteAsync(["INSERT INTO t(id, v, r, at) VALUES(?, ?, random(), datetime('now'))", 1, "one"]);
        Assert.Equal(200, status);
        var lsn = body.GetProperty("lsn").GetInt64();
        Assert.Equal(1, body.GetProperty("epoch").GetInt64());

        // Semi-sync: the write was acknowledged only after the replica had it, so a read at its LSN answers at once.
        var (readStatus, read) = await replica.PostAsync("/query", new { sql = "SELECT v, r FROM t WHERE id = ?", @params = new object[] { 1 }, minLsn = lsn, timeoutMs = 0 });
        Assert.Equal(200, readStatus);
        Assert.Equal("one", read.GetProperty("rows")[0][0].GetString());
        Assert.True(read.GetProperty("lsn").GetInt64() >= lsn);
        var masterRow = await master.QueryAsync("SELECT r FROM t WHERE id = 1");
        Assert.Equal(masterRow.GetProperty("rows")[0][0].GetInt64(), read.GetProperty("rows")[0][1].GetInt64());

        var (behind, behindBody) = await replica.PostAsync("/query", new { sql = "SELECT 1", minLsn = lsn + 100, timeoutMs = 50 });
        Assert.Equal(503, behind);
        Assert.Equal("Behind", behindBody.GetProperty("code").GetString());

        var (refused, refusedBody) = await replica.ExecuteAsync(["INSERT INTO t(id) VALUES(2)"]);
        Assert.Equal(409, refused);
        Assert.Equal("NotMaster", refusedBody.GetProperty("code").GetString());
        Assert.Contains(master.ReplicationAddress, refusedBody.GetProperty("error").GetString(), StringComparison.Ordinal);

        var status2 = await master.StatusAsync();
        Assert.Equal("master", status2.GetProperty("role").GetString());
        Assert.Single(status2.GetProperty("replicas").EnumerateArray());
        await ConvergedAsync(master, replica);
    }

    [Fact]
    public async Task A_slots_rows_and_their_delta_come_over_the_client_protocol_and_bad_arguments_are_refused()
    {
        await using var master = await DataNodeProcess.StartAsync(NewDir(), "--role", "master", "--sync", "async");
        await CreateTableAsync(master);
        const int Slots = 4;
        var ids = Enumerable.Range(1, 40).ToList();
        foreach (var id in ids)
        {
            Assert.Equal(200, (await master.ExecuteAsync(["INSERT INTO t(id, v) VALUES(?, ?)", id, $"v{id}"])).Status);
        }

        await using var client = await Infra.Client.Data.DataNodeClient.ConnectAsync(master.ReplicationAddress);
        Infra.Client.Data.SlotTableName[] tables = [new("t", "id")];
        var inSlot0 = ids.Where(id => Infra.Core.Placement.ShardKey.Slot((long)id, Slots) == 0).ToList();
        var copy = await client.SlotRowsAsync(tables, Slots, 0);
        Assert.Equal(inSlot0, copy.Tables[0].Rows.Select(r => (int)(long)r[0]!).Order());
        Assert.Equal(await master.LsnAsync(), copy.Lsn);

        var changed = inSlot0[0];
        var deleted = inSlot0[1];
        Assert.Equal(200, (await master.ExecuteAsync(["UPDATE t SET v = 'new' WHERE id = ?", changed], ["DELETE FROM t WHERE id = ?", deleted], ["UPDATE t SET v = 'x' WHERE id = ?", ids.First(id => !inSlot0.Contains(id))])).Status);
        var delta = await client.SlotRowsAsync(tables, Slots, 0, copy.Lsn, copy.Epoch);
        Assert.Equal(["id", "v", "r", "at"], delta.Tables[0].Columns);
        Assert.Equal(changed, (int)(long)Assert.Single(delta.Tables[0].Rows)[0]!);
        Assert.Equal("new", delta.Tables[0].Rows[0][1]);
        Assert.Equal(["id"], delta.Tables[0].KeyColumns);
        Assert.Equal(deleted, (int)(long)Assert.Single(delta.Tables[0].Gone)[0]!);

        var stale = await Assert.ThrowsAsync<Infra.Client.Data.DataException>(() => client.SlotRowsAsync(tables, Slots, 0, copy.Lsn, copy.Epoch + 1));
        Assert.Equal("StaleEpoch", stale.Code);
        var ahead = await Assert.ThrowsAsync<Infra.Client.Data.DataException>(() => client.SlotRowsAsync(tables, Slots, 0, delta.Lsn + 10));
        Assert.Equal("Truncated", ahead.Code);
        var internalTable = await Assert.ThrowsAsync<Infra.Client.Data.DataException>(() => client.SlotRowsAsync([new("_infra_log", "lsn")], Slots, 0));
        Assert.Equal("NotAllowed", internalTable.Code);
        var badSlot = await Assert.ThrowsAsync<Infra.Client.Data.DataException>(() => client.SlotRowsAsync(tables, Slots, Slots));
        Assert.Equal("BadRequest", badSlot.Code);
        var noTables = await Assert.ThrowsAsync<Infra.Client.Data.DataException>(() => client.SlotRowsAsync([], Slots, 0));
        Assert.Equal("BadRequest", noTables.Code);
        var twice = await Assert.ThrowsAsync<Infra.Client.Data.DataException>(() => client.SlotRowsAsync([new("t", "id"), new("T", "v")], Slots, 0, copy.Lsn));
        Assert.Equal("BadRequest", twice.Code);

        // A slot closed to writes tagged with it (what a slot move does on its source); bad slot numbers are refused.
        Assert.Equal([2], await client.CloseSlotAsync(2));
        var closed = await Assert.ThrowsAsync<Infra.Client.Data.DataException>(() => client.ExecuteAsync([["INSERT INTO t(id, v) VALUES(?, ?)", 1000L, "late"]], slot: 2));
        Assert.Equal("SlotClosed", closed.Code);
        await client.ExecuteAsync([["INSERT INTO t(id, v) VALUES(?, ?)", 1001L, "other slot"]], slot: 3);
        Assert.Equal([2], (await master.StatusAsync()).GetProperty("closedSlots").EnumerateArray().Select(e => e.GetInt32()));
        foreach (var bad in new[] { -1, 65536 })
        {
            Assert.Equal("BadRequest", (await Assert.ThrowsAsync<Infra.Client.Data.DataException>(() => client.CloseSlotAsync(bad))).Code);
            Assert.Equal("BadRequest", (await Assert.ThrowsAsync<Infra.Client.Data.DataException>(() => client.ExecuteAsync([["SELECT 1"]], slot: bad))).Code);
        }

        Assert.Equal("StaleEpoch", (await Assert.ThrowsAsync<Infra.Client.Data.DataException>(() => client.CloseSlotAsync(5, epoch: 99))).Code);

        // A close may name its closer (a router's id): the status reports it, a later close replaces it, opening forgets it.
        Assert.Equal([2, 7], await client.CloseSlotAsync(7, by: "router-a"));
        Assert.Equal("router-a", (await client.StatusAsync()).ClosedBy[7]);
        Assert.Equal("router-a", (await master.StatusAsync()).GetProperty("closedBy").GetProperty("7").GetString());
        await client.CloseSlotAsync(7, by: "router-b");
        Assert.Equal(new Dictionary<int, string> { [7] = "router-b" }, (await client.StatusAsync()).ClosedBy);
        Assert.Equal("BadRequest", (await Assert.ThrowsAsync<Infra.Client.Data.DataException>(() => client.CloseSlotAsync(8, by: new string('x', 201)))).Code);
        Assert.Equal("BadRequest", (await Assert.ThrowsAsync<Infra.Client.Data.DataException>(() => client.CloseSlotAsync(8, by: ""))).Code);
        Assert.Equal("BadRequest", (await Assert.ThrowsAsync<Infra.Client.Data.DataException>(() => client.OpenSlotAsync(7, ifClosedBy: new string('x', 201)))).Code);

        // A conditional open changes nothing unless the close it names is the one in force (a late reopen of
        // an earlier close must not undo a later one).
        Assert.Equal([2, 7], await client.OpenSlotAsync(7, ifClosedBy: "router-a"));
        Assert.Equal([2, 7], await client.OpenSlotAsync(8, ifClosedBy: "router-b"));
        Assert.Equal([2], await client.OpenSlotAsync(7, ifClosedBy: "router-b"));
        await client.CloseSlotAsync(7, by: "router-c");
        Assert.Equal([2], await client.OpenSlotAsync(7)); // unconditional
        Assert.Empty((await client.StatusAsync()).ClosedBy);
        Assert.Empty(await client.OpenSlotAsync(2));
        await client.ExecuteAsync([["INSERT INTO t(id, v) VALUES(?, ?)", 1000L, "reopened"]], slot: 2);
        Assert.False((await master.StatusAsync()).TryGetProperty("closedSlots", out _));
        await client.ExecuteAsync([["DELETE FROM t WHERE id IN (1000, 1001)"]]);

        // The connection and the node carry on.
        Assert.Equal(inSlot0.Count - 1, (await client.SlotRowsAsync(tables, Slots, 0)).Tables[0].Rows.Count);
    }

    [Fact]
    public async Task Semi_sync_without_a_confirming_replica_fails_clearly_instead_of_degrading()
    {
        await using var master = await DataNodeProcess.StartAsync(NewDir(), "--role", "master", "--sync-timeout", "300ms");
        var replicaDir = NewDir();
        var replica = await DataNodeProcess.StartAsync(replicaDir, "--role", "replica", "--master", master.ReplicationAddress);
        await CreateTableAsync(master);
        await replica.DisposeAsync(); // SIGKILL
        var (status, body) = await master.ExecuteAsync(["INSERT INTO t(id) VALUES(1)"]);
        Assert.Equal(503, status);
        Assert.Equal("NotReplicated", body.GetProperty("code").GetString());
        Assert.Contains("not replicated", body.GetProperty("error").GetString(), StringComparison.Ordinal);

        // The replica comes back, catches up (including the unconfirmed entry) and writes are acknowledged again.
        await using var back = await DataNodeProcess.StartAsync(replicaDir, "--role", "replica", "--master", master.ReplicationAddress);
        await Eventually.HoldsAsync(async () => (await master.ExecuteAsync(["INSERT OR REPLACE INTO t(id) VALUES(2)"])).Status == 200, "writes are confirmed again");
        await ConvergedAsync(master, back);
    }

    [Fact]
    public async Task A_never_ending_write_is_interrupted_and_the_writes_beside_it_are_committed_and_replicated()
    {
        await using var master = await DataNodeProcess.StartAsync(NewDir(), "--role", "master", "--max-write-time", "300ms");
        await using var replica = await DataNodeProcess.StartAsync(NewDir(), "--role", "replica", "--master", master.ReplicationAddress);
        await CreateTableAsync(master);

        // Writes sent meanwhile wait behind it on the one writer thread, and go on once it is interrupted
        // (the unit tests cover writes in the same commit group as one).
        var endless = master.ExecuteAsync(["INSERT INTO t(id, v) WITH RECURSIVE c(x) AS (SELECT 1000 UNION ALL SELECT x + 1 FROM c) SELECT x, 'endless' FROM c"]);
        var others = Enumerable.Range(1, 8).Select(i => master.ExecuteAsync([$"INSERT INTO t(id, v) VALUES({i}, 'ok')"])).ToList();
        var (status, body) = await endless;
        Assert.Equal(400, status);
        Assert.Equal("SqlError", body.GetProperty("code").GetString());
        Assert.Contains("--max-write-time", body.GetProperty("error").GetString(), StringComparison.Ordinal);
        foreach (var other in others)
        {
            var answer = await other;
            Assert.True(answer.Status == 200, answer.Body.ToString());
        }

        var count = await master.QueryAsync("SELECT count(*) AS n FROM t");
        Assert.Equal(8, count.GetProperty("rows")[0][0].GetInt64());

        // A write may set its own limit: a long one given none runs to its end, a short one is cut.
        const string Long = "INSERT INTO t(id, v) WITH RECURSIVE c(x) AS (SELECT 1000 UNION ALL SELECT x + 1 FROM c WHERE x < 400000) SELECT x, 'long' FROM c";
        var cut = await master.PostAsync("/execute", new { statements = new[] { new object[] { Long } }, maxTimeMs = 1 });
        Assert.Equal(400, cut.Status);
        Assert.Contains("maxTimeMs", cut.Body.GetProperty("error").GetString(), StringComparison.Ordinal);
        var whole = await master.PostAsync("/execute", new { statements = new[] { new object[] { Long } }, maxTimeMs = 0 });
        Assert.True(whole.Status == 200, whole.Body.ToString());
        await ConvergedAsync(master, replica);
    }

    [Fact]
    public async Task Semi_sync_does_not_acknowledge_a_write_that_changed_nothing_before_what_it_saw_is_replicated()
    {
        await using var master = await DataNodeProcess.StartAsync(NewDir(), "--role", "master", "--sync-timeout", "300ms");
        var replicaDir = NewDir();
        var replica = await DataNodeProcess.StartAsync(replicaDir, "--role", "replica", "--master", master.ReplicationAddress);
        await CreateTableAsync(master);
        Assert.Equal(200, (await master.ExecuteAsync(["INSERT INTO t(id, v) VALUES(1, 'x')"])).Status);
        await replica.DisposeAsync(); // SIGKILL

        // The delete commits on the master but no replica confirms it.
        var (deleted, deletedBody) = await master.ExecuteAsync(["DELETE FROM t WHERE id = 1"]);
        Assert.True(deleted == 503, deletedBody.ToString());

        // Repeated, it deletes nothing: "0 rows, the row is gone" rests on the unconfirmed delete, which a
        // failover to the replica would undo. It must not be acknowledged either (it was, with no entry to wait for).
        var (again, againBody) = await master.ExecuteAsync(["DELETE FROM t WHERE id = 1"]);
        Assert.True(again == 503, againBody.ToString());
        Assert.Equal("NotReplicated", againBody.GetProperty("code").GetString());
        Assert.Contains("changed nothing", againBody.GetProperty("error").GetString(), StringComparison.Ordinal);

        // Once the replica is back and has the delete, the same no-op write is acknowledged, and the replica agrees.
        await using var back = await DataNodeProcess.StartAsync(replicaDir, "--role", "replica", "--master", master.ReplicationAddress);
        await Eventually.HoldsAsync(async () => (await master.ExecuteAsync(["DELETE FROM t WHERE id = 1"])).Status == 200, "the no-op write is confirmed");
        Assert.Equal(0, (await back.QueryAsync("SELECT count(*) FROM t WHERE id = 1")).GetProperty("rows")[0][0].GetInt64());
    }

    [Fact]
    public async Task Replica_catches_up_after_a_restart()
    {
        await using var master = await DataNodeProcess.StartAsync(NewDir(), "--role", "master", "--sync", "async");
        var replicaDir = NewDir();
        var replica = await DataNodeProcess.StartAsync(replicaDir, "--role", "replica", "--master", master.ReplicationAddress);
        await CreateTableAsync(master);
        for (var i = 0; i < 20; i++)
        {
            Assert.Equal(200, (await master.ExecuteAsync(["INSERT INTO t(id, v) VALUES(?, ?)", i, $"v{i}"])).Status);
        }

        await ConvergedAsync(master, replica);
        await replica.DisposeAsync();
        for (var i = 20; i < 50; i++)
        {
            Assert.Equal(200, (await master.ExecuteAsync(["INSERT INTO t(id, v) VALUES(?, ?)", i, $"v{i}"], ["UPDATE t SET v = v || '!' WHERE id = ?", i - 20])).Status);
        }

        await using var restarted = await DataNodeProcess.StartAsync(replicaDir, "--role", "replica", "--master", master.ReplicationAddress);
        await ConvergedAsync(master, restarted);
        Assert.Equal(50, (await restarted.QueryAsync("SELECT count(*) FROM t")).GetProperty("rows")[0][0].GetInt64());
    }

    [Fact]
    public async Task Replica_behind_a_truncated_log_re_clones_from_a_snapshot_then_streams()
    {
        await using var master = await DataNodeProcess.StartAsync(NewDir(), "--role", "master", "--sync", "async", "--log-retention", "5");
        await CreateTableAsync(master);
        for (var i = 0; i < 300; i++)
        {
            Assert.Equal(200, (await master.ExecuteAsync(["INSERT INTO t(id, v) VALUES(?, randomblob(64))", i])).Status);
        }

        await using var replica = await DataNodeProcess.StartAsync(NewDir(), "--role", "replica", "--master", master.ReplicationAddress);
        await ConvergedAsync(master, replica);
        Assert.Contains("snapshot", master.Process.Output, StringComparison.Ordinal);
        Assert.Contains("Re-cloned", replica.Process.Output, StringComparison.Ordinal);
        Assert.Equal(200, (await master.ExecuteAsync(["DELETE FROM t WHERE id < ?", 100])).Status);
        await ConvergedAsync(master, replica);
    }

    [Fact]
    public async Task A_snapshot_that_takes_longer_than_the_replica_waits_is_kept_alive_and_sent_once()
    {
        // The master took the backup on the replica's connection and said nothing meanwhile: a backup longer
        // than the replica's wait was never sent (the replica reconnected, another backup started beside it).
        var slow = new Dictionary<string, string> { ["INFRA_FAULT_SNAPSHOT_DELAY_MS"] = "2500" };
        await using var master = await DataNodeProcess.StartAsync(NewDir(), slow, "--role", "master", "--sync", "async", "--log-retention", "5");
        await CreateTableAsync(master);
        for (var i = 0; i < 300; i++)
        {
            Assert.Equal(200, (await master.ExecuteAsync(["INSERT INTO t(id, v) VALUES(?, randomblob(64))", i])).Status);
        }

        await using var replica = await DataNodeProcess.StartAsync(NewDir(), "--role", "replica", "--master", master.ReplicationAddress, "--replication-timeout", "1s");
        await ConvergedAsync(master, replica);
        Assert.Equal(1, CountOf(master.Process.Output, "snapshot at LSN"));
        Assert.DoesNotContain("nothing from the master", replica.Process.Output, StringComparison.Ordinal);
    }

    private static int CountOf(string text, string what)
    {
        var count = 0;
        for (var at = text.IndexOf(what, StringComparison.Ordinal); at >= 0; at = text.IndexOf(what, at + what.Length, StringComparison.Ordinal))
        {
            count++;
        }

        return count;
    }

    [Fact]
    public async Task A_connection_that_never_says_hello_is_closed_after_the_hello_timeout()
    {
        // The 10 s hello timeout was a token the socket reader ignored: a connection that sent nothing was held
        // for good, and a thousand of them (--max-connections) locked out the replicas and the router.
        await using var node = await DataNodeProcess.StartAsync(NewDir(), "--role", "master", "--sync", "async");
        var (host, port) = (node.ReplicationAddress.Split(':')[0], int.Parse(node.ReplicationAddress.Split(':')[1], System.Globalization.CultureInfo.InvariantCulture));
        using var silent = new System.Net.Sockets.TcpClient();
        await silent.ConnectAsync(host, port);
        var stream = silent.GetStream();
        using var bound = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var read = await stream.ReadAsync(new byte[16], bound.Token); // the node closes it: end of stream
        Assert.Equal(0, read);
    }

    [Fact]
    public async Task A_replica_whose_clone_fails_unexpectedly_says_so_and_keeps_trying()
    {
        // The snapshot's file cannot be created (a directory is in its way): the follower's task ended with an
        // exception nobody observed — the replica stopped following for good, silently.
        await using var master = await DataNodeProcess.StartAsync(NewDir(), "--role", "master", "--sync", "async", "--log-retention", "5");
        await CreateTableAsync(master);
        for (var i = 0; i < 300; i++)
        {
            Assert.Equal(200, (await master.ExecuteAsync(["INSERT INTO t(id, v) VALUES(?, randomblob(64))", i])).Status);
        }

        var replicaDir = NewDir();
        var blocker = Path.Combine(replicaDir, "incoming-snapshot.tmp");
        Directory.CreateDirectory(blocker);
        await using var replica = await DataNodeProcess.StartAsync(replicaDir, "--role", "replica", "--master", master.ReplicationAddress);
        await Eventually.HoldsAsync(() => Task.FromResult(replica.Process.Output.Contains("failed unexpectedly", StringComparison.Ordinal)), "the failure is logged", TimeSpan.FromSeconds(30));
        Directory.Delete(blocker);
        await ConvergedAsync(master, replica);
        Assert.Equal(300, (await replica.QueryAsync("SELECT count(*) FROM t")).GetProperty("rows")[0][0].GetInt64());
    }

    [Fact]
    public async Task A_known_replica_that_fell_behind_the_retention_streams_on_instead_of_re_cloning()
    {
        // From an audit: the log was trimmed by count alone, so a replica away (or cloning) for longer than
        // the retention at the write rate found its next entry gone and re-cloned — at a high write rate, for
        // ever. A master now keeps the log from what its known replicas still need (up to 10 × the retention).
        await using var master = await DataNodeProcess.StartAsync(NewDir(), "--role", "master", "--sync", "async", "--log-retention", "50");
        var replicaDir = NewDir();
        var replica = await DataNodeProcess.StartAsync(replicaDir, "--role", "replica", "--master", master.ReplicationAddress);
        await CreateTableAsync(master);
        await ConvergedAsync(master, replica);
        await replica.DisposeAsync(); // SIGKILL
        for (var i = 0; i < 300; i++)
        {
            Assert.Equal(200, (await master.ExecuteAsync(["INSERT INTO t(id, v) VALUES(?, randomblob(64))", i])).Status);
        }

        await using var back = await DataNodeProcess.StartAsync(replicaDir, "--role", "replica", "--master", master.ReplicationAddress);
        await ConvergedAsync(master, back);
        Assert.DoesNotContain("snapshot", master.Process.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("Re-cloned", back.Process.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Sigkill_master_under_a_write_flood_promote_the_most_advanced_replica_nothing_acknowledged_is_lost()
    {
        var masterDir = NewDir();
        var master = await DataNodeProcess.StartAsync(masterDir, "--role", "master", "--sync-timeout", "2s");
        await using var b = await DataNodeProcess.StartAsync(NewDir(), "--role", "replica", "--master", master.ReplicationAddress);
        await using var c = await DataNodeProcess.StartAsync(NewDir(), "--role", "replica", "--master", master.ReplicationAddress);
        await CreateTableAsync(master);
        await Eventually.HoldsAsync(async () => (await master.StatusAsync()).GetProperty("replicas").GetArrayLength() == 2, "both replicas connected");

        var acked = new ConcurrentBag<long>();
        using var stop = new CancellationTokenSource();
        var nextId = 0L;
        var writers = Enumerable.Range(0, 8).Select(_ => Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                var id = Interlocked.Increment(ref nextId);
                try
                {
                    var (status, _) = await master.ExecuteAsync(["INSERT INTO t(id, v, r, at) VALUES(?, ?, random(), datetime('now'))", id, $"row {id}"]);
                    if (status == 200)
                    {
                        acked.Add(id);
                    }
                }
                catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException or JsonException)
                {
                    return;
                }
            }
        })).ToArray();

        await Eventually.HoldsAsync(() => acked.Count >= 200, "writes are flowing", TimeSpan.FromSeconds(30));
        master.Process.Kill();
        await stop.CancelAsync();
        await Task.WhenAll(writers);
        await master.DisposeAsync();

        // Promote the replica that applied the most; repoint the other.
        var bLsn = await b.LsnAsync();
        var cLsn = await c.LsnAsync();
        var (winner, other) = bLsn >= cLsn ? (b, c) : (c, b);
        var (promoted, promotedBody) = await winner.PostAsync("/promote", new { epoch = 2 });
        Assert.True(promoted == 200, promotedBody.ToString());
        Assert.Equal(1, (await winner.StatusAsync()).GetProperty("lastEpoch").GetInt64()); // promised epoch 2, wrote nothing in it yet
        Assert.Equal(200, (await other.PostAsync("/follow", new { master = winner.ReplicationAddress, epoch = 2 })).Status);

        var rows = (await winner.QueryAsync("SELECT id FROM t")).GetProperty("rows").EnumerateArray().Select(r => r[0].GetInt64()).ToHashSet();
        var lost = acked.Where(id => !rows.Contains(id)).ToList();
        Assert.True(lost.Count == 0, $"{lost.Count} acknowledged writes lost, e.g. {string.Join(", ", lost.Take(5))}");

        // The new master takes writes in epoch 2 (the other replica confirms them); stale epochs are refused.
        var (written, writtenBody) = await winner.PostAsync("/execute", new { statements = new[] { new object[] { "INSERT INTO t(id, v) VALUES(?, ?)", -1, "after failover" } }, epoch = 2 });
        Assert.True(written == 200, writtenBody.ToString());
        Assert.Equal(2, writtenBody.GetProperty("epoch").GetInt64());
        var (stale, staleBody) = await winner.PostAsync("/execute", new { statements = new[] { new object[] { "INSERT INTO t(id) VALUES(-2)" } }, epoch = 1 });
        Assert.Equal(409, stale);
        Assert.Equal("StaleEpoch", staleBody.GetProperty("code").GetString());
        Assert.Equal(409, (await winner.PostAsync("/promote", new { epoch = 2 })).Status);
        await ConvergedAsync(winner, other);

        // The old master comes back as a replica: it discards what it had past the fork point and converges.
        await using var old = await DataNodeProcess.StartAsync(masterDir, "--role", "replica", "--master", winner.ReplicationAddress);
        await ConvergedAsync(winner, old, other);
        Assert.Equal(2, (await old.StatusAsync()).GetProperty("epoch").GetInt64());
        Assert.Equal(2, (await old.StatusAsync()).GetProperty("lastEpoch").GetInt64()); // its epoch-1 tail is gone
        await using (var native = await Infra.Client.Data.DataNodeClient.ConnectAsync(old.ReplicationAddress))
        {
            var status = await native.StatusAsync();
            Assert.Equal((2L, await winner.LsnAsync()), (status.LastEntryEpoch, status.Lsn));
        }

        Assert.Equal(409, (await old.ExecuteAsync(["INSERT INTO t(id) VALUES(-3)"])).Status);
    }

    [Fact]
    public async Task With_an_admin_token_only_a_replica_that_has_it_may_say_hello()
    {
        // Found by reading the code behind a protocol fuzzer's run: a hello needed no token, and one
        // frame claiming a newer epoch fenced the master (no more writes), on a node whose other
        // state-changing ops all need the token. A hello also streams the whole database.
        await using var master = await DataNodeProcess.StartAsync(NewDir(), "--role", "master", "--admin-token", "s3cret", "--sync", "async");
        master.Http.DefaultRequestHeaders.Authorization = new("Bearer", "s3cret"); // its HTTP writes need it too
        await CreateTableAsync(master);
        using (var socket = new System.Net.Sockets.TcpClient())
        {
            var port = int.Parse(master.ReplicationAddress.Split(':')[1], System.Globalization.CultureInfo.InvariantCulture);
            await socket.ConnectAsync("127.0.0.1", port);
            var stream = socket.GetStream();
            await stream.WriteAsync(Infra.Core.Framing.Frames.Build(0, "hello", (ref MessagePack.MessagePackWriter w) =>
            {
                w.WriteArrayHeader(6);
                w.Write("intruder");
                w.Write(99L); // a newer epoch: fenced the master before
                w.Write(0L);
                w.Write(0L);
                w.Write(false);
                w.Write("127.0.0.1:1");
            }));
            var answer = new MemoryStream();
            var buffer = new byte[4096];
            int read;
            while ((read = await stream.ReadAsync(buffer)) > 0)
            {
                answer.Write(buffer, 0, read);
            }

            Assert.Contains("Unauthorized", System.Text.Encoding.UTF8.GetString(answer.ToArray()), StringComparison.Ordinal);
        }

        Assert.Equal(200, (await master.ExecuteAsync(["INSERT INTO t(id, v) VALUES(1, 'still master')"])).Status);
        Assert.Equal(1, (await master.StatusAsync()).GetProperty("epoch").GetInt64());

        // A replica without the token is refused and says why; one with it follows.
        await using var stranger = await DataNodeProcess.StartAsync(NewDir(), "--role", "replica", "--master", master.ReplicationAddress);
        await Eventually.HoldsAsync(async () => (await stranger.StatusAsync()).TryGetProperty("lastError", out var e) && e.GetString()!.Contains("Unauthorized", StringComparison.Ordinal),
            "the replica without the token reports the refusal");
        await using var replica = await DataNodeProcess.StartAsync(NewDir(), "--role", "replica", "--master", master.ReplicationAddress, "--admin-token", "s3cret");
        await ConvergedAsync(master, replica);
    }

    [Fact]
    public async Task An_old_master_restarted_as_master_is_fenced_by_a_replica_of_the_newer_epoch()
    {
        var aDir = NewDir();
        var a = await DataNodeProcess.StartAsync(aDir, "--role", "master", "--sync", "async");
        await using var b = await DataNodeProcess.StartAsync(NewDir(), "--role", "replica", "--master", a.ReplicationAddress);
        await CreateTableAsync(a);
        await ConvergedAsync(a, b);
        await a.DisposeAsync();
        Assert.Equal(200, (await b.PostAsync("/promote", new { epoch = 2 })).Status);

        // a restarts believing it is master of epoch 1; pointing b's knowledge at it fences it.
        await using var stale = await DataNodeProcess.StartAsync(aDir, "--role", "master", "--sync", "async");
        Assert.Equal(200, (await b.PostAsync("/follow", new { master = stale.ReplicationAddress })).Status);
        await Eventually.HoldsAsync(async () => (await stale.ExecuteAsync(["INSERT INTO t(id) VALUES(1)"])).Status == 409, "the stale master refuses writes");
        var status = await stale.StatusAsync();
        Assert.Equal(2, status.GetProperty("fencedBy").GetInt64());
        Assert.Equal(2, (await b.StatusAsync()).GetProperty("epoch").GetInt64());
    }

    [Fact]
    public async Task A_replica_that_voted_for_a_newer_epoch_applies_and_confirms_nothing_more_from_the_old_master()
    {
        // From an audit: a claim raised the replica's epoch, but its stream from the old master went on — it
        // kept applying and confirming writes the old master then acknowledged, which the new master never
        // had (rolled back when the replica followed it: acknowledged writes lost in a failover).
        await using var master = await DataNodeProcess.StartAsync(NewDir(), "--role", "master", "--sync-timeout", "500ms");
        await using var replica = await DataNodeProcess.StartAsync(NewDir(), "--role", "replica", "--master", master.ReplicationAddress);
        await CreateTableAsync(master);
        await ConvergedAsync(master, replica);
        var before = await replica.LsnAsync();
        await using (var client = await Infra.Client.Data.DataNodeClient.ConnectAsync(replica.ReplicationAddress))
        {
            await client.ClaimAsync(2, "another-node"); // a router's vote for a new master elsewhere
        }

        for (var i = 0; i < 3; i++)
        {
            var (status, body) = await master.ExecuteAsync(["INSERT INTO t(id) VALUES(?)", i]);
            Assert.True(status is 503 or 409, $"write {i} was acknowledged: {status} {body}"); // not replicated, or the master fenced
        }

        Assert.Equal(before, await replica.LsnAsync());
        Assert.Equal(0, (await replica.QueryAsync("SELECT count(*) FROM t")).GetProperty("rows")[0][0].GetInt64());
    }

    [Fact]
    public async Task An_entry_far_larger_than_any_request_and_many_large_entries_reach_the_replica()
    {
        // From an audit: one write's changeset is not bounded by the request's size, and the master sent up
        // to 512 entries per frame with no byte limit; a frame over the replica's limit (2 requests + 4 MB)
        // was refused on every reconnect — the replica never passed it.
        await using var master = await DataNodeProcess.StartAsync(NewDir(), "--role", "master", "--sync", "async", "--max-request-size", "16k");
        await using var replica = await DataNodeProcess.StartAsync(NewDir(), "--role", "replica", "--master", master.ReplicationAddress, "--max-request-size", "16k");
        await CreateTableAsync(master);
        var (status, body) = await master.ExecuteAsync(["WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 3000) INSERT INTO t(id, v) SELECT i, hex(randomblob(1024)) FROM s"]);
        Assert.True(status == 200, body.ToString()); // one entry of ~6 MB, past the 4.03 MB limit
        for (var i = 0; i < 40; i++)
        {
            (status, body) = await master.ExecuteAsync(["UPDATE t SET v = hex(randomblob(1024)), r = ? WHERE id <= 100", i]); // entries of ~400 KB
            Assert.True(status == 200, body.ToString());
        }

        await ConvergedAsync(master, replica);
    }

    [Fact]
    public async Task Malformed_hostile_and_oversized_requests_get_clear_errors_and_change_nothing()
    {
        await using var node = await DataNodeProcess.StartAsync(NewDir(), "--role", "master", "--max-request-size", "64kb", "--max-statements", "10", "--max-sql-size", "1kb");
        await CreateTableAsync(node);
        Assert.Equal(200, (await node.ExecuteAsync(["INSERT INTO t(id, v) VALUES(1, 'keep')"])).Status);
        var before = await node.ChecksumAsync();
        string[] bodies =
        [
            "", "{", "not json", "[]", "{}", "{\"statements\": 5}", "{\"statements\": []}", "{\"statements\": [[]]}", "{\"statements\": [[1, 2]]}",
            "{\"statements\": [[\"INSERT INTO t(id, v) VALUES(?, ?)\", 2, {\"a\": 1}]]}",
            "{\"statements\": [[\"INSERT INTO t(id, v) VALUES(?, ?)\", 2, [1, 2]]]}",
            "{\"statements\": [[\"INSERT INTO t(id, v) VALUES(?, ?)\", 2, {\"base64\": \"***\"}]]}",
            "{\"statements\": [[\"INSERT INTO t(id, v) VALUES(?, ?)\", 2]]}",
            "{\"statements\": [[\"INSERT INTO t(id) VALUES(2); DROP TABLE t\"]]}",
            "{\"statements\": [[\"DROP TABLE t\"], [\"SELEC oops\"]]}",
            "{\"statements\": [[\"INSERT INTO t(id) VALUES(2)\"]], \"epoch\": \"x\"}",
            "{\"statements\": [[\"INSERT INTO t(id) VALUES(2)\"]], \"maxTimeMs\": -1}",
            "{\"statements\": [[\"INSERT INTO t(id) VALUES(2)\"]], \"maxTimeMs\": \"10\"}",
            "{\"statements\": [[\"INSERT INTO t(id) VALUES(2)\"]], \"maxTimeMs\": 3600001}",
            "{\"statements\": [[\"INSERT INTO t(id) VALUES(2)\"]], \"maxTimeMs\": 1.5}",
            "{\"statements\": [" + string.Join(",", Enumerable.Repeat("[\"INSERT INTO t(id) VALUES(NULL)\"]", 11)) + "]}",
            "{\"statements\": [[\"INSERT INTO t(id, v) VALUES(3, '" + new string('x', 2000) + "')\"]]}",
            "{\"statements\": [[\"BEGIN\"]]}",
            "{\"statements\": [[\"ATTACH '/tmp/x.db' AS x\"]]}",
            new string('[', 100_000),
            "{\"statements\": [[\"INSERT INTO t(id, v) VALUES(4, ?)\", \"" + new string('y', 100_000) + "\"]]}",
            "{\"statements\": [[\"INSERT INTO t(id, v) VALUES(4, ?)\", \"\\ud800\"]]}", // a lone surrogate
        ];
        foreach (var body in bodies)
        {
            var (status, answer) = await node.PostRawAsync("/execute", body);
            Assert.True(status is 400 or 413, $"{body[..Math.Min(body.Length, 80)]}: {status}");
            if (answer.ValueKind == JsonValueKind.Object)
            {
                Assert.False(string.IsNullOrEmpty(answer.GetProperty("error").GetString()));
            }
        }

        string[] queries = ["{}", "{\"sql\": 1}", "{\"sql\": \"DELETE FROM t\"}", "{\"sql\": \"SELECT * FROM nowhere\"}", "{\"sql\": \"SELECT ?\", \"params\": 1}", "{\"sql\": \"SELECT 1\", \"minLsn\": -1}"];
        foreach (var body in queries)
        {
            Assert.Equal(400, (await node.PostRawAsync("/query", body)).Status);
        }

        Assert.Equal(400, (await node.PostRawAsync("/promote", "{\"epoch\": \"two\"}")).Status);
        Assert.Equal(409, (await node.PostAsync("/promote", new { epoch = 1 })).Status);
        Assert.Equal(400, (await node.PostAsync("/follow", new { master = "nowhere" })).Status);
        Assert.Equal(before, await node.ChecksumAsync());
        Assert.False(node.Process.HasExited);
        Assert.Equal(200, (await node.ExecuteAsync(["INSERT INTO t(id, v) VALUES(?, ?)", 5, new { base64 = "AAEC" }])).Status);
        var blob = (await node.QueryAsync("SELECT v FROM t WHERE id = 5")).GetProperty("rows")[0][0];
        Assert.Equal("AAEC", blob.GetProperty("base64").GetString());
    }

    [Fact]
    public async Task Sigterm_stops_cleanly_and_the_data_survives()
    {
        var dir = NewDir();
        var node = await DataNodeProcess.StartAsync(dir, "--role", "master");
        await CreateTableAsync(node);
        Assert.Equal(200, (await node.ExecuteAsync(["INSERT INTO t(id, v) VALUES(1, 'x')"])).Status);
        var checksum = await node.ChecksumAsync();
        node.Process.Terminate();
        Assert.Equal(0, await node.Process.WaitForExitAsync(TimeSpan.FromSeconds(30)));
        await node.DisposeAsync();
        await using var again = await DataNodeProcess.StartAsync(dir, "--role", "master");
        Assert.Equal(checksum, await again.ChecksumAsync());
        Assert.Equal(2, await again.LsnAsync());
    }

    [Fact]
    public async Task Client_protocol_on_the_listen_port_runs_requests_and_survives_hostile_frames()
    {
        await using var master = await DataNodeProcess.StartAsync(NewDir(), "--role", "master");
        await using (var client = await Infra.Client.Data.DataNodeClient.ConnectAsync(master.ReplicationAddress))
        {
            await client.ExecuteAsync([["CREATE TABLE u(id INTEGER PRIMARY KEY, v)"]]);
            var write = await client.ExecuteAsync([["INSERT INTO u VALUES(?, ?)", 1L, 42L], ["INSERT INTO u VALUES(?, ?)", 2L, new byte[] { 0, 255 }]], epoch: 1);
            Assert.Equal(2, write.Results.Count);
            Assert.Equal(1, write.Epoch);
            var stale = await Assert.ThrowsAsync<Infra.Client.Data.DataException>(() => client.ExecuteAsync([["INSERT INTO u VALUES(3, 3)"]], epoch: 7));
            Assert.Equal("StaleEpoch", stale.Code);
            var tooLong = await Assert.ThrowsAsync<Infra.Client.Data.DataException>(() => client.ExecuteAsync([["INSERT INTO u VALUES(3, 3)"]], maxTime: TimeSpan.FromHours(2)));
            Assert.Equal("BadRequest", tooLong.Code);
            Assert.Contains("maxTimeMs", tooLong.Message, StringComparison.Ordinal);
            var rows = await client.QueryAsync("SELECT v, typeof(v) FROM u ORDER BY id", minLsn: write.Lsn);
            Assert.Equal(42L, rows.Rows[0][0]);
            Assert.Equal("integer", rows.Rows[0][1]);
            Assert.Equal(new byte[] { 0, 255 }, rows.Rows[1][0]);
            var status = await client.StatusAsync();
            Assert.True(status.IsMaster);
            var sql = await Assert.ThrowsAsync<Infra.Client.Data.DataException>(() => client.QueryAsync("SELECT * FROM nowhere"));
            Assert.Equal("SqlError", sql.Code);
            var claim = await Assert.ThrowsAsync<Infra.Client.Data.DataException>(() => client.ClaimAsync(1, "someone"));
            Assert.Equal("StaleEpoch", claim.Code);
        }

        // JSON integers stay integers over HTTP too (they were once bound as doubles).
        var (inserted, body) = await master.ExecuteAsync(["INSERT INTO u VALUES(?, ?)", 3, 7]);
        Assert.True(inserted == 200, body.ToString());
        Assert.Equal("integer", (await master.QueryAsync("SELECT typeof(v) FROM u WHERE id = 3")).GetProperty("rows")[0][0].GetString());

        // An unknown op and a request that is not a map are answered; a bad length prefix closes only that connection.
        using (var socket = new System.Net.Sockets.TcpClient())
        {
            var port = int.Parse(master.ReplicationAddress.Split(':')[1], System.Globalization.CultureInfo.InvariantCulture);
            await socket.ConnectAsync("127.0.0.1", port);
            var stream = socket.GetStream();
            await stream.WriteAsync(Infra.Core.Framing.Frames.Build(5, "nope", (ref MessagePack.MessagePackWriter w) => w.WriteMapHeader(0)));
            await stream.WriteAsync(Infra.Core.Framing.Frames.Build(6, "query", (ref MessagePack.MessagePackWriter w) => w.Write(12)));

            // Found by a protocol fuzzer: a bin32 length of 0xffffffff was never answered (the request's task faulted).
            byte[] hostile = [0x93, 0x07, 0xa5, .. "query"u8, 0x81, 0xa3, .. "sql"u8, 0xc6, 0xff, 0xff, 0xff, 0xff];
            await stream.WriteAsync((byte[])[0, 0, 0, (byte)hostile.Length, .. hostile]);
            await stream.WriteAsync(new byte[] { 0x7f, 0xff, 0xff, 0xff, 1, 2 });
            var answers = new MemoryStream();
            var buffer = new byte[4096];
            int read;
            while ((read = await stream.ReadAsync(buffer)) > 0)
            {
                answers.Write(buffer, 0, read);
            }

            var text = System.Text.Encoding.UTF8.GetString(answers.ToArray());
            Assert.Contains("unknown op", text, StringComparison.Ordinal);
            Assert.Contains("not a map", text, StringComparison.Ordinal);
            Assert.Contains("not valid MessagePack", text, StringComparison.Ordinal);
        }

        Assert.Equal(3, (await master.QueryAsync("SELECT count(*) FROM u")).GetProperty("rows")[0][0].GetInt64());
    }
}
