using Infra.CacheServer.Storage;

namespace Infra.CacheServer.Eviction;

/// <summary>
/// Exact LRU within the shard: a list from most to least recently used; a hit moves the entry to the
/// front, the victim is the back. As <c>volatile-lru</c> only keys with a TTL are in the list, so
/// only they are evicted.
/// </summary>
internal sealed class LruPolicy(EntryTable entries, bool trackVolatileOnly) : EvictionPolicy(entries)
{
    private const int InList = 1;
    private EntryList _list;

    public override void OnInsert(int index, long cost, int nowSeconds)
    {
        Entries.At(index).Access = nowSeconds;
        if (!trackVolatileOnly)
        {
            Entries.At(index).Queue = InList;
            PushHead(ref _list, index, cost);
        }
    }

    public override void OnAccess(int index, int nowSeconds)
    {
        ref var entry = ref Entries.At(index);
        entry.Access = nowSeconds;
        if (entry.Queue == InList)
        {
            MoveToHead(ref _list, index);
        }
    }

    public override void OnRemove(int index, long cost)
    {
        ref var entry = ref Entries.At(index);
        if (entry.Queue == InList)
        {
            Unlink(ref _list, index, cost);
            entry.Queue = 0;
        }
    }

    public override void OnVolatilityChanged(int index, bool isVolatile)
    {
        if (!trackVolatileOnly)
        {
            return;
        }

        ref var entry = ref Entries.At(index);
        if (isVolatile && entry.Queue != InList)
        {
            entry.Queue = InList;
            PushHead(ref _list, index, 0);
        }
        else if (!isVolatile && entry.Queue == InList)
        {
            Unlink(ref _list, index, 0);
            entry.Queue = 0;
        }
    }

    public override int SelectVictim(int protect, ReadOnlySpan<int> volatileKeys) => TailExcept(_list, protect);
}

/// <summary>First in, first out: insertion order only; hits change nothing.</summary>
internal sealed class FifoPolicy(EntryTable entries) : EvictionPolicy(entries)
{
    private EntryList _list;

    public override void OnInsert(int index, long cost, int nowSeconds)
    {
        Entries.At(index).Access = nowSeconds;
        PushHead(ref _list, index, cost);
    }

    public override void OnAccess(int index, int nowSeconds) => Entries.At(index).Access = nowSeconds;

    public override void OnRemove(int index, long cost) => Unlink(ref _list, index, cost);

    public override int SelectVictim(int protect, ReadOnlySpan<int> volatileKeys) => TailExcept(_list, protect);
}

/// <summary>
/// Sampling policies in Redis's manner: each eviction samples a few keys and keeps the best
/// candidates in a small pool across evictions, so a handful of samples per eviction approximates
/// the exact order well.
/// </summary>
internal abstract class SampledPolicy(EntryTable entries, Random random) : EvictionPolicy(entries)
{
    // Redis's defaults: maxmemory-samples 5, an eviction pool of 16.
    private const int Samples = 5;
    private const int PoolSize = 16;
    private readonly (int Index, long Score, long Location)[] _pool = new (int, long, long)[PoolSize];
    private int _poolCount;
    private int _cursor;

    protected Random Random { get; } = random;

    /// <summary>Lower evicts first.</summary>
    protected abstract long Score(int index);

    /// <summary>Candidates to sample from: all keys, or only those with a TTL.</summary>
    protected abstract bool SampleVolatileOnly { get; }

    public override int SelectVictim(int protect, ReadOnlySpan<int> volatileKeys)
    {
        var population = SampleVolatileOnly ? volatileKeys.Length : Entries.HighWater;
        if (population == 0 || Entries.Count == 0)
        {
            return -1;
        }

        var added = 0;
        for (var attempt = 0; attempt < Samples * 4 && added < Samples; attempt++)
        {
            var index = SampleVolatileOnly ? volatileKeys[Random.Next(population)] : Random.Next(population);
            if (index != protect && Entries.IsLive(index))
            {
                Offer(index);
                added++;
            }
        }

        var victim = TakeBest(protect);
        if (victim >= 0)
        {
            return victim;
        }

        // Every sample missed, and nothing in the pool is still there: the table is sparse (a few live
        // entries under a high-water mark that never comes down, e.g. after large values evicted many small
        // ones). Walk on from where the last walk stopped for a few live candidates, so a policy that may
        // evict never answers OOM while keys are there.
        for (int n = 0, found = 0; n < population && found < Samples; n++)
        {
            _cursor = (_cursor + 1) % population;
            var index = SampleVolatileOnly ? volatileKeys[_cursor] : _cursor;
            if (index != protect && Entries.IsLive(index))
            {
                Offer(index);
                found++;
            }
        }

        return TakeBest(protect);
    }

    /// <summary>The best pooled candidate that is still there and still the same key (its chunk unchanged); -1 if none.</summary>
    private int TakeBest(int protect)
    {
        while (_poolCount > 0)
        {
            var (index, _, location) = _pool[0];
            RemoveFromPool(0);
            if (index != protect && Entries.IsLive(index) && Entries.At(index).Location == location
                && (!SampleVolatileOnly || Entries.At(index).VolatileSlot != 0))
            {
                return index;
            }
        }

        return -1;
    }

    private void Offer(int index)
    {
        var score = Score(index);
        var location = Entries.At(index).Location;
        for (var i = 0; i < _poolCount; i++)
        {
            if (_pool[i].Index == index && _pool[i].Location == location)
            {
                _pool[i].Score = score;
                return;
            }
        }

        var position = 0;
        while (position < _poolCount && _pool[position].Score <= score)
        {
            position++;
        }

        if (position == PoolSize)
        {
            return;
        }

        var last = Math.Min(_poolCount, PoolSize - 1);
        Array.Copy(_pool, position, _pool, position + 1, last - position);
        _pool[position] = (index, score, location);
        _poolCount = Math.Min(_poolCount + 1, PoolSize);
    }

    private void RemoveFromPool(int position)
    {
        Array.Copy(_pool, position + 1, _pool, position, _poolCount - position - 1);
        _poolCount--;
    }
}

/// <summary>
/// Redis's LFU: an 8-bit logarithmic counter per key (incremented with probability 1/(c·10+1),
/// decremented by one per idle minute), evicted by sampling.
/// </summary>
internal sealed class LfuPolicy(EntryTable entries, Random random) : SampledPolicy(entries, random)
{
    private const int InitialCounter = 5;
    private const int LogFactor = 10;

    public override bool TracksFrequency => true;

    protected override bool SampleVolatileOnly => false;

    public override void OnInsert(int index, long cost, int nowSeconds) =>
        Entries.At(index).Access = Pack(InitialCounter, nowSeconds / 60);

    public override void OnAccess(int index, int nowSeconds)
    {
        ref var entry = ref Entries.At(index);
        var minutes = nowSeconds / 60;
        var counter = Decayed(entry.Access, minutes);
        if (counter < 255)
        {
            var baseValue = Math.Max(counter - InitialCounter, 0);
            if (Random.NextDouble() < 1.0 / ((baseValue * LogFactor) + 1))
            {
                counter++;
            }
        }

        entry.Access = Pack(counter, minutes);
    }

    /// <summary>The counter OBJECT FREQ reports.</summary>
    public static int Counter(int access) => access & 0xFF;

    protected override long Score(int index) => Entries.At(index).Access & 0xFF;

    private static int Decayed(int access, int minutes)
    {
        var counter = access & 0xFF;
        var last = (int)((uint)access >> 8);
        var elapsed = (minutes - last) & 0xFFFFFF;
        return Math.Max(counter - elapsed, 0);
    }

    private static int Pack(int counter, int minutes) => ((minutes & 0xFFFFFF) << 8) | counter;
}

/// <summary><c>volatile-ttl</c>: among keys with a TTL, the one expiring soonest goes first (sampled).</summary>
internal sealed class VolatileTtlPolicy(EntryTable entries, Random random) : SampledPolicy(entries, random)
{
    protected override bool SampleVolatileOnly => true;

    public override void OnInsert(int index, long cost, int nowSeconds) => Entries.At(index).Access = nowSeconds;

    public override void OnAccess(int index, int nowSeconds) => Entries.At(index).Access = nowSeconds;

    protected override long Score(int index) => Entries.At(index).ExpireAt;
}
