using System.Net;
using System.Net.Sockets;
using System.Text;
using Infra.Client.Queue;
using MessagePack;

namespace Infra.Client.Tests;

/// <summary>A push subscription against a fake broker: routing of pushes, credit, and every way the stream ends.</summary>
public sealed class QueueSubscriptionTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    private static void Messages(ref MessagePackWriter w, long from, int count)
    {
        w.WriteMapHeader(1);
        w.Write("messages");
        w.WriteArrayHeader(count);
        for (var offset = from; offset < from + count; offset++)
        {
            w.WriteArrayHeader(5);
            w.Write(offset);
            w.Write(1_700_000_000_000L);
            w.WriteNil();
            w.WriteMapHeader(0);
            w.Write(Encoding.UTF8.GetBytes($"m{offset}"));
        }
    }

    private static async Task<(FramePeer Peer, long Id, Socket Socket)> AcceptSubscribeAsync(TcpListener listener, long start)
    {
        var socket = await listener.AcceptSocketAsync();
        var peer = new FramePeer(socket);
        var requests = await peer.ReadRequestArgsAsync() ?? throw new InvalidOperationException("closed");
        var (id, op, args) = Assert.Single(requests);
        Assert.Equal("subscribe", op);
        Assert.Equal("t", args["topic"]);
        await peer.AnswerAsync(id, (ref MessagePackWriter w) =>
        {
            w.WriteMapHeader(2);
            w.Write("subscription");
            w.Write(id);
            w.Write("offset");
            w.Write(start);
        });
        return (peer, id, socket);
    }

    private static int PortOf(TcpListener listener) => ((IPEndPoint)listener.LocalEndpoint).Port;

    [Fact]
    public async Task Pushes_arrive_in_order_credit_follows_half_the_window_and_the_brokers_error_ends_the_stream_after_them()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var accepted = AcceptSubscribeAsync(listener, start: 5);
        await using var client = await QueueClient.ConnectAsync("127.0.0.1", PortOf(listener)).WaitAsync(Bound);
        var subscribing = client.SubscribeAsync("t", 0, offset: -1, window: 4);
        var (peer, id, socket) = await accepted.WaitAsync(Bound);
        using var _ = socket;
        await using var subscription = await subscribing.WaitAsync(Bound);
        Assert.Equal(5, subscription.StartOffset);

        await peer.SendAsync(id, "push", (ref MessagePackWriter w) => Messages(ref w, 5, 2));
        await peer.SendAsync(id + 1000, "push", (ref MessagePackWriter w) => Messages(ref w, 900, 1)); // nobody's: ignored
        await peer.SendAsync(id, "push", (ref MessagePackWriter w) => Messages(ref w, 7, 1));
        for (var offset = 5; offset < 8; offset++)
        {
            var message = await subscription.ReadAsync().AsTask().WaitAsync(Bound);
            Assert.Equal((offset, $"m{offset}"), (message.Offset, Encoding.UTF8.GetString(message.Payload)));
        }

        // Two read (half of a window of 4): the broker is told, once, up to offset 7.
        var credit = Assert.Single((await peer.ReadRequestArgsAsync().WaitAsync(Bound))!);
        Assert.Equal(("credit", id, 7L), (credit.Op, (long)credit.Args["subscription"]!, (long)credit.Args["upTo"]!));
        await peer.AnswerAsync([credit.Id]);

        await peer.SendAsync(id, "push", (ref MessagePackWriter w) => Messages(ref w, 8, 1));
        await peer.SendAsync(id, "OffsetOutOfRange", (ref MessagePackWriter w) => w.Write("offset 9 was deleted by retention"));
        Assert.Equal(8, (await subscription.ReadAsync().AsTask().WaitAsync(Bound)).Offset);
        var ended = await Assert.ThrowsAsync<QueueException>(() => subscription.ReadAsync().AsTask().WaitAsync(Bound));
        Assert.Equal("OffsetOutOfRange", ended.Code);
        Assert.Contains("retention", ended.Message, StringComparison.Ordinal);
        Assert.Equal("OffsetOutOfRange", (await Assert.ThrowsAsync<QueueException>(() => subscription.ReadAsync().AsTask().WaitAsync(Bound))).Code);

        // Reading offset 8 moved the mark two past the last credit: the broker is told up to 9. The
        // connection goes on.
        var ping = client.PingAsync();
        var requests = new List<(long Id, string Op, Dictionary<string, object?> Args)>();
        while (!requests.Any(r => r.Op == "ping"))
        {
            requests.AddRange((await peer.ReadRequestArgsAsync().WaitAsync(Bound))!);
        }

        Assert.Equal(["credit", "ping"], requests.Select(r => r.Op));
        Assert.Equal(9L, (long)requests[0].Args["upTo"]!);
        await peer.AnswerAsync(requests.Select(r => r.Id));
        await ping.WaitAsync(Bound);
    }

    [Fact]
    public async Task An_unreadable_push_ends_the_stream_with_BadAnswer_and_a_lost_connection_with_ConnectionLost()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var accepted = AcceptSubscribeAsync(listener, start: 0);
        await using var client = await QueueClient.ConnectAsync("127.0.0.1", PortOf(listener)).WaitAsync(Bound);
        var subscribing = client.SubscribeAsync("t", 0, offset: 0);
        var (peer, id, socket) = await accepted.WaitAsync(Bound);
        await using var subscription = await subscribing.WaitAsync(Bound);
        await peer.SendAsync(id, "push", (ref MessagePackWriter w) => w.Write(42)); // a number, not {"messages": …}
        Assert.Equal("BadAnswer", (await Assert.ThrowsAsync<QueueException>(() => subscription.ReadAsync().AsTask().WaitAsync(Bound))).Code);

        // A second subscription on the same connection, then the broker goes away.
        var second = client.SubscribeAsync("t", 0, offset: 0);
        var request = Assert.Single((await peer.ReadRequestArgsAsync().WaitAsync(Bound))!);
        Assert.Equal("subscribe", request.Op);
        await peer.AnswerAsync(request.Id, (ref MessagePackWriter w) =>
        {
            w.WriteMapHeader(1);
            w.Write("offset");
            w.Write(0L);
        });
        await using var other = await second.WaitAsync(Bound);
        var reading = other.ReadAsync().AsTask();
        socket.Close();
        Assert.Equal("ConnectionLost", (await Assert.ThrowsAsync<QueueException>(() => reading.WaitAsync(Bound))).Code);
    }

    [Fact]
    public async Task A_refused_subscribe_throws_its_code_and_bad_windows_are_refused_before_sending()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var refuse = Task.Run(async () =>
        {
            using var socket = await listener.AcceptSocketAsync();
            var peer = new FramePeer(socket);
            while (await peer.ReadRequestArgsAsync() is { } requests)
            {
                foreach (var (id, _, _) in requests)
                {
                    await peer.SendAsync(id, "NotFound", (ref MessagePackWriter w) => w.Write("no topic 't'"));
                }
            }
        });
        await using (var client = await QueueClient.ConnectAsync("127.0.0.1", PortOf(listener)).WaitAsync(Bound))
        {
            Assert.Equal("NotFound", (await Assert.ThrowsAsync<QueueException>(() => client.SubscribeAsync("t", 0).WaitAsync(Bound))).Code);
            await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => client.SubscribeAsync("t", 0, window: 0));
            await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => client.SubscribeAsync("t", 0, windowBytes: (64 << 20) + 1));
        }

        await refuse.WaitAsync(Bound);
    }
}
