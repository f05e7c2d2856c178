using Infra.Core.Placement;
using SQLitePCL;

namespace Infra.DataNode.Storage;

/// <summary>A sharded table as the router registers it: its name and shard-key column.</summary>
internal readonly record struct ShardedTable(string Name, string ShardKey);

/// <summary>
/// One table's part of a slot copy: the slot's current rows (<paramref name="Columns"/>,
/// <paramref name="Rows"/>) and the primary keys (<paramref name="KeyColumns"/>) of rows that changed
/// since the copy's LSN and are no longer in the slot (deleted, or their shard key moved them away).
/// </summary>
internal sealed record SlotTableRows(string Table, string[] Columns, List<object?[]> Rows, string[] KeyColumns, List<object?[]> Gone);

/// <summary>A slot copy as of <paramref name="Lsn"/> on a node of <paramref name="Epoch"/>.</summary>
internal sealed record SlotRows(long Lsn, long Epoch, List<SlotTableRows> Tables)
{
    public int Changes => Tables.Sum(t => t.Rows.Count + t.Gone.Count);
}

internal sealed partial class NodeDatabase
{
    /// <summary>
    /// The rows of one slot of the given tables, read in one snapshot — all of them, or, with
    /// <paramref name="since"/>, only the delta since that LSN: the rows changed after it that are in
    /// the slot now, and the keys of those that left it. The delta comes from the replication log,
    /// so it needs every entry after <paramref name="since"/> (else <see cref="NodeErrorCode.Truncated"/>)
    /// and, with <paramref name="epoch"/>, the same epoch as the copy it continues (else
    /// <see cref="NodeErrorCode.StaleEpoch"/>: a failover may have dropped rows the copy saw).
    /// </summary>
    public SlotRows SlotRows(IReadOnlyList<ShardedTable> tables, int slots, int slot, long? since, long? epoch) => WithSnapshot((reader, lsn) =>
    {
        // The epoch the snapshot belongs to (a node that just joined a newer epoch still shows the old history's rows).
        var currentEpoch = reader.ScalarLong("SELECT value FROM _infra_meta WHERE key = 'epoch'");
        if (epoch is { } expected && expected != currentEpoch)
        {
            throw new NodeException(NodeErrorCode.StaleEpoch, $"the copy was read in epoch {expected}; this node is in epoch {currentEpoch}");
        }

        var infos = tables.Select(t => DescribeSlotTable(reader, t)).ToList();
        var result = new SlotRows(lsn, currentEpoch, []);
        if (since is null)
        {
            foreach (var info in infos)
            {
                result.Tables.Add(ReadSlot(reader, info, slots, slot));
            }

            return result;
        }

        if (since > lsn)
        {
            throw new NodeException(NodeErrorCode.Truncated, $"the copy is at LSN {since}, past this node's {lsn}");
        }

        // Per table: changed keys, and whether the row may have left the slot (a delete or a shard-key
        // change whose old value was in it).
        var changed = infos.ToDictionary(i => i.Name, _ => new Dictionary<string, ChangedRow>(), StringComparer.OrdinalIgnoreCase);
        var watch = infos.ToDictionary(i => i.Name, i => Array.FindIndex(i.Columns, c => c.Equals(i.ShardKey, StringComparison.OrdinalIgnoreCase)), StringComparer.OrdinalIgnoreCase);
        if (since < lsn)
        {
            var oldest = reader.ScalarLong("SELECT coalesce(min(lsn), 0) FROM _infra_log");
            if (oldest == 0 || oldest > since + 1)
            {
                throw new NodeException(NodeErrorCode.Truncated, $"the log starts at LSN {oldest}; the changes since {since} are no longer there");
            }

            for (var from = since.Value + 1; from <= lsn;)
            {
                var batch = ReadLog(reader, from, 256);
                if (batch.Count == 0 || batch[0].Lsn != from)
                {
                    throw new NodeException(NodeErrorCode.Truncated, $"entry {from} is missing from the log");
                }

                foreach (var record in batch)
                {
                    if (record.Lsn > lsn)
                    {
                        break;
                    }

                    if (!record.IsIntact)
                    {
                        throw new InvalidOperationException($"log entry {record.Lsn} is corrupt");
                    }

                    foreach (var part in EntryCodec.Decode(record.Body))
                    {
                        if (part is StatementPart ddl)
                        {
                            // Changes logged before a schema change name columns by position in the old
                            // layout (a DROP COLUMN shifts them): the slot must be copied again whole.
                            throw new NodeException(NodeErrorCode.Truncated, $"the schema changed at LSN {record.Lsn} ({Shorten(ddl.Sql)}), after the copy; copy the slot again");
                        }

                        if (part is ChangesetPart changes)
                        {
                            SessionNative.ForEachChangedKey(changes.Changeset, table => watch.GetValueOrDefault(table, -1), row =>
                            {
                                if (changed.TryGetValue(row.Table, out var keys))
                                {
                                    var left = row.HasOld && ShardKey.Slot(row.Old, slots) == slot;
                                    var text = KeyText(row.KeyColumns, row.KeyValues);
                                    keys[text] = keys.TryGetValue(text, out var seen)
                                        ? seen with { MayHaveLeft = seen.MayHaveLeft || left }
                                        : new ChangedRow(row.KeyColumns, row.KeyValues, left);
                                }
                            });
                        }
                    }
                }

                from = batch[^1].Lsn + 1;
            }
        }

        foreach (var info in infos)
        {
            result.Tables.Add(ReadChanged(reader, info, slots, slot, changed[info.Name].Values));
        }

        return result;
    });

    private sealed record SlotTableInfo(string Name, string ShardKey, string[] Columns);

    /// <summary>A key the log says changed: its column positions and values, and whether it may have left the slot.</summary>
    private readonly record struct ChangedRow(int[] Columns, object?[] Values, bool MayHaveLeft);

    private static SlotTableInfo DescribeSlotTable(SqlRunner reader, ShardedTable table)
    {
        if (table.Name.StartsWith("_infra_", StringComparison.OrdinalIgnoreCase) || table.Name.StartsWith("sqlite_", StringComparison.OrdinalIgnoreCase))
        {
            throw new NodeException(NodeErrorCode.NotAllowed, $"{table.Name} is not a user table");
        }

        var columns = new List<string>();
        using (var info = PrepareInternal(reader, "SELECT name FROM pragma_table_info(?) ORDER BY cid"))
        {
            raw.sqlite3_bind_text(info, 1, table.Name);
            while (raw.sqlite3_step(info) == raw.SQLITE_ROW)
            {
                columns.Add(raw.sqlite3_column_text(info, 0).utf8_to_string());
            }
        }

        if (columns.Count == 0)
        {
            throw new NodeException(NodeErrorCode.SqlError, $"no such table: {table.Name}");
        }

        if (!columns.Contains(table.ShardKey, StringComparer.OrdinalIgnoreCase))
        {
            throw new NodeException(NodeErrorCode.SqlError, $"table {table.Name} has no column {table.ShardKey}");
        }

        return new SlotTableInfo(table.Name, table.ShardKey, [.. columns]);
    }

    private static string Shorten(string sql) => sql.Length <= 80 ? sql : sql[..77] + "...";

    /// <summary>
    /// The columns a copy carries, by name: <c>pragma_table_info</c> leaves generated columns out (the
    /// destination computes them, and they cannot be inserted), while <c>SELECT *</c> would return them
    /// and shift every column after one.
    /// </summary>
    private static string ColumnList(SlotTableInfo table) => string.Join(", ", table.Columns.Select(Quote));

    private SlotTableRows ReadSlot(SqlRunner reader, SlotTableInfo table, int slots, int slot)
    {
        // The slot count as a literal, not a parameter: so the query matches the expression of the slot
        // index the router creates on each sharded table (infra_slot(key, slots)) and reads only the
        // slot's rows instead of hashing every row of the table.
        using var stmt = PrepareInternal(reader, $"SELECT {ColumnList(table)} FROM {Quote(table.Name)} WHERE {ShardKey.SlotSql(table.ShardKey, slots)} = ?");
        raw.sqlite3_bind_int64(stmt, 1, slot);
        var rows = new List<object?[]>();
        int rc;
        while ((rc = raw.sqlite3_step(stmt)) == raw.SQLITE_ROW)
        {
            rows.Add(ReadRow(stmt, table.Columns.Length, rows.Count));
        }

        CheckDone(reader, rc, table.Name);
        return new SlotTableRows(table.Name, table.Columns, rows, [], []);
    }

    /// <summary>
    /// The current in-slot rows for changed keys; keys not in the slot now are reported as gone when
    /// they may have been in it (deleted, or their shard key changed away from it), else skipped (rows
    /// of other slots).
    /// </summary>
    private SlotTableRows ReadChanged(SqlRunner reader, SlotTableInfo table, int slots, int slot, IEnumerable<ChangedRow> changes)
    {
        var rows = new List<object?[]>();
        var gone = new List<object?[]>();
        string[] keyColumns = [];
        foreach (var group in changes.GroupBy(c => string.Join(",", c.Columns)))
        {
            var positions = group.First().Columns;
            if (positions.Any(p => p >= table.Columns.Length))
            {
                throw new InvalidOperationException($"a logged change of {table.Name} names a column the table does not have");
            }

            var names = positions.Select(p => table.Columns[p]).ToArray();
            if (keyColumns.Length == 0)
            {
                keyColumns = names;
            }
            else if (!keyColumns.SequenceEqual(names))
            {
                throw new NodeException(NodeErrorCode.Truncated, $"the primary key of {table.Name} changed since the copy began");
            }

            var where = string.Join(" AND ", names.Select((n, i) => $"{Quote(n)} = ?{i + 1}"));
            using var stmt = PrepareInternal(reader, $"SELECT {ColumnList(table)} FROM {Quote(table.Name)} WHERE {where} AND infra_slot({Quote(table.ShardKey)}, ?{names.Length + 1}) = ?{names.Length + 2}");
            foreach (var (_, values, mayHaveLeft) in group)
            {
                raw.sqlite3_reset(stmt);
                for (var i = 0; i < values.Length; i++)
                {
                    SqlRunner.BindValue(stmt, i + 1, values[i]);
                }

                raw.sqlite3_bind_int64(stmt, names.Length + 1, slots);
                raw.sqlite3_bind_int64(stmt, names.Length + 2, slot);
                var rc = raw.sqlite3_step(stmt);
                if (rc == raw.SQLITE_ROW)
                {
                    rows.Add(ReadRow(stmt, table.Columns.Length, rows.Count));
                }
                else
                {
                    CheckDone(reader, rc, table.Name);
                    if (mayHaveLeft)
                    {
                        gone.Add(values);
                    }
                }
            }
        }

        return new SlotTableRows(table.Name, table.Columns, rows, keyColumns, gone);
    }

    /// <summary>A read that ended in anything but SQLITE_DONE failed: a short copy must not pass for a whole one.</summary>
    private static void CheckDone(SqlRunner reader, int rc, string table)
    {
        if (rc != raw.SQLITE_DONE)
        {
            throw new Microsoft.Data.Sqlite.SqliteException($"reading {table}: {reader.Message()}", rc);
        }
    }

    private object?[] ReadRow(sqlite3_stmt stmt, int columns, int count)
    {
        if (count >= _settings.MaxResultRows)
        {
            throw new NodeException(NodeErrorCode.BadRequest, $"the slot has more than {_settings.MaxResultRows} rows in one table");
        }

        var row = new object?[columns];
        for (var i = 0; i < row.Length; i++)
        {
            row[i] = SqlRunner.Column(stmt, i);
        }

        return row;
    }

    /// <summary>A key's identity for de-duplication: column positions and typed values.</summary>
    private static string KeyText(int[] columns, object?[] values) =>
        string.Join(",", columns) + "|" + string.Join(",", values.Select(v => v switch
        {
            null => "n",
            long l => "i" + l.ToString(System.Globalization.CultureInfo.InvariantCulture),
            double d => "f" + d.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
            string s => "s" + s.Length.ToString(System.Globalization.CultureInfo.InvariantCulture) + ":" + s,
            byte[] b => "b" + Convert.ToHexString(b),
            _ => "?" + v,
        }));
}
