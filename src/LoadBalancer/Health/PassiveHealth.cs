namespace Infra.LoadBalancer.Health;

/// <summary>
/// Outlier ejection from live traffic: after <c>threshold</c> connection failures or timeouts in a row
/// a backend is ejected for a back-off period that doubles (up to 16×) with each ejection not
/// followed by a success. Once the period ends the backend is tried again; a single failure then
/// ejects it again at once, as a circuit breaker's half-open state would.
/// </summary>
internal sealed class PassiveHealth
{
    private const int MaxBackoffDoublings = 4;
    private readonly Lock _lock = new();
    private readonly int _threshold;
    private readonly long _baseBackoff;
    private int _consecutiveFailures;
    private int _ejections;
    private long _ejectedUntil = long.MinValue;

    /// <param name="threshold">Failures in a row that eject; 0 turns passive ejection off.</param>
    /// <param name="baseBackoff">First ejection period, in the heartbeat's timestamp units.</param>
    public PassiveHealth(int threshold, long baseBackoff)
    {
        _threshold = threshold;
        _baseBackoff = baseBackoff;
    }

    public bool IsEjected(long now) => now < Volatile.Read(ref _ejectedUntil);

    public int ConsecutiveFailures => Volatile.Read(ref _consecutiveFailures);

    /// <summary>Counts a failure; returns true when it ejected the backend.</summary>
    public bool RecordFailure(long now)
    {
        if (_threshold == 0)
        {
            return false;
        }

        lock (_lock)
        {
            if (now < _ejectedUntil)
            {
                return false; // Failures of requests already under way when it was ejected.
            }

            _consecutiveFailures++;
            if (_consecutiveFailures < _threshold && _ejections == 0)
            {
                return false;
            }

            var backoff = _baseBackoff << Math.Min(_ejections, MaxBackoffDoublings);
            Volatile.Write(ref _ejectedUntil, now + backoff);
            _ejections++;
            _consecutiveFailures = 0;
            return true;
        }
    }

    public void RecordSuccess()
    {
        // Read first: the common case writes nothing, so concurrent successes share the cache line.
        if (Volatile.Read(ref _consecutiveFailures) != 0 || Volatile.Read(ref _ejections) != 0)
        {
            lock (_lock)
            {
                _consecutiveFailures = 0;
                _ejections = 0;
            }
        }
    }
}
