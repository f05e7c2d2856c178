using System.Collections.Concurrent;

namespace Infra.Core.Timing;

/// <summary>Something the heartbeat visits on every tick, e.g. to enforce a deadline.</summary>
public interface IHeartbeatTarget
{
    /// <summary>Called on the heartbeat's thread; must be quick and must not throw.</summary>
    void OnHeartbeat(long nowTimestamp);
}

/// <summary>
/// One timer for all the deadlines of a service, in the manner of Kestrel's heartbeat: connections
/// store a deadline in a field (cheap to move on every request) and the heartbeat checks them all a
/// few times a second, instead of one timer per read.
/// </summary>
public sealed class Heartbeat : IDisposable
{
    /// <summary>Deadlines fire within this of their time; small next to any timeout worth setting.</summary>
    public static readonly TimeSpan DefaultInterval = TimeSpan.FromMilliseconds(250);

    private readonly ConcurrentDictionary<IHeartbeatTarget, byte> _targets = new(ReferenceEqualityComparer.Instance);
    private readonly TimeProvider _timeProvider;
    private readonly ITimer _timer;
    private readonly long _timestampsPerTick;
    private long _coarseNow;
    private int _ticking;

    public Heartbeat(TimeProvider timeProvider, TimeSpan interval)
    {
        _timeProvider = timeProvider;
        _coarseNow = timeProvider.GetTimestamp();
        _timestampsPerTick = timeProvider.TimestampFrequency % TimeSpan.TicksPerSecond == 0
            ? timeProvider.TimestampFrequency / TimeSpan.TicksPerSecond
            : 0;
        _timer = timeProvider.CreateTimer(static state => ((Heartbeat)state!).Tick(), this, interval, interval);
    }

    public TimeProvider TimeProvider => _timeProvider;

    public void Register(IHeartbeatTarget target) => _targets.TryAdd(target, 0);

    public void Unregister(IHeartbeatTarget target) => _targets.TryRemove(target, out _);

    public int Count => _targets.Count;

    /// <summary>Converts a duration to this clock's timestamp units.</summary>
    public long ToTimestampDelta(TimeSpan duration)
    {
        if (duration.Ticks < 0 || duration.Ticks >= TimeSpan.TicksPerDay * 365)
        {
            return long.MaxValue / 2; // Infinite, or as good as.
        }

        return _timestampsPerTick > 0
            ? duration.Ticks * _timestampsPerTick
            : (long)(duration.TotalSeconds * _timeProvider.TimestampFrequency);
    }

    /// <summary>
    /// The deadline <paramref name="duration"/> from now on the coarse clock: exact to within one
    /// heartbeat interval, and free (no clock read) on the request path.
    /// </summary>
    public long DeadlineAfter(TimeSpan duration) => CoarseNow + ToTimestampDelta(duration);

    /// <summary>The exact current timestamp (one clock read).</summary>
    public long Now => _timeProvider.GetTimestamp();

    /// <summary>The timestamp of the last tick: what deadlines are set from and checked against.</summary>
    public long CoarseNow => Volatile.Read(ref _coarseNow);

    internal void Tick()
    {
        // A slow tick (thousands of connections on a loaded box) must not overlap the next one.
        if (Interlocked.Exchange(ref _ticking, 1) != 0)
        {
            return;
        }

        try
        {
            var now = _timeProvider.GetTimestamp();
            Volatile.Write(ref _coarseNow, now);
            foreach (var target in _targets.Keys)
            {
                target.OnHeartbeat(now);
            }
        }
        finally
        {
            Volatile.Write(ref _ticking, 0);
        }
    }

    public void Dispose() => _timer.Dispose();
}
