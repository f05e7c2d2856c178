namespace Infra.Core.Networking.Epoll;

/// <summary>
/// Readiness of one direction of a socket under edge-triggered epoll, in one word so every change is
/// a single compare-and-swap: an event counter (bits 2..63) and a state (bits 0..1).
/// <list type="bullet">
/// <item><b>Ready</b>: try the syscall (the socket may have data or room).</item>
/// <item><b>NotReady</b>: a read came back short, so the kernel queue was empty: wait for the next
/// event without a syscall that would only say EAGAIN (what HAProxy does after a short read).</item>
/// <item><b>Waiting</b>: an operation is parked; whoever moves the word out of Waiting (the epoll
/// thread on an event, a cancel, a close) owns it and must complete it.</item>
/// <item><b>Closed</b>: final.</item>
/// </list>
/// Every event bumps the counter, so a transition computed from an older observation fails its
/// compare-and-swap instead of losing the event.
/// </summary>
internal sealed class Readiness
{
    public const long Ready = 0;
    public const long NotReady = 1;
    public const long Waiting = 2;
    public const long Closed = 3;

    private long _word;

    public long Observe() => Volatile.Read(ref _word);

    public static long StateOf(long word) => word & 3;

    /// <summary>After a short read seen at <paramref name="observed"/>: skip the next syscall unless an event came since.</summary>
    public void MarkNotReady(long observed)
    {
        if (StateOf(observed) == Ready)
        {
            Interlocked.CompareExchange(ref _word, (observed & ~3L) | NotReady, observed);
        }
    }

    /// <summary>Parks an operation; false when anything changed since <paramref name="observed"/> (try again).</summary>
    public bool TryWait(long observed) =>
        StateOf(observed) is Ready or NotReady
        && Interlocked.CompareExchange(ref _word, (observed & ~3L) | Waiting, observed) == observed;

    /// <summary>An event: Ready with the counter bumped. True when an operation was parked (the caller now owns it).</summary>
    public bool Signal()
    {
        while (true)
        {
            var old = Volatile.Read(ref _word);
            if (StateOf(old) == Closed)
            {
                return false;
            }

            var next = (((old >> 2) + 1) << 2) | Ready;
            if (Interlocked.CompareExchange(ref _word, next, old) == old)
            {
                return StateOf(old) == Waiting;
            }
        }
    }

    /// <summary>Takes back a parked operation (for a cancel). True when the caller now owns it.</summary>
    public bool TryTakeWaiter()
    {
        while (true)
        {
            var old = Volatile.Read(ref _word);
            if (StateOf(old) != Waiting)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref _word, (old & ~3L) | Ready, old) == old)
            {
                return true;
            }
        }
    }

    /// <summary>Closes for good. True when an operation was parked (the caller now owns it).</summary>
    public bool Close() => StateOf(Interlocked.Exchange(ref _word, Closed)) == Waiting;
}
