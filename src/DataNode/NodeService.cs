using Infra.Core.Admin;
using Infra.Core.Configuration;
using Infra.Core.Hosting;
using Infra.Core.Networking;
using Infra.DataNode.Api;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Infra.DataNode;

/// <summary>
/// Starts the replication listener; on SIGTERM stops it, stops following, lets the writer finish
/// what it holds and closes the database (SQLite checkpoints the WAL on the last close).
/// </summary>
internal sealed partial class NodeService(Node node, ILoggerFactory loggerFactory) : IHostedService, IReadinessCheck, IAsyncDisposable
{
    private readonly ILogger _logger = loggerFactory.CreateLogger<NodeService>();
    private TcpConnectionListener? _listener;

    public string? NotReadyReason => _listener is null ? "not listening yet" : node.NotReadyReason;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var listener = new TcpConnectionListener(node.Options.Listen, node.Hub,
            new ListenerOptions { MaxConnections = node.Options.MaxConnections }, loggerFactory.CreateLogger<TcpConnectionListener>());
        listener.Start();
        _listener = listener;
        ListeningLog.Listening(_logger, OptionValues.ToUrl("tcp", listener.BoundEndPoint));
        LogStarted(_logger, Path.GetFullPath(node.Options.DataDir), node.Role.ToString().ToLowerInvariant(), node.Db.Epoch, node.Db.Lsn,
            node.Options.Sync == SyncMode.SemiSync ? $"semi-sync ({node.Options.SyncReplicas} replica(s), {node.Options.SyncTimeout.TotalMilliseconds:0} ms)" : "async");
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_listener is not null)
        {
            node.Hub.DisconnectAll();
            await _listener.StopAsync(node.Options.ShutdownTimeout, cancellationToken);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_listener is not null)
        {
            await _listener.DisposeAsync();
        }

        await node.DisposeAsync();
    }

    [LoggerMessage(EventId = 610, Level = LogLevel.Information, Message = "Data in {DataDir}: {Role}, epoch {Epoch}, LSN {Lsn}; sync {Sync}")]
    private static partial void LogStarted(ILogger logger, string dataDir, string role, long epoch, long lsn, string sync);
}

internal static class NodeServiceCollectionExtensions
{
    public static IServiceCollection AddDataNode(this IServiceCollection services)
    {
        services.AddServiceOptions<NodeOptions>();
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<NodeOptions>>().Value);
        services.AddOptions<HostOptions>().Configure<IOptions<NodeOptions>>(
            (host, options) => host.ShutdownTimeout = options.Value.ShutdownTimeout + TimeSpan.FromSeconds(10));
        services.AddSingleton<Node>();
        services.AddSingleton<NodeService>();
        services.AddHostedService(sp => sp.GetRequiredService<NodeService>());
        services.AddSingleton<IReadinessCheck>(sp => sp.GetRequiredService<NodeService>());
        services.AddSingleton<IAdminRoutes, HttpApi>();
        services.AddAdminEndpoint(sp =>
        {
            var options = sp.GetRequiredService<NodeOptions>();
            // Reads and writes run on the thread that read them when cheap (HttpApi); the rest on the pool.
            return new AdminEndpointOptions(options.Http, options.AdminToken, options.MaxRequestBytes, InlinePaths: HttpApi.InlinePaths);
        });
        return services;
    }
}
