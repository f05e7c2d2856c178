using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using Infra.CacheServer.Eviction;

namespace Infra.CacheServer.Storage;

/// <summary>How a lookup counts: Redis's lookupKeyRead, lookupKeyRead with NOTOUCH, lookupKeyWrite.</summary>
internal enum Lookup
{
    /// <summary>Counts a hit or miss, refreshes recency/frequency (GET, HGET...).</summary>
    Read,

    /// <summary>Counts a hit or miss but leaves recency alone (EXISTS, TYPE, TTL).</summary>
    Check,

    /// <summary>Neither (writes and OBJECT).</summary>
    Write,
}

/// <summary>Why an entry left the shard (for the statistics).</summary>
internal enum Removal
{
    Deleted,
    Expired,
    Evicted,
}

/// <summary>
/// One shard of the keyspace: a chained hash index over an <see cref="EntryTable"/>, keys and small
/// values in slab chunks, a list of the keys that have a TTL (for active expiry and volatile
/// policies), an eviction policy and a memory budget. Not thread-safe: callers hold <see cref="Lock"/>.
/// </summary>
internal sealed class CacheShard : ISlabOwner
{
    /// <summary>What an entry costs beyond its chunk: the 40-byte entry and its share of the index.</summary>
    public const int EntryOverhead = 48;

    /// <summary>
    /// The longest key the store holds: a key lives in its entry's slab chunk, with the chunk's header.
    /// Commands that write refuse longer keys before they change anything (<see cref="Commands.Errors.KeyTooLong"/>).
    /// </summary>
    public const int MaxKeyLength = SlabAllocator.MaxChunk - ChunkHeader;
    private const int ChunkHeader = 8;

    private readonly EntryTable _entries = new();
    private readonly SlabAllocator _slab;
    private readonly ulong _hashSeed;
    private readonly Dictionary<int, object> _objects = [];
    private readonly bool _countEntries;
    private int[] _buckets = new int[16];
    private int[] _volatile = new int[16];
    private int _volatileCount;
    private EvictionPolicy _policy;
    private EvictionPolicyKind _policyKind;
    private readonly AdaptiveSettings? _adaptiveSettings;
    private readonly MemoryBudget _memory;
    private readonly bool _ownsMemory;
    private long _used;

    /// <param name="budget">This shard's share of maxmemory; for a shard on its own (the simulator, tests) also its limit.</param>
    /// <param name="countEntries">Charge 1 per entry instead of bytes (the trace simulator).</param>
    /// <param name="hashSeed">The seed the callers hash keys with (the slabs look entries up by key when they move a chunk).</param>
    /// <param name="memory">The store's maxmemory, shared by its shards; null: a limit of <paramref name="budget"/> for this shard alone.</param>
    public CacheShard(EvictionPolicyKind policy, long budget, Random random, bool countEntries = false, AdaptiveSettings? adaptive = null, ulong hashSeed = 0, MemoryBudget? memory = null)
    {
        _slab = new SlabAllocator(this);
        _hashSeed = hashSeed;
        _adaptiveSettings = adaptive;
        _countEntries = countEntries;
        _ownsMemory = memory is null;
        _memory = memory ?? new MemoryBudget(budget);
        _memory.Add(this);
        Budget = budget;
        Random = random;
        _policyKind = policy;
        _policy = CreatePolicy(policy);
    }

    public Lock Lock { get; } = new();

    public Random Random { get; }

    /// <summary>
    /// This shard's share of maxmemory (bytes, or entries; 0 for none): what its policy is sized for.
    /// The limit itself is the store's (<see cref="MemoryBudget"/>): a shard may hold more than its share.
    /// </summary>
    public long Budget { get; private set; }

    /// <summary>Cost of what is stored: bytes by the accounting of <see cref="CostOf"/> (or entries).</summary>
    public long Used => _used;

    /// <summary><see cref="Used"/> read without this shard's lock (a hint for another shard's eviction).</summary>
    public long UsedRelaxed => Volatile.Read(ref _used);

    public int Count => _entries.Count;

    public int VolatileCount => _volatileCount;

    public long Hits { get; private set; }

    public long Misses { get; private set; }

    public long Evicted { get; private set; }

    public long Expired { get; private set; }

    public EvictionPolicy Policy => _policy;

    /// <summary>Slab pages that changed size class, and the live chunks moved to free them.</summary>
    public (long Pages, long Chunks) SlabMoves => (_slab.PagesMoved, _slab.ChunksMoved);

    /// <summary>Bytes of slab pages (entry data; a part of <see cref="ReservedBytes"/>).</summary>
    public long SlabBytes => _slab.ReservedBytes;

    /// <summary>Bytes reserved from the runtime for this shard's tables and pages.</summary>
    public long ReservedBytes => _entries.ReservedBytes + _slab.ReservedBytes + (_buckets.Length * 4L) + (_volatile.Length * 4L);

    /// <summary>Changes policy, re-registering every entry with the new one (CONFIG SET maxmemory-policy).</summary>
    public void ChangePolicy(EvictionPolicyKind kind, long budget, int nowSeconds)
    {
        Budget = budget;
        _policyKind = kind;
        _policy = CreatePolicy(kind);
        for (var i = 0; i < _entries.HighWater; i++)
        {
            if (_entries.IsLive(i))
            {
                ref var entry = ref _entries.At(i);
                entry.Prev = entry.After = 0;
                entry.Queue = 0;
                _policy.OnInsert(i, CostOf(i), nowSeconds);
                if (entry.ExpireAt != 0)
                {
                    _policy.OnVolatilityChanged(i, true);
                }
            }
        }
    }

    /// <summary>Sets this shard's share (and, for a shard on its own, its limit).</summary>
    public void SetBudget(long budget)
    {
        Budget = budget;
        if (_ownsMemory)
        {
            _memory.Reset(budget, _used);
        }

        _policy.Capacity = budget > 0 ? budget : long.MaxValue / 4;
        if (_policy is AdaptivePolicy adaptive)
        {
            adaptive.ExpectedEntries = budget <= 0 ? 0 : _countEntries ? budget : Math.Clamp(budget / 128, 1024, 1 << 24);
        }
    }

    private EvictionPolicy CreatePolicy(EvictionPolicyKind kind)
    {
        var policy = kind == EvictionPolicyKind.AllKeysAdaptive
            ? new AdaptivePolicy(_entries, _adaptiveSettings)
            : EvictionPolicies.Create(kind, _entries, Random);
        policy.Capacity = Budget > 0 ? Budget : long.MaxValue / 4;
        if (policy is AdaptivePolicy adaptive)
        {
            adaptive.CostFunction = CostOf;

            // Entries are about 100 bytes at the least (entry, chunk, small key and value).
            adaptive.ExpectedEntries = Budget <= 0 ? 0 : _countEntries ? Budget : Math.Clamp(Budget / 128, 1024, 1 << 24);
        }

        return policy;
    }

    // ---- Lookup ---------------------------------------------------------------------------------

    /// <summary>
    /// The entry for a key, or -1. An expired key is deleted on the way (lazy expiry).
    /// </summary>
    public int Find(ReadOnlySpan<byte> key, int hash, long nowMs, Lookup mode)
    {
        if (mode == Lookup.Read)
        {
            _policy.RecordLookup(hash);
        }

        var node = _buckets[hash & (_buckets.Length - 1)];
        while (node != 0)
        {
            var index = node - 1;
            ref var entry = ref _entries.At(index);
            if (entry.Hash == hash && KeyEquals(entry.Location, key))
            {
                if (entry.ExpireAt != 0 && entry.ExpireAt <= nowMs)
                {
                    Remove(index, Removal.Expired);
                    break;
                }

                if (mode != Lookup.Write)
                {
                    Hits++;
                }

                if (mode == Lookup.Read)
                {
                    _policy.OnAccess(index, Seconds(nowMs));
                }

                return index;
            }

            node = entry.Next;
        }

        if (mode != Lookup.Write)
        {
            Misses++;
        }

        return -1;
    }

    /// <summary>
    /// Starts loading what <see cref="Find(ReadOnlySpan{byte}, int, long, Lookup)"/> will touch for a key, one level per call: 0 the bucket,
    /// 1 the bucket's first entry, 2 that entry's chunk (header and key). Called WITHOUT the lock for
    /// the commands of a pipelined batch, level by level, so their cache misses overlap instead of
    /// coming one after another. (Prefetching the eviction list's neighbours as well measured no
    /// better.) Every read here may race a writer: each is bounds-checked, and a
    /// stale value only wastes a prefetch.
    /// </summary>
    public void Prefetch(int hash, int level)
    {
        var buckets = _buckets;
        ref var bucket = ref buckets[hash & (buckets.Length - 1)];
        if (level == 0)
        {
            MemoryHint.Prefetch(ref bucket);
            return;
        }

        var node = bucket;
        if (node <= 0)
        {
            return;
        }

        ref var entry = ref _entries.Peek(node - 1);
        if (Unsafe.IsNullRef(ref entry))
        {
            return;
        }

        if (level == 1)
        {
            MemoryHint.Prefetch(ref entry);
        }
        else if (entry.Location >= 0)
        {
            _slab.Prefetch(entry.Location);
        }
    }

    /// <summary>Compatibility form for the simulator: read or write lookup.</summary>
    public int Find(ReadOnlySpan<byte> key, int hash, long nowMs, bool read) => Find(key, hash, nowMs, read ? Lookup.Read : Lookup.Write);

    private bool KeyEquals(long location, ReadOnlySpan<byte> key)
    {
        var header = _slab.Span(location, ChunkHeader);
        var keyLength = BinaryPrimitives.ReadInt32LittleEndian(header);
        return keyLength == key.Length && _slab.Span(location + ChunkHeader, keyLength).SequenceEqual(key);
    }

    int ISlabOwner.OwnerOf(long handle, int chunkSize)
    {
        // A free chunk starts with list links, read here as a key length: anything that does not fit the
        // chunk is no key (a length that fits is looked up and simply not found: no entry points at a free chunk).
        var keyLength = BinaryPrimitives.ReadInt32LittleEndian(_slab.Span(handle, 4));
        if (keyLength < 0 || keyLength > chunkSize - ChunkHeader)
        {
            return -1;
        }

        var hash = (int)Infra.Core.Placement.XxHash64.Hash(_slab.Span(handle + ChunkHeader, keyLength), _hashSeed);
        var node = _buckets[hash & (_buckets.Length - 1)];
        while (node != 0)
        {
            ref var entry = ref _entries.At(node - 1);
            if (entry.Location == handle)
            {
                return node - 1;
            }

            node = entry.Next;
        }

        return -1;
    }

    void ISlabOwner.Moved(int owner, long handle) => _entries.At(owner).Location = handle;

    // ---- Accessors --------------------------------------------------------------------------------

    public ref Entry EntryAt(int index) => ref _entries.At(index);

    public ValueKind KindOf(int index) => _entries.At(index).Kind;

    public ReadOnlySpan<byte> KeyOf(int index)
    {
        var location = _entries.At(index).Location;
        return _slab.Span(location + ChunkHeader, BinaryPrimitives.ReadInt32LittleEndian(_slab.Span(location, 4)));
    }

    /// <summary>A string entry's value (valid until the shard changes).</summary>
    public ReadOnlySpan<byte> StringOf(int index)
    {
        ref var entry = ref _entries.At(index);
        if (entry.Kind == ValueKind.LargeString)
        {
            return (byte[])_objects[index];
        }

        var header = _slab.Span(entry.Location, ChunkHeader);
        var keyLength = BinaryPrimitives.ReadInt32LittleEndian(header);
        var valueLength = BinaryPrimitives.ReadInt32LittleEndian(header[4..]);
        return _slab.Span(entry.Location + ChunkHeader + keyLength, valueLength);
    }

    public HashValue HashOf(int index) => (HashValue)_objects[index];

    /// <summary>The cost charged for an entry: bytes (entry, chunk, outside value) or 1.</summary>
    public long CostOf(int index)
    {
        if (_countEntries)
        {
            return 1;
        }

        ref var entry = ref _entries.At(index);
        var header = _slab.Span(entry.Location, ChunkHeader);
        var chunk = SlabAllocator.ChunkSize(ChunkHeader + BinaryPrimitives.ReadInt32LittleEndian(header) + BinaryPrimitives.ReadInt32LittleEndian(header[4..]));
        return EntryOverhead + chunk + entry.Kind switch
        {
            ValueKind.LargeString => 24 + ((byte[])_objects[index]).Length,
            ValueKind.Hash => ((HashValue)_objects[index]).MemoryCost,
            _ => 0,
        };
    }

    // ---- Writes -----------------------------------------------------------------------------------

    /// <summary>Adds a string under a key that is not present. Returns the new entry.</summary>
    public int AddString(ReadOnlySpan<byte> key, int hash, ReadOnlySpan<byte> value, long expireAt, long nowMs)
    {
        CheckKeyLength(key);
        var index = _entries.Allocate();
        ref var entry = ref _entries.At(index);
        entry.Hash = hash;
        WriteString(index, key, value);
        Link(index, hash);
        Admit(index, expireAt, nowMs);
        return index;
    }

    /// <summary>Adds a hash (empty, or one moved from another key) under a key that is not present.</summary>
    public int AddHash(ReadOnlySpan<byte> key, int hash, long nowMs, HashValue? value = null, long expireAt = 0)
    {
        CheckKeyLength(key);
        var index = _entries.Allocate();
        ref var entry = ref _entries.At(index);
        entry.Hash = hash;
        entry.Location = WriteChunk(key, []);
        entry.Kind = ValueKind.Hash;
        _objects[index] = value ?? new HashValue();
        Link(index, hash);
        Admit(index, expireAt, nowMs);
        return index;
    }

    /// <summary>Zeroes the counters INFO shows (CONFIG RESETSTAT).</summary>
    public void ResetStats()
    {
        Hits = 0;
        Misses = 0;
        Evicted = 0;
        Expired = 0;
    }

    /// <summary>Replaces a string's value (the key keeps its entry); TTL untouched.</summary>
    public void ReplaceString(int index, ReadOnlySpan<byte> value, long nowMs)
    {
        var oldCost = CostOf(index);
        ref var entry = ref _entries.At(index);
        if (entry.Kind == ValueKind.InlineString)
        {
            var header = _slab.Span(entry.Location, ChunkHeader);
            var keyLength = BinaryPrimitives.ReadInt32LittleEndian(header);
            var oldSize = ChunkHeader + keyLength + BinaryPrimitives.ReadInt32LittleEndian(header[4..]);
            var newSize = ChunkHeader + keyLength + value.Length;
            if (newSize <= SlabAllocator.MaxChunk && SlabAllocator.ChunkSize(newSize) == SlabAllocator.ChunkSize(oldSize))
            {
                // Same chunk class: rewrite in place.
                BinaryPrimitives.WriteInt32LittleEndian(_slab.Span(entry.Location + 4, 4), value.Length);
                value.CopyTo(_slab.Span(entry.Location + ChunkHeader + keyLength, value.Length));
                Resized(index, oldCost, nowMs);
                return;
            }
        }

        var key = KeyOf(index).ToArray();
        FreeChunkAndValue(index);
        WriteString(index, key, value);
        Resized(index, oldCost, nowMs);
    }

    /// <summary>Tells the policy and the accounting that an entry changed size (e.g. a hash grew).</summary>
    public void Resized(int index, long oldCost, long nowMs)
    {
        var newCost = CostOf(index);
        Charge(newCost - oldCost);
        _policy.OnResize(index, oldCost, newCost);
        _policy.OnAccess(index, Seconds(nowMs));
    }

    public long ExpireAtOf(int index) => _entries.At(index).ExpireAt;

    /// <summary>Sets (or with 0 clears) an entry's expiry time.</summary>
    public void SetExpire(int index, long expireAt)
    {
        ref var entry = ref _entries.At(index);
        var was = entry.ExpireAt != 0;
        entry.ExpireAt = expireAt;
        var now = expireAt != 0;
        if (was == now)
        {
            return;
        }

        if (now)
        {
            if (_volatileCount == _volatile.Length)
            {
                Array.Resize(ref _volatile, _volatile.Length * 2);
            }

            _volatile[_volatileCount] = index;
            entry.VolatileSlot = ++_volatileCount;
        }
        else
        {
            DropVolatile(index);
        }

        _policy.OnVolatilityChanged(index, now);
    }

    public void Remove(int index, Removal reason)
    {
        var cost = CostOf(index);
        _policy.OnRemove(index, cost);
        ref var entry = ref _entries.At(index);
        if (entry.VolatileSlot != 0)
        {
            DropVolatile(index);
        }

        Unlink(index, entry.Hash);
        FreeChunkAndValue(index);
        _entries.Free(index);
        Charge(-cost);
        switch (reason)
        {
            case Removal.Expired:
                Expired++;
                break;
            case Removal.Evicted:
                Evicted++;
                break;
        }
    }

    /// <summary>
    /// Evicts until the store is within maxmemory, never touching <paramref name="protect"/> (the entry
    /// just written). False when that is impossible: nothing left to evict, or the policy refuses
    /// (noeviction, or no volatile keys under a volatile policy).
    /// </summary>
    public bool MakeRoom(int protect) => Reserve(0, protect);

    /// <summary>
    /// Evicts until <paramref name="extra"/> more cost fits in maxmemory, as Redis evicts before a write:
    /// from this shard, or from others as <see cref="MemoryBudget"/> says. False when it cannot: the
    /// write must then fail with OOM. Caller holds this shard's lock.
    /// </summary>
    public bool Reserve(long extra, int protect)
    {
        var max = _memory.Max;
        if (max <= 0 || _memory.Used + extra <= max)
        {
            return true;
        }

        if (extra > max || _policyKind == EvictionPolicyKind.NoEviction)
        {
            return false; // would not fit in an empty store, or may not evict: refuse without evicting anything
        }

        while (_memory.Used + extra > max)
        {
            var need = _memory.Used + extra - max;
            if (_used < Budget - (Budget / 8) && _memory.EvictElsewhere(this, need, overShareOnly: true) > 0)
            {
                continue;
            }

            var victim = _policy.SelectVictim(protect, _volatile.AsSpan(0, _volatileCount));
            if (victim >= 0)
            {
                Remove(victim, Removal.Evicted);
            }
            else if (_memory.EvictElsewhere(this, need, overShareOnly: false) == 0)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// Evicts this shard's victims (by its policy) for another shard's write until <paramref name="need"/>
    /// is freed, nothing is left to evict, or it holds no more than <paramref name="floor"/>. Returns the
    /// cost freed. Caller holds this shard's lock.
    /// </summary>
    public long EvictOwn(long need, long floor)
    {
        var before = _used;
        while (before - _used < need && _used > floor)
        {
            var victim = _policy.SelectVictim(-1, _volatile.AsSpan(0, _volatileCount));
            if (victim < 0)
            {
                break;
            }

            Remove(victim, Removal.Evicted);
        }

        return before - _used;
    }

    /// <summary>The cost a new string entry would have (for the noeviction check).</summary>
    public long CostOfNewString(int keyLength, int valueLength) => _countEntries
        ? 1
        : EntryOverhead + (ChunkHeader + keyLength + valueLength <= SlabAllocator.MaxChunk
            ? SlabAllocator.ChunkSize(ChunkHeader + keyLength + valueLength)
            : SlabAllocator.ChunkSize(ChunkHeader + keyLength) + 24 + valueLength);

    public void Clear()
    {
        _entries.Clear();
        _slab.Clear();
        _objects.Clear();
        _buckets = new int[16];
        _volatile = new int[16];
        _volatileCount = 0;
        Charge(-_used);
        _policy = CreatePolicy(_policyKind);
    }

    public EvictionPolicyKind PolicyKind => _policyKind;

    private void Charge(long delta)
    {
        _used += delta;
        _memory.Charge(delta);
    }

    // ---- Active expiry, sampling, iteration -------------------------------------------------------

    /// <summary>
    /// Redis's active expiry cycle for one shard: sample up to <paramref name="samples"/> keys with a
    /// TTL, delete the expired ones; returns (sampled, expired) so the caller can repeat while more
    /// than a quarter of the sample was expired.
    /// </summary>
    public (int Sampled, int Expired) ExpireSample(long nowMs, int samples)
    {
        var sampled = 0;
        var expired = 0;
        for (var i = 0; i < samples && _volatileCount > 0; i++)
        {
            var index = _volatile[Random.Next(_volatileCount)];
            sampled++;
            if (_entries.At(index).ExpireAt <= nowMs)
            {
                Remove(index, Removal.Expired);
                expired++;
            }
        }

        return (sampled, expired);
    }

    /// <summary>A random live entry, or -1 when the shard is empty.</summary>
    public int RandomEntry()
    {
        if (_entries.Count == 0)
        {
            return -1;
        }

        while (true)
        {
            var index = Random.Next(_entries.HighWater);
            if (_entries.IsLive(index))
            {
                return index;
            }
        }
    }

    public int BucketCount => _buckets.Length;

    /// <summary>The entries chained in one bucket of the index (SCAN visits buckets in turn).</summary>
    public List<int> BucketEntries(int bucket)
    {
        var entries = new List<int>();
        var node = _buckets[bucket];
        while (node != 0)
        {
            entries.Add(node - 1);
            node = _entries.At(node - 1).Next;
        }

        return entries;
    }

    /// <summary>Every live entry index (KEYS, policy changes); order is the table's.</summary>
    public IEnumerable<int> LiveEntries()
    {
        for (var i = 0; i < _entries.HighWater; i++)
        {
            if (_entries.IsLive(i))
            {
                yield return i;
            }
        }
    }

    public static int Seconds(long nowMs) => (int)(nowMs / 1000);

    // ---- Internals ----------------------------------------------------------------------------------

    private void Admit(int index, long expireAt, long nowMs)
    {
        var cost = CostOf(index);
        Charge(cost);
        _policy.OnInsert(index, cost, Seconds(nowMs));
        if (expireAt != 0)
        {
            SetExpire(index, expireAt);
        }
    }

    private void WriteString(int index, ReadOnlySpan<byte> key, ReadOnlySpan<byte> value)
    {
        ref var entry = ref _entries.At(index);
        if (ChunkHeader + key.Length + value.Length <= SlabAllocator.MaxChunk)
        {
            entry.Location = WriteChunk(key, value);
            entry.Kind = ValueKind.InlineString;
        }
        else
        {
            entry.Location = WriteChunk(key, []);
            entry.Kind = ValueKind.LargeString;
            _objects[index] = value.ToArray();
        }
    }

    /// <summary>Throws before an entry is allocated: a chunk that cannot hold the key would leave a half-made entry behind.</summary>
    private static void CheckKeyLength(ReadOnlySpan<byte> key)
    {
        if (key.Length > MaxKeyLength)
        {
            throw new ArgumentException($"a key of {key.Length} bytes is over the {MaxKeyLength}-byte limit", nameof(key));
        }
    }

    private long WriteChunk(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value)
    {
        var size = ChunkHeader + key.Length + value.Length;
        if (size > SlabAllocator.MaxChunk)
        {
            throw new ArgumentException("key too large for a chunk", nameof(key));
        }

        var location = _slab.Allocate(size);
        var chunk = _slab.Span(location, size);
        BinaryPrimitives.WriteInt32LittleEndian(chunk, key.Length);
        BinaryPrimitives.WriteInt32LittleEndian(chunk[4..], value.Length);
        key.CopyTo(chunk[ChunkHeader..]);
        value.CopyTo(chunk[(ChunkHeader + key.Length)..]);
        return location;
    }

    /// <summary>Releases an entry's chunk and any value kept outside it; the entry is left without a location.</summary>
    private void FreeChunkAndValue(int index)
    {
        ref var entry = ref _entries.At(index);
        var header = _slab.Span(entry.Location, ChunkHeader);
        var size = ChunkHeader + BinaryPrimitives.ReadInt32LittleEndian(header) + BinaryPrimitives.ReadInt32LittleEndian(header[4..]);
        if (entry.Kind != ValueKind.InlineString)
        {
            _objects.Remove(index);
        }

        _slab.Free(entry.Location, size);
        entry.Location = -1;
    }

    private void Link(int index, int hash)
    {
        if (_entries.Count > _buckets.Length)
        {
            Grow();
        }

        ref var bucket = ref _buckets[hash & (_buckets.Length - 1)];
        _entries.At(index).Next = bucket;
        bucket = index + 1;
    }

    private void Unlink(int index, int hash)
    {
        ref var bucket = ref _buckets[hash & (_buckets.Length - 1)];
        if (bucket == index + 1)
        {
            bucket = _entries.At(index).Next;
            return;
        }

        var node = bucket;
        while (node != 0)
        {
            ref var entry = ref _entries.At(node - 1);
            if (entry.Next == index + 1)
            {
                entry.Next = _entries.At(index).Next;
                return;
            }

            node = entry.Next;
        }
    }

    private void Grow()
    {
        var buckets = new int[_buckets.Length * 2];
        var mask = buckets.Length - 1;
        foreach (var head in _buckets)
        {
            var node = head;
            while (node != 0)
            {
                ref var entry = ref _entries.At(node - 1);
                var next = entry.Next;
                entry.Next = buckets[entry.Hash & mask];
                buckets[entry.Hash & mask] = node;
                node = next;
            }
        }

        _buckets = buckets;
    }

    private void DropVolatile(int index)
    {
        ref var entry = ref _entries.At(index);
        var position = entry.VolatileSlot - 1;
        var last = _volatile[--_volatileCount];
        _volatile[position] = last;
        _entries.At(last).VolatileSlot = position + 1;
        entry.VolatileSlot = 0;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int HashOfKey(ReadOnlySpan<byte> key) => (int)Infra.Core.Placement.XxHash64.Hash(key);
}
