using System.Buffers;
using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Threading.Channels;
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

    public string Code { get; }

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
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly PipeReader _input;
    private readonly Channel<byte[]> _requests = Channel.CreateUnbounded<byte[]>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Task _writer;
    private readonly ConcurrentDictionary<long, TaskCompletionSource<byte[]>> _pending = new();
    private readonly Task _reader;
    private long _nextId;
    private volatile Exception? _lost;

    private QueueClient(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
        _input = PipeReader.Create(_stream);
        _reader = Task.Run(ReadLoopAsync);
        _writer = Task.Run(WriteLoopAsync);
    }

    public bool IsConnected => _lost is null;

    public static async Task<QueueClient> ConnectAsync(string host, int port, CancellationToken cancellationToken = default)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(host, port, cancellationToken);
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        return new QueueClient(socket);
    }

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
        var reader = new MessagePackReader(body);
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
        });
        var reader = new MessagePackReader(body);
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
        var body = await SendRawAsync("queue_fetch", new() { ["topic"] = topic, ["group"] = group, ["max"] = max, ["waitMs"] = (int)wait.TotalMilliseconds });
        var reader = new MessagePackReader(body);
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
                var id = reader.ReadString()!;
                var deliveryCount = reader.ReadInt32();
                deliveries.Add(new QueueDelivery(id, deliveryCount, ReadMessage(ref reader, partition, offset, 0)));
            }
        }

        return deliveries;
    }

    /// <summary>[…, key (bin or nil), headers (map of string to bin), payload (bin)] after the fields already read.</summary>
    private static QueueMessage ReadMessage(ref MessagePackReader reader, int partition, long offset, long timestamp)
    {
        var key = reader.TryReadNil() ? null : reader.ReadBytes()?.ToArray();
        var headerCount = reader.ReadMapHeader();
        var headers = new Dictionary<string, byte[]>(headerCount, StringComparer.Ordinal);
        for (var h = 0; h < headerCount; h++)
        {
            headers[reader.ReadString()!] = reader.ReadBytes()?.ToArray() ?? [];
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
    public async Task<Dictionary<string, object?>> SendAsync(string op, Dictionary<string, object?> args)
    {
        var body = await SendRawAsync(op, args);
        try
        {
            return MessagePackValues.ReadWhole(new ReadOnlySequence<byte>(body)) as Dictionary<string, object?> ?? [];
        }
        catch (InvalidDataException ex)
        {
            throw new QueueException("BadAnswer", "the broker's answer is not a map: " + ex.Message);
        }
    }

    /// <summary>Sends one request; the answer's result (MessagePack) when it is "ok".</summary>
    private Task<byte[]> SendRawAsync(string op, Dictionary<string, object?> args) =>
        SendEncodedAsync(op, (ref MessagePackWriter w) => WriteValue(ref w, args));

    private async Task<byte[]> SendEncodedAsync(string op, MessagePackBody args)
    {
        var id = Interlocked.Increment(ref _nextId);
        var answer = new TaskCompletionSource<byte[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pending[id] = answer;
        var frame = Frames.Build(id, op, args);
        if (_lost is { } lost || !_requests.Writer.TryWrite(frame))
        {
            _pending.TryRemove(id, out _);
            throw new QueueException("connection to the broker is lost", _lost ?? new ObjectDisposedException(nameof(QueueClient)));
        }

        return await answer.Task;
    }

    /// <summary>Sends requests in order; whatever was queued meanwhile goes out in one write.</summary>
    private async Task WriteLoopAsync()
    {
        var reader = _requests.Reader;
        var batch = new byte[64 * 1024];
        try
        {
            while (await reader.WaitToReadAsync())
            {
                var length = 0;
                while (reader.TryPeek(out var next) && (length == 0 || length + next.Length <= batch.Length))
                {
                    reader.TryRead(out _);
                    if (next.Length > batch.Length)
                    {
                        await _stream.WriteAsync(next);
                        continue;
                    }

                    next.CopyTo(batch, length);
                    length += next.Length;
                }

                if (length > 0)
                {
                    await _stream.WriteAsync(batch.AsMemory(0, length));
                }
            }
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
        {
            Fail(ex);
        }
    }

    private static void WriteValue(ref MessagePackWriter writer, object? value)
    {
        switch (value)
        {
            case null:
                writer.WriteNil();
                break;
            case string s:
                writer.Write(s);
                break;
            case bool b:
                writer.Write(b);
                break;
            case int i:
                writer.Write(i);
                break;
            case long l:
                writer.Write(l);
                break;
            case byte[] bytes:
                writer.Write(bytes);
                break;
            case ReadOnlyMemory<byte> memory:
                writer.Write(memory.Span);
                break;
            case IReadOnlyDictionary<string, byte[]> headers:
                writer.WriteMapHeader(headers.Count);
                foreach (var (name, bytes) in headers)
                {
                    writer.Write(name);
                    writer.Write(bytes);
                }

                break;
            case Dictionary<string, object?> map:
                writer.WriteMapHeader(map.Count);
                foreach (var (name, item) in map)
                {
                    writer.Write(name);
                    WriteValue(ref writer, item);
                }

                break;
            case System.Collections.IList list:
                writer.WriteArrayHeader(list.Count);
                foreach (var item in list)
                {
                    WriteValue(ref writer, item);
                }

                break;
            default:
                throw new ArgumentException($"cannot send a {value.GetType().Name}");
        }
    }

    private async Task ReadLoopAsync()
    {
        try
        {
            while (true)
            {
                var result = await _input.ReadAsync();
                var buffer = result.Buffer;
                while (true)
                {
                    var status = Frames.TryRead(ref buffer, int.MaxValue, out var body, out _);
                    if (status == FrameStatus.Incomplete)
                    {
                        break;
                    }

                    if (status != FrameStatus.Complete)
                    {
                        throw new InvalidDataException("the broker sent a bad frame length");
                    }

                    Dispatch(body);
                }

                _input.AdvanceTo(buffer.Start, buffer.End);
                if (result.IsCompleted)
                {
                    throw new IOException("the broker closed the connection");
                }
            }
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or InvalidDataException or InvalidOperationException)
        {
            Fail(ex);
        }
    }

    private void Dispatch(ReadOnlySequence<byte> body)
    {
        long id;
        string? status;
        ReadOnlySequence<byte> rest;
        try
        {
            var reader = new MessagePackReader(body);
            if (reader.ReadArrayHeader() != 3)
            {
                throw new InvalidDataException("the broker sent an answer that is not [id, status, body]");
            }

            id = reader.ReadInt64();
            status = reader.ReadString();
            rest = body.Slice(reader.Position);
        }
        catch (Exception ex) when (ex is MessagePackSerializationException or EndOfStreamException or OverflowException)
        {
            throw new InvalidDataException("the broker sent an unreadable answer: " + ex.Message, ex);
        }

        if (id == 0 && status != "ok")
        {
            throw new IOException($"the broker closed the connection: {status}: {Message(rest)}");
        }

        if (_pending.TryRemove(id, out var waiter))
        {
            if (status == "ok")
            {
                waiter.TrySetResult(rest.ToArray());
            }
            else
            {
                waiter.TrySetException(new QueueException(status ?? "Internal", Message(rest)));
            }
        }
    }

    private static string Message(ReadOnlySequence<byte> rest)
    {
        try
        {
            var reader = new MessagePackReader(rest);
            return reader.ReadString() ?? "";
        }
        catch (Exception ex) when (ex is MessagePackSerializationException or EndOfStreamException)
        {
            return "(unreadable message)";
        }
    }

    private void Fail(Exception reason)
    {
        _lost ??= reason;
        _requests.Writer.TryComplete();
        foreach (var id in _pending.Keys)
        {
            if (_pending.TryRemove(id, out var waiter))
            {
                waiter.TrySetException(new QueueException("connection to the broker is lost: " + reason.Message, reason));
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        Fail(new ObjectDisposedException(nameof(QueueClient)));
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
            // Already closed by the other side.
        }

        await _stream.DisposeAsync();
        try
        {
            await _reader;
            await _writer;
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
        {
            // Closed.
        }
    }
}
