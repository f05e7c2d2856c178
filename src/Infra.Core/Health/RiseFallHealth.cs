namespace Infra.Core.Health;

/// <summary>
/// The up/down state of a checked target with HAProxy's rise/fall hysteresis: a healthy target goes
/// down after <see cref="Fall"/> failures in a row, a down one comes back after <see cref="Rise"/>
/// successes in a row. One writer (the prober); any number of readers.
/// </summary>
public sealed class RiseFallHealth
{
    private volatile bool _healthy;
    private int _successes;
    private int _failures;

    public RiseFallHealth(int rise, int fall, bool initiallyHealthy = true)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rise, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(fall, 1);
        Rise = rise;
        Fall = fall;
        _healthy = initiallyHealthy;
    }

    public int Rise { get; }

    public int Fall { get; }

    public bool IsHealthy => _healthy;

    /// <summary>Successes in a row so far (reset by a failure).</summary>
    public int ConsecutiveSuccesses => Volatile.Read(ref _successes);

    /// <summary>Failures in a row so far (reset by a success).</summary>
    public int ConsecutiveFailures => Volatile.Read(ref _failures);

    /// <summary>Feeds one check result; returns true when it changed the state.</summary>
    public bool Report(bool success)
    {
        if (success)
        {
            _failures = 0;
            _successes = Math.Min(_successes + 1, Rise);
            if (!_healthy && _successes >= Rise)
            {
                _healthy = true;
                return true;
            }
        }
        else
        {
            _successes = 0;
            _failures = Math.Min(_failures + 1, Fall);
            if (_healthy && _failures >= Fall)
            {
                _healthy = false;
                return true;
            }
        }

        return false;
    }
}
