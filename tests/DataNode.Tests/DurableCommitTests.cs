using System.Diagnostics;
using System.Net;
using Infra.Core.Networking;
using Infra.DataNode.Storage;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Win32.SafeHandles;

namespace Infra.DataNode.Tests;

/// <summary>
/// Commits are made durable off the writer thread (<see cref="CommitFlusher"/>): a write is answered,
/// shipped and acknowledged by a replica only once an fsync of the WAL that covers it has returned, and
/// a failed fsync stops writes for good. Nodes run in-process with the WAL's fsync held or failed.
/// </summary>
public sealed class DurableCommitTests : IAsyncDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);

    private readonly string _root = Path.Combine(Path.GetTempPath(), "durable-" + Guid.NewGuid().ToString("N"));
    private readonly List<IAsyncDisposable> _running = [];
    private readonly TestMeters _meters = new();
    private readonly List<WalGate> _gates = [];

    public async ValueTask DisposeAsync()
    {
        _gates.ForEach(g => g.Open()); // a failed assertion may leave one closed
        for (var i = _running.Count - 1; i >= 0; i--)
        {
            await _running[i].DisposeAsync();
        }

        _meters.Dispose();
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    [Fact]
    public async Task A_write_and_a_read_that_sees_it_are_answered_only_after_the_WAL_fsync_that_covers_it_has_returned()
    {
        var gate = new WalGate();
        var (master, _) = Start("m", NodeRole.Master, SyncMode.Async, gate);
        await WriteAsync(master, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");

        // Known as cheap, so it runs on the calling thread (a free read connection is there: nothing else reads).
        const string Select = "SELECT v FROM t WHERE id = 1";
        for (var i = 0; i < QueryCosts.MinSamples; i++)
        {
            master.QueryCosts.Record(Select, 0);
        }

        Assert.True(master.QueryCosts.IsCheap(Select));
        gate.Close();
        var write = WriteAsync(master, "INSERT INTO t VALUES(1, 'a')");
        await gate.WaitEnteredAsync();
        var committed = master.Db.Lsn;

        // Reads on the master see the commit, and are not answered before its fsync either (both read
        // paths: on the pool, and on the calling thread): no one acts on a write a crash could take back.
        var read = master.QueryAsync(Select, [], null, null, default);
        var inlineRead = master.QueryOnCallerIfCheapAsync(Select, [], null, null, default);
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < TimeSpan.FromMilliseconds(300))
        {
            Assert.False(write.IsCompleted, "the write was answered before its fsync returned");
            Assert.False(read.IsCompleted, "a read was answered with a commit whose fsync had not returned");
            Assert.False(inlineRead.IsCompleted, "an inline read was answered with a commit whose fsync had not returned");
            await Task.Delay(10);
        }

        Assert.True(master.Durable.Value < committed, $"durable {master.Durable.Value}, committed {committed}");

        gate.Open();
        var answer = await write.WaitAsync(Deadline);
        Assert.Equal(committed, answer.Lsn);
        Assert.True(master.Durable.Value >= committed);
        foreach (var result in new[] { await read.WaitAsync(Deadline), await inlineRead.WaitAsync(Deadline) })
        {
            Assert.Equal(committed, result.Lsn);
            Assert.Equal("a", Assert.Single(result.Rows)[0]);
        }
    }

    [Fact]
    public async Task A_write_committed_while_an_fsync_runs_waits_for_the_next_fsync()
    {
        var gate = new WalGate();
        var (master, _) = Start("m", NodeRole.Master, SyncMode.Async, gate);
        await WriteAsync(master, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
        var before = master.Db.Lsn;

        gate.Close();
        var first = WriteAsync(master, "INSERT INTO t VALUES(1, 'a')");
        await gate.WaitEnteredAsync();

        // The writer takes the next group while the first one's fsync runs: it commits, but the fsync
        // under way began before that commit and may not have covered it.
        var second = WriteAsync(master, "INSERT INTO t VALUES(2, 'b')");
        await UntilAsync(() => master.Db.Lsn == before + 2, "the second write commits during the first one's fsync");
        gate.PassOne();
        Assert.Equal(before + 1, (await first.WaitAsync(Deadline)).Lsn);
        Assert.Equal(before + 1, master.Durable.Value);

        await gate.WaitEnteredAsync();
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < TimeSpan.FromMilliseconds(300))
        {
            Assert.False(second.IsCompleted, "a write was answered by an fsync that began before its commit");
            await Task.Delay(10);
        }

        gate.Open();
        Assert.Equal(before + 2, (await second.WaitAsync(Deadline)).Lsn);
        Assert.Equal(before + 2, master.Durable.Value);
    }

    [Fact]
    public async Task A_master_ships_only_entries_its_WAL_fsync_has_covered()
    {
        var gate = new WalGate();
        var (master, address) = Start("m", NodeRole.Master, SyncMode.Async, gate);
        var (replica, _) = Start("r", NodeRole.Replica, SyncMode.Async, new WalGate(), address);
        await WriteAsync(master, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
        await UntilAsync(() => replica.Db.Lsn == master.Db.Lsn, "the replica catches up");

        gate.Close();
        var write = WriteAsync(master, "INSERT INTO t VALUES(1, 'a')");
        await gate.WaitEnteredAsync();
        var committed = master.Db.Lsn;

        // Without the rule the entry reaches the replica within a millisecond or two; give it time to.
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < TimeSpan.FromMilliseconds(400))
        {
            Assert.True(replica.Db.Lsn < committed, "the replica received an entry its master had not synced");
            await Task.Delay(10);
        }

        gate.Open();
        await write.WaitAsync(Deadline);
        await UntilAsync(() => replica.Db.Lsn == committed, "the replica receives the entry once it is on the master's disk");
    }

    [Fact]
    public async Task A_replica_acknowledges_only_what_its_own_WAL_fsync_has_covered()
    {
        var replicaGate = new WalGate();
        var (master, address) = Start("m", NodeRole.Master, SyncMode.SemiSync, new WalGate());
        var (replica, _) = Start("r", NodeRole.Replica, SyncMode.Async, replicaGate, address);
        await UntilAsync(() => master.Hub.Replicas.Any(r => r.Connected), "the replica connects");
        await WriteAsync(master, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");

        var before = master.Db.Lsn;
        replicaGate.Close();
        var write = WriteAsync(master, "INSERT INTO t VALUES(1, 'a')");
        var committed = before + 1;
        await UntilAsync(() => replica.Db.Lsn == committed, "the replica applies the entry");
        await replicaGate.WaitEnteredAsync();

        // Applied (and readable) on the replica, not yet on its disk: the semi-sync write must wait.
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < TimeSpan.FromMilliseconds(400))
        {
            Assert.False(write.IsCompleted, "the write was acknowledged before the replica's fsync returned");
            Assert.True(master.Hub.Replicas.Single().AckedLsn < committed);
            await Task.Delay(10);
        }

        replicaGate.Open();
        var answer = await write.WaitAsync(Deadline);
        Assert.Equal(committed, answer.Lsn);
    }

    [Fact]
    public async Task A_replica_that_cannot_write_for_a_full_disk_keeps_following_and_catches_up_once_it_can()
    {
        var (master, replica) = await StartAsyncPairWithTableAsync();

        // Its database may grow by two pages only (fault injection: SQLITE_FULL past that).
        await replica.RunOnWriterAsync(db => db.LimitWriterPages(2));
        var before = replica.Db.Lsn;
        for (var i = 1; i <= 5; i++)
        {
            await WriteAsync(master, $"INSERT INTO t VALUES({i}, randomblob(20000))");
        }

        await UntilAsync(() => replica.Follower?.LastError?.Contains("SQLITE_FULL", StringComparison.Ordinal) == true, "the replica reports the full disk");
        Assert.Null(replica.Follower!.Diverged);
        Assert.Equal(before, replica.Db.Lsn);

        // Out of rotation meanwhile (/healthz 503): it would serve ever older rows. Reconnecting, which
        // clears LastError, does not make it ready again; only an apply that succeeds does.
        Assert.Contains("SQLITE_FULL", replica.NotReadyReason, StringComparison.Ordinal);
        Assert.Null(master.NotReadyReason);

        // Room again: the follower, still retrying, applies everything.
        await replica.RunOnWriterAsync(db => db.LimitWriterPages(1_000_000));
        await UntilAsync(() => replica.Db.Lsn == master.Db.Lsn, "the replica catches up");
        await UntilAsync(() => replica.NotReadyReason is null, "the replica is ready again"); // cleared just after the apply returns (a clean CI run caught the gap)
        Assert.Equal(master.Db.Checksum().Checksum, replica.Db.Checksum().Checksum);
        Assert.Null(replica.Follower!.Diverged);
    }

    [Fact]
    public async Task A_replica_that_could_not_apply_is_ready_again_once_a_snapshot_replaced_its_copy()
    {
        // From a review: the apply failure cleared only when a batch of entries applied; a replica that
        // then got a whole snapshot instead (it had fallen behind the master's log) stayed not ready
        // with an idle master, although it was in sync.
        var (master, address) = Start("m", NodeRole.Master, SyncMode.Async, new WalGate(), logRetention: 2);
        var (replica, _) = Start("r", NodeRole.Replica, SyncMode.Async, new WalGate(), address);
        await UntilAsync(() => master.Hub.Replicas.Any(r => r.Connected), "the replica connects");
        await WriteAsync(master, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)");
        await UntilAsync(() => replica.Db.Lsn == master.Db.Lsn, "the replica has the table");

        await replica.RunOnWriterAsync(db => db.LimitWriterPages(2));
        for (var i = 1; i <= 6; i++)
        {
            await WriteAsync(master, $"INSERT INTO t VALUES({i}, randomblob(20000))");
        }

        await UntilAsync(() => replica.NotReadyReason?.Contains("SQLITE_FULL", StringComparison.Ordinal) == true, "the replica is not ready for its full disk");

        // The master keeps 2 entries (it trims every 256 commits): the reconnecting replica is sent a
        // snapshot, which replaces the database and with it the writer that had the page limit. No entry
        // follows it.
        for (var i = 100; i < 400; i++)
        {
            await WriteAsync(master, $"INSERT INTO t VALUES({i}, 'small')");
        }

        await UntilAsync(() => replica.Db.Lsn == master.Db.Lsn, "the replica is in sync through a snapshot");
        await UntilAsync(() => replica.NotReadyReason is null, "the replica is ready again");
        Assert.Equal(master.Db.Checksum().Checksum, replica.Db.Checksum().Checksum);
    }

    [Fact]
    public async Task A_replica_whose_database_stays_locked_past_the_busy_timeout_keeps_following()
    {
        var (master, replica) = await StartAsyncPairWithTableAsync();

        // Another process holds the write lock: the replica's BEGIN IMMEDIATE fails with SQLITE_BUSY after
        // its busy timeout, outside the apply itself. The follower must report it and try again.
        using (var side = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={replica.Db.Path};Default Timeout=1;Pooling=False"))
        {
            side.Open();
            using (var begin = side.CreateCommand())
            {
                begin.CommandText = "BEGIN IMMEDIATE";
                begin.ExecuteNonQuery();
            }

            await WriteAsync(master, "INSERT INTO t VALUES(1, 'while locked')");
            await UntilAsync(() => replica.Follower?.LastError?.Contains("locked", StringComparison.OrdinalIgnoreCase) == true, "the replica reports the lock");
            Assert.Null(replica.Follower!.Diverged);
            Assert.Contains("locked", replica.NotReadyReason, StringComparison.OrdinalIgnoreCase);
        }

        await UntilAsync(() => replica.Db.Lsn == master.Db.Lsn, "the replica catches up once the lock is gone");
        await UntilAsync(() => replica.NotReadyReason is null, "the replica is ready again"); // cleared just after the apply returns
        Assert.Equal(master.Db.Checksum().Checksum, replica.Db.Checksum().Checksum);
    }

    [Fact]
    public async Task A_failed_WAL_fsync_fails_the_writes_it_covered_stops_writes_and_is_never_retried()
    {
        var gate = new WalGate();
        var (master, _) = Start("m", NodeRole.Master, SyncMode.Async, gate);
        await WriteAsync(master, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");

        gate.FailNext(new IOException("EIO (injected)"));
        var failed = await Assert.ThrowsAsync<NodeException>(() => WriteAsync(master, "INSERT INTO t VALUES(1, 'a')").WaitAsync(Deadline));
        Assert.Equal(NodeErrorCode.Unavailable, failed.Code);
        Assert.Contains("WAL fsync failed", failed.Message);
        Assert.Contains("EIO (injected)", failed.Message);
        var calls = gate.Calls;

        var later = await Assert.ThrowsAsync<NodeException>(() => WriteAsync(master, "INSERT INTO t VALUES(2, 'b')").WaitAsync(Deadline));
        Assert.Equal(NodeErrorCode.Unavailable, later.Code);
        Assert.Contains("until it is restarted", later.Message);
        Assert.Throws<IOException>(master.Flusher.SyncNow);
        Assert.Equal(calls, gate.Calls);
        Assert.NotNull(master.Flusher.Failure);

        // The write whose fsync failed is committed in SQLite, never acknowledged, and may not survive a
        // restart: a read that would see it is refused at once rather than answered.
        var read = await Assert.ThrowsAsync<NodeException>(() => master.QueryAsync("SELECT count(*) FROM t", [], null, null, default).WaitAsync(Deadline));
        Assert.Equal(NodeErrorCode.Unavailable, read.Code);
        Assert.Contains("not on disk", read.Message);
    }

    [Fact]
    public async Task A_replica_whose_WAL_fsync_failed_stops_following_and_acknowledges_nothing_more()
    {
        var replicaGate = new WalGate();
        var (master, address) = Start("m", NodeRole.Master, SyncMode.Async, new WalGate());
        var (replica, _) = Start("r", NodeRole.Replica, SyncMode.Async, replicaGate, address);
        await WriteAsync(master, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
        await UntilAsync(() => master.Hub.Replicas.Any(r => r.AckedLsn == master.Db.Lsn), "the replica acknowledges the table");
        var acked = master.Hub.Replicas.Single().AckedLsn;

        replicaGate.FailNext(new IOException("EIO (injected)"));
        await WriteAsync(master, "INSERT INTO t VALUES(1, 'a')");
        await UntilAsync(() => replica.Flusher.Failure is not null, "the replica's fsync fails");
        await UntilAsync(() => replica.Follower is { Connected: false }, "the replica stops following");
        await WriteAsync(master, "INSERT INTO t VALUES(2, 'b')");
        Assert.Equal(acked, master.Hub.Replicas.Single().AckedLsn);
        Assert.True(replica.Db.Lsn < master.Db.Lsn);
    }

    [Fact]
    public async Task A_reset_of_the_durable_LSN_wakes_the_waits_it_reaches()
    {
        // The writer's own syncs set the durable LSN with a reset (it may go down after a rollback); a
        // raise by reset must wake the streams and writes waiting for it, not leave them to their timeouts.
        var waiters = new Infra.DataNode.Replication.ProgressWaiters(5);
        var reached = waiters.WaitAsync(7, Deadline);
        var beyond = waiters.WaitAsync(9, TimeSpan.FromMilliseconds(200));
        waiters.Reset(8);
        Assert.True(await reached.WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.False(await beyond);
        waiters.Reset(3);
        Assert.Equal(3, waiters.Value);
    }

    [Fact]
    public async Task Waits_whose_callers_left_are_dropped_like_those_that_timed_out()
    {
        // From an audit: a cancelled wait (a client gone: /query with a far minLsn, aborted) stayed queued
        // unfinished, and the compaction kept every unfinished one — without bound, rebuilt on every wait.
        var waiters = new Infra.DataNode.Replication.ProgressWaiters(0);
        for (var i = 0; i < 10_000; i++)
        {
            using var left = new CancellationTokenSource();
            var wait = waiters.WaitAsync(long.MaxValue, TimeSpan.FromMinutes(10), left.Token);
            await left.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => wait);
        }

        Assert.True(waiters.Queued <= 4096, $"{waiters.Queued} waiters queued");
        var live = waiters.WaitAsync(3, Deadline);
        waiters.Advance(3);
        Assert.True(await live.WaitAsync(TimeSpan.FromSeconds(5)));
    }

    /// <summary>An async master and its replica (WAL fsyncs passing), with table t(id, v) created and applied on both.</summary>
    private async Task<(Node Master, Node Replica)> StartAsyncPairWithTableAsync()
    {
        var (master, address) = Start("m", NodeRole.Master, SyncMode.Async, new WalGate());
        var (replica, _) = Start("r", NodeRole.Replica, SyncMode.Async, new WalGate(), address);
        await UntilAsync(() => master.Hub.Replicas.Any(r => r.Connected), "the replica connects");
        await WriteAsync(master, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)");
        await UntilAsync(() => replica.Db.Lsn == master.Db.Lsn, "the replica applies the table");
        return (master, replica);
    }

    private static Task<WriteAnswer> WriteAsync(Node node, string sql) =>
        node.ExecuteAsync(new WriteCommand([new SqlStatement(sql, [])]), CancellationToken.None);

    private static async Task UntilAsync(Func<bool> condition, string what)
    {
        var watch = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(watch.Elapsed < Deadline, "timed out waiting until " + what);
            await Task.Delay(5);
        }
    }

    private (Node Node, string Address) Start(string name, NodeRole role, SyncMode sync, WalGate gate, string? master = null, long logRetention = 100_000)
    {
        var options = new NodeOptions
        {
            Listen = new IPEndPoint(IPAddress.Loopback, 0),
            DataDir = Path.Combine(_root, name),
            Role = role,
            Master = master,
            Sync = sync,
            SyncTimeout = TimeSpan.FromSeconds(15),
            FlushWal = gate.Flush,
            LogRetention = logRetention,
        };
        _gates.Add(gate);
        var node = new Node(options, TimeProvider.System, _meters, NullLoggerFactory.Instance);
        var listener = new TcpConnectionListener(options.Listen, node.Hub, new ListenerOptions(), NullLogger<TcpConnectionListener>.Instance);
        listener.Start();
        _running.Add(node);
        _running.Add(listener);
        return (node, $"127.0.0.1:{listener.BoundEndPoint.Port}");
    }

    /// <summary>Stands in for the WAL's fsync: passes through, holds callers while closed, or fails once.</summary>
    private sealed class WalGate
    {
        private readonly ManualResetEventSlim _open = new(initialState: true);
        private readonly SemaphoreSlim _entered = new(0);
        private readonly SemaphoreSlim _pass = new(0);
        private Exception? _failNext;
        private int _calls;

        public int Calls => Volatile.Read(ref _calls);

        public void Close()
        {
            while (_entered.CurrentCount > 0)
            {
                _entered.Wait(0);
            }

            _open.Reset();
        }

        public void Open() => _open.Set();

        /// <summary>Lets the fsync being held (or the next one) return, and keeps holding the ones after it.</summary>
        public void PassOne() => _pass.Release();

        public void FailNext(Exception error) => Volatile.Write(ref _failNext, error);

        public async Task WaitEnteredAsync() => Assert.True(await _entered.WaitAsync(Deadline), "no WAL fsync began");

        public void Flush(SafeFileHandle wal)
        {
            Interlocked.Increment(ref _calls);
            if (Interlocked.Exchange(ref _failNext, null) is { } error)
            {
                throw error;
            }

            if (!_open.IsSet)
            {
                _entered.Release();
                while (!_open.IsSet && !_pass.Wait(5))
                {
                }
            }

            RandomAccess.FlushToDisk(wal);
        }
    }
}
