using Infra.QueueBroker.Log;

namespace Infra.QueueBroker.Protocol;

/// <summary>
/// A push subscription to one partition on one connection (the <c>subscribe</c> op): the broker sends
/// committed messages as <c>[id, "push", {"messages": […]}]</c> frames as soon as the flusher makes them
/// durable, instead of waiting for the consumer's next fetch — no request round trip between a commit
/// and its delivery. Flow control is a window the consumer moves (the <c>credit</c> op, "I have taken
/// everything below offset N"): no more is read for it while <see cref="Window"/> messages or
/// <see cref="WindowBytes"/> key and payload bytes are out past the consumer's mark (one read may
/// overshoot by its last batch), so a slow or stalled consumer holds a bounded amount of the broker's
/// memory. The client credits after reading half of either, so neither side can wait on the other.
/// The stream ends with <c>unsubscribe</c> (its answer is the last frame for the id), with the
/// connection, or with an error frame <c>[id, code, message]</c> (e.g. OffsetOutOfRange once
/// retention deleted what the consumer had not read yet).
/// </summary>
internal sealed class Subscription : IDisposable
{
    /// <summary>Subscriptions one connection may hold at once.</summary>
    public const int MaxPerConnection = 256;

    public const int MaxWindow = 100_000;

    public const int DefaultWindow = 1000;

    public const int DefaultWindowBytes = 4 << 20;

    public const int MaxWindowBytes = 64 << 20;

    /// <summary>Messages in one push frame at most (a long backlog goes out in several).</summary>
    private const int MaxMessagesPerPush = 1000;

    private readonly Lock _lock = new();
    private readonly CancellationTokenSource _stop;
    /// <summary>Every message sent past the mark: (its offset + 1, its bytes). Credited per message, not
    /// per push: a consumer's mark usually falls inside a push (once it released only whole pushes, and a
    /// reader that credited mid-push and then read less than half a window more waited forever).</summary>
    private readonly Queue<(long End, int Bytes)> _sent = new();
    private TaskCompletionSource _credited = NewSignal();
    private long _upTo;
    private long _next;
    private long _bytesOut;

    public Subscription(long id, string topic, SegmentLog log, long start, int window, int windowBytes, CancellationToken connectionClosed)
    {
        Id = id;
        Topic = topic;
        Log = log;
        Window = window;
        WindowBytes = windowBytes;
        _upTo = start;
        _next = start;
        _stop = CancellationTokenSource.CreateLinkedTokenSource(connectionClosed);
    }

    public long Id { get; }

    public string Topic { get; }

    public SegmentLog Log { get; }

    public int Window { get; }

    public int WindowBytes { get; }

    /// <summary>The next offset to send.</summary>
    public long Next => Volatile.Read(ref _next);

    public Task Pump { get; private set; } = Task.CompletedTask;

    /// <summary>
    /// The consumer has taken every message below <paramref name="upTo"/>: the window moves on. A mark
    /// at or below the current one changes nothing; one past what was sent is a BadRequest.
    /// </summary>
    public void Credit(long upTo)
    {
        TaskCompletionSource signal;
        lock (_lock)
        {
            if (upTo > _next)
            {
                throw new BrokerException(ErrorCode.BadRequest, $"credit up to offset {upTo} is past what was sent (up to {_next})");
            }

            if (upTo <= _upTo)
            {
                return;
            }

            _upTo = upTo;
            while (_sent.TryPeek(out var push) && push.End <= upTo)
            {
                _sent.Dequeue();
                _bytesOut -= push.Bytes;
            }

            signal = _credited;
            _credited = NewSignal();
        }

        signal.TrySetResult();
    }

    /// <summary>
    /// Starts sending: <paramref name="push"/> writes one push frame, <paramref name="end"/> the error that
    /// ends the stream; <paramref name="room"/> waits, before each read, until the connection has room
    /// for more (false: stop).
    /// </summary>
    public void Start(Action<Subscription, List<StoredMessage>> push, Action<Subscription, BrokerException> end, Func<CancellationToken, Task<bool>> room) =>
        Pump = Task.Run(() => RunAsync(push, end, room));

    /// <summary>Stops sending; when this returns, no further push for this subscription will be written.</summary>
    public async Task StopAsync()
    {
        await _stop.CancelAsync();
        await Pump;
    }

    public void Dispose() => _stop.Dispose();

    private async Task RunAsync(Action<Subscription, List<StoredMessage>> push, Action<Subscription, BrokerException> end, Func<CancellationToken, Task<bool>> room)
    {
        var token = _stop.Token;
        try
        {
            while (!token.IsCancellationRequested)
            {
                if (!await room(token))
                {
                    return;
                }

                long messages, bytes;
                Task? credit = null;
                lock (_lock)
                {
                    messages = _upTo + Window - _next;
                    bytes = WindowBytes - _bytesOut;
                    if (messages <= 0 || bytes <= 0)
                    {
                        credit = _credited.Task;
                    }
                }

                if (credit is not null)
                {
                    await credit.WaitAsync(token);
                    continue;
                }

                var read = Log.Read(Next, (int)Math.Min(messages, MaxMessagesPerPush), (int)bytes);
                if (read.Count == 0)
                {
                    Log.ThrowIfStopped(); // a stopped or closing log has no more data to wait for
                    await Log.WhenDataAfter(Next).WaitAsync(token);
                    continue;
                }

                lock (_lock)
                {
                    foreach (var message in read)
                    {
                        var size = message.Payload.Length + (message.Key?.Length ?? 0);
                        _sent.Enqueue((message.Offset + 1, size));
                        _bytesOut += size;
                    }

                    _next = read[^1].Offset + 1;
                }

                push(this, read);
            }
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
            // Unsubscribed, or the connection ended.
        }
        catch (BrokerException ex)
        {
            end(this, ex);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException and not OperationCanceledException)
        {
            // Anything else ends this stream with an answer, never the pump silently (the connection's
            // teardown awaits every pump).
            end(this, new BrokerException(ErrorCode.Internal, ex.Message));
        }
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}
