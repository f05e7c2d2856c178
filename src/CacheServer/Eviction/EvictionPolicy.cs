using Infra.CacheServer.Storage;

namespace Infra.CacheServer.Eviction;

/// <summary>The <c>maxmemory-policy</c> names, as Redis spells them.</summary>
internal enum EvictionPolicyKind
{
    AllKeysLru,
    AllKeysLfu,
    Fifo,
    NoEviction,
    VolatileLru,
    VolatileTtl,
    AllKeysAdaptive,
}

internal static class EvictionPolicies
{
    private static readonly string[] Names =
        ["allkeys-lru", "allkeys-lfu", "fifo", "noeviction", "volatile-lru", "volatile-ttl", "allkeys-adaptive"];

    public static IReadOnlyList<string> All => Names;

    public static string Name(EvictionPolicyKind kind) => Names[(int)kind];

    public static bool TryParse(string text, out EvictionPolicyKind kind)
    {
        var index = Array.FindIndex(Names, n => n.Equals(text.Trim(), StringComparison.OrdinalIgnoreCase));
        kind = index < 0 ? default : (EvictionPolicyKind)index;
        return index >= 0;
    }

    public static EvictionPolicy Create(EvictionPolicyKind kind, EntryTable entries, Random random) => kind switch
    {
        EvictionPolicyKind.AllKeysLru => new LruPolicy(entries, trackVolatileOnly: false),
        EvictionPolicyKind.VolatileLru => new LruPolicy(entries, trackVolatileOnly: true),
        EvictionPolicyKind.Fifo => new FifoPolicy(entries),
        EvictionPolicyKind.AllKeysLfu => new LfuPolicy(entries, random),
        EvictionPolicyKind.VolatileTtl => new VolatileTtlPolicy(entries, random),
        EvictionPolicyKind.NoEviction => new NoEvictionPolicy(entries),
        EvictionPolicyKind.AllKeysAdaptive => new AdaptivePolicy(entries),
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };
}

/// <summary>
/// Chooses what to evict in one shard. The shard tells the policy about every insert, hit, removal
/// and TTL change (under the shard's lock) and asks for a victim while it is over its budget. Entry
/// links (<see cref="Entry.Prev"/>, <see cref="Entry.After"/>, <see cref="Entry.Queue"/>,
/// <see cref="Entry.Access"/>) belong to the policy.
/// </summary>
internal abstract class EvictionPolicy
{
    protected EvictionPolicy(EntryTable entries) => Entries = entries;

    protected EntryTable Entries { get; }

    /// <summary>Shard budget in cost units (bytes, or entries in the trace simulator).</summary>
    public long Capacity { get; set; }

    /// <summary>Whether an LFU counter is kept (OBJECT FREQ works); otherwise access times (OBJECT IDLETIME).</summary>
    public virtual bool TracksFrequency => false;

    public virtual void OnInsert(int index, long cost, int nowSeconds)
    {
    }

    public virtual void OnAccess(int index, int nowSeconds)
    {
    }

    public virtual void OnRemove(int index, long cost)
    {
    }

    /// <summary>The entry's cost changed (a value rewritten in place).</summary>
    public virtual void OnResize(int index, long oldCost, long newCost)
    {
    }

    /// <summary>The entry gained or lost a TTL.</summary>
    public virtual void OnVolatilityChanged(int index, bool isVolatile)
    {
    }

    /// <summary>A lookup of a key with this hash happened, hit or miss (frequency sketches count both).</summary>
    public virtual void RecordLookup(int hash)
    {
    }

    /// <summary>The entry to evict next, never <paramref name="protect"/>; -1 when there is none.</summary>
    public abstract int SelectVictim(int protect, ReadOnlySpan<int> volatileKeys);

    /// <summary>Entry counts per queue for INFO (adaptive policy), empty otherwise.</summary>
    public virtual string Describe() => string.Empty;

    // Doubly linked lists of entries, threaded through Prev/After (index + 1; 0 = none).
    protected struct EntryList
    {
        public int Head;
        public int Tail;
        public long Cost;
        public int Count;
    }

    protected void PushHead(ref EntryList list, int index, long cost)
    {
        ref var entry = ref Entries.At(index);
        entry.Prev = 0;
        entry.After = list.Head;
        if (list.Head != 0)
        {
            Entries.At(list.Head - 1).Prev = index + 1;
        }
        else
        {
            list.Tail = index + 1;
        }

        list.Head = index + 1;
        list.Cost += cost;
        list.Count++;
    }

    protected void Unlink(ref EntryList list, int index, long cost)
    {
        ref var entry = ref Entries.At(index);
        if (entry.Prev != 0)
        {
            Entries.At(entry.Prev - 1).After = entry.After;
        }
        else
        {
            list.Head = entry.After;
        }

        if (entry.After != 0)
        {
            Entries.At(entry.After - 1).Prev = entry.Prev;
        }
        else
        {
            list.Tail = entry.Prev;
        }

        entry.Prev = 0;
        entry.After = 0;
        list.Cost -= cost;
        list.Count--;
    }

    protected void MoveToHead(ref EntryList list, int index)
    {
        if (list.Head == index + 1)
        {
            return;
        }

        Unlink(ref list, index, 0);
        PushHead(ref list, index, 0);
    }

    /// <summary>The oldest entry of a list that is not <paramref name="protect"/>; -1 if none.</summary>
    protected int TailExcept(in EntryList list, int protect)
    {
        var node = list.Tail;
        while (node != 0)
        {
            if (node - 1 != protect)
            {
                return node - 1;
            }

            node = Entries.At(node - 1).Prev;
        }

        return -1;
    }
}

/// <summary>Refuses to evict: writes over the budget fail with OOM.</summary>
internal sealed class NoEvictionPolicy(EntryTable entries) : EvictionPolicy(entries)
{
    public override int SelectVictim(int protect, ReadOnlySpan<int> volatileKeys) => -1;
}
