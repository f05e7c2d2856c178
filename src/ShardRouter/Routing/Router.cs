using System.Diagnostics;
using Infra.Client.Data;
using Infra.ShardRouter.Failover;
using Infra.ShardRouter.Placement;
using Microsoft.Extensions.Logging;

namespace Infra.ShardRouter.Routing;

/// <summary>
/// Routes keyed SQL: key → slot → shard; writes to the shard's master (with its epoch, which the node
/// checks: the fence), reads to a replica in rotation (least in flight), to one that has applied the
/// client's session token, or to the master. Keyless reads fan out to every shard and merge; DDL goes
/// to every shard in order. Holds the current shard map and publishes changes atomically (persisted
/// first). Slot moves and fan-outs meet at gates so a slot changing owner is never read or written half-way.
/// </summary>
internal sealed partial class Router : IAsyncDisposable
{
    private readonly SemaphoreSlim _mapLock = new(1, 1);

    /// <summary>
    /// Held by a DDL broadcast and by adding a shard (schema copy, then the map): otherwise a broadcast that
    /// took the shard list before the add, and reached the first shard after the new one copied its schema
    /// from there, left the new shard without that table or index for good.
    /// </summary>
    private readonly SemaphoreSlim _schemaLock = new(1, 1);
    private readonly Gate[] _slotGates;
    private readonly Gate _fanOuts = new();
    private readonly ILogger _logger;
    private volatile ShardMap _map;
    private int _roundRobin;

    public Router(RouterOptions options, RouterMetrics metrics, ILogger<Router> logger)
    {
        Options = options;
        Metrics = metrics;
        _logger = logger;
        Store = new MapStore(options.DataDir);
        _map = Store.Load(options.ShardsFile);
        _slotGates = [.. Enumerable.Range(0, _map.Slots).Select(_ => new Gate())];
        Pool = new NodePool(options.ConnectionsPerNode, options.ConnectTimeout);
        metrics.Meter.CreateObservableGauge("infra.router.map.version", () => _map.Version, description: "Version of the shard map in use");
        metrics.Meter.CreateObservableGauge("infra.router.shard.slots", () => Map.SlotCounts().Select((n, i) => new System.Diagnostics.Metrics.Measurement<int>(n, new KeyValuePair<string, object?>("shard", Map.Shards[i].Id))), description: "Slots each shard owns");
    }

    public RouterOptions Options { get; }

    public RouterMetrics Metrics { get; }

    public MapStore Store { get; }

    public NodePool Pool { get; }

    public HealthBook Health { get; } = new();

    public ShardMap Map => _map;

    /// <summary>
    /// Deletes the rows a moved slot left on its old shard and drops the record, one try (set by the
    /// <see cref="Resharder"/>). A fan-out runs the pending ones of the shards it asks first.
    /// </summary>
    public Func<SlotCleanup, Task>? SettleCleanup { get; set; }

    /// <summary>
    /// Changes the map: persisted durably, then published. Changes are serialised. A map that could not
    /// replace the stored one is not published (a retriable <see cref="RouterException"/>, Unavailable); one
    /// that replaced it but whose directory fsync failed is published (a restart reads it) and logged.
    /// </summary>
    public async Task<ShardMap> UpdateMapAsync(Func<ShardMap, ShardMap> change)
    {
        await _mapLock.WaitAsync();
        try
        {
            var next = change(_map);
            if (!ReferenceEquals(next, _map))
            {
                IOException? unsynced;
                try
                {
                    unsynced = Store.Save(next);
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                    // The file still holds the old map, and so does memory: nothing may act on a change a
                    // restart would forget.
                    throw new RouterException("Unavailable", $"cannot save the shard map to {Store.Path}: {ex.Message}", 503, retriable: true);
                }

                // Renamed in place but its directory not fsync'd: a restart reads the new map, so it is the
                // one to act on (a caller that undid the change would leave the file saying otherwise).
                _map = next;
                if (unsynced is not null)
                {
                    LogMapNotSynced(_logger, Store.Path, unsynced.Message);
                }
            }

            return next;
        }
        finally
        {
            _mapLock.Release();
        }
    }

    public Gate SlotGate(int slot) => _slotGates[slot];

    public Gate FanOutGate => _fanOuts;

    public int SlotOfKey(object? key)
    {
        if (key is null)
        {
            throw RouterException.Bad("\"key\" is required: the shard key of the rows the request touches");
        }

        return key is string or long ? _map.SlotOf(key) : throw RouterException.Bad("\"key\" must be a string or an integer");
    }

    // ---------------------------------------------------------------- writes

    public async Task<ExecuteReply> ExecuteAsync(object? key, IReadOnlyList<object?[]> statements, CancellationToken cancellationToken)
    {
        var slot = SlotOfKey(key);
        using var pass = await _slotGates[slot].EnterAsync(cancellationToken);
        var shard = _map.OwnerOf(slot);
        var outcome = await WriteAsync(shard, statements, "write", slot, cancellationToken);
        return new ExecuteReply(outcome, shard.Id);
    }

    /// <summary>
    /// Statements to one shard's master, with the shard's epoch, and for a keyed write its slot: the master
    /// refuses it if the slot has been closed there for a move (<see cref="Placement.Resharder"/>), so a write
    /// that reaches it late cannot commit behind the move's last copy.
    /// </summary>
    public async Task<ExecuteOutcome> WriteAsync(ShardInfo shard, IReadOnlyList<object?[]> statements, string kind, int? slot, CancellationToken cancellationToken)
    {
        if (Health.Shard(shard.Id).FailingOver)
        {
            throw FailingOver(shard.Id);
        }

        var started = Stopwatch.GetTimestamp();
        try
        {
            // A move's statements (a slot's rows copied in, or deleted from the shard it left by a scan of
            // the whole table) are the router's own: no run-time limit on the node, whatever their size.
            var maxTime = kind == "move" ? TimeSpan.Zero : (TimeSpan?)null;
            var outcome = await Pool[shard.Master].CallAsync(c => c.ExecuteAsync(statements, shard.Epoch, slot, maxTime), Options.RequestTimeout, inline: kind == "write", cancellationToken);
            Metrics.Request(shard.Id, kind, true, Stopwatch.GetElapsedTime(started).TotalSeconds);
            return outcome;
        }
        catch (DataException ex)
        {
            Metrics.Request(shard.Id, kind, false, Stopwatch.GetElapsedTime(started).TotalSeconds);
            throw RouterException.From(ex, shard.Id, shard.Master, write: true);
        }
    }

    public static RouterException FailingOver(string shard) =>
        new("FailingOver", $"shard {shard} is failing over to a new master; retry shortly", 503, retriable: true);

    // ---------------------------------------------------------------- reads

    /// <summary>Results with more rows than this are turned into an answer on the thread pool, not on a socket thread.</summary>
    public const int InlineResultRows = 256;

    /// <summary>
    /// A read. Called by both APIs on the socket thread that read the request: a keyed read goes on
    /// there (its node's answer too) unless its result is large; a fan-out leaves it first (it waits on
    /// every shard and merges).
    /// </summary>
    public async Task<QueryReply> QueryAsync(QueryRequest request, CancellationToken cancellationToken)
    {
        if (request.HasKey)
        {
            var slot = SlotOfKey(request.Key);
            using var pass = await _slotGates[slot].EnterAsync(cancellationToken);
            var shard = _map.OwnerOf(slot);
            var (rows, node) = await QueryShardAsync(shard, request, cancellationToken);
            var merged = Merge.Rows(rows.Columns, [rows.Rows], request.OrderBy, request.Limit);
            if (merged.Count > InlineResultRows)
            {
                await Task.Yield();
            }

            return new QueryReply(rows.Columns, merged, [new ShardAnswer(shard.Id, node, rows.Lsn, rows.Rows.Count)], []);
        }

        await Task.Yield();
        return await FanOutAsync(request, cancellationToken);
    }

    private async Task<QueryReply> FanOutAsync(QueryRequest request, CancellationToken cancellationToken)
    {
        using var pass = await _fanOuts.EnterAsync(cancellationToken);
        var unsettled = _map.Cleanups.Count == 0 ? [] : await SettleCleanupsAsync(_map);
        var shards = _map.Shards; // after the cleanups: the fan-out floors of their deletes are in it
        var tasks = shards.Select(async shard =>
        {
            if (unsettled.Contains(shard.Id))
            {
                return (shard.Id, Result: default, Error: new RouterException("CleanupPending",
                    $"shard {shard.Id} still holds the rows of a slot that moved away and they could not be deleted now: its answer would repeat rows of another shard", 503, retriable: true));
            }

            try
            {
                return (shard.Id, Result: await QueryShardAsync(shard, request, cancellationToken), Error: (RouterException?)null);
            }
            catch (RouterException ex) when (ex.Status >= 500)
            {
                return (shard.Id, Result: default((QueryRows, string)), Error: ex);
            }
        }).ToList();
        var results = await Task.WhenAll(tasks);
        var failed = results.Where(r => r.Error is not null).Select(r => new ShardFailure(r.Id, r.Error!.Code, r.Error.Message)).ToList();
        if (failed.Count > 0 && (!request.AllowPartial || failed.Count == results.Length))
        {
            Metrics.FanOuts.Add(1, new KeyValuePair<string, object?>("outcome", "failed"));
            throw new RouterException("ShardsFailed", $"{failed.Count} of {results.Length} shards failed: {string.Join("; ", failed.Select(f => $"{f.Shard}: {f.Error}"))}", 503, retriable: true, failed);
        }

        var ok = results.Where(r => r.Error is null).ToList();
        var columns = ok[0].Result.Item1.Columns;
        foreach (var (id, (rows, _), _) in ok)
        {
            if (rows.Columns.Count != columns.Count)
            {
                throw new RouterException("SchemaMismatch", $"shard {id} returns {rows.Columns.Count} columns, shard {ok[0].Id} {columns.Count}: the shards' schemas differ", 500);
            }
        }

        var merged = Merge.Rows(columns, [.. ok.Select(r => r.Result.Item1.Rows)], request.OrderBy, request.Limit);
        Metrics.FanOuts.Add(1, new KeyValuePair<string, object?>("outcome", failed.Count > 0 ? "partial" : "ok"));
        return new QueryReply(columns, merged, [.. ok.Select(r => new ShardAnswer(r.Id, r.Result.Item2, r.Result.Item1.Lsn, r.Result.Item1.Rows.Count))], failed);
    }

    /// <summary>
    /// Runs the pending cleanups (rows slots left behind when they moved away, whose delete failed):
    /// a shard that still holds such rows would answer a fan-out with rows another shard also returns.
    /// The shards whose cleanups could not be finished now.
    /// </summary>
    private async Task<HashSet<string>> SettleCleanupsAsync(ShardMap map)
    {
        if (SettleCleanup is not { } settle)
        {
            return [.. map.Cleanups.Select(c => c.Shard)]; // nothing runs cleanups here
        }

        var failed = await Task.WhenAll(map.Cleanups.GroupBy(c => c.Shard).Select(async cleanups =>
        {
            foreach (var cleanup in cleanups)
            {
                try
                {
                    await settle(cleanup);
                }
                catch (Exception ex) when (ex is RouterException or DataException)
                {
                    LogCleanupPending(_logger, cleanup.Slot, cleanup.Shard, ex.Message);
                    return cleanups.Key;
                }
            }

            return null;
        }));
        return [.. failed.OfType<string>()];
    }

    /// <summary>One shard's part of a read, on the node the consistency level allows.</summary>
    private async Task<(QueryRows Rows, string Node)> QueryShardAsync(ShardInfo shard, QueryRequest request, CancellationToken cancellationToken)
    {
        // Every read of a shard waits for a node at its fan-out floor, its LSN after the last copy that moved
        // a slot in and the last delete of one that left. Below it a replica lacks rows the shard owns: a
        // fan-out would miss them, a keyed read (any consistency) would answer "absent" for a row that was
        // never deleted, and a session read would miss the user's own write — made here or on another shard,
        // or made here, moved away and back (its token then is below the copy that brought it back).
        var minLsn = shard.FanOutFloor;
        if (request.Consistency == Consistency.Session)
        {
            foreach (var token in request.Tokens)
            {
                if (token.Shard == shard.Id)
                {
                    minLsn = Math.Max(minLsn, token.Lsn);
                }
            }
        }

        if (request.Consistency != Consistency.Strong && PickReplica(shard, minLsn) is { } replica)
        {
            var started = Stopwatch.GetTimestamp();
            try
            {
                // A session read still asks the replica to check the LSN itself: the probe may be stale.
                var rows = await Pool[replica].CallAsync(c => c.QueryAsync(request.Sql, request.Parameters, minLsn > 0 ? minLsn : null, minLsn > 0 ? 100 : null), Options.RequestTimeout,
                    inline: request.HasKey, cancellationToken);
                Metrics.Request(shard.Id, "read", true, Stopwatch.GetElapsedTime(started).TotalSeconds);
                return (rows, replica);
            }
            catch (DataException ex) when (ex.Code is not ("BadRequest" or "SqlError" or "NotAllowed"))
            {
                // The replica fell behind or away: the master answers instead.
                Metrics.Request(shard.Id, "read", false, Stopwatch.GetElapsedTime(started).TotalSeconds);
            }
            catch (DataException ex)
            {
                Metrics.Request(shard.Id, "read", false, Stopwatch.GetElapsedTime(started).TotalSeconds);
                throw RouterException.From(ex, shard.Id, replica, write: false);
            }
        }

        if (Health.Shard(shard.Id).FailingOver)
        {
            throw FailingOver(shard.Id);
        }

        var begun = Stopwatch.GetTimestamp();
        try
        {
            var rows = await Pool[shard.Master].CallAsync(c => c.QueryAsync(request.Sql, request.Parameters), Options.RequestTimeout, inline: request.HasKey, cancellationToken);
            Metrics.Request(shard.Id, "read", true, Stopwatch.GetElapsedTime(begun).TotalSeconds);
            return (rows, shard.Master);
        }
        catch (DataException ex)
        {
            Metrics.Request(shard.Id, "read", false, Stopwatch.GetElapsedTime(begun).TotalSeconds);
            throw RouterException.From(ex, shard.Id, shard.Master, write: false);
        }
    }

    /// <summary>The replica in rotation with the fewest requests in flight (ties taken in turn).</summary>
    private string? PickReplica(ShardInfo shard, long minLsn)
    {
        var replicas = shard.Replicas;
        if (replicas.Count == 0)
        {
            return null;
        }

        var maxLag = (long)Options.MaxReplicaLag.TotalMilliseconds;
        var start = (int)((uint)Interlocked.Increment(ref _roundRobin) % (uint)replicas.Count);
        string? best = null;
        var bestLoad = int.MaxValue;
        for (var i = 0; i < replicas.Count; i++)
        {
            var address = replicas[(start + i) % replicas.Count];
            if (Health.InRotation(address, minLsn, maxLag) && Pool[address].InFlight is var load && load < bestLoad)
            {
                best = address;
                bestLoad = load;
            }
        }

        return best;
    }

    // ---------------------------------------------------------------- DDL

    /// <summary>DDL to every shard's master, one shard after another, then the sharded tables registered.</summary>
    /// <summary>Runs <paramref name="work"/> alone among DDL broadcasts and shard adds (see <see cref="_schemaLock"/>).</summary>
    public async Task<T> UnderSchemaLockAsync<T>(Func<Task<T>> work, CancellationToken cancellationToken = default)
    {
        await _schemaLock.WaitAsync(cancellationToken);
        try
        {
            return await work();
        }
        finally
        {
            _schemaLock.Release();
        }
    }

    public Task<IReadOnlyList<SchemaOutcome>> SchemaAsync(IReadOnlyList<object?[]> statements, IReadOnlyList<TableInfo> tables, CancellationToken cancellationToken) =>
        UnderSchemaLockAsync(() => BroadcastSchemaAsync(statements, tables, cancellationToken), cancellationToken);

    private async Task<IReadOnlyList<SchemaOutcome>> BroadcastSchemaAsync(IReadOnlyList<object?[]> statements, IReadOnlyList<TableInfo> tables, CancellationToken cancellationToken)
    {
        var outcomes = new List<SchemaOutcome>();
        foreach (var shard in _map.Shards)
        {
            try
            {
                var outcome = await WriteAsync(shard, statements, "ddl", slot: null, cancellationToken);
                outcomes.Add(new SchemaOutcome(shard.Id, true, outcome.Lsn, null, null));
            }
            catch (RouterException ex)
            {
                outcomes.Add(new SchemaOutcome(shard.Id, false, 0, ex.Code, ex.Message));
            }
        }

        if (tables.Count > 0 && outcomes.FirstOrDefault(o => o.Ok) is { } done)
        {
            var shard = _map.Find(done.Shard)!;
            foreach (var table in tables)
            {
                QueryRows columns;
                try
                {
                    columns = await Pool[shard.Master].CallAsync(c => c.QueryAsync($"SELECT * FROM \"{table.Name.Replace("\"", "\"\"", StringComparison.Ordinal)}\" LIMIT 0"), Options.RequestTimeout, cancellationToken);
                }
                catch (DataException ex)
                {
                    throw new RouterException("BadRequest", $"table {table.Name} cannot be registered: {ex.Reason}", 400);
                }

                if (!columns.Columns.Contains(table.ShardKey, StringComparer.OrdinalIgnoreCase))
                {
                    throw new RouterException("BadRequest", $"table {table.Name} has no column {table.ShardKey} (columns: {string.Join(", ", columns.Columns)})", 400);
                }
            }

            // Each sharded table's slot index (what a slot move selects and deletes by), on every shard
            // the DDL reached, one table at a time (one that cannot be indexed, a view, spoils no other).
            for (var i = 0; i < outcomes.Count; i++)
            {
                if (!outcomes[i].Ok || _map.Find(outcomes[i].Shard) is not { } target)
                {
                    continue;
                }

                // The schema itself is in place either way; moves of a table without its index read it
                // whole (the resharder tries again before a move).
                var (lsn, failures) = await CreateSlotIndexesAsync(target, tables, _map.Slots, cancellationToken);
                outcomes[i] = outcomes[i] with
                {
                    Lsn = Math.Max(outcomes[i].Lsn, lsn),
                    Warning = failures.Count == 0 ? null : string.Join("; ", failures.Select(f => $"the slot index of {f.Table} could not be created ({f.Error.Code}): {f.Error.Message}")),
                };
            }

            await UpdateMapAsync(map => map.WithTables(tables));
        }

        return outcomes;
    }

    /// <summary>
    /// Each table's slot index (<see cref="Placement.Resharder.SlotIndexSql"/>) on one shard, one table
    /// at a time: one that cannot be indexed (a view registered as sharded) spoils no other. Returns the
    /// shard's LSN after the last and the tables that failed.
    /// </summary>
    public async Task<(long Lsn, List<(string Table, RouterException Error)> Failures)> CreateSlotIndexesAsync(
        ShardInfo shard, IEnumerable<TableInfo> tables, int slots, CancellationToken cancellationToken)
    {
        long lsn = 0;
        var failures = new List<(string, RouterException)>();
        foreach (var table in tables)
        {
            try
            {
                lsn = Math.Max(lsn, (await WriteAsync(shard, [[Placement.Resharder.SlotIndexSql(table.Name, table.ShardKey, slots)]], "ddl", slot: null, cancellationToken)).Lsn);
            }
            catch (RouterException ex)
            {
                failures.Add((table.Name, ex));
            }
        }

        return (lsn, failures);
    }

    public async ValueTask DisposeAsync() => await Pool.DisposeAsync();

    [LoggerMessage(EventId = 710, Level = LogLevel.Error, Message = "The shard map was written to {Path} but its directory could not be fsync'd ({Reason}); going on with it (a machine crash might bring back the one before)")]
    private static partial void LogMapNotSynced(ILogger logger, string path, string reason);

    [LoggerMessage(EventId = 709, Level = LogLevel.Warning, Message = "A fan-out leaves out shard {Shard}: it still holds rows of slot {Slot}, which moved away, and deleting them failed ({Reason})")]
    private static partial void LogCleanupPending(ILogger logger, int slot, string shard, string reason);
}
