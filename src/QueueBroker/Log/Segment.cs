using System.Buffers.Binary;
using System.Globalization;

namespace Infra.QueueBroker.Log;

/// <summary>
/// One segment of a partition's log: <c>{baseOffset:D20}.log</c> holding batches back to back, and
/// <c>{baseOffset:D20}.index</c>, a sparse index (one entry per <c>indexInterval</c> bytes) of
/// (offset − base, position) pairs. The index is derived data: it is fsync'd only when recovery cuts or
/// empties it (so no entry past a cut comes back after a power loss), and it is rebuilt from
/// the log whenever it does not check out.
/// </summary>
internal sealed class Segment : IDisposable
{
    private const int IndexEntrySize = 8;
    private readonly ILogFileSystem _fs;
    private readonly int _indexInterval;
    private readonly List<(long Offset, long Position)> _index = [];
    private ILogFile? _indexFile;

    /// <summary>
    /// Position of the last index entry; 0 with none (the segment's start needs no entry: a lookup with
    /// nothing before it starts there). It was long.MinValue once, and <c>position − MinValue</c>
    /// overflows to a negative number: no entry was ever added to a new segment's index, so every read
    /// of a partition scanned its active segment from the start (3 MB a read, on average, for a consumer
    /// at the head of a benchmark's log).
    /// </summary>
    private long _lastIndexedPosition;

    private Segment(ILogFileSystem fs, string directory, long baseOffset, ILogFile file, int indexInterval, DateTimeOffset createdAt)
    {
        _fs = fs;
        BaseOffset = baseOffset;
        File = file;
        LogPath = Path.Combine(directory, FileName(baseOffset, ".log"));
        IndexPath = Path.Combine(directory, FileName(baseOffset, ".index"));
        _indexInterval = indexInterval;
        CreatedAt = createdAt;
        NextOffset = baseOffset;
    }

    public long BaseOffset { get; }

    public ILogFile File { get; }

    public string LogPath { get; }

    public string IndexPath { get; }

    /// <summary>Bytes of whole batches written (the file may be longer only before recovery truncates it).</summary>
    public long Size { get; set; }

    /// <summary>The offset after the last batch written.</summary>
    public long NextOffset { get; set; }

    public DateTimeOffset CreatedAt { get; }

    /// <summary>Whether the segment's full size has been reserved on disk (preallocation) since it was opened.</summary>
    public bool Reserved { get; set; }

    public static string FileName(long baseOffset, string suffix) => baseOffset.ToString("D20", CultureInfo.InvariantCulture) + suffix;

    public static bool TryParseName(string name, out long baseOffset)
    {
        baseOffset = 0;
        return name.Length == 24 && name.EndsWith(".log", StringComparison.Ordinal)
            && long.TryParse(name.AsSpan(0, 20), NumberStyles.None, CultureInfo.InvariantCulture, out baseOffset);
    }

    /// <summary>A new empty segment (the caller makes the directory entry durable).</summary>
    public static Segment Create(ILogFileSystem fs, string directory, long baseOffset, int indexInterval, DateTimeOffset now)
    {
        var file = fs.Open(Path.Combine(directory, FileName(baseOffset, ".log")), create: true);
        var segment = new Segment(fs, directory, baseOffset, file, indexInterval, now);
        segment.ResetIndex();
        return segment;
    }

    /// <summary>An existing segment; its size and index are set by the caller (recovery).</summary>
    public static Segment Open(ILogFileSystem fs, string directory, long baseOffset, int indexInterval, DateTimeOffset createdAt)
    {
        var file = fs.Open(Path.Combine(directory, FileName(baseOffset, ".log")), create: false);
        return new Segment(fs, directory, baseOffset, file, indexInterval, createdAt);
    }

    /// <summary>Records a batch written at <paramref name="position"/>; indexes it when far enough from the last entry.</summary>
    public void Track(long baseOffset, int count, long position, int size)
    {
        if (position - _lastIndexedPosition >= _indexInterval)
        {
            lock (_index)
            {
                _index.Add((baseOffset, position));
            }

            _lastIndexedPosition = position;
            if (_indexFile is not null)
            {
                Span<byte> entry = stackalloc byte[IndexEntrySize];
                BinaryPrimitives.WriteInt32BigEndian(entry, (int)(baseOffset - BaseOffset));
                BinaryPrimitives.WriteInt32BigEndian(entry[4..], (int)position);
                _indexFile.Write((_index.Count - 1) * (long)IndexEntrySize, entry);
            }
        }

        Size = position + size;
        NextOffset = baseOffset + count;
    }

    /// <summary>Position of the last indexed batch at or before <paramref name="offset"/> (0 when none).</summary>
    public long PositionFor(long offset)
    {
        lock (_index)
        {
            int lo = 0, hi = _index.Count - 1;
            var found = 0L;
            while (lo <= hi)
            {
                var mid = (lo + hi) >>> 1;
                if (_index[mid].Offset <= offset)
                {
                    found = _index[mid].Position;
                    lo = mid + 1;
                }
                else
                {
                    hi = mid - 1;
                }
            }

            return found;
        }
    }

    /// <summary>Drops the index (before a rebuild by scanning) and starts a fresh index file.</summary>
    public void ResetIndex()
    {
        lock (_index)
        {
            _index.Clear();
        }

        _lastIndexedPosition = 0;
        _indexFile?.Dispose();
        _indexFile = _fs.Open(IndexPath, create: true);
        _indexFile.Truncate(0);
        _indexFile.Sync(); // durably empty before new entries: a power loss must not bring old ones back
    }

    /// <summary>Position of the last index entry (0 with none): where indexing by a scan picks up.</summary>
    public long LastIndexedPosition => _lastIndexedPosition;

    /// <summary>Offset of the last index entry (the segment's base offset with none).</summary>
    public long LastIndexedOffset
    {
        get
        {
            lock (_index)
            {
                return _index.Count == 0 ? BaseOffset : _index[^1].Offset;
            }
        }
    }

    /// <summary>
    /// Loads the index file, keeping the entries below <paramref name="limit"/> (data past it is not
    /// trusted yet: recovery scans it and indexes what it keeps) and cutting the file to them, so no stale
    /// entry outlives a truncated tail. False when the file is missing or does not check out (entries out
    /// of order): the caller starts a fresh index. Either way the caller indexes, by a scan, the part from
    /// <see cref="LastIndexedPosition"/> on that the file did not cover (an index is never fsync'd, so a
    /// crash may have cut it short).
    /// </summary>
    public bool TryLoadIndex(long limit)
    {
        var bytes = _fs.ReadAll(IndexPath);
        if (bytes is null)
        {
            return false;
        }

        var entries = new List<(long, long)>();
        long lastOffset = -1, lastPosition = 0;
        for (var at = 0; at + IndexEntrySize <= bytes.Length; at += IndexEntrySize)
        {
            var offset = BaseOffset + BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(at));
            long position = BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(at + 4));
            if (position >= limit)
            {
                break;
            }

            if (offset <= lastOffset || position <= lastPosition || offset < BaseOffset)
            {
                return false;
            }

            entries.Add((offset, position));
            (lastOffset, lastPosition) = (offset, position);
        }

        lock (_index)
        {
            _index.Clear();
            _index.AddRange(entries);
        }

        _lastIndexedPosition = lastPosition;
        _indexFile?.Dispose();
        _indexFile = _fs.Open(IndexPath, create: true);
        if (bytes.Length != entries.Count * IndexEntrySize)
        {
            _indexFile.Truncate(entries.Count * (long)IndexEntrySize);
            _indexFile.Sync(); // the cut entries point past a cut log: they must not come back after a power loss
        }

        return true;
    }

    public void Dispose()
    {
        File.Dispose();
        _indexFile?.Dispose();
    }
}
