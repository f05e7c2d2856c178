namespace Infra.CacheServer.Storage;

/// <summary>
/// Memcached-style slabs for one shard: 64 KiB pages cut into chunks of one size class each, freed
/// chunks kept on a per-class free list (linked through the chunks themselves). A key and its value
/// live in one chunk, so a million small entries are a few hundred pages instead of a million
/// objects: no per-object header, nothing for the GC to trace. A chunk is addressed by a handle,
/// <c>page &lt;&lt; 16 | offset</c>.
/// </summary>
internal sealed class SlabAllocator
{
    public const int PageShift = 16;
    public const int PageSize = 1 << PageShift;

    /// <summary>Largest chunk; bigger values are kept in their own arrays.</summary>
    public const int MaxChunk = 16 * 1024;

    private static readonly int[] ClassSizes = BuildClasses();
    private static readonly byte[] ClassBySize = BuildClassIndex();

    private readonly long[] _freeHead = new long[ClassSizes.Length];
    private readonly long[] _bumpNext = new long[ClassSizes.Length];
    private readonly int[] _bumpLeft = new int[ClassSizes.Length];
    private byte[][] _pages = new byte[4][];
    private int _pageCount;

    public SlabAllocator()
    {
        Array.Fill(_freeHead, -1);
    }

    /// <summary>Bytes held in pages (what the process really uses for entry data).</summary>
    public long ReservedBytes => (long)_pageCount * PageSize;

    /// <summary>The chunk size a request of <paramref name="size"/> bytes gets.</summary>
    public static int ChunkSize(int size) => ClassSizes[ClassBySize[(size + 7) >> 3]];

    public long Allocate(int size)
    {
        var cls = ClassBySize[(size + 7) >> 3];
        var handle = _freeHead[cls];
        if (handle >= 0)
        {
            _freeHead[cls] = BitConverter.ToInt64(Span(handle, 8));
            return handle;
        }

        if (_bumpLeft[cls] == 0)
        {
            NewPage(cls);
        }

        handle = _bumpNext[cls];
        _bumpNext[cls] = handle + ClassSizes[cls];
        _bumpLeft[cls]--;
        return handle;
    }

    public void Free(long handle, int size)
    {
        var cls = ClassBySize[(size + 7) >> 3];
        BitConverter.TryWriteBytes(Span(handle, 8), _freeHead[cls]);
        _freeHead[cls] = handle;
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
        _pageCount = 0;
        Array.Fill(_freeHead, -1);
        Array.Clear(_bumpLeft);
    }

    private void NewPage(int cls)
    {
        if (_pageCount == _pages.Length)
        {
            Array.Resize(ref _pages, _pages.Length * 2);
        }

        _pages[_pageCount] = new byte[PageSize];
        _bumpNext[cls] = (long)_pageCount << PageShift;
        _bumpLeft[cls] = PageSize / ClassSizes[cls];
        _pageCount++;
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
