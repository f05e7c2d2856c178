using System.Runtime.CompilerServices;

namespace Infra.CacheServer.Storage;

/// <summary>What an entry's value is.</summary>
internal enum ValueKind : byte
{
    /// <summary>A string stored in the entry's chunk after its key.</summary>
    InlineString = 0,

    /// <summary>A string too large for a chunk, kept in its own array.</summary>
    LargeString = 1,

    Hash = 2,
}

/// <summary>
/// One key. 40 bytes, no object references: a table of a million entries is invisible to the GC.
/// Links are entry index + 1, 0 meaning none.
/// </summary>
internal struct Entry
{
    /// <summary>Slab handle of the chunk: [int keyLength][int valueLength][key][inline value].</summary>
    public long Location;

    /// <summary>Unix milliseconds at which the key expires; 0 for never.</summary>
    public long ExpireAt;

    public int Hash;

    /// <summary>Next entry in the hash bucket's chain, or in the free list.</summary>
    public int Next;

    /// <summary>Eviction policy links (a doubly linked list per policy queue).</summary>
    public int Prev;

    public int After;

    /// <summary>Bits 0–1 the <see cref="ValueKind"/>, 2–3 the policy queue, 8–31 the position + 1 in the volatile-key list.</summary>
    public int Meta;

    /// <summary>Policy data: last access (seconds) for LRU-style policies, counter and decay time for LFU.</summary>
    public int Access;

    public ValueKind Kind
    {
        readonly get => (ValueKind)(Meta & 3);
        set => Meta = (Meta & ~3) | (int)value;
    }

    public int Queue
    {
        readonly get => (Meta >> 2) & 3;
        set => Meta = (Meta & ~0xC) | ((value & 3) << 2);
    }

    /// <summary>Position + 1 in the shard's list of keys with a TTL; 0 when the key has none.</summary>
    public int VolatileSlot
    {
        readonly get => (int)((uint)Meta >> 8);
        set => Meta = (Meta & 0xFF) | (value << 8);
    }
}

/// <summary>
/// Entries in segments of 4096 (160 KiB each): growing never copies, and the slack is at most one
/// segment. Free entries are chained through <see cref="Entry.Next"/>.
/// </summary>
internal sealed class EntryTable
{
    public const int MaxVolatileSlot = (1 << 24) - 1;
    private const int SegmentShift = 12;
    private const int SegmentSize = 1 << SegmentShift;

    private Entry[][] _segments = [];
    private int _highWater;
    private int _freeList;

    /// <summary>Indices handed out so far (live or free): the range random sampling draws from.</summary>
    public int HighWater => _highWater;

    public int Count { get; private set; }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref Entry At(int index) => ref _segments[index >> SegmentShift][index & (SegmentSize - 1)];

    /// <summary>
    /// The entry at an index, or a null reference when the index is not backed — for callers that
    /// read without the shard's lock (prefetch hints), where the table may be growing meanwhile.
    /// </summary>
    public ref Entry Peek(int index)
    {
        var segments = _segments;
        var segment = (uint)(index >> SegmentShift) < (uint)segments.Length ? segments[index >> SegmentShift] : null;
        if (segment is null)
        {
            return ref Unsafe.NullRef<Entry>();
        }

        return ref segment[index & (SegmentSize - 1)];
    }

    public int Allocate()
    {
        Count++;
        if (_freeList != 0)
        {
            var index = _freeList - 1;
            ref var free = ref At(index);
            _freeList = free.Next;
            free = default;
            return index;
        }

        if (_highWater >> SegmentShift == _segments.Length)
        {
            Array.Resize(ref _segments, _segments.Length + 1);
            _segments[^1] = new Entry[SegmentSize];
        }

        return _highWater++;
    }

    public void Free(int index)
    {
        Count--;
        ref var entry = ref At(index);
        entry = default;
        entry.Location = -1;
        entry.Next = _freeList;
        _freeList = index + 1;
    }

    /// <summary>Whether an index holds a live entry (free ones have no chunk).</summary>
    public bool IsLive(int index) => index < _highWater && At(index).Location >= 0;

    public void Clear()
    {
        _segments = [];
        _highWater = 0;
        _freeList = 0;
        Count = 0;
    }

    /// <summary>Bytes of entry structures reserved.</summary>
    public long ReservedBytes => (long)_segments.Length * SegmentSize * Unsafe.SizeOf<Entry>();
}
