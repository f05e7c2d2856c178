using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Infra.Core.Framing;
using Infra.Core.Networking;
using MessagePack;
using Microsoft.Extensions.Logging.Abstractions;

namespace Infra.Core.Tests;

/// <summary>
/// The request protocol's server side when the handler runs on the reading thread
/// (<c>handlerLeavesReader</c>): a cheap request is answered right there, and a request that leaves
/// the reader does not hold up the ones behind it on the same connection.
/// </summary>
public sealed class RequestConnectionTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task A_request_that_leaves_the_reader_does_not_hold_up_the_next_one()
    {
        using var slowMayFinish = new ManualResetEventSlim();
        var handler = new Handler(async (op, _, _) =>
        {
            if (op == "slow")
            {
                // Work that blocks its thread: fine once off the reading thread, fatal on it.
                await RequestConnection.LeaveReaderAsync();
                slowMayFinish.Wait(Bound, CancellationToken.None);
            }

            return RequestAnswer.Ok((ref MessagePackWriter w) => w.Write(op));
        });
        await using var listener = new TcpConnectionListener(new IPEndPoint(IPAddress.Loopback, 0), handler, new ListenerOptions(), NullLogger.Instance);
        listener.Start();
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(listener.BoundEndPoint);

        // Both requests in one write: "slow" (id 1) first, then "fast" (id 2).
        await socket.SendAsync(Frames.Build(1, "slow", (ref MessagePackWriter w) => w.WriteMapHeader(0)).Concat(Frames.Build(2, "fast", (ref MessagePackWriter w) => w.WriteMapHeader(0))).ToArray());
        var reader = new AnswerReader(socket);
        Assert.Equal((2L, "ok", "fast"), await reader.NextAsync().WaitAsync(Bound));

        slowMayFinish.Set();
        Assert.Equal((1L, "ok", "slow"), await reader.NextAsync().WaitAsync(Bound));
    }

    [Fact]
    public async Task A_handler_failing_on_the_reading_thread_gets_a_bad_request_answer_and_the_connection_goes_on()
    {
        RequestHandler handler = (op, _, _) => op == "boom"
            ? throw new InvalidDataException("no such thing")
            : Task.FromResult(RequestAnswer.Ok((ref MessagePackWriter w) => w.Write(op)));
        await using var served = await Served.StartAsync(handler);
        var (socket, reader) = (served.Socket, served.Reader);

        await socket.SendAsync(Frames.Build(1, "boom", (ref MessagePackWriter w) => w.WriteMapHeader(0)));
        var (id, status, _) = await reader.NextAsync().WaitAsync(Bound);
        Assert.Equal((1L, "BadRequest"), (id, status));

        await socket.SendAsync(Frames.Build(2, "ping", (ref MessagePackWriter w) => w.WriteMapHeader(0)));
        Assert.Equal((2L, "ok", "ping"), await reader.NextAsync().WaitAsync(Bound));
    }

    [Fact]
    public async Task A_handler_that_throws_something_unexpected_still_answers_and_the_connection_goes_on()
    {
        RequestHandler handler = (op, _, _) => op == "bug"
            ? throw new KeyNotFoundException("a bug in the handler")
            : Task.FromResult(RequestAnswer.Ok((ref MessagePackWriter w) => w.Write(op)));
        await using var served = await Served.StartAsync(handler);
        var (socket, reader) = (served.Socket, served.Reader);

        // Before, the request's task faulted unobserved: no answer at all, the client waited out its timeout.
        await socket.SendAsync(Frames.Build(1, "bug", (ref MessagePackWriter w) => w.WriteMapHeader(0)).Concat(Frames.Build(2, "ping", (ref MessagePackWriter w) => w.WriteMapHeader(0))).ToArray());
        Assert.Equal((1L, "Internal", "internal error: a bug in the handler"), await reader.NextAsync().WaitAsync(Bound));
        Assert.Equal((2L, "ok", "ping"), await reader.NextAsync().WaitAsync(Bound));
    }

    [Fact]
    public async Task A_request_header_with_a_string_length_past_the_frame_is_a_bad_request_and_the_connection_goes_on()
    {
        RequestHandler handler = (op, _, _) => Task.FromResult(RequestAnswer.Ok((ref MessagePackWriter w) => w.Write(op)));
        await using var served = await Served.StartAsync(handler);
        var (socket, reader) = (served.Socket, served.Reader);

        // [1, <str32 of 4 GiB>]: the op's length runs past the frame.
        byte[] body = [0x93, 0x01, 0xdb, 0xff, 0xff, 0xff, 0xff];
        byte[] framed = [0, 0, 0, (byte)body.Length, .. body];
        await socket.SendAsync(framed.Concat(Frames.Build(2, "ping", (ref MessagePackWriter w) => w.WriteMapHeader(0))).ToArray());
        var (id, status, _) = await reader.NextAsync().WaitAsync(Bound);
        Assert.Equal((1L, "BadRequest"), (id, status));
        Assert.Equal((2L, "ok", "ping"), await reader.NextAsync().WaitAsync(Bound));
    }

    /// <summary>A listener running <see cref="RequestConnection"/> with a handler, and one connected client socket.</summary>
    private sealed class Served(TcpConnectionListener listener, Socket socket) : IAsyncDisposable
    {
        public Socket Socket { get; } = socket;

        public AnswerReader Reader { get; } = new(socket);

        public static async Task<Served> StartAsync(RequestHandler handler)
        {
            var listener = new TcpConnectionListener(new IPEndPoint(IPAddress.Loopback, 0), new Handler(handler), new ListenerOptions(), NullLogger.Instance);
            listener.Start();
            var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(listener.BoundEndPoint);
            return new Served(listener, socket);
        }

        public async ValueTask DisposeAsync()
        {
            Socket.Dispose();
            await listener.DisposeAsync();
        }
    }

    private sealed class Handler(RequestHandler handler) : IConnectionHandler
    {
        public Task OnConnectedAsync(ConnectionContext connection) =>
            RequestConnection.RunAsync(connection, 1 << 20, 16, handler, handlerLeavesReader: true);
    }

    /// <summary>Reads answers <c>[id, status, string]</c> off a socket.</summary>
    private sealed class AnswerReader(Socket socket)
    {
        private readonly ArrayBufferWriter<byte> _received = new();

        public async Task<(long Id, string Status, string Value)> NextAsync()
        {
            var buffer = new byte[4096];
            while (true)
            {
                var pending = new ReadOnlySequence<byte>(_received.WrittenMemory);
                if (Frames.TryRead(ref pending, 1 << 20, out var body, out _) == FrameStatus.Complete)
                {
                    var reader = new MessagePackReader(body);
                    reader.ReadArrayHeader();
                    var answer = (reader.ReadInt64(), reader.ReadString() ?? "", reader.ReadString() ?? "");
                    var rest = pending.ToArray();
                    _received.ResetWrittenCount();
                    _received.Write(rest);
                    return answer;
                }

                var read = await socket.ReceiveAsync(buffer);
                if (read == 0)
                {
                    throw new IOException("the server closed the connection");
                }

                _received.Write(buffer.AsSpan(0, read));
            }
        }
    }
}
