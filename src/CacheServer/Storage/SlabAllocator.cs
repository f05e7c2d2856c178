namespace Infra.CacheServer.Storage;

/// <summary>Who holds the chunks of a <see cref="SlabAllocator"/>: asked who owns a chunk, told when it moved.</summary>
internal interface ISlabOwner
{
    /// <summary>
    /// The owner (e.g. entry index) of the chunk of <paramref name="chunkSize"/> bytes at
    /// <paramref name="handle"/>; -1 if it has none. The chunk may be free: its bytes are then list
    /// links, not what an owner wrote, and must be read with care (bounded by the chunk).
    /// </summary>
    int OwnerOf(long handle, int chunkSize);

    /// <summary>The chunk of <paramref name="owner"/> now lives at <paramref name="handle"/> (same bytes).</summary>
    void Moved(int owner, long handle);
}

/// <summary>
/// Memcached-style slabs for one shard: 64 KiB pages cut into chunks of one size class each, freed
/// chunks kept on a per-class free list (linked through the chunks themselves). A key and its value
/// live in one chunk, so a million small entries are a few hundred pages instead of a million
/// objects: no per-object header, nothing for the GC to trace. A chunk is addressed by a handle,
/// <c>page &lt;&lt; 16 | offset</c>.
/// <para>
/// Pages move between size classes (memcached's slab rebalancing, without its evictions): before it
/// takes a new page from the runtime, a class that needs one looks for another class holding at least a
/// page's worth of free chunks, empties that class's page with the fewest live chunks by moving them
/// into its free chunks elsewhere (the owner is told each new handle), and takes the page over. So the
/// pages in use stay near the bytes stored — at most about one page of free chunks per class — however
/// the sizes of the values shift, instead of each class keeping the most it ever held. A move copies
/// at most one page and looks up at most one page's chunks, paid for by the page it frees.
/// </para>
/// </summary>
internal sealed class SlabAllocator
{
    public const int PageShift = 16;
    public const int PageSize = 1 << PageShift;

    /// <summary>Largest chunk; bigger values are kept in their own arrays.</summary>
    public const int MaxChunk = 16 * 1024;

    /// <summary>The class of an empty page waiting for one.</summary>
    private const byte NoClass = byte.MaxValue;

    private static readonly int[] ClassSizes = BuildClasses();
    private static readonly byte[] ClassBySize = BuildClassIndex();

    private readonly long[] _freeHead = new long[ClassSizes.Length];
    private readonly long[] _bumpNext = new long[ClassSizes.Length];
    private readonly int[] _bumpLeft = new int[ClassSizes.Length];
    private readonly int[] _freeCount = new int[ClassSizes.Length];
    private readonly ISlabOwner? _owner;
    private byte[][] _pages = new byte[4][];
    private byte[] _pageClass = new byte[4];
    private int[] _pageLive = new int[4];
    private readonly Stack<int> _emptyPages = new();
    private int _pageCount;

    /// <param name="owner">Who to ask and tell when a page changes class; without one, pages never move.</param>
    public SlabAllocator(ISlabOwner? owner = null)
    {
        _owner = owner;
        Array.Fill(_freeHead, -1);
    }

    /// <summary>Pages taken over by another size class so far.</summary>
    public long PagesMoved { get; private set; }

    /// <summary>Live chunks copied to empty those pages.</summary>
    public long ChunksMoved { get; private set; }

    /// <summary>Bytes held in pages (what the process really uses for entry data).</summary>
    public long ReservedBytes => (long)_pageCount * PageSize;

    /// <summary>The chunk size a request of <paramref name="size"/> bytes gets.</summary>
    public static int ChunkSize(int size) => ClassSizes[ClassBySize[(size + 7) >> 3]];

    public long Allocate(int size)
    {
        var cls = ClassBySize[(size + 7) >> 3];
        if (_freeHead[cls] >= 0)
        {
            return PopFree(cls);
        }

        if (_bumpLeft[cls] == 0)
        {
            NewPage(cls);
        }

        var handle = _bumpNext[cls];
        _bumpNext[cls] = handle + ClassSizes[cls];
        _bumpLeft[cls]--;
        _pageLive[handle >> PageShift]++;
        return handle;
    }

    public void Free(long handle, int size)
    {
        var cls = ClassBySize[(size + 7) >> 3];
        var head = _freeHead[cls];
        SetLinks(handle, next: head, previous: -1);
        if (head >= 0)
        {
            SetPrevious(head, handle);
        }

        _freeHead[cls] = handle;
        _freeCount[cls]++;
        _pageLive[handle >> PageShift]--;
    }

    /// <summary>Bytes in chunks on the free lists (allocated once, free now), for tests and INFO.</summary>
    public long FreeBytes
    {
        get
        {
            var total = 0L;
            for (var cls = 0; cls < ClassSizes.Length; cls++)
            {
                total += (long)_freeCount[cls] * ClassSizes[cls];
            }

            return total;
        }
    }

    // A free chunk holds its free-list links: [next handle][previous handle] (every chunk has 16 bytes),
    // so one chunk leaves the list in O(1) wherever it is — a page can be emptied without walking the list.
    private long NextFree(long handle) => BitConverter.ToInt64(Span(handle, 8));

    private long PreviousFree(long handle) => BitConverter.ToInt64(Span(handle + 8, 8));

    private void SetLinks(long handle, long next, long previous)
    {
        SetNext(handle, next);
        SetPrevious(handle, previous);
    }

    private void SetNext(long handle, long next) => BitConverter.TryWriteBytes(Span(handle, 8), next);

    private void SetPrevious(long handle, long previous) => BitConverter.TryWriteBytes(Span(handle + 8, 8), previous);

    private long PopFree(int cls)
    {
        var handle = _freeHead[cls];
        var next = NextFree(handle);
        _freeHead[cls] = next;
        if (next >= 0)
        {
            SetPrevious(next, -1);
        }

        _freeCount[cls]--;
        _pageLive[handle >> PageShift]++;
        return handle;
    }

    /// <summary>Takes one free chunk off its class's list (it stays uncounted as live: its page is leaving the class).</summary>
    private void Unlink(int cls, long handle)
    {
        var (next, previous) = (NextFree(handle), PreviousFree(handle));
        if (previous >= 0)
        {
            SetNext(previous, next);
        }
        else
        {
            _freeHead[cls] = next;
        }

        if (next >= 0)
        {
            SetPrevious(next, previous);
        }

        _freeCount[cls]--;
    }

    public Span<byte> Span(long handle, int length) =>
        _pages[(int)(handle >> PageShift)].AsSpan((int)(handle & (PageSize - 1)), length);

    /// <summary>Prefetches the start of a chunk; safe without the lock (a stale handle is skipped or wasted).</summary>
    public void Prefetch(long handle)
    {
        var pages = _pages;
        var index = handle >> PageShift;
        var page = (ulong)index < (ulong)pages.Length ? pages[index] : null;
        if (page is not null)
        {
            MemoryHint.Prefetch(ref page[(int)(handle & (PageSize - 1))]);
        }
    }

    /// <summary>Drops every page (FLUSHALL).</summary>
    public void Clear()
    {
        _pages = new byte[4][];
        _pageClass = new byte[4];
        _pageLive = new int[4];
        _pageCount = 0;
        _emptyPages.Clear();
        Array.Fill(_freeHead, -1);
        Array.Clear(_freeCount);
        Array.Clear(_bumpLeft);
    }

    private void NewPage(int cls)
    {
        var page = _emptyPages.Count > 0 ? _emptyPages.Pop() : TakeOverPage(cls);
        if (page < 0)
        {
            if (_pageCount == _pages.Length)
            {
                Array.Resize(ref _pages, _pages.Length * 2);
                Array.Resize(ref _pageClass, _pages.Length);
                Array.Resize(ref _pageLive, _pages.Length);
            }

            page = _pageCount++;
            _pages[page] = new byte[PageSize];
        }

        _pageClass[page] = (byte)cls;
        _pageLive[page] = 0;
        _bumpNext[cls] = (long)page << PageShift;
        _bumpLeft[cls] = PageSize / ClassSizes[cls];
    }

    /// <summary>
    /// Empties a page of the class with the most idle free chunks (at least a page's worth) for
    /// <paramref name="cls"/>; its index, or -1 when no class has that many or an owner is not found
    /// (then nothing has changed). The work is one page's chunks (owner lookups, copies of the live ones,
    /// O(1) unlinks of the free ones) plus a pass over the page table, never the free list. The donor's
    /// other pages with no live chunk leave with it and wait, empty, for the next class that needs a page.
    /// (Dropping those pages for the GC instead measured worse: 238 MB of RSS against 147 MB after the
    /// flood of 15 value sizes, as the pages a class took next were new arrays while the old ones waited
    /// for a collection.)
    /// </summary>
    private int TakeOverPage(int cls)
    {
        if (_owner is null)
        {
            return -1;
        }

        var donor = -1;
        var donorBytes = 0L;
        for (var c = 0; c < ClassSizes.Length; c++)
        {
            var bytes = (long)_freeCount[c] * ClassSizes[c];
            if (c != cls && _freeCount[c] >= PageSize / ClassSizes[c] && bytes > donorBytes)
            {
                (donor, donorBytes) = (c, bytes);
            }
        }

        if (donor < 0)
        {
            return -1;
        }

        // The donor's page with the fewest live chunks, not the one it is still cutting (whose tail is on
        // no free list). With at least a page's worth of free chunks, the ones outside that page can take
        // every live chunk in it: free outside = free − (per page − live) ≥ live.
        var cutting = _bumpLeft[donor] > 0 ? (int)(_bumpNext[donor] >> PageShift) : -1;
        var victim = -1;
        for (var p = 0; p < _pageCount; p++)
        {
            if (_pageClass[p] == donor && p != cutting && (victim < 0 || _pageLive[p] < _pageLive[victim]))
            {
                victim = p;
            }
        }

        if (victim < 0)
        {
            return -1;
        }

        // Which chunks of the victim are live: those an owner claims (a free chunk's first bytes are list
        // links, and no entry points at it). Every owner is found before anything changes: a count that
        // differs from the page's live count would be a bug, and moving chunks around it would hide it.
        var size = ClassSizes[donor];
        var perPage = PageSize / size;
        var pageBase = (long)victim << PageShift;
        var owners = new int[perPage];
        var found = 0;
        for (var i = 0; i < perPage; i++)
        {
            owners[i] = _pageLive[victim] == 0 ? -1 : _owner.OwnerOf(pageBase + ((long)i * size), size);
            found += owners[i] >= 0 ? 1 : 0;
        }

        if (found != _pageLive[victim])
        {
            return -1;
        }

        // The donor's other empty pages leave with it (every chunk of theirs is free), for any class.
        for (var p = 0; p < _pageCount; p++)
        {
            if (p != victim && p != cutting && _pageClass[p] == donor && _pageLive[p] == 0)
            {
                for (var i = 0; i < perPage; i++)
                {
                    Unlink(donor, ((long)p << PageShift) + ((long)i * size));
                }

                _pageClass[p] = NoClass;
                _emptyPages.Push(p);
            }
        }

        for (var i = 0; i < perPage; i++)
        {
            if (owners[i] < 0)
            {
                Unlink(donor, pageBase + ((long)i * size));
            }
        }

        for (var i = 0; i < perPage; i++)
        {
            if (owners[i] >= 0)
            {
                var from = pageBase + ((long)i * size);
                var to = PopFree(donor);
                Span(from, size).CopyTo(Span(to, size));
                _owner.Moved(owners[i], to);
                ChunksMoved++;
            }
        }

        PagesMoved++;
        return victim;
    }

    /// <summary>Multiples of 8 up to 128 bytes, then steps of about 12.5% up to <see cref="MaxChunk"/>.</summary>
    private static int[] BuildClasses()
    {
        var sizes = new List<int>();
        for (var size = 16; size <= 128; size += 8)
        {
            sizes.Add(size);
        }

        while (sizes[^1] < MaxChunk)
        {
            var next = (int)Math.Min(MaxChunk, ((sizes[^1] * 9 / 8) + 7) & ~7);
            sizes.Add(next);
        }

        return [.. sizes];
    }

    private static byte[] BuildClassIndex()
    {
        var index = new byte[(MaxChunk >> 3) + 1];
        var cls = 0;
        for (var units = 0; units < index.Length; units++)
        {
            while (ClassSizes[cls] < units << 3)
            {
                cls++;
            }

            index[units] = (byte)cls;
        }

        return index;
    }
}
