using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Infra.Client.Queue;
using MessagePack;

namespace Infra.Client.Tests;

/// <summary>The stream consumer against a fake broker.</summary>
public sealed class StreamConsumerTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task A_committed_offset_retention_has_deleted_moves_to_the_log_start_instead_of_failing_every_poll()
    {
        // Committed at 5, the log now starts at 100: every poll threw OffsetOutOfRange, for good.
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var fetchedAt = new ConcurrentQueue<long>();
        using var stop = new CancellationTokenSource();
        var broker = FakeBrokerAsync(listener, fetchedAt, stop.Token);
        var options = new StreamConsumerOptions { HeartbeatInterval = TimeSpan.FromMilliseconds(50) };
        await using (var consumer = await StreamConsumer.CreateAsync("127.0.0.1", ((IPEndPoint)listener.LocalEndpoint).Port, "t", "g", options).WaitAsync(Bound))
        {
            Assert.Empty(await consumer.PollAsync(TimeSpan.Zero).WaitAsync(Bound));
            Assert.Empty(await consumer.PollAsync(TimeSpan.Zero).WaitAsync(Bound));
        }

        Assert.Equal([5L, 100L, 100L], fetchedAt.ToArray()); // once out of range, then from the start
        await stop.CancelAsync();
        listener.Stop();
        await broker.WaitAsync(Bound);
    }

    private static async Task FakeBrokerAsync(TcpListener listener, ConcurrentQueue<long> fetchedAt, CancellationToken stop)
    {
        using var socket = await listener.AcceptSocketAsync(stop);
        var peer = new FramePeer(socket);
        while (await peer.ReadRequestArgsAsync() is { } requests)
        {
            foreach (var (id, op, args) in requests)
            {
                switch (op)
                {
                    case "join" or "heartbeat":
                        await peer.AnswerAsync(id, static (ref MessagePackWriter w) =>
                        {
                            w.WriteMapHeader(3);
                            w.Write("memberId");
                            w.Write("m");
                            w.Write("generation");
                            w.Write(1);
                            w.Write("partitions");
                            w.WriteArrayHeader(1);
                            w.Write(0);
                        });
                        break;
                    case "committed":
                        await peer.AnswerAsync(id, static (ref MessagePackWriter w) =>
                        {
                            w.WriteMapHeader(1);
                            w.Write("offset");
                            w.Write(5);
                        });
                        break;
                    case "metadata":
                        await peer.AnswerAsync(id, static (ref MessagePackWriter w) =>
                        {
                            w.WriteMapHeader(3);
                            w.Write("partitions");
                            w.Write(1);
                            w.Write("starts");
                            w.WriteArrayHeader(1);
                            w.Write(100);
                            w.Write("ends");
                            w.WriteArrayHeader(1);
                            w.Write(120);
                        });
                        break;
                    case "fetch":
                        var offset = (long)args["offset"]!;
                        fetchedAt.Enqueue(offset);
                        if (offset < 100)
                        {
                            await peer.SendAsync(id, "OffsetOutOfRange", static (ref MessagePackWriter w) => w.Write("offset 5 is outside the log [100, 120]"));
                        }
                        else
                        {
                            await peer.AnswerAsync(id, static (ref MessagePackWriter w) =>
                            {
                                w.WriteMapHeader(1);
                                w.Write("messages");
                                w.WriteArrayHeader(0);
                            });
                        }

                        break;
                    default:
                        await peer.AnswerAsync([id]);
                        break;
                }
            }
        }
    }
}
