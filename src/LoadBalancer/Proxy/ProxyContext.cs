using Infra.Core.Timing;
using Infra.LoadBalancer.Balancing;
using Infra.LoadBalancer.Http;
using Microsoft.Extensions.Logging;

namespace Infra.LoadBalancer.Proxy;

/// <summary>What every client session shares: settings, backends, metrics, clock, logs.</summary>
internal sealed class ProxyContext
{
    public ProxyContext(LoadBalancerOptions options, BackendPool pool, LoadBalancerMetrics metrics, Heartbeat heartbeat, ILogger logger, AccessLog? accessLog)
    {
        Options = options;
        Pool = pool;
        Metrics = metrics;
        Heartbeat = heartbeat;
        Logger = logger;
        AccessLog = accessLog;
        RequestLimits = options.RequestHeadLimits;
        ResponseLimits = options.ResponseHeadLimits;
    }

    public LoadBalancerOptions Options { get; }

    public BackendPool Pool { get; }

    public LoadBalancerMetrics Metrics { get; }

    public Heartbeat Heartbeat { get; }

    public ILogger Logger { get; }

    public AccessLog? AccessLog { get; }

    public HeadLimits RequestLimits { get; }

    public HeadLimits ResponseLimits { get; }

    /// <summary>Trailer bytes accepted after a chunked body.</summary>
    public int MaxTrailerBytes => Options.MaxRequestHeadersSize;
}
