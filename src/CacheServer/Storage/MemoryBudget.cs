namespace Infra.CacheServer.Storage;

/// <summary>
/// maxmemory for a store's shards together: the total of what they hold, counted as it changes, so a
/// write may use any free memory whatever shard its key lands on (a value up to maxmemory fits, and
/// noeviction refuses only when the store as a whole is full), and the shards that evict for other
/// shards' writes. Each shard has a share (maxmemory ÷ shards, its Budget) that sizes its policy: a full store
/// frees room for a write from the write's own shard, unless that shard holds less than 7/8 of its
/// share — then from the shard furthest over its share, so the shards drift back to equal sizes —
/// or has nothing it may evict (a value larger than everything else in its shard, a volatile policy
/// with no TTL in that shard): then from the others.
/// </summary>
/// <remarks>
/// The total is counted only while a limit is set (an interlocked addition per change of a shard's
/// size); <see cref="Reset"/> recounts it with every shard's lock held. A shard evicting for another
/// holds its own lock and only ever tries the other's (<see cref="Lock.TryEnter()"/>), and skips a
/// shard its thread already holds (a multi-key command's), so no two threads can wait on each other.
/// The price: a write whose own shard has nothing left to evict gets OOM when every shard that could
/// give stays busy through a short spin (CONFIG SET holding them all, say) although memory could be freed.
/// </remarks>
internal sealed class MemoryBudget
{
    private const int BusyRetries = 64;
    private readonly List<CacheShard> _shards = [];
    private long _used;

    /// <param name="max">The limit (bytes, or entries for the simulator); 0 for none.</param>
    public MemoryBudget(long max) => Reset(max, 0);

    /// <summary>The limit; 0 for none.</summary>
    public long Max { get; private set; }

    /// <summary>What all the shards hold together (counted only while <see cref="Max"/> is set).</summary>
    public long Used => Volatile.Read(ref _used);

    public void Add(CacheShard shard) => _shards.Add(shard);

    /// <summary>Sets the limit and the total the shards hold now. Callers hold every shard's lock.</summary>
    public void Reset(long max, long used)
    {
        Max = Math.Max(0, max);
        Volatile.Write(ref _used, Max > 0 ? used : 0);
    }

    /// <summary>A shard's size changed by <paramref name="delta"/> (its lock is held).</summary>
    public void Charge(long delta)
    {
        if (Max > 0 && delta != 0)
        {
            Interlocked.Add(ref _used, delta);
        }
    }

    /// <summary>
    /// Evicts from shards other than <paramref name="asking"/> (whose lock the caller holds) until
    /// <paramref name="need"/> is freed or nothing more can be: the largest shards first; with
    /// <paramref name="overShareOnly"/> only down to their share. Returns the cost freed.
    /// </summary>
    public long EvictElsewhere(CacheShard asking, long need, bool overShareOnly)
    {
        long freed = 0;
        var spin = default(SpinWait);
        // Called per eviction while shards rebalance: no allocation for the usual shard counts.
        var tried = _shards.Count <= 256 ? stackalloc bool[_shards.Count] : new bool[_shards.Count];
        for (var attempt = 0; freed < need; attempt++)
        {
            var busy = false;
            tried.Clear();
            for (var round = 0; round < _shards.Count && freed < need; round++)
            {
                var index = Largest(asking, overShareOnly, tried);
                if (index < 0)
                {
                    break;
                }

                tried[index] = true;
                var target = _shards[index];
                if (!target.Lock.TryEnter())
                {
                    busy = true; // another thread works there: try the next largest
                    continue;
                }

                try
                {
                    freed += target.EvictOwn(need - freed, overShareOnly ? target.Budget : 0);
                }
                finally
                {
                    target.Lock.Exit();
                }
            }

            // Only the shards that could give were busy: wait a little for them (a write that needs
            // another shard's memory should not fail because that shard was serving a read), but
            // boundedly — its owner may be waiting for this shard.
            if (freed > 0 || !busy || overShareOnly || attempt == BusyRetries)
            {
                break;
            }

            spin.SpinOnce(sleep1Threshold: -1);
        }

        return freed;
    }

    /// <summary>The index of the largest shard not yet tried (over its share, <see cref="CacheShard.Budget"/>, with <paramref name="overShareOnly"/>), or -1.</summary>
    private int Largest(CacheShard asking, bool overShareOnly, ReadOnlySpan<bool> tried)
    {
        var best = -1;
        long bestUsed = 0;
        for (var i = 0; i < _shards.Count; i++)
        {
            var shard = _shards[i];
            if (tried[i] || shard == asking || shard.Lock.IsHeldByCurrentThread)
            {
                continue;
            }

            var used = shard.UsedRelaxed;
            if (used > bestUsed && (!overShareOnly || used > shard.Budget))
            {
                best = i;
                bestUsed = used;
            }
        }

        return best;
    }
}
