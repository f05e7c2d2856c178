using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Text;
using Infra.Core.Placement;
using Infra.Core.Storage;
using Infra.QueueBroker.Log;
using Microsoft.Extensions.Logging;

namespace Infra.QueueBroker.Topics;

/// <summary>One partition: its log, or why it could not be opened.</summary>
internal sealed class Partition(int id, SegmentLog? log, BrokerException? openFailure)
{
    public int Id { get; } = id;

    /// <summary>The log; throws PartitionFailed when recovery stopped it.</summary>
    public SegmentLog Log => log ?? throw openFailure!;

    public bool IsAvailable => log is not null && log.Failure is null;

    public SegmentLog? LogOrNull => log;

    public string? FailureReason => openFailure?.Message ?? log?.Failure?.Message;
}

/// <summary>A topic: a name and P partitions. Keyed messages go to xxHash64(key) mod P; unkeyed ones round robin.</summary>
internal sealed class Topic(string name, string directory, Partition[] partitions)
{
    private long _roundRobin = -1;

    public string Name { get; } = name;

    public string Directory { get; } = directory;

    public IReadOnlyList<Partition> Partitions { get; } = partitions;

    public int PartitionFor(ReadOnlySpan<byte> key, bool hasKey) => hasKey
        ? (int)(XxHash64.Hash(key) % (ulong)Partitions.Count)
        : (int)((ulong)Interlocked.Increment(ref _roundRobin) % (ulong)Partitions.Count);

    public Partition Partition(int id) => id >= 0 && id < Partitions.Count
        ? Partitions[id]
        : throw new BrokerException(ErrorCode.UnknownPartition, $"topic '{Name}' has partitions 0..{Partitions.Count - 1}, not {id}");
}

/// <summary>
/// The topics under the data directory: <c>{data}/{topic}/topic.meta</c> (partition count, checksummed,
/// written atomically) and one log directory per partition, <c>{data}/{topic}/{p}/</c>.
/// </summary>
internal sealed partial class TopicRegistry : IAsyncDisposable
{
    public const int MaxPartitions = 1024;
    public const string DeadLetterSuffix = ".dlq";
    private const string MetaFile = "topic.meta";
    private readonly ILogFileSystem _fs;
    private readonly string _dataDirectory;
    private readonly LogSettings _settings;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, Topic> _topics = new(StringComparer.Ordinal);
    private readonly Lock _createLock = new();

    public TopicRegistry(ILogFileSystem fs, string dataDirectory, LogSettings settings, TimeProvider time, ILogger logger)
    {
        _fs = fs;
        _dataDirectory = dataDirectory;
        _settings = settings;
        _time = time;
        _logger = logger;
        fs.CreateDirectory(dataDirectory);
        foreach (var name in fs.ListDirectories(dataDirectory))
        {
            var dir = Path.Combine(dataDirectory, name);
            if (ReadMeta(dir) is { } partitions && IsValidName(name, MaxStoredNameLength))
            {
                _topics[name] = OpenTopic(name, dir, partitions);
            }
        }
    }

    /// <summary>Raised after each fsync of any partition log.</summary>
    public event Action<TimeSpan>? Synced;

    public LogSettings Settings => _settings;

    public IEnumerable<Topic> All => _topics.Values;

    /// <summary>The longest name a topic (or group) is made with.</summary>
    public const int MaxNameLength = 200;

    /// <summary>
    /// The longest name a dead-letter topic may have: its source's name and ".dlq" (a dead-letter topic's own
    /// dead letters add another), within a file name's 255 bytes.
    /// </summary>
    public const int MaxStoredNameLength = 250;

    public static bool IsValidName(string name, int maxLength = MaxNameLength) =>
        name.Length > 0 && name.Length <= maxLength && name[0] != '.' && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-');

    public Topic Get(string name) => _topics.TryGetValue(name, out var topic)
        ? topic
        : throw new BrokerException(ErrorCode.UnknownTopic, $"topic '{name}' does not exist");

    public bool TryGet(string name, out Topic topic) => _topics.TryGetValue(name, out topic!);

    /// <summary>
    /// Creates the topic (true), or finds it with the same shape (false); another shape is a conflict.
    /// With <paramref name="maxPartitions"/>, a new topic may not take the partitions of every topic but
    /// the dead-letter topics of existing ones past it.
    /// </summary>
    public (Topic Topic, bool Created) Create(string name, int partitions, int? maxPartitions = null)
    {
        if (!IsValidName(name))
        {
            throw new BrokerException(ErrorCode.BadRequest, $"topic name '{Truncate(name)}' is not 1-{MaxNameLength} characters of letters, digits, '.', '_', '-' (not starting with '.')");
        }

        return Create(name, partitions, maxPartitions, anyShape: false);
    }

    private (Topic Topic, bool Created) Create(string name, int partitions, int? maxPartitions, bool anyShape)
    {
        if (partitions is < 1 or > MaxPartitions)
        {
            throw new BrokerException(ErrorCode.BadRequest, $"partitions must be 1..{MaxPartitions}, not {partitions}");
        }

        lock (_createLock)
        {
            if (_topics.TryGetValue(name, out var existing))
            {
                return existing.Partitions.Count == partitions || anyShape
                    ? (existing, false)
                    : throw new BrokerException(ErrorCode.TopicConflict, $"topic '{name}' exists with {existing.Partitions.Count} partitions, not {partitions}");
            }

            if (maxPartitions is { } limit)
            {
                var held = _topics.Values.Where(t => DeadLetterSource(t.Name) is null).Sum(t => t.Partitions.Count);
                if (held + partitions > limit)
                {
                    throw new BrokerException(ErrorCode.BadRequest, $"topic '{name}' would bring the broker to {held + partitions} partitions; --max-partitions is {limit}");
                }
            }

            var dir = Path.Combine(_dataDirectory, name);
            _fs.CreateDirectory(dir);
            var meta = new byte[8];
            BinaryPrimitives.WriteInt32BigEndian(meta, partitions);
            BinaryPrimitives.WriteUInt32BigEndian(meta.AsSpan(4), Crc32C.Compute(meta.AsSpan(0, 4)));
            _fs.WriteAtomically(Path.Combine(dir, MetaFile), meta);
            var topic = OpenTopic(name, dir, partitions);
            _topics[name] = topic;
            LogCreated(_logger, name, partitions);
            return (topic, true);
        }
    }

    /// <summary>The existing topic whose dead-letter topic <paramref name="name"/> is, or null.</summary>
    public Topic? DeadLetterSource(string name) =>
        name.EndsWith(DeadLetterSuffix, StringComparison.Ordinal) && _topics.TryGetValue(name[..^DeadLetterSuffix.Length], out var source) ? source : null;

    /// <summary>
    /// The dead-letter topic of <paramref name="topic"/>: <c>{topic}.dlq</c>, created on first use with the same
    /// partition count. One made beforehand (by a client) is used whatever its partition count.
    /// </summary>
    public Topic DeadLetters(Topic topic)
    {
        var name = topic.Name + DeadLetterSuffix;
        if (_topics.TryGetValue(name, out var existing))
        {
            return existing;
        }

        return IsValidName(name, MaxStoredNameLength)
            ? Create(name, topic.Partitions.Count, maxPartitions: null, anyShape: true).Topic
            : throw new BrokerException(ErrorCode.BadRequest, $"topic '{Truncate(topic.Name)}' cannot have a dead-letter topic: '{Truncate(name)}' would be over {MaxStoredNameLength} characters");
    }

    public void ApplyRetention()
    {
        foreach (var topic in _topics.Values)
        {
            foreach (var partition in topic.Partitions)
            {
                if (partition.IsAvailable)
                {
                    try
                    {
                        partition.Log.ApplyRetention();
                    }
                    catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or BrokerException)
                    {
                        // Runs on a timer: anything thrown out of here would end the process.
                        LogRetentionFailed(_logger, topic.Name, partition.Id, ex.Message);
                    }
                }
            }
        }
    }

    private Topic OpenTopic(string name, string dir, int partitions)
    {
        var opened = new Partition[partitions];
        for (var p = 0; p < partitions; p++)
        {
            try
            {
                var log = SegmentLog.Open(_fs, Path.Combine(dir, p.ToString(System.Globalization.CultureInfo.InvariantCulture)), _settings, _time, _logger);
                log.Synced += elapsed => Synced?.Invoke(elapsed);
                opened[p] = new Partition(p, log, null);
            }
            catch (BrokerException ex)
            {
                LogPartitionFailed(_logger, name, p, ex.Message);
                opened[p] = new Partition(p, null, ex);
            }
        }

        return new Topic(name, dir, opened);
    }

    private int? ReadMeta(string dir)
    {
        var bytes = _fs.ReadAll(Path.Combine(dir, MetaFile));
        if (bytes is null || bytes.Length != 8 || BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(4)) != Crc32C.Compute(bytes.AsSpan(0, 4)))
        {
            if (bytes is not null)
            {
                LogBadMeta(_logger, dir);
            }

            return null;
        }

        var partitions = BinaryPrimitives.ReadInt32BigEndian(bytes);
        return partitions is >= 1 and <= MaxPartitions ? partitions : null;
    }

    internal static string Truncate(string text) => text.Length <= 64 ? text : text[..64] + "…";

    public async ValueTask DisposeAsync()
    {
        foreach (var topic in _topics.Values)
        {
            foreach (var partition in topic.Partitions)
            {
                if (partition.LogOrNull is { } log)
                {
                    await log.DisposeAsync();
                }
            }
        }
    }

    public static byte[] Utf8(string text) => Encoding.UTF8.GetBytes(text);

    [LoggerMessage(EventId = 410, Level = LogLevel.Information, Message = "Created topic {Topic} with {Partitions} partitions")]
    private static partial void LogCreated(ILogger logger, string topic, int partitions);

    [LoggerMessage(EventId = 411, Level = LogLevel.Critical, Message = "Topic {Topic} partition {Partition} is stopped: {Reason}")]
    private static partial void LogPartitionFailed(ILogger logger, string topic, int partition, string reason);

    [LoggerMessage(EventId = 412, Level = LogLevel.Error, Message = "{Directory}/topic.meta is damaged; the topic is not loaded")]
    private static partial void LogBadMeta(ILogger logger, string directory);

    [LoggerMessage(EventId = 413, Level = LogLevel.Warning, Message = "Retention of {Topic}/{Partition} failed: {Reason}")]
    private static partial void LogRetentionFailed(ILogger logger, string topic, int partition, string reason);
}
