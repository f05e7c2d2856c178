using System.Net;
using System.Net.Sockets;
using Infra.Core.Networking;
using Microsoft.Extensions.Logging.Abstractions;

namespace Infra.Core.Tests;

public class ListenerTests
{
    [Fact]
    public async Task Serves_connections_through_pipes()
    {
        await using var listener = Start(new EchoHandler(), new ListenerOptions());
        using var client = await ConnectAsync(listener);

        await client.SendAsync("hello"u8.ToArray());
        Assert.Equal("hello", await ReadStringAsync(client, 5));
        Assert.True(listener.BoundEndPoint.Port > 0);
    }

    [Fact]
    public async Task Refuses_connections_over_the_limit_and_serves_the_rest()
    {
        var rejected = 0;
        await using var listener = Start(new EchoHandler(), new ListenerOptions { MaxConnections = 2 });
        listener.ConnectionRejected += () => Interlocked.Increment(ref rejected);
        using var first = await ConnectAsync(listener);
        using var second = await ConnectAsync(listener);
        await first.SendAsync("1"u8.ToArray());
        await second.SendAsync("2"u8.ToArray());
        Assert.Equal("1", await ReadStringAsync(first, 1));
        Assert.Equal("2", await ReadStringAsync(second, 1));

        using var third = await ConnectAsync(listener);
        var buffer = new byte[1];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        Assert.Equal(0, await third.ReceiveAsync(buffer, timeout.Token));
        Assert.Equal(1, Volatile.Read(ref rejected));

        // Closing one makes room again.
        first.Dispose();
        await Eventually(() => listener.ActiveConnections == 1);
        using var fourth = await ConnectAsync(listener);
        await fourth.SendAsync("4"u8.ToArray());
        Assert.Equal("4", await ReadStringAsync(fourth, 1));
    }

    [Fact]
    public async Task Stop_lets_cooperative_connections_finish()
    {
        var handler = new ClosesOnRequestHandler();
        var listener = Start(handler, new ListenerOptions());
        using var client = await ConnectAsync(listener);
        await Eventually(() => handler.Started == 1);

        await listener.StopAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(1, handler.FinishedGracefully);
        var buffer = new byte[16];
        Assert.Equal("bye", System.Text.Encoding.ASCII.GetString(buffer, 0, await client.ReceiveAsync(buffer)));
        await listener.DisposeAsync();
    }

    [Fact]
    public async Task Stop_aborts_connections_that_outlive_the_grace_period()
    {
        var handler = new EchoHandler();
        var listener = Start(handler, new ListenerOptions());
        using var client = await ConnectAsync(listener);
        await client.SendAsync("x"u8.ToArray());
        Assert.Equal("x", await ReadStringAsync(client, 1));

        await listener.StopAsync(TimeSpan.FromMilliseconds(100));

        Assert.Equal(0, listener.ActiveConnections);
        var buffer = new byte[1];
        try
        {
            Assert.Equal(0, await client.ReceiveAsync(buffer));
        }
        catch (SocketException ex) when (ex.SocketErrorCode == SocketError.ConnectionReset)
        {
            // Aborted connections are reset: also an end.
        }

        // No longer accepting.
        using var late = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await Assert.ThrowsAnyAsync<SocketException>(() => late.ConnectAsync(listener.BoundEndPoint));
        await listener.DisposeAsync();
    }

    [Fact]
    public async Task A_failing_handler_ends_only_its_connection()
    {
        var handler = new ThrowsOnceHandler();
        await using var listener = Start(handler, new ListenerOptions());
        using var doomed = await ConnectAsync(listener);
        var buffer = new byte[1];
        Assert.Equal(0, await doomed.ReceiveAsync(buffer));

        using var fine = await ConnectAsync(listener);
        await fine.SendAsync("ok"u8.ToArray());
        Assert.Equal("ok", await ReadStringAsync(fine, 2));
    }

    [Fact]
    public async Task A_refused_connection_gets_the_reject_message_then_end_of_stream()
    {
        await using var listener = Start(new EchoHandler(), new ListenerOptions { MaxConnections = 1, RejectMessage = "-ERR full\r\n"u8.ToArray() });
        using var first = await ConnectAsync(listener);
        await first.SendAsync("1"u8.ToArray());
        Assert.Equal("1", await ReadStringAsync(first, 1));

        using var second = await ConnectAsync(listener);
        Assert.Equal("-ERR full\r\n", await ReadStringAsync(second, 11));
        var buffer = new byte[1];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        Assert.Equal(0, await second.ReceiveAsync(buffer, timeout.Token));

        // The connection it refused did not disturb the one it serves.
        await first.SendAsync("2"u8.ToArray());
        Assert.Equal("2", await ReadStringAsync(first, 1));
    }

    private static TcpConnectionListener Start(IConnectionHandler handler, ListenerOptions options)
    {
        var listener = new TcpConnectionListener(new IPEndPoint(IPAddress.Loopback, 0), handler, options, NullLogger.Instance);
        listener.Start();
        return listener;
    }

    private static async Task<Socket> ConnectAsync(TcpConnectionListener listener)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(listener.BoundEndPoint);
        return socket;
    }

    private static async Task<string> ReadStringAsync(Socket socket, int length)
    {
        var buffer = new byte[length];
        var read = 0;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (read < length)
        {
            var n = await socket.ReceiveAsync(buffer.AsMemory(read), timeout.Token);
            Assert.True(n > 0, "connection closed early");
            read += n;
        }

        return System.Text.Encoding.ASCII.GetString(buffer);
    }

    private static async Task Eventually(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not met in time");
            await Task.Delay(10);
        }
    }

    private sealed class EchoHandler : IConnectionHandler
    {
        public async Task OnConnectedAsync(ConnectionContext connection)
        {
            while (true)
            {
                var result = await connection.Input.ReadAsync();
                foreach (var segment in result.Buffer)
                {
                    await connection.Output.WriteAsync(segment);
                }

                connection.Input.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted)
                {
                    return;
                }
            }
        }
    }

    private sealed class ClosesOnRequestHandler : IConnectionHandler
    {
        public int Started;
        public int FinishedGracefully;

        public async Task OnConnectedAsync(ConnectionContext connection)
        {
            Interlocked.Increment(ref Started);
            try
            {
                await Task.Delay(Timeout.Infinite, connection.ClosingRequested);
            }
            catch (OperationCanceledException)
            {
                await connection.Output.WriteAsync("bye"u8.ToArray());
                Interlocked.Increment(ref FinishedGracefully);
            }
        }
    }

    private sealed class ThrowsOnceHandler : IConnectionHandler
    {
        private int _calls;

        public Task OnConnectedAsync(ConnectionContext connection)
        {
            if (Interlocked.Increment(ref _calls) == 1)
            {
                throw new InvalidOperationException("handler bug");
            }

            return new EchoHandler().OnConnectedAsync(connection);
        }
    }
}
