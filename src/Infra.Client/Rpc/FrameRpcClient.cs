using System.Buffers;
using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;
using Infra.Core.Framing;
using Infra.Core.Networking;
using MessagePack;

namespace Infra.Client.Rpc;

/// <summary>How a client turns the server's answers into its own exceptions.</summary>
/// <param name="Peer">What the server is called in messages ("the broker", "the data node").</param>
/// <param name="Error">An error answer: (code, message) → exception.</param>
/// <param name="Lost">The connection is gone: (message, cause) → exception.</param>
internal sealed record RpcErrors(string Peer, Func<string, string, Exception> Error, Func<string, Exception, Exception> Lost);

/// <summary>
/// Receives the frames a server pushes for one request id after answering it (a subscription). Called on
/// the connection's reading thread: it must be quick and never block (hand the data on, e.g. to a channel).
/// </summary>
internal interface IPushReceiver
{
    /// <summary>A push frame's body.</summary>
    void OnPush(ReadOnlySequence<byte> body);

    /// <summary>The stream ended: an error frame for its id, or the connection is lost. Called once.</summary>
    void OnEnd(Exception error);
}

/// <summary>
/// One connection speaking the Infra request protocol: length-prefixed MessagePack frames, a request
/// <c>[id, op, args]</c>, an answer <c>[id, "ok", result]</c> or <c>[id, code, message]</c>; many
/// requests in flight, answers matched by id, requests queued meanwhile sent in one write.
/// Thread-safe. A lost connection fails every request in flight; create a new client to reconnect.
/// Every request has a deadline (<see cref="RequestTimeout"/>, plus the time a long poll asked the
/// server to wait): a peer that does not answer in time (hung, paused, partitioned) fails the request
/// and the connection with it, since what it did with the request and the ones after is unknown
/// (Kafka's clients do the same with request.timeout.ms).
/// <para>
/// Inline mode (<see cref="ConnectAsync(string, int, RpcErrors, bool, CancellationToken)"/>, for a
/// service's own request path): the connection runs on Infra.Core's epoll engine when the process chose
/// it, a request is written by the calling thread when nothing else is being written, and the answer of
/// a request sent with <c>inline</c> completes on the thread that read it — the caller's code after its
/// await runs there, up to its next wait, and must never block. No thread hop on either side of a call.
/// </para>
/// </summary>
internal sealed class FrameRpcClient : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream? _stream;
    private readonly SocketConnection? _connection;
    private readonly PipeReader _input;
    private readonly RpcErrors _errors;
    private readonly bool _inline;
    private readonly Channel<byte[]> _requests;
    private readonly ConcurrentDictionary<long, Pending> _pending = new();
    private readonly ConcurrentDictionary<long, IPushReceiver> _pushes = new();
    private readonly Task _writer;
    private readonly Task _reader;
    private readonly ITimer _deadlines;
    private long _nextId;
    private volatile Exception? _lost;

    private FrameRpcClient(Socket socket, SocketConnection? connection, RpcErrors errors, bool inline)
    {
        _socket = socket;
        _errors = errors;
        _inline = inline;
        if (connection is null)
        {
            _stream = new NetworkStream(socket, ownsSocket: true);
            _input = PipeReader.Create(_stream);
        }
        else
        {
            _connection = connection;
            _input = connection.Input;
        }

        // Inline: a request queued while the writer waits for work is written by the caller's thread.
        _requests = Channel.CreateUnbounded<byte[]>(new UnboundedChannelOptions { SingleReader = true, AllowSynchronousContinuations = inline });
        var sweep = SweepInterval(_requestTimeout);
        _deadlines = TimeProvider.System.CreateTimer(static state => ((FrameRpcClient)state!).ExpireOverdue(), this, sweep, sweep);
        _reader = Task.Run(ReadLoopAsync); // after the timer: a loop that fails at once disposes it
        _writer = Task.Run(WriteLoopAsync);
    }

    /// <summary>The longest deadline kept (a larger timeout, e.g. TimeSpan.MaxValue, means "about never").</summary>
    private static readonly TimeSpan MaxTimeout = TimeSpan.FromDays(365);

    /// <summary>The default <see cref="RequestTimeout"/>.</summary>
    public static readonly TimeSpan DefaultRequestTimeout = TimeSpan.FromSeconds(30);

    private TimeSpan _requestTimeout = DefaultRequestTimeout;

    /// <summary>How long a request may wait for its answer (beyond any wait it asked the server for).</summary>
    public TimeSpan RequestTimeout
    {
        get => _requestTimeout;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(value, TimeSpan.Zero);
            _requestTimeout = value < MaxTimeout ? value : MaxTimeout;
            var sweep = SweepInterval(value);
            try
            {
                _deadlines.Change(sweep, sweep);
            }
            catch (ObjectDisposedException)
            {
                // The connection is lost already: no deadlines to keep.
            }
        }
    }

    /// <summary>
    /// How often requests are checked against their deadlines: a quarter of the timeout, at most once
    /// a second (so a deadline passes by at most that much, and an idle connection wakes once a second).
    /// </summary>
    private static TimeSpan SweepInterval(TimeSpan timeout) =>
        TimeSpan.FromTicks(Math.Clamp(timeout.Ticks / 4, TimeSpan.TicksPerMillisecond * 10, TimeSpan.TicksPerSecond));

    public bool IsConnected => _lost is null;

    /// <summary>Requests sent and not answered yet.</summary>
    public int InFlight => _pending.Count;

    public static Task<FrameRpcClient> ConnectAsync(string host, int port, RpcErrors errors, CancellationToken cancellationToken) =>
        ConnectAsync(host, port, errors, inline: false, cancellationToken);

    /// <summary>Connects; <paramref name="inline"/> chooses inline mode (see the class).</summary>
    public static async Task<FrameRpcClient> ConnectAsync(string host, int port, RpcErrors errors, bool inline, CancellationToken cancellationToken)
    {
        if (inline && SocketConnection.Engine is not null)
        {
            EndPoint endPoint = IPAddress.TryParse(host, out var ip) ? new IPEndPoint(ip, port) : new DnsEndPoint(host, port);
            var connection = await SocketConnection.ConnectAsync(endPoint, Timeout.InfiniteTimeSpan, TimeProvider.System, cancellationToken);
            return new FrameRpcClient(connection.Socket, connection, errors, inline);
        }

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

        return new FrameRpcClient(socket, null, errors, inline);
    }

    /// <summary>
    /// Sends one request; the answer's result (MessagePack) when it is "ok". <paramref name="serverWait"/>
    /// is how long the request asks the server to hold it (a long poll): it extends the deadline.
    /// </summary>
    /// <param name="inline">On an inline connection: the answer completes on the thread that read it (otherwise on the thread pool).</param>
    public Task<byte[]> SendAsync(string op, MessagePackBody args, TimeSpan serverWait = default, bool inline = false) =>
        SendAsync(Interlocked.Increment(ref _nextId), op, args, serverWait, inline);

    /// <summary>
    /// Sends a request that opens a stream of pushes (<c>[id, "push", body]</c> frames after its answer),
    /// each handed to <paramref name="receiver"/> until the server ends it with an error frame for the id,
    /// the connection is lost, or <see cref="EndPushes"/>. Returns the request id and its answer.
    /// </summary>
    public async Task<(long Id, byte[] Answer)> SubscribeAsync(string op, MessagePackBody args, IPushReceiver receiver)
    {
        var id = Interlocked.Increment(ref _nextId);
        _pushes[id] = receiver; // before the request goes out: its first push may follow the answer at once
        try
        {
            return (id, await SendAsync(id, op, args, TimeSpan.Zero, inline: false));
        }
        catch
        {
            _pushes.TryRemove(id, out _);
            throw;
        }
    }

    /// <summary>Stops handing pushes for <paramref name="id"/> to its receiver (after the server confirmed the end).</summary>
    public void EndPushes(long id) => _pushes.TryRemove(id, out _);

    private async Task<byte[]> SendAsync(long id, string op, MessagePackBody args, TimeSpan serverWait, bool inline)
    {
        // Completed on the reading thread (inline) or through a CompletionBatch: never with RunContinuationsAsynchronously.
        var answer = new TaskCompletionSource<byte[]>();
        var timeout = _requestTimeout + TimeSpan.FromTicks(Math.Clamp(serverWait.Ticks, 0, MaxTimeout.Ticks));
        // Built before the request is registered: arguments that cannot be encoded (a float, a Guid) threw
        // here with the entry left behind, and its deadline later failed the connection and every request on it.
        var frame = Frames.Build(id, op, args);
        _pending[id] = new Pending(answer, _inline && inline, op, timeout, Environment.TickCount64 + (long)timeout.TotalMilliseconds);
        if (_lost is { } lost || !_requests.Writer.TryWrite(frame))
        {
            _pending.TryRemove(id, out _);
            throw _errors.Lost($"connection to {_errors.Peer} is lost", _lost ?? new ObjectDisposedException(nameof(FrameRpcClient)));
        }

        return await answer.Task;
    }

    /// <summary>Sends one request with plain-object arguments and reads the result as plain objects (see <see cref="MessagePackValues"/>).</summary>
    public async Task<Dictionary<string, object?>> CallAsync(string op, Dictionary<string, object?> args)
    {
        var body = await SendAsync(op, (ref MessagePackWriter w) => WriteValue(ref w, args));
        try
        {
            return MessagePackValues.ReadWhole(new ReadOnlySequence<byte>(body)) as Dictionary<string, object?> ?? [];
        }
        catch (InvalidDataException ex)
        {
            throw _errors.Error("BadAnswer", $"the answer of {_errors.Peer} is not a map: {ex.Message}");
        }
    }

    /// <summary>Writes plain objects: null, string, bool, int, long, double, bytes, maps of string keys, lists.</summary>
    public static void WriteValue(ref MessagePackWriter writer, object? value)
    {
        switch (value)
        {
            case null or long or double or string or byte[]:
                MessagePackValues.WriteSqlValue(ref writer, value);
                break;
            case bool b:
                writer.Write(b);
                break;
            case int i:
                writer.Write(i);
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
            case IReadOnlyDictionary<string, object?> map:
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
                        await WriteAsync(next);
                        continue;
                    }

                    next.CopyTo(batch, length);
                    length += next.Length;
                }

                if (length > 0)
                {
                    await WriteAsync(batch.AsMemory(0, length));
                }
            }
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or InvalidOperationException)
        {
            Fail(ex);
        }
    }

    private async ValueTask WriteAsync(ReadOnlyMemory<byte> bytes)
    {
        if (_connection is not null)
        {
            await _connection.Output.WriteAsync(bytes);
        }
        else
        {
            await _stream!.WriteAsync(bytes);
        }
    }

    /// <summary>
    /// Reads answers. Those of one read that complete on the thread pool go as one <see cref="CompletionBatch{T}"/>
    /// (one work item, not one per answer); inline ones complete right here.
    /// </summary>
    private async Task ReadLoopAsync()
    {
        var answers = new CompletionBatch<byte[]>();
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
                        throw new InvalidDataException($"{_errors.Peer} sent a bad frame length");
                    }

                    Dispatch(body, answers);
                }

                if (answers.Count > 0)
                {
                    answers.Start();
                    answers = new CompletionBatch<byte[]>();
                }

                _input.AdvanceTo(buffer.Start, buffer.End);
                if (result.IsCompleted)
                {
                    throw new IOException($"{_errors.Peer} closed the connection");
                }
            }
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or InvalidDataException or InvalidOperationException)
        {
            answers.Start(); // the answers read before the bad one
            Fail(ex);
        }
    }

    private void Dispatch(ReadOnlySequence<byte> body, CompletionBatch<byte[]> answers)
    {
        long id;
        string? status;
        ReadOnlySequence<byte> rest;
        try
        {
            var reader = new MessagePackReader(body);
            if (reader.ReadArrayHeader() != 3)
            {
                throw new InvalidDataException($"{_errors.Peer} sent an answer that is not [id, status, body]");
            }

            id = reader.ReadInt64();
            status = reader.ReadString();
            rest = body.Slice(reader.Position);
        }
        catch (Exception ex) when (MessagePackValues.IsMalformed(ex))
        {
            throw new InvalidDataException($"{_errors.Peer} sent an unreadable answer: {ex.Message}", ex);
        }

        if (id == 0 && status != "ok")
        {
            throw new IOException($"{_errors.Peer} closed the connection: {status}: {Message(rest)}");
        }

        if (status == "push")
        {
            if (_pushes.TryGetValue(id, out var receiver))
            {
                receiver.OnPush(rest);
            }

            return;
        }

        if (!_pending.ContainsKey(id) && status != "ok" && _pushes.TryRemove(id, out var ended))
        {
            ended.OnEnd(_errors.Error(status ?? "Internal", Message(rest)));
            return;
        }

        if (_pending.TryRemove(id, out var waiter))
        {
            if (status == "ok")
            {
                Complete(waiter, rest.ToArray(), null, answers);
            }
            else
            {
                Complete(waiter, null, _errors.Error(status ?? "Internal", Message(rest)), answers);
            }
        }
    }

    private static void Complete(Pending waiter, byte[]? result, Exception? error, CompletionBatch<byte[]> batch)
    {
        if (waiter.Inline)
        {
            if (error is null)
            {
                waiter.Answer.TrySetResult(result!);
            }
            else
            {
                waiter.Answer.TrySetException(error);
            }
        }
        else if (error is null)
        {
            batch.Add(waiter.Answer, result!);
        }
        else
        {
            batch.Add(waiter.Answer, error);
        }
    }

    private static string Message(ReadOnlySequence<byte> rest)
    {
        try
        {
            var reader = new MessagePackReader(rest);
            return reader.ReadString() ?? "";
        }
        catch (Exception ex) when (MessagePackValues.IsMalformed(ex))
        {
            return "(unreadable message)";
        }
    }

    private void Fail(Exception reason)
    {
        _lost ??= reason;
        _requests.Writer.TryComplete();
        _deadlines.Dispose();
        var failed = new CompletionBatch<byte[]>();
        foreach (var id in _pending.Keys)
        {
            if (_pending.TryRemove(id, out var waiter))
            {
                Complete(waiter, null, _errors.Lost($"connection to {_errors.Peer} is lost: {reason.Message}", reason), failed);
            }
        }

        failed.Start();
        foreach (var id in _pushes.Keys)
        {
            if (_pushes.TryRemove(id, out var receiver))
            {
                receiver.OnEnd(_errors.Lost($"connection to {_errors.Peer} is lost: {reason.Message}", reason));
            }
        }
    }

    /// <summary>
    /// Timer callback: the first request past its deadline fails the connection (and so every request
    /// on it), and the socket is shut so the read and write loops end.
    /// </summary>
    private void ExpireOverdue()
    {
        var now = Environment.TickCount64;
        foreach (var (_, pending) in _pending)
        {
            if (now >= pending.Deadline)
            {
                Fail(new TimeoutException($"{_errors.Peer} did not answer {pending.Op} within {pending.Timeout.TotalSeconds:0.###} s"));
                Shutdown();
                return;
            }
        }
    }

    private void Shutdown()
    {
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // Already closed.
        }
    }

    /// <summary>A request waiting for its answer.</summary>
    /// <param name="Inline">Completes on the thread that reads its answer (see the class), not through a <see cref="CompletionBatch{T}"/>.</param>
    private sealed record Pending(TaskCompletionSource<byte[]> Answer, bool Inline, string Op, TimeSpan Timeout, long Deadline);

    public async ValueTask DisposeAsync()
    {
        Fail(new ObjectDisposedException(nameof(FrameRpcClient)));
        Shutdown();
        if (_stream is not null)
        {
            await _stream.DisposeAsync();
        }

        try
        {
            // The shut socket ends both loops; on the epoll engine the pipes' pooled buffers may be
            // returned only after that (an epoll thread may still be receiving into them).
            await _reader;
            await _writer;
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
        {
            // Closed.
        }

        if (_connection is not null)
        {
            await _connection.DisposeAsync();
        }
    }
}
