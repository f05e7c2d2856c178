using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Infra.QueueBroker.Groups;
using Infra.QueueBroker.Log;
using Infra.QueueBroker.Topics;
using Microsoft.Extensions.Logging;

namespace Infra.QueueBroker;

/// <summary>Where a produced batch went.</summary>
internal readonly record struct ProduceResult(int Partition, long BaseOffset, int Count, bool Duplicate);

/// <summary>
/// The broker's operations, shared by the native protocol and the HTTP API: topics, produce, queue
/// groups and stream groups, over the topic registry. Every produce returns only once acknowledged
/// (durable under <c>--fsync always</c>).
/// </summary>
internal sealed partial class Broker : IAsyncDisposable
{
    public const string MeterName = "Infra.QueueBroker";
    private readonly ILogFileSystem _fs;
    private readonly BrokerOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<(string Topic, string Group), Lazy<Task<QueueGroup>>> _queueGroups = new();
    private readonly ConcurrentDictionary<(string Topic, string Group), Lazy<StreamGroup>> _streamGroups = new();
    private readonly Counter<long> _produced;
    private readonly Counter<long> _producedBytes;
    private readonly Counter<long> _consumed;
    private readonly Counter<long> _consumedBytes;
    private readonly Counter<long> _errors;
    private readonly Histogram<double> _fsyncSeconds;
    private readonly ITimer _retention;

    public Broker(ILogFileSystem fs, BrokerOptions options, TimeProvider time, IMeterFactory meterFactory, ILogger<Broker> logger)
    {
        ArgumentNullException.ThrowIfNull(meterFactory);
        _fs = fs;
        _options = options;
        _time = time;
        _logger = logger;
        Topics = new TopicRegistry(fs, options.DataDir, options.LogSettings, time, logger);
        var meter = meterFactory.Create(MeterName);
        _produced = meter.CreateCounter<long>("infra.queue.produced.messages", description: "Messages acknowledged to producers, by topic");
        _producedBytes = meter.CreateCounter<long>("infra.queue.produced.bytes", "By", "Payload bytes acknowledged to producers, by topic");
        _consumed = meter.CreateCounter<long>("infra.queue.consumed.messages", description: "Messages handed to consumers (stream fetches and queue deliveries), by topic");
        _consumedBytes = meter.CreateCounter<long>("infra.queue.consumed.bytes", "By", "Payload bytes handed to consumers, by topic");
        _errors = meter.CreateCounter<long>("infra.queue.errors", description: "Requests refused, by error code");
        _fsyncSeconds = meter.CreateHistogram("infra.queue.fsync.duration", "s", "Time each fsync of a partition log took",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1] });
        meter.CreateObservableGauge("infra.queue.group.lag", ObserveLag, description: "Messages not yet settled (queue) or committed (stream), by topic, group, partition");
        meter.CreateObservableGauge("infra.queue.group.unacked", ObserveUnacked, description: "Queue deliveries leased and not yet acked, by topic and group");
        meter.CreateObservableCounter("infra.queue.redeliveries", () => Observe(g => g.Redelivered), description: "Queue deliveries made again after a timeout or nack, by topic and group");
        meter.CreateObservableCounter("infra.queue.dead_lettered", () => Observe(g => g.DeadLettered), description: "Messages moved to the dead-letter topic, by topic and group");
        meter.CreateObservableGauge("infra.queue.partitions.failed", () => Topics.All.Sum(t => t.Partitions.Count(p => !p.IsAvailable)), description: "Partitions stopped by a failed fsync or corruption");
        Topics.Synced += elapsed => _fsyncSeconds.Record(elapsed.TotalSeconds);
        _retention = time.CreateTimer(_ => Topics.ApplyRetention(), null, TimeSpan.FromSeconds(30), TimeSpan.FromSeconds(30));
    }

    public TopicRegistry Topics { get; }

    public BrokerOptions Options => _options;

    public void CountError(ErrorCode code) => _errors.Add(1, new KeyValuePair<string, object?>("code", code.ToString()));

    public (Topic Topic, bool Created) CreateTopic(string name, int partitions)
    {
        var source = Topics.DeadLetterSource(name);
        if (source is not null && source.Partitions.Count != partitions)
        {
            throw new BrokerException(ErrorCode.TopicConflict, $"'{name}' is the dead-letter topic of '{source.Name}' and must have {source.Partitions.Count} partitions");
        }

        // A dead-letter topic mirrors its topic, which the limit counted already.
        return Topics.Create(name, partitions, source is null ? _options.MaxPartitions : null);
    }

    /// <summary>
    /// Appends <paramref name="messages"/> as one batch to one partition (given, or chosen by the first
    /// message's key, or round robin) and returns once acknowledged.
    /// </summary>
    public async Task<ProduceResult> ProduceAsync(string topicName, int? partition, IReadOnlyList<LogMessage> messages, long producerId = -1, int sequence = -1)
    {
        if (messages.Count == 0)
        {
            throw new BrokerException(ErrorCode.BadRequest, "a produce needs at least one message");
        }

        long bytes = 0;
        foreach (var message in messages)
        {
            long size = message.Payload.Length + (message.Key?.Length ?? 0);
            var badName = false;
            foreach (var header in message.Headers)
            {
                size += header.Name.Length + header.Value.Length;
                badName |= header.Name.Length is 0 or > 1024;
            }

            if (size > _options.MaxMessageBytes)
            {
                throw new BrokerException(ErrorCode.TooLarge, $"message of {size} bytes is over the {_options.MaxMessageBytes}-byte limit");
            }

            if (message.Headers.Count > RecordBatch.MaxHeaders || badName)
            {
                throw new BrokerException(ErrorCode.BadRequest, $"at most {RecordBatch.MaxHeaders} headers with names of 1-1024 characters");
            }

            bytes += message.Payload.Length;
        }

        if (producerId >= 0 && sequence < 0)
        {
            throw new BrokerException(ErrorCode.BadRequest, "an idempotent produce needs a sequence ≥ 0 with its producer id");
        }

        var topic = Topics.Get(topicName);
        var target = partition ?? topic.PartitionFor(messages[0].Key, messages[0].Key is not null);
        var log = topic.Partition(target).Log;
        var result = log.Append(messages, producerId, sequence, _time.GetUtcNow().ToUnixTimeMilliseconds());
        await result.Durable;
        if (!result.Duplicate)
        {
            var tag = new KeyValuePair<string, object?>("topic", topic.Name);
            _produced.Add(messages.Count, tag);
            _producedBytes.Add(bytes, tag);
        }

        return new ProduceResult(target, result.BaseOffset, result.Count, result.Duplicate);
    }

    /// <summary>Stream read: messages of one partition from <paramref name="offset"/>, waiting up to <paramref name="wait"/> for the first.</summary>
    public async Task<List<StoredMessage>> FetchAsync(string topicName, int partition, long offset, int maxMessages, int maxBytes, TimeSpan wait, CancellationToken cancellationToken)
    {
        var log = Topics.Get(topicName).Partition(partition).Log;
        var messages = log.Read(offset, maxMessages, maxBytes);
        if (messages.Count == 0 && wait > TimeSpan.Zero)
        {
            try
            {
                await log.WhenDataAfter(offset).WaitAsync(wait, _time, cancellationToken);
            }
            catch (TimeoutException)
            {
                return messages;
            }

            messages = log.Read(offset, maxMessages, maxBytes);
        }

        Consumed(topicName, messages);
        return messages;
    }

    public async Task<QueueGroup> QueueGroupAsync(string topicName, string group)
    {
        if (!TopicRegistry.IsValidName(group))
        {
            throw new BrokerException(ErrorCode.BadRequest, "group names are 1-200 characters of letters, digits, '.', '_', '-'");
        }

        var topic = Topics.Get(topicName);
        if (_streamGroups.ContainsKey((topic.Name, group)))
        {
            throw new BrokerException(ErrorCode.BadRequest, $"group '{group}' of '{topicName}' is a stream group");
        }

        ThrowIfNewGroupPastLimit(topic.Name, group, _queueGroups.ContainsKey((topic.Name, group)), QueueGroup.StateDirectory(topic, group));

        var lazy = _queueGroups.GetOrAdd((topic.Name, group), key => new Lazy<Task<QueueGroup>>(() =>
            QueueGroup.OpenAsync(key.Group, topic, Topics, _fs, _options.QueueSettings, _time, _logger)));
        try
        {
            return await lazy.Value;
        }
        catch
        {
            _queueGroups.TryRemove(new KeyValuePair<(string, string), Lazy<Task<QueueGroup>>>((topic.Name, group), lazy));
            throw;
        }
    }

    /// <summary>
    /// A new group (neither open nor with its state on disk) past <c>--max-groups</c> (open groups of both
    /// kinds) is refused; several made at once may pass it by a few.
    /// </summary>
    private void ThrowIfNewGroupPastLimit(string topic, string group, bool open, string stateDirectory)
    {
        if (!open && _queueGroups.Count + _streamGroups.Count >= _options.MaxGroups && !Directory.Exists(stateDirectory))
        {
            throw new BrokerException(ErrorCode.BadRequest, $"group '{TopicRegistry.Truncate(group)}' of '{topic}' would be a new group past --max-groups ({_options.MaxGroups})");
        }
    }

    /// <summary>Queue groups already opened, or whose state exists on disk.</summary>
    public bool QueueGroupExists(string topicName, string group) =>
        _queueGroups.ContainsKey((topicName, group)) || (Topics.TryGet(topicName, out var topic) && Directory.Exists(QueueGroup.StateDirectory(topic, group)));

    public async Task<List<Delivery>> QueueFetchAsync(string topic, string group, int max, TimeSpan wait, CancellationToken cancellationToken)
    {
        var deliveries = await (await QueueGroupAsync(topic, group)).FetchAsync(max, wait, cancellationToken);
        Consumed(topic, deliveries.Select(d => d.Message));
        return deliveries;
    }

    public StreamGroup StreamGroup(string topicName, string group)
    {
        if (!TopicRegistry.IsValidName(group))
        {
            throw new BrokerException(ErrorCode.BadRequest, "group names are 1-200 characters of letters, digits, '.', '_', '-'");
        }

        var topic = Topics.Get(topicName);
        if (_queueGroups.ContainsKey((topic.Name, group)))
        {
            throw new BrokerException(ErrorCode.BadRequest, $"group '{group}' of '{topicName}' is a queue group");
        }

        ThrowIfNewGroupPastLimit(topic.Name, group, _streamGroups.ContainsKey((topic.Name, group)), Groups.StreamGroup.StateDirectory(topic, group));

        // Lazy: two first joins at once must not open the group's offset log twice.
        var lazy = _streamGroups.GetOrAdd((topic.Name, group), key => new Lazy<StreamGroup>(() =>
            new StreamGroup(key.Group, topic, _fs, Topics.Settings, _options.SessionTimeout, _time, _logger)));
        try
        {
            return lazy.Value;
        }
        catch
        {
            _streamGroups.TryRemove(new KeyValuePair<(string, string), Lazy<StreamGroup>>((topic.Name, group), lazy));
            throw;
        }
    }

    /// <summary>
    /// The log a push subscription reads and the offset it starts at: <paramref name="offset"/>, or the
    /// committed end when it is negative (new messages only). Outside the log: OffsetOutOfRange.
    /// </summary>
    public (SegmentLog Log, long Start) Subscribe(string topicName, int partition, long offset)
    {
        var log = Topics.Get(topicName).Partition(partition).Log;
        if (offset < 0)
        {
            return (log, log.CommittedEnd);
        }

        if (offset < log.StartOffset || offset > log.CommittedEnd)
        {
            throw new BrokerException(ErrorCode.OffsetOutOfRange, $"offset {offset} is outside the log [{log.StartOffset}, {log.CommittedEnd}]");
        }

        return (log, offset);
    }

    /// <summary>Counts messages sent to consumers (fetches, deliveries, pushes).</summary>
    public void Consumed(string topic, IEnumerable<StoredMessage> messages)
    {
        long count = 0, bytes = 0;
        foreach (var message in messages)
        {
            count++;
            bytes += message.Payload.Length;
        }

        if (count > 0)
        {
            var tag = new KeyValuePair<string, object?>("topic", topic);
            _consumed.Add(count, tag);
            _consumedBytes.Add(bytes, tag);
        }
    }

    private IEnumerable<Measurement<long>> ObserveLag()
    {
        foreach (var ((topic, group), lazy) in _queueGroups)
        {
            if (lazy.IsValueCreated && lazy.Value.IsCompletedSuccessfully)
            {
                foreach (var info in lazy.Value.Result.Describe())
                {
                    yield return new Measurement<long>(info.Lag, new("topic", topic), new("group", group), new("partition", info.Partition));
                }
            }
        }

        foreach (var ((topic, group), lazy) in _streamGroups)
        {
            if (!lazy.IsValueCreated)
            {
                continue;
            }

            foreach (var info in lazy.Value.Describe().Partitions)
            {
                yield return new Measurement<long>(info.Lag, new("topic", topic), new("group", group), new("partition", info.Partition));
            }
        }
    }

    private IEnumerable<Measurement<long>> ObserveUnacked()
    {
        foreach (var ((topic, group), lazy) in _queueGroups)
        {
            if (lazy.IsValueCreated && lazy.Value.IsCompletedSuccessfully)
            {
                yield return new Measurement<long>(lazy.Value.Result.Describe().Sum(p => p.InFlight), new("topic", topic), new("group", group));
            }
        }
    }

    private IEnumerable<Measurement<long>> Observe(Func<QueueGroup, long> value)
    {
        foreach (var ((topic, group), lazy) in _queueGroups)
        {
            if (lazy.IsValueCreated && lazy.Value.IsCompletedSuccessfully)
            {
                yield return new Measurement<long>(value(lazy.Value.Result), new("topic", topic), new("group", group));
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _retention.DisposeAsync();
        foreach (var lazy in _queueGroups.Values)
        {
            if (lazy.IsValueCreated)
            {
                try
                {
                    await (await lazy.Value).DisposeAsync();
                }
                catch (BrokerException)
                {
                    // A group that failed to open has nothing to close.
                }
            }
        }

        foreach (var lazy in _streamGroups.Values)
        {
            if (lazy.IsValueCreated)
            {
                await lazy.Value.DisposeAsync();
            }
        }

        await Topics.DisposeAsync();
        LogStopped(_logger);
    }

    [LoggerMessage(EventId = 430, Level = LogLevel.Information, Message = "Broker stopped: every partition log written, fsync'd and closed")]
    private static partial void LogStopped(ILogger logger);
}
