using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.IO.Pipelines;
using Infra.Core.Networking;
using Infra.Core.Networking.Epoll;

namespace Infra.Core.Tests;

/// <summary>The socket pipes on both engines: .NET's (SocketPipeReader/Writer) and our epoll one.</summary>
public sealed class SocketPipeTests : IAsyncLifetime
{
    private static readonly Lazy<EpollEngine> Engine = new(() => EpollEngine.Start(2));
    private Socket _left = null!;
    private Socket _right = null!;

    public static TheoryData<string> Engines => ["dotnet", "epoll"];

    private static PipeReader Reader(Socket socket, string engine) =>
        engine == "epoll" ? new EpollPipeReader(Engine.Value.Register(socket)) : new SocketPipeReader(socket);

    private static PipeWriter Writer(Socket socket, string engine) =>
        engine == "epoll" ? new EpollPipeWriter(Engine.Value.Register(socket)) : new SocketPipeWriter(socket);

    public async Task InitializeAsync()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        _left = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var accept = listener.AcceptAsync();
        await _left.ConnectAsync(listener.LocalEndPoint!);
        _right = await accept;
    }

    public Task DisposeAsync()
    {
        _left.Dispose();
        _right.Dispose();
        return Task.CompletedTask;
    }

    [Theory]
    [MemberData(nameof(Engines))]
    public async Task Reads_what_was_sent_and_keeps_unconsumed_bytes(string engine)
    {
        var reader = Reader(_right, engine);
        await _left.SendAsync("hello world"u8.ToArray());

        var result = await ReadAtLeastAsync(reader, 11);
        Assert.Equal("hello world", Text(result.Buffer));
        Assert.True(result.Buffer.IsSingleSegment);

        // Consume "hello ", leave "world" unexamined: the next read returns it at once.
        reader.AdvanceTo(result.Buffer.GetPosition(6));
        Assert.True(reader.TryRead(out var again));
        Assert.Equal("world", Text(again.Buffer));
        reader.AdvanceTo(again.Buffer.Start, again.Buffer.End);

        // All examined: nothing until more arrives.
        Assert.False(reader.TryRead(out _));
        await _left.SendAsync("!"u8.ToArray());
        var more = await reader.ReadAsync();
        Assert.Equal("world!", Text(more.Buffer));
        reader.AdvanceTo(more.Buffer.End);
        reader.Complete();
    }

    [Theory]
    [MemberData(nameof(Engines))]
    public async Task A_message_larger_than_the_buffer_accumulates_in_one_segment(string engine)
    {
        var reader = Reader(_right, engine);
        var big = new byte[100_000];
        new Random(1).NextBytes(big);
        var send = _left.SendAsync(big);

        var result = await ReadAtLeastAsync(reader, big.Length);
        await send;
        Assert.True(result.Buffer.IsSingleSegment);
        Assert.True(result.Buffer.FirstSpan.SequenceEqual(big));
        reader.AdvanceTo(result.Buffer.End);
        reader.Complete();
    }

    [Theory]
    [MemberData(nameof(Engines))]
    public async Task Reports_end_of_stream(string engine)
    {
        var reader = Reader(_right, engine);
        await _left.SendAsync("bye"u8.ToArray());
        _left.Shutdown(SocketShutdown.Send);

        var result = await ReadAtLeastAsync(reader, 3);
        while (!result.IsCompleted)
        {
            reader.AdvanceTo(result.Buffer.Start, result.Buffer.End);
            result = await reader.ReadAsync();
        }

        Assert.Equal("bye", Text(result.Buffer));
        reader.AdvanceTo(result.Buffer.End);
        Assert.True((await reader.ReadAsync()).IsCompleted);
        reader.Complete();
    }

    [Theory]
    [MemberData(nameof(Engines))]
    public async Task Cancel_pending_read_wakes_a_waiting_reader_once(string engine)
    {
        var reader = Reader(_right, engine);
        var pending = reader.ReadAsync().AsTask();
        await Task.Delay(50);
        Assert.False(pending.IsCompleted);

        reader.CancelPendingRead();
        var canceled = await pending.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(canceled.IsCanceled);
        reader.AdvanceTo(canceled.Buffer.Start);

        // The reader still works afterwards, and a cancel before the read is seen by that read.
        await _left.SendAsync("x"u8.ToArray());
        var data = await ReadAtLeastAsync(reader, 1);
        Assert.Equal("x", Text(data.Buffer));
        reader.AdvanceTo(data.Buffer.End);
        reader.CancelPendingRead();
        Assert.True((await reader.ReadAsync()).IsCanceled);
        reader.Complete();
    }

    [Theory]
    [MemberData(nameof(Engines))]
    public async Task Rejects_positions_from_outside_the_buffer(string engine)
    {
        var reader = Reader(_right, engine);
        await _left.SendAsync("abc"u8.ToArray());
        var result = await ReadAtLeastAsync(reader, 3);

        Assert.Throws<InvalidOperationException>(() => reader.AdvanceTo(result.Buffer.GetPosition(2), result.Buffer.GetPosition(1)));
        reader.AdvanceTo(result.Buffer.End);
        reader.Complete();
        Assert.Throws<InvalidOperationException>(() => reader.TryRead(out _));
    }

    [Theory]
    [MemberData(nameof(Engines))]
    public async Task Writer_sends_everything_written_even_when_the_kernel_takes_it_in_parts(string engine)
    {
        var writer = Writer(_left, engine);
        var payload = new byte[8 << 20];
        new Random(2).NextBytes(payload);

        // 8 MiB cannot fit in the socket buffers: the flush completes only as the peer reads.
        payload.CopyTo(writer.GetSpan(payload.Length));
        writer.Advance(payload.Length);
        Assert.Equal(payload.Length, writer.UnflushedBytes);
        var flush = writer.FlushAsync().AsTask();

        var received = new byte[payload.Length];
        var total = 0;
        while (total < received.Length)
        {
            total += await _right.ReceiveAsync(received.AsMemory(total));
        }

        await flush;
        Assert.Equal(0, writer.UnflushedBytes);
        Assert.True(received.AsSpan().SequenceEqual(payload));

        // Small writes after a large one reuse a small buffer.
        "tail"u8.CopyTo(writer.GetSpan(4));
        writer.Advance(4);
        await writer.FlushAsync();
        var tail = new byte[4];
        Assert.Equal(4, await _right.ReceiveAsync(tail));
        Assert.Equal("tail", Encoding.ASCII.GetString(tail));
        writer.Complete();
        Assert.Throws<InvalidOperationException>(() => writer.GetSpan());
    }

    [Theory]
    [MemberData(nameof(Engines))]
    public async Task Writer_fails_with_io_exception_when_the_peer_is_gone(string engine)
    {
        var writer = Writer(_left, engine);
        _right.LingerState = new LingerOption(true, 0);
        _right.Dispose();
        await Task.Delay(50);

        await Assert.ThrowsAsync<IOException>(async () =>
        {
            for (var i = 0; i < 100; i++)
            {
                writer.GetSpan(1024)[..1024].Fill(1);
                writer.Advance(1024);
                await writer.FlushAsync();
            }
        });
    }

    [Fact]
    public async Task Epoll_closing_the_connection_fails_a_parked_read_and_later_calls()
    {
        var socket = Engine.Value.Register(_right);
        var reader = new EpollPipeReader(socket);
        var writer = new EpollPipeWriter(socket);
        var pending = reader.ReadAsync().AsTask();
        await Task.Delay(50);
        Assert.False(pending.IsCompleted);

        socket.Close();
        await Assert.ThrowsAsync<IOException>(() => pending.WaitAsync(TimeSpan.FromSeconds(10)));
        await Assert.ThrowsAsync<IOException>(async () => await reader.ReadAsync());
        writer.GetSpan(1)[0] = 1;
        writer.Advance(1);
        await Assert.ThrowsAsync<IOException>(async () => await writer.FlushAsync());
        reader.Complete();
        writer.Complete();
    }

    [Fact]
    public async Task Epoll_connects_and_reports_a_refused_connection()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var endPoint = (IPEndPoint)listener.LocalEndPoint!;
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var started = EpollSocket.StartConnect(client, endPoint);
        var registered = Engine.Value.Register(client);
        if (started != 0)
        {
            await registered.FinishConnectAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
        }

        Assert.False(registered.PeerDone); // registered after connect: no hang-up from a fresh socket
        using var accepted = await listener.AcceptAsync();
        var writer = new EpollPipeWriter(registered);
        "ping"u8.CopyTo(writer.GetSpan(4));
        writer.Advance(4);
        await writer.FlushAsync();
        var received = new byte[4];
        Assert.Equal(4, await accepted.ReceiveAsync(received));
        Assert.Equal("ping", Encoding.ASCII.GetString(received));
        registered.Close();

        listener.Dispose(); // nothing listens there any more
        using var refused = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var error = await Assert.ThrowsAsync<SocketException>(async () =>
        {
            if (EpollSocket.StartConnect(refused, endPoint) != 0)
            {
                var failing = Engine.Value.Register(refused);
                try
                {
                    await failing.FinishConnectAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
                }
                finally
                {
                    failing.Close();
                }
            }
        });
        Assert.Equal(SocketError.ConnectionRefused, error.SocketErrorCode);
    }

    [Fact]
    public async Task Epoll_many_connections_echo_concurrently_without_losing_or_mixing_bytes()
    {
        // Both ends on the engine, small and large messages, so reads park, short reads skip the
        // syscall and events race the readers: every byte must still arrive, in order, exactly once.
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(64);
        var pairs = new List<(Socket Client, Socket Server)>();
        for (var i = 0; i < 32; i++)
        {
            var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            var accept = listener.AcceptAsync();
            await client.ConnectAsync(listener.LocalEndPoint!);
            pairs.Add((client, await accept));
        }

        var work = pairs.Select((pair, index) => Task.Run(async () =>
        {
            var server = Engine.Value.Register(pair.Server);
            var client = Engine.Value.Register(pair.Client);
            var serverIn = new EpollPipeReader(server);
            var serverOut = new EpollPipeWriter(server);
            var clientIn = new EpollPipeReader(client);
            var clientOut = new EpollPipeWriter(client);
            var echo = Task.Run(async () =>
            {
                while (true)
                {
                    var result = await serverIn.ReadAsync();
                    foreach (var segment in result.Buffer)
                    {
                        serverOut.Write(segment.Span);
                    }

                    serverIn.AdvanceTo(result.Buffer.End);
                    await serverOut.FlushAsync();
                    if (result.IsCompleted)
                    {
                        return;
                    }
                }
            });

            var random = new Random(index);
            for (var round = 0; round < 200; round++)
            {
                var message = new byte[round % 50 == 0 ? 300_000 : random.Next(1, 600)];
                random.NextBytes(message);
                clientOut.Write(message);
                var flush = clientOut.FlushAsync().AsTask();
                var echoed = await ReadAtLeastAsync(clientIn, message.Length);
                await flush;
                Assert.Equal(message.Length, echoed.Buffer.Length);
                Assert.True(echoed.Buffer.ToArray().AsSpan().SequenceEqual(message), $"connection {index} round {round}: echo differs");
                clientIn.AdvanceTo(echoed.Buffer.End);
            }

            client.Socket.Shutdown(SocketShutdown.Send);
            await echo.WaitAsync(TimeSpan.FromSeconds(30));
            server.Close();
            client.Close();
            pair.Client.Dispose();
            pair.Server.Dispose();
        }));
        await Task.WhenAll(work).WaitAsync(TimeSpan.FromSeconds(120));
    }

    private static async Task<ReadResult> ReadAtLeastAsync(PipeReader reader, int length)
    {
        var result = await reader.ReadAsync();
        while (result.Buffer.Length < length && !result.IsCompleted)
        {
            reader.AdvanceTo(result.Buffer.Start, result.Buffer.End);
            result = await reader.ReadAsync();
        }

        return result;
    }

    private static string Text(System.Buffers.ReadOnlySequence<byte> buffer) => Encoding.ASCII.GetString(buffer);
}
