using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using Infra.Core.Storage;
using Microsoft.Extensions.Logging;

namespace Infra.QueueBroker.Log;

/// <summary>What an append returned: where the batch went and when it is durable.</summary>
internal readonly record struct AppendResult(long BaseOffset, int Count, Task Durable, bool Duplicate);

/// <summary>Visits one batch during a scan; false stops the scan before this batch.</summary>
internal delegate bool BatchVisitor(in BatchHeader header, long position, ReadOnlySpan<byte> batch);

/// <summary>
/// The log of one partition: segments of batches, appended with group commit and read by offset.
/// <para>
/// Appends are encoded into a pending buffer under a lock and get their offsets at once. One flusher
/// loop takes everything pending, writes it with one write(2) per segment and (under
/// <see cref="FsyncMode.Always"/>) one fsync, then completes every append of that cycle together: the
/// more producers wait, the more one fsync covers. Readers see only the committed end (what has been
/// acknowledged), so a consumer never reads — and a group never commits past — data a crash could take.
/// </para>
/// <para>
/// A failed write or fsync stops the log for good: pending and later appends fail with
/// <see cref="ErrorCode.PartitionFailed"/>; fsync is never retried (after a failed fsync the kernel may
/// have dropped the dirty pages, so a retry that succeeds proves nothing).
/// </para>
/// </summary>
internal sealed partial class SegmentLog : IAsyncDisposable
{
    public const string RecoveryPointFile = "recovery-point";
    private const uint RecoveryPointMagic = 0x49515250; // "IQRP"

    private readonly ILogFileSystem _fs;
    private readonly string _directory;
    private readonly LogSettings _settings;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private readonly List<Segment> _segments;
    private readonly ProducerTable _producers;
    private readonly ProducerTable _durableProducers;
    private readonly List<PendingBatch> _unsynced = [];
    private readonly List<Segment> _retired = [];
    private readonly SemaphoreSlim _signal = new(0);
    private readonly Task _flusher;

    private Segment[] _view;
    private const int InitialPendingBytes = 64 * 1024;
    private byte[] _pending = new byte[InitialPendingBytes];
    private byte[] _spare = new byte[InitialPendingBytes];

    /// <summary>Flusher only: consecutive cycles that used less than a sixteenth of their buffer.</summary>
    private int _smallCycles;
    private int _pendingLength;
    private List<PendingBatch> _pendingBatches = [];
    private List<PendingBatch> _spareBatches = [];
    private TaskCompletionSource _cycle = new();
    private TaskCompletionSource _dataArrived = NewSignal();
    private long _nextOffset;
    private long _committedEnd;
    private SyncPoint _synced;
    private Exception? _failure;
    private bool _closing;
    private int _signalled;
    private long _lastSyncTimestamp;
    private long _lastRecoveryPointTimestamp;
    private SyncPoint _recoveryPoint;

    private SegmentLog(ILogFileSystem fs, string directory, LogSettings settings, TimeProvider time, ILogger logger, List<Segment> segments, ProducerTable producers, long nextOffset)
    {
        _fs = fs;
        _directory = directory;
        _settings = settings;
        _time = time;
        _logger = logger;
        _segments = segments;
        _view = [.. segments];
        _producers = producers;
        _durableProducers = producers.Clone();
        _nextOffset = nextOffset;
        _committedEnd = nextOffset;
        var active = segments[^1];
        _synced = new SyncPoint(active.BaseOffset, active.Size, nextOffset);
        _recoveryPoint = _synced;
        _lastSyncTimestamp = time.GetTimestamp();
        _lastRecoveryPointTimestamp = _lastSyncTimestamp;
        // Its own thread: the flusher blocks in write and fdatasync most of the time, which on a
        // thread-pool thread would take a worker from the request continuations.
        _flusher = Task.Factory.StartNew(FlushLoop, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }

    public string Directory => _directory;

    /// <summary>The first offset still in the log (retention moves it forward).</summary>
    public long StartOffset => Volatile.Read(ref _view)[0].BaseOffset;

    /// <summary>The offset after the last acknowledged message: what readers may see.</summary>
    public long CommittedEnd => Volatile.Read(ref _committedEnd);

    /// <summary>The offset the next append gets.</summary>
    public long NextOffset
    {
        get
        {
            lock (_lock)
            {
                return _nextOffset;
            }
        }
    }

    public int SegmentCount => Volatile.Read(ref _view).Length;

    /// <summary>Bytes in all segments.</summary>
    public long SizeBytes => Volatile.Read(ref _view).Sum(s => s.Size);

    /// <summary>Tests: the sizes of the two append buffers.</summary>
    internal (int Pending, int Spare) BufferSizes
    {
        get
        {
            lock (_lock)
            {
                return (_pending.Length, _spare.Length);
            }
        }
    }

    /// <summary>Bytes appended but not yet written (and, under Always, fsync'd).</summary>
    public int PendingBytes
    {
        get
        {
            lock (_lock)
            {
                return _pendingLength;
            }
        }
    }

    /// <summary>Why the log stopped, or null while it works.</summary>
    public Exception? Failure => Volatile.Read(ref _failure);

    /// <summary>Raised after each fsync with its duration (for the latency histogram).</summary>
    public event Action<TimeSpan>? Synced;

    /// <summary>
    /// Opens the log in <paramref name="directory"/> (creating it when new) and recovers: segments before
    /// the recovery point are trusted; from it on every batch is checked and a torn or corrupt tail is
    /// truncated to the last valid batch. A recovery point that points past the data stops the log.
    /// </summary>
    public static SegmentLog Open(ILogFileSystem fs, string directory, LogSettings settings, TimeProvider time, ILogger logger)
    {
        fs.CreateDirectory(directory);
        foreach (var temp in fs.List(directory, ".tmp"))
        {
            fs.Delete(Path.Combine(directory, temp));
        }

        var bases = fs.List(directory, ".log")
            .Select(name => Segment.TryParseName(name, out var b) ? b : -1)
            .Where(b => b >= 0)
            .Order()
            .ToList();
        var point = ReadRecoveryPoint(fs, directory, logger, out var producers);
        var segments = new List<Segment>();
        try
        {
            if (bases.Count == 0)
            {
                if (point is { Offset: > 0 })
                {
                    throw Corrupt(directory, $"the recovery point is at offset {point.Value.Offset} but no segment files are left");
                }

                // Not reserved yet: the first write reserves it, so partitions that are never written take
                // no disk (a topic of many partitions would otherwise reserve them all at once).
                segments.Add(Segment.Create(fs, directory, 0, settings.IndexIntervalBytes, time.GetUtcNow()));
                fs.SyncDirectory(directory);
                return new SegmentLog(fs, directory, settings, time, logger, segments, producers, 0);
            }

            int scanFrom;
            long scanPosition, expected;
            if (point is null || point.Value.SegmentBase < bases[0])
            {
                (scanFrom, scanPosition, expected) = (0, 0, bases[0]);
            }
            else if (bases.IndexOf(point.Value.SegmentBase) is var found and >= 0)
            {
                (scanFrom, scanPosition, expected) = (found, point.Value.Position, point.Value.Offset);
            }
            else
            {
                throw Corrupt(directory, $"segment {Segment.FileName(point.Value.SegmentBase, ".log")} named by the recovery point is missing");
            }

            for (var i = 0; i < scanFrom; i++)
            {
                var trusted = Segment.Open(fs, directory, bases[i], settings.IndexIntervalBytes, fs.LastWriteTime(Path.Combine(directory, Segment.FileName(bases[i], ".log"))));
                segments.Add(trusted);
                trusted.Size = trusted.File.Length;
                trusted.NextOffset = bases[i + 1];
                LoadIndex(trusted, trusted.Size, settings);
            }

            var nextOffset = RecoverTail(fs, directory, settings, time, logger, bases, scanFrom, scanPosition, expected, segments, producers);
            return new SegmentLog(fs, directory, settings, time, logger, segments, producers, nextOffset);
        }
        catch
        {
            foreach (var segment in segments)
            {
                segment.Dispose();
            }

            throw;
        }
    }

    private static long RecoverTail(
        ILogFileSystem fs, string directory, LogSettings settings, TimeProvider time, ILogger logger,
        List<long> bases, int scanFrom, long scanPosition, long expected, List<Segment> segments, ProducerTable producers)
    {
        for (var i = scanFrom; i < bases.Count; i++)
        {
            var segment = Segment.Open(fs, directory, bases[i], settings.IndexIntervalBytes, time.GetUtcNow());
            segments.Add(segment);
            var length = segment.File.Length;
            var position = i == scanFrom ? scanPosition : 0;
            if (position > length)
            {
                throw Corrupt(directory, $"the recovery point is at byte {position} of {Path.GetFileName(segment.LogPath)}, which has only {length} bytes: data that was durable is gone");
            }

            if (position == 0)
            {
                if (i == scanFrom)
                {
                    expected = bases[i];
                }

                segment.ResetIndex();
            }
            else
            {
                LoadIndex(segment, position, settings); // up to the recovery point; the scan below goes on
            }

            segment.Size = position;
            segment.NextOffset = expected;
            var next = expected;
            BatchCheck outcome;
            if (bases[i] != expected && position == 0)
            {
                outcome = BatchCheck.Corrupt;
            }
            else
            {
                (position, outcome) = Scan(segment.File, position, length, settings.MaxBatchBytes, verify: true, 256 * 1024,
                    (in BatchHeader header, long at, ReadOnlySpan<byte> _) =>
                    {
                        if (header.BaseOffset != next)
                        {
                            return false;
                        }

                        segment.Track(header.BaseOffset, header.Count, at, header.TotalSize);
                        if (header.ProducerId >= 0)
                        {
                            producers.Record(header.ProducerId, header.BaseSequence, header.Count, header.BaseOffset, Task.CompletedTask);
                        }

                        next = header.NextOffset;
                        return true;
                    });
                if (outcome == BatchCheck.Valid && position < length)
                {
                    outcome = BatchCheck.Corrupt; // stopped at a batch whose offset does not follow
                }
            }

            expected = next;
            if (outcome == BatchCheck.End)
            {
                // The zero-filled reserve of a preallocated segment: the data ends here.
                if (i < bases.Count - 1)
                {
                    segment.File.Truncate(position);
                    segment.File.Sync();
                }

                outcome = BatchCheck.Valid;
            }

            if (outcome == BatchCheck.Valid)
            {
                continue;
            }

            // A torn or corrupt tail: cut this segment at the last valid batch and drop later segments.
            var dropped = length - position;
            for (var j = i + 1; j < bases.Count; j++)
            {
                var path = Path.Combine(directory, Segment.FileName(bases[j], ".log"));
                var later = fs.Open(path, create: false);
                dropped += later.Length;
                later.Dispose();
                fs.Delete(path);
                fs.Delete(Path.Combine(directory, Segment.FileName(bases[j], ".index")));
            }

            if (position == 0 && segments.Count > 1)
            {
                // Nothing valid in it (e.g. its name does not follow the previous segment): remove it whole.
                segments.RemoveAt(segments.Count - 1);
                segment.Dispose();
                fs.Delete(segment.LogPath);
                fs.Delete(segment.IndexPath);
            }
            else
            {
                segment.File.Truncate(position);
                segment.File.Sync();
            }

            fs.SyncDirectory(directory);
            LogTruncated(logger, directory, Path.GetFileName(segment.LogPath), position, dropped, outcome == BatchCheck.Incomplete ? "torn" : "corrupt");
            break;
        }

        // What recovery kept may only have reached the page cache before the crash: make it durable.
        if (settings.Preallocate && segments[^1].Size > 0)
        {
            segments[^1].File.Allocate(settings.SegmentBytes);
            segments[^1].Reserved = true;
        }

        segments[^1].File.Sync();
        return expected;
    }

    /// <summary>
    /// The index of a segment trusted up to <paramref name="to"/>: its file, extended by a scan over what
    /// the file did not cover; or, when the file is missing or out of order, rebuilt by a scan from the start.
    /// </summary>
    private static void LoadIndex(Segment segment, long to, LogSettings settings)
    {
        if (segment.TryLoadIndex(to))
        {
            ExtendIndex(segment, to, settings);
        }
        else
        {
            segment.ResetIndex();
            RebuildIndex(segment, 0, to, settings);
        }
    }

    /// <summary>Tracks (indexes) every batch from <paramref name="from"/> to <paramref name="to"/>, reading headers only.</summary>
    private static (long End, BatchCheck Outcome) IndexBatches(Segment segment, long from, long to, LogSettings settings) =>
        Scan(segment.File, from, to, settings.MaxBatchBytes, verify: false, 256 * 1024,
            (in BatchHeader header, long at, ReadOnlySpan<byte> _) =>
            {
                segment.Track(header.BaseOffset, header.Count, at, header.TotalSize);
                return true;
            });

    /// <summary>
    /// Indexes what a loaded index file did not cover, from its last entry up to <paramref name="to"/>
    /// (headers only). A damaged batch just ends it there: the index is a hint, and the read that reaches
    /// the damage checks every batch and stops the partition loudly.
    /// </summary>
    private static void ExtendIndex(Segment segment, long to, LogSettings settings)
    {
        // The last loaded entry must name a batch that starts there with its offset; one that does not
        // (an index file from before a cut the disk never saw) is dropped whole and rebuilt by the scan.
        if (segment.LastIndexedPosition > 0)
        {
            Span<byte> header = stackalloc byte[RecordBatch.HeaderSize];
            var read = segment.File.Read(segment.LastIndexedPosition, header);
            if (RecordBatch.ReadHeader(header[..read], settings.MaxBatchBytes, out var first) != BatchCheck.Valid || first.BaseOffset != segment.LastIndexedOffset)
            {
                segment.ResetIndex();
            }
        }

        var (size, next) = (segment.Size, segment.NextOffset); // Track moves both; only a clean end of the data may change them (damage must stay within reach of reads)
        var (end, outcome) = IndexBatches(segment, segment.LastIndexedPosition, to, settings);
        if (outcome != BatchCheck.End)
        {
            (segment.Size, segment.NextOffset) = (size, next);
        }
        else
        {
            segment.Size = end;
        }
    }

    private static void RebuildIndex(Segment segment, long from, long to, LogSettings settings)
    {
        var (end, outcome) = IndexBatches(segment, from, to, settings);
        if (outcome == BatchCheck.End)
        {
            segment.Size = end;
            return;
        }

        if (outcome != BatchCheck.Valid || end != to)
        {
            throw Corrupt(Path.GetDirectoryName(segment.LogPath) ?? "", $"{Path.GetFileName(segment.LogPath)} is damaged at byte {end}, before the recovery point");
        }
    }

    /// <summary>
    /// Walks batches from <paramref name="position"/> to <paramref name="limit"/>. With
    /// <paramref name="verify"/> every batch is read whole and its checksum checked; without, only
    /// headers are read. Returns where it stopped and why (Valid = reached the limit or the visitor stopped).
    /// </summary>
    internal static (long End, BatchCheck Outcome) Scan(ILogFile file, long position, long limit, int maxBatchBytes, bool verify, int chunkSize, BatchVisitor visit)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(chunkSize);
        try
        {
            while (position < limit)
            {
                var want = (int)Math.Min(buffer.Length, limit - position);
                var read = file.Read(position, buffer.AsSpan(0, want));
                var chunk = buffer.AsSpan(0, read);
                var at = 0;
                while (at < chunk.Length)
                {
                    var rest = chunk[at..];
                    if (rest.Length >= 4 && BinaryPrimitives.ReadInt32BigEndian(rest) == 0)
                    {
                        return (position + at, BatchCheck.End);
                    }

                    var check = verify ? RecordBatch.Check(rest, maxBatchBytes, out var header) : RecordBatch.ReadHeader(rest, maxBatchBytes, out header);
                    if (check == BatchCheck.Corrupt)
                    {
                        return (position + at, BatchCheck.Corrupt);
                    }

                    if (check == BatchCheck.Incomplete)
                    {
                        break;
                    }

                    if (position + at + header.TotalSize > limit)
                    {
                        return (position + at, BatchCheck.Incomplete);
                    }

                    if (!visit(header, position + at, verify ? rest[..header.TotalSize] : default))
                    {
                        return (position + at, BatchCheck.Valid);
                    }

                    at += header.TotalSize;
                }

                if (at == 0)
                {
                    // The batch does not fit the buffer, or the file ends inside it.
                    if (read < want)
                    {
                        return (position, BatchCheck.Incomplete);
                    }

                    if (RecordBatch.ReadHeader(chunk, maxBatchBytes, out var big) == BatchCheck.Valid && big.TotalSize > buffer.Length)
                    {
                        ArrayPool<byte>.Shared.Return(buffer);
                        buffer = ArrayPool<byte>.Shared.Rent(big.TotalSize);
                        continue;
                    }

                    return (position, BatchCheck.Incomplete);
                }

                position += at;
            }

            return (position, BatchCheck.Valid);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>
    /// Appends <paramref name="messages"/> as one batch stamped <paramref name="timestamp"/> (Unix ms). The offsets are assigned now; the returned task
    /// completes when the batch is acknowledged (durable under Always, written under Interval/Never).
    /// With a producer id, a retried batch is recognised and answered with its first offset instead.
    /// </summary>
    /// <param name="sync">
    /// Fsync'd before <see cref="AppendResult.Durable"/> completes whatever <see cref="LogSettings.Fsync"/> says (a
    /// group's snapshot, which lets the segments before it be deleted).
    /// </param>
    public AppendResult Append(IReadOnlyList<LogMessage> messages, long producerId = -1, int baseSequence = -1, long timestamp = 0, bool sync = false)
    {
        if (messages.Count == 0)
        {
            throw new ArgumentException("an append needs at least one message", nameof(messages));
        }

        var size = RecordBatch.Measure(messages);
        if (size > _settings.MaxBatchBytes)
        {
            throw new BrokerException(ErrorCode.TooLarge, $"batch of {size} bytes is over the {_settings.MaxBatchBytes}-byte limit");
        }

        AppendResult result;
        lock (_lock)
        {
            ThrowIfStopped();
            if (producerId >= 0)
            {
                switch (_producers.Check(producerId, baseSequence, messages.Count, out var previous, out var durable, out var expected))
                {
                    case SequenceCheck.Duplicate:
                        return new AppendResult(previous, messages.Count, durable, Duplicate: true);
                    case SequenceCheck.DuplicateOld:
                        throw new BrokerException(ErrorCode.DuplicateSequence, $"producer {producerId} sequence {baseSequence} was appended before (next expected {expected})");
                    case SequenceCheck.OutOfOrder:
                        throw new BrokerException(ErrorCode.OutOfOrderSequence, $"producer {producerId} sent sequence {baseSequence}, expected {expected}");
                    default:
                        break;
                }
            }

            if (_pendingLength > 0 && _pendingLength + size > _settings.MaxPendingBytes)
            {
                throw new BrokerException(ErrorCode.Busy, $"partition has {_pendingLength} bytes waiting for the disk; retry");
            }

            if (_pendingLength + size > _pending.Length)
            {
                Array.Resize(ref _pending, (int)Math.Min(Array.MaxLength, Math.Max((long)_pending.Length * 2, (long)_pendingLength + size)));
            }

            var baseOffset = _nextOffset;
            RecordBatch.Write(_pending.AsSpan(_pendingLength, size), baseOffset, producerId, baseSequence, timestamp, messages);
            _pendingBatches.Add(new PendingBatch(baseOffset, messages.Count, _pendingLength, size, producerId, baseSequence, sync));
            _pendingLength += size;
            _nextOffset += messages.Count;
            var task = _cycle.Task;
            if (producerId >= 0)
            {
                _producers.Record(producerId, baseSequence, messages.Count, baseOffset, task);
            }

            result = new AppendResult(baseOffset, messages.Count, task, Duplicate: false);
        }

        WakeFlusher();
        return result;
    }

    /// <summary>
    /// Wakes the flusher for what was just appended. A close that began after the append's lock may have
    /// flushed it and disposed the signal already: the append is written (or failed with the cycle), so
    /// an ObjectDisposedException here must not turn it into an error for its producer.
    /// </summary>
    private void WakeFlusher()
    {
        if (Interlocked.Exchange(ref _signalled, 1) == 0)
        {
            try
            {
                _signal.Release();
            }
            catch (ObjectDisposedException)
            {
            }
        }
    }

    /// <summary>PartitionFailed once the log stopped, ShuttingDown once it is closing.</summary>
    public void ThrowIfStopped()
    {
        if (_failure is not null)
        {
            throw new BrokerException(ErrorCode.PartitionFailed, $"partition log {_directory} is stopped: {_failure.Message}");
        }

        if (_closing)
        {
            throw new BrokerException(ErrorCode.ShuttingDown, "the broker is shutting down");
        }
    }

    /// <summary>A task that completes when the committed end passes <paramref name="offset"/> (or at once if it has).</summary>
    public Task WhenDataAfter(long offset)
    {
        lock (_lock)
        {
            return _committedEnd > offset || _failure is not null || _closing ? Task.CompletedTask : _dataArrived.Task;
        }
    }

    /// <summary>
    /// Messages from <paramref name="offset"/> on, below the committed end: at most
    /// <paramref name="maxMessages"/>, and batches up to about <paramref name="maxBytes"/> (at least one).
    /// Every batch read is checked; a bad one stops the log loudly.
    /// </summary>
    public List<StoredMessage> Read(long offset, int maxMessages, int maxBytes)
    {
        var failure = Volatile.Read(ref _failure);
        if (failure is not null)
        {
            throw new BrokerException(ErrorCode.PartitionFailed, $"partition log {_directory} is stopped: {failure.Message}");
        }

        var end = Volatile.Read(ref _committedEnd);
        var view = Volatile.Read(ref _view);
        if (offset < view[0].BaseOffset || offset > end)
        {
            throw new BrokerException(ErrorCode.OffsetOutOfRange, $"offset {offset} is outside the log [{view[0].BaseOffset}, {end}]");
        }

        var result = new List<StoredMessage>(Math.Min(maxMessages, 256));
        var index = FloorSegment(view, offset);
        var position = view[index].PositionFor(offset);
        var bytes = 0L;
        while (result.Count < maxMessages && offset < end && bytes < maxBytes && index < view.Length)
        {
            var segment = view[index];
            var limit = segment.Size;
            var from = offset;
            long stop;
            BatchCheck outcome;
            try
            {
                (stop, outcome) = Scan(segment.File, position, limit, _settings.MaxBatchBytes, verify: true, (int)Math.Clamp(maxBytes + (maxBytes / 4), 16 * 1024, 1 << 20),
                    (in BatchHeader header, long _, ReadOnlySpan<byte> batch) =>
                    {
                        if (header.BaseOffset >= end || result.Count >= maxMessages || bytes >= maxBytes)
                        {
                            return false;
                        }

                        if (header.NextOffset > from)
                        {
                            RecordBatch.Decode(batch, header, from, end, maxMessages, result);
                            bytes += header.TotalSize;
                        }

                        return true;
                    });
            }
            catch (InvalidDataException ex)
            {
                throw Stop(Corrupt(_directory, $"{Path.GetFileName(segment.LogPath)}: {ex.Message}"));
            }

            // Size only ever covers whole batches, so anything but a clean walk is damage to acknowledged data.
            if (outcome != BatchCheck.Valid)
            {
                throw Stop(Corrupt(_directory, $"{Path.GetFileName(segment.LogPath)} has a {(outcome == BatchCheck.Corrupt ? "corrupt" : "truncated")} batch at byte {stop}, before the committed end {end}"));
            }

            if (result.Count > 0)
            {
                offset = result[^1].Offset + 1;
            }

            if (stop < limit)
            {
                break;
            }

            index++;
            position = 0;
        }

        return result;
    }

    private static int FloorSegment(Segment[] view, long offset)
    {
        int lo = 0, hi = view.Length - 1, found = 0;
        while (lo <= hi)
        {
            var mid = (lo + hi) >>> 1;
            if (view[mid].BaseOffset <= offset)
            {
                found = mid;
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }

        return found;
    }

    /// <summary>Deletes whole segments (never the active one) over the size limit or older than the age limit.</summary>
    public int ApplyRetention() => DeleteSegments(long.MinValue);

    /// <summary>Deletes the whole segments (never the active one) that hold only offsets below <paramref name="offset"/>.</summary>
    public int DeleteBefore(long offset) => DeleteSegments(offset);

    private int DeleteSegments(long below)
    {
        var now = _time.GetUtcNow();
        List<Segment> doomed = [];
        lock (_lock)
        {
            foreach (var old in _retired)
            {
                old.Dispose();
            }

            _retired.Clear();
            var total = _segments.Sum(s => s.Size);
            while (_segments.Count > 1)
            {
                var oldest = _segments[0];
                var tooBig = _settings.RetentionBytes >= 0 && total - oldest.Size >= _settings.RetentionBytes;
                var tooOld = _settings.RetentionAge > TimeSpan.Zero && now - _fs.LastWriteTime(oldest.LogPath) > _settings.RetentionAge;
                var obsolete = _segments[1].BaseOffset <= below;
                if (!tooBig && !tooOld && !obsolete)
                {
                    break;
                }

                total -= oldest.Size;
                _segments.RemoveAt(0);
                doomed.Add(oldest);
            }

            if (doomed.Count == 0)
            {
                return 0;
            }

            Volatile.Write(ref _view, [.. _segments]);
            _retired.AddRange(doomed); // readers may still hold them: closed at the next pass
        }

        foreach (var segment in doomed)
        {
            _fs.Delete(segment.LogPath);
            _fs.Delete(segment.IndexPath);
        }

        _fs.SyncDirectory(_directory);
        LogRetention(_logger, _directory, doomed.Count, StartOffset);
        return doomed.Count;
    }

    private void FlushLoop()
    {
        var wait = _settings.Fsync == FsyncMode.Interval ? _settings.FsyncInterval : Timeout.InfiniteTimeSpan;
        while (true)
        {
            _signal.Wait(wait);
            Volatile.Write(ref _signalled, 0);
            byte[] buffer;
            List<PendingBatch> batches;
            TaskCompletionSource? cycle = null;
            bool closing;
            lock (_lock)
            {
                closing = _closing;
                if (_failure is not null)
                {
                    return;
                }

                // Only a cycle taken here is completed below. Woken with nothing to take (the signal came
                // from an append an earlier pass already took), the current cycle stays open: appends
                // joining it after this lock must not be acknowledged by a pass that never wrote them.
                // Nor may this pass hold on to the live pending list and buffer: appends fill them
                // outside this lock, and a pass that wrote and cleared them would lose those appends.
                buffer = [];
                batches = NothingTaken;
                if (_pendingBatches.Count > 0)
                {
                    buffer = _pending;
                    batches = _pendingBatches;
                    cycle = _cycle;
                    (_pending, _spare) = (_spare, _pending);
                    (_pendingBatches, _spareBatches) = (_spareBatches, _pendingBatches);
                    _pendingLength = 0;
                    _cycle = new TaskCompletionSource();
                }
            }

            try
            {
                Persist(buffer, batches, closing);
            }
            catch (Exception ex)
            {
                // Whatever went wrong while writing, the bytes' fate is unknown: the log stops (never retries).
                StopWith(ex);
                cycle?.TrySetException(new BrokerException(ErrorCode.PartitionFailed, $"partition log {_directory} is stopped: {ex.Message}"));
                return;
            }

            TaskCompletionSource? data = null;
            if (batches.Count > 0)
            {
                var used = batches[^1].Start + batches[^1].Length;
                lock (_lock)
                {
                    _committedEnd = batches[^1].BaseOffset + batches[^1].Count;
                    data = _dataArrived;
                    _dataArrived = NewSignal();

                    // A burst grows the buffers (up to --max-partition-pending each) and they stayed that size
                    // for good: two per partition, up to 64 MB. Once 64 cycles in a row used a sixteenth of the
                    // larger, each goes back to its first size when it is not in use (the one just written; the
                    // other while nothing waits in it).
                    var largest = Math.Max(_pending.Length, _spare.Length);
                    _smallCycles = largest > InitialPendingBytes && used < largest / 16 ? _smallCycles + 1 : 0;
                    if (_smallCycles >= 64)
                    {
                        if (ReferenceEquals(_spare, buffer) && _spare.Length > InitialPendingBytes)
                        {
                            _spare = new byte[InitialPendingBytes];
                        }

                        if (_pendingLength == 0 && _pending.Length > InitialPendingBytes)
                        {
                            _pending = new byte[InitialPendingBytes];
                        }
                    }
                }

                batches.Clear();
            }

            // The appends of this cycle continue on one pool thread, one after the other (their answers are
            // queued to each connection's writer); the flusher goes straight on to the next cycle.
            if (cycle is not null)
            {
                ThreadPool.UnsafeQueueUserWorkItem(static state => state.TrySetResult(), cycle, preferLocal: false);
            }

            data?.TrySetResult();
            MaybeWriteRecoveryPoint(closing);
            if (closing)
            {
                lock (_lock)
                {
                    if (_pendingBatches.Count == 0)
                    {
                        return;
                    }
                }
            }
        }
    }

    private void Persist(byte[] buffer, List<PendingBatch> batches, bool closing)
    {
        var now = _time.GetUtcNow();
        // The view, not the list: retention changes the list under the lock, and reading its last element
        // without it could see a count and an element of different moments (the segment it just deleted).
        // Only this thread adds segments, so the view's last is the segment being written.
        var active = Volatile.Read(ref _view)[^1];
        for (var i = 0; i < batches.Count;)
        {
            var first = batches[i];
            if (active.Size > 0 && (active.Size + first.Length > _settings.SegmentBytes
                || (_settings.SegmentAge > TimeSpan.Zero && now - active.CreatedAt >= _settings.SegmentAge)))
            {
                active = Roll(active, first.BaseOffset, now);
            }

            // Every following batch that still fits this segment goes out in the same write.
            var j = i + 1;
            var length = first.Length;
            while (j < batches.Count && active.Size + length + batches[j].Length <= _settings.SegmentBytes)
            {
                length += batches[j].Length;
                j++;
            }

            if (_settings.Preallocate && !active.Reserved)
            {
                active.File.Allocate(_settings.SegmentBytes); // made durable by the sync that covers this write
                active.Reserved = true;
            }

            var position = active.Size;
            active.File.Write(position, buffer.AsSpan(first.Start, length));
            for (var k = i; k < j; k++)
            {
                active.Track(batches[k].BaseOffset, batches[k].Count, position, batches[k].Length);
                position += batches[k].Length;
                _unsynced.Add(batches[k]);
            }

            i = j;
        }

        var forced = false;
        foreach (var batch in batches)
        {
            forced |= batch.Sync;
        }

        var sync = forced || _settings.Fsync switch
        {
            FsyncMode.Always => batches.Count > 0,
            FsyncMode.Interval => _unsynced.Count > 0 && _time.GetElapsedTime(_lastSyncTimestamp) >= _settings.FsyncInterval,
            _ => false,
        };
        if (sync || (closing && _unsynced.Count > 0))
        {
            SyncActive(active);
        }
    }

    private void SyncActive(Segment active)
    {
        var started = Stopwatch.GetTimestamp();
        active.File.Sync();
        Synced?.Invoke(Stopwatch.GetElapsedTime(started));
        _lastSyncTimestamp = _time.GetTimestamp();
        foreach (var batch in _unsynced)
        {
            if (batch.ProducerId >= 0)
            {
                _durableProducers.Record(batch.ProducerId, batch.BaseSequence, batch.Count, batch.BaseOffset, Task.CompletedTask);
            }
        }

        _unsynced.Clear();
        _synced = new SyncPoint(active.BaseOffset, active.Size, active.NextOffset);
    }

    private Segment Roll(Segment active, long baseOffset, DateTimeOffset now)
    {
        // The old segment is durable, and cut to its data, before the new one exists: recovery never
        // sees a hole, and a segment that is not the last has no reserve.
        SyncActive(active);
        if (_settings.Preallocate)
        {
            active.File.Truncate(active.Size);
            active.File.Sync();
        }

        var segment = Segment.Create(_fs, _directory, baseOffset, _settings.IndexIntervalBytes, now);
        if (_settings.Preallocate)
        {
            segment.File.Allocate(_settings.SegmentBytes);
            segment.File.Sync();
            segment.Reserved = true;
        }

        _fs.SyncDirectory(_directory);
        lock (_lock)
        {
            _segments.Add(segment);
            Volatile.Write(ref _view, [.. _segments]);
        }

        LogRolled(_logger, _directory, baseOffset);
        return segment;
    }

    private void MaybeWriteRecoveryPoint(bool force)
    {
        if (_synced == _recoveryPoint || (!force && _time.GetElapsedTime(_lastRecoveryPointTimestamp) < _settings.RecoveryPointInterval))
        {
            return;
        }

        try
        {
            WriteRecoveryPoint(_synced, _durableProducers);
            _recoveryPoint = _synced;
            _lastRecoveryPointTimestamp = _time.GetTimestamp();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // The old recovery point stays valid (it only means a longer scan); the data is durable.
            LogRecoveryPointFailed(_logger, _directory, ex.Message);
        }
    }

    private void WriteRecoveryPoint(SyncPoint point, ProducerTable producers)
    {
        var entries = producers.Snapshot().ToList();
        var bytes = new byte[4 + 1 + 24 + 4 + (entries.Count * 24) + 4];
        BinaryPrimitives.WriteUInt32BigEndian(bytes, RecoveryPointMagic);
        bytes[4] = 1;
        BinaryPrimitives.WriteInt64BigEndian(bytes.AsSpan(5), point.SegmentBase);
        BinaryPrimitives.WriteInt64BigEndian(bytes.AsSpan(13), point.Position);
        BinaryPrimitives.WriteInt64BigEndian(bytes.AsSpan(21), point.Offset);
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(29), entries.Count);
        var at = 33;
        foreach (var (id, sequence, count, offset) in entries)
        {
            BinaryPrimitives.WriteInt64BigEndian(bytes.AsSpan(at), id);
            BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(at + 8), sequence);
            BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(at + 12), count);
            BinaryPrimitives.WriteInt64BigEndian(bytes.AsSpan(at + 16), offset);
            at += 24;
        }

        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(at), Crc32C.Compute(bytes.AsSpan(0, at)));
        _fs.WriteAtomically(Path.Combine(_directory, RecoveryPointFile), bytes);
    }

    private static SyncPoint? ReadRecoveryPoint(ILogFileSystem fs, string directory, ILogger logger, out ProducerTable producers)
    {
        producers = new ProducerTable();
        var bytes = fs.ReadAll(Path.Combine(directory, RecoveryPointFile));
        if (bytes is null)
        {
            return null;
        }

        if (bytes.Length < 37 || BinaryPrimitives.ReadUInt32BigEndian(bytes) != RecoveryPointMagic || bytes[4] != 1
            || BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(bytes.Length - 4)) != Crc32C.Compute(bytes.AsSpan(0, bytes.Length - 4)))
        {
            LogBadRecoveryPoint(logger, directory);
            return null;
        }

        var count = BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(29));
        if (count < 0 || 33 + ((long)count * 24) + 4 != bytes.Length)
        {
            LogBadRecoveryPoint(logger, directory);
            return null;
        }

        for (var at = 33; at < bytes.Length - 4; at += 24)
        {
            producers.Record(
                BinaryPrimitives.ReadInt64BigEndian(bytes.AsSpan(at)),
                BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(at + 8)),
                BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(at + 12)),
                BinaryPrimitives.ReadInt64BigEndian(bytes.AsSpan(at + 16)),
                Task.CompletedTask);
        }

        return new SyncPoint(
            BinaryPrimitives.ReadInt64BigEndian(bytes.AsSpan(5)),
            BinaryPrimitives.ReadInt64BigEndian(bytes.AsSpan(13)),
            BinaryPrimitives.ReadInt64BigEndian(bytes.AsSpan(21)));
    }

    private BrokerException Stop(BrokerException error)
    {
        StopWith(error);
        return error;
    }

    private void StopWith(Exception error)
    {
        TaskCompletionSource cycle, data;
        lock (_lock)
        {
            if (_failure is not null)
            {
                return;
            }

            _failure = error;
            cycle = _cycle;
            data = _dataArrived;
        }

        LogStopped(_logger, error, _directory, error.Message);
        cycle.TrySetException(new BrokerException(ErrorCode.PartitionFailed, $"partition log {_directory} is stopped: {error.Message}"));
        data.TrySetResult();
    }

    private static BrokerException Corrupt(string directory, string detail) =>
        new(ErrorCode.PartitionFailed, $"partition log {directory}: {detail}");

    /// <summary>Writes and fsyncs what is pending, stores the recovery point and closes the files.</summary>
    public async ValueTask DisposeAsync()
    {
        TaskCompletionSource data;
        lock (_lock)
        {
            if (_closing)
            {
                return;
            }

            _closing = true;
            data = _dataArrived;
        }

        _signal.Release();
        await _flusher.ConfigureAwait(false);
        data.TrySetResult();
        lock (_lock)
        {
            _cycle.TrySetException(new BrokerException(ErrorCode.ShuttingDown, "the broker is shutting down"));
            foreach (var segment in _segments.Concat(_retired))
            {
                segment.Dispose();
            }
        }

        _signal.Dispose();
    }

    /// <summary>What a flusher pass that found no appends works on (never added to).</summary>
    private static readonly List<PendingBatch> NothingTaken = [];

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    private readonly record struct PendingBatch(long BaseOffset, int Count, int Start, int Length, long ProducerId, int BaseSequence, bool Sync);

    private readonly record struct SyncPoint(long SegmentBase, long Position, long Offset);

    [LoggerMessage(EventId = 400, Level = LogLevel.Warning, Message = "Recovery of {Directory}: {Segment} cut at byte {Position}, {Bytes} bytes of {Reason} tail dropped")]
    private static partial void LogTruncated(ILogger logger, string directory, string segment, long position, long bytes, string reason);

    [LoggerMessage(EventId = 401, Level = LogLevel.Critical, Message = "Partition log {Directory} stopped: {Reason}")]
    private static partial void LogStopped(ILogger logger, Exception exception, string directory, string reason);

    [LoggerMessage(EventId = 402, Level = LogLevel.Warning, Message = "Recovery point of {Directory} is unreadable; scanning from the first segment")]
    private static partial void LogBadRecoveryPoint(ILogger logger, string directory);

    [LoggerMessage(EventId = 403, Level = LogLevel.Debug, Message = "{Directory}: rolled to a new segment at offset {BaseOffset}")]
    private static partial void LogRolled(ILogger logger, string directory, long baseOffset);

    [LoggerMessage(EventId = 404, Level = LogLevel.Information, Message = "{Directory}: retention deleted {Count} segment(s); the log now starts at {StartOffset}")]
    private static partial void LogRetention(ILogger logger, string directory, int count, long startOffset);

    [LoggerMessage(EventId = 405, Level = LogLevel.Warning, Message = "{Directory}: could not write the recovery point: {Reason}")]
    private static partial void LogRecoveryPointFailed(ILogger logger, string directory, string reason);
}
