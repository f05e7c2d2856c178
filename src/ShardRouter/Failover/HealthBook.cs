using System.Collections.Concurrent;
using Infra.Client.Data;

namespace Infra.ShardRouter.Failover;

/// <summary>What the probes last saw of one data node.</summary>
internal sealed class NodeHealth(string address)
{
    public string Address { get; } = address;

    /// <summary>The last status it answered (null before the first answer).</summary>
    public DataNodeStatus? Status { get; set; }

    /// <summary>The last probe was answered.</summary>
    public bool Up { get; set; }

    /// <summary>Probes failed in a row.</summary>
    public int Failures { get; set; }

    /// <summary>Rounds in a row it answered as a shard's master but was not that epoch's master (stepped down, fenced).</summary>
    public int NotMaster { get; set; }

    public long LastOkMs { get; set; }

    /// <summary>A replica: how old the oldest master entry it lacks is (0 when caught up).</summary>
    public long LagMs { get; set; }

    public string? LastError { get; set; }

    /// <summary>1 while the router is telling it to follow a master (one such call at a time).</summary>
    public int Repointing;
}

/// <summary>What the router tracks per shard: whether a failover runs, and recent master LSNs (replica lag).</summary>
internal sealed class ShardHealth
{
    private readonly Queue<(long Ms, long Lsn)> _masterSamples = new();

    public volatile bool FailingOver;

    public SemaphoreSlim FailoverLock { get; } = new(1, 1);

    public int Failovers { get; set; }

    public string? LastFailover { get; set; }

    public void SampleMaster(long nowMs, long lsn, long windowMs)
    {
        lock (_masterSamples)
        {
            if (_masterSamples.Count == 0 || _masterSamples.Last().Lsn != lsn)
            {
                _masterSamples.Enqueue((nowMs, lsn));
            }

            while (_masterSamples.Count > 2 && _masterSamples.Peek().Ms < nowMs - windowMs)
            {
                _masterSamples.Dequeue();
            }
        }
    }

    /// <summary>
    /// How long ago the master first had an LSN above <paramref name="replicaLsn"/> (0 when the replica
    /// has everything the master last reported): the age of the oldest write the replica lacks.
    /// </summary>
    public long LagMs(long nowMs, long replicaLsn)
    {
        lock (_masterSamples)
        {
            foreach (var (ms, lsn) in _masterSamples)
            {
                if (lsn > replicaLsn)
                {
                    return Math.Max(0, nowMs - ms);
                }
            }

            return 0;
        }
    }

    public void ResetSamples()
    {
        lock (_masterSamples)
        {
            _masterSamples.Clear();
        }
    }
}

/// <summary>Health of every node and shard the router knows, shared by routing and the monitor.</summary>
internal sealed class HealthBook
{
    private readonly ConcurrentDictionary<string, NodeHealth> _nodes = new(StringComparer.OrdinalIgnoreCase);
    private readonly ConcurrentDictionary<string, ShardHealth> _shards = new(StringComparer.Ordinal);

    public NodeHealth Node(string address) => _nodes.GetOrAdd(address, a => new NodeHealth(a));

    public ShardHealth Shard(string id) => _shards.GetOrAdd(id, _ => new ShardHealth());

    public bool TryGetNode(string address, out NodeHealth health) => _nodes.TryGetValue(address, out health!);

    /// <summary>
    /// A replica takes reads when its last probe answered, it is a replica that has not diverged and whose WAL fsync has not failed, it
    /// lags no more than <paramref name="maxLagMs"/>, and (for session reads) it has applied <paramref name="minLsn"/>.
    /// </summary>
    public bool InRotation(string address, long minLsn, long maxLagMs) =>
        _nodes.TryGetValue(address, out var health) && health.Up && health.Status is { Role: "replica", Diverged: null, WalSyncFailed: null } status
        && health.LagMs <= maxLagMs && status.Lsn >= minLsn;
}
