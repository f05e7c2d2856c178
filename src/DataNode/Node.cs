using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Infra.Core.Threading;
using Infra.DataNode.Replication;
using Infra.DataNode.Storage;
using Microsoft.Extensions.Logging;

namespace Infra.DataNode;

internal enum NodeRole
{
    Master,
    Replica,
}

/// <summary>The answer to a write: per-statement results, the LSN to present for read-your-writes, and the epoch.</summary>
internal sealed record WriteAnswer(StatementResult[] Results, long Lsn, long Epoch);

/// <summary>
/// A data node: its database, its role and epoch, the writer thread that owns the write connection
/// (group commit on the master, batched apply on a replica), the replication hub (master side) and
/// follower (replica side), and the waits for read-your-writes and semi-sync.
/// </summary>
internal sealed partial class Node : IAsyncDisposable
{
    public const string MeterName = "Infra.DataNode";

    private readonly ConcurrentQueue<Job> _jobs = new();
    private readonly WakeSignal _jobArrived = new();
    private int _closed;
    private readonly Thread _writerThread;
    private readonly ILogger _logger;
    private readonly ILoggerFactory _loggerFactory;
    private readonly TimeProvider _time;
    private readonly Counter<long> _writes;
    private readonly Counter<long> _reads;
    private readonly Counter<long> _errors;
    private readonly Counter<long> _applied;
    private readonly Histogram<double> _commitSeconds;
    private readonly Histogram<int> _groupSize;
    private readonly Lock _roleLock = new();

    // Promote, claim and follow run one at a time: two at once (two routers, or an operator beside the
    // router) interleaved their follower stops and role changes — a master with a follower running, or a
    // stored role the node did not act on.
    private readonly SemaphoreSlim _transitions = new(1, 1);
    private int _pendingWrites;
    private volatile NodeRole _role;
    private string? _master;
    private long _fencedBy;
    private volatile Follower? _follower;
    private bool _disposed;

    public Node(NodeOptions options, TimeProvider time, IMeterFactory meterFactory, ILoggerFactory loggerFactory)
    {
        Options = options;
        _time = time;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger<Node>();
        Db = NodeDatabase.Open(options.DataDir, options.DatabaseSettings, time);
        Applied = new ProgressWaiters(Db.Lsn);
        Flusher = new CommitFlusher(Db, _logger);
        Hub = new ReplicationHub(this, loggerFactory.CreateLogger<ReplicationHub>(), new Api.NativeApi(this, loggerFactory.CreateLogger<Api.NativeApi>()));
        var meter = meterFactory.Create(MeterName);
        _writes = meter.CreateCounter<long>("infra.datanode.writes", description: "Write requests acknowledged");
        _reads = meter.CreateCounter<long>("infra.datanode.reads", description: "Queries answered");
        _errors = meter.CreateCounter<long>("infra.datanode.errors", description: "Requests refused, by error code");
        _applied = meter.CreateCounter<long>("infra.datanode.replication.applied", description: "Replicated entries applied (replica)");
        _commitSeconds = meter.CreateHistogram("infra.datanode.commit.duration", "s", "Time from a write's arrival to its acknowledgement (commit and, under semi-sync, replica confirmation)",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5] });
        _groupSize = meter.CreateHistogram("infra.datanode.commit.group_size", description: "Write requests committed together (one fsync)",
            advice: new InstrumentAdvice<int> { HistogramBucketBoundaries = [1, 2, 4, 8, 16, 32, 64, 128, 256] });
        meter.CreateObservableGauge("infra.datanode.lsn", () => Db.Lsn, description: "Last LSN committed (master) or applied (replica)");
        meter.CreateObservableGauge("infra.datanode.durable_lsn", () => Durable.Value, description: "Last LSN on disk: what a master ships and a replica acknowledges");
        meter.CreateObservableCounter("infra.datanode.wal.syncs", () => Flusher.Syncs, description: "WAL fsyncs (each covers every commit made before it began)");
        meter.CreateObservableGauge("infra.datanode.epoch", () => Db.Epoch, description: "The node's epoch");
        meter.CreateObservableGauge("infra.datanode.replication.lag.entries", Hub.ObserveLagEntries, description: "Entries committed on the master and not yet confirmed, per replica");
        meter.CreateObservableGauge("infra.datanode.replication.lag.ms", Hub.ObserveLagMs, "ms", "Age of the oldest entry not yet confirmed, per replica");

        _writerThread = new Thread(WriterLoop) { IsBackground = true, Name = "datanode-writer" };
        _writerThread.Start();

        var role = options.Role;
        var epoch = Math.Max(Db.Epoch, role == NodeRole.Master ? 1 : 0);
        var stored = role == NodeRole.Master ? "master" : "replica";
        if (epoch != Db.Epoch || Db.StoredRole != stored)
        {
            if (Db.StoredRole.Length > 0 && Db.StoredRole != stored)
            {
                LogRoleChanged(_logger, Db.StoredRole, stored, Db.Epoch);
            }

            Db.SetEpochAndRole(epoch, stored);
            Flusher.SyncNow();
        }

        _role = role;
        _master = options.Master;
        Hub.LoadRegistry(Db.RegisteredReplicas);
        if (role == NodeRole.Replica && options.Master is { } master)
        {
            StartFollower(master, reclone: false);
        }
    }

    public NodeOptions Options { get; }

    public NodeDatabase Db { get; }

    public ReplicationHub Hub { get; }

    /// <summary>The LSN applied (replica) or committed (master), with waits for read-your-writes.</summary>
    public ProgressWaiters Applied { get; }

    /// <summary>
    /// Makes commits durable off the writer thread; its <see cref="CommitFlusher.Durable"/> LSN is what
    /// a master ships and a replica acknowledges.
    /// </summary>
    public CommitFlusher Flusher { get; }

    /// <summary>The LSN on disk (see <see cref="CommitFlusher"/>), with waits.</summary>
    public ProgressWaiters Durable => Flusher.Durable;

    public NodeRole Role => _role;

    public string? Master => _master;

    public long FencedBy => Interlocked.Read(ref _fencedBy);

    public string? Diverged => _follower?.Diverged;

    /// <summary>
    /// Why this node should not be in rotation, or null: it diverged from its master, its WAL fsync
    /// failed, or (a replica) it cannot apply what its master sends — its storage refuses (a full disk,
    /// a database locked by another process): it would serve ever older data. A master that is down
    /// does not count; a replica that lost its master still serves what it has, as Redis's replicas do.
    /// </summary>
    public string? NotReadyReason => Diverged is { } diverged ? "diverged: " + diverged
        : Flusher.Failure is { } failure ? "a WAL fsync failed (restart the node): " + failure.Message
        : _follower?.ApplyFailure is { } apply ? "cannot apply the master's entries here: " + apply
        : null;

    public Follower? Follower => _follower;

    public TimeProvider Time => _time;

    // ---------------------------------------------------------------- writes

    public async Task<WriteAnswer> ExecuteAsync(WriteCommand command, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        CheckWritable();
        if (Interlocked.Increment(ref _pendingWrites) > Options.MaxPendingWrites)
        {
            Interlocked.Decrement(ref _pendingWrites);
            throw new NodeException(NodeErrorCode.Busy, $"{Options.MaxPendingWrites} writes are already waiting; retry");
        }

        WriteOutcome outcome;
        try
        {
            var job = new WriteJob(command);
            Enqueue(job);
            outcome = await job.Done.Task;
        }
        finally
        {
            Interlocked.Decrement(ref _pendingWrites);
        }

        if (outcome.Error is { } error)
        {
            throw error;
        }

        // Under semi-sync the acknowledgement waits for the write's LSN, also when the write changed
        // nothing (no entry; its LSN is the last one it saw): its answer (0 rows deleted, an INSERT OR
        // IGNORE that found the row) may rest on an earlier write that replicas have not confirmed, which
        // a failover would lose. The router's cleanup relies on it: a repeated delete must not report
        // the rows gone before the delete that removed them is on a replica.
        if (Hub.SemiSyncRequired && outcome.Lsn > 0)
        {
            var needed = Options.SyncReplicas;
            if (!await Hub.WaitReplicatedAsync(outcome.Lsn, Options.SyncTimeout, cancellationToken))
            {
                throw new NodeException(NodeErrorCode.NotReplicated, outcome.Entry is not null
                    ? $"not replicated: entry {outcome.Lsn} is committed on the master but {needed} replica(s) did not confirm it within {Options.SyncTimeout.TotalMilliseconds:0} ms; " +
                      "it may or may not survive a failover"
                    : $"not replicated: the write changed nothing, but what it read includes entry {outcome.Lsn}, which {needed} replica(s) did not confirm within {Options.SyncTimeout.TotalMilliseconds:0} ms; " +
                      "its answer may not hold after a failover");
            }
        }

        _writes.Add(1);
        _commitSeconds.Record(Stopwatch.GetElapsedTime(started).TotalSeconds);
        return new WriteAnswer(outcome.Results!, outcome.Lsn, Db.Epoch);
    }

    /// <summary>
    /// Closes a slot to writes tagged with it, or opens it again (<see cref="SlotChange"/>), through the
    /// writer's queue: a tagged write queued before the change is applied as usual, one queued after it
    /// is refused with <see cref="NodeErrorCode.SlotClosed"/>. The shard router closes a slot on its source
    /// before it copies the slot's last changes, so a write it gave up on (timed out) cannot commit there
    /// after the copy and be lost when the source's rows are deleted.
    /// </summary>
    public async Task ChangeSlotAsync(SlotChange change, long? epoch)
    {
        CheckWritable();
        var job = new WriteJob(new WriteCommand([], epoch, SlotChange: change));
        Enqueue(job);
        var outcome = await job.Done.Task;
        if (outcome.Error is { } error)
        {
            throw error;
        }
    }

    private void CheckWritable()
    {
        if (_role != NodeRole.Master)
        {
            throw new NodeException(NodeErrorCode.NotMaster, _master is null ? "this node is a replica; writes go to the master" : $"this node is a replica; writes go to the master at {_master}");
        }

        if (FencedBy is > 0 and var newer)
        {
            throw new NodeException(NodeErrorCode.StaleEpoch, $"epoch {newer} exists; this master's epoch {Db.Epoch} is stale and takes no writes");
        }

        if (Flusher.Failure is { } failure)
        {
            throw WalFailed(failure);
        }
    }

    private static NodeException WalFailed(Exception failure) =>
        new(NodeErrorCode.Unavailable, $"a WAL fsync failed ({failure.Message}); this node takes no writes until it is restarted");

    // ---------------------------------------------------------------- reads

    /// <summary>What each query text has cost lately: the APIs run the cheap ones on the thread that read the request.</summary>
    public QueryCosts QueryCosts { get; } = new();

    public async Task<QueryResult> QueryAsync(string sql, IReadOnlyList<object?> parameters, long? minLsn, TimeSpan? wait, CancellationToken cancellationToken)
    {
        if (minLsn is { } min && Db.Lsn < min)
        {
            var timeout = wait ?? Options.ReadWaitTimeout;
            if (!await Applied.WaitAsync(min, timeout, cancellationToken))
            {
                throw new NodeException(NodeErrorCode.Behind, $"behind: this node has applied LSN {Db.Lsn}, the read needs {min} (waited {timeout.TotalMilliseconds:0} ms)");
            }
        }

        var result = Db.Query(sql, parameters);
        if (!IsOnDisk(result))
        {
            await UntilOnDiskAsync(result, cancellationToken);
        }

        _reads.Add(1);
        return result;
    }

    /// <summary>
    /// Whether a read may be answered now. On a master a read can see commits whose WAL fsync has not
    /// returned yet; it is answered only once they are on disk, so no one acts on (or holds an LSN
    /// token of) a write a crash could take back — as a PostgreSQL commit is not visible before its
    /// flush. A replica holds only entries already on its master's disk, so its reads never wait.
    /// </summary>
    private bool IsOnDisk(QueryResult result) => Role != NodeRole.Master || result.Lsn <= Durable.Value;

    /// <summary>
    /// Waits (up to <see cref="NodeOptions.SyncTimeout"/>, as a <c>slotRows</c> answer does) until the
    /// read's LSN is on disk; refused as soon as the WAL fsync has failed.
    /// </summary>
    private async Task UntilOnDiskAsync(QueryResult result, CancellationToken cancellationToken)
    {
        if (!await Flusher.UntilDurableAsync(result.Lsn, Options.SyncTimeout, cancellationToken))
        {
            throw new NodeException(NodeErrorCode.Unavailable, Flusher.Failure is { } failure
                ? $"the read saw LSN {result.Lsn}, which is not on disk: {WalFailed(failure).Message}"
                : $"the read saw LSN {result.Lsn}, which was not on disk within {Options.SyncTimeout.TotalMilliseconds:0} ms");
        }
    }

    /// <summary>
    /// A read for an API that calls it on the thread that read the request: a text that has been cheap
    /// (<see cref="QueryCosts"/>) and needs no wait — for an LSN, a read connection or a re-clone's swap —
    /// runs right here; anything else goes on on the thread pool. Either way its cost is recorded.
    /// </summary>
    public async Task<QueryResult> QueryOnCallerIfCheapAsync(string sql, IReadOnlyList<object?> parameters, long? minLsn, TimeSpan? wait, CancellationToken cancellationToken)
    {
        var mustWait = minLsn is { } min && Db.Lsn < min;
        if (!mustWait && QueryCosts.IsCheap(sql))
        {
            var started = Stopwatch.GetTimestamp();
            QueryResult? ran;
            try
            {
                ran = Db.TryQuery(sql, parameters, mayWait: false);
            }
            catch
            {
                // A run that failed (interrupted at --max-query-time, too many rows) costs what it took: recorded
                // only on success, the text stayed "cheap" and every such run held the network thread it came in on.
                QueryCosts.Record(sql, Stopwatch.GetTimestamp() - started);
                throw;
            }

            if (ran is { } now)
            {
                QueryCosts.Record(sql, Stopwatch.GetTimestamp() - started);
                if (!IsOnDisk(now))
                {
                    await UntilOnDiskAsync(now, cancellationToken);
                }

                _reads.Add(1);
                return now;
            }
        }

        await Task.Yield();
        var begun = Stopwatch.GetTimestamp();
        var result = await QueryAsync(sql, parameters, minLsn, wait, cancellationToken);
        if (!mustWait)
        {
            QueryCosts.Record(sql, Stopwatch.GetTimestamp() - begun);
        }

        return result;
    }

    /// <summary>Counts a refused request; the APIs call it once per request that ends in an error.</summary>
    public void CountError(NodeErrorCode code) => _errors.Add(1, new KeyValuePair<string, object?>("code", code.ToString()));

    // ---------------------------------------------------------------- roles

    /// <inheritdoc cref="PromoteCoreAsync"/>
    public Task PromoteAsync(long epoch) => OneTransitionAsync(async () =>
    {
        await PromoteCoreAsync(epoch);
        return 0L;
    });

    /// <inheritdoc cref="ClaimCoreAsync"/>
    public Task<long> ClaimAsync(long epoch, string leader) => OneTransitionAsync(() => ClaimCoreAsync(epoch, leader));

    /// <inheritdoc cref="FollowCoreAsync"/>
    public Task FollowAsync(string master, long? epoch, bool reclone) => OneTransitionAsync(async () =>
    {
        await FollowCoreAsync(master, epoch, reclone);
        return 0L;
    });

    private async Task<T> OneTransitionAsync<T>(Func<Task<T>> transition)
    {
        await _transitions.WaitAsync();
        try
        {
            return await transition();
        }
        finally
        {
            _transitions.Release();
        }
    }

    /// <summary>
    /// Makes this node the master of <paramref name="epoch"/> (above the current one). A replica first
    /// stops following and applies everything it received.
    /// </summary>
    private async Task PromoteCoreAsync(long epoch)
    {
        if (epoch < Db.Epoch || (epoch == Db.Epoch && Db.Vote != (epoch, Db.NodeId)))
        {
            throw new NodeException(NodeErrorCode.StaleEpoch, epoch == Db.Epoch
                ? $"epoch {epoch} is this node's already and was not claimed for it; promotion needs a newer epoch or a claim"
                : $"promotion needs an epoch above the current {Db.Epoch}; {epoch} is not");
        }

        if (Diverged is { } diverged)
        {
            throw new NodeException(NodeErrorCode.Unavailable, $"this replica diverged ({diverged}); re-clone it (POST /follow with \"reclone\": true) before promoting it");
        }

        await StopFollowerAsync();
        await RunOnWriterAsync(db =>
        {
            db.SetEpochAndRole(epoch, "master");
            db.SetRegisteredReplicas([.. db.RegisteredReplicas.Where(id => id != db.NodeId)]);
            return 0;
        });
        lock (_roleLock)
        {
            _role = NodeRole.Master;
            _master = null;
            Interlocked.Exchange(ref _fencedBy, 0);
        }

        Hub.LoadRegistry(Db.RegisteredReplicas);
        LogPromoted(_logger, epoch, Db.Lsn);
    }

    /// <summary>
    /// A router claims <paramref name="epoch"/> for the node <paramref name="leader"/> before promoting
    /// it: this node joins the epoch as a replica (a master steps down) and votes for that leader only.
    /// </summary>
    private async Task<long> ClaimCoreAsync(long epoch, string leader)
    {
        if (!await RunOnWriterAsync(db => db.Claim(epoch, leader)))
        {
            var (voted, votedFor) = Db.Vote;
            throw new NodeException(NodeErrorCode.StaleEpoch, voted == epoch
                ? $"epoch {epoch} is already claimed for {votedFor}"
                : $"epoch {epoch} is not above this node's epoch {Db.Epoch}");
        }

        lock (_roleLock)
        {
            if (_role == NodeRole.Master)
            {
                _role = NodeRole.Replica;
                _master = null;
                LogSteppedDown(_logger, epoch);
            }
        }

        Hub.DisconnectAll();
        return Db.Lsn;
    }

    /// <summary>Makes this node a replica of <paramref name="master"/> (a master steps down; a replica is repointed).</summary>
    private async Task FollowCoreAsync(string master, long? epoch, bool reclone)
    {
        if (epoch is { } e && e < Db.Epoch)
        {
            throw new NodeException(NodeErrorCode.StaleEpoch, $"epoch {e} is older than this node's {Db.Epoch}");
        }

        await StopFollowerAsync();
        await RunOnWriterAsync(db =>
        {
            db.SetEpochAndRole(Math.Max(epoch ?? 0, db.Epoch), "replica");
            return 0;
        });
        lock (_roleLock)
        {
            _role = NodeRole.Replica;
            _master = master;
        }

        Hub.DisconnectAll();
        StartFollower(master, reclone);
        LogFollowing(_logger, master, Db.Epoch);
    }

    /// <summary>A replica told us of a newer epoch: this master is stale and stops taking writes.</summary>
    public void Fence(long newerEpoch)
    {
        if (newerEpoch > Db.Epoch && Interlocked.Exchange(ref _fencedBy, newerEpoch) != newerEpoch)
        {
            LogFenced(_logger, Db.Epoch, newerEpoch);
        }
    }

    private void StartFollower(string master, bool reclone)
    {
        var follower = new Follower(this, master, reclone, _loggerFactory.CreateLogger<Follower>());
        _follower = follower;
        follower.Start();
    }

    private async Task StopFollowerAsync()
    {
        if (Interlocked.Exchange(ref _follower, null) is { } follower)
        {
            await follower.StopAsync();
            follower.Dispose();
        }
    }

    public void OnApplied(int entries)
    {
        _applied.Add(entries);
        Applied.Advance(Db.Lsn);
    }

    // ---------------------------------------------------------------- the writer thread

    /// <summary>
    /// Runs <paramref name="work"/> on the writer thread (the only one that uses the write connection).
    /// What it commits is on disk before the task completes, unless <paramref name="syncLater"/>: then
    /// the task completes at once and the flusher syncs it with the next group (a replica's apply,
    /// which acknowledges <see cref="Durable"/>, not its own completion).
    /// </summary>
    public async Task<T> RunOnWriterAsync<T>(Func<NodeDatabase, T> work, bool syncLater = false)
    {
        var job = new FuncJob(db => work(db), syncLater);
        Enqueue(job);
        return (T)(await job.Done.Task)!; // the work's own exception, not an AggregateException
    }

    private void Enqueue(Job job)
    {
        _jobs.Enqueue(job);
        if (Volatile.Read(ref _closed) == 0)
        {
            try
            {
                _jobArrived.Set();
                return;
            }
            catch (ObjectDisposedException)
            {
                // Closed meanwhile.
            }
        }

        // Closed: the writer may have looked for the last time already.
        FailQueued();
    }

    private void FailQueued()
    {
        while (_jobs.TryDequeue(out var job))
        {
            job.Fail(new NodeException(NodeErrorCode.Unavailable, "the node is shutting down"));
        }
    }

    /// <summary>
    /// The writer thread: takes what is queued, runs consecutive writes as one group (one transaction,
    /// one fsync), then waits for more without spinning (<see cref="WakeSignal"/>). Once closed it runs
    /// what was queued before and stops.
    /// </summary>
    private void WriterLoop()
    {
        var group = new List<WriteJob>();
        while (true)
        {
            var closed = Volatile.Read(ref _closed) != 0;
            if (!_jobs.TryDequeue(out var job))
            {
                if (closed)
                {
                    return;
                }

                _jobArrived.Wait(Timeout.InfiniteTimeSpan);
                continue;
            }

            Job? next = job;
            while (next is not null)
            {
                var current = next;
                next = null;
                if (current is WriteJob write)
                {
                    group.Add(write);
                    while (group.Count < Options.MaxGroupSize && _jobs.TryDequeue(out var more))
                    {
                        if (more is WriteJob w)
                        {
                            group.Add(w);
                        }
                        else
                        {
                            next = more;
                            break;
                        }
                    }

                    RunGroup(group);
                    group.Clear();
                }
                else if (current is FuncJob func)
                {
                    RunFunc(func);
                }
            }
        }
    }

    private void RunFunc(FuncJob func)
    {
        object? result = null;
        Exception? error = null;
        try
        {
            result = func.Work(Db);
        }
        catch (Exception ex)
        {
            error = ex;
        }

        // What the work committed (an epoch, a role, a truncation, applied entries before a conflict)
        // is synced before anyone hears of it, or handed to the flusher.
        if (func.SyncLater)
        {
            Flusher.Committed(null);
        }
        else
        {
            try
            {
                Flusher.SyncNow();
            }
            catch (IOException ex)
            {
                error ??= ex;
            }
        }

        if (error is null)
        {
            func.Done.TrySetResult(result);
        }
        else
        {
            func.Done.TrySetException(error);
        }
    }

    private void RunGroup(List<WriteJob> group)
    {
        NodeException? refused = null;
        try
        {
            CheckWritable();
        }
        catch (NodeException ex)
        {
            refused = ex;
        }

        if (refused is not null)
        {
            group.ForEach(j => j.Fail(refused));
            return;
        }

        _groupSize.Record(group.Count);
        WriteOutcome[] outcomes;
        try
        {
            outcomes = Db.ExecuteGroup([.. group.Select(j => j.Command)]);
        }
        catch (Exception ex)
        {
            LogWriteFailed(_logger, ex);
            var failure = new NodeException(NodeErrorCode.Unavailable, "the write failed: " + ex.Message);
            group.ForEach(j => j.Fail(failure));
            return;
        }

        Applied.Advance(Db.Lsn);

        // Answered once an fsync after the commit has returned; the writer takes the next group meanwhile.
        var jobs = group.ToArray();
        Flusher.Committed(failure =>
        {
            for (var i = 0; i < jobs.Length; i++)
            {
                if (failure is null)
                {
                    jobs[i].Done.TrySetResult(outcomes[i]);
                }
                else
                {
                    jobs[i].Fail(WalFailed(failure));
                }
            }
        });
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        await StopFollowerAsync();
        Hub.DisconnectAll();
        Applied.ReleaseAll();
        Interlocked.Exchange(ref _closed, 1);
        _jobArrived.Set();
        _writerThread.Join(TimeSpan.FromSeconds(30));
        FailQueued();

        Flusher.Dispose();
        Db.Dispose();
        _jobArrived.Dispose();
    }

    private abstract class Job
    {
        public abstract void Fail(Exception error);
    }

    private sealed class WriteJob(WriteCommand command) : Job
    {
        public WriteCommand Command { get; } = command;

        public TaskCompletionSource<WriteOutcome> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override void Fail(Exception error) => Done.TrySetException(error);
    }

    private sealed class FuncJob(Func<NodeDatabase, object?> work, bool syncLater) : Job
    {
        public Func<NodeDatabase, object?> Work { get; } = work;

        public bool SyncLater { get; } = syncLater;

        public TaskCompletionSource<object?> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override void Fail(Exception error) => Done.TrySetException(error);
    }

    [LoggerMessage(EventId = 600, Level = LogLevel.Warning, Message = "The stored role was {Stored}; starting as {Role} (epoch {Epoch}) as the command line says")]
    private static partial void LogRoleChanged(ILogger logger, string stored, string role, long epoch);

    [LoggerMessage(EventId = 601, Level = LogLevel.Warning, Message = "Promoted to master of epoch {Epoch} at LSN {Lsn}")]
    private static partial void LogPromoted(ILogger logger, long epoch, long lsn);

    [LoggerMessage(EventId = 602, Level = LogLevel.Warning, Message = "Following the master at {Master} (epoch {Epoch})")]
    private static partial void LogFollowing(ILogger logger, string master, long epoch);

    [LoggerMessage(EventId = 603, Level = LogLevel.Error, Message = "Fenced: this master is at epoch {Epoch} but epoch {Newer} exists; writes are refused")]
    private static partial void LogFenced(ILogger logger, long epoch, long newer);

    [LoggerMessage(EventId = 605, Level = LogLevel.Warning, Message = "Epoch {Epoch} was claimed for another node: this master steps down")]
    private static partial void LogSteppedDown(ILogger logger, long epoch);

    [LoggerMessage(EventId = 604, Level = LogLevel.Error, Message = "A write group failed")]
    private static partial void LogWriteFailed(ILogger logger, Exception exception);
}
