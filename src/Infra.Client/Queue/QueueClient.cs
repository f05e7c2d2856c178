using System.Buffers;
using Infra.Client.Rpc;
using Infra.Core.Framing;
using MessagePack;

namespace Infra.Client.Queue;

/// <summary>A typed error from the broker (<see cref="Code"/> is the broker's error name, e.g. "Busy").</summary>
public sealed class QueueException : Exception
{
    public QueueException(string code, string message)
        : base($"{code}: {message}")
    {
        Code = code;
    }

    public QueueException()
        : this("Internal", "queue error")
    {
    }

    public QueueException(string message)
        : this("Internal", message)
    {
    }

    public QueueException(string message, Exception innerException)
        : base(message, innerException)
    {
        Code = "ConnectionLost";
    }

    private QueueException(string code, string message, Exception innerException)
        : base(message, innerException)
    {
        Code = code;
    }

    public string Code { get; }

    /// <summary>A new exception like this one (same code and message), for a stream that throws it to every later read.</summary>
    internal QueueException Again() => new(Code, Message, this);

    /// <summary>True for errors worth retrying as they are: Busy, a lost connection, a broker shutting down.</summary>
    public bool IsTransient => Code is "Busy" or "ConnectionLost" or "ShuttingDown";
}

/// <summary>A message read from the broker.</summary>
public sealed record QueueMessage(int Partition, long Offset, long Timestamp, byte[]? Key, IReadOnlyDictionary<string, byte[]> Headers, byte[] Payload);

/// <summary>A queue-mode delivery: ack it with <see cref="DeliveryId"/> within the visibility timeout.</summary>
public sealed record QueueDelivery(string DeliveryId, int DeliveryCount, QueueMessage Message);

/// <summary>Where a produce went.</summary>
public readonly record struct ProduceAck(int Partition, long Offset, bool Duplicate);

/// <summary>A topic's partitions: first offset still stored and committed end of each.</summary>
public sealed record TopicMetadata(int Partitions, long[] Starts, long[] Ends)
{
    public void Deconstruct(out int partitions, out long[] ends) => (partitions, ends) = (Partitions, Ends);
}

/// <summary>A stream-group member's current assignment.</summary>
public sealed record StreamMembership(string MemberId, int Generation, IReadOnlyList<int> Partitions);

/// <summary>
/// One connection to a queue broker speaking the native protocol: length-prefixed MessagePack frames,
/// many requests in flight, answers matched by request id. Thread-safe. A lost connection fails every
/// request in flight with <see cref="QueueException"/> code "ConnectionLost"; create a new client to reconnect.
/// </summary>
public sealed class QueueClient : IAsyncDisposable
{
    private static readonly RpcErrors Errors = new("the broker", (code, message) => new QueueException(code, message), (message, cause) => new QueueException(message, cause));
    private readonly FrameRpcClient _rpc;

    private QueueClient(FrameRpcClient rpc)
    {
        _rpc = rpc;
    }

    public bool IsConnected => _rpc.IsConnected;

    /// <summary>
    /// How long a request may wait for the broker's answer (default 30 s; a fetch's own wait is added).
    /// Past it the request fails with "ConnectionLost" and so does the connection.
    /// </summary>
    public TimeSpan RequestTimeout
    {
        get => _rpc.RequestTimeout;
        set => _rpc.RequestTimeout = value;
    }

    public static async Task<QueueClient> ConnectAsync(string host, int port, CancellationToken cancellationToken = default) =>
        new(await FrameRpcClient.ConnectAsync(host, port, Errors, cancellationToken));

    public async Task<bool> CreateTopicAsync(string name, int partitions) =>
        (bool)(await SendAsync("create_topic", new() { ["name"] = name, ["partitions"] = partitions }))["created"]!;

    /// <summary>Partition count, and the first and committed end offsets of each partition.</summary>
    public async Task<TopicMetadata> MetadataAsync(string topic)
    {
        var result = await SendAsync("metadata", new() { ["topic"] = topic });
        return new TopicMetadata(
            (int)(long)result["partitions"]!,
            [.. ((List<object?>)result["starts"]!).Select(e => (long)e!)],
            [.. ((List<object?>)result["ends"]!).Select(e => (long)e!)]);
    }

    /// <summary>Appends messages as one batch and returns when the broker acknowledged them.</summary>
    public async Task<ProduceAck> ProduceAsync(string topic, IReadOnlyList<(byte[]? Key, IReadOnlyDictionary<string, byte[]>? Headers, ReadOnlyMemory<byte> Payload)> messages,
        int? partition = null, long producerId = -1, int sequence = -1)
    {
        ArgumentNullException.ThrowIfNull(messages);

        // The hot path: written straight to MessagePack, no argument dictionary.
        var body = await SendEncodedAsync("produce", (ref MessagePackWriter w) =>
        {
            w.WriteMapHeader(2 + (partition is null ? 0 : 1) + (producerId >= 0 ? 2 : 0));
            w.Write("topic");
            w.Write(topic);
            if (partition is { } p)
            {
                w.Write("partition");
                w.Write(p);
            }

            if (producerId >= 0)
            {
                w.Write("producerId");
                w.Write(producerId);
                w.Write("sequence");
                w.Write(sequence);
            }

            w.Write("messages");
            w.WriteArrayHeader(messages.Count);
            foreach (var (key, headers, payload) in messages)
            {
                WriteValue(ref w, new object?[] { key, headers, payload });
            }
        });
        return ReadAnswer("produce", body, static (ref MessagePackReader reader) =>
        {
            int partitionOut = 0;
            long offset = 0;
            var duplicate = false;
            for (var fields = reader.ReadMapHeader(); fields > 0; fields--)
            {
                switch (reader.ReadString())
                {
                    case "partition":
                        partitionOut = reader.ReadInt32();
                        break;
                    case "offset":
                        offset = reader.ReadInt64();
                        break;
                    case "duplicate":
                        duplicate = reader.ReadBoolean();
                        break;
                    default:
                        reader.Skip();
                        break;
                }
            }

            return new ProduceAck(partitionOut, offset, duplicate);
        });
    }

    public Task<ProduceAck> ProduceAsync(string topic, ReadOnlyMemory<byte> payload, byte[]? key = null, int? partition = null) =>
        ProduceAsync(topic, [(key, null, payload)], partition);

    /// <summary>Stream read of one partition from <paramref name="offset"/>, waiting up to <paramref name="wait"/> for data.</summary>
    public async Task<List<QueueMessage>> FetchAsync(string topic, int partition, long offset, int max = 500, TimeSpan wait = default, int maxBytes = 1 << 20)
    {
        var body = await SendRawAsync("fetch", new()
        {
            ["topic"] = topic,
            ["partition"] = partition,
            ["offset"] = offset,
            ["max"] = max,
            ["maxBytes"] = maxBytes,
            ["waitMs"] = (int)wait.TotalMilliseconds,
        }, wait);
        return ReadAnswer("fetch", body, (ref MessagePackReader reader) => ReadMessages(ref reader, partition));
    }

    /// <summary>
    /// Opens a push subscription to one partition from <paramref name="offset"/> (negative: only messages
    /// committed from now on); see <see cref="QueueSubscription"/>. The broker keeps at most
    /// <paramref name="window"/> messages and about <paramref name="windowBytes"/> bytes in flight past what was read.
    /// </summary>
    public async Task<QueueSubscription> SubscribeAsync(string topic, int partition, long offset = -1, int window = 1000, int windowBytes = 4 << 20)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(window, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(window, 100_000);
        ArgumentOutOfRangeException.ThrowIfLessThan(windowBytes, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(windowBytes, 64 << 20);
        var subscription = new QueueSubscription(_rpc, topic, partition, window, windowBytes);
        var (id, body) = await _rpc.SubscribeAsync("subscribe", (ref MessagePackWriter w) =>
        {
            w.WriteMapHeader(5);
            w.Write("topic");
            w.Write(topic);
            w.Write("partition");
            w.Write(partition);
            w.Write("offset");
            w.Write(offset);
            w.Write("window");
            w.Write(window);
            w.Write("windowBytes");
            w.Write(windowBytes);
        }, subscription);
        long start;
        try
        {
            start = ReadAnswer("subscribe", body, static (ref MessagePackReader reader) =>
            {
                long? at = null;
                for (var fields = reader.ReadMapHeader(); fields > 0; fields--)
                {
                    if (reader.ReadString() == "offset")
                    {
                        at = reader.ReadInt64();
                    }
                    else
                    {
                        reader.Skip();
                    }
                }

                return at ?? throw new InvalidDataException("the answer has no offset");
            });
        }
        catch (QueueException)
        {
            // The broker subscribed but its answer is unreadable: stop its pushes here and there.
            subscription.Opened(id, 0);
            await subscription.DisposeAsync();
            throw;
        }

        subscription.Opened(id, start);
        return subscription;
    }

    /// <summary>A fetch's answer or a push: <c>{"messages": [[offset, timestamp, key, headers, payload], …]}</c>.</summary>
    internal static List<QueueMessage> ReadMessages(ref MessagePackReader reader, int partition)
    {
        var messages = new List<QueueMessage>();
        for (var fields = reader.ReadMapHeader(); fields > 0; fields--)
        {
            if (reader.ReadString() != "messages")
            {
                reader.Skip();
                continue;
            }

            for (var count = reader.ReadArrayHeader(); count > 0; count--)
            {
                reader.ReadArrayHeader();
                var at = reader.ReadInt64();
                var timestamp = reader.ReadInt64();
                messages.Add(ReadMessage(ref reader, partition, at, timestamp));
            }
        }

        return messages;
    }

    /// <summary>Queue mode: up to <paramref name="max"/> deliveries, waiting up to <paramref name="wait"/> for the first.</summary>
    public async Task<List<QueueDelivery>> QueueFetchAsync(string topic, string group, int max = 100, TimeSpan wait = default)
    {
        var body = await SendRawAsync("queue_fetch", new() { ["topic"] = topic, ["group"] = group, ["max"] = max, ["waitMs"] = (int)wait.TotalMilliseconds }, wait);
        return ReadAnswer("queue_fetch", body, static (ref MessagePackReader reader) =>
        {
            var deliveries = new List<QueueDelivery>();
            for (var fields = reader.ReadMapHeader(); fields > 0; fields--)
            {
                if (reader.ReadString() != "deliveries")
                {
                    reader.Skip();
                    continue;
                }

                for (var count = reader.ReadArrayHeader(); count > 0; count--)
                {
                    reader.ReadArrayHeader();
                    var partition = reader.ReadInt32();
                    var offset = reader.ReadInt64();
                    var id = reader.ReadString() ?? throw new InvalidDataException("a delivery without an id");
                    var deliveryCount = reader.ReadInt32();
                    deliveries.Add(new QueueDelivery(id, deliveryCount, ReadMessage(ref reader, partition, offset, 0)));
                }
            }

            return deliveries;
        });
    }

    /// <summary>[…, key (bin or nil), headers (map of string to bin), payload (bin)] after the fields already read.</summary>
    private static QueueMessage ReadMessage(ref MessagePackReader reader, int partition, long offset, long timestamp)
    {
        var key = reader.TryReadNil() ? null : reader.ReadBytes()?.ToArray();
        var headerCount = reader.ReadMapHeader();
        var headers = new Dictionary<string, byte[]>(headerCount, StringComparer.Ordinal);
        for (var h = 0; h < headerCount; h++)
        {
            headers[reader.ReadString() ?? throw new InvalidDataException("a header without a name")] = reader.ReadBytes()?.ToArray() ?? [];
        }

        var payload = reader.ReadBytes()?.ToArray() ?? [];
        return new QueueMessage(partition, offset, timestamp, key, headers, payload);
    }

    /// <summary>Acks deliveries; returns how many were acked (the others were unknown or stale, e.g. already redelivered).</summary>
    public async Task<int> AckAsync(string topic, string group, IEnumerable<string> deliveryIds) =>
        (int)(long)(await SendAsync("ack", new() { ["topic"] = topic, ["group"] = group, ["deliveryIds"] = deliveryIds.Cast<object?>().ToList() }))["acked"]!;

    public async Task<int> NackAsync(string topic, string group, IEnumerable<string> deliveryIds, TimeSpan delay = default) =>
        (int)(long)(await SendAsync("nack", new() { ["topic"] = topic, ["group"] = group, ["deliveryIds"] = deliveryIds.Cast<object?>().ToList(), ["delayMs"] = (int)delay.TotalMilliseconds }))["nacked"]!;

    public async Task<StreamMembership> JoinAsync(string topic, string group, string? memberId = null, TimeSpan? session = null)
    {
        var args = new Dictionary<string, object?> { ["topic"] = topic, ["group"] = group, ["memberId"] = memberId };
        if (session is { } s)
        {
            args["sessionMs"] = (int)s.TotalMilliseconds;
        }

        return ToMembership(await SendAsync("join", args));
    }

    public async Task<StreamMembership> HeartbeatAsync(string topic, string group, string memberId, int generation) =>
        ToMembership(await SendAsync("heartbeat", new() { ["topic"] = topic, ["group"] = group, ["memberId"] = memberId, ["generation"] = generation }));

    public Task LeaveAsync(string topic, string group, string memberId) =>
        SendAsync("leave", new() { ["topic"] = topic, ["group"] = group, ["memberId"] = memberId });

    /// <summary>Commits the next offset to consume of a partition the member owns.</summary>
    public Task CommitAsync(string topic, string group, string memberId, int partition, long offset) =>
        SendAsync("commit", new() { ["topic"] = topic, ["group"] = group, ["memberId"] = memberId, ["partition"] = partition, ["offset"] = offset });

    /// <summary>The committed offset of a partition, or -1.</summary>
    public async Task<long> CommittedAsync(string topic, string group, int partition) =>
        (long)(await SendAsync("committed", new() { ["topic"] = topic, ["group"] = group, ["partition"] = partition }))["offset"]!;

    public Task PingAsync() => SendAsync("ping", []);

    private static StreamMembership ToMembership(Dictionary<string, object?> result) =>
        new((string)result["memberId"]!, (int)(long)result["generation"]!, [.. ((List<object?>)result["partitions"]!).Select(p => (int)(long)p!)]);

    /// <summary>Sends one request and waits for its answer; a broker error becomes a <see cref="QueueException"/>.</summary>
    public Task<Dictionary<string, object?>> SendAsync(string op, Dictionary<string, object?> args) => _rpc.CallAsync(op, args);

    /// <summary>
    /// An answer read with <paramref name="read"/>; one that cannot be is QueueException "BadAnswer" (a
    /// MessagePack exception once stopped a producer's pump for good: nothing caught it).
    /// </summary>
    private static T ReadAnswer<T>(string op, byte[] body, AnswerReader<T> read) =>
        RpcAnswers.Read(op, body, read, static message => new QueueException("BadAnswer", message));

    /// <summary>Sends one request; the answer's result (MessagePack) when it is "ok".</summary>
    private Task<byte[]> SendRawAsync(string op, Dictionary<string, object?> args, TimeSpan serverWait = default) =>
        _rpc.SendAsync(op, (ref MessagePackWriter w) => FrameRpcClient.WriteValue(ref w, args), serverWait);

    private Task<byte[]> SendEncodedAsync(string op, MessagePackBody args) => _rpc.SendAsync(op, args);

    private static void WriteValue(ref MessagePackWriter writer, object? value) => FrameRpcClient.WriteValue(ref writer, value);

    public ValueTask DisposeAsync() => _rpc.DisposeAsync();
}
