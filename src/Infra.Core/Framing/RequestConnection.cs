using System.Buffers;
using System.IO.Pipelines;
using System.Net.Sockets;
using Infra.Core.Networking;
using MessagePack;

namespace Infra.Core.Framing;

/// <summary>An answer: "ok" and the result, or an error code and its message.</summary>
public readonly record struct RequestAnswer(string Status, MessagePackBody Body)
{
    public static RequestAnswer Ok(MessagePackBody body) => new("ok", body);

    public static RequestAnswer Error(string code, string message) => new(code, (ref MessagePackWriter w) => w.Write(message));
}

/// <summary>Runs one request: its op and its arguments (the MessagePack value after the op).</summary>
public delegate Task<RequestAnswer> RequestHandler(string op, ReadOnlyMemory<byte> args, CancellationToken cancellationToken);

/// <summary>
/// The server side of the Infra request protocol on one connection: length-prefixed MessagePack
/// frames, a request <c>[id, op, args]</c>, the answer <c>[id, "ok", result]</c> or
/// <c>[id, code, message]</c>. Requests run concurrently (up to a limit, then the connection is not
/// read until answers go out) and are answered as they finish. A frame that is not a request gets a
/// BadRequest answer; a length prefix that is zero, negative or over the limit gets an answer with
/// id 0 and the connection is closed, since the stream can no longer be trusted.
/// </summary>
public static class RequestConnection
{
    /// <param name="first">A request frame body already taken off the connection (a protocol sniffed by its first frame).</param>
    /// <param name="badFrame">Told, for logging and metrics, of every frame that is not a valid request.</param>
    /// <param name="handlerLeavesReader">
    /// False (default): every request starts on the thread pool, so the connection's reader carries on at
    /// once. True: the handler is called on the reading thread (an epoll thread, with Infra.Core's engine)
    /// and must leave it itself (<see cref="LeaveReaderAsync"/>) before anything that can take long;
    /// a cheap request then costs no thread hop at all.
    /// </param>
    public static async Task RunAsync(ConnectionContext connection, int maxFrameBytes, int maxInFlight, RequestHandler handler, byte[]? first = null, Action<string>? badFrame = null,
        bool handlerLeavesReader = false)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(handler);
        var input = connection.Input;
        var closing = connection.ClosingRequested;
        using var registration = closing.UnsafeRegister(static state => ((PipeReader)state!).CancelPendingRead(), input);
        using var writeLock = new SemaphoreSlim(1, 1);
        using var inFlight = new SemaphoreSlim(maxInFlight);
        if (first is not null)
        {
            await inFlight.WaitAsync(CancellationToken.None);
            _ = RunOneAsync(connection.Output, writeLock, inFlight, first, handler, badFrame, handlerLeavesReader, closing);
        }

        try
        {
            while (true)
            {
                var result = await input.ReadAsync(CancellationToken.None);
                if (result.IsCanceled)
                {
                    break;
                }

                var buffer = result.Buffer;
                var fatal = false;
                while (true)
                {
                    var status = Frames.TryRead(ref buffer, maxFrameBytes, out var body, out var declared);
                    if (status == FrameStatus.Incomplete)
                    {
                        break;
                    }

                    if (status != FrameStatus.Complete)
                    {
                        var reason = status == FrameStatus.TooLarge ? $"a frame of {declared} bytes is over the limit of {maxFrameBytes}" : $"a frame length of {declared} is not valid";
                        badFrame?.Invoke(reason);
                        await SendAsync(connection.Output, writeLock, 0, RequestAnswer.Error("BadRequest", reason));
                        fatal = true;
                        break;
                    }

                    var bytes = body.ToArray();
                    await inFlight.WaitAsync(CancellationToken.None);
                    _ = RunOneAsync(connection.Output, writeLock, inFlight, bytes, handler, badFrame, handlerLeavesReader, closing);
                }

                input.AdvanceTo(buffer.Start, buffer.End);
                if (fatal || result.IsCompleted)
                {
                    break;
                }
            }
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or InvalidOperationException or OperationCanceledException)
        {
            // The client went away.
        }

        for (var i = 0; i < maxInFlight; i++)
        {
            await inFlight.WaitAsync(CancellationToken.None);
        }
    }

    /// <summary>Arguments up to this size are parsed on the reading thread by the services' handlers; larger requests leave it first.</summary>
    public const int InlineArgsLimit = 4096;

    /// <summary>
    /// For a handler called on the reading thread: goes on on the thread pool, so the connection's reader
    /// (and, on an epoll thread, every other socket of that thread) carries on meanwhile.
    /// </summary>
    public static System.Runtime.CompilerServices.YieldAwaitable LeaveReaderAsync() => Task.Yield();

    private static async Task RunOneAsync(PipeWriter output, SemaphoreSlim writeLock, SemaphoreSlim inFlight, byte[] frame, RequestHandler handler, Action<string>? badFrame,
        bool handlerLeavesReader, CancellationToken closing)
    {
        try
        {
            if (!handlerLeavesReader)
            {
                await Task.Yield();
            }

            long id = 0;
            RequestAnswer answer;
            try
            {
                var reader = new MessagePackReader(frame);
                if (reader.ReadArrayHeader() != 3)
                {
                    throw new InvalidDataException("a request is [id, op, args]");
                }

                id = reader.ReadInt64();
                var op = reader.ReadString() ?? throw new InvalidDataException("a request without an op");
                answer = await handler(op, frame.AsMemory((int)reader.Consumed), closing);
            }
            catch (Exception ex) when (MessagePackValues.IsMalformed(ex) || ex is InvalidDataException)
            {
                badFrame?.Invoke(ex.Message);
                answer = RequestAnswer.Error("BadRequest", "not a valid request: " + ex.Message);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                // A handler's own failure: answered, so the client does not wait out its timeout for nothing.
                answer = RequestAnswer.Error("Internal", "internal error: " + ex.Message);
            }

            await SendAsync(output, writeLock, id, answer);
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or InvalidOperationException or OperationCanceledException)
        {
            // The connection is gone.
        }
        finally
        {
            inFlight.Release();
        }
    }

    private static async Task SendAsync(PipeWriter output, SemaphoreSlim writeLock, long id, RequestAnswer answer)
    {
        var frame = Frames.Build(id, answer.Status, answer.Body);
        await writeLock.WaitAsync();
        try
        {
            await output.WriteAsync(frame);
        }
        finally
        {
            writeLock.Release();
        }
    }
}
