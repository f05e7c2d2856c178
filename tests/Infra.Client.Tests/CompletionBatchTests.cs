using System.Net;
using System.Net.Sockets;
using Infra.Client.Queue;
using Infra.Client.Rpc;

namespace Infra.Client.Tests;

/// <summary>
/// Answers that arrive together complete as one batch on the thread pool, their continuations run one
/// after another — but a continuation that blocks must hold up none of the others, and the thread that
/// starts a batch (a connection's reader, a producer's pump) must never run one.
/// </summary>
public sealed class CompletionBatchTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task Every_task_gets_its_own_result_or_error()
    {
        var sources = Enumerable.Range(0, 10).Select(_ => new TaskCompletionSource<int>()).ToArray();
        var batch = new CompletionBatch<int>();
        for (var i = 0; i < sources.Length; i++)
        {
            if (i % 3 == 0)
            {
                batch.Add(sources[i], new InvalidOperationException($"failed {i}"));
            }
            else
            {
                batch.Add(sources[i], i * 10);
            }
        }

        Assert.Equal(10, batch.Count);
        batch.Start();
        for (var i = 0; i < sources.Length; i++)
        {
            if (i % 3 == 0)
            {
                var error = await Assert.ThrowsAsync<InvalidOperationException>(() => sources[i].Task.WaitAsync(Bound));
                Assert.Equal($"failed {i}", error.Message);
            }
            else
            {
                Assert.Equal(i * 10, await sources[i].Task.WaitAsync(Bound));
            }
        }

        new CompletionBatch<int>().Start(); // an empty batch is no work
    }

    [Fact]
    public async Task A_continuation_that_blocks_holds_up_none_of_the_others()
    {
        // The first task's continuation waits for the last one's: run strictly one after another on one
        // thread, the last would never run and the first would time out.
        var sources = Enumerable.Range(0, 5).Select(_ => new TaskCompletionSource<int>()).ToArray();
        using var lastRan = new ManualResetEventSlim();
        var firstSawLast = sources[0].Task.ContinueWith(_ => lastRan.Wait(Bound), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        _ = sources[^1].Task.ContinueWith(_ => lastRan.Set(), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);

        var batch = new CompletionBatch<int>();
        foreach (var source in sources)
        {
            batch.Add(source, 1);
        }

        batch.Start();
        Assert.True(await firstSawLast.WaitAsync(Bound), "the last continuation never ran while the first one blocked");
        await Task.WhenAll(sources.Select(s => s.Task)).WaitAsync(Bound);
    }

    [Fact]
    public async Task The_thread_that_starts_a_batch_runs_none_of_its_continuations()
    {
        var sources = Enumerable.Range(0, 8).Select(_ => new TaskCompletionSource<int>()).ToArray();
        var ranOn = new int[sources.Length];
        var continuations = sources.Select((s, i) => s.Task.ContinueWith(_ => ranOn[i] = Environment.CurrentManagedThreadId, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default)).ToArray();
        var starter = 0;
        var thread = new Thread(() =>
        {
            starter = Environment.CurrentManagedThreadId;
            var batch = new CompletionBatch<int>();
            foreach (var source in sources)
            {
                batch.Add(source, 1);
            }

            batch.Start();
        });
        thread.Start();
        thread.Join();

        await Task.WhenAll(continuations).WaitAsync(Bound);
        Assert.DoesNotContain(starter, ranOn);
    }

    [Fact]
    public async Task Answers_read_together_do_not_wait_on_a_caller_that_blocks()
    {
        // The peer answers two requests in one send, so the client reads both answers at once and
        // completes them as one batch; the first caller blocks until the second has its answer.
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var peer = AnswerInPairsAsync(listener);
        await using var client = await QueueClient.ConnectAsync("127.0.0.1", ((IPEndPoint)listener.LocalEndpoint).Port);

        var first = client.PingAsync();
        var second = client.PingAsync();
        var firstSawSecond = first.ContinueWith(_ => ((IAsyncResult)second).AsyncWaitHandle.WaitOne(Bound), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);

        Assert.True(await firstSawSecond.WaitAsync(Bound), "the second answer waited for the first caller");
        await second.WaitAsync(Bound);
        Assert.True(client.IsConnected);
        listener.Stop();
        await client.DisposeAsync();
        await peer.WaitAsync(Bound);
    }

    [Fact]
    public async Task A_lost_connection_fails_every_request_in_flight_off_the_thread_that_saw_it()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var accepted = listener.AcceptSocketAsync();
        var client = await QueueClient.ConnectAsync("127.0.0.1", ((IPEndPoint)listener.LocalEndpoint).Port);
        using var peer = await accepted.WaitAsync(Bound);
        var requests = Enumerable.Range(0, 4).Select(_ => client.PingAsync()).ToArray();

        // Disposing fails them: their continuations must not run on the disposing thread (they could
        // block it, or wait for the dispose itself).
        var ranOn = requests.Select(r => r.ContinueWith(_ => Environment.CurrentManagedThreadId, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default)).ToArray();
        var disposing = new Thread(() => client.DisposeAsync().AsTask().GetAwaiter().GetResult());
        disposing.Start();
        disposing.Join();

        foreach (var request in requests)
        {
            var error = await Assert.ThrowsAsync<QueueException>(() => request.WaitAsync(Bound));
            Assert.Equal("ConnectionLost", error.Code);
        }

        var threads = await Task.WhenAll(ranOn).WaitAsync(Bound);
        Assert.DoesNotContain(disposing.ManagedThreadId, threads);
    }

    /// <summary>Reads requests until it has two, then answers both (empty maps) in one send.</summary>
    private static async Task AnswerInPairsAsync(TcpListener listener)
    {
        using var socket = await listener.AcceptSocketAsync();
        var peer = new FramePeer(socket);
        var waiting = new List<long>();
        while (await peer.ReadIdsAsync() is { } ids)
        {
            waiting.AddRange(ids);
            if (waiting.Count >= 2)
            {
                await peer.AnswerAsync(waiting);
                waiting.Clear();
            }
        }
    }
}
