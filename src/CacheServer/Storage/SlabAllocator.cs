namespace Infra.CacheServer.Storage;

/// <summary>Who holds the chunks of a <see cref="SlabAllocator"/>: asked who owns a chunk, told when it moved.</summary>
internal interface ISlabOwner
{
    /// <summary>The owner (e.g. entry index) of the live chunk at <paramref name="handle"/>; -1 if none is found.</summary>
    int OwnerOf(long handle);

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
        BitConverter.TryWriteBytes(Span(handle, 8), _freeHead[cls]);
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

    private long PopFree(int cls)
    {
        var handle = _freeHead[cls];
        _freeHead[cls] = BitConverter.ToInt64(Span(handle, 8));
        _freeCount[cls]--;
        _pageLive[handle >> PageShift]++;
        return handle;
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
    /// (then nothing has changed). The donor's other pages with no live chunk leave it in the same walk of
    /// its free list and wait, empty, for the next class that needs a page — so taking back the free chunks
    /// of a million deleted keys walks their list once, not once per page. (Dropping those pages for the GC
    /// instead measured worse: 238 MB of RSS against 147 MB after the flood of 15 value sizes, as the
    /// pages a class took next were new arrays while the old ones waited for a collection.)
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
        var leaving = new bool[_pageCount];
        for (var p = 0; p < _pageCount; p++)
        {
            if (_pageClass[p] == donor && p != cutting)
            {
                leaving[p] = _pageLive[p] == 0;
                if (victim < 0 || _pageLive[p] < _pageLive[victim])
                {
                    victim = p;
                }
            }
        }

        if (victim < 0)
        {
            return -1;
        }

        var size = ClassSizes[donor];
        var perPage = PageSize / size;
        var isFree = new bool[perPage];
        for (var handle = _freeHead[donor]; handle >= 0; handle = BitConverter.ToInt64(Span(handle, 8)))
        {
            if (handle >> PageShift == victim)
            {
                isFree[(int)(handle & (PageSize - 1)) / size] = true;
            }
        }

        // Find every owner before changing anything: a chunk nobody owns would be a bug, and moving the
        // others around it would hide it; the page then simply stays.
        var owners = new int[perPage];
        var pageBase = (long)victim << PageShift;
        for (var i = 0; i < perPage; i++)
        {
            owners[i] = isFree[i] ? -1 : _owner.OwnerOf(pageBase + ((long)i * size));
            if (!isFree[i] && owners[i] < 0)
            {
                return -1;
            }
        }

        leaving[victim] = true;
        UnlinkFree(donor, leaving);
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

        for (var p = 0; p < leaving.Length; p++)
        {
            if (leaving[p] && p != victim)
            {
                _pageClass[p] = NoClass;
                _emptyPages.Push(p);
            }
        }

        PagesMoved++;
        return victim;
    }

    /// <summary>Takes the free chunks that lie in the <paramref name="leaving"/> pages off the class's free list.</summary>
    private void UnlinkFree(int cls, bool[] leaving)
    {
        var previous = -1L;
        var handle = _freeHead[cls];
        while (handle >= 0)
        {
            var next = BitConverter.ToInt64(Span(handle, 8));
            if (leaving[handle >> PageShift])
            {
                if (previous < 0)
                {
                    _freeHead[cls] = next;
                }
                else
                {
                    BitConverter.TryWriteBytes(Span(previous, 8), next);
                }

                _freeCount[cls]--;
            }
            else
            {
                previous = handle;
            }

            handle = next;
        }
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
