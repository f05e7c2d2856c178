using Infra.Core.Health;
using Infra.Core.Timing;
using Infra.LoadBalancer.Health;
using Infra.LoadBalancer.Proxy;

namespace Infra.LoadBalancer.Balancing;

/// <summary>
/// The set of backends and the policy that picks among them. The set is an immutable array swapped
/// under a lock on change, so picking reads it without locking while the admin API adds, reweighs,
/// drains and removes backends.
/// </summary>
internal sealed class BackendPool
{
    private readonly Lock _lock = new();
    private readonly ILoadBalancingPolicy _policy;
    private readonly LoadBalancerOptions _options;
    private readonly Heartbeat _heartbeat;
    private readonly LoadBalancerMetrics _metrics;
    private volatile Backend[] _backends = [];

    public BackendPool(LoadBalancerOptions options, ILoadBalancingPolicy policy, Heartbeat heartbeat, LoadBalancerMetrics metrics)
    {
        _options = options;
        _policy = policy;
        _heartbeat = heartbeat;
        _metrics = metrics;
        foreach (var backend in options.Backends)
        {
            TryAdd(backend.Address, backend.Weight, out _);
        }

        metrics.Attach(this);
    }

    /// <summary>Raised after a backend joins the set (the health prober starts checking it).</summary>
    public event Action<Backend>? Added;

    /// <summary>Raised after a backend leaves the set.</summary>
    public event Action<Backend>? Removed;

    public Backend[] Backends => _backends;

    public long Now => _heartbeat.CoarseNow;

    public TimeProvider TimeProvider => _heartbeat.TimeProvider;

    /// <summary>Whether any backend could take a request now.</summary>
    public bool AnyAvailable
    {
        get
        {
            var now = _heartbeat.CoarseNow;
            foreach (var backend in _backends)
            {
                if (backend.IsAvailable(now))
                {
                    return true;
                }
            }

            return false;
        }
    }

    /// <summary>
    /// The backend for the next attempt. A retry moves away from <paramref name="exclude"/>; if no
    /// other backend is available it goes back to it (on a new connection) rather than fail.
    /// </summary>
    public Backend? Select(Backend? exclude)
    {
        var now = _heartbeat.CoarseNow;
        var backends = _backends;
        var chosen = _policy.Pick(backends, exclude, now);
        if (chosen is null && exclude is not null && exclude.IsAvailable(now))
        {
            chosen = exclude;
        }

        return chosen;
    }

    public Backend? Find(string url)
    {
        if (!BackendAddress.TryParse(url, out var address, out _))
        {
            return null;
        }

        foreach (var backend in _backends)
        {
            if (string.Equals(backend.Url, address.Url, StringComparison.OrdinalIgnoreCase))
            {
                return backend;
            }
        }

        return null;
    }

    /// <summary>Adds a backend; false when one with the same address is already there.</summary>
    public bool TryAdd(BackendAddress address, int weight, out Backend backend)
    {
        lock (_lock)
        {
            foreach (var existing in _backends)
            {
                if (string.Equals(existing.Url, address.Url, StringComparison.OrdinalIgnoreCase))
                {
                    backend = existing;
                    return false;
                }
            }

            var connections = new BackendConnectionPool(address.EndPoint, _heartbeat, _options.ConnectTimeout,
                _options.BackendIdleTimeout, _options.MaxIdleBackendConnections);
            backend = new Backend(
                address,
                weight,
                new RiseFallHealth(_options.HealthRise, _options.HealthFall, initiallyHealthy: true),
                new PassiveHealth(_options.EjectAfter, _heartbeat.ToTimestampDelta(_options.EjectFor)),
                connections);
            var added = backend;
            connections.ConnectionOpened += () => _metrics.BackendConnectionOpened(added);
            _backends = [.. _backends, backend];
        }

        Added?.Invoke(backend);
        return true;
    }

    /// <summary>
    /// Stops new requests to <paramref name="backend"/>, waits for its in-flight requests to finish
    /// (at most <paramref name="timeout"/>), then removes it. Returns whether it drained fully.
    /// </summary>
    /// <remarks>Runs to the end even if the caller goes away, so a backend is never left half-removed.</remarks>
    public async Task<bool> DrainAndRemoveAsync(Backend backend, TimeSpan timeout)
    {
        backend.StartRemoving();
        var drained = await WaitIdleAsync(backend, timeout);
        Remove(backend);
        return drained;
    }

    private async Task<bool> WaitIdleAsync(Backend backend, TimeSpan timeout)
    {
        var deadline = _heartbeat.DeadlineAfter(timeout);
        while (backend.InFlight > 0)
        {
            if (_heartbeat.Now >= deadline)
            {
                return false;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(20), _heartbeat.TimeProvider);
        }

        return true;
    }

    private void Remove(Backend backend)
    {
        lock (_lock)
        {
            if (!_backends.Contains(backend))
            {
                return;
            }

            backend.MarkRemoved();
            _backends = [.. _backends.Where(b => b != backend)];
        }

        backend.Connections.CloseAll();
        Removed?.Invoke(backend);
    }

    /// <summary>Closes every backend's idle connections (shutdown).</summary>
    public void CloseAll()
    {
        foreach (var backend in _backends)
        {
            backend.Connections.CloseAll();
        }
    }
}
