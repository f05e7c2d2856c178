using Infra.Core.Placement;
using Infra.DataNode.Storage;

namespace Infra.DataNode.Tests;

/// <summary>
/// A slot's rows and their delta since an LSN (what resharding copies and catches up with): applying
/// the copy and then every delta to another database must leave it with exactly the slot's rows.
/// </summary>
public sealed class SlotRowsTests : IDisposable
{
    private const int Slots = 4;
    private const int Slot = 1;
    private static readonly ShardedTable[] Tables = [new("acct", "k"), new("items", "owner"), new("docs", "owner"), new("gen", "k")];

    private readonly string _root = Path.Combine(Path.GetTempPath(), "infra-slots-" + Guid.NewGuid().ToString("N")[..10]);
    private readonly NodeDatabase _source;
    private readonly NodeDatabase _copy;

    public SlotRowsTests()
    {
        _source = Open("source", new DatabaseSettings());
        _copy = Open("copy", new DatabaseSettings());
    }

    private NodeDatabase Open(string name, DatabaseSettings settings)
    {
        var db = NodeDatabase.Open(Path.Combine(_root, name), settings, TimeProvider.System);
        db.SetEpochAndRole(1, "master");
        Write(db, ("CREATE TABLE acct(k TEXT PRIMARY KEY, v INTEGER)", []),
            ("CREATE TABLE items(owner TEXT NOT NULL, n INTEGER NOT NULL, v BLOB, PRIMARY KEY(owner, n))", []),
            ("CREATE TABLE docs(id INTEGER PRIMARY KEY, owner TEXT NOT NULL, body TEXT)", []), // shard key outside the primary key
            ("CREATE TABLE gen(g INTEGER AS (length(k)) VIRTUAL, k TEXT PRIMARY KEY, v INTEGER, s INTEGER AS (v * 2) STORED)", [])); // generated columns around the others
        return db;
    }

    public void Dispose()
    {
        _source.Dispose();
        _copy.Dispose();
        Directory.Delete(_root, recursive: true);
    }

    private static void Write(NodeDatabase db, params (string Sql, object?[] Args)[] statements)
    {
        var outcome = db.ExecuteGroup([new WriteCommand([.. statements.Select(s => new SqlStatement(s.Sql, s.Args))])])[0];
        Assert.Null(outcome.Error);
    }

    /// <summary>Keys that hash to <paramref name="slot"/> of <see cref="Slots"/>.</summary>
    private static List<string> KeysIn(int slot, int count, string prefix = "key") =>
        [.. Enumerable.Range(0, 1000).Select(i => $"{prefix}:{i}").Where(k => ShardKey.Slot(k, Slots) == slot).Take(count)];

    /// <summary>Applies a copy or delta to <see cref="_copy"/> the way the router does.</summary>
    private void Apply(SlotRows rows)
    {
        foreach (var table in rows.Tables)
        {
            var shardKey = Tables.Single(t => t.Name == table.Table).ShardKey;
            foreach (var key in table.Gone)
            {
                var where = string.Join(" AND ", table.KeyColumns.Select(c => $"\"{c}\" = ?"));
                Write(_copy, ($"DELETE FROM \"{table.Table}\" WHERE {where} AND infra_slot(\"{shardKey}\", ?) = ?", [.. key, (long)Slots, (long)Slot]));
            }

            foreach (var row in table.Rows)
            {
                Write(_copy, ($"INSERT OR REPLACE INTO \"{table.Table}\" ({string.Join(", ", table.Columns)}) VALUES ({string.Join(", ", table.Columns.Select(_ => "?"))})", row));
            }
        }
    }

    private static string Dump(NodeDatabase db, string table, bool onlySlot)
    {
        var key = Tables.Single(t => t.Name == table).ShardKey;
        var rows = db.Query($"SELECT * FROM {table} {(onlySlot ? $"WHERE infra_slot({key}, {Slots}) = {Slot}" : "")} ORDER BY 1, 2", []).Rows;
        return string.Join("\n", rows.Select(r => string.Join("|", r.Select(v => v is byte[] b ? Convert.ToHexString(b) : v?.ToString() ?? "NULL"))));
    }

    private void AssertCopyHoldsTheSlot()
    {
        foreach (var table in Tables)
        {
            Assert.Equal(Dump(_source, table.Name, onlySlot: true), Dump(_copy, table.Name, onlySlot: false));
        }
    }

    [Fact]
    public void A_full_copy_holds_exactly_the_slots_rows_of_every_table()
    {
        var inSlot = KeysIn(Slot, 5);
        var elsewhere = KeysIn(0, 5).Concat(KeysIn(2, 5)).ToList();
        foreach (var k in inSlot.Concat(elsewhere))
        {
            Write(_source, ("INSERT INTO acct(k, v) VALUES(?, ?)", [k, (long)k.Length]), ("INSERT INTO items(owner, n, v) VALUES(?, 1, x'01'), (?, 2, NULL)", [k, k]));
        }

        var copy = _source.SlotRows(Tables, Slots, Slot, since: null, epoch: null);
        Assert.Equal(_source.Lsn, copy.Lsn);
        Assert.Equal(1, copy.Epoch);
        Assert.Equal(5, copy.Tables[0].Rows.Count);
        Assert.Empty(copy.Tables[2].Rows);
        Assert.Equal(10, copy.Tables[1].Rows.Count);
        Assert.Empty(copy.Tables[0].Gone);
        Apply(copy);
        AssertCopyHoldsTheSlot();
    }

    [Fact]
    public void Generated_columns_are_not_copied_and_do_not_shift_the_columns_after_them()
    {
        // gen's first column is generated (virtual) and its last too (stored): the copy and the delta carry
        // k and v, each in its place, and the destination computes the rest.
        var inSlot = KeysIn(Slot, 4, "gen");
        foreach (var k in inSlot)
        {
            Write(_source, ("INSERT INTO gen(k, v) VALUES(?, ?)", [k, (long)k.Length * 10]));
        }

        var copy = _source.SlotRows(Tables, Slots, Slot, since: null, epoch: null);
        Assert.Equal(["k", "v"], copy.Tables[3].Columns);
        Assert.All(copy.Tables[3].Rows, r => Assert.Equal(((string)r[0]!).Length * 10L, r[1]));
        Apply(copy);
        AssertCopyHoldsTheSlot();

        Write(_source, ("UPDATE gen SET v = v + 1 WHERE k = ?", [inSlot[0]]));
        Write(_source, ("DELETE FROM gen WHERE k = ?", [inSlot[1]]));
        Write(_source, ("INSERT INTO gen(k, v) VALUES(?, 5)", [KeysIn(Slot, 1, "gen-new")[0]]));
        Write(_source, ("UPDATE gen SET k = ? WHERE k = ?", [KeysIn(0, 1, "gen-away")[0], inSlot[2]]));
        var delta = _source.SlotRows(Tables, Slots, Slot, copy.Lsn, copy.Epoch);
        Assert.Equal(["k"], delta.Tables[3].KeyColumns);
        Assert.Equal(2, delta.Tables[3].Gone.Count);
        Apply(delta);
        AssertCopyHoldsTheSlot();
    }

    [Theory]
    [InlineData("ALTER TABLE docs DROP COLUMN body")]
    [InlineData("ALTER TABLE acct ADD COLUMN extra INTEGER")]
    [InlineData("CREATE INDEX items_v ON items(v)")]
    public void A_delta_across_a_schema_change_is_refused_so_the_slot_is_copied_again(string ddl)
    {
        // docs(id, owner, body): changes logged before a DROP COLUMN name columns by their old positions.
        var key = KeysIn(Slot, 1)[0];
        Write(_source, ("INSERT INTO docs(id, owner, body) VALUES(1, ?, 'b')", [key]), ("INSERT INTO acct(k, v) VALUES(?, 1)", [key]));
        var copy = _source.SlotRows(Tables, Slots, Slot, since: null, epoch: null);
        Write(_source, ("UPDATE docs SET body = 'c' WHERE id = 1", []), ("UPDATE acct SET v = 2 WHERE k = ?", [key]));
        Write(_source, (ddl, []));
        Write(_source, ("UPDATE acct SET v = 3 WHERE k = ?", [key]));

        var refused = Assert.Throws<NodeException>(() => _source.SlotRows(Tables, Slots, Slot, copy.Lsn, copy.Epoch));
        Assert.Equal(NodeErrorCode.Truncated, refused.Code);
        Assert.Contains("schema changed", refused.Message, StringComparison.Ordinal);

        // A copy taken after the change (which the router sends to every shard) is whole and current.
        Write(_copy, (ddl, []));
        Apply(_source.SlotRows(Tables, Slots, Slot, since: null, epoch: null));
        Assert.Equal(3L, _copy.Query("SELECT v FROM acct WHERE k = ?", [key]).Rows.Single()[0]);
    }

    [Fact]
    public void A_delta_carries_inserts_updates_deletes_and_rows_whose_shard_key_moves_in_or_out()
    {
        var inSlot = KeysIn(Slot, 6);
        var outside = KeysIn(3, 3);
        foreach (var k in inSlot.Concat(outside))
        {
            Write(_source, ("INSERT INTO acct(k, v) VALUES(?, 1)", [k]), ("INSERT INTO items(owner, n, v) VALUES(?, 1, 'a')", [k]));
        }

        for (var i = 0; i < 6; i++)
        {
            Write(_source, ("INSERT INTO docs(id, owner, body) VALUES(?, ?, 'b')", [(long)i, i < 3 ? inSlot[i] : outside[i - 3]]));
        }

        var copy = _source.SlotRows(Tables, Slots, Slot, null, null);
        Apply(copy);
        AssertCopyHoldsTheSlot();

        // A shard key outside the primary key: the update records its old value only when it changes.
        Write(_source, ("UPDATE docs SET body = 'edited' WHERE id = 0", []));                              // stays, body changes
        Write(_source, ("UPDATE docs SET owner = ? WHERE id = 1", [outside[0]]));                         // leaves the slot
        Write(_source, ("UPDATE docs SET owner = ? WHERE id = 3", [inSlot[0]]));                          // enters it
        Write(_source, ("UPDATE docs SET body = 'other' WHERE id = 4", []));                              // not the slot's business

        // Changes after the copy: in the slot, outside it, and across its edge.
        Write(_source, ("INSERT INTO acct(k, v) VALUES(?, 7)", [KeysIn(Slot, 1, "new")[0]]));
        Write(_source, ("UPDATE acct SET v = v + 10 WHERE k = ?", [inSlot[0]]));
        Write(_source, ("DELETE FROM acct WHERE k = ?", [inSlot[1]]));
        Write(_source, ("UPDATE acct SET k = ? WHERE k = ?", [outside[0] + "-renamed-out", inSlot[2]]));   // primary key change: delete + insert
        Write(_source, ("UPDATE items SET owner = ? WHERE owner = ?", [KeysIn(0, 1, "away")[0], inSlot[3]]));          // leaves the slot
        Write(_source, ("UPDATE items SET owner = ? WHERE owner = ?", [KeysIn(Slot, 1, "arrive")[0], outside[2]]));          // enters the slot
        Write(_source, ("INSERT INTO items(owner, n, v) VALUES(?, 2, x'ff00'), (?, 3, NULL)", [inSlot[5], inSlot[5]]));
        Write(_source, ("UPDATE acct SET v = 99 WHERE k = ?", [outside[0]]));                             // not the slot's business
        Write(_source, ("INSERT INTO acct(k, v) VALUES(?, 1)", [inSlot[1]]), ("DELETE FROM acct WHERE k = ?", [inSlot[1]])); // nets to nothing

        var delta = _source.SlotRows(Tables, Slots, Slot, copy.Lsn, copy.Epoch);
        Assert.Equal(_source.Lsn, delta.Lsn);
        Assert.Equal(["k"], delta.Tables[0].KeyColumns);
        Assert.Equal(["owner", "n"], delta.Tables[1].KeyColumns);
        Assert.DoesNotContain(delta.Tables[0].Rows, r => r[0] is string k && ShardKey.Slot(k, Slots) != Slot);
        Assert.DoesNotContain(delta.Tables[0].Gone, g => (string)g[0]! == outside[0]); // changed, but never in the slot
        Assert.Contains(delta.Tables[0].Gone, g => (string)g[0]! == inSlot[2]);         // renamed out of it
        Assert.Contains(delta.Tables[1].Gone, g => (string)g[0]! == inSlot[3]);         // its shard key moved it away
        Assert.Equal([1L], delta.Tables[2].Gone.Select(g => (long)g[0]!));              // docs: only the row that left
        Assert.Equal([0L, 3L], delta.Tables[2].Rows.Select(r => (long)r[0]!).Order());  // edited in place, and arrived
        Apply(delta);
        AssertCopyHoldsTheSlot();

        // Nothing since: an empty delta at the same LSN.
        var none = _source.SlotRows(Tables, Slots, Slot, delta.Lsn, delta.Epoch);
        Assert.Equal(0, none.Changes);
        Assert.Equal(delta.Lsn, none.Lsn);
    }

    [Fact]
    public void A_delta_the_log_no_longer_holds_or_from_another_epoch_is_refused()
    {
        using var small = NodeDatabase.Open(Path.Combine(_root, "small"), new DatabaseSettings { LogRetention = 10 }, TimeProvider.System);
        small.SetEpochAndRole(1, "master");
        Write(small, ("CREATE TABLE acct(k TEXT PRIMARY KEY, v INTEGER)", []), ("CREATE TABLE items(owner TEXT, n INTEGER, v BLOB, PRIMARY KEY(owner, n))", []),
            ("CREATE TABLE docs(id INTEGER PRIMARY KEY, owner TEXT, body TEXT)", []), ("CREATE TABLE gen(k TEXT PRIMARY KEY, v INTEGER)", []));
        var copy = small.SlotRows(Tables, Slots, Slot, null, null);
        for (var i = 0; i < 600; i++)
        {
            Write(small, ("INSERT INTO acct(k, v) VALUES(?, ?)", [$"k{i}", (long)i]));
        }

        var truncated = Assert.Throws<NodeException>(() => small.SlotRows(Tables, Slots, Slot, copy.Lsn, copy.Epoch));
        Assert.Equal(NodeErrorCode.Truncated, truncated.Code);

        var ahead = Assert.Throws<NodeException>(() => small.SlotRows(Tables, Slots, Slot, small.Lsn + 5, null));
        Assert.Equal(NodeErrorCode.Truncated, ahead.Code);

        small.SetEpochAndRole(2, "master");
        var stale = Assert.Throws<NodeException>(() => small.SlotRows(Tables, Slots, Slot, small.Lsn, copy.Epoch));
        Assert.Equal(NodeErrorCode.StaleEpoch, stale.Code);
    }

    [Theory]
    [InlineData("_infra_log", "lsn", "NotAllowed")]
    [InlineData("sqlite_schema", "name", "NotAllowed")]
    [InlineData("missing", "k", "SqlError")]
    [InlineData("acct", "nope", "SqlError")]
    [InlineData("acct\"; DROP TABLE acct; --", "k", "SqlError")]
    public void Tables_that_are_not_user_tables_or_lack_the_column_are_refused(string table, string shardKey, string code)
    {
        var ex = Assert.Throws<NodeException>(() => _source.SlotRows([new ShardedTable(table, shardKey)], Slots, Slot, null, null));
        Assert.Equal(code, ex.Code.ToString());
        Assert.NotEmpty(_source.Query("SELECT name FROM sqlite_schema WHERE name = 'acct'", []).Rows);
    }
}
