using Infra.DataNode.Storage;

namespace Infra.DataNode.Tests;

/// <summary>
/// Capture on a master database, apply on a replica database: the replica must end with the same
/// rows (same checksum) for every kind of change, and failed or empty writes ship nothing.
/// </summary>
public sealed class ChangesetTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "infra-dn-" + Guid.NewGuid().ToString("N")[..10]);
    private readonly NodeDatabase _master;
    private readonly NodeDatabase _replica;

    public ChangesetTests()
    {
        _master = NodeDatabase.Open(Path.Combine(_root, "m"), new DatabaseSettings(), TimeProvider.System);
        _replica = NodeDatabase.Open(Path.Combine(_root, "r"), new DatabaseSettings(), TimeProvider.System);
        _master.SetEpochAndRole(1, "master");
        Ship(Write(("CREATE TABLE t(id INTEGER PRIMARY KEY, v, w)", [])));
    }

    public void Dispose()
    {
        _master.Dispose();
        _replica.Dispose();
        Directory.Delete(_root, recursive: true);
    }

    private WriteOutcome Write(params (string Sql, object?[] Args)[] statements)
    {
        var outcome = _master.ExecuteGroup([new WriteCommand([.. statements.Select(s => new SqlStatement(s.Sql, s.Args))])])[0];
        return outcome;
    }

    private void Ship(WriteOutcome outcome)
    {
        Assert.Null(outcome.Error);
        if (outcome.Entry is { } entry)
        {
            _replica.ApplyEntries([entry]);
        }
    }

    private void AssertConverged()
    {
        Assert.Equal(_master.Lsn, _replica.Lsn);
        Assert.Equal(_master.Checksum().Checksum, _replica.Checksum().Checksum);
    }

    [Fact]
    public void A_delete_of_every_row_with_no_where_reaches_the_replica()
    {
        // SQLite ran it as a truncate (no pre-update hook when a request's first statement was prepared):
        // no change was captured, and the replica kept the rows.
        Ship(Write(("INSERT INTO t(id, v) VALUES(1, 'a')", []), ("INSERT INTO t(id, v) VALUES(2, 'b')", [])));
        var deleted = Write(("DELETE FROM t", []));
        Assert.NotNull(deleted.Entry);
        Ship(deleted);
        AssertConverged();
        Assert.Empty(_replica.Query("SELECT * FROM t", []).Rows);
    }

    [Fact]
    public void The_nodes_own_tables_cannot_be_altered()
    {
        // ALTER TABLE's first authorizer argument is the database's name ("main"), which was checked instead
        // of the table's: renaming _infra_epochs was allowed, and broke every write of the next epoch.
        var outcome = Write(("ALTER TABLE _infra_epochs RENAME TO e", []));
        Assert.NotNull(outcome.Error);
        Assert.Contains("belongs to the node", outcome.Error!.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Random_and_now_replay_as_the_same_rows()
    {
        Ship(Write(("INSERT INTO t(id, v, w) VALUES(1, random(), datetime('now', '+' || abs(random() % 1000) || ' seconds'))", []),
            ("INSERT INTO t(id, v, w) VALUES(2, randomblob(16), strftime('%f', 'now'))", [])));
        AssertConverged();
        var rows = _replica.Query("SELECT v FROM t WHERE id = 1", []).Rows;
        Assert.Equal(_master.Query("SELECT v FROM t WHERE id = 1", []).Rows[0][0], rows[0][0]);
    }

    [Fact]
    public void Blobs_nulls_text_reals_round_trip()
    {
        Ship(Write(("INSERT INTO t(id, v, w) VALUES(?, ?, ?)", [1L, new byte[] { 0, 1, 2, 255 }, null]),
            ("INSERT INTO t(id, v, w) VALUES(?, ?, ?)", [2L, "héllo \0 wörld", 3.25]),
            ("INSERT INTO t(id, v, w) VALUES(?, ?, ?)", [3L, new byte[100_000], long.MinValue])));
        AssertConverged();
        var row = _replica.Query("SELECT v, w FROM t WHERE id = 1", []).Rows[0];
        Assert.Equal(new byte[] { 0, 1, 2, 255 }, row[0]);
        Assert.Null(row[1]);
    }

    [Fact]
    public void Updates_deletes_and_primary_key_changes_replay()
    {
        Ship(Write(("INSERT INTO t(id, v) VALUES(1, 'a')", []), ("INSERT INTO t(id, v) VALUES(2, 'b')", []), ("INSERT INTO t(id, v) VALUES(3, 'c')", [])));
        Ship(Write(("UPDATE t SET id = 10 WHERE id = 1", []), ("UPDATE t SET v = 'B' WHERE id = 2", []), ("DELETE FROM t WHERE id = 3", [])));
        AssertConverged();
        Assert.Equal([[10L, "a"], [2L, "B"]], _replica.Query("SELECT id, v FROM t ORDER BY id DESC", []).Rows.Select(r => r.ToArray()).ToArray());
    }

    [Fact]
    public void A_row_changed_twice_in_one_request_ships_its_net_effect()
    {
        Ship(Write(("INSERT INTO t(id, v) VALUES(1, 'a')", []), ("UPDATE t SET v = 'b' WHERE id = 1", []), ("INSERT INTO t(id, v) VALUES(2, 'x')", []), ("DELETE FROM t WHERE id = 2", [])));
        AssertConverged();
        Assert.Single(_replica.Query("SELECT * FROM t", []).Rows);
    }

    [Fact]
    public void A_failed_request_ships_nothing_and_leaves_no_trace()
    {
        Ship(Write(("INSERT INTO t(id, v) VALUES(1, 'a')", [])));
        var before = _master.Lsn;
        var failed = Write(("INSERT INTO t(id, v) VALUES(2, 'b')", []), ("INSERT INTO t(id, v) VALUES(1, 'dup')", []));
        Assert.Equal(NodeErrorCode.SqlError, failed.Error?.Code);
        Assert.Contains("statement 2", failed.Error!.Message, StringComparison.Ordinal);
        Assert.Null(failed.Entry);
        Assert.Equal(before, _master.Lsn);
        Assert.Single(_master.Query("SELECT * FROM t", []).Rows);
        AssertConverged();
    }

    [Fact]
    public void A_write_that_changes_nothing_takes_no_lsn()
    {
        var before = _master.Lsn;
        var outcome = Write(("UPDATE t SET v = 1 WHERE id = 999", []));
        Assert.Null(outcome.Error);
        Assert.Null(outcome.Entry);
        Assert.Equal(before, outcome.Lsn);
    }

    [Fact]
    public void Group_commit_gives_each_request_its_own_lsn_and_isolates_failures()
    {
        var outcomes = _master.ExecuteGroup([
            new WriteCommand([new SqlStatement("INSERT INTO t(id, v) VALUES(1, 'a')", [])]),
            new WriteCommand([new SqlStatement("INSERT INTO t(id, v) VALUES(1, 'dup')", [])]),
            new WriteCommand([new SqlStatement("INSERT INTO t(id, v) VALUES(2, 'b')", [])]),
            new WriteCommand([new SqlStatement("INSERT INTO t(id, v) VALUES(3, 'c')", [])], Epoch: 7),
        ]);
        Assert.Null(outcomes[0].Error);
        Assert.Equal(NodeErrorCode.SqlError, outcomes[1].Error?.Code);
        Assert.Null(outcomes[2].Error);
        Assert.Equal(NodeErrorCode.StaleEpoch, outcomes[3].Error?.Code);
        Assert.Equal(outcomes[0].Lsn + 1, outcomes[2].Lsn);
        _replica.ApplyEntries([outcomes[0].Entry!, outcomes[2].Entry!]);
        AssertConverged();
    }

    [Fact]
    public void Ddl_is_replayed_in_sequence_with_row_changes()
    {
        Ship(Write(("INSERT INTO t(id, v) VALUES(1, 'a')", []), ("ALTER TABLE t ADD COLUMN z DEFAULT 5", []), ("UPDATE t SET z = 6 WHERE id = 1", []),
            ("CREATE TABLE u(k TEXT PRIMARY KEY, n) WITHOUT ROWID", []), ("INSERT INTO u VALUES('x', 1)", []), ("CREATE INDEX t_v ON t(v)", [])));
        AssertConverged();
        Assert.Equal(6L, _replica.Query("SELECT z FROM t WHERE id = 1", []).Rows[0][0]);
    }

    [Theory]
    [InlineData("CREATE TABLE nopk(a, b)", "NotAllowed")]
    [InlineData("BEGIN", "NotAllowed")]
    [InlineData("SAVEPOINT x", "NotAllowed")]
    [InlineData("ATTACH 'other.db' AS o", "NotAllowed")]
    [InlineData("PRAGMA synchronous=OFF", "NotAllowed")]
    [InlineData("CREATE TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM t; END", "NotAllowed")]
    [InlineData("CREATE TEMP TABLE tt(id INTEGER PRIMARY KEY)", "NotAllowed")]
    [InlineData("DELETE FROM _infra_log", "NotAllowed")]
    [InlineData("DROP TABLE _infra_meta", "NotAllowed")]
    [InlineData("INSERT INTO t(id) VALUES(1); DELETE FROM t", "BadRequest")]
    [InlineData("INSERT INTO nowhere VALUES(1)", "SqlError")]
    [InlineData("SELEC 1", "SqlError")]
    [InlineData("   ", "BadRequest")]
    public void Refused_statements_change_nothing(string sql, string code)
    {
        var before = _master.Checksum();
        var lsn = _master.Lsn;
        var outcome = Write(("INSERT INTO t(id, v) VALUES(100, 'first')", []), (sql, []));
        Assert.Equal(code, outcome.Error?.Code.ToString());
        Assert.Equal(lsn, _master.Lsn);
        Assert.Equal(before.Checksum, _master.Checksum().Checksum);
        Assert.NotEmpty(_master.ReadLog(1, 10));
    }

    [Fact]
    public void Parameter_count_mismatch_is_a_clear_error()
    {
        var outcome = Write(("INSERT INTO t(id, v) VALUES(?, ?)", [1L]));
        Assert.Equal(NodeErrorCode.BadRequest, outcome.Error?.Code);
        Assert.Contains("2 parameters but 1", outcome.Error!.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Reads_cannot_write()
    {
        var ex = Assert.Throws<NodeException>(() => _master.Query("DELETE FROM t", []));
        Assert.Equal(NodeErrorCode.NotAllowed, ex.Code);
        ex = Assert.Throws<NodeException>(() => _master.Query("PRAGMA journal_mode=DELETE", []));
        Assert.Equal(NodeErrorCode.NotAllowed, ex.Code);
        Assert.NotEmpty(_master.Query("PRAGMA table_info(t)", []).Rows);
    }

    [Fact]
    public void Applying_is_exactly_once_across_a_reopen()
    {
        var first = Write(("INSERT INTO t(id, v) VALUES(1, 'a')", []));
        var second = Write(("INSERT INTO t(id, v) VALUES(2, 'b')", []));
        _replica.ApplyEntries([first.Entry!]);
        var path = _replica.Directory;
        _replica.Dispose();
        using var reopened = NodeDatabase.Open(path, new DatabaseSettings(), TimeProvider.System);
        Assert.Equal(first.Lsn, reopened.Lsn);
        Assert.Throws<InvalidDataException>(() => reopened.ApplyEntries([first.Entry!]));
        reopened.ApplyEntries([second.Entry!]);
        Assert.Equal(_master.Checksum().Checksum, reopened.Checksum().Checksum);
    }

    [Fact]
    public void A_damaged_entry_is_refused()
    {
        var outcome = Write(("INSERT INTO t(id, v) VALUES(1, 'a')", []));
        var entry = outcome.Entry!;
        var body = entry.Body.ToArray();
        body[^1] ^= 1;
        Assert.Throws<InvalidDataException>(() => _replica.ApplyEntries([entry with { Body = body }]));
        Assert.Throws<InvalidDataException>(() => _replica.ApplyEntries([entry with { Epoch = 9 }]));
        _replica.ApplyEntries([entry]);
        AssertConverged();
    }

    [Fact]
    public void A_conflict_stops_applying_and_keeps_what_came_before()
    {
        var a = Write(("INSERT INTO t(id, v) VALUES(1, 'a')", []));
        var b = Write(("UPDATE t SET v = 'b' WHERE id = 1", []));
        var c = Write(("INSERT INTO t(id, v) VALUES(2, 'c')", []));
        _replica.ApplyEntries([a.Entry!]);
        // Someone changed the replica behind replication's back: the update no longer matches.
        using (var side = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={_replica.Path}"))
        {
            side.Open();
            using var command = side.CreateCommand();
            command.CommandText = "UPDATE t SET v = 'tampered' WHERE id = 1";
            command.ExecuteNonQuery();
        }

        var diverged = Assert.Throws<DivergedException>(() => _replica.ApplyEntries([b.Entry!, c.Entry!]));
        Assert.Equal(b.Lsn, diverged.Lsn);
        Assert.Equal(a.Lsn, _replica.Lsn);
        Assert.Equal("tampered", _replica.Query("SELECT v FROM t WHERE id = 1", []).Rows[0][0]);
    }

    [Fact]
    public void A_batch_is_applied_as_one_run_and_ends_as_entry_by_entry_would()
    {
        Ship(Write(("CREATE TABLE u(k TEXT PRIMARY KEY, n INTEGER UNIQUE)", [])));
        var entries = new List<LogRecord>();
        void Add(params (string Sql, object?[] Args)[] statements) => entries.Add(Write(statements).Entry!);
        Add(("INSERT INTO t(id, v) VALUES(1, 'a')", []));
        Add(("UPDATE t SET v = 'b' WHERE id = 1", []), ("INSERT INTO u VALUES('x', 1), ('y', 2)", []));
        Add(("UPDATE t SET id = 10 WHERE id = 1", []));
        Add(("UPDATE u SET n = 5 WHERE k = 'x'", []));
        Add(("DELETE FROM t WHERE id = 10", []), ("INSERT INTO t(id, v, w) VALUES(10, x'00ff', NULL)", []));
        Add(("INSERT INTO t(id, v) VALUES(2, 2.5)", []));
        Add(("DELETE FROM t WHERE id = 2", []));
        var before = _replica.EntriesAppliedInRuns;
        _replica.ApplyEntries(entries);
        AssertConverged();
        Assert.Equal(entries.Count, _replica.EntriesAppliedInRuns - before);
        Assert.Equal(entries.Select(e => e.Lsn), _replica.ReadLog(entries[0].Lsn, 100).Select(e => e.Lsn));
    }

    [Fact]
    public void A_run_that_only_entry_by_entry_order_can_apply_falls_back_to_it()
    {
        Ship(Write(("CREATE TABLE u(k TEXT PRIMARY KEY, n INTEGER UNIQUE)", [])));
        Ship(Write(("INSERT INTO u VALUES('x', 1), ('y', 2)", [])));
        // A swap of unique values inside one entry: applying it, SQLite defers the change that collides
        // to the end of the changeset. Joined with the next entry, which changes that row again, the
        // deferred change has not happened yet when the next one looks for it.
        var swap = Write(("UPDATE u SET n = 3 WHERE k = 'x'", []), ("UPDATE u SET n = 1 WHERE k = 'y'", []), ("UPDATE u SET n = 2 WHERE k = 'x'", []));
        var next = Write(("UPDATE u SET n = 5 WHERE k = 'x'", []));
        var after = Write(("INSERT INTO t(id, v) VALUES(1, 'a')", []));
        var before = _replica.EntriesAppliedInRuns;
        _replica.ApplyEntries([swap.Entry!, next.Entry!, after.Entry!]);
        Assert.Equal(before, _replica.EntriesAppliedInRuns); // the joined run met a conflict and was undone
        AssertConverged();
        Assert.Equal(5L, _replica.Query("SELECT n FROM u WHERE k = 'x'", []).Rows[0][0]);
    }

    [Fact]
    public void Ddl_inside_a_batch_splits_it_into_runs_in_order()
    {
        var entries = new List<LogRecord>
        {
            Write(("INSERT INTO t(id, v) VALUES(1, 'a')", [])).Entry!,
            Write(("INSERT INTO t(id, v) VALUES(2, 'b')", [])).Entry!,
            Write(("ALTER TABLE t ADD COLUMN z DEFAULT 5", [])).Entry!,
            Write(("UPDATE t SET z = 7 WHERE id = 2", [])).Entry!,
            Write(("INSERT INTO t(id, v, z) VALUES(3, 'c', 8)", [])).Entry!,
        };
        var before = _replica.EntriesAppliedInRuns;
        _replica.ApplyEntries(entries);
        AssertConverged();
        Assert.Equal(4, _replica.EntriesAppliedInRuns - before);
        Assert.Equal(7L, _replica.Query("SELECT z FROM t WHERE id = 2", []).Rows[0][0]);
    }

    [Fact]
    public void A_conflict_inside_a_run_is_pinned_on_its_entry_and_keeps_the_entries_before_it()
    {
        Ship(Write(("INSERT INTO t(id, v) VALUES(1, 'a')", [])));
        var b = Write(("INSERT INTO t(id, v) VALUES(2, 'b')", []));
        var c = Write(("UPDATE t SET v = 'c' WHERE id = 1", []));
        var d = Write(("INSERT INTO t(id, v) VALUES(3, 'd')", []));
        using (var side = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={_replica.Path}"))
        {
            side.Open();
            using var command = side.CreateCommand();
            command.CommandText = "UPDATE t SET v = 'tampered' WHERE id = 1";
            command.ExecuteNonQuery();
        }

        var diverged = Assert.Throws<DivergedException>(() => _replica.ApplyEntries([b.Entry!, c.Entry!, d.Entry!]));
        Assert.Equal(c.Lsn, diverged.Lsn);
        Assert.Equal(b.Lsn, _replica.Lsn);
        Assert.Equal(b.Lsn, _replica.ReadLog(b.Lsn, 10).Single().Lsn);
        Assert.Equal("b", _replica.Query("SELECT v FROM t WHERE id = 2", []).Rows[0][0]);
        Assert.Empty(_replica.Query("SELECT v FROM t WHERE id = 3", []).Rows);
    }

    [Fact]
    public void A_bad_entry_anywhere_in_a_batch_applies_none_of_it()
    {
        var a = Write(("INSERT INTO t(id, v) VALUES(1, 'a')", []));
        var b = Write(("INSERT INTO t(id, v) VALUES(2, 'b')", []));
        var body = b.Entry!.Body.ToArray();
        body[^1] ^= 0x40;
        var before = _replica.Lsn;
        Assert.Throws<InvalidDataException>(() => _replica.ApplyEntries([a.Entry!, b.Entry! with { Body = body }]));
        Assert.Throws<InvalidDataException>(() => _replica.ApplyEntries([a.Entry!, a.Entry!]));
        Assert.Equal(before, _replica.Lsn);
        Assert.Empty(_replica.Query("SELECT v FROM t", []).Rows);
        _replica.ApplyEntries([a.Entry!, b.Entry!]);
        AssertConverged();
    }

    [Fact]
    public void Rolling_back_to_a_fork_point_undoes_the_tail_exactly()
    {
        Ship(Write(("INSERT INTO t(id, v) VALUES(1, 'a')", []), ("INSERT INTO t(id, v) VALUES(2, 'b')", [])));
        var atFork = _master.Checksum().Checksum;
        var fork = _master.Lsn;
        Write(("UPDATE t SET v = 'x', id = 20 WHERE id = 2", []), ("DELETE FROM t WHERE id = 1", []), ("INSERT INTO t(id, v) VALUES(3, randomblob(8))", []));
        Write(("INSERT INTO t(id, v) VALUES(4, 'd')", []));
        Assert.True(_master.RollbackTo(fork));
        Assert.Equal(fork, _master.Lsn);
        Assert.Equal(atFork, _master.Checksum().Checksum);
        Assert.Empty(_master.ReadLog(fork + 1, 10));
        var next = Write(("INSERT INTO t(id, v) VALUES(5, 'e')", []));
        Assert.Equal(fork + 1, next.Lsn);
    }

    [Fact]
    public void The_log_read_after_a_rollback_and_new_writes_is_the_new_history()
    {
        var kept = Write(("INSERT INTO t(id, v) VALUES(1, 'a')", []));
        Write(("INSERT INTO t(id, v) VALUES(2, 'old')", []));
        Write(("INSERT INTO t(id, v) VALUES(3, 'old')", []));
        var old = _master.ReadLog(kept.Lsn + 1, 10);
        Assert.Equal(2, old.Count);

        Assert.True(_master.RollbackTo(kept.Lsn));
        Assert.Empty(_master.ReadLog(kept.Lsn + 1, 10));
        var replaced = Write(("INSERT INTO t(id, v) VALUES(2, 'new')", []));
        Assert.Equal(old[0].Lsn, replaced.Lsn);

        // Served from memory or from the table alike: the entry written since, and nothing past it.
        var now = Assert.Single(_master.ReadLog(kept.Lsn + 1, 10));
        Assert.Equal(replaced.Entry!.Body, now.Body);
        Assert.NotEqual(old[0].Body, now.Body);
    }

    [Fact]
    public void A_tail_with_ddl_cannot_be_rolled_back_in_place()
    {
        var fork = _master.Lsn;
        var before = _master.Checksum().Checksum;
        Write(("INSERT INTO t(id, v) VALUES(1, 'a')", []));
        Write(("CREATE TABLE v2(id INTEGER PRIMARY KEY)", []));
        var after = _master.Checksum().Checksum;
        Assert.False(_master.RollbackTo(fork));
        Assert.Equal(after, _master.Checksum().Checksum);
        Assert.NotEqual(before, after);
    }

    [Fact]
    public void Fork_point_follows_the_epoch_history()
    {
        for (var i = 1; i <= 5; i++)
        {
            Ship(Write(("INSERT INTO t(id) VALUES(?)", [(long)i])));
        }

        // The replica is promoted at LSN 6 (epoch 2) and writes; the old master wrote 7..8 in epoch 1 unreplicated.
        _replica.SetEpochAndRole(2, "master");
        var common = _replica.Lsn;
        _replica.ExecuteGroup([new WriteCommand([new SqlStatement("INSERT INTO t(id) VALUES(100)", [])])]);
        Write(("INSERT INTO t(id) VALUES(7)", []));
        Write(("INSERT INTO t(id) VALUES(8)", []));
        Assert.Equal(common, _replica.ForkPoint(1, _master.Lsn));
        Assert.Equal(3, _replica.ForkPoint(1, 3));
        Assert.Equal(_replica.Lsn, _replica.ForkPoint(2, _replica.Lsn));
        Assert.Equal(1, _master.EpochAt(_master.Lsn));
        Assert.Equal(2, _replica.EpochAt(_replica.Lsn));
    }

    [Fact]
    public void An_entry_that_cannot_be_written_for_a_full_disk_is_not_divergence_and_applies_once_there_is_room()
    {
        Ship(Write(("INSERT INTO t(id, v) VALUES(1, 'small')", [])));
        var entries = new List<LogRecord>();
        for (var i = 2; i <= 6; i++)
        {
            // Row changes only: the five entries go through the joined-run path first, then one by one.
            var outcome = Write(("INSERT INTO t(id, v) VALUES(?, randomblob(20000))", [(long)i]));
            Assert.Null(outcome.Error);
            entries.Add(outcome.Entry!);
        }

        var before = _replica.Lsn;
        var checksum = _replica.Checksum().Checksum;
        _replica.LimitWriterPages(2);
        var full = Assert.Throws<NodeException>(() => _replica.ApplyEntries(entries));
        Assert.Equal(NodeErrorCode.Unavailable, full.Code);
        Assert.Contains("SQLITE_FULL", full.Message, StringComparison.Ordinal);
        Assert.Equal(before, _replica.Lsn);
        Assert.Equal(checksum, _replica.Checksum().Checksum);

        // A lone entry (the one-by-one path) fails the same way.
        full = Assert.Throws<NodeException>(() => _replica.ApplyEntries([entries[0]]));
        Assert.Contains("SQLITE_FULL", full.Message, StringComparison.Ordinal);
        Assert.Equal(before, _replica.Lsn);

        // Room again: the same entries apply and the copies converge.
        _replica.LimitWriterPages(1_000_000);
        _replica.ApplyEntries(entries);
        AssertConverged();

        // A statement entry (DDL, replayed as SQL) that meets a full disk: the same, not divergence.
        var ddl = Write(("CREATE TABLE more(id INTEGER PRIMARY KEY, v)", []), ("CREATE INDEX more_v ON more(v)", []));
        Assert.Null(ddl.Error);
        _replica.LimitWriterPages(0);
        full = Assert.Throws<NodeException>(() => _replica.ApplyEntries([ddl.Entry!]));
        Assert.Contains("SQLITE_FULL", full.Message, StringComparison.Ordinal);
        _replica.LimitWriterPages(1_000_000);
        _replica.ApplyEntries([ddl.Entry!]);
        AssertConverged();
    }

    [Fact]
    public void A_batch_of_a_new_epoch_that_fails_for_the_disk_leaves_the_history_epoch_where_it_was()
    {
        Ship(Write(("INSERT INTO t(id, v) VALUES(1, 'epoch one')", [])));
        var lastOfEpochOne = _replica.Lsn;

        // Epoch 2's first entries: a lone row change (applied, and logged, on its own: the DDL after it
        // splits the run), the DDL, then large rows the capped disk cannot take.
        _master.SetEpochAndRole(2, "master");
        var entries = new List<LogRecord>();
        void Add(params (string Sql, object?[] Args)[] statements)
        {
            var outcome = Write(statements);
            Assert.Null(outcome.Error);
            entries.Add(outcome.Entry!);
        }

        Add(("INSERT INTO t(id, v) VALUES(2, 'epoch two')", []));
        Add(("CREATE TABLE more(id INTEGER PRIMARY KEY, v)", []));
        for (var i = 3; i <= 6; i++)
        {
            Add(("INSERT INTO t(id, v) VALUES(?, randomblob(20000))", [(long)i]));
        }

        _replica.LimitWriterPages(4);
        var full = Assert.Throws<NodeException>(() => _replica.ApplyEntries(entries));
        Assert.Contains("SQLITE_FULL", full.Message, StringComparison.Ordinal);
        Assert.Equal(lastOfEpochOne, _replica.Lsn);
        Assert.Equal(1, _replica.LastEntryEpoch); // the epoch-2 entry it logged was rolled back with the batch

        // Room again: epoch 2 starts where its first entry is, in memory and in the epoch table.
        _replica.LimitWriterPages(1_000_000);
        _replica.ApplyEntries(entries);
        AssertConverged();
        Assert.Equal(2, _replica.LastEntryEpoch);
        Assert.Equal(lastOfEpochOne, _replica.ForkPoint(1, _replica.Lsn + 10));
        var path = _replica.Directory;
        _replica.Dispose();
        using var reopened = NodeDatabase.Open(path, new DatabaseSettings(), TimeProvider.System);
        Assert.Equal(2, reopened.LastEntryEpoch);
        Assert.Equal(lastOfEpochOne, reopened.ForkPoint(1, reopened.Lsn + 10));
    }

    [Fact]
    public void The_last_entry_epoch_ranks_histories_where_the_lsn_does_not()
    {
        for (var i = 1; i <= 5; i++)
        {
            Ship(Write(("INSERT INTO t(id) VALUES(?)", [(long)i])));
        }

        Assert.Equal(1, _replica.LastEntryEpoch);

        // Promoted to epoch 2: a promise, not an entry; the history is still epoch 1's until it writes.
        _replica.SetEpochAndRole(2, "master");
        Assert.Equal(2, _replica.Epoch);
        Assert.Equal(1, _replica.LastEntryEpoch);
        _replica.ExecuteGroup([new WriteCommand([new SqlStatement("INSERT INTO t(id) VALUES(100)", [])])]);

        // The old master wrote two entries of epoch 1 nobody has: a longer log, an older history.
        Write(("INSERT INTO t(id) VALUES(7)", []));
        Write(("INSERT INTO t(id) VALUES(8)", []));
        Assert.True(_master.Lsn > _replica.Lsn);
        Assert.Equal(1, _master.LastEntryEpoch);
        Assert.Equal(2, _replica.LastEntryEpoch);

        // Survives a reopen (it comes from the epoch table, not the trimmed log) and follows a rollback.
        var path = _replica.Directory;
        _replica.Dispose();
        using var reopened = NodeDatabase.Open(path, new DatabaseSettings(), TimeProvider.System);
        Assert.Equal(2, reopened.LastEntryEpoch);
        Assert.True(reopened.RollbackTo(reopened.Lsn - 1));
        Assert.Equal(1, reopened.LastEntryEpoch);
    }

    [Fact]
    public void Epochs_only_grow_and_survive_a_reopen()
    {
        _master.SetEpochAndRole(5, "master");
        Assert.Throws<InvalidOperationException>(() => _master.SetEpochAndRole(4, "replica"));
        var path = _master.Directory;
        _master.Dispose();
        using var reopened = NodeDatabase.Open(path, new DatabaseSettings(), TimeProvider.System);
        Assert.Equal(5, reopened.Epoch);
        Assert.Equal("master", reopened.StoredRole);
    }

    [Fact]
    public void A_snapshot_clones_the_data_and_keeps_the_node_identity()
    {
        Ship(Write(("INSERT INTO t(id, v) VALUES(1, 'a')", [])));
        Write(("INSERT INTO t(id, v) VALUES(2, 'b')", []));
        var file = Path.Combine(_root, "snap.db");
        var lsn = _master.BackupTo(file);
        Assert.Equal(_master.Lsn, lsn);
        var id = _replica.NodeId;
        _replica.ReplaceWith(file, "replica");
        Assert.Equal(id, _replica.NodeId);
        AssertConverged();
        var next = Write(("INSERT INTO t(id, v) VALUES(3, 'c')", []));
        Ship(next);
        AssertConverged();
    }

    [Fact]
    public void The_log_keeps_only_the_retention()
    {
        var root = Path.Combine(_root, "small");
        using var db = NodeDatabase.Open(root, new DatabaseSettings { LogRetention = 10 }, TimeProvider.System);
        db.SetEpochAndRole(1, "master");
        db.ExecuteGroup([new WriteCommand([new SqlStatement("CREATE TABLE k(id INTEGER PRIMARY KEY)", [])])]);
        for (var i = 0; i < 300; i++)
        {
            db.ExecuteGroup([new WriteCommand([new SqlStatement("INSERT INTO k(id) VALUES(?)", [(long)i])])]);
        }

        Assert.True(db.OldestLogLsn() > 1);
        Assert.Equal(db.Lsn, db.ReadLog(db.Lsn, 1).Single().Lsn);
    }
}
