using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using Infra.QueueBroker.Log;
using Infra.QueueBroker.Topics;
using Microsoft.Extensions.Logging;

namespace Infra.QueueBroker.Groups;

/// <summary>Settings of queue-mode consumption.</summary>
internal sealed record QueueSettings
{
    /// <summary>A delivery not acked within this is delivered again.</summary>
    public TimeSpan VisibilityTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>A message delivered this many times without an ack goes to the dead-letter topic.</summary>
    public int MaxDeliveries { get; init; } = 5;

    /// <summary>How often leases are checked for expiry without anyone fetching.</summary>
    public TimeSpan SweepInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Compact the group's state log once this many bytes were appended since the last snapshot.</summary>
    public long CompactAfterBytes { get; init; } = 8L << 20;

    /// <summary>
    /// Most messages delivered and not yet settled (acked, or dead-lettered) across the group's partitions; at
    /// the limit a fetch gets only redeliveries until acks make room (as SQS caps in-flight messages and
    /// JetStream a consumer's max_ack_pending). Bounds the group's state, which holds one entry per
    /// unsettled message in memory and in every snapshot.
    /// </summary>
    public int MaxUnacked { get; init; } = 100_000;
}

/// <summary>One message handed to a queue consumer.</summary>
internal sealed record Delivery(int Partition, StoredMessage Message, int DeliveryCount)
{
    public string DeliveryId => FormatId(Partition, Message.Offset, DeliveryCount);

    public static string FormatId(int partition, long offset, int count) =>
        string.Create(CultureInfo.InvariantCulture, $"{partition}-{offset}-{count}");

    public static bool TryParseId(string? id, out int partition, out long offset, out int count)
    {
        partition = 0;
        offset = 0;
        count = 0;
        var parts = id?.Split('-');
        return parts is { Length: 3 }
            && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out partition)
            && long.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out offset)
            && int.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out count);
    }
}

/// <summary>Per-partition state of a queue group, as reported by the API.</summary>
internal sealed record QueuePartitionInfo(int Partition, long EndOffset, long AckedBelow, long NextOffset, long Lag, int InFlight, int WaitingRedelivery);

/// <summary>
/// Queue-mode (per-message) consumption of a topic by one group: competing consumers get messages from
/// any partition; each delivery is leased for the visibility timeout and must be acked, or it is
/// delivered again with its count raised; a nack makes it available again (after an optional delay);
/// past the maximum deliveries it is moved to <c>{topic}.dlq</c> exactly once.
/// <para>
/// The group's state lives in its own checksummed log (<c>{topic}/groups/{group}/</c>): every delivery
/// (with its count) is durable before the consumer receives it and every ack before it is answered,
/// so a broker crash loses no ack and never resets a delivery count. Dead-lettering writes an intent
/// first; recovery finishes an interrupted move by looking for the message in the dead-letter log, so
/// it lands there once.
/// </para>
/// </summary>
internal sealed partial class QueueGroup : IAsyncDisposable
{
    private const byte DeliveredRecord = 1;
    private const byte SettledRecord = 2;
    private const byte IntentRecord = 3;
    private const byte SnapshotRecord = 4;

    private readonly Topic _topic;
    private readonly TopicRegistry _topics;
    private readonly SegmentLog _state;
    private readonly QueueSettings _settings;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private readonly Cursor[] _cursors;
    private readonly PriorityQueue<(int Partition, long Offset, int Count), long> _leases = new();
    private readonly SemaphoreSlim _deadLetterGate = new(1, 1);
    private readonly ITimer _sweeper;
    private TaskCompletionSource _changed = NewSignal();
    private long _bytesSinceSnapshot;
    private int _rotation;
    private long _deadLettered;
    private long _redelivered;
    private long _waits;
    private bool _disposed;

    private QueueGroup(string name, Topic topic, TopicRegistry topics, SegmentLog state, QueueSettings settings, TimeProvider time, ILogger logger)
    {
        Name = name;
        _topic = topic;
        _topics = topics;
        _state = state;
        _settings = settings;
        _time = time;
        _logger = logger;
        _cursors = [.. topic.Partitions.Select(_ => new Cursor())];
        _sweeper = time.CreateTimer(_ => Sweep(), null, settings.SweepInterval, settings.SweepInterval);
    }

    public string Name { get; }

    public string Topic => _topic.Name;

    /// <summary>Messages moved to the dead-letter topic by this group since start.</summary>
    public long DeadLettered => Interlocked.Read(ref _deadLettered);

    /// <summary>Deliveries made again after a timeout or nack since start.</summary>
    public long Redelivered => Interlocked.Read(ref _redelivered);

    public static string StateDirectory(Topic topic, string group) => Path.Combine(topic.Directory, "groups", "queue-" + group);

    /// <summary>Opens (or creates) the group and recovers its state, finishing interrupted dead-letter moves.</summary>
    public static async Task<QueueGroup> OpenAsync(string name, Topic topic, TopicRegistry topics, ILogFileSystem fs, QueueSettings settings, TimeProvider time, ILogger logger)
    {
        var state = SegmentLog.Open(fs, StateDirectory(topic, name), topics.Settings.ForGroupState(), time, logger);
        var group = new QueueGroup(name, topic, topics, state, settings, time, logger);
        try
        {
            var (intents, clamped) = group.Replay();
            await group.FinishIntentsAsync(intents);
            await group.CompactAsync(force: clamped);
            return group;
        }
        catch
        {
            await group.DisposeAsync();
            throw;
        }
    }

    private (Dictionary<(int, long), long> Intents, bool Clamped) Replay()
    {
        var intents = new Dictionary<(int, long), long>();
        var offset = _state.StartOffset;
        while (offset < _state.CommittedEnd)
        {
            var records = _state.Read(offset, 4096, 4 << 20);
            foreach (var record in records)
            {
                Apply(record.Payload, intents);
                offset = record.Offset + 1;
            }
        }

        // Under --fsync interval or never the state can be durable past the partition's log (a power loss
        // took the log's last messages): the offsets past its end will be new messages, so nothing the state
        // says of them may stand.
        var clamped = false;
        for (var p = 0; p < _cursors.Length; p++)
        {
            if (_topic.Partitions[p].LogOrNull is { } log && _cursors[p].Next > log.CommittedEnd)
            {
                LogStateAheadOfLog(_logger, _topic.Name, Name, p, _cursors[p].Next, log.CommittedEnd);
                _cursors[p].ClampTo(log.CommittedEnd);
                foreach (var key in intents.Keys.Where(k => k.Item1 == p && k.Item2 >= log.CommittedEnd).ToList())
                {
                    intents.Remove(key);
                }

                clamped = true;
            }
        }

        // Whatever was leased when the broker stopped is offered again at once (its count is kept).
        var now = NowMs();
        foreach (var cursor in _cursors)
        {
            foreach (var pending in cursor.Counts.Keys)
            {
                cursor.Ready.Enqueue(pending, (now, pending));
            }
        }

        return (intents, clamped);
    }

    private void Apply(byte[] record, Dictionary<(int, long), long> intents)
    {
        var span = record.AsSpan();
        var at = 1;
        switch (record.Length > 0 ? record[0] : (byte)0)
        {
            case DeliveredRecord:
                for (int n = ReadInt32(span, ref at), i = 0; i < n; i++)
                {
                    var cursor = CursorAt(ReadInt32(span, ref at));
                    var offset = ReadInt64(span, ref at);
                    var count = ReadInt32(span, ref at);
                    if (!cursor.IsSettled(offset))
                    {
                        cursor.Counts[offset] = count;
                        cursor.Next = Math.Max(cursor.Next, offset + 1);
                    }
                }

                break;
            case SettledRecord:
                for (int n = ReadInt32(span, ref at), i = 0; i < n; i++)
                {
                    var partition = ReadInt32(span, ref at);
                    var offset = ReadInt64(span, ref at);
                    CursorAt(partition).Settle(offset);
                    intents.Remove((partition, offset));
                }

                break;
            case IntentRecord:
                {
                    var partition = ReadInt32(span, ref at);
                    var offset = ReadInt64(span, ref at);
                    var from = ReadInt64(span, ref at);
                    // A retried move writes a later intent; the first attempt's copy may still be on disk below
                    // it, so the search starts from the earliest.
                    intents[(partition, offset)] = intents.TryGetValue((partition, offset), out var earlier) ? Math.Min(earlier, from) : from;
                    break;
                }

            case SnapshotRecord:
                intents.Clear();
                for (var p = 0; p < _cursors.Length; p++)
                {
                    var cursor = new Cursor { Floor = ReadInt64(span, ref at), Next = ReadInt64(span, ref at) };
                    for (int n = ReadInt32(span, ref at), i = 0; i < n; i++)
                    {
                        ReadInt64(span, ref at); // settled offsets, written by older versions: every offset of [Floor, Next) without a count is settled
                    }

                    for (int n = ReadInt32(span, ref at), i = 0; i < n; i++)
                    {
                        var offset = ReadInt64(span, ref at);
                        cursor.Counts[offset] = ReadInt32(span, ref at);
                    }

                    cursor.AdvanceFloor();
                    for (int n = ReadInt32(span, ref at), i = 0; i < n; i++)
                    {
                        var offset = ReadInt64(span, ref at);
                        intents[(p, offset)] = ReadInt64(span, ref at);
                    }

                    _cursors[p] = cursor;
                }

                break;
            default:
                throw new BrokerException(ErrorCode.PartitionFailed, $"group {Name} of {_topic.Name}: unknown state record type {(record.Length > 0 ? record[0] : -1)}");
        }
    }

    private Cursor CursorAt(int partition) => partition >= 0 && partition < _cursors.Length
        ? _cursors[partition]
        : throw new BrokerException(ErrorCode.PartitionFailed, $"group {Name} of {_topic.Name}: state names partition {partition}");

    /// <summary>Dead-letter moves that wrote their intent but not their completion: done once, by looking first.</summary>
    private async Task FinishIntentsAsync(Dictionary<(int, long), long> intents)
    {
        if (intents.Count == 0)
        {
            return;
        }

        var redo = new List<(int, long, int)>();
        foreach (var ((partition, offset), from) in intents)
        {
            var found = false;
            try
            {
                var log = DeadLetterPartition(partition).Log;
                for (var at = Math.Max(from, log.StartOffset); at < log.CommittedEnd && !found;)
                {
                    var batch = log.Read(at, 1024, 1 << 20);
                    found = batch.Any(m => IsDeadLetterOf(m, partition, offset));
                    at = batch.Count == 0 ? log.CommittedEnd : batch[^1].Offset + 1;
                }
            }
            catch (BrokerException ex)
            {
                // The dead-letter partition cannot be read (or made): whether the copy is there is unknown, so
                // the message is held back (not delivered, not moved again) until a start finds out.
                LogDeadLetterFailed(_logger, _topic.Name, Name, ex.Message);
                lock (_lock)
                {
                    _cursors[partition].DeadLettering.Add(offset);
                }

                continue;
            }

            if (found)
            {
                await PersistSettledAsync([(partition, offset)]);
            }
            else
            {
                lock (_lock)
                {
                    _cursors[partition].DeadLettering.Add(offset);
                }

                redo.Add((partition, offset, _cursors[partition].Counts.GetValueOrDefault(offset)));
            }
        }

        await DeadLetterInBackgroundAsync(redo); // a failed move is offered again; the group opens all the same
    }

    /// <summary>
    /// Where partition <paramref name="partition"/>'s dead letters go: the same partition of the dead-letter topic,
    /// or, when that topic was made beforehand with fewer partitions, partition modulo its count.
    /// </summary>
    private Partition DeadLetterPartition(int partition)
    {
        var dlq = _topics.DeadLetters(_topic);
        return dlq.Partition(partition % dlq.Partitions.Count);
    }

    private bool IsDeadLetterOf(StoredMessage message, int partition, long offset) =>
        message.HeaderText(Headers.Group) == Name
        && message.HeaderText(Headers.Partition) == partition.ToString(CultureInfo.InvariantCulture)
        && message.HeaderText(Headers.Offset) == offset.ToString(CultureInfo.InvariantCulture);

    /// <summary>How many times a fetch has gone to sleep waiting for messages (tests: a caught-up long poll sleeps once, it does not spin).</summary>
    internal long Waits => Interlocked.Read(ref _waits);

    /// <summary>
    /// Up to <paramref name="max"/> messages: due redeliveries first, then new messages, round robin over
    /// partitions. Waits up to <paramref name="wait"/> for one to be available. The deliveries are
    /// durable (counts included) before this returns.
    /// </summary>
    public async Task<List<Delivery>> FetchAsync(int max, TimeSpan wait, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(max, 1);
        var deadline = _time.GetUtcNow() + wait;
        while (true)
        {
            var (deliveries, durable, deadLetters, waitFor) = Collect(max);
            if (deadLetters.Count > 0)
            {
                // A move that fails is offered again later; it must not take this fetch's deliveries with it
                // (they are leased and counted already).
                await DeadLetterInBackgroundAsync(deadLetters);
            }

            if (deliveries.Count > 0)
            {
                await durable!;
                await CompactIfDueAsync(); // a group that only fetches (and lets deliveries expire) grows its state too
                return deliveries;
            }

            var remaining = deadline - _time.GetUtcNow();
            if (remaining <= TimeSpan.Zero || _disposed)
            {
                return deliveries;
            }

            var delay = waitFor is { } due && due < remaining ? due : remaining;
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var signals = new List<Task>(_topic.Partitions.Count + 2) { Task.Delay(delay < TimeSpan.FromMilliseconds(1) ? TimeSpan.FromMilliseconds(1) : delay, _time, timeout.Token) };
            lock (_lock)
            {
                signals.Add(_changed.Task);
                for (var p = 0; p < _cursors.Length; p++)
                {
                    if (_topic.Partitions[p].IsAvailable)
                    {
                        // Data at Next (the first offset not yet delivered), not at Next - 1: that one is
                        // always there once the group has caught up, and the wait spun until its deadline.
                        signals.Add(_topic.Partitions[p].Log.WhenDataAfter(_cursors[p].Next));
                    }
                }
            }

            Interlocked.Increment(ref _waits);
            await Task.WhenAny(signals).ConfigureAwait(false);
            await timeout.CancelAsync();
            cancellationToken.ThrowIfCancellationRequested();
        }
    }

    private (List<Delivery> Deliveries, Task? Durable, List<(int, long, int)> DeadLetters, TimeSpan? WaitFor) Collect(int max)
    {
        var deliveries = new List<Delivery>();
        var deadLetters = new List<(int, long, int)>();
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var now = NowMs();
            ExpireLeases(now, deadLetters);
            var room = _settings.MaxUnacked - Unsettled(); // fresh deliveries only: redeliveries are counted already
            var start = _rotation++;
            for (var i = 0; i < _cursors.Length && deliveries.Count < max; i++)
            {
                var p = (int)((uint)(start + i) % (uint)_cursors.Length);
                var partition = _topic.Partitions[p];
                if (!partition.IsAvailable)
                {
                    continue;
                }

                var cursor = _cursors[p];
                var log = partition.Log;
                while (deliveries.Count < max && cursor.Ready.TryPeek(out var offset, out var visible) && visible.VisibleAt <= now)
                {
                    cursor.Ready.Dequeue();
                    if (!cursor.Counts.TryGetValue(offset, out var count) || cursor.Leased.ContainsKey(offset) || cursor.DeadLettering.Contains(offset))
                    {
                        continue; // settled, re-leased or on its way to the DLQ meanwhile
                    }

                    if (count >= _settings.MaxDeliveries)
                    {
                        cursor.DeadLettering.Add(offset);
                        deadLetters.Add((p, offset, count));
                        continue;
                    }

                    if (offset < log.StartOffset)
                    {
                        cursor.Settle(offset); // removed by retention: nothing left to deliver
                        continue;
                    }

                    List<StoredMessage> message;
                    try
                    {
                        message = log.Read(offset, 1, 1);
                    }
                    catch (BrokerException ex) when (ex.Code == ErrorCode.PartitionFailed)
                    {
                        cursor.Ready.Enqueue(offset, (now + 1000, offset)); // the partition just stopped; the others go on
                        break;
                    }
                    catch (BrokerException ex) when (ex.Code == ErrorCode.OffsetOutOfRange)
                    {
                        cursor.Settle(offset); // retention removed it since the check above
                        continue;
                    }

                    if (message.Count == 1)
                    {
                        deliveries.Add(new Delivery(p, message[0], count + 1));
                        Interlocked.Increment(ref _redelivered);
                    }
                }

                if (cursor.Next < log.StartOffset)
                {
                    cursor.SkipTo(log.StartOffset);
                }

                if (deliveries.Count < max && room > 0 && cursor.Next < log.CommittedEnd)
                {
                    List<StoredMessage> fresh;
                    try
                    {
                        fresh = log.Read(cursor.Next, Math.Min(max - deliveries.Count, room), 4 << 20);
                    }
                    catch (BrokerException ex) when (ex.Code == ErrorCode.PartitionFailed)
                    {
                        continue; // the partition just stopped (logged by its log); the others go on
                    }
                    catch (BrokerException ex) when (ex.Code == ErrorCode.OffsetOutOfRange)
                    {
                        // Retention removed the next messages since the check above: skipped on the next fetch.
                        // (Thrown out of here, it would drop what this pass collected from the partitions before.)
                        continue;
                    }

                    foreach (var message in fresh)
                    {
                        deliveries.Add(new Delivery(p, message, 1));
                        cursor.Next = message.Offset + 1;
                    }

                    room -= fresh.Count;
                }
            }

            Task? durable = null;
            if (deliveries.Count > 0)
            {
                var deadline = now + (long)_settings.VisibilityTimeout.TotalMilliseconds;
                var record = new byte[1 + 4 + (deliveries.Count * 16)];
                record[0] = DeliveredRecord;
                BinaryPrimitives.WriteInt32BigEndian(record.AsSpan(1), deliveries.Count);
                var at = 5;
                foreach (var delivery in deliveries)
                {
                    var cursor = _cursors[delivery.Partition];
                    cursor.Counts[delivery.Message.Offset] = delivery.DeliveryCount;
                    cursor.Leased[delivery.Message.Offset] = delivery.DeliveryCount;
                    _leases.Enqueue((delivery.Partition, delivery.Message.Offset, delivery.DeliveryCount), deadline);
                    BinaryPrimitives.WriteInt32BigEndian(record.AsSpan(at), delivery.Partition);
                    BinaryPrimitives.WriteInt64BigEndian(record.AsSpan(at + 4), delivery.Message.Offset);
                    BinaryPrimitives.WriteInt32BigEndian(record.AsSpan(at + 12), delivery.DeliveryCount);
                    at += 16;
                }

                durable = AppendState(record);
            }

            return (deliveries, durable, deadLetters, NextDue(now));
        }
    }

    private TimeSpan? NextDue(long now)
    {
        long? due = _leases.TryPeek(out _, out var leaseDue) ? leaseDue : null;
        foreach (var cursor in _cursors)
        {
            if (cursor.Ready.TryPeek(out _, out var visible) && (due is null || visible.VisibleAt < due))
            {
                due = visible.VisibleAt;
            }
        }

        return due is null ? null : TimeSpan.FromMilliseconds(Math.Max(0, due.Value - now));
    }

    /// <summary>Leases past their deadline: delivered again, or dead-lettered after the last allowed delivery.</summary>
    private void ExpireLeases(long now, List<(int, long, int)> deadLetters)
    {
        while (_leases.TryPeek(out var lease, out var deadline) && deadline <= now)
        {
            _leases.Dequeue();
            var cursor = _cursors[lease.Partition];
            if (!cursor.Leased.TryGetValue(lease.Offset, out var count) || count != lease.Count)
            {
                continue; // acked or nacked since
            }

            cursor.Leased.Remove(lease.Offset);
            if (count >= _settings.MaxDeliveries)
            {
                cursor.DeadLettering.Add(lease.Offset);
                deadLetters.Add((lease.Partition, lease.Offset, count));
            }
            else
            {
                cursor.Ready.Enqueue(lease.Offset, (now, lease.Offset));
            }
        }
    }

    /// <summary>Acks deliveries by id. Returns how many were acked and the ids that are unknown or stale.</summary>
    public async Task<(int Acked, List<string> Unknown)> AckAsync(IReadOnlyList<string> deliveryIds)
    {
        var settled = new List<(int, long)>();
        var unknown = new List<string>();
        Task durable;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            foreach (var id in deliveryIds)
            {
                if (Delivery.TryParseId(id, out var p, out var offset, out var count) && p < _cursors.Length
                    && _cursors[p].Leased.TryGetValue(offset, out var leased) && leased == count)
                {
                    _cursors[p].Leased.Remove(offset);
                    _cursors[p].Settle(offset);
                    settled.Add((p, offset));
                }
                else
                {
                    unknown.Add(id);
                }
            }

            durable = settled.Count > 0 ? AppendState(SettledBytes(settled)) : Task.CompletedTask;
            if (settled.Count > 0 && Unsettled() + settled.Count >= _settings.MaxUnacked)
            {
                Signal(); // fetches waiting at the limit have room now
            }
        }

        await durable;
        await CompactIfDueAsync();
        return (settled.Count, unknown);
    }

    /// <summary>Gives deliveries back: available again after <paramref name="delay"/> (or dead-lettered after the last allowed delivery).</summary>
    public async Task<(int Nacked, List<string> Unknown)> NackAsync(IReadOnlyList<string> deliveryIds, TimeSpan delay)
    {
        var unknown = new List<string>();
        var deadLetters = new List<(int, long, int)>();
        var nacked = 0;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var visibleAt = NowMs() + (long)delay.TotalMilliseconds;
            foreach (var id in deliveryIds)
            {
                if (Delivery.TryParseId(id, out var p, out var offset, out var count) && p < _cursors.Length
                    && _cursors[p].Leased.TryGetValue(offset, out var leased) && leased == count)
                {
                    var cursor = _cursors[p];
                    cursor.Leased.Remove(offset);
                    nacked++;
                    if (count >= _settings.MaxDeliveries)
                    {
                        cursor.DeadLettering.Add(offset);
                        deadLetters.Add((p, offset, count));
                    }
                    else
                    {
                        cursor.Ready.Enqueue(offset, (visibleAt, offset));
                    }
                }
                else
                {
                    unknown.Add(id);
                }
            }

            Signal();
        }

        await DeadLetterInBackgroundAsync(deadLetters); // the nack took effect; a failed move is offered again later
        return (nacked, unknown);
    }

    private void Sweep()
    {
        var deadLetters = new List<(int, long, int)>();
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            var before = _cursors.Sum(c => c.Ready.Count);
            ExpireLeases(NowMs(), deadLetters);
            if (_cursors.Sum(c => c.Ready.Count) != before)
            {
                Signal();
            }
        }

        if (deadLetters.Count > 0)
        {
            _ = DeadLetterInBackgroundAsync(deadLetters);
        }
    }

    private async Task DeadLetterInBackgroundAsync(List<(int, long, int)> deadLetters)
    {
        try
        {
            await DeadLetterAsync(deadLetters);
        }
        catch (Exception ex) when (ex is BrokerException or ObjectDisposedException or IOException)
        {
            LogDeadLetterFailed(_logger, _topic.Name, Name, ex.Message);
        }
    }

    /// <summary>
    /// Moves messages to the dead-letter topic, one at a time: durable intent, append to the DLQ (with
    /// headers naming the source), durable completion. A failed move is offered again later.
    /// </summary>
    private async Task DeadLetterAsync(List<(int Partition, long Offset, int Count)> items)
    {
        if (items.Count == 0)
        {
            return;
        }

        await _deadLetterGate.WaitAsync();
        try
        {
            for (var i = 0; i < items.Count; i++)
            {
                var (p, offset, count) = items[i];
                try
                {
                    var source = _topic.Partitions[p].Log;
                    var found = offset >= source.StartOffset ? source.Read(offset, 1, 1) : [];
                    if (found.Count == 1)
                    {
                        var target = DeadLetterPartition(p).Log;
                        var intent = new byte[21];
                        intent[0] = IntentRecord;
                        BinaryPrimitives.WriteInt32BigEndian(intent.AsSpan(1), p);
                        BinaryPrimitives.WriteInt64BigEndian(intent.AsSpan(5), offset);
                        BinaryPrimitives.WriteInt64BigEndian(intent.AsSpan(13), target.NextOffset);
                        Task written;
                        lock (_lock)
                        {
                            written = AppendState(intent);
                        }

                        await written;
                        var message = found[0];
                        List<MessageHeader> headers =
                        [
                            .. message.Headers,
                            new(Headers.Topic, Encoding.UTF8.GetBytes(_topic.Name)),
                            new(Headers.Group, Encoding.UTF8.GetBytes(Name)),
                            new(Headers.Partition, Encoding.UTF8.GetBytes(p.ToString(CultureInfo.InvariantCulture))),
                            new(Headers.Offset, Encoding.UTF8.GetBytes(offset.ToString(CultureInfo.InvariantCulture))),
                            new(Headers.Deliveries, Encoding.UTF8.GetBytes(count.ToString(CultureInfo.InvariantCulture))),
                        ];
                        await target.Append([new LogMessage(message.Key, headers, message.Payload)], timestamp: message.Timestamp).Durable;
                        Interlocked.Increment(ref _deadLettered);
                        LogDeadLettered(_logger, _topic.Name, p, offset, Name, count);
                    }

                    await PersistSettledAsync([(p, offset)]);
                }
                catch (Exception ex) when (ex is BrokerException or IOException)
                {
                    lock (_lock)
                    {
                        // Offered again on a later fetch or sweep; the intent makes the retry look first.
                        for (var j = i; j < items.Count; j++)
                        {
                            _cursors[items[j].Partition].DeadLettering.Remove(items[j].Offset);
                            _cursors[items[j].Partition].Ready.Enqueue(items[j].Offset, (NowMs() + 1000, items[j].Offset));
                        }
                    }

                    throw;
                }
            }
        }
        finally
        {
            _deadLetterGate.Release();
        }
    }

    private async Task PersistSettledAsync(List<(int, long)> settled)
    {
        Task durable;
        lock (_lock)
        {
            foreach (var (p, offset) in settled)
            {
                _cursors[p].DeadLettering.Remove(offset);
                _cursors[p].Settle(offset);
            }

            durable = AppendState(SettledBytes(settled));
        }

        await durable;
    }

    private static byte[] SettledBytes(List<(int Partition, long Offset)> settled)
    {
        var record = new byte[1 + 4 + (settled.Count * 12)];
        record[0] = SettledRecord;
        BinaryPrimitives.WriteInt32BigEndian(record.AsSpan(1), settled.Count);
        var at = 5;
        foreach (var (p, offset) in settled)
        {
            BinaryPrimitives.WriteInt32BigEndian(record.AsSpan(at), p);
            BinaryPrimitives.WriteInt64BigEndian(record.AsSpan(at + 4), offset);
            at += 12;
        }

        return record;
    }

    /// <summary>Appends a state record (caller holds the lock, so records are in the order of the changes).</summary>
    private Task AppendState(byte[] record)
    {
        _bytesSinceSnapshot += record.Length;
        return _state.Append([new LogMessage(null, [], record)]).Durable;
    }

    private async Task CompactIfDueAsync()
    {
        if (Interlocked.Read(ref _bytesSinceSnapshot) < _settings.CompactAfterBytes || !await _deadLetterGate.WaitAsync(0))
        {
            return;
        }

        // Holding the dead-letter gate: no move is between its intent and its completion.
        try
        {
            await CompactAsync();
        }
        finally
        {
            _deadLetterGate.Release();
        }
    }

    /// <summary>Appends a snapshot of the whole state, then drops the state-log segments before it.</summary>
    private async Task CompactAsync(bool force = false)
    {
        Task durable;
        long snapshotOffset;
        lock (_lock)
        {
            if (!force && _state.SegmentCount <= 1 && _bytesSinceSnapshot < _settings.CompactAfterBytes)
            {
                return;
            }

            var record = new List<byte> { SnapshotRecord };
            foreach (var cursor in _cursors)
            {
                AddInt64(record, cursor.Floor);
                AddInt64(record, cursor.Next);
                AddInt32(record, 0); // no settled offsets: those of [Floor, Next) are the ones without a count

                AddInt32(record, cursor.Counts.Count);
                foreach (var (offset, count) in cursor.Counts)
                {
                    AddInt64(record, offset);
                    AddInt32(record, count);
                }

                // Snapshots are taken with the dead-letter gate held: no move is half done.
                AddInt32(record, 0);
            }

            _bytesSinceSnapshot = 0;
            // Fsync'd whatever --fsync says: once it is durable the segments before it are deleted, and under
            // interval or never a power loss would otherwise take the whole state, not its last moments.
            var appended = _state.Append([new LogMessage(null, [], record.ToArray())], sync: true);
            durable = appended.Durable;
            snapshotOffset = appended.BaseOffset;
        }

        await durable;
        _state.DeleteBefore(snapshotOffset);
    }

    /// <summary>Lag and pending deliveries per partition.</summary>
    public List<QueuePartitionInfo> Describe()
    {
        lock (_lock)
        {
            var result = new List<QueuePartitionInfo>();
            for (var p = 0; p < _cursors.Length; p++)
            {
                var cursor = _cursors[p];
                var end = _topic.Partitions[p].LogOrNull?.CommittedEnd ?? cursor.Next;
                var unsettled = cursor.Counts.Count;
                var lag = Math.Max(0, end - cursor.Next) + unsettled;
                var waiting = cursor.Counts.Keys.Count(o => !cursor.Leased.ContainsKey(o));
                result.Add(new QueuePartitionInfo(p, end, cursor.Floor, cursor.Next, lag, cursor.Leased.Count, waiting));
            }

            return result;
        }
    }

    /// <summary>Messages delivered and not yet settled, over all partitions (under the lock).</summary>
    private int Unsettled()
    {
        var count = 0;
        foreach (var cursor in _cursors)
        {
            count += cursor.Counts.Count;
        }

        return count;
    }

    private void Signal()
    {
        var changed = _changed;
        _changed = NewSignal();
        changed.TrySetResult();
    }

    private long NowMs() => _time.GetUtcNow().ToUnixTimeMilliseconds();

    private static int ReadInt32(ReadOnlySpan<byte> span, ref int at)
    {
        if (at + 4 > span.Length)
        {
            throw new BrokerException(ErrorCode.PartitionFailed, "group state record is truncated");
        }

        at += 4;
        return BinaryPrimitives.ReadInt32BigEndian(span[(at - 4)..]);
    }

    private static long ReadInt64(ReadOnlySpan<byte> span, ref int at)
    {
        if (at + 8 > span.Length)
        {
            throw new BrokerException(ErrorCode.PartitionFailed, "group state record is truncated");
        }

        at += 8;
        return BinaryPrimitives.ReadInt64BigEndian(span[(at - 8)..]);
    }

    private static void AddInt32(List<byte> bytes, int value)
    {
        Span<byte> buffer = stackalloc byte[4];
        BinaryPrimitives.WriteInt32BigEndian(buffer, value);
        bytes.AddRange(buffer);
    }

    private static void AddInt64(List<byte> bytes, long value)
    {
        Span<byte> buffer = stackalloc byte[8];
        BinaryPrimitives.WriteInt64BigEndian(buffer, value);
        bytes.AddRange(buffer);
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    public async ValueTask DisposeAsync()
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            Signal();
        }

        await _sweeper.DisposeAsync();
        await _deadLetterGate.WaitAsync();
        await _state.DisposeAsync();
        _deadLetterGate.Dispose();
    }

    /// <summary>Header names on dead-lettered messages.</summary>
    public static class Headers
    {
        public const string Topic = "x-dlq-topic";
        public const string Group = "x-dlq-group";
        public const string Partition = "x-dlq-partition";
        public const string Offset = "x-dlq-offset";
        public const string Deliveries = "x-dlq-deliveries";
    }

    /// <summary>
    /// Per-partition state: everything below Floor is settled; of [Floor, Next), the offsets with a count
    /// are leased or waiting and the others settled. (A set of the settled ones grew with every ack while
    /// one old message stayed unsettled — a long nack delay — until the snapshot could not be written, and
    /// the group not opened again.)
    /// </summary>
    private sealed class Cursor
    {
        public long Floor { get; set; }

        public long Next { get; set; }

        /// <summary>Delivery count of every delivered, unsettled offset.</summary>
        public Dictionary<long, int> Counts { get; } = [];

        /// <summary>Offsets leased to a consumer now, with the count of that delivery.</summary>
        public Dictionary<long, int> Leased { get; } = [];

        /// <summary>Offsets to deliver again, by the time (Unix ms) they become visible.</summary>
        public PriorityQueue<long, (long VisibleAt, long Offset)> Ready { get; } = new();

        public HashSet<long> DeadLettering { get; } = [];

        public bool IsSettled(long offset) => offset < Floor || (offset < Next && !Counts.ContainsKey(offset));

        public void Settle(long offset)
        {
            Counts.Remove(offset);
            if (offset < Floor)
            {
                return;
            }

            Next = Math.Max(Next, offset + 1);
            AdvanceFloor();
        }

        /// <summary>Floor up to the lowest offset with a count (each offset passed once: amortised constant).</summary>
        public void AdvanceFloor()
        {
            if (Counts.Count == 0)
            {
                Floor = Math.Max(Floor, Next);
                return;
            }

            while (Floor < Next && !Counts.ContainsKey(Floor))
            {
                Floor++;
            }
        }

        /// <summary>Forgets every offset at or past <paramref name="end"/> and goes on from there.</summary>
        public void ClampTo(long end)
        {
            foreach (var offset in Counts.Keys.Where(o => o >= end).ToList())
            {
                Counts.Remove(offset);
                Leased.Remove(offset);
            }

            Next = Math.Min(Next, end);
            Floor = Math.Min(Floor, end);
        }

        public void SkipTo(long start)
        {
            foreach (var offset in Counts.Keys.Where(o => o < start).ToList())
            {
                Counts.Remove(offset);
                Leased.Remove(offset);
            }

            Floor = Math.Max(Floor, start);
            Next = Math.Max(Next, start);
            AdvanceFloor();
        }
    }

    [LoggerMessage(EventId = 420, Level = LogLevel.Information, Message = "{Topic}/{Partition}@{Offset} moved to the dead-letter topic by group {Group} after {Count} deliveries")]
    private static partial void LogDeadLettered(ILogger logger, string topic, int partition, long offset, string group, int count);

    [LoggerMessage(EventId = 422, Level = LogLevel.Warning, Message = "Queue group {Group} of {Topic}: its state reaches offset {Next} of partition {Partition}, whose log ends at {End} (messages lost under --fsync interval or never); going on from there")]
    private static partial void LogStateAheadOfLog(ILogger logger, string topic, string group, int partition, long next, long end);

    [LoggerMessage(EventId = 421, Level = LogLevel.Warning, Message = "Dead-lettering for {Topic} group {Group} failed, will retry: {Reason}")]
    private static partial void LogDeadLetterFailed(ILogger logger, string topic, string group, string reason);
}
