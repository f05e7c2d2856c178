using Infra.Core.Admin;
using Infra.Core.Configuration;
using Infra.Core.Hosting;
using Infra.Core.Networking;
using Infra.LoadBalancer.Balancing;
using Infra.LoadBalancer.Proxy;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Infra.LoadBalancer;

/// <summary>
/// The proxy's listener. On SIGTERM it stops accepting, lets in-flight requests finish (idle
/// keep-alive connections close at once, busy ones after their response) up to the shutdown
/// timeout, then closes what is left.
/// </summary>
internal sealed class LoadBalancerService : IHostedService, IReadinessCheck, IAsyncDisposable
{
    private readonly ProxyContext _proxy;
    private readonly ILogger _logger;
    private readonly ILoggerFactory _loggerFactory;
    private TcpConnectionListener? _listener;

    public LoadBalancerService(ProxyContext proxy, ILoggerFactory loggerFactory)
    {
        _proxy = proxy;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger<LoadBalancerService>();
    }

    public string? NotReadyReason => _listener is null ? "not listening yet"
        : _proxy.Pool.AnyAvailable ? null
        : "no backend available";

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var options = _proxy.Options;
        var listener = new TcpConnectionListener(options.Listen, new ProxyConnectionHandler(_proxy),
            new ListenerOptions { MaxConnections = options.MaxConnections }, _loggerFactory.CreateLogger<TcpConnectionListener>());
        listener.ConnectionRejected += _proxy.Metrics.ConnectionRefused;
        listener.Start();
        _listener = listener;
        ListeningLog.Listening(_logger, OptionValues.ToUrl("http", listener.BoundEndPoint));
        Log.Started(_logger, _proxy.Pool.Backends.Length, BalancingAlgorithms.Name(options.Algorithm));
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_listener is null)
        {
            return;
        }

        Log.ShuttingDown(_logger, _proxy.Options.ShutdownTimeout.TotalSeconds, _listener.ActiveConnections);
        await _listener.StopAsync(_proxy.Options.ShutdownTimeout, cancellationToken);
        _proxy.Pool.CloseAll();
    }

    public async ValueTask DisposeAsync()
    {
        if (_listener is not null)
        {
            await _listener.DisposeAsync();
        }

        if (_proxy.AccessLog is not null)
        {
            await _proxy.AccessLog.DisposeAsync();
        }
    }
}
