using Infra.Core.Admin;
using Infra.Core.Configuration;
using Infra.Core.Hosting;
using Infra.Core.Networking;
using Infra.ShardRouter.Api;
using Infra.ShardRouter.Failover;
using Infra.ShardRouter.Placement;
using Infra.ShardRouter.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Infra.ShardRouter;

/// <summary>Starts the MessagePack listener; ready once every shard's master has answered a probe.</summary>
internal sealed partial class RouterService(Router router, NativeApi native, ILoggerFactory loggerFactory) : IHostedService, IReadinessCheck, IAsyncDisposable
{
    private readonly ILogger _logger = loggerFactory.CreateLogger<RouterService>();
    private TcpConnectionListener? _listener;

    public string? NotReadyReason
    {
        get
        {
            if (_listener is null)
            {
                return "not listening yet";
            }

            var down = router.Map.Shards.Where(s => !(router.Health.TryGetNode(s.Master, out var h) && h.Up && h.Status is { IsMaster: true })).Select(s => s.Id).ToList();
            return down.Count == 0 ? null : $"no reachable master for shard(s) {string.Join(", ", down)}";
        }
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var listener = new TcpConnectionListener(router.Options.Listen, native,
            new ListenerOptions { MaxConnections = router.Options.MaxConnections }, loggerFactory.CreateLogger<TcpConnectionListener>());
        listener.Start();
        _listener = listener;
        ListeningLog.Listening(_logger, OptionValues.ToUrl("tcp", listener.BoundEndPoint));
        var map = router.Map;
        LogStarted(_logger, map.Shards.Count, map.Version, router.Store.Path);
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_listener is not null)
        {
            await _listener.StopAsync(router.Options.ShutdownTimeout, cancellationToken);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_listener is not null)
        {
            await _listener.DisposeAsync();
        }

        await router.DisposeAsync();
    }

    [LoggerMessage(EventId = 730, Level = LogLevel.Information, Message = "Routing over {Shards} shards (map version {Version}, kept in {Path})")]
    private static partial void LogStarted(ILogger logger, int shards, long version, string path);
}

internal static class RouterServiceCollectionExtensions
{
    public static IServiceCollection AddShardRouter(this IServiceCollection services)
    {
        services.AddServiceOptions<RouterOptions>();
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<RouterOptions>>().Value);
        services.AddOptions<HostOptions>().Configure<IOptions<RouterOptions>>(
            (host, options) => host.ShutdownTimeout = options.Value.ShutdownTimeout + TimeSpan.FromSeconds(10));
        services.AddSingleton(TimeProvider.System);
        services.AddSingleton<RouterMetrics>();
        services.AddSingleton<Router>();
        services.AddSingleton<NativeApi>();
        services.AddSingleton<Resharder>();
        services.AddSingleton<FailoverMonitor>();
        services.AddSingleton<RouterService>();
        services.AddHostedService(sp => sp.GetRequiredService<RouterService>());
        services.AddHostedService(sp => sp.GetRequiredService<FailoverMonitor>());
        services.AddHostedService(sp => sp.GetRequiredService<Resharder>());
        services.AddSingleton<IReadinessCheck>(sp => sp.GetRequiredService<RouterService>());
        services.AddSingleton<IAdminRoutes, HttpApi>();
        services.AddAdminEndpoint(sp =>
        {
            var options = sp.GetRequiredService<RouterOptions>();
            return new AdminEndpointOptions(options.Http, options.AdminToken, options.MaxRequestBytes, InlinePaths: HttpApi.InlinePaths);
        });
        return services;
    }
}
