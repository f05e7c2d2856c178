using System.Numerics;
using Infra.CacheServer.Eviction;
using Infra.Core.Placement;

namespace Infra.CacheServer.Storage;

/// <summary>Keyspace totals for INFO and metrics.</summary>
internal readonly record struct StoreStats(long Keys, long Expires, long UsedMemory, long Hits, long Misses, long Evicted, long Expired);

/// <summary>
/// The keyspace: a power-of-two number of <see cref="CacheShard"/>s, each with its own lock and policy,
/// so commands on different shards run in parallel, under one maxmemory (<see cref="MemoryBudget"/>). Keys are hashed
/// with xxHash64 under a per-process random seed (unless one is given), so nobody can craft keys that
/// collide in the index or the frequency sketch. Expired keys go lazily on access and actively by
/// sampling on a timer.
/// </summary>
internal sealed class CacheStore : IDisposable
{
    // Redis's active expiry: 20 keys per sample, again while over a quarter of them had expired.
    private const int ExpireSamples = 20;
    private const int ExpireRepeatThreshold = 5;
    private static readonly TimeSpan ExpireInterval = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan ExpireBudget = TimeSpan.FromMilliseconds(5);

    private readonly CacheShard[] _shards;
    private readonly MemoryBudget _memory;
    private readonly Lock _configureLock = new();
    private int _collecting;
    private long _lastCollection = long.MinValue / 2;
    private readonly int _shardShift;
    private readonly ulong _hashSeed;
    private readonly TimeProvider _time;
    private readonly ITimer? _expiryTimer;
    private long _activeExpired;

    public CacheStore(int shards, long maxMemory, EvictionPolicyKind policy, TimeProvider time, ulong? hashSeed = null, bool activeExpiry = true)
    {
        if (shards < 1 || !BitOperations.IsPow2(shards))
        {
            throw new ArgumentOutOfRangeException(nameof(shards), "the shard count must be a power of two");
        }

        _time = time;
        _hashSeed = hashSeed ?? (ulong)Random.Shared.NextInt64();
        _shardShift = 32 - BitOperations.Log2((uint)shards);
        MaxMemory = maxMemory;
        Policy = policy;
        _shards = new CacheShard[shards];
        _memory = new MemoryBudget(maxMemory);
        for (var i = 0; i < shards; i++)
        {
            _shards[i] = new CacheShard(policy, ShardBudget(maxMemory, shards), new Random(unchecked((int)_hashSeed) + i), hashSeed: _hashSeed, memory: _memory);
            _shards[i].SetBudget(ShardBudget(maxMemory, shards));
        }

        if (activeExpiry)
        {
            _expiryTimer = time.CreateTimer(static state => ((CacheStore)state!).ExpireCycle(), this, ExpireInterval, ExpireInterval);
        }
    }

    public long MaxMemory { get; private set; }

    public EvictionPolicyKind Policy { get; private set; }

    public int ShardCount => _shards.Length;

    /// <summary>maxmemory and the total the shards hold (tests compare it with the shards' sum).</summary>
    public MemoryBudget Memory => _memory;

    public IReadOnlyList<CacheShard> Shards => _shards;

    public TimeProvider Time => _time;

    public long NowMs => _time.GetUtcNow().ToUnixTimeMilliseconds();

    public int HashOf(ReadOnlySpan<byte> key) => (int)XxHash64.Hash(key, _hashSeed);

    /// <summary>The shard for a key hash: the top bits pick the shard, the low bits the bucket.</summary>
    public CacheShard ShardFor(int hash) => _shards[_shardShift == 32 ? 0 : (int)((uint)hash >> _shardShift)];

    public int ShardIndexFor(int hash) => _shardShift == 32 ? 0 : (int)((uint)hash >> _shardShift);

    /// <summary>
    /// Changes maxmemory and/or the policy at run time (CONFIG SET), then evicts down to the new limit:
    /// first each shard over its share from itself, then wherever the policy allows.
    /// </summary>
    public void Configure(long maxMemory, EvictionPolicyKind policy)
    {
        // One CONFIG SET at a time, through its evictions: a concurrent one would evict down to a limit
        // the other has already replaced (down to nothing, when one sets 0 while the other sets a limit).
        lock (_configureLock)
        {
            ConfigureLocked(maxMemory, policy);
        }
    }

    private void ConfigureLocked(long maxMemory, EvictionPolicyKind policy)
    {
        var now = CacheShard.Seconds(NowMs);
        var budget = ShardBudget(maxMemory, _shards.Length);

        // Every lock, in shard order as multi-key commands take them: the total starts exact.
        foreach (var shard in _shards)
        {
            shard.Lock.Enter();
        }

        try
        {
            long used = 0;
            foreach (var shard in _shards)
            {
                if (policy != Policy)
                {
                    shard.ChangePolicy(policy, budget, now);
                }

                shard.SetBudget(budget);
                used += shard.Used;
            }

            _memory.Reset(maxMemory, used);
            MaxMemory = maxMemory;
            Policy = policy;
        }
        finally
        {
            for (var i = _shards.Length - 1; i >= 0; i--)
            {
                _shards[i].Lock.Exit();
            }
        }

        foreach (var shard in _shards)
        {
            lock (shard.Lock)
            {
                if (_memory.Used > maxMemory)
                {
                    shard.EvictOwn(_memory.Used - maxMemory, floor: budget);
                }
            }
        }

        foreach (var shard in _shards)
        {
            lock (shard.Lock)
            {
                shard.MakeRoom(-1);
            }
        }
    }

    public StoreStats Stats()
    {
        long keys = 0, expires = 0, used = 0, hits = 0, misses = 0, evicted = 0, expired = 0;
        foreach (var shard in _shards)
        {
            lock (shard.Lock)
            {
                keys += shard.Count;
                expires += shard.VolatileCount;
                used += shard.Used;
                hits += shard.Hits;
                misses += shard.Misses;
                evicted += shard.Evicted;
                expired += shard.Expired;
            }
        }

        return new StoreStats(keys, expires, used, hits, misses, evicted, expired);
    }

    /// <summary>Bytes the store has reserved from the runtime (tables and slab pages).</summary>
    public long ReservedBytes()
    {
        long total = 0;
        foreach (var shard in _shards)
        {
            lock (shard.Lock)
            {
                total += shard.ReservedBytes;
            }
        }

        return total;
    }

    /// <summary>Slab pages that moved to another size class (INFO's slab_pages_moved).</summary>
    public long SlabPagesMoved()
    {
        long total = 0;
        foreach (var shard in _shards)
        {
            lock (shard.Lock)
            {
                total += shard.SlabMoves.Pages;
            }
        }

        return total;
    }

    /// <summary>
    /// Empties every shard. When that let go of at least <see cref="ReleaseAfterFlushBytes"/> of pages
    /// and tables, a full compacting collection then runs on the pool (after the caller's reply) so the
    /// runtime hands the memory back to the OS, as a Redis user expects RSS to fall after FLUSHALL: left to
    /// itself the GC may not collect for a long time, with little allocation after a flush.
    /// </summary>
    public void FlushAll()
    {
        long released = 0;
        foreach (var shard in _shards)
        {
            lock (shard.Lock)
            {
                released += shard.ReservedBytes;
                shard.Clear();
                released -= shard.ReservedBytes;
            }
        }

        // One collection at a time, and none within a second of the last: a client that fills and flushes
        // in a loop must not stop every connection again and again.
        if (released >= ReleaseAfterFlushBytes
            && Environment.TickCount64 - Interlocked.Read(ref _lastCollection) >= 1000
            && Interlocked.CompareExchange(ref _collecting, 1, 0) == 0)
        {
            ThreadPool.UnsafeQueueUserWorkItem(static store =>
            {
                try
                {
                    GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
                }
                finally
                {
                    Interlocked.Exchange(ref store._lastCollection, Environment.TickCount64);
                    Volatile.Write(ref store._collecting, 0);
                }
            }, this, preferLocal: false);
        }
    }

    /// <summary>Reserved bytes a flush must let go of before it asks the runtime to give memory back.</summary>
    public const long ReleaseAfterFlushBytes = 16L << 20;

    /// <summary>Expired keys removed by the active cycle (also counted in each shard's Expired).</summary>
    public long ActiveExpired => Interlocked.Read(ref _activeExpired);

    /// <summary>One pass of active expiry over every shard (also run by the timer).</summary>
    public void ExpireCycle()
    {
        var deadline = _time.GetTimestamp() + (long)(ExpireBudget.TotalSeconds * _time.TimestampFrequency);
        var now = NowMs;
        foreach (var shard in _shards)
        {
            if (shard.VolatileCount == 0)
            {
                continue;
            }

            while (true)
            {
                int expired;
                lock (shard.Lock)
                {
                    (_, expired) = shard.ExpireSample(now, ExpireSamples);
                }

                Interlocked.Add(ref _activeExpired, expired);
                if (expired <= ExpireRepeatThreshold || _time.GetTimestamp() > deadline)
                {
                    break;
                }
            }
        }
    }

    public void Dispose() => _expiryTimer?.Dispose();

    private static long ShardBudget(long maxMemory, int shards) => maxMemory <= 0 ? 0 : Math.Max(1, maxMemory / shards);
}
