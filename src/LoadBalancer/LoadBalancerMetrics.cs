using System.Diagnostics.Metrics;
using Infra.LoadBalancer.Balancing;
using Infra.LoadBalancer.Http;

namespace Infra.LoadBalancer;

/// <summary>
/// The load balancer's instruments (meter <c>Infra.LoadBalancer</c>). Per-request counts live in
/// plain fields of <see cref="Backend"/> and are read at scrape time, so the hot path pays one
/// histogram record and two interlocked adds, not a tag lookup per counter.
/// </summary>
internal sealed class LoadBalancerMetrics
{
    public const string MeterName = "Infra.LoadBalancer";

    private static readonly string[] StatusClasses = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];
    private static readonly string[] StateNames = ["healthy", "unhealthy", "draining"];

    private readonly Histogram<double> _duration;
    private readonly Counter<long> _rejections;
    private readonly Counter<long> _retries;
    private readonly Counter<long> _healthChecks;
    private readonly Counter<long> _backendErrors;
    private readonly Counter<long> _ejections;
    private readonly Counter<long> _backendConnections;
    private readonly Counter<long> _connectionsAccepted;
    private readonly Counter<long> _connectionsRefused;
    private readonly long[] _withoutBackend = new long[6];
    private BackendPool? _pool;
    private long _inFlight;
    private long _connections;

    public LoadBalancerMetrics(IMeterFactory meterFactory)
    {
        ArgumentNullException.ThrowIfNull(meterFactory);
        var meter = meterFactory.Create(MeterName);
        _duration = meter.CreateHistogram<double>("infra.lb.request.duration", "s",
            "Time from a complete request head to the end of the response");
        _rejections = meter.CreateCounter<long>("infra.lb.rejections", description: "Requests refused or failed by the proxy, by reason and status");
        _retries = meter.CreateCounter<long>("infra.lb.retries", description: "Requests sent again to another backend, by the failure that caused it");
        _healthChecks = meter.CreateCounter<long>("infra.lb.health_checks", description: "Active health checks by backend and result");
        _backendErrors = meter.CreateCounter<long>("infra.lb.backend.errors", description: "Failed exchanges with a backend, by kind");
        _ejections = meter.CreateCounter<long>("infra.lb.backend.ejections", description: "Passive-health ejections by backend");
        _backendConnections = meter.CreateCounter<long>("infra.lb.backend.connections_opened", description: "New TCP connections opened to backends");
        _connectionsAccepted = meter.CreateCounter<long>("infra.lb.connections.accepted", description: "Client connections accepted");
        _connectionsRefused = meter.CreateCounter<long>("infra.lb.connections.refused", description: "Client connections closed at once because of the connection limit");
        meter.CreateObservableUpDownCounter("infra.lb.connections.active", () => Volatile.Read(ref _connections), description: "Open client connections");
        meter.CreateObservableUpDownCounter("infra.lb.requests.in_flight", () => Volatile.Read(ref _inFlight), description: "Requests being proxied now");
        meter.CreateObservableCounter("infra.lb.requests", ObserveRequests, description: "Requests answered, by backend and status class");
        meter.CreateObservableGauge("infra.lb.backend.state", ObserveStates, description: "1 for each backend's current state");
        meter.CreateObservableGauge("infra.lb.backend.in_flight", ObserveInFlight, description: "Requests in flight per backend");
        meter.CreateObservableGauge("infra.lb.backend.weight", ObserveWeights, description: "Configured weight per backend");
    }

    /// <summary>Gives the observable instruments the backends to read.</summary>
    public void Attach(BackendPool pool) => _pool = pool;

    public void RequestStarted() => Interlocked.Increment(ref _inFlight);

    /// <summary>Ends a request. <paramref name="backend"/> is null when none was used (rejections, 503).</summary>
    public void RequestFinished(Backend? backend, int status, double seconds)
    {
        Interlocked.Decrement(ref _inFlight);
        if (backend is null)
        {
            Interlocked.Increment(ref _withoutBackend[Backend.StatusClassIndex(status)]);
        }

        _duration.Record(seconds);
    }

    /// <summary>A request refused while reading its head: counted as a request without a backend.</summary>
    public void HeadRejected(RejectionReason reason, int status)
    {
        Interlocked.Increment(ref _withoutBackend[Backend.StatusClassIndex(status)]);
        Rejected(RejectionReasons.Label(reason), status);
    }

    public void Rejected(string reason, int status) =>
        _rejections.Add(1, new KeyValuePair<string, object?>("reason", reason), new KeyValuePair<string, object?>("status", StatusText(status)));

    public void Retried(string reason) => _retries.Add(1, new KeyValuePair<string, object?>("reason", reason));

    public void HealthChecked(Backend backend, bool success) =>
        _healthChecks.Add(1, new KeyValuePair<string, object?>("backend", backend.Url), new KeyValuePair<string, object?>("result", success ? "success" : "failure"));

    public void BackendError(Backend backend, string error) =>
        _backendErrors.Add(1, new KeyValuePair<string, object?>("backend", backend.Url), new KeyValuePair<string, object?>("error", error));

    public void Ejected(Backend backend) => _ejections.Add(1, new KeyValuePair<string, object?>("backend", backend.Url));

    public void BackendConnectionOpened(Backend backend) => _backendConnections.Add(1, new KeyValuePair<string, object?>("backend", backend.Url));

    public void ConnectionOpened()
    {
        Interlocked.Increment(ref _connections);
        _connectionsAccepted.Add(1);
    }

    public void ConnectionClosed() => Interlocked.Decrement(ref _connections);

    public void ConnectionRefused() => _connectionsRefused.Add(1);

    private static string StatusText(int status) => status switch
    {
        400 => "400",
        405 => "405",
        408 => "408",
        413 => "413",
        414 => "414",
        431 => "431",
        501 => "501",
        502 => "502",
        503 => "503",
        504 => "504",
        505 => "505",
        _ => status.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };

    private IEnumerable<Measurement<long>> ObserveRequests()
    {
        for (var i = 0; i < StatusClasses.Length; i++)
        {
            var count = Volatile.Read(ref _withoutBackend[i]);
            if (count > 0)
            {
                yield return new Measurement<long>(count, new("backend", "none"), new("status_class", StatusClasses[i]));
            }
        }

        foreach (var backend in _pool?.Backends ?? [])
        {
            for (var i = 0; i < StatusClasses.Length; i++)
            {
                var count = backend.ResponsesOfClass(i);
                if (count > 0)
                {
                    yield return new Measurement<long>(count, new("backend", backend.Url), new("status_class", StatusClasses[i]));
                }
            }
        }
    }

    private IEnumerable<Measurement<int>> ObserveStates()
    {
        var now = _pool?.Now ?? 0;
        foreach (var backend in _pool?.Backends ?? [])
        {
            yield return new Measurement<int>(1, new("backend", backend.Url), new("state", StateNames[(int)backend.State(now)]));
        }
    }

    private IEnumerable<Measurement<int>> ObserveInFlight()
    {
        foreach (var backend in _pool?.Backends ?? [])
        {
            yield return new Measurement<int>(backend.InFlight, new KeyValuePair<string, object?>("backend", backend.Url));
        }
    }

    private IEnumerable<Measurement<int>> ObserveWeights()
    {
        foreach (var backend in _pool?.Backends ?? [])
        {
            yield return new Measurement<int>(backend.Weight, new KeyValuePair<string, object?>("backend", backend.Url));
        }
    }
}
