using System.Net;
using System.Net.Sockets;
using Infra.Client.Queue;

namespace Infra.Client.Tests;

/// <summary>
/// Every request on the shared RPC connection (queue, data node and router clients) has a deadline:
/// a peer that stops answering fails the request and the connection instead of hanging the caller.
/// </summary>
public sealed class RpcDeadlineTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task A_peer_that_never_answers_fails_the_request_and_then_the_connection()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var accepted = listener.AcceptSocketAsync();
        await using var client = await QueueClient.ConnectAsync("127.0.0.1", ((IPEndPoint)listener.LocalEndpoint).Port);
        client.RequestTimeout = TimeSpan.FromMilliseconds(300);
        using var peer = await accepted.WaitAsync(Bound); // reads nothing, answers nothing

        var error = await Assert.ThrowsAsync<QueueException>(() => client.PingAsync().WaitAsync(Bound));
        Assert.Equal("ConnectionLost", error.Code);
        Assert.Contains("did not answer ping within 0.3 s", error.Message, StringComparison.Ordinal);
        Assert.IsType<TimeoutException>(error.InnerException);
        Assert.False(client.IsConnected);

        // The connection is gone: the next request fails at once, and the peer sees it closed.
        var next = await Assert.ThrowsAsync<QueueException>(() => client.PingAsync().WaitAsync(Bound));
        Assert.Equal("ConnectionLost", next.Code);
        var buffer = new byte[4096];
        using var closed = new CancellationTokenSource(Bound);
        while (await peer.ReceiveAsync(buffer, closed.Token) > 0)
        {
        }
    }

    [Fact]
    public async Task A_long_poll_has_its_server_wait_added_to_the_deadline()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var server = AnswerLateAsync(listener, TimeSpan.FromMilliseconds(800));
        await using var client = await QueueClient.ConnectAsync("127.0.0.1", ((IPEndPoint)listener.LocalEndpoint).Port);
        client.RequestTimeout = TimeSpan.FromMilliseconds(300);

        // Asked to wait up to 2 s for data, the server answers after 0.8 s: within the deadline.
        var messages = await client.FetchAsync("t", 0, 0, wait: TimeSpan.FromSeconds(2)).WaitAsync(Bound);
        Assert.Empty(messages);
        Assert.True(client.IsConnected);

        // The same lateness on a request without a wait is past its deadline.
        var error = await Assert.ThrowsAsync<QueueException>(() => client.PingAsync().WaitAsync(Bound));
        Assert.Equal("ConnectionLost", error.Code);
        await server.WaitAsync(Bound);
    }

    [Fact]
    public async Task A_data_node_read_that_asks_the_node_to_wait_has_the_wait_added_to_the_deadline()
    {
        // The wait a read asked for (minLsn, timeoutMs) was not added: past RequestTimeout the client took the
        // node for dead and failed the connection, with every request on it.
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var server = AnswerLateAsync(listener, TimeSpan.FromMilliseconds(800));
        await using var client = await Infra.Client.Data.DataNodeClient.ConnectAsync($"127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}");
        client.RequestTimeout = TimeSpan.FromMilliseconds(300);
        await client.QueryAsync("SELECT 1", minLsn: 5, timeoutMs: 2000).WaitAsync(Bound);
        Assert.True(client.IsConnected);
        listener.Stop();
        await client.DisposeAsync();
        await server.WaitAsync(Bound);
    }

    [Fact]
    public async Task Arguments_that_cannot_be_sent_fail_that_call_only_and_leave_nothing_pending()
    {
        // The request was registered before its arguments were encoded: the entry stayed, and its deadline
        // later failed the connection — and every request on it — blaming a node that never saw it.
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var server = AnswerLateAsync(listener, TimeSpan.Zero);
        await using var client = await Infra.Client.Data.DataNodeClient.ConnectAsync($"127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}");
        client.RequestTimeout = TimeSpan.FromMilliseconds(300);
        await Assert.ThrowsAsync<ArgumentException>(() => client.ExecuteAsync([["INSERT INTO t VALUES(?)", Guid.NewGuid()]]));
        await Task.Delay(1000); // past the deadline the stray entry would have had
        Assert.True(client.IsConnected);
        await client.QueryAsync("SELECT 1").WaitAsync(Bound);
        listener.Stop();
        await client.DisposeAsync();
        await server.WaitAsync(Bound);
    }

    /// <summary>Answers each request (an empty map) <paramref name="delay"/> after reading it.</summary>
    private static async Task AnswerLateAsync(TcpListener listener, TimeSpan delay)
    {
        using var socket = await listener.AcceptSocketAsync();
        var peer = new FramePeer(socket);
        while (await peer.ReadIdsAsync() is { } ids)
        {
            foreach (var id in ids)
            {
                await Task.Delay(delay);
                try
                {
                    await peer.AnswerAsync([id]);
                }
                catch (SocketException)
                {
                    return; // the client gave up on this connection
                }
            }
        }
    }
}
