using Infra.Core.Health;
using Infra.LoadBalancer.Health;
using Infra.LoadBalancer.Proxy;

namespace Infra.LoadBalancer.Balancing;

internal enum BackendState
{
    Healthy,
    Unhealthy,
    Draining,
}

/// <summary>
/// Run-time state of one backend: its weight, health (active and passive), drain flag, load and
/// counters, and its pool of keep-alive connections. Configuration lives in <see cref="BackendAddress"/>;
/// everything here changes while the proxy runs.
/// </summary>
internal sealed class Backend
{
    private int _weight;
    private int _inFlight;
    private long _requests;
    private readonly long[] _responsesByClass = new long[6];
    private volatile bool _draining;
    private volatile bool _removed;
    private volatile bool _removing;

    public Backend(BackendAddress address, int weight, RiseFallHealth health, PassiveHealth passive, BackendConnectionPool connections)
    {
        Address = address;
        _weight = weight;
        Health = health;
        Passive = passive;
        Connections = connections;
    }

    public BackendAddress Address { get; }

    public string Url => Address.Url;

    public int Weight
    {
        get => Volatile.Read(ref _weight);
        set => Volatile.Write(ref _weight, value);
    }

    public RiseFallHealth Health { get; }

    public PassiveHealth Passive { get; }

    public BackendConnectionPool Connections { get; }

    public bool IsDraining => _draining;

    public bool IsRemoved => _removed;

    public int InFlight => Volatile.Read(ref _inFlight);

    public long Requests => Volatile.Read(ref _requests);

    /// <summary>Smooth weighted round-robin's running weight; touched only under that policy's lock.</summary>
    public long SmoothCurrentWeight { get; set; }

    /// <summary>Whether new requests may go here now.</summary>
    public bool IsAvailable(long now) =>
        !_draining && !_removed && Volatile.Read(ref _weight) > 0 && Health.IsHealthy && !Passive.IsEjected(now);

    public BackendState State(long now) =>
        _draining || _removed ? BackendState.Draining
        : Health.IsHealthy && !Passive.IsEjected(now) ? BackendState.Healthy
        : BackendState.Unhealthy;

    /// <summary>True from the start of a DELETE's drain until the removal.</summary>
    public bool IsRemoving => _removing;

    public void StartDrain() => _draining = true;

    /// <summary>Ends a drain; false (and nothing changes) when the backend is on its way out.</summary>
    public bool StopDrain()
    {
        if (_removing || _removed)
        {
            return false;
        }

        _draining = false;
        return true;
    }

    public void StartRemoving()
    {
        _removing = true;
        _draining = true;
    }

    public void MarkRemoved()
    {
        _removed = true;
        _draining = true;
    }

    public void BeginRequest()
    {
        Interlocked.Increment(ref _inFlight);
        Interlocked.Increment(ref _requests);
    }

    /// <summary>Undoes a <see cref="BeginRequest"/> for a request that never started here.</summary>
    public void CancelRequest()
    {
        Interlocked.Decrement(ref _inFlight);
        Interlocked.Decrement(ref _requests);
    }

    public void EndRequest(int status)
    {
        Interlocked.Decrement(ref _inFlight);
        Interlocked.Increment(ref _responsesByClass[StatusClassIndex(status)]);
    }

    /// <summary>Responses by status class: index 1–5 for 1xx–5xx, 0 for requests that got none.</summary>
    public long ResponsesOfClass(int index) => Volatile.Read(ref _responsesByClass[index]);

    public static int StatusClassIndex(int status) => status is >= 100 and < 600 ? status / 100 : 0;

    public override string ToString() => Url;
}
