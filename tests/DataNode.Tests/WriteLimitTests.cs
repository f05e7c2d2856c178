using Infra.DataNode.Storage;

namespace Infra.DataNode.Tests;

/// <summary>
/// A write cannot hold the node's one writer thread forever (a never-ending INSERT … SELECT stopped every
/// write of the node), and a write whose failure makes SQLite roll back the whole transaction — an
/// interrupted change, an OR ROLLBACK conflict — fails alone: the other writes of its commit group are
/// committed, each with its own LSN, and replicate as if it had never been sent.
/// </summary>
public sealed class WriteLimitTests : IDisposable
{
    private const string EndlessInsert = "INSERT INTO t(id, v) WITH RECURSIVE c(x) AS (SELECT 1000 UNION ALL SELECT x + 1 FROM c) SELECT x, 'endless' FROM c";
    private readonly string _root = Path.Combine(Path.GetTempPath(), "infra-wlimit-" + Guid.NewGuid().ToString("N")[..10]);

    public void Dispose()
    {
        if (Directory.Exists(_root))
        {
            Directory.Delete(_root, recursive: true);
        }
    }

    private (NodeDatabase Master, NodeDatabase Replica) Open(TimeSpan maxWriteTime)
    {
        var master = NodeDatabase.Open(Path.Combine(_root, "m"), new DatabaseSettings { MaxWriteTime = maxWriteTime }, TimeProvider.System);
        var replica = NodeDatabase.Open(Path.Combine(_root, "r"), new DatabaseSettings(), TimeProvider.System);
        master.SetEpochAndRole(1, "master");
        var created = master.ExecuteGroup([Command("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")])[0];
        Assert.Null(created.Error);
        replica.ApplyEntries([created.Entry!]);
        return (master, replica);
    }

    private static WriteCommand Command(string sql, params object?[] args) => new([new SqlStatement(sql, args)]);

    [Fact]
    public void A_write_that_runs_past_the_limit_fails_alone_and_its_group_commits_without_it()
    {
        var (master, replica) = Open(TimeSpan.FromMilliseconds(200));
        using (master)
        using (replica)
        {
            var before = master.Lsn;
            var outcomes = master.ExecuteGroup([
                Command("INSERT INTO t(id, v) VALUES(1, 'a')"),
                Command(EndlessInsert),
                Command("INSERT INTO t(id, v) VALUES(2, 'b')"),
            ]);

            Assert.Null(outcomes[0].Error);
            Assert.Equal(NodeErrorCode.SqlError, outcomes[1].Error?.Code);
            Assert.Contains("--max-write-time", outcomes[1].Error!.Message, StringComparison.Ordinal);
            Assert.Null(outcomes[1].Entry);
            Assert.Null(outcomes[2].Error);
            Assert.Equal((before + 1, before + 2), (outcomes[0].Lsn, outcomes[2].Lsn));
            Assert.Equal(before + 2, master.Lsn);
            Assert.Equal([1L, 2L], master.Query("SELECT id FROM t ORDER BY id", []).Rows.Select(r => (long)r[0]!));

            // The log holds exactly the two writes, and a replica applying them ends the same.
            Assert.Equal([before + 1, before + 2], master.ReadLog(before + 1, 10).Select(e => e.Lsn));
            replica.ApplyEntries([outcomes[0].Entry!, outcomes[2].Entry!]);
            Assert.Equal(master.Checksum().Checksum, replica.Checksum().Checksum);

            // The writer goes on.
            Assert.Null(master.ExecuteGroup([Command("INSERT INTO t(id, v) VALUES(3, 'c')")])[0].Error);
            Assert.Equal(before + 3, master.Lsn);
        }
    }

    [Fact]
    public void A_conflict_that_rolls_back_the_transaction_fails_only_its_own_write()
    {
        var (master, replica) = Open(TimeSpan.FromSeconds(10));
        using (master)
        using (replica)
        {
            Assert.Null(master.ExecuteGroup([Command("INSERT INTO t(id, v) VALUES(1, 'a')")])[0].Error);
            var before = master.Lsn;
            var outcomes = master.ExecuteGroup([
                Command("INSERT INTO t(id, v) VALUES(2, 'b')"),
                Command("INSERT OR ROLLBACK INTO t(id, v) VALUES(1, 'dup')"),
                Command("INSERT INTO t(id, v) VALUES(3, 'c')"),
            ]);

            Assert.Null(outcomes[0].Error);
            Assert.Equal(NodeErrorCode.SqlError, outcomes[1].Error?.Code);
            Assert.Null(outcomes[2].Error);
            Assert.Equal((before + 1, before + 2), (outcomes[0].Lsn, outcomes[2].Lsn));
            Assert.Equal([(1L, "a"), (2L, "b"), (3L, "c")], master.Query("SELECT id, v FROM t ORDER BY id", []).Rows.Select(r => ((long)r[0]!, (string)r[1]!)));
        }
    }

    [Fact]
    public void A_rerun_group_sees_the_slots_as_they_were_before_it()
    {
        // Found by review: the first try closed slot 5 in memory, and the re-run then refused the write
        // queued before the close (writes queued before a close are applied).
        var (master, replica) = Open(TimeSpan.FromSeconds(10));
        using (master)
        using (replica)
        {
            Assert.Null(master.ExecuteGroup([Command("INSERT INTO t(id, v) VALUES(1, 'a')")])[0].Error);
            var outcomes = master.ExecuteGroup([
                new WriteCommand([new SqlStatement("INSERT INTO t(id, v) VALUES(2, 'before the close')", [])], Slot: 5),
                new WriteCommand([], SlotChange: new SlotChange(5, Closed: true, By: "test")),
                Command("INSERT OR ROLLBACK INTO t(id, v) VALUES(1, 'dup')"),
                new WriteCommand([new SqlStatement("INSERT INTO t(id, v) VALUES(3, 'after the close')", [])], Slot: 5),
            ]);

            Assert.Null(outcomes[0].Error);
            Assert.Null(outcomes[1].Error);
            Assert.Equal(NodeErrorCode.SqlError, outcomes[2].Error?.Code);
            Assert.Equal(NodeErrorCode.SlotClosed, outcomes[3].Error?.Code);
            Assert.Equal([1L, 2L], master.Query("SELECT id FROM t ORDER BY id", []).Rows.Select(r => (long)r[0]!));
        }
    }

    [Fact]
    public void Create_table_as_select_is_refused_before_it_runs()
    {
        var (master, replica) = Open(TimeSpan.FromSeconds(10));
        using (master)
        using (replica)
        {
            var endless = master.ExecuteGroup([Command("CREATE TABLE x AS WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT n FROM c")])[0];
            Assert.Equal(NodeErrorCode.NotAllowed, endless.Error?.Code);
            Assert.Contains("AS SELECT", endless.Error!.Message, StringComparison.Ordinal);

            // Tables made the usual ways still are.
            Assert.Null(master.ExecuteGroup([Command("CREATE TABLE y(id INTEGER PRIMARY KEY, v TEXT DEFAULT 'x' CHECK (length(v) < 10), w INTEGER REFERENCES t(id))")])[0].Error);
            Assert.Null(master.ExecuteGroup([Command("CREATE TABLE IF NOT EXISTS z(a, b, PRIMARY KEY (a, b)) WITHOUT ROWID")])[0].Error);
        }
    }

    [Fact]
    public void The_limit_counts_row_changes_not_ddl_and_zero_means_none()
    {
        const string Many = "INSERT INTO t(id, v) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000) SELECT x, x FROM c";
        var path = Path.Combine(_root, "m");
        using (var unlimited = NodeDatabase.Open(path, new DatabaseSettings { MaxWriteTime = TimeSpan.Zero }, TimeProvider.System))
        {
            unlimited.SetEpochAndRole(1, "master");
            Assert.Null(unlimited.ExecuteGroup([Command("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")])[0].Error);
            Assert.Null(unlimited.ExecuteGroup([Command(Many)])[0].Error);
            Assert.Equal(20_000L, unlimited.Query("SELECT count(*) FROM t", []).Rows[0][0]);
        }

        // A limit of one tick interrupts any change that reaches SQLite's first progress callback
        // (10,000 VM instructions): a 20,000-row insert does, a one-row insert does not.
        using var limited = NodeDatabase.Open(path, new DatabaseSettings { MaxWriteTime = TimeSpan.FromTicks(1) }, TimeProvider.System);
        Assert.Null(limited.ExecuteGroup([Command("INSERT INTO t(id, v) VALUES(-1, 'one row')")])[0].Error);
        var interrupted = limited.ExecuteGroup([Command(Many.Replace("SELECT 1 UNION", "SELECT 100001 UNION", StringComparison.Ordinal).Replace("x < 20000", "x < 120000", StringComparison.Ordinal))])[0];
        Assert.Contains("--max-write-time", interrupted.Error?.Message, StringComparison.Ordinal);
        Assert.Equal(20_001L, limited.Query("SELECT count(*) FROM t", []).Rows[0][0]);

        // DDL is not limited: indexing the 20,000 rows runs far past the first callback.
        Assert.Null(limited.ExecuteGroup([Command("CREATE INDEX t_v ON t(v)")])[0].Error);
        Assert.Single(limited.Query("SELECT name FROM sqlite_schema WHERE type = 'index' AND name = 't_v'", []).Rows);

        // A write's own limit replaces the node's: none lets the insert run to its end.
        var own = limited.ExecuteGroup([new WriteCommand([new SqlStatement(Many.Replace("SELECT 1 UNION", "SELECT 200001 UNION", StringComparison.Ordinal).Replace("x < 20000", "x < 220000", StringComparison.Ordinal), [])], MaxTime: TimeSpan.Zero)])[0];
        Assert.Null(own.Error);
        Assert.Equal(40_001L, limited.Query("SELECT count(*) FROM t", []).Rows[0][0]);
    }
}
