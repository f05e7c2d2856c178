using System.Buffers;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Infra.Client.Rpc;
using Infra.Core.Framing;
using MessagePack;

namespace Infra.Client.Queue;

/// <summary>
/// A push subscription to one partition (<see cref="QueueClient.SubscribeAsync"/>): the broker sends
/// committed messages as they become durable, in offset order, without a fetch per batch. Read them with
/// <see cref="ReadAsync"/> or <see cref="ReadAllAsync"/>; as they are read the subscription tells the
/// broker how far it got, so the broker keeps at most the window in flight (messages and bytes, both
/// chosen at subscribe) — a consumer that stops reading stops the stream instead of filling memory.
/// The stream ends when disposed, with the connection ("ConnectionLost"), or with the broker's error
/// (e.g. "OffsetOutOfRange" when retention deleted what had not been read); reads then throw it.
/// Messages already received are read before the error. One reader at a time.
/// </summary>
public sealed class QueueSubscription : IAsyncDisposable, IPushReceiver
{
    private readonly FrameRpcClient _rpc;
    private readonly int _partition;
    private readonly Channel<QueueMessage> _messages = Channel.CreateUnbounded<QueueMessage>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    private long _id;
    private long _credited;
    private long _consumed;
    private long _bytesSinceCredit;
    private int _disposed;
    private volatile bool _endedByBroker;

    internal QueueSubscription(FrameRpcClient rpc, string topic, int partition, int window, int windowBytes)
    {
        _rpc = rpc;
        Topic = topic;
        _partition = partition;
        Window = window;
        WindowBytes = windowBytes;
    }

    public string Topic { get; }

    public int Partition => _partition;

    /// <summary>Messages the broker may send past what was read.</summary>
    public int Window { get; }

    /// <summary>Payload and key bytes the broker may send past what was read (it sends at least one batch).</summary>
    public int WindowBytes { get; }

    /// <summary>The offset the subscription started at (the committed end when it asked for new messages only).</summary>
    public long StartOffset { get; private set; }

    /// <summary>The offset after the last message read.</summary>
    public long Position => Interlocked.Read(ref _consumed);

    internal void Opened(long id, long start)
    {
        _id = id;
        StartOffset = start;
        _credited = start;
        _consumed = start;
    }

    /// <summary>The next message, waiting for one to arrive.</summary>
    public async ValueTask<QueueMessage> ReadAsync(CancellationToken cancellationToken = default)
    {
        QueueMessage message;
        try
        {
            message = _messages.Reader.TryRead(out var ready) ? ready : await _messages.Reader.ReadAsync(cancellationToken);
        }
        catch (ChannelClosedException ex) when (ex.InnerException is QueueException ended)
        {
            throw ended.Again();
        }
        catch (ChannelClosedException)
        {
            throw new ObjectDisposedException(nameof(QueueSubscription));
        }

        Taken(message.Offset + 1, message.Payload.Length + (message.Key?.Length ?? 0));
        return message;
    }

    /// <summary>Messages as they arrive, until cancelled or the stream ends (then its error is thrown).</summary>
    public async IAsyncEnumerable<QueueMessage> ReadAllAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        while (true)
        {
            yield return await ReadAsync(cancellationToken);
        }
    }

    /// <summary>Ends the stream: after the broker's answer no message for it arrives. Unread messages are dropped.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        if (_endedByBroker)
        {
            _messages.Writer.TryComplete();
            return; // the broker ended the stream (or the connection is gone): nothing to stop
        }

        try
        {
            await _rpc.SendAsync("unsubscribe", (ref MessagePackWriter w) =>
            {
                w.WriteMapHeader(1);
                w.Write("subscription");
                w.Write(_id);
            });
        }
        catch (QueueException)
        {
            // The stream already ended (the broker's error, or the connection): nothing to stop.
        }

        _rpc.EndPushes(_id);
        _messages.Writer.TryComplete();
    }

    void IPushReceiver.OnPush(ReadOnlySequence<byte> body)
    {
        List<QueueMessage> messages;
        try
        {
            var reader = new MessagePackReader(body);
            messages = QueueClient.ReadMessages(ref reader, _partition);
        }
        catch (Exception ex) when (MessagePackValues.IsMalformed(ex) || ex is InvalidDataException)
        {
            // The broker still sends: disposing unsubscribes.
            _messages.Writer.TryComplete(new QueueException("BadAnswer", $"a push of the broker is unreadable: {ex.Message}"));
            return;
        }

        foreach (var message in messages)
        {
            _messages.Writer.TryWrite(message);
        }
    }

    void IPushReceiver.OnEnd(Exception error)
    {
        _endedByBroker = true;
        _messages.Writer.TryComplete(error);
    }

    /// <summary>
    /// Moves the mark: once half the window — of messages or of bytes, counted as the broker counts them
    /// — has been read since the broker was last told, it is told (one small request per half window; the
    /// broker never waits for it while the other half lasts).
    /// </summary>
    private void Taken(long next, int bytes)
    {
        Volatile.Write(ref _consumed, next);
        _bytesSinceCredit += bytes;
        if ((next - _credited < Math.Max(1, Window / 2) && _bytesSinceCredit < Math.Max(1, WindowBytes / 2)) || Volatile.Read(ref _disposed) != 0)
        {
            return;
        }

        _credited = next;
        _bytesSinceCredit = 0;
        _ = CreditAsync(next);
    }

    private async Task CreditAsync(long upTo)
    {
        try
        {
            await _rpc.SendAsync("credit", (ref MessagePackWriter w) =>
            {
                w.WriteMapHeader(2);
                w.Write("subscription");
                w.Write(_id);
                w.Write("upTo");
                w.Write(upTo);
            });
        }
        catch (QueueException)
        {
            // The connection is lost or the stream ended: its end reaches the reader through OnEnd.
        }
    }
}
