namespace Infra.Core.Threading;

/// <summary>
/// Wakes one dedicated consumer thread (a writer, a flusher) when work has arrived, without spinning.
/// SemaphoreSlim and BlockingCollection spin (sched_yield) before they block; a consumer that waits
/// after every batch then spends its wait competing for the core with the threads that produce its
/// next batch (a data node's writer, every process pinned to one core: a quarter of its samples).
/// Spinning is not always a loss: where the next batch follows within microseconds (the queue
/// broker's flusher under 64 producers) it saves a sleep and a wake-up, and spinning measured faster.
/// <para>
/// The protocol: producers publish work (e.g. into a ConcurrentQueue), then call <see cref="Set"/>; the
/// consumer calls <see cref="Wait"/> and, whatever it returns, looks for work before it waits again.
/// A Set while the consumer is awake costs one interlocked exchange; a Set between the consumer's last
/// look and its next wait makes that wait return at once, so no work is left waiting for a wake-up.
/// </para>
/// </summary>
public sealed class WakeSignal : IDisposable
{
    // AutoResetEvent waits on a condition variable (no spinning); it keeps at most one pending set.
    private readonly AutoResetEvent _event = new(initialState: false);
    private int _set;

    /// <summary>Wakes the consumer, or makes its next <see cref="Wait"/> return at once.</summary>
    public void Set()
    {
        if (Interlocked.Exchange(ref _set, 1) == 0)
        {
            _event.Set();
        }
    }

    /// <summary>
    /// Blocks until <see cref="Set"/> or the timeout (<see cref="Timeout.InfiniteTimeSpan"/> for none);
    /// true when it was set. The caller looks for work next: a Set from now on wakes it again.
    /// </summary>
    public bool Wait(TimeSpan timeout)
    {
        var set = _event.WaitOne(timeout);
        Interlocked.Exchange(ref _set, 0);
        return set;
    }

    public void Dispose() => _event.Dispose();
}
