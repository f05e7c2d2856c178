using System.Globalization;
using System.Diagnostics;
using System.Text.Json;
using Infra.Client.Data;
using Infra.Core.Placement;
using Infra.ShardRouter.Routing;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Infra.ShardRouter.Placement;

/// <summary>
/// Online resharding. Adding a shard gives it the schema of the others and queues the slots it wins
/// under rendezvous hashing; removing one marks it draining and queues its slots. A background loop
/// moves one slot at a time: it copies the slot's rows of every registered table (selected on the source
/// with <c>infra_slot(shardKey, slots)</c>, in one snapshot at an LSN) to the destination while the
/// slot's writes go on, catches up from the source's replication log (rows changed since that LSN,
/// re-read, and keys that left the slot), then holds the slot's writes at its gate only for the last
/// small delta, flips the slot in the map (persisted), opens the gate and deletes the rows from the
/// source. Fan-outs wait for the whole move (the destination holds copies before it owns them). When
/// the log no longer holds the delta, or the source failed over meanwhile, the slot is copied again
/// whole with its writes held. Other slots are served throughout. A draining shard leaves the map once
/// it owns nothing.
/// </summary>
internal sealed partial class Resharder(Router router, ILogger<Resharder> logger) : BackgroundService
{
    private readonly SemaphoreSlim _wake = new(0);
    private readonly Lock _lock = new();
    private string? _current;
    private string? _lastError;
    private int _moved;
    private long _caughtUp;
    private double _lastHeldMs;

    /// <summary>Catch-up rounds with the slot's writes flowing before they are held for the last changes.</summary>
    private const int MaxCatchUpRounds = 5;

    /// <summary>A delta this small is copied with the slot's writes held.</summary>
    private const int SmallDelta = 100;

    /// <summary>Cleanups that failed, and when to try each again (a shard that is down must not stall the rest).</summary>
    private readonly Dictionary<SlotCleanup, long> _cleanupRetryAt = [];

    /// <summary>Slots whose last moves failed: how many times in a row, and when to try again (Environment.TickCount64).</summary>
    private readonly Dictionary<int, (int Failures, long RetryAt)> _slotRetryAt = [];

    /// <summary>Shards (with the tables and slot count) whose slot indexes exist (<see cref="EnsureSlotIndexesAsync"/>).</summary>
    private readonly HashSet<string> _indexed = [];
    private readonly Dictionary<string, long> _indexFailedAt = [];

    private static readonly TimeSpan CleanupBackoff = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Slots this router closed on a source for a move that then failed, and could not open there again
    /// (the source did not answer), and slots found closed on their owner with no move holding them
    /// (<see cref="FindStrayClosedSlots"/>), with when to try each again. The source refuses the slot's writes
    /// meanwhile; a later attempt of the move may never close and reopen it (its destination is down, or
    /// no longer wanted), so the reopen is retried on its own until it succeeds or the slot lives elsewhere.
    /// </summary>
    private readonly Dictionary<SlotOnShard, PendingReopen> _reopens = [];

    private static readonly TimeSpan ReopenBackoff = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Slots the probes saw closed on the master of the shard that owns them, with when each was first
    /// seen so (Environment.TickCount64); see <see cref="FindStrayClosedSlots"/>.
    /// </summary>
    private readonly Dictionary<SlotOnShard, long> _strayClosed = [];

    /// <summary>Slots whose owner is not where rendezvous hashing wants them.</summary>
    public int Pending
    {
        get
        {
            var map = router.Map;
            var target = map.TargetOwners();
            return Enumerable.Range(0, map.Slots).Count(s => map.Owners[s] != target[s]);
        }
    }

    public async Task<int> AddShardAsync(ShardInfo shard)
    {
        if (router.Map.Find(shard.Id) is not null)
        {
            throw new RouterException("Conflict", $"shard {shard.Id} is already in the map", 409);
        }

        DataNodeStatus status;
        try
        {
            status = await router.Pool[shard.Master].CallAsync(c => c.StatusAsync(), router.Options.RequestTimeout);
        }
        catch (DataException ex)
        {
            throw new RouterException("Unavailable", $"the new shard's master {shard.Master} does not answer: {ex.Reason}", 503, retriable: true);
        }

        if (!status.IsMaster)
        {
            throw RouterException.Bad($"{shard.Master} is a {status.Role}, not a master");
        }

        // A shard starts empty: rows of registered tables already there (a node drained once and added back
        // with what a cleanup never deleted) would be returned by every fan-out beside their owners' copies.
        foreach (var table in await TablesOnAsync(shard, router.Map.Tables))
        {
            QueryRows any;
            try
            {
                any = await router.Pool[shard.Master].CallAsync(c => c.QueryAsync($"SELECT 1 FROM {Quote(table.Name)} LIMIT 1"), router.Options.RequestTimeout);
            }
            catch (DataException ex)
            {
                throw new RouterException("Unavailable", $"cannot check {table.Name} on {shard.Master}: {ex.Reason}", 503, retriable: true);
            }

            if (any.Rows.Count > 0)
            {
                throw new RouterException("Conflict", $"{shard.Master} already holds rows of the sharded table {table.Name}: a new shard must start empty", 409);
            }
        }

        // No DDL broadcast runs between the schema copy and the map that makes the shard one it reaches.
        await router.UnderSchemaLockAsync(async () =>
        {
            await CopySchemaAsync(shard with { Epoch = status.Epoch });
            try
            {
                // Checked again under the map's lock: a concurrent add of the same id (the check above is before
                // the calls to the new master) must not replace the shard the first one added.
                await router.UpdateMapAsync(map => map.Find(shard.Id) is null
                    ? map.WithShard(shard with { Epoch = status.Epoch })
                    : throw new RouterException("Conflict", $"shard {shard.Id} is already in the map", 409));
            }
            catch (FormatException ex)
            {
                throw RouterException.Bad(ex.Message);
            }

            return true;
        });

        _wake.Release();
        return Pending;
    }

    public async Task<int> RemoveShardAsync(string id)
    {
        var shard = router.Map.Find(id) ?? throw new RouterException("NotFound", $"no shard {id}", 404);
        try
        {
            await router.UpdateMapAsync(map => map.Find(id) is { } current ? map.WithShard(current with { Draining = true }) : map);
        }
        catch (FormatException ex)
        {
            throw RouterException.Bad(ex.Message);
        }

        _wake.Release();
        return Pending;
    }

    public void WriteStatus(Utf8JsonWriter w)
    {
        w.WriteStartObject("resharding");
        w.WriteNumber("pendingSlots", Pending);
        w.WriteNumber("movedSlots", Volatile.Read(ref _moved));
        w.WriteNumber("pendingCleanups", router.Map.Cleanups.Count); // slots whose old owner still holds their rows
        w.WriteNumber("caughtUpRows", Interlocked.Read(ref _caughtUp)); // rows changed during copies, copied again from the source's log
        lock (_lock)
        {
            w.WriteNumber("pendingReopens", _reopens.Count); // slots a failed move left closed on their owner, reopened on retry
            w.WriteNumber("lastMoveWritesHeldMs", Math.Round(_lastHeldMs, 2));
            if (_current is not null)
            {
                w.WriteString("moving", _current);
            }

            if (_lastError is not null)
            {
                w.WriteString("lastError", _lastError);
            }
        }

        w.WriteEndObject();
    }

    /// <summary>
    /// Creates the slot index of every registered table on a shard once per router process (tables
    /// registered by a router from before the index existed get it at their first move). A shard that
    /// cannot take it now is asked again at a move a minute later at the earliest; the move goes on
    /// without it (slower, same result). On a large table the build may outlast the request timeout:
    /// the node finishes it anyway (holding the shard's writes meanwhile, as any DDL does).
    /// </summary>
    private async Task EnsureSlotIndexesAsync(ShardInfo? shard, ShardMap map, CancellationToken cancellationToken)
    {
        if (shard is null || map.Tables.Count == 0)
        {
            return;
        }

        var key = $"{shard.Id}\n{map.Slots}\n{string.Join('\n', map.Tables.Select(t => t.Name + "." + t.ShardKey))}";
        lock (_lock)
        {
            if (_indexed.Contains(key) || (_indexFailedAt.TryGetValue(key, out var failed) && Environment.TickCount64 - failed < 60_000))
            {
                return; // made, or failed less than a minute ago (a view registered as sharded always fails: not at every move)
            }
        }

        var (_, failures) = await router.CreateSlotIndexesAsync(shard, map.Tables, map.Slots, cancellationToken);
        foreach (var (table, error) in failures)
        {
            LogSlotIndexFailed(logger, table, shard.Id, error.Message);
        }

        lock (_lock)
        {
            if (failures.Count > 0)
            {
                _indexFailedAt[key] = Environment.TickCount64;
            }
            else
            {
                _indexed.Add(key);
            }
        }
    }

    /// <summary>The new shard gets every table and index the first shard has (IF NOT EXISTS).</summary>
    private async Task CopySchemaAsync(ShardInfo shard)
    {
        var source = router.Map.Shards[0];
        QueryRows schema;
        try
        {
            schema = await router.Pool[source.Master].CallAsync(c => c.QueryAsync(
                "SELECT type, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE '\\_infra%' ESCAPE '\\' AND name NOT LIKE 'sqlite%' ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 ELSE 2 END, rowid"),
                router.Options.RequestTimeout);
        }
        catch (DataException ex)
        {
            throw new RouterException("Unavailable", $"cannot read the schema of shard {source.Id}: {ex.Reason}", 503, retriable: true);
        }

        // In parts under a node's --max-statements (one request for a schema of over 1000 objects — each
        // sharded table brings its slot index — was refused, and the shard could never be added); each
        // statement is IF NOT EXISTS, so an add retried after a part failed goes on where it stopped.
        var statements = schema.Rows.Select(r => new object?[] { IfNotExists((string)r[1]!) }).ToList();
        foreach (var part in statements.Chunk(DeleteStatementsPerWrite))
        {
            await router.WriteAsync(shard, [.. part], "ddl", slot: null, CancellationToken.None);
        }
    }

    private static string IfNotExists(string sql)
    {
        foreach (var prefix in new[] { "CREATE TABLE ", "CREATE UNIQUE INDEX ", "CREATE INDEX ", "CREATE VIEW " })
        {
            if (sql.StartsWith(prefix, StringComparison.OrdinalIgnoreCase) && !sql.AsSpan(prefix.Length).TrimStart().StartsWith("IF NOT EXISTS", StringComparison.OrdinalIgnoreCase))
            {
                return sql[..prefix.Length] + "IF NOT EXISTS " + sql[prefix.Length..];
            }
        }

        return sql;
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        router.SettleCleanup = cleanup => CleanUpAsync(router.Map, cleanup, tries: 1);
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                if (!await MoveNextAsync(stoppingToken))
                {
                    await _wake.WaitAsync(TimeSpan.FromSeconds(1), stoppingToken);
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !stoppingToken.IsCancellationRequested)
            {
                // Whatever failed, the loop goes on (it alone moves slots and finishes cleanups); an exception
                // escaping it would stop the host.
                lock (_lock)
                {
                    _lastError = ex.Message;
                }

                if (ex is RouterException or DataException)
                {
                    LogMoveFailed(logger, ex.Message);
                }
                else
                {
                    LogMoveCrashed(logger, ex);
                }

                try
                {
                    await Task.Delay(TimeSpan.FromSeconds(1), stoppingToken);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }
        }
    }

    /// <summary>
    /// Finishes one pending cleanup (rows a moved slot left behind), or else moves one misplaced slot;
    /// false when there is nothing it can do now (and, once every slot is placed, drops drained shards).
    /// Cleanups come first; one that fails (its shard is down) is retried after a back-off while the
    /// others and the moves go on — except that a slot never moves to a shard that still holds stale
    /// rows of it.
    /// </summary>
    public async Task<bool> MoveNextAsync(CancellationToken cancellationToken)
    {
        FindStrayClosedSlots();
        await ReopenPendingAsync(cancellationToken);
        var map = router.Map;
        var now = Environment.TickCount64;
        lock (_lock)
        {
            // Back-offs of cleanups that are gone (done, or their shard left the map) are dropped.
            foreach (var done in _cleanupRetryAt.Keys.Where(c => !map.Cleanups.Contains(c)).ToList())
            {
                _cleanupRetryAt.Remove(done);
            }
        }

        var waitingOwners = new HashSet<string>(StringComparer.Ordinal); // this pass: their replicas lack their copies
        foreach (var cleanup in map.Cleanups)
        {
            lock (_lock)
            {
                if (_cleanupRetryAt.TryGetValue(cleanup, out var at) && now < at)
                {
                    continue;
                }

                if (waitingOwners.Contains(map.OwnerOf(cleanup.Slot).Id))
                {
                    _cleanupRetryAt[cleanup] = now + 250; // the same answer as the one just had
                    continue;
                }
            }

            try
            {
                await CleanUpAsync(map, cleanup);
                LogCleanedUp(logger, cleanup.Slot, cleanup.Shard);
                return true;
            }
            catch (Exception ex) when (ex is RouterException or DataException)
            {
                lock (_lock)
                {
                    // Waiting for a replica to catch up is tried again soon; a shard that is down, after a back-off.
                    var replicating = ex is RouterException { Code: "Replicating" };
                    if (replicating)
                    {
                        waitingOwners.Add(map.OwnerOf(cleanup.Slot).Id);
                    }

                    var backoff = replicating ? TimeSpan.FromMilliseconds(250) : CleanupBackoff;
                    _cleanupRetryAt[cleanup] = now + (long)backoff.TotalMilliseconds;
                    _lastError = ex.Message;
                }

                LogMoveFailed(logger, ex.Message);
            }
        }

        var target = map.TargetOwners();
        var misplaced = Enumerable.Range(0, map.Slots).Where(s => map.Owners[s] != target[s]).ToList();
        int slot;
        lock (_lock)
        {
            // A slot whose move failed waits (1 s, doubling to a minute) while the others move: one slot that
            // cannot move (too many rows for one copy, a conflict) held up every other slot for good.
            slot = misplaced.FirstOrDefault(s => !map.Cleanups.Contains(new SlotCleanup(s, map.Shards[target[s]].Id))
                && !(_slotRetryAt.TryGetValue(s, out var retry) && now < retry.RetryAt), -1);
        }

        if (slot < 0)
        {
            if (misplaced.Count > 0)
            {
                return false; // every remaining move waits for a cleanup on its destination, or its back-off
            }

            // A drained shard leaves only once nothing is left to delete there: leaving with a pending cleanup
            // dropped it, and the rows stayed on that node for good (a fan-out repeats them if it comes back).
            foreach (var drained in map.Shards.Where(s => s.Draining && !map.Cleanups.Any(c => c.Shard == s.Id)).ToList())
            {
                await router.UpdateMapAsync(m => m.Without(drained.Id));
                LogRemoved(logger, drained.Id);
            }

            lock (_lock)
            {
                _current = null;
            }

            return false;
        }

        try
        {
            await MoveAsync(slot, map.Shards[map.Owners[slot]].Id, map.Shards[target[slot]].Id, cancellationToken);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            lock (_lock)
            {
                var failures = _slotRetryAt.TryGetValue(slot, out var last) ? last.Failures + 1 : 1;
                var wait = Math.Min(60_000, 1000L << Math.Min(failures - 1, 10));
                _slotRetryAt[slot] = (failures, Environment.TickCount64 + wait);
            }

            throw;
        }

        lock (_lock)
        {
            _slotRetryAt.Remove(slot);
        }

        return true;
    }

    private async Task MoveAsync(int slot, string fromId, string toId, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            _current = $"slot {slot}: {fromId} -> {toId}";
        }

        var started = Stopwatch.GetTimestamp();
        var map = router.Map;
        var tables = map.Tables.Select(t => new SlotTableName(t.Name, t.ShardKey)).ToList();

        // Only the registered tables the source has are copied: one dropped there (DROP TABLE through
        // /db/schema leaves it registered) has no rows to move, and naming it failed every move for good.
        var copied = (await TablesOnAsync(map.Find(fromId)!, map.Tables)).Select(t => new SlotTableName(t.Name, t.ShardKey)).ToList();
        var to = map.Find(toId)!;
        await EnsureSlotIndexesAsync(map.Find(fromId), map, cancellationToken);
        await EnsureSlotIndexesAsync(to, map, cancellationToken);
        var gate = router.SlotGate(slot);
        var gateClosed = false;
        var sourceClosed = false;
        long heldFrom = 0;

        // This attempt's name for the slot's close on the source: the node records it, and the reopen opens
        // the slot only while that close is the one in force — a reopen delayed past a later close (of a
        // later attempt) changes nothing.
        var hold = $"{router.Store.RouterId}#{Guid.NewGuid().ToString("N")[..12]}";

        // The destination may have closed this slot when it moved away from there before: writes tagged with
        // it must be taken there once it owns the slot again.
        await ChangeSlotAsync(toId, slot, closed: false, cancellationToken);

        // Fan-outs wait for the whole move: until the flip the destination holds copies of rows it does not own yet.
        await router.FanOutGate.CloseAsync(cancellationToken);
        try
        {
            // Until the flip, whatever the copy leaves on the destination is to be deleted: recorded first, so
            // that a move that fails and cannot delete it, or a router that dies mid-copy, leaves a pending
            // cleanup (fan-outs settle it or leave that shard out) instead of rows two shards return.
            var destinationCleanup = new SlotCleanup(slot, toId);
            await router.UpdateMapAsync(m => m.WithCleanup(destinationCleanup));

            // The destination's LSN after the copy's last write. The flip makes it the destination's fan-out
            // floor: reads that must see the slot's rows (fan-outs, session reads holding another shard's
            // token) wait for a replica that has the copy.
            long copiedLsn = 0;
            async Task<long> ApplyToDestinationAsync(SlotRows part, bool replace = false)
            {
                var (statements, lsn) = await ApplyAsync(to, copied, map.Slots, slot, part, cancellationToken, replace);
                copiedLsn = Math.Max(copiedLsn, lsn);
                return statements;
            }

            long rows;
            long caughtUp = 0;
            try
            {
                try
                {
                    // 1. Copy the slot as of an LSN of the source while its writes go on.
                    var copy = await ReadSlotAsync(fromId, copied, map.Slots, slot, since: null, epoch: null, cancellationToken);
                    rows = await ApplyToDestinationAsync(copy, replace: true);

                    // 2. Catch up from the source's log until what is left is small.
                    var at = copy;
                    for (var round = 0; round < MaxCatchUpRounds; round++)
                    {
                        var delta = await ReadSlotAsync(fromId, copied, map.Slots, slot, at.Lsn, copy.Epoch, cancellationToken);
                        caughtUp += await ApplyToDestinationAsync(delta);
                        at = delta;
                        if (delta.Changes <= SmallDelta)
                        {
                            break;
                        }
                    }

                    // 3. Hold the slot's writes (in-flight ones finish first), close the slot on the source (a
                    // write this router gave up on, still queued there, is refused instead of committing after
                    // the last copy) and copy the last changes.
                    await gate.CloseAsync(cancellationToken);
                    gateClosed = true;
                    heldFrom = Stopwatch.GetTimestamp();
                    sourceClosed = true;
                    await ChangeSlotAsync(fromId, slot, closed: true, cancellationToken, hold);
                    var last = await ReadSlotAsync(fromId, copied, map.Slots, slot, at.Lsn, copy.Epoch, cancellationToken);
                    caughtUp += await ApplyToDestinationAsync(last);
                }
                catch (DataException ex) when (ex.Code is "Truncated" or "StaleEpoch")
                {
                    // The source's log no longer holds the changes since the copy, or it failed over (the copy
                    // may hold rows the new master never had): copy the whole slot again with its writes held.
                    LogRecopy(logger, slot, ex.Reason);
                    if (!gateClosed)
                    {
                        await gate.CloseAsync(cancellationToken);
                        gateClosed = true;
                        heldFrom = Stopwatch.GetTimestamp();
                    }

                    sourceClosed = true;
                    await ChangeSlotAsync(fromId, slot, closed: true, cancellationToken, hold);
                    var copy = await ReadSlotAsync(fromId, copied, map.Slots, slot, since: null, epoch: null, cancellationToken);
                    rows = await ApplyToDestinationAsync(copy, replace: true);
                    caughtUp = 0;
                }

                // The slot's gate is closed here (both paths close it). The flip records the cleanup of the
                // source in the same map write; if the delete below fails or this router dies first,
                // MoveNextAsync finishes it later. The tables are checked under the map's lock, so none can be
                // registered between the check and the flip. A flip that fails (the map cannot be saved) leaves
                // the map as it was, and the move is undone below like any other failure.
                await router.UpdateMapAsync(m => CheckTablesUnchanged(m, tables)
                    .WithoutCleanup(destinationCleanup).WithOwner(slot, toId).WithFanOutFloor(toId, copiedLsn) is var flipped
                    && flipped.Find(toId)?.Epoch == to.Epoch
                        ? flipped
                        : throw new RouterException("StaleEpoch", $"{toId} failed over during the move of slot {slot} (its copy may not be on the new master); it is retried", 409, retriable: true));
            }
            catch
            {
                // The slot stays where it was: its traffic goes on at once, and nothing is left behind on
                // the destination, which does not own it (if this delete fails too, the next attempt's
                // first write clears the slot there before copying).
                if (sourceClosed)
                {
                    await ReopenOnSourceAsync(fromId, slot, hold);
                }

                if (gateClosed)
                {
                    gate.Open();
                    gateClosed = false;
                }

                try
                {
                    var cleared = await DeleteSlotAsync(to, map, slot);
                    await router.UpdateMapAsync(m => m.WithoutCleanup(destinationCleanup).WithFanOutFloor(to.Id, cleared)); // before fan-outs resume
                }
                catch (Exception ex) when (ex is RouterException or DataException)
                {
                    // The cleanup stays recorded: MoveNextAsync and fan-outs finish it. The move's own failure is the one reported.
                    LogMoveFailed(logger, $"deleting slot {slot}'s copy from {to.Id} after a failed move: {ex.Message}");
                }

                throw;
            }

            gate.Open();
            gateClosed = false;
            var held = Stopwatch.GetElapsedTime(heldFrom).TotalMilliseconds;
            try
            {
                // The slot has moved; its rows on the source go once the destination's copy is replicated (at
                // once under semi-sync; behind an asynchronous replica the cleanup waits, see MoveNextAsync).
                await CleanUpAsync(router.Map, new SlotCleanup(slot, fromId));
            }
            catch (Exception ex) when (ex is RouterException or DataException)
            {
                // Not a failed move (it used to be reported as one): the cleanup stays recorded, and MoveNextAsync
                // or a fan-out finishes it.
                LogCleanupDeferred(logger, slot, fromId, ex.Message);
            }

            Interlocked.Increment(ref _moved);
            Interlocked.Add(ref _caughtUp, caughtUp);
            lock (_lock)
            {
                _lastHeldMs = held;
            }

            router.Metrics.SlotMoves.Add(1);
            router.Metrics.RowsMoved.Add(rows + caughtUp);
            if (rows + caughtUp > 0)
            {
                LogMoved(logger, slot, fromId, toId, rows, caughtUp, Stopwatch.GetElapsedTime(started).TotalMilliseconds, held);
            }
            else
            {
                LogMovedEmpty(logger, slot, fromId, toId);
            }
        }
        finally
        {
            router.FanOutGate.Open();
            if (gateClosed)
            {
                gate.Open();
            }
        }
    }

    /// <summary>
    /// Closes the slot on the shard's current master to writes tagged with it, naming the close
    /// <paramref name="hold"/>, or opens it again: only while the close named <paramref name="hold"/> is
    /// the one in force, or unconditionally when it is null.
    /// </summary>
    private async Task ChangeSlotAsync(string shardId, int slot, bool closed, CancellationToken cancellationToken, string? hold = null)
    {
        var shard = router.Map.Find(shardId) ?? throw new RouterException("NotFound", $"shard {shardId} left the map during a move", 404);
        await router.Pool[shard.Master].CallAsync(
            c => closed ? c.CloseSlotAsync(slot, shard.Epoch, router.Options.NodeToken, by: hold) : c.OpenSlotAsync(slot, shard.Epoch, router.Options.NodeToken, ifClosedBy: hold),
            router.Options.RequestTimeout, cancellationToken);
    }

    /// <summary>
    /// A failed move gives the slot back to its source's writes. If the source cannot be told (it does not
    /// answer), it refuses the slot's writes (SlotClosed, retriable) until <see cref="ReopenPendingAsync"/>
    /// gets through (a restart of the source opens its slots anyway).
    /// </summary>
    private async Task ReopenOnSourceAsync(string fromId, int slot, string hold)
    {
        try
        {
            await ChangeSlotAsync(fromId, slot, closed: false, CancellationToken.None, hold);
            lock (_lock)
            {
                _reopens.Remove(new SlotOnShard(slot, fromId)); // an earlier failed reopen of it is done too
            }
        }
        catch (Exception ex) when (ex is DataException or RouterException)
        {
            LogReopenFailed(logger, slot, fromId, ex.Message);
            lock (_lock)
            {
                _reopens[new SlotOnShard(slot, fromId)] = new PendingReopen(0, hold); // due at once: the next round of the loop tries again
            }
        }
    }

    /// <summary>
    /// A slot this router closed on the master of the shard that owns it refuses that slot's writes for
    /// nothing once no move holds it, and this runs between this router's moves: a close that reached the
    /// node after the reopen meant to undo it (a close that timed out and its reopen took different
    /// connections), or a move this router was making when it was restarted. One the probes keep reporting
    /// closed by this router (a close named <see cref="MapStore.RouterId"/>#…) for a grace period (three probe intervals, at
    /// least 3 s: a status taken during the last move is stale) is queued for <see cref="ReopenPendingAsync"/>.
    /// A slot another router closed is left alone: its map may say the slot has moved, when this one's does
    /// not know yet.
    /// </summary>
    private void FindStrayClosedSlots()
    {
        var map = router.Map;
        var now = Environment.TickCount64;
        var grace = (long)Math.Max(3000, 3 * router.Options.ProbeInterval.TotalMilliseconds);
        var mine = router.Store.RouterId + "#";
        var seen = new Dictionary<SlotOnShard, string>();
        foreach (var shard in map.Shards)
        {
            if (router.Health.TryGetNode(shard.Master, out var health) && health.Up && health.Status is { IsMaster: true, ClosedBy: { Count: > 0 } closed })
            {
                foreach (var (slot, hold) in closed)
                {
                    if (hold.StartsWith(mine, StringComparison.Ordinal) && slot >= 0 && slot < map.Slots && map.OwnerOf(slot).Id == shard.Id)
                    {
                        seen[new SlotOnShard(slot, shard.Id)] = hold;
                    }
                }
            }
        }

        lock (_lock)
        {
            foreach (var gone in _strayClosed.Keys.Where(k => !seen.ContainsKey(k)).ToList())
            {
                _strayClosed.Remove(gone);
            }

            foreach (var (stray, hold) in seen)
            {
                if (!_strayClosed.TryAdd(stray, now) && now - _strayClosed[stray] >= grace && _reopens.TryAdd(stray, new PendingReopen(0, hold)))
                {
                    LogStrayClosed(logger, stray.Slot, stray.Shard);
                }
            }
        }
    }

    /// <summary>
    /// Opens again the slots failed moves left closed on their sources (those due; one that fails waits
    /// <see cref="ReopenBackoff"/>). One whose slot now lives on another shard is dropped, not opened: the
    /// slot stays closed where it left, as after any move. Runs on the resharding loop, between moves.
    /// </summary>
    private async Task ReopenPendingAsync(CancellationToken cancellationToken)
    {
        List<(SlotOnShard Reopen, string Hold)> due;
        var now = Environment.TickCount64;
        lock (_lock)
        {
            due = [.. _reopens.Where(r => r.Value.Due <= now).Select(r => (r.Key, r.Value.Hold))];
        }

        foreach (var (reopen, hold) in due)
        {
            var map = router.Map;
            if (map.Find(reopen.Shard) is null || map.OwnerOf(reopen.Slot).Id != reopen.Shard)
            {
                lock (_lock)
                {
                    _reopens.Remove(reopen);
                }

                continue;
            }

            try
            {
                await ChangeSlotAsync(reopen.Shard, reopen.Slot, closed: false, cancellationToken, hold);
                lock (_lock)
                {
                    _reopens.Remove(reopen);
                }

                LogReopened(logger, reopen.Slot, reopen.Shard);
            }
            catch (Exception ex) when (ex is DataException or RouterException)
            {
                lock (_lock)
                {
                    _reopens[reopen] = new PendingReopen(Environment.TickCount64 + (long)ReopenBackoff.TotalMilliseconds, hold);
                    _lastError = ex.Message;
                }
            }
        }
    }

    /// <summary>The slot's rows (or their delta since an LSN) from the source's current master.</summary>
    private async Task<SlotRows> ReadSlotAsync(string fromId, List<SlotTableName> tables, int slots, int slot, long? since, long? epoch, CancellationToken cancellationToken)
    {
        if (tables.Count == 0)
        {
            return new SlotRows(since ?? 0, epoch ?? 0, []);
        }

        var from = router.Map.Find(fromId) ?? throw new RouterException("NotFound", $"shard {fromId} left the map during a move", 404);
        return await router.Pool[from.Master].CallAsync(c => c.SlotRowsAsync(tables, slots, slot, since, epoch), router.Options.RequestTimeout, cancellationToken);
    }

    /// <summary>
    /// The map, if its registered tables are those a move copied; a table registered during the copy was
    /// not copied (and the source is cleaned up with the tables registered then), so the move is undone
    /// and retried with it.
    /// </summary>
    private static ShardMap CheckTablesUnchanged(ShardMap map, List<SlotTableName> tables) =>
        map.Tables.Select(t => new SlotTableName(t.Name, t.ShardKey)).SequenceEqual(tables)
            ? map
            : throw new RouterException("Conflict", "the registered tables changed during a slot move; it is retried", 409, retriable: true);

    /// <summary>
    /// Writes a slot copy (or delta) to the destination: rows upserted, keys that left the slot deleted
    /// (only while they are in this slot there), in batches of <see cref="RouterOptions.CopyBatchRows"/>.
    /// A whole copy (<paramref name="replace"/>) first deletes whatever the destination holds of the
    /// slot (an earlier attempt's leftovers), in the same transaction as its first batch. Returns the
    /// statements written (the clearing ones aside) and the destination's LSN after the last batch.
    /// </summary>
    private async Task<(long Statements, long Lsn)> ApplyAsync(ShardInfo to, List<SlotTableName> tables, int slots, int slot, SlotRows copy, CancellationToken cancellationToken, bool replace = false)
    {
        var statements = new List<object?[]>();
        var upserts = new List<(int At, string Table)>();
        var clearing = replace ? tables.Count : 0;
        if (replace)
        {
            statements.AddRange(tables.Select(t => ClearSlot(t.Name, t.ShardKey, slots, slot)));
        }

        foreach (var (table, shardKey) in copy.Tables.Zip(tables))
        {
            if (table.Gone.Count > 0)
            {
                var where = string.Join(" AND ", table.KeyColumns.Select(c => $"{Quote(c)} = ?"));
                var delete = $"DELETE FROM {Quote(table.Name)} WHERE {where} AND infra_slot({Quote(shardKey.ShardKey)}, ?) = ?";
                statements.AddRange(table.Gone.Select(key => (object?[])[delete, .. key, (long)slots, (long)slot]));
            }

            if (table.Rows.Count > 0)
            {
                // A row with the same key (or another unique value) already on the destination is updated
                // only when it is in this slot (an earlier copy); one of another slot is left alone and
                // stops the move below (REPLACE would have deleted it).
                var columns = string.Join(", ", table.Columns.Select(Quote));
                var insert = $"INSERT INTO {Quote(table.Name)} ({columns}) VALUES ({string.Join(", ", table.Columns.Select(_ => "?"))}) " +
                    $"ON CONFLICT DO UPDATE SET {string.Join(", ", table.Columns.Select(c => $"{Quote(c)} = excluded.{Quote(c)}"))} " +
                    $"WHERE infra_slot({Quote(table.Name)}.{Quote(shardKey.ShardKey)}, ?) = ?";
                foreach (var row in table.Rows)
                {
                    upserts.Add((statements.Count, table.Name));
                    statements.Add([insert, .. row, (long)slots, (long)slot]);
                }
            }
        }

        var next = 0;
        long lsn = 0;
        for (var start = 0; start < statements.Count;)
        {
            // At most CopyBatchRows statements, and about CopyBatchBytes of values: 500 rows of 75 KB passed a
            // node's frame limit, and the node closed the connection other writes were pipelined on.
            var count = 0;
            long bytes = 0;
            while (start + count < statements.Count && count < router.Options.CopyBatchRows)
            {
                var size = SizeOf(statements[start + count]);
                if (count > 0 && bytes + size > CopyBatchBytes)
                {
                    break;
                }

                bytes += size;
                count++;
            }

            var chunk = statements.GetRange(start, count);
            var written = await router.WriteAsync(to, chunk, "move", slot: null, cancellationToken);
            lsn = Math.Max(lsn, written.Lsn);
            for (; next < upserts.Count && upserts[next].At < start + chunk.Count; next++)
            {
                if (written.Results[upserts[next].At - start].RowsAffected == 0)
                {
                    throw new RouterException("Conflict",
                        $"slot {slot} cannot move to {to.Id}: a row of {upserts[next].Table} has the key (or a unique value) of a row {to.Id} holds in another slot. " +
                        "Keys of a table whose primary key does not contain the shard key must be unique across shards (e.g. UUIDs, not per-shard autoincrement)", 409);
                }
            }

            start += count;
        }

        return (statements.Count - clearing, lsn);
    }

    /// <summary>Values per write of a slot copy, about (a data node takes requests up to twice its 16 MB --max-request-size, plus framing).</summary>
    private const long CopyBatchBytes = 8L << 20;

    /// <summary>A statement's size in a request, roughly: its text and values.</summary>
    private static long SizeOf(object?[] statement)
    {
        long size = 16;
        foreach (var value in statement)
        {
            size += value switch
            {
                string text => text.Length * 3L,
                byte[] blob => blob.Length,
                _ => 9,
            };
        }

        return size;
    }

    /// <summary>The statement that deletes a slot's rows of one table (through its slot index, see <see cref="SlotIndexSql"/>).</summary>
    private static object?[] ClearSlot(string table, string shardKey, int slots, int slot) =>
        [$"DELETE FROM {Quote(table)} WHERE {ShardKey.SlotSql(shardKey, slots)} = ?", (long)slot];

    /// <summary>
    /// The index on a sharded table's slot, created on every shard when the table is registered and
    /// before a move: without it, copying a slot and deleting it from the shard it left each hash every
    /// row of the table (a move of one of 4,096 slots read the whole table twice, with the deletion
    /// holding the source's writes meanwhile); with it they read the slot's rows only. It is copied to a
    /// new shard with the rest of the schema (its name does not start with "_infra").
    /// </summary>
    internal static string SlotIndexSql(string table, string shardKey, int slots) =>
        $"CREATE INDEX IF NOT EXISTS {Quote(table + "_infra_slot")} ON {Quote(table)}({ShardKey.SlotSql(shardKey, slots)})";

    private static string Quote(string name) => "\"" + name.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    /// <summary>
    /// Deletes the slot's rows from the shard it left (never from its owner), then drops the record — once a
    /// replica of the owner has the owner's copies (<see cref="ShardInfo.FanOutFloor"/>): deleted sooner, the
    /// rows' only copy could be on the owner's master (asynchronous replication, or a replica not yet
    /// registered), and a SIGKILL of it then lost rows every replica of the shard they left still had.
    /// </summary>
    private async Task CleanUpAsync(ShardMap map, SlotCleanup cleanup, int tries = 20, TimeSpan replicationWait = default)
    {
        if (map.Find(cleanup.Shard) is { } shard && map.OwnerOf(cleanup.Slot) is var owner && owner.Id != cleanup.Shard)
        {
            await UntilReplicatedAsync(router.Map.Find(owner.Id) ?? owner, cleanup, replicationWait);
            var lsn = await DeleteSlotAsync(shard, map, cleanup.Slot, tries);
            await router.UpdateMapAsync(m => m.WithoutCleanup(cleanup).WithFanOutFloor(cleanup.Shard, lsn));
            return;
        }

        await router.UpdateMapAsync(m => m.WithoutCleanup(cleanup));
    }

    /// <summary>
    /// Returns once a replica of <paramref name="owner"/> has its fan-out floor on disk, or when it has no
    /// replica that answers and follows its master (then there is no second copy to wait for); else, after
    /// <paramref name="wait"/>, throws a retriable error and the cleanup stays recorded (finished later, or
    /// by a fan-out).
    /// </summary>
    private async Task UntilReplicatedAsync(ShardInfo owner, SlotCleanup cleanup, TimeSpan wait)
    {
        if (owner.Replicas.Count == 0 || owner.FanOutFloor == 0)
        {
            return;
        }

        var deadline = Stopwatch.GetTimestamp() + (long)(wait.TotalSeconds * Stopwatch.Frequency);
        while (true)
        {
            var durable = await Task.WhenAll(owner.Replicas.Select(async replica =>
            {
                try
                {
                    // A replica that is not following (diverged, cut off from its master) would never catch up:
                    // counted as absent, it cannot hold the cleanup — and with it every fan-out — for good.
                    var status = await router.Pool[replica].CallAsync(c => c.StatusAsync(), router.Options.ProbeTimeout);
                    return status.Diverged is null && status.Connected ? status.DurableLsn : (long?)null;
                }
                catch (Exception ex) when (ex is DataException or RouterException or TimeoutException)
                {
                    return null;
                }
            }));
            if (durable.All(d => d is null) || durable.Any(d => d >= owner.FanOutFloor))
            {
                return;
            }

            if (Stopwatch.GetTimestamp() >= deadline)
            {
                throw new RouterException("Replicating",
                    $"slot {cleanup.Slot}'s rows stay on {cleanup.Shard} until a replica of {owner.Id} has its copy (LSN {owner.FanOutFloor}; its replicas have {string.Join(", ", durable.Select(d => d?.ToString(CultureInfo.InvariantCulture) ?? "?"))})",
                    503, retriable: true);
            }

            await Task.Delay(TimeSpan.FromMilliseconds(20));
        }
    }

    /// <summary>
    /// Deletes a slot's rows from a shard (its current master, a few tries); the delete's LSN (0: no
    /// tables), which the caller makes the shard's fan-out floor (<see cref="ShardInfo.FanOutFloor"/>).
    /// </summary>
    private async Task<long> DeleteSlotAsync(ShardInfo shard, ShardMap map, int slot, int tries = 20)
    {
        if (map.Tables.Count == 0)
        {
            return 0;
        }

        // The current master of the shard (it may have failed over meanwhile); a few tries. Only the tables
        // it has: a registered table dropped there made this delete fail for good — a cleanup that never
        // finished, and every fan-out failing with CleanupPending from then on. In parts under the node's
        // statement limit (the router registers more tables than one request may name).
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                var current = router.Map.Find(shard.Id) ?? shard;
                var statements = (await TablesOnAsync(current, map.Tables)).Select(t => ClearSlot(t.Name, t.ShardKey, map.Slots, slot)).ToList();
                long lsn = 0;
                foreach (var part in statements.Chunk(DeleteStatementsPerWrite))
                {
                    lsn = Math.Max(lsn, (await router.WriteAsync(current, [.. part], "move", slot: null, CancellationToken.None)).Lsn);
                }

                return lsn;
            }
            catch (RouterException ex) when (ex.Retriable && attempt + 1 < tries)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(250));
            }
        }
    }

    /// <summary>Statements per write of a slot's deletion or a schema copy: well under a data node's default --max-statements (1000).</summary>
    private const int DeleteStatementsPerWrite = 500;

    /// <summary>
    /// The registered tables that exist on a shard (its master). A table dropped there has no rows of any
    /// slot to copy or delete; one it lacks while the other side has it is a schema mismatch the copy reports.
    /// </summary>
    private async Task<List<TableInfo>> TablesOnAsync(ShardInfo shard, IReadOnlyList<TableInfo> tables)
    {
        if (tables.Count == 0)
        {
            return [];
        }

        QueryRows rows;
        try
        {
            rows = await router.Pool[shard.Master].CallAsync(c => c.QueryAsync("SELECT name FROM sqlite_master WHERE type = 'table'"), router.Options.RequestTimeout);
        }
        catch (DataException ex)
        {
            throw new RouterException("Unavailable", $"cannot read the tables of shard {shard.Id}: {ex.Reason}", 503, retriable: true);
        }

        var present = rows.Rows.Select(r => r[0] as string).OfType<string>().ToHashSet(StringComparer.OrdinalIgnoreCase);
        return [.. tables.Where(t => present.Contains(t.Name))];
    }

    [LoggerMessage(EventId = 720, Level = LogLevel.Information, Message = "Moved slot {Slot} from {From} to {To}: {Rows} rows copied and {CaughtUp} caught up in {Ms:0.0} ms; its writes were held {HeldMs:0.0} ms")]
    private static partial void LogMoved(ILogger logger, int slot, string from, string to, long rows, long caughtUp, double ms, double heldMs);

    [LoggerMessage(EventId = 725, Level = LogLevel.Warning, Message = "Slot {Slot}: the changes since its copy are not available ({Reason}); copying it again with its writes held")]
    private static partial void LogRecopy(ILogger logger, int slot, string reason);

    [LoggerMessage(EventId = 723, Level = LogLevel.Debug, Message = "Moved slot {Slot} from {From} to {To}: no rows")]
    private static partial void LogMovedEmpty(ILogger logger, int slot, string from, string to);

    [LoggerMessage(EventId = 721, Level = LogLevel.Warning, Message = "A slot move failed (it is retried): {Reason}")]
    private static partial void LogMoveFailed(ILogger logger, string reason);

    [LoggerMessage(EventId = 728, Level = LogLevel.Error, Message = "A slot move failed unexpectedly (it is retried)")]
    private static partial void LogMoveCrashed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 733, Level = LogLevel.Information, Message = "Slot {Slot} moved; its rows on {Shard} are deleted later: {Reason}")]
    private static partial void LogCleanupDeferred(ILogger logger, int slot, string shard, string reason);

    [LoggerMessage(EventId = 724, Level = LogLevel.Information, Message = "Deleted the rows slot {Slot} left on {Shard} when it moved away (a cleanup an earlier move did not finish)")]
    private static partial void LogCleanedUp(ILogger logger, int slot, string shard);

    [LoggerMessage(EventId = 726, Level = LogLevel.Warning, Message = "Could not reopen slot {Slot} on {Shard} after a failed move ({Reason}); its writes are refused there until a retry gets through")]
    private static partial void LogReopenFailed(ILogger logger, int slot, string shard, string reason);

    [LoggerMessage(EventId = 731, Level = LogLevel.Warning, Message = "Could not create the slot index of {Table} on {Shard} (its moves read the whole table until it can): {Reason}")]
    private static partial void LogSlotIndexFailed(ILogger logger, string table, string shard, string reason);

    [LoggerMessage(EventId = 729, Level = LogLevel.Warning, Message = "Slot {Slot} is closed on {Shard}, which owns it, with no move holding it; opening it")]
    private static partial void LogStrayClosed(ILogger logger, int slot, string shard);

    [LoggerMessage(EventId = 727, Level = LogLevel.Information, Message = "Reopened slot {Slot} on {Shard}, which a failed move had left closed")]
    private static partial void LogReopened(ILogger logger, int slot, string shard);

    /// <summary>A slot on one shard.</summary>
    private readonly record struct SlotOnShard(int Slot, string Shard);

    /// <summary>A reopen to try at <paramref name="Due"/> (Environment.TickCount64), of the close named <paramref name="Hold"/>.</summary>
    private readonly record struct PendingReopen(long Due, string Hold);

    [LoggerMessage(EventId = 722, Level = LogLevel.Warning, Message = "Shard {Shard} is drained and left the map")]
    private static partial void LogRemoved(ILogger logger, string shard);
}
