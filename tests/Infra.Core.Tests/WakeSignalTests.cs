using System.Collections.Concurrent;
using Infra.Core.Threading;

namespace Infra.Core.Tests;

public class WakeSignalTests
{
    [Fact]
    public void A_set_before_the_wait_makes_it_return_at_once()
    {
        using var signal = new WakeSignal();
        signal.Set();
        signal.Set(); // a second set while one is pending is absorbed
        Assert.True(signal.Wait(TimeSpan.FromSeconds(30)));
        Assert.False(signal.Wait(TimeSpan.FromMilliseconds(20)));
    }

    [Fact]
    public void A_wait_without_a_set_times_out()
    {
        using var signal = new WakeSignal();
        Assert.False(signal.Wait(TimeSpan.FromMilliseconds(20)));
    }

    [Fact]
    public async Task A_set_wakes_a_consumer_that_is_waiting()
    {
        using var signal = new WakeSignal();
        var woke = Task.Factory.StartNew(() => signal.Wait(Timeout.InfiniteTimeSpan), TaskCreationOptions.LongRunning);
        signal.Set();
        Assert.True(await woke.WaitAsync(TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public async Task No_item_is_left_behind_by_a_lost_wake_up()
    {
        // Producers publish and set; the consumer waits with no timeout, so a lost wake-up would leave
        // items queued and the consumer asleep (the deadline below fails the test instead of hanging it).
        using var signal = new WakeSignal();
        var queue = new ConcurrentQueue<int>();
        const int Producers = 4, PerProducer = 20_000;
        var consumed = 0;
        var consumer = Task.Factory.StartNew(() =>
        {
            while (consumed < Producers * PerProducer)
            {
                while (queue.TryDequeue(out _))
                {
                    consumed++;
                }

                if (consumed < Producers * PerProducer)
                {
                    signal.Wait(Timeout.InfiniteTimeSpan);
                }
            }
        }, TaskCreationOptions.LongRunning);

        var producers = Enumerable.Range(0, Producers).Select(_ => Task.Run(() =>
        {
            for (var i = 0; i < PerProducer; i++)
            {
                queue.Enqueue(i);
                signal.Set();
                if (i % 64 == 0)
                {
                    Thread.Yield(); // let the consumer drain and sleep now and then
                }
            }
        })).ToArray();

        await Task.WhenAll(producers).WaitAsync(TimeSpan.FromSeconds(60));
        await consumer.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(Producers * PerProducer, consumed);
    }
}
