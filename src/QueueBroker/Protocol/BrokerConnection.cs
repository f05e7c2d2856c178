using System.Buffers;
using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Threading.Channels;
using Infra.Core.Framing;
using Infra.Core.Networking;
using Infra.QueueBroker.Log;
using MessagePack;
using Microsoft.Extensions.Logging;

namespace Infra.QueueBroker.Protocol;

/// <summary>Runs native-protocol connections for the listener.</summary>
internal sealed class BrokerConnectionHandler(Broker broker, ILogger<BrokerConnection> logger) : IConnectionHandler
{
    public async Task OnConnectedAsync(ConnectionContext connection)
    {
        using var session = new BrokerConnection(broker, connection, logger);
        await session.RunAsync();
    }
}

/// <summary>
/// One native-protocol connection: length-prefixed MessagePack frames. A request is
/// <c>[id, op, {args}]</c>; the answer is <c>[id, "ok", {result}]</c> or <c>[id, "&lt;ErrorCode&gt;", "message"]</c>.
/// Requests run concurrently (pipelined) and are answered as they finish, matched by id. A frame that
/// is not a valid request gets a BadRequest answer and the connection goes on; a length prefix that
/// is zero, negative or over the frame limit gets an answer with id 0 and the connection is closed,
/// since the stream can no longer be trusted. Back-pressure: past the in-flight request limit the
/// connection is not read until answers go out; past the in-flight produce bytes it answers Busy; and
/// past <see cref="MaxQueuedAnswerBytes"/> of answers and pushes waiting to be sent (a client that
/// sends but does not read) neither new requests are read nor pushes made until the writer has sent
/// half of them — before, such a client made the broker queue answers without bound.
/// </summary>
internal sealed partial class BrokerConnection : IDisposable
{
    private readonly Broker _broker;
    private readonly ConnectionContext _connection;
    private readonly ILogger _logger;
    private readonly Channel<byte[]> _answers = Channel.CreateUnbounded<byte[]>(new UnboundedChannelOptions { SingleReader = true });
    private readonly SemaphoreSlim _inFlight;
    private readonly CancellationTokenSource _closed = new();
    private readonly ConcurrentDictionary<long, Subscription> _subscriptions = new();
    private long _inFlightBytes;
    private long _fetchBytes;
    private long _queuedBytes;
    private TaskCompletionSource? _drained;
    private volatile bool _writerDone;

    /// <summary>Answer and push bytes queued for the writer past which the connection waits for it.</summary>
    public const long MaxQueuedAnswerBytes = 8 << 20;

    public BrokerConnection(Broker broker, ConnectionContext connection, ILogger logger)
    {
        _broker = broker;
        _connection = connection;
        _logger = logger;
        _inFlight = new SemaphoreSlim(broker.Options.MaxInFlightRequestsPerConnection);
    }

    public async Task RunAsync()
    {
        var input = _connection.Input;
        using var closing = _connection.ClosingRequested.UnsafeRegister(static state => ((PipeReader)state!).CancelPendingRead(), input);
        var maxFrame = _broker.Options.MaxFrameBytes;
        var running = new List<Task>();
        var writer = Task.Run(WriteLoopAsync);
        try
        {
            while (true)
            {
                ReadResult result;
                try
                {
                    result = await input.ReadAsync();
                }
                catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
                {
                    break;
                }

                if (result.IsCanceled)
                {
                    break;
                }

                var buffer = result.Buffer;
                var fatal = false;
                while (true)
                {
                    var status = Frames.TryRead(ref buffer, maxFrame, out var body, out var declared);
                    if (status == FrameStatus.Incomplete)
                    {
                        break;
                    }

                    if (status != FrameStatus.Complete)
                    {
                        var (code, message) = status == FrameStatus.TooLarge
                            ? (ErrorCode.TooLarge, $"frame of {declared} bytes is over the {maxFrame}-byte limit")
                            : (ErrorCode.BadRequest, $"frame length {declared} is not positive");
                        ProtocolError(code, message);
                        await WriteErrorAsync(0, code, message);
                        fatal = true;
                        break;
                    }

                    if (!_inFlight.Wait(0))
                    {
                        await _inFlight.WaitAsync();
                    }

                    if (Volatile.Read(ref _queuedBytes) > MaxQueuedAnswerBytes && !await RoomToAnswerAsync(_connection.ClosingRequested))
                    {
                        _inFlight.Release();
                        fatal = true; // the writer is gone, or the broker is stopping: read no more
                        break;
                    }

                    Task task;
                    if (ProduceParser.TryParse(body, out var produceId, out var produce))
                    {
                        task = HandleAsync(produceId, "produce", Fields.Empty, produce, body.Length);
                    }
                    else
                    {
                        var request = Parse(body, out var id, out var error);
                        task = request is null ? WriteErrorThenReleaseAsync(id, error!) : HandleAsync(id, request.Value.Op, request.Value.Args, null, body.Length);
                    }

                    if (!task.IsCompleted)
                    {
                        running.Add(task);
                    }

                    if (running.Count > 256)
                    {
                        running.RemoveAll(t => t.IsCompleted);
                    }
                }

                input.AdvanceTo(buffer.Start, buffer.End);
                if (fatal || result.IsCompleted)
                {
                    break;
                }
            }

            // Reading is over (the client left, or the broker is stopping): long polls end now instead of
            // holding the connection for their full wait; appends in flight still finish and are answered.
            await _closed.CancelAsync();
            await Task.WhenAll(running);
        }
        finally
        {
            await _closed.CancelAsync();
            foreach (var subscriptionId in _subscriptions.Keys)
            {
                if (_subscriptions.TryRemove(subscriptionId, out var subscription)) // whoever removes it disposes it
                {
                    await subscription.StopAsync();
                    subscription.Dispose();
                }
            }

            _answers.Writer.TryComplete();
            await writer;
        }
    }

    /// <summary>
    /// Sends answers in the order they finish. Everything that finished meanwhile goes out with one
    /// flush (one send), so a group commit that completes many requests at once costs one send per
    /// connection, not one per request. (Measured: sending from the thread that completes the group
    /// commit instead — no writer wake-ups — serialises the loopback sends and loses 40% at 64 producers.)
    /// </summary>
    private async Task WriteLoopAsync()
    {
        var reader = _answers.Reader;
        var output = _connection.Output;
        try
        {
            while (await reader.WaitToReadAsync())
            {
                var bytes = 0L;
                while (reader.TryRead(out var frame))
                {
                    output.Write(frame);
                    bytes += frame.Length;
                }

                await output.FlushAsync();
                if (Interlocked.Add(ref _queuedBytes, -bytes) <= MaxQueuedAnswerBytes / 2)
                {
                    Interlocked.Exchange(ref _drained, null)?.TrySetResult();
                }
            }
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or InvalidOperationException or OperationCanceledException)
        {
            // The client went away; nothing more to answer.
        }
        finally
        {
            _writerDone = true;
            _answers.Writer.TryComplete(); // nothing more is queued for a writer that is gone
            Interlocked.Exchange(ref _drained, null)?.TrySetResult();
        }
    }

    /// <summary>
    /// Waits until the queued answers are down to half the limit; false when the writer is gone or
    /// <paramref name="cancellationToken"/> fires first. Every waiter (the read loop, the pumps) shares one signal.
    /// </summary>
    private async Task<bool> RoomToAnswerAsync(CancellationToken cancellationToken)
    {
        while (Volatile.Read(ref _queuedBytes) > MaxQueuedAnswerBytes / 2 && !_writerDone)
        {
            var waiter = Volatile.Read(ref _drained);
            if (waiter is null)
            {
                var fresh = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                waiter = Interlocked.CompareExchange(ref _drained, fresh, null) ?? fresh;
            }

            // Published before this re-check: a writer that drained meanwhile either sees it or is seen.
            if (Volatile.Read(ref _queuedBytes) <= MaxQueuedAnswerBytes / 2 || _writerDone)
            {
                Interlocked.CompareExchange(ref _drained, null, waiter);
                waiter.TrySetResult();
                break;
            }

            try
            {
                await waiter.Task.WaitAsync(cancellationToken);
            }
            catch (OperationCanceledException)
            {
                return false;
            }
        }

        return !_writerDone;
    }

    private static readonly Task<bool> Room = Task.FromResult(true);

    /// <summary>For a pump before it reads: false when the writer is gone (or the subscription stopped meanwhile).</summary>
    private Task<bool> RoomToPush(CancellationToken cancellationToken) =>
        Volatile.Read(ref _queuedBytes) > MaxQueuedAnswerBytes ? RoomToAnswerAsync(cancellationToken) : Room;

    /// <summary>Queues a frame for the writer, counted until it is sent.</summary>
    private void Enqueue(byte[] frame)
    {
        Interlocked.Add(ref _queuedBytes, frame.Length);
        if (!_answers.Writer.TryWrite(frame))
        {
            Interlocked.Add(ref _queuedBytes, -frame.Length); // the writer is done: nobody to answer
        }
    }

    public void Dispose()
    {
        _closed.Dispose();
        _inFlight.Dispose();
    }

    private (string Op, Fields Args)? Parse(ReadOnlySequence<byte> body, out long id, out BrokerException? error)
    {
        id = 0;
        error = null;
        try
        {
            if (MessagePackValues.ReadWhole(body) is not List<object?> { Count: >= 2 and <= 3 } parts)
            {
                throw new InvalidDataException("a request is an array [id, op, {args}]");
            }

            id = parts[0] switch
            {
                long l => l,
                ulong u => (long)u,
                _ => throw new InvalidDataException("the request id must be an integer"),
            };
            var op = parts[1] as string ?? throw new InvalidDataException("the op must be a string");
            var args = parts.Count == 3 ? parts[2] switch
            {
                null => Fields.Empty,
                Dictionary<string, object?> map => new Fields(map),
                _ => throw new InvalidDataException("the args must be a map"),
            } : Fields.Empty;
            return (op, args);
        }
        catch (InvalidDataException ex)
        {
            ProtocolError(ErrorCode.BadRequest, ex.Message);
            error = new BrokerException(ErrorCode.BadRequest, "malformed request: " + ex.Message);
            if (id == 0)
            {
                id = LeadingId(body); // the request's own id when only what follows it is malformed
            }

            return null;
        }
    }

    /// <summary>The id of a request that starts <c>[id, …</c> however malformed the rest is; 0 when it does not.</summary>
    private static long LeadingId(ReadOnlySequence<byte> body)
    {
        try
        {
            var reader = new MessagePackReader(body);
            return reader.NextMessagePackType == MessagePackType.Array && reader.ReadArrayHeader() is >= 2 and <= 3 && reader.NextMessagePackType == MessagePackType.Integer
                ? reader.ReadInt64()
                : 0;
        }
        catch (Exception ex) when (MessagePackValues.IsMalformed(ex))
        {
            return 0;
        }
    }

    private async Task WriteErrorThenReleaseAsync(long id, BrokerException error)
    {
        try
        {
            await WriteErrorAsync(id, error.Code, error.Message);
        }
        finally
        {
            _inFlight.Release();
        }
    }

    /// <summary>Runs inline on the read loop up to its first wait (for a produce: the append), then concurrently.</summary>
    private async Task HandleAsync(long id, string op, Fields args, ProduceRequest? produce, long size)
    {
        var counted = 0L;
        try
        {
            if (op == "produce")
            {
                counted = size;
                if (Interlocked.Add(ref _inFlightBytes, size) > _broker.Options.MaxInFlightBytesPerConnection && Interlocked.Read(ref _inFlightBytes) != size)
                {
                    throw new BrokerException(ErrorCode.Busy, $"over {_broker.Options.MaxInFlightBytesPerConnection} bytes of produce in flight on this connection; retry");
                }
            }

            await ExecuteAsync(id, op, args, produce);
        }
        catch (BrokerException ex)
        {
            _broker.CountError(ex.Code);
            await WriteErrorAsync(id, ex.Code, ex.Message);
        }
        catch (OperationCanceledException)
        {
            if (_connection.ClosingRequested.IsCancellationRequested)
            {
                await WriteErrorAsync(id, ErrorCode.ShuttingDown, "the broker is shutting down");
            }

            // Otherwise the client left while the request waited: nobody to answer.
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException)
        {
            _broker.CountError(ErrorCode.Internal);
            await WriteErrorAsync(id, ErrorCode.Internal, ex.Message);
        }
        finally
        {
            if (counted > 0)
            {
                Interlocked.Add(ref _inFlightBytes, -counted);
            }

            _inFlight.Release();
        }
    }

    /// <summary>
    /// The bytes a fetch may read, out of the connection's share (<c>--max-inflight-bytes</c>, apart from
    /// produce's): its maxBytes, or what is left when less (Busy when nothing is). Long polls hold theirs
    /// while they wait: a thousand parked fetches of 64 MB each, woken together by one produce, would
    /// otherwise read and serialise 64 GB at once. (A read returns at least one batch, so a fetch can pass
    /// its share by one.)
    /// </summary>
    private int ReserveFetchBytes(int maxBytes)
    {
        var limit = _broker.Options.MaxInFlightBytesPerConnection;
        while (true)
        {
            var held = Interlocked.Read(ref _fetchBytes);
            var take = (int)Math.Min(maxBytes, limit - held);
            if (take <= 0)
            {
                throw new BrokerException(ErrorCode.Busy, $"fetches on this connection hold {held} bytes (--max-inflight-bytes {limit}); wait for one to answer or ask for fewer bytes");
            }

            if (Interlocked.CompareExchange(ref _fetchBytes, held + take, held) == held)
            {
                return take;
            }
        }
    }

    private async Task ExecuteAsync(long id, string op, Fields args, ProduceRequest? produce)
    {
        switch (op)
        {
            case "ping":
                await WriteOkAsync(id, static (ref MessagePackWriter w) => w.WriteMapHeader(0));
                break;
            case "create_topic":
                {
                    var (_, created) = _broker.CreateTopic(args.Text("name"), args.Int("partitions", 1, Topics.TopicRegistry.MaxPartitions));
                    await WriteOkAsync(id, (ref MessagePackWriter w) =>
                    {
                        w.WriteMapHeader(1);
                        w.Write("created");
                        w.Write(created);
                    });
                    break;
                }

            case "metadata":
                {
                    var topic = _broker.Topics.Get(args.Text("topic"));
                    await WriteOkAsync(id, (ref MessagePackWriter w) =>
                    {
                        w.WriteMapHeader(3);
                        w.Write("partitions");
                        w.Write(topic.Partitions.Count);
                        w.Write("starts");
                        w.WriteArrayHeader(topic.Partitions.Count);
                        foreach (var p in topic.Partitions)
                        {
                            w.Write(p.LogOrNull?.StartOffset ?? -1);
                        }

                        w.Write("ends");
                        w.WriteArrayHeader(topic.Partitions.Count);
                        foreach (var p in topic.Partitions)
                        {
                            w.Write(p.LogOrNull?.CommittedEnd ?? -1);
                        }
                    });
                    break;
                }

            case "produce":
                {
                    produce ??= ProduceFromFields(args);
                    var result = await _broker.ProduceAsync(produce.Topic, produce.Partition, produce.Messages, produce.ProducerId, produce.Sequence);
                    await WriteOkAsync(id, (ref MessagePackWriter w) =>
                    {
                        w.WriteMapHeader(4);
                        w.Write("partition");
                        w.Write(result.Partition);
                        w.Write("offset");
                        w.Write(result.BaseOffset);
                        w.Write("count");
                        w.Write(result.Count);
                        w.Write("duplicate");
                        w.Write(result.Duplicate);
                    });
                    break;
                }

            case "fetch":
                {
                    var reserved = ReserveFetchBytes(args.OptionalInt("maxBytes", 1, 64 << 20) ?? (1 << 20));
                    try
                    {
                        var messages = await _broker.FetchAsync(args.Text("topic"), args.Int("partition", 0, int.MaxValue), args.Number("offset"),
                            args.OptionalInt("max", 1, 100_000) ?? 500, reserved,
                            TimeSpan.FromMilliseconds(args.OptionalInt("waitMs", 0, 300_000) ?? 0), _closed.Token);
                        await WriteOkAsync(id, (ref MessagePackWriter w) => WriteMessages(ref w, messages));
                    }
                    finally
                    {
                        Interlocked.Add(ref _fetchBytes, -reserved);
                    }

                    break;
                }

            case "subscribe":
                {
                    if (_subscriptions.Count >= Subscription.MaxPerConnection)
                    {
                        throw new BrokerException(ErrorCode.Busy, $"this connection holds {Subscription.MaxPerConnection} subscriptions; unsubscribe one first");
                    }

                    var topic = args.Text("topic");
                    var (log, start) = _broker.Subscribe(topic, args.Int("partition", 0, int.MaxValue), args.OptionalNumber("offset") ?? -1);
                    var subscription = new Subscription(id, topic, log, start,
                        args.OptionalInt("window", 1, Subscription.MaxWindow) ?? Subscription.DefaultWindow,
                        args.OptionalInt("windowBytes", 1, Subscription.MaxWindowBytes) ?? Subscription.DefaultWindowBytes, _closed.Token);
                    if (!_subscriptions.TryAdd(id, subscription))
                    {
                        subscription.Dispose();
                        throw new BrokerException(ErrorCode.BadRequest, $"subscription {id} is active on this connection; use another request id");
                    }

                    // The answer goes out before the first push: both go through the same writer, in order.
                    await WriteOkAsync(id, (ref MessagePackWriter w) =>
                    {
                        w.WriteMapHeader(2);
                        w.Write("subscription");
                        w.Write(id);
                        w.Write("offset");
                        w.Write(start);
                    });
                    subscription.Start(Push, EndSubscription, RoomToPush);
                    break;
                }

            case "credit":
                FindSubscription(args.Number("subscription")).Credit(args.Number("upTo"));
                await WriteOkAsync(id, static (ref MessagePackWriter w) => w.WriteMapHeader(0));
                break;
            case "unsubscribe":
                {
                    var subscription = FindSubscription(args.Number("subscription"));
                    if (_subscriptions.TryRemove(subscription.Id, out _))
                    {
                        await subscription.StopAsync();
                        subscription.Dispose();
                    }

                    await WriteOkAsync(id, static (ref MessagePackWriter w) => w.WriteMapHeader(0));
                    break;
                }

            case "queue_fetch":
                {
                    var deliveries = await _broker.QueueFetchAsync(args.Text("topic"), args.Text("group"), args.OptionalInt("max", 1, 10_000) ?? 100,
                        TimeSpan.FromMilliseconds(args.OptionalInt("waitMs", 0, 300_000) ?? 0), _closed.Token);
                    await WriteOkAsync(id, (ref MessagePackWriter w) =>
                    {
                        w.WriteMapHeader(1);
                        w.Write("deliveries");
                        w.WriteArrayHeader(deliveries.Count);
                        foreach (var d in deliveries)
                        {
                            w.WriteArrayHeader(7);
                            w.Write(d.Partition);
                            w.Write(d.Message.Offset);
                            w.Write(d.DeliveryId);
                            w.Write(d.DeliveryCount);
                            WriteMessageBody(ref w, d.Message);
                        }
                    });
                    break;
                }

            case "ack":
            case "nack":
                {
                    var group = await _broker.QueueGroupAsync(args.Text("topic"), args.Text("group"));
                    var ids = args.TextList("deliveryIds");
                    var (done, unknown) = op == "ack"
                        ? await group.AckAsync(ids)
                        : await group.NackAsync(ids, TimeSpan.FromMilliseconds(args.OptionalInt("delayMs", 0, 86_400_000) ?? 0));
                    await WriteOkAsync(id, (ref MessagePackWriter w) =>
                    {
                        w.WriteMapHeader(2);
                        w.Write(op == "ack" ? "acked" : "nacked");
                        w.Write(done);
                        w.Write("unknown");
                        w.WriteArrayHeader(unknown.Count);
                        foreach (var u in unknown)
                        {
                            w.Write(u);
                        }
                    });
                    break;
                }

            case "join":
            case "heartbeat":
                {
                    var group = _broker.StreamGroup(args.Text("topic"), args.Text("group"));
                    var assignment = op == "join"
                        ? group.Join(args.OptionalText("memberId"), args.OptionalInt("sessionMs", 1, 3_600_000) is { } ms ? TimeSpan.FromMilliseconds(ms) : null)
                        : group.Heartbeat(args.Text("memberId"), args.Int("generation", -1, int.MaxValue));
                    await WriteOkAsync(id, (ref MessagePackWriter w) =>
                    {
                        w.WriteMapHeader(3);
                        w.Write("memberId");
                        w.Write(assignment.MemberId);
                        w.Write("generation");
                        w.Write(assignment.Generation);
                        w.Write("partitions");
                        w.WriteArrayHeader(assignment.Partitions.Length);
                        foreach (var p in assignment.Partitions)
                        {
                            w.Write(p);
                        }
                    });
                    break;
                }

            case "leave":
                _broker.StreamGroup(args.Text("topic"), args.Text("group")).Leave(args.Text("memberId"));
                await WriteOkAsync(id, static (ref MessagePackWriter w) => w.WriteMapHeader(0));
                break;
            case "commit":
                await _broker.StreamGroup(args.Text("topic"), args.Text("group"))
                    .CommitAsync(args.Text("memberId"), args.Int("partition", 0, int.MaxValue), args.Number("offset"));
                await WriteOkAsync(id, static (ref MessagePackWriter w) => w.WriteMapHeader(0));
                break;
            case "committed":
                {
                    var offset = _broker.StreamGroup(args.Text("topic"), args.Text("group")).Committed(args.Int("partition", 0, int.MaxValue));
                    await WriteOkAsync(id, (ref MessagePackWriter w) =>
                    {
                        w.WriteMapHeader(1);
                        w.Write("offset");
                        w.Write(offset);
                    });
                    break;
                }

            default:
                throw new BrokerException(ErrorCode.BadRequest, $"unknown op '{(op.Length > 40 ? op[..40] : op)}'");
        }
    }

    private Subscription FindSubscription(long id) => _subscriptions.TryGetValue(id, out var subscription)
        ? subscription
        : throw new BrokerException(ErrorCode.BadRequest, $"no subscription {id} on this connection");

    /// <summary>One push frame: the same message layout as a fetch's answer.</summary>
    private void Push(Subscription subscription, List<StoredMessage> messages)
    {
        _broker.Consumed(subscription.Topic, messages);
        Enqueue(Frames.Build(subscription.Id, "push", (ref MessagePackWriter w) => WriteMessages(ref w, messages)));
    }

    /// <summary>The stream ended with an error: its frame is the last for the id, and the id is free again.</summary>
    private void EndSubscription(Subscription subscription, BrokerException error)
    {
        if (_subscriptions.TryRemove(new KeyValuePair<long, Subscription>(subscription.Id, subscription)))
        {
            _broker.CountError(error.Code);
            Enqueue(Frames.Build(subscription.Id, error.Code.ToString(), (ref MessagePackWriter w) => w.Write(error.Message)));
            subscription.Dispose();
        }
    }

    private static void WriteMessages(ref MessagePackWriter w, List<StoredMessage> messages)
    {
        w.WriteMapHeader(1);
        w.Write("messages");
        w.WriteArrayHeader(messages.Count);
        foreach (var m in messages)
        {
            w.WriteArrayHeader(5);
            w.Write(m.Offset);
            w.Write(m.Timestamp);
            WriteMessageBody(ref w, m);
        }
    }

    /// <summary>A produce the fast parser passed on: read field by field, each wrong field a BadRequest naming it.</summary>
    private static ProduceRequest ProduceFromFields(Fields args)
    {
        var items = args.List("messages");
        if (items.Count == 0)
        {
            throw new BrokerException(ErrorCode.BadRequest, "field 'messages' must not be empty");
        }

        return new ProduceRequest(args.Text("topic"), args.OptionalInt("partition", 0, int.MaxValue),
            args.OptionalNumber("producerId") ?? -1, args.OptionalInt("sequence", 0, int.MaxValue) ?? -1, [.. items.Select(Fields.Message)]);
    }

    private static void WriteMessageBody(ref MessagePackWriter w, StoredMessage m)
    {
        if (m.Key is null)
        {
            w.WriteNil();
        }
        else
        {
            w.Write(m.Key);
        }

        w.WriteMapHeader(m.Headers.Length);
        foreach (var header in m.Headers)
        {
            w.Write(header.Name);
            w.Write(header.Value);
        }

        w.Write(m.Payload);
    }

    private Task WriteOkAsync(long id, MessagePackBody body) => WriteAsync(id, "ok", body);

    private Task WriteErrorAsync(long id, ErrorCode code, string message) =>
        WriteAsync(id, code.ToString(), (ref MessagePackWriter w) => w.Write(message));

    private Task WriteAsync(long id, string status, MessagePackBody body)
    {
        Enqueue(Frames.Build(id, status, body));
        return Task.CompletedTask;
    }

    private void ProtocolError(ErrorCode code, string message)
    {
        _broker.CountError(code);
        LogProtocolError(_logger, _connection.Id, code.ToString(), message);
    }

    [LoggerMessage(EventId = 450, Level = LogLevel.Debug, Message = "Connection {Id}: {Code}: {Reason}")]
    private static partial void LogProtocolError(ILogger logger, long id, string code, string reason);
}
