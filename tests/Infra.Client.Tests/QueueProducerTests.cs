using System.Net;
using System.Net.Sockets;
using Infra.Client.Queue;
using MessagePack;

namespace Infra.Client.Tests;

/// <summary>The batching producer against a fake broker: whatever an answer holds, no sender waits forever.</summary>
public sealed class QueueProducerTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task An_unreadable_produce_answer_fails_its_batch_and_the_producer_goes_on()
    {
        // Found reading the pump: a produce answer that was not a map threw a MessagePack exception no
        // catch expected, the pump stopped with its lane marked as sending, and every message sent to
        // that producer afterwards waited forever.
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var peer = AnswerProduceWithGarbageAsync(listener);
        await using var producer = await QueueProducer.CreateAsync("127.0.0.1", ((IPEndPoint)listener.LocalEndpoint).Port, "t").WaitAsync(Bound);
        for (var i = 0; i < 3; i++)
        {
            var error = await Assert.ThrowsAsync<QueueException>(() => producer.SendAsync(new byte[] { 1, 2, 3 }).WaitAsync(Bound));
            Assert.Equal("BadAnswer", error.Code);
            Assert.Contains("produce", error.Message, StringComparison.Ordinal);
        }

        listener.Stop();
        await producer.DisposeAsync();
        await peer.WaitAsync(Bound);
    }

    [Fact]
    public async Task A_broker_that_stops_accepting_connections_fails_the_send_within_its_retry_window()
    {
        // The reconnect had no timeout: against a host that drops SYNs it hung for the kernel's connect retries
        // (about two minutes), holding every lane behind it, whatever RetryFor said.
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start(backlog: 1);
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var broker = AnswerMetadataThenCloseAsync(listener);
        await using var producer = await QueueProducer.CreateAsync("127.0.0.1", port, "t",
            new QueueProducerOptions { RetryFor = TimeSpan.FromSeconds(1), RequestTimeout = TimeSpan.FromMilliseconds(500) }).WaitAsync(Bound);
        await broker.WaitAsync(Bound); // the producer's connection is closed; nobody accepts any more

        // Fill the accept queue: further SYNs are dropped, so a connect neither succeeds nor fails.
        var fillers = new List<TcpClient>();
        for (var i = 0; i < 4; i++)
        {
            var filler = new TcpClient();
            fillers.Add(filler);
            _ = filler.ConnectAsync(IPAddress.Loopback, port);
        }

        try
        {
            var error = await Assert.ThrowsAnyAsync<Exception>(() => producer.SendAsync(new byte[] { 1 }).WaitAsync(Bound));
            Assert.IsNotType<TimeoutException>(error); // the test's own bound: the send was still hanging
        }
        finally
        {
            foreach (var filler in fillers)
            {
                filler.Dispose();
            }
        }
    }

    private static async Task AnswerMetadataThenCloseAsync(TcpListener listener)
    {
        using var socket = await listener.AcceptSocketAsync();
        var peer = new FramePeer(socket);
        var requests = await peer.ReadRequestsAsync();
        await peer.AnswerAsync(requests![0].Id, OneTopicPartition);
        socket.Shutdown(SocketShutdown.Both);
    }

    [Fact]
    public async Task Options_that_could_never_send_are_refused()
    {
        // MaxBatchMessages = 0: the pump took nothing, and every send waited forever.
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => QueueProducer.CreateAsync("127.0.0.1", 1, "t", new QueueProducerOptions { MaxBatchMessages = 0 }));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => QueueProducer.CreateAsync("127.0.0.1", 1, "t", new QueueProducerOptions { MaxBatchBytes = 0 }));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => QueueProducer.CreateAsync("127.0.0.1", 1, "t", new QueueProducerOptions { RequestTimeout = TimeSpan.Zero }));
    }

    /// <summary>A metadata answer: a topic of one partition, empty.</summary>
    private static void OneTopicPartition(ref MessagePackWriter w)
    {
        w.WriteMapHeader(3);
        w.Write("partitions");
        w.Write(1);
        w.Write("starts");
        w.WriteArrayHeader(1);
        w.Write(0);
        w.Write("ends");
        w.WriteArrayHeader(1);
        w.Write(0);
    }

    /// <summary>Answers metadata as a one-partition topic, and every produce with a number instead of a map.</summary>
    private static async Task AnswerProduceWithGarbageAsync(TcpListener listener)
    {
        using var socket = await listener.AcceptSocketAsync();
        var peer = new FramePeer(socket);
        while (await peer.ReadRequestsAsync() is { } requests)
        {
            foreach (var (id, op) in requests)
            {
                await peer.AnswerAsync(id, op == "metadata" ? OneTopicPartition : static (ref MessagePackWriter w) => w.Write(42));
            }
        }
    }
}
