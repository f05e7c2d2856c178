using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Infra.Core.Storage;
using Microsoft.Data.Sqlite;
using Microsoft.Win32.SafeHandles;
using SQLitePCL;

namespace Infra.DataNode.Storage;

/// <summary>One statement of a write request: SQL and its positional parameters.</summary>
internal sealed record SqlStatement(string Sql, IReadOnlyList<object?> Parameters);

/// <summary>
/// A write request: statements run in one transaction; <see cref="Epoch"/>, when given, must be the node's.
/// <see cref="Slot"/>, when given, is the shard-map slot the write is for (the shard router sends it) and
/// must not be closed here. A command with <see cref="SlotChange"/> and no statements closes or reopens
/// a slot instead, in its place in the writer's queue.
/// </summary>
/// <param name="MaxTime">How long its row-changing statements may run: null, the node's <see cref="DatabaseSettings.MaxWriteTime"/>; zero, no limit.</param>
internal sealed record WriteCommand(IReadOnlyList<SqlStatement> Statements, long? Epoch = null, int? Slot = null, SlotChange? SlotChange = null, TimeSpan? MaxTime = null);

/// <summary>
/// Closes a slot to writes tagged with it (it is leaving this shard, or has left), or opens it again. A
/// close's <paramref name="By"/> names it (a shard router's id and move attempt), reported in the status;
/// an open's <paramref name="By"/>, when set, opens the slot only while the close so named is in force.
/// </summary>
internal readonly record struct SlotChange(int Slot, bool Closed, string? By = null);

internal readonly record struct StatementResult(long RowsAffected, long LastInsertId);

/// <summary>The outcome of one write: results and the LSN of its entry (the last LSN when it changed nothing), or the error.</summary>
internal sealed record WriteOutcome(StatementResult[]? Results, long Lsn, LogRecord? Entry, NodeException? Error);

internal sealed record QueryResult(string[] Columns, List<object?[]> Rows, long Lsn);

/// <summary>A replicated entry could not be applied: this copy differs from the master's.</summary>
internal sealed class DivergedException(long lsn, string message) : Exception($"entry {lsn}: {message}")
{
    public long Lsn { get; } = lsn;
}

internal sealed record DatabaseSettings
{
    /// <summary>
    /// FULL (default) or EXTRA: every acknowledged commit is on disk (the WAL is fsynced once for each
    /// group of commits, off the writer thread: <see cref="CommitFlusher"/>). NORMAL: commits are not
    /// synced at all (SQLite's NORMAL; a power loss can take the last ones).
    /// </summary>
    public string Synchronous { get; init; } = "FULL";

    public int ReadConnections { get; init; } = Math.Max(2, Environment.ProcessorCount * 2);

    /// <summary>Entries kept in the replication log; replicas further behind re-clone.</summary>
    public long LogRetention { get; init; } = 100_000;

    public int MaxResultRows { get; init; } = 100_000;

    /// <summary>Most bytes of values in one query result; also SQLite's length limit on read connections.</summary>
    public long MaxResultBytes { get; init; } = 64L << 20;

    /// <summary>How long one user read may run before SQLite is interrupted (zero: no limit).</summary>
    public TimeSpan MaxQueryTime { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How long the row-changing statements of one write may run in all before SQLite is interrupted (zero: no limit; DDL is not limited).</summary>
    public TimeSpan MaxWriteTime { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// How much of the database file each read connection maps into memory (SQLite's mmap_size; 0: none).
    /// Mapped pages are read without a pread(2) and a copy into the connection's own page cache.
    /// </summary>
    public long ReadMmapBytes { get; init; } = 256L << 20;

    /// <summary>Tests only: runs instead of the WAL's fsync (to hold it, or to make it fail).</summary>
    public Action<SafeFileHandle>? FlushWal { get; init; }
}

/// <summary>
/// A node's SQLite database: the user's tables plus the node's own — <c>_infra_meta</c> (node id, role,
/// epoch, last LSN), <c>_infra_log</c> (the replication log: every committed write as (lsn, epoch,
/// changeset parts), written in the same transaction as the rows) and <c>_infra_epochs</c> (where each
/// epoch began, to find fork points). Write methods run on one thread (the node's writer); queries
/// run on a pool of read-only connections.
/// </summary>
internal sealed partial class NodeDatabase : IDisposable
{
    public const string FileName = "node.db";

    private const string Schema = """
        CREATE TABLE IF NOT EXISTS _infra_meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS _infra_log(lsn INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, crc INTEGER NOT NULL, entry BLOB NOT NULL, committed_ms INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS _infra_epochs(epoch INTEGER PRIMARY KEY, start_lsn INTEGER NOT NULL);
        """;

    private const string NoPrimaryKey = """
        SELECT m.name FROM sqlite_schema m
        WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\_%' ESCAPE '\' AND m.name NOT LIKE '\_infra\_%' ESCAPE '\'
          AND NOT EXISTS (SELECT 1 FROM pragma_table_info(m.name) p WHERE p.pk > 0)
        LIMIT 1
        """;

    private readonly DatabaseSettings _settings;
    private readonly TimeProvider _time;
    private readonly ReaderWriterLockSlim _swap = new(LockRecursionPolicy.NoRecursion);
    private readonly LogTail _tail = new();
    private readonly Lock _poolLock = new();
    private readonly Stack<SqlRunner> _readers = new();
    private readonly SemaphoreSlim _readSlots;
    private SqlRunner _writer = null!;
    private long _lsn;
    private long _epoch;
    private long _historyEpoch;
    private int _generation;
    private long _commitsSinceTrim;
    private long _retainFrom = long.MaxValue;
    private readonly Lock _walLock = new();
    private SafeFileHandle? _wal;
    private int _walGeneration;
    private int[] _closedSlots = []; // sorted; replaced (never changed) by the writer thread, read by any
    private Dictionary<int, string> _closedBy = []; // the name of each closed slot's close, when given; replaced likewise

    private NodeDatabase(string directory, DatabaseSettings settings, TimeProvider time)
    {
        Directory = directory;
        _settings = settings;
        _time = time;
        _readSlots = new SemaphoreSlim(settings.ReadConnections, settings.ReadConnections);
        SyncsWal = !settings.Synchronous.Equals("NORMAL", StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>
    /// True when commits leave their fsync to <see cref="SyncWal"/>: SQLite runs at NORMAL, which writes
    /// a commit's WAL frames without syncing them (and still syncs the WAL before every checkpoint and
    /// a restarted WAL's header), and the node's <see cref="CommitFlusher"/> syncs the WAL file.
    /// False under <c>--synchronous normal</c>: nothing is synced at commit.
    /// </summary>
    public bool SyncsWal { get; }

    public string Directory { get; }

    public string Path => System.IO.Path.Combine(Directory, FileName);

    public string NodeId { get; private set; } = "";

    /// <summary>The last LSN committed (master) or applied (replica).</summary>
    public long Lsn => Volatile.Read(ref _lsn);

    public long Epoch => Volatile.Read(ref _epoch);

    /// <summary>
    /// The epoch the last entry of the log was written in (0 before any): with <see cref="Lsn"/>, how
    /// recent the node's history is. <see cref="Epoch"/> is the newest epoch the node has promised
    /// (claims raise it without adding entries), so it cannot rank histories; this can: of two logs, the
    /// one whose last entry has the higher epoch holds every acknowledged entry of the other's masters.
    /// </summary>
    public long LastEntryEpoch => Volatile.Read(ref _historyEpoch);

    /// <summary>
    /// Slots closed to tagged writes (<see cref="WriteCommand.Slot"/>), sorted. Kept in memory only: a
    /// restart forgets them along with every write that was still queued, so no late write survives it.
    /// </summary>
    public IReadOnlyList<int> ClosedSlots => Volatile.Read(ref _closedSlots);

    /// <summary>The name of each closed slot's close, when it was given one (<see cref="SlotChange.By"/>).</summary>
    public IReadOnlyDictionary<int, string> ClosedBy => Volatile.Read(ref _closedBy);

    /// <summary>Replica ids that semi-sync counts on (every replica that ever connected, until forgotten).</summary>
    public IReadOnlyList<string> RegisteredReplicas { get; private set; } = [];

    /// <summary>The role stored with the data (the last one the node had).</summary>
    public string StoredRole { get; private set; } = "";

    public static NodeDatabase Open(string directory, DatabaseSettings settings, TimeProvider time)
    {
        System.IO.Directory.CreateDirectory(directory);
        var db = new NodeDatabase(directory, settings, time);
        db.OpenWriter();
        return db;
    }

    private void OpenWriter()
    {
        _tail.Clear(); // before Lsn can name the opened file's history (a re-clone swaps it under the streams)
        var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = Path, Pooling = false }.ToString());
        connection.Open();
        _writer = new SqlRunner(connection, readOnly: false);
        _writer.Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=OFF; PRAGMA busy_timeout=10000;");
        _writer.InstallRunTimeLimit();
        _writer.Exec(Schema);
        NodeId = Meta("node_id") as string ?? "";
        if (NodeId.Length == 0)
        {
            NodeId = Guid.NewGuid().ToString("N")[..12];
            SetMeta("node_id", NodeId);
        }

        _lsn = Meta("lsn") as long? ?? 0;
        _epoch = Meta("epoch") as long? ?? 0;
        StoredRole = Meta("role") as string ?? "";
        RegisteredReplicas = Meta("replicas") is string { Length: > 0 } ids ? ids.Split(',') : [];
        Volatile.Write(ref _historyEpoch, _writer.ScalarLong("SELECT coalesce(max(epoch), 0) FROM _infra_epochs"));
        _generation++;
    }

    /// <summary>
    /// Makes every commit made so far durable: one fsync of the WAL file (nothing under NORMAL).
    /// Returns the LSN it covers, read before the fsync. Any thread, one at a time. Its caller, the
    /// <see cref="CommitFlusher"/>, never calls it again after a failure (the kernel may have dropped the
    /// pages it could not write, so a later success would prove nothing).
    /// </summary>
    public long SyncWal()
    {
        _swap.EnterReadLock();
        try
        {
            lock (_walLock)
            {
                var lsn = Lsn;
                if (!SyncsWal)
                {
                    return lsn;
                }

                if (_wal is null || _walGeneration != _generation)
                {
                    _wal?.Dispose();
                    _wal = null;
                    _wal = File.OpenHandle(Path + "-wal", FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
                    _walGeneration = _generation;
                }

                if (_settings.FlushWal is { } flush)
                {
                    flush(_wal);
                }
                else
                {
                    FileSync.DataSync(_wal);
                }

                return lsn;
            }
        }
        finally
        {
            _swap.ExitReadLock();
        }
    }

    // ---------------------------------------------------------------- writes (writer thread)

    /// <summary>
    /// Runs each command in its own savepoint inside one transaction, then commits once (group commit:
    /// one fsync for the whole group). A failing command is rolled back alone and gets its error; each
    /// one that changed something gets the next LSN and a log entry written in the same transaction.
    /// A command whose failure took the whole transaction with it — a change interrupted by
    /// <see cref="DatabaseSettings.MaxWriteTime"/> (SQLite then rolls back the transaction, not the statement),
    /// an <c>OR ROLLBACK</c> conflict — gets its error and the group runs again without it: nothing of the
    /// group was committed, and the others must not fail for it. A storage error that ends the
    /// transaction fails the whole group (Unavailable), as any failed commit does.
    /// </summary>
    public WriteOutcome[] ExecuteGroup(IReadOnlyList<WriteCommand> commands)
    {
        var dropped = new WriteOutcome?[commands.Count];
        while (true)
        {
            if (TryExecuteGroup(commands, dropped) is { } outcomes)
            {
                return outcomes;
            }
        }
    }

    /// <summary>One try of <see cref="ExecuteGroup"/>: null when a command ended the transaction (it is then in <paramref name="dropped"/>).</summary>
    private WriteOutcome[]? TryExecuteGroup(IReadOnlyList<WriteCommand> commands, WriteOutcome?[] dropped)
    {
        var outcomes = new WriteOutcome[commands.Count];
        var next = _lsn;
        var epoch = _epoch;
        var nowMs = _time.GetUtcNow().ToUnixTimeMilliseconds();
        var historyAtBegin = _historyEpoch; // InsertLog moves it with a new epoch's first entry; a rollback moves it back
        var (closedAtBegin, closersAtBegin) = (_closedSlots, _closedBy); // ChangeSlot changes them before the commit
        _writer.Run("BEGIN IMMEDIATE");
        try
        {
            for (var i = 0; i < commands.Count; i++)
            {
                var command = commands[i];
                if (dropped[i] is { } outcome)
                {
                    outcomes[i] = outcome;
                    continue;
                }

                // Checked here, on the writer thread, where claims and step-downs change the stored role: the
                // node's in-memory role follows a moment later, and a write queued meanwhile (one without an
                // epoch) would otherwise commit tagged with the epoch this node just joined as a replica.
                if (StoredRole != "master")
                {
                    outcomes[i] = Failed(new NodeException(NodeErrorCode.NotMaster, $"this node stepped down (epoch {epoch}, as a replica); writes go to the master"));
                    continue;
                }

                if (command.Epoch is { } expected && expected != epoch)
                {
                    outcomes[i] = Failed(new NodeException(NodeErrorCode.StaleEpoch, $"the request is for epoch {expected}; this node is at epoch {epoch}"));
                    continue;
                }

                if (command.SlotChange is { } change)
                {
                    ChangeSlot(change);
                    outcomes[i] = new WriteOutcome([], next, null, null);
                    continue;
                }

                if (command.Slot is { } slot && Array.BinarySearch(_closedSlots, slot) >= 0)
                {
                    outcomes[i] = Failed(new NodeException(NodeErrorCode.SlotClosed, $"slot {slot} is closed on this shard (it has moved or is moving to another); the write was not applied"));
                    continue;
                }

                var historyAtSavepoint = _historyEpoch;
                _writer.Run("SAVEPOINT w");
                try
                {
                    var (results, parts) = Run(command);
                    LogRecord? entry = null;
                    if (parts.Count > 0)
                    {
                        entry = LogRecord.Create(next + 1, epoch, EntryCodec.Encode(parts), nowMs);
                        InsertLog(entry);
                        next++;
                    }

                    _writer.Run("RELEASE w");
                    outcomes[i] = new WriteOutcome(results, next, entry, null);
                }
                catch (NodeException ex) when (!_writer.InTransaction && ex.Code != NodeErrorCode.Unavailable)
                {
                    // SQLite rolled back the whole transaction: every command before this one is undone, and
                    // the next try must see the slots as they were before it (writes queued before a close
                    // are applied).
                    Volatile.Write(ref _historyEpoch, historyAtBegin);
                    Volatile.Write(ref _closedSlots, closedAtBegin);
                    Volatile.Write(ref _closedBy, closersAtBegin);
                    dropped[i] = Failed(ex);
                    return null;
                }
                catch (NodeException ex)
                {
                    RollBackSavepoint("w", historyAtSavepoint);
                    outcomes[i] = Failed(ex);
                }
            }

            if (next != _lsn)
            {
                SetMeta("lsn", next);
                TrimLogIfDue(next);
            }

            _writer.Run("COMMIT");
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            TryRollback(historyAtBegin);
            var failure = new NodeException(NodeErrorCode.Unavailable, "the commit failed: " + ex.Message);
            return [.. commands.Select((_, i) => dropped[i] ?? Failed(failure))]; // a dropped write keeps its own error
        }

        _tail.Add(outcomes.Select(o => o.Entry).OfType<LogRecord>());

        Volatile.Write(ref _lsn, next);
        return outcomes;
    }

    /// <summary>
    /// Applies a <see cref="SlotChange"/> (on the writer thread). A conditional open whose close is no
    /// longer the one in force (a later close replaced it) changes nothing.
    /// </summary>
    private void ChangeSlot(SlotChange change)
    {
        if (!change.Closed && change.By is not null && _closedBy.GetValueOrDefault(change.Slot) != change.By)
        {
            return;
        }

        var closed = Array.BinarySearch(_closedSlots, change.Slot) >= 0;
        if (closed != change.Closed)
        {
            Volatile.Write(ref _closedSlots, change.Closed ? [.. _closedSlots.Append(change.Slot).Order()] : [.. _closedSlots.Where(s => s != change.Slot)]);
        }

        var by = change.Closed ? change.By : null;
        if (_closedBy.GetValueOrDefault(change.Slot) != by)
        {
            var closers = new Dictionary<int, string>(_closedBy);
            closers.Remove(change.Slot);
            if (by is not null)
            {
                closers[change.Slot] = by;
            }

            Volatile.Write(ref _closedBy, closers);
        }
    }

    private WriteOutcome Failed(NodeException error) => new(null, _lsn, null, error);

    /// <summary>
    /// Runs one command's statements. Its statements that change rows (not DDL: a migration may take
    /// long) may run <see cref="DatabaseSettings.MaxWriteTime"/> (or the command's own limit) in all before
    /// SQLite is interrupted: the writer is one thread, and a statement that never ends would stop every
    /// write of the node.
    /// </summary>
    private (StatementResult[] Results, List<EntryPart> Parts) Run(WriteCommand command)
    {
        var results = new StatementResult[command.Statements.Count];
        var parts = new List<EntryPart>();
        ChangeCapture? capture = null;
        var limit = command.MaxTime ?? _settings.MaxWriteTime;
        var left = limit > TimeSpan.Zero ? (long)(limit.TotalSeconds * Stopwatch.Frequency) : long.MaxValue; // only row-changing statements spend it
        try
        {
            for (var i = 0; i < command.Statements.Count; i++)
            {
                var statement = command.Statements[i];
                PreparedStatement prepared;
                try
                {
                    prepared = _writer.Prepare(statement.Sql);
                }
                catch (NodeException ex)
                {
                    throw new NodeException(ex.Code, $"statement {i + 1}: {ex.Message}");
                }

                try
                {
                    if (prepared.IsDdl && capture is not null)
                    {
                        Flush(capture, parts);
                        capture.Dispose();
                        capture = null;
                    }
                    else if (!prepared.IsDdl)
                    {
                        capture ??= new ChangeCapture(_writer.NativeHandle);
                    }

                    _writer.Bind(prepared, statement.Parameters);
                    var before = _writer.TotalChanges;
                    var started = Stopwatch.GetTimestamp();
                    if (!prepared.IsDdl && left != long.MaxValue)
                    {
                        _writer.StartRunTimeLimit(started + Math.Max(left, 0), limit, "write", command.MaxTime is null ? "--max-write-time" : "maxTimeMs");
                    }

                    try
                    {
                        _writer.RunToEnd(prepared);
                    }
                    finally
                    {
                        _writer.EndRunTimeLimit();
                        if (!prepared.IsDdl && left != long.MaxValue)
                        {
                            left -= Stopwatch.GetTimestamp() - started;
                        }
                    }

                    results[i] = new StatementResult(_writer.TotalChanges - before, _writer.LastInsertRowId);
                    if (prepared.IsDdl)
                    {
                        _writer.ClearCache();
                        if (ScalarText(NoPrimaryKey) is { } table)
                        {
                            throw new NodeException(NodeErrorCode.NotAllowed, $"table {table} has no PRIMARY KEY: replication identifies rows by primary key, so every table needs one");
                        }

                        parts.Add(new StatementPart(statement.Sql, statement.Parameters));
                    }
                }
                catch (NodeException ex)
                {
                    throw new NodeException(ex.Code, $"statement {i + 1}: {ex.Message}");
                }
                finally
                {
                    SqlRunner.Release(prepared);
                }
            }

            if (capture is not null)
            {
                Flush(capture, parts);
            }

            return (results, parts);
        }
        finally
        {
            capture?.Dispose();
        }
    }

    private static void Flush(ChangeCapture capture, List<EntryPart> parts)
    {
        var changeset = capture.TakeChangeset();
        if (changeset.Length > 0)
        {
            parts.Add(new ChangesetPart(changeset));
        }
    }

    private void InsertLog(LogRecord entry)
    {
        _writer.Run("INSERT INTO _infra_log(lsn, epoch, crc, entry, committed_ms) VALUES(?, ?, ?, ?, ?)",
            entry.Lsn, entry.Epoch, (long)entry.Crc, entry.Body, entry.CommittedMs);
        if (entry.Epoch > _historyEpoch)
        {
            _writer.Run("INSERT OR REPLACE INTO _infra_epochs(epoch, start_lsn) VALUES(?, ?)", entry.Epoch, entry.Lsn);
            Volatile.Write(ref _historyEpoch, entry.Epoch);
        }
    }

    /// <summary>
    /// The first LSN the replicas a master knows still need (long.MaxValue: none). The log keeps it past
    /// its retention, up to <see cref="MaxPinnedRetention"/> × the retention (a replica that is gone for good
    /// must not hold the log without end: past that it re-clones when it comes back).
    /// </summary>
    public long RetainFrom
    {
        get => Volatile.Read(ref _retainFrom);
        set => Volatile.Write(ref _retainFrom, value);
    }

    private const long MaxPinnedRetention = 10;

    private void TrimLogIfDue(long lsn)
    {
        if (++_commitsSinceTrim < 256 && lsn % 4096 != 0)
        {
            return;
        }

        _commitsSinceTrim = 0;
        var keepFrom = lsn - _settings.LogRetention + 1;
        var pinned = RetainFrom;
        if (pinned < keepFrom)
        {
            keepFrom = Math.Max(pinned, lsn - (MaxPinnedRetention * _settings.LogRetention) + 1);
        }

        if (keepFrom > 1)
        {
            _writer.Run("DELETE FROM _infra_log WHERE lsn < ?", keepFrom);
        }
    }

    /// <summary>
    /// Applies replicated entries in one transaction, together with the entries themselves and the new
    /// LSN (exactly once across restarts): consecutive row-change entries as one joined changeset
    /// (<see cref="TryApplyRun"/>), the rest each in its own savepoint. A damaged or out-of-sequence entry
    /// anywhere refuses the whole batch before anything is applied. A conflict commits what came before
    /// it and throws <see cref="DivergedException"/>: the node must stop, never skip.
    /// </summary>
    public void ApplyEntries(IReadOnlyList<LogRecord> entries)
    {
        var expected = _lsn;
        foreach (var entry in entries)
        {
            if (entry.Lsn != ++expected)
            {
                throw new InvalidDataException($"entry {entry.Lsn} arrived after {expected - 1}: the stream skipped or repeated entries");
            }

            if (!entry.IsIntact)
            {
                throw new InvalidDataException($"entry {entry.Lsn} fails its checksum");
            }
        }

        var applied = _lsn;
        DivergedException? diverged = null;
        var parts = new List<EntryPart>[entries.Count];
        for (var i = 0; i < entries.Count; i++)
        {
            parts[i] = EntryCodec.Decode(entries[i].Body);
        }

        var inRuns = 0;
        var historyAtBegin = _historyEpoch;
        _writer.Run("BEGIN IMMEDIATE");
        try
        {
            var next = 0;
            while (next < entries.Count && diverged is null)
            {
                var (run, runBytes) = RowChangeRun(parts, next);
                if (run > 1 && TryApplyRun(entries, parts, next, run, runBytes))
                {
                    inRuns += run;
                    next += run;
                    applied = entries[next - 1].Lsn;
                    continue;
                }

                // One entry at a time: a statement (DDL), a lone entry, or a run that met a conflict —
                // applied singly, the conflict is pinned on the entry that causes it.
                for (var end = next + Math.Max(run, 1); next < end; next++)
                {
                    if (ApplyOne(entries[next], parts[next]) is { } failure)
                    {
                        diverged = failure;
                        break;
                    }

                    applied = entries[next].Lsn;
                }
            }

            if (applied != _lsn)
            {
                SetMeta("lsn", applied);
                TrimLogIfDue(applied);
            }

            _writer.Run("COMMIT");
        }
        catch (SqliteException ex) when (SessionNative.IsStorageFailure(ex.SqliteErrorCode))
        {
            // Nothing of the batch stays; the stream starts again from the last applied entry.
            TryRollback(historyAtBegin);
            throw SessionNative.StorageFailure(ex.SqliteErrorCode, $"applying entries {entries[0].Lsn}..{entries[^1].Lsn}");
        }
        catch
        {
            TryRollback(historyAtBegin);
            throw;
        }

        EntriesAppliedInRuns += inRuns;
        _tail.Add(entries.TakeWhile(e => e.Lsn <= applied));

        Volatile.Write(ref _lsn, applied);
        if (diverged is not null)
        {
            throw diverged;
        }
    }

    /// <summary>Entries applied, and committed, as part of a joined run (<see cref="TryApplyRun"/>) since the database was opened.</summary>
    public long EntriesAppliedInRuns { get; private set; }

    /// <summary>Changeset bytes one joined run may hold (a run stops before the entry that would pass it).</summary>
    private const int MaxRunBytes = 8 << 20;

    /// <summary>
    /// How many entries from <paramref name="start"/> on carry row changes only (no statements), within
    /// <see cref="MaxRunBytes"/>, and their changesets' bytes.
    /// </summary>
    private static (int Count, int Bytes) RowChangeRun(List<EntryPart>[] parts, int start)
    {
        var end = start;
        long bytes = 0;
        while (end < parts.Length && parts[end].TrueForAll(p => p is ChangesetPart))
        {
            var more = parts[end].Sum(p => (long)((ChangesetPart)p).Changeset.Length);
            if (bytes + more > MaxRunBytes && end > start)
            {
                break;
            }

            bytes += more;
            end++;
        }

        return (end - start, (int)Math.Min(bytes, int.MaxValue));
    }

    /// <summary>
    /// Applies the changesets of entries [start, start + count) as one changeset — their bytes one after
    /// the other, a valid changeset whose table sections repeat — so SQLite prepares its statements for a
    /// table once per batch, not once per entry (it re-prepares only when the table changes). Changes
    /// are applied in log order, so the rows end as applying the entries one by one would leave them.
    /// On any conflict the run is undone and false returned, for the caller to apply it entry by entry.
    /// </summary>
    private bool TryApplyRun(IReadOnlyList<LogRecord> entries, List<EntryPart>[] parts, int start, int count, int size)
    {
        var joined = System.Buffers.ArrayPool<byte>.Shared.Rent(Math.Max(size, 1));
        try
        {
            var at = 0;
            for (var i = start; i < start + count; i++)
            {
                foreach (var part in parts[i])
                {
                    var changeset = ((ChangesetPart)part).Changeset;
                    changeset.CopyTo(joined, at);
                    at += changeset.Length;
                }
            }

            _writer.Run("SAVEPOINT run");
            try
            {
                SessionNative.ApplyOrThrow(_writer.NativeHandle, joined.AsSpan(0, size));
            }
            catch (Exception ex) when (IsDivergence(ex))
            {
                _writer.Exec("ROLLBACK TO run; RELEASE run");
                return false;
            }

            for (var i = start; i < start + count; i++)
            {
                InsertLog(entries[i]);
            }

            _writer.Run("RELEASE run");
            return true;
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(joined);
        }
    }

    /// <summary>One entry in its own savepoint; the divergence it causes, or null once it is applied.</summary>
    private DivergedException? ApplyOne(LogRecord entry, List<EntryPart> parts)
    {
        var historyAtSavepoint = _historyEpoch;
        _writer.Run("SAVEPOINT a");
        try
        {
            foreach (var part in parts)
            {
                switch (part)
                {
                    case ChangesetPart c:
                        SessionNative.ApplyOrThrow(_writer.NativeHandle, c.Changeset);
                        break;
                    case StatementPart s:
                        InternalOnce(s.Sql, [.. s.Parameters]);
                        _writer.ClearCache();
                        break;
                }
            }

            InsertLog(entry);
            _writer.Run("RELEASE a");
            return null;
        }
        catch (Exception ex) when (IsDivergence(ex))
        {
            RollBackSavepoint("a", historyAtSavepoint);
            return new DivergedException(entry.Lsn, ex.Message);
        }
    }

    /// <summary>
    /// An entry that failed to apply because of what it changes (a conflict, a constraint, a missing
    /// table): this copy differs from the master's. One that failed because the database could not be
    /// written (<see cref="SessionNative.IsStorageFailure"/>) has not diverged; that error ends the batch.
    /// </summary>
    private static bool IsDivergence(Exception ex) =>
        ex is ChangesetConflictException || (ex is SqliteException sqlite && !SessionNative.IsStorageFailure(sqlite.SqliteErrorCode));

    public void SetRegisteredReplicas(IReadOnlyList<string> ids)
    {
        SetMeta("replicas", string.Join(',', ids));
        RegisteredReplicas = [.. ids];
    }

    /// <summary>The epoch this node last voted in, and for which node (see <see cref="Claim"/>); (0, "") when none.</summary>
    public (long Epoch, string Leader) Vote
    {
        get
        {
            var text = Meta("vote") as string ?? "";
            var colon = text.IndexOf(':', StringComparison.Ordinal);
            return colon > 0 && long.TryParse(text.AsSpan(0, colon), out var e) ? (e, text[(colon + 1)..]) : (0, "");
        }
    }

    /// <summary>
    /// A router claims <paramref name="epoch"/> for <paramref name="leader"/> (a node id) before a
    /// promotion: the node moves to that epoch as a replica and remembers whom it voted for. A node
    /// votes once per epoch, so two routers cannot both gather a majority for different leaders of the
    /// same epoch. Returns false when the epoch is already taken by another leader (or is older).
    /// </summary>
    public bool Claim(long epoch, string leader)
    {
        var (voted, votedFor) = Vote;
        if (epoch < _epoch || (epoch == voted && votedFor != leader) || (epoch == _epoch && voted != epoch))
        {
            return false;
        }

        if (epoch == voted)
        {
            return true;
        }

        _writer.Exec("BEGIN IMMEDIATE");
        try
        {
            SetMeta("epoch", epoch);
            SetMeta("role", "replica");
            SetMeta("vote", $"{epoch}:{leader}");
            _writer.Exec("COMMIT");
        }
        catch
        {
            TryRollback();
            throw;
        }

        Volatile.Write(ref _epoch, epoch);
        StoredRole = "replica";
        ForgetClosedSlots();
        return true;
    }

    /// <summary>Stores a new epoch and role durably (promotion, demotion, learning a newer epoch).</summary>
    public void SetEpochAndRole(long epoch, string role)
    {
        if (epoch < _epoch)
        {
            throw new InvalidOperationException($"epoch {epoch} is older than {_epoch}: epochs only grow");
        }

        _writer.Exec("BEGIN IMMEDIATE");
        try
        {
            SetMeta("epoch", epoch);
            SetMeta("role", role);
            _writer.Exec("COMMIT");
        }
        catch
        {
            TryRollback();
            throw;
        }

        Volatile.Write(ref _epoch, epoch);
        StoredRole = role;
        if (role != "master")
        {
            ForgetClosedSlots();
        }
    }

    /// <summary>
    /// Closed slots are what this node remembers of slot moves while it is master. When it steps down they
    /// go: its successor never knew them, and a slot that comes back meanwhile is opened on the successor,
    /// so a node promoted again must not refuse it from old memory.
    /// </summary>
    private void ForgetClosedSlots()
    {
        Volatile.Write(ref _closedSlots, []);
        Volatile.Write(ref _closedBy, []);
    }

    /// <summary>
    /// The last LSN a node whose log ends at (<paramref name="lastEpoch"/>, <paramref name="lastLsn"/>)
    /// shares with this one: entries after it on that node were never replicated here and must go.
    /// </summary>
    public long ForkPoint(long lastEpoch, long lastLsn)
    {
        var nextEpochStart = _writer.ScalarLong("SELECT coalesce(min(start_lsn), 0) FROM _infra_epochs WHERE epoch > ?", lastEpoch);
        var fork = Math.Min(lastLsn, _lsn);
        return nextEpochStart > 0 ? Math.Min(fork, nextEpochStart - 1) : fork;
    }

    /// <summary>The epoch of the entry at <paramref name="lsn"/> (0 when there is none).</summary>
    public long EpochAt(long lsn) => lsn == 0 ? 0 : _writer.ScalarLong("SELECT coalesce((SELECT epoch FROM _infra_log WHERE lsn = ?), (SELECT max(epoch) FROM _infra_epochs WHERE start_lsn <= ?), 0)", lsn, lsn);

    /// <summary>
    /// Undoes every entry after <paramref name="fork"/> by applying their inverted changesets newest
    /// first, in one transaction. False (nothing changed) when an entry holds DDL, which cannot be
    /// inverted, or the undo conflicts: then the node must re-clone.
    /// </summary>
    public bool RollbackTo(long fork)
    {
        if (fork >= _lsn)
        {
            return true;
        }

        var tail = ReadLogInternal(fork + 1, int.MaxValue);
        if (tail.Count != _lsn - fork)
        {
            return false;
        }

        var undo = new List<byte[]>();
        foreach (var entry in tail.AsEnumerable().Reverse())
        {
            var parts = EntryCodec.Decode(entry.Body);
            if (parts.Any(p => p is StatementPart))
            {
                return false;
            }

            undo.AddRange(parts.Cast<ChangesetPart>().Reverse().Select(p => SessionNative.InvertOrThrow(p.Changeset)));
        }

        _tail.Clear(); // the tail above the fork point is being undone
        _writer.Exec("BEGIN IMMEDIATE");
        try
        {
            foreach (var changeset in undo)
            {
                SessionNative.ApplyOrThrow(_writer.NativeHandle, changeset);
            }

            _writer.Run("DELETE FROM _infra_log WHERE lsn > ?", fork);
            _writer.Run("DELETE FROM _infra_epochs WHERE start_lsn > ?", fork);
            SetMeta("lsn", fork);
            _writer.Exec("COMMIT");
        }
        catch (ChangesetConflictException)
        {
            TryRollback();
            return false;
        }
        catch
        {
            TryRollback();
            throw;
        }

        Volatile.Write(ref _lsn, fork);
        Volatile.Write(ref _historyEpoch, _writer.ScalarLong("SELECT coalesce(max(epoch), 0) FROM _infra_epochs"));
        return true;
    }

    private void TryRollback()
    {
        try
        {
            _writer.Exec("ROLLBACK");
        }
        catch (SqliteException)
        {
            // No transaction was open (SQLite already rolled it back).
        }
    }

    /// <summary>Rolls back a transaction that may have logged entries: the epoch of the last entry goes back with them.</summary>
    private void TryRollback(long historyEpochAtBegin)
    {
        TryRollback();
        Volatile.Write(ref _historyEpoch, historyEpochAtBegin);
    }

    /// <summary>Undoes and ends the savepoint <paramref name="name"/>, and what it logged (as <see cref="TryRollback(long)"/>).</summary>
    private void RollBackSavepoint(string name, long historyEpochAtSavepoint)
    {
        _writer.Exec($"ROLLBACK TO {name}; RELEASE {name}");
        Volatile.Write(ref _historyEpoch, historyEpochAtSavepoint);
    }

    // ---------------------------------------------------------------- reads (any thread)

    /// <summary>Runs a read-only query; the LSN returned is the one the rows reflect.</summary>
    public QueryResult Query(string sql, IReadOnlyList<object?> parameters) => TryQuery(sql, parameters, mayWait: true)!;

    /// <summary>
    /// Fault injection for tests: caps the writer's database file at its current size plus
    /// <paramref name="extraPages"/> pages (PRAGMA max_page_count on the writer connection), so writes
    /// past it fail with SQLITE_FULL as on a full disk. Returns the cap.
    /// </summary>
    internal long LimitWriterPages(long extraPages)
    {
        var cap = _writer.ScalarLong("PRAGMA page_count") + extraPages;
        return _writer.ScalarLong($"PRAGMA max_page_count={cap.ToString(CultureInfo.InvariantCulture)}");
    }

    /// <summary>The mapping size a pooled read connection has (SQLite's <c>mmap_size</c>, after its compile-time cap).</summary>
    internal long ReaderMmapSize() => WithReader(reader => reader.ScalarLong("PRAGMA mmap_size"));

    /// <summary>
    /// <see cref="Query"/>, or null without running it when <paramref name="mayWait"/> is false and it
    /// would first have to wait: every read slot taken, a re-clone swapping the database, or no pooled
    /// read connection to take (opening one is slow).
    /// </summary>
    public QueryResult? TryQuery(string sql, IReadOnlyList<object?> parameters, bool mayWait) => TryWithReader(Snapshot((reader, lsn) =>
    {
        var prepared = reader.Prepare(sql);
        try
        {
            reader.Bind(prepared, parameters);
            var stmt = prepared.Handle;
            var columns = new string[raw.sqlite3_column_count(stmt)];
            for (var i = 0; i < columns.Length; i++)
            {
                columns[i] = raw.sqlite3_column_name(stmt, i).utf8_to_string() ?? "";
            }

            var rows = new List<object?[]>();
            long bytes = 0;
            reader.StartRunTimeLimit(_settings.MaxQueryTime);
            while (reader.Step(prepared))
            {
                if (rows.Count >= _settings.MaxResultRows)
                {
                    throw new NodeException(NodeErrorCode.BadRequest, $"the result has more than {_settings.MaxResultRows} rows; use LIMIT");
                }

                var row = new object?[columns.Length];
                for (var i = 0; i < row.Length; i++)
                {
                    var value = SqlRunner.Column(stmt, i);
                    row[i] = value;
                    bytes += value switch { string s => s.Length, byte[] b => b.Length, _ => 8 }; // no single one is past the limit (SQLITE_LIMIT_LENGTH)
                    if (bytes > _settings.MaxResultBytes)
                    {
                        throw new NodeException(NodeErrorCode.BadRequest, $"the result is over {_settings.MaxResultBytes} bytes (--max-result-size); use LIMIT or select fewer columns");
                    }
                }

                rows.Add(row);
            }

            return new QueryResult(columns, rows, lsn);
        }
        finally
        {
            reader.EndRunTimeLimit();
            SqlRunner.Release(prepared);
        }
    }), mayWait, out var result) ? result : null;

    /// <summary>Runs <paramref name="work"/> on a reader inside one read transaction, with the LSN that snapshot reflects.</summary>
    private T WithSnapshot<T>(Func<SqlRunner, long, T> work) => WithReader(Snapshot(work));

    private static Func<SqlRunner, T> Snapshot<T>(Func<SqlRunner, long, T> work) => reader =>
    {
        reader.Run("BEGIN");
        try
        {
            return work(reader, reader.ScalarLong("SELECT value FROM _infra_meta WHERE key = 'lsn'"));
        }
        finally
        {
            reader.Run("COMMIT");
        }
    };

    /// <summary>
    /// Consecutive entries from <paramref name="fromLsn"/> on, at most <paramref name="max"/> and, past the
    /// first, at most <paramref name="maxBytes"/> of bodies: from the in-memory tail of recent ones when it
    /// holds <paramref name="fromLsn"/> (then possibly fewer than the log has — a caller that wants more
    /// continues after the last), else read on a reader connection.
    /// </summary>
    public List<LogRecord> ReadLog(long fromLsn, int max, long maxBytes = long.MaxValue) =>
        _tail.TryRead(fromLsn, max, Lsn, maxBytes) ?? WithReader(reader => ReadLog(reader, fromLsn, max, maxBytes));

    /// <summary>The oldest LSN still in the log (0 when the log is empty).</summary>
    public long OldestLogLsn() => WithReader(reader => reader.ScalarLong("SELECT coalesce(min(lsn), 0) FROM _infra_log"));

    private List<LogRecord> ReadLogInternal(long fromLsn, int max) => ReadLog(_writer, fromLsn, max);

    private static List<LogRecord> ReadLog(SqlRunner runner, long fromLsn, int max, long maxBytes = long.MaxValue)
    {
        var stmt = runner.Internal("SELECT lsn, epoch, crc, entry, committed_ms FROM _infra_log WHERE lsn >= ? ORDER BY lsn LIMIT ?");
        try
        {
            raw.sqlite3_bind_int64(stmt, 1, fromLsn);
            raw.sqlite3_bind_int64(stmt, 2, max);
            var list = new List<LogRecord>();
            var bytes = 0L;
            while (raw.sqlite3_step(stmt) == raw.SQLITE_ROW)
            {
                bytes += raw.sqlite3_column_bytes(stmt, 3);
                if (bytes > maxBytes && list.Count > 0)
                {
                    break;
                }

                list.Add(new LogRecord(raw.sqlite3_column_int64(stmt, 0), raw.sqlite3_column_int64(stmt, 1), (uint)raw.sqlite3_column_int64(stmt, 2),
                    raw.sqlite3_column_blob(stmt, 3).ToArray(), raw.sqlite3_column_int64(stmt, 4)));
            }

            return list;
        }
        finally
        {
            SqlRunner.Reset(stmt);
        }
    }

    /// <summary>
    /// A deterministic SHA-256 of every user table — names, columns, and rows ordered by primary key —
    /// read in one snapshot, with the LSN it reflects and the row count per table.
    /// </summary>
    public (string Checksum, long Lsn, SortedDictionary<string, long> Tables) Checksum() => WithSnapshot((reader, lsn) =>
    {
        var tables = new List<string>();
        using (var list = PrepareInternal(reader, "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_infra\\_%' ESCAPE '\\' ORDER BY name"))
        {
            while (raw.sqlite3_step(list) == raw.SQLITE_ROW)
            {
                tables.Add(raw.sqlite3_column_text(list, 0).utf8_to_string());
            }
        }

        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var counts = new SortedDictionary<string, long>(StringComparer.Ordinal);
        foreach (var table in tables)
        {
            var keys = new List<string>();
            using (var info = PrepareInternal(reader, "SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk"))
            {
                raw.sqlite3_bind_text(info, 1, table);
                while (raw.sqlite3_step(info) == raw.SQLITE_ROW)
                {
                    keys.Add(raw.sqlite3_column_text(info, 0).utf8_to_string());
                }
            }

            var order = keys.Count > 0 ? string.Join(", ", keys.Select(Quote)) : "rowid";
            using var rows = PrepareInternal(reader, $"SELECT * FROM {Quote(table)} ORDER BY {order}");
            HashText(hash, "table", table);
            var n = raw.sqlite3_column_count(rows);
            for (var i = 0; i < n; i++)
            {
                HashText(hash, "column", raw.sqlite3_column_name(rows, i).utf8_to_string());
            }

            long count = 0;
            while (raw.sqlite3_step(rows) == raw.SQLITE_ROW)
            {
                count++;
                for (var i = 0; i < n; i++)
                {
                    HashValue(hash, SqlRunner.Column(rows, i));
                }
            }

            counts[table] = count;
        }

        return (Convert.ToHexStringLower(hash.GetHashAndReset()), lsn, counts);
    });

    private static string Quote(string name) => "\"" + name.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    private static void HashText(IncrementalHash hash, string tag, string text)
    {
        hash.AppendData(Encoding.UTF8.GetBytes(tag));
        HashValue(hash, text);
    }

    private static void HashValue(IncrementalHash hash, object? value)
    {
        Span<byte> header = stackalloc byte[9];
        switch (value)
        {
            case null:
                hash.AppendData([0]);
                break;
            case long l:
                header[0] = 1;
                BitConverter.TryWriteBytes(header[1..], l);
                hash.AppendData(header);
                break;
            case double d:
                header[0] = 2;
                BitConverter.TryWriteBytes(header[1..], d);
                hash.AppendData(header);
                break;
            case string s:
                var bytes = Encoding.UTF8.GetBytes(s);
                header[0] = 3;
                BitConverter.TryWriteBytes(header[1..], (long)bytes.Length);
                hash.AppendData(header);
                hash.AppendData(bytes);
                break;
            case byte[] b:
                header[0] = 4;
                BitConverter.TryWriteBytes(header[1..], (long)b.Length);
                hash.AppendData(header);
                hash.AppendData(b);
                break;
        }
    }

    /// <summary>Writes a consistent copy of the whole database (SQLite's backup API) to <paramref name="file"/>.</summary>
    public long BackupTo(string file) => WithReader(reader =>
    {
        File.Delete(file);
        using (var destination = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = file, Pooling = false }.ToString()))
        {
            destination.Open();
            reader.Connection.BackupDatabase(destination);
        }

        using var check = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = file, Pooling = false }.ToString());
        check.Open();
        using var command = check.CreateCommand();
        command.CommandText = "SELECT value FROM _infra_meta WHERE key = 'lsn'";
        return command.ExecuteScalar() is long lsn ? lsn : 0;
    });

    /// <summary>
    /// Replaces the whole database with a snapshot file (re-clone): closes every connection, keeps this
    /// node's id and the higher epoch, moves the snapshot into place atomically, and reopens.
    /// </summary>
    public void ReplaceWith(string snapshot, string role)
    {
        using (var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = snapshot, Pooling = false }.ToString()))
        {
            connection.Open();
            using var command = connection.CreateCommand();
            command.CommandText = "INSERT OR REPLACE INTO _infra_meta(key, value) VALUES('node_id', $id), ('role', $role), ('replicas', ''), ('epoch', max($epoch, coalesce((SELECT value FROM _infra_meta WHERE key = 'epoch'), 0)))";
            command.Parameters.AddWithValue("$id", NodeId);
            command.Parameters.AddWithValue("$role", role);
            command.Parameters.AddWithValue("$epoch", _epoch);
            command.ExecuteNonQuery();
        }

        FsyncFile(snapshot);
        _swap.EnterWriteLock();
        try
        {
            CloseConnections();
            File.Delete(Path + "-wal");
            File.Delete(Path + "-shm");
            File.Move(snapshot, Path, overwrite: true);
            FsyncFile(Directory);
            OpenWriter();
        }
        finally
        {
            _swap.ExitWriteLock();
        }
    }

    private static void FsyncFile(string path)
    {
        if (System.IO.Directory.Exists(path))
        {
            DirectorySync.Sync(path);
            return;
        }

        using var stream = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        stream.Flush(flushToDisk: true);
    }

    private T WithReader<T>(Func<SqlRunner, T> work)
    {
        TryWithReader(work, mayWait: true, out var result);
        return result;
    }

    /// <summary>Runs <paramref name="work"/> on a pooled reader; false, without running it, when it would have to wait and may not.</summary>
    private bool TryWithReader<T>(Func<SqlRunner, T> work, bool mayWait, out T result)
    {
        if (!mayWait)
        {
            if (!_readSlots.Wait(0))
            {
                result = default!;
                return false;
            }

            if (!_swap.TryEnterReadLock(0))
            {
                _readSlots.Release();
                result = default!;
                return false;
            }
        }
        else
        {
            _readSlots.Wait();
            _swap.EnterReadLock();
        }

        SqlRunner? reader = null;
        try
        {
            var generation = _generation;
            lock (_poolLock)
            {
                _readers.TryPop(out reader);
            }

            if (reader is null && !mayWait)
            {
                result = default!; // opening a connection takes a while: not without waiting
                return false;
            }

            reader ??= OpenReader();
            try
            {
                result = work(reader);
                return true;
            }
            finally
            {
                lock (_poolLock)
                {
                    if (generation == _generation)
                    {
                        _readers.Push(reader);
                        reader = null;
                    }
                }

                reader?.Dispose();
            }
        }
        finally
        {
            _swap.ExitReadLock();
            _readSlots.Release();
        }
    }

    private SqlRunner OpenReader()
    {
        var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = Path, Mode = SqliteOpenMode.ReadOnly, Pooling = false }.ToString());
        connection.Open();
        var runner = new SqlRunner(connection, readOnly: true);
        runner.Exec($"PRAGMA busy_timeout=10000; PRAGMA mmap_size={_settings.ReadMmapBytes.ToString(CultureInfo.InvariantCulture)};");

        // No string or blob a read makes (zeroblob(1e9), randomblob, repeat…) may be longer than a whole result may be.
        raw.sqlite3_limit(runner.Db, raw.SQLITE_LIMIT_LENGTH, (int)Math.Min(int.MaxValue, _settings.MaxResultBytes));
        runner.InstallRunTimeLimit();
        return runner;
    }

    // ---------------------------------------------------------------- internal SQL on the writer

    private object? Meta(string key)
    {
        using var stmt = PrepareInternal(_writer, "SELECT value FROM _infra_meta WHERE key = ?");
        raw.sqlite3_bind_text(stmt, 1, key);
        return raw.sqlite3_step(stmt) == raw.SQLITE_ROW ? SqlRunner.Column(stmt, 0) : null;
    }

    private void SetMeta(string key, object value) => _writer.Run("INSERT OR REPLACE INTO _infra_meta(key, value) VALUES(?, ?)", key, value);

    private string? ScalarText(string sql)
    {
        using var stmt = PrepareInternal(_writer, sql);
        return raw.sqlite3_step(stmt) == raw.SQLITE_ROW ? raw.sqlite3_column_text(stmt, 0).utf8_to_string() : null;
    }

    /// <summary>Runs a statement once (replicated DDL), not kept.</summary>
    private void InternalOnce(string sql, params object?[] args)
    {
        using var stmt = PrepareInternal(_writer, sql);
        SqlRunner.BindAll(stmt, args);
        _writer.StepToEnd(stmt, sql);
    }

    private static sqlite3_stmt PrepareInternal(SqlRunner runner, string sql)
    {
        var rc = raw.sqlite3_prepare_v2(runner.Db, sql, out var stmt);
        if (rc != raw.SQLITE_OK)
        {
            stmt?.Dispose();
            throw new SqliteException($"{sql}: {runner.Message()}", rc);
        }

        return stmt;
    }

    private void CloseConnections()
    {
        lock (_poolLock)
        {
            _generation++;
            while (_readers.TryPop(out var reader))
            {
                reader.Dispose();
            }
        }

        _writer.Dispose();
        SqliteConnection.ClearAllPools();
        lock (_walLock)
        {
            _wal?.Dispose();
            _wal = null;
        }
    }

    public void Dispose()
    {
        _swap.EnterWriteLock();
        try
        {
            CloseConnections();
        }
        finally
        {
            _swap.ExitWriteLock();
        }
    }
}
