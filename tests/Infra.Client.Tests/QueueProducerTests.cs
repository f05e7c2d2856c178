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

    /// <summary>Answers metadata as a one-partition topic, and every produce with a number instead of a map.</summary>
    private static async Task AnswerProduceWithGarbageAsync(TcpListener listener)
    {
        using var socket = await listener.AcceptSocketAsync();
        var peer = new FramePeer(socket);
        while (await peer.ReadRequestsAsync() is { } requests)
        {
            foreach (var (id, op) in requests)
            {
                await peer.AnswerAsync(id, op == "metadata"
                    ? static (ref MessagePackWriter w) =>
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
                    : static (ref MessagePackWriter w) => w.Write(42));
            }
        }
    }
}
