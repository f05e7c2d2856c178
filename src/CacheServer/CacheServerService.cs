using Infra.CacheServer.Eviction;
using Infra.Core.Admin;
using Infra.Core.Configuration;
using Infra.Core.Hosting;
using Infra.Core.Networking;
using Infra.Core.Timing;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Infra.CacheServer;

/// <summary>
/// The RESP listener. On SIGTERM it stops accepting and closes idle connections; connections in the
/// middle of a batch finish it first.
/// </summary>
internal sealed class CacheServerService : IHostedService, IReadinessCheck, IAsyncDisposable
{
    private readonly CacheServerState _server;
    private readonly Heartbeat _heartbeat;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private TcpConnectionListener? _listener;

    public CacheServerService(CacheServerState server, Heartbeat heartbeat, ILoggerFactory loggerFactory)
    {
        _server = server;
        _heartbeat = heartbeat;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger<CacheServerService>();
    }

    public string? NotReadyReason => _listener is null ? "not listening yet" : null;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var options = _server.Options;
        var listener = new TcpConnectionListener(options.Listen,
            new CacheConnectionHandler(_server, _heartbeat, _loggerFactory.CreateLogger<CacheSession>()),
            new ListenerOptions { MaxConnections = options.MaxClients, RejectMessage = "-ERR max number of clients reached\r\n"u8.ToArray() }, _loggerFactory.CreateLogger<TcpConnectionListener>());
        listener.ConnectionRejected += () =>
        {
            _server.ConnectionRejected();
            _server.Metrics.ConnectionRejected();
        };
        listener.Start();
        _listener = listener;
        _server.Port = listener.BoundEndPoint.Port;
        ListeningLog.Listening(_logger, OptionValues.ToUrl("redis", listener.BoundEndPoint));
        Log.Started(_logger, _server.Store.ShardCount, _server.Store.MaxMemory, EvictionPolicies.Name(_server.Store.Policy));
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_listener is null)
        {
            return;
        }

        Log.ShuttingDown(_logger, _server.Options.ShutdownTimeout.TotalSeconds, _listener.ActiveConnections);
        await _listener.StopAsync(_server.Options.ShutdownTimeout, cancellationToken);
    }

    public async ValueTask DisposeAsync()
    {
        if (_listener is not null)
        {
            await _listener.DisposeAsync();
        }

        _server.Store.Dispose();
    }
}
