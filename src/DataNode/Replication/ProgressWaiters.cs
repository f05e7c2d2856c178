namespace Infra.DataNode.Replication;

/// <summary>
/// Waits for a number that only grows (an LSN applied, an LSN replicated) to reach a target, with a
/// deadline. Waiters are kept ordered by target, so an advance completes exactly the ones it reaches.
/// </summary>
internal sealed class ProgressWaiters(long initial = 0)
{
    private readonly Lock _lock = new();
    private readonly PriorityQueue<TaskCompletionSource<bool>, long> _waiters = new();
    private long _value = initial;
    private int _compactAt = 4096;

    public long Value => Volatile.Read(ref _value);

    /// <summary>Waiters queued, finished ones not yet dropped included (tests).</summary>
    internal int Queued
    {
        get
        {
            lock (_lock)
            {
                return _waiters.Count;
            }
        }
    }

    public void Advance(long value)
    {
        List<TaskCompletionSource<bool>>? done;
        lock (_lock)
        {
            if (value <= _value)
            {
                return;
            }

            _value = value;
            done = TakeReached(value);
        }

        done?.ForEach(w => w.TrySetResult(true));
    }

    /// <summary>Sets the value even when it went down (a rollback or a re-clone).</summary>
    public void Reset(long value)
    {
        List<TaskCompletionSource<bool>>? done;
        lock (_lock)
        {
            _value = value;
            done = TakeReached(value);
        }

        done?.ForEach(w => w.TrySetResult(true));
    }

    // Under _lock: the waiters whose target the value has reached, taken out of the queue.
    private List<TaskCompletionSource<bool>>? TakeReached(long value)
    {
        List<TaskCompletionSource<bool>>? done = null;
        while (_waiters.TryPeek(out var waiter, out var target) && target <= value)
        {
            _waiters.Dequeue();
            (done ??= []).Add(waiter);
        }

        return done;
    }

    /// <summary>True when the value reached <paramref name="target"/> before <paramref name="timeout"/>.</summary>
    public async Task<bool> WaitAsync(long target, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        TaskCompletionSource<bool> waiter;
        lock (_lock)
        {
            if (_value >= target)
            {
                return true;
            }

            waiter = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
            if (_waiters.Count >= _compactAt)
            {
                // Waiters that timed out or were cancelled stay queued until the value passes them; drop them
                // now and then — when the queue has doubled since the last time, so many live waiters do not
                // make every new one rebuild it.
                var live = _waiters.UnorderedItems.Where(i => !i.Element.Task.IsCompleted).ToList();
                _waiters.Clear();
                _waiters.EnqueueRange(live);
                _compactAt = Math.Max(4096, 2 * live.Count);
            }

            _waiters.Enqueue(waiter, target);
        }

        try
        {
            return await waiter.Task.WaitAsync(timeout, cancellationToken);
        }
        catch (TimeoutException)
        {
            waiter.TrySetResult(false);
            return Value >= target;
        }
        catch (OperationCanceledException)
        {
            // The caller left (a client that went away): finished, so the next compaction drops it. Kept
            // unfinished, such waiters piled up without end (a query with a far minLsn, aborted, over and over).
            waiter.TrySetResult(false);
            throw;
        }
    }

    /// <summary>Wakes every waiter with false (shutting down, or the rule that made them wait changed).</summary>
    public void ReleaseAll()
    {
        List<TaskCompletionSource<bool>> all;
        lock (_lock)
        {
            all = [.. _waiters.UnorderedItems.Select(i => i.Element)];
            _waiters.Clear();
        }

        all.ForEach(w => w.TrySetResult(false));
    }
}
