using Infra.CacheServer.Storage;
using Infra.Core.Admin;
using Infra.Core.Configuration;
using Infra.Core.Timing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Infra.CacheServer;

internal static class CacheServerServiceCollectionExtensions
{
    public static IServiceCollection AddCacheServer(this IServiceCollection services)
    {
        services.AddServiceOptions<CacheOptions>();
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<CacheOptions>>().Value);
        services.AddOptions<HostOptions>().Configure<IOptions<CacheOptions>>(
            (host, options) => host.ShutdownTimeout = options.Value.ShutdownTimeout + TimeSpan.FromSeconds(5));
        services.AddSingleton(sp => new Heartbeat(sp.GetRequiredService<TimeProvider>(), Heartbeat.DefaultInterval));
        services.AddSingleton<CacheMetrics>();
        services.AddSingleton(sp =>
        {
            var options = sp.GetRequiredService<CacheOptions>();
            return new CacheStore(options.Shards, options.MaxMemory, options.MaxMemoryPolicy, sp.GetRequiredService<TimeProvider>());
        });
        services.AddSingleton(sp =>
        {
            var state = new CacheServerState(sp.GetRequiredService<CacheStore>(), sp.GetRequiredService<CacheOptions>(), sp.GetRequiredService<CacheMetrics>());
            state.Metrics.Attach(state);
            return state;
        });
        services.AddSingleton<CacheServerService>();
        services.AddHostedService(sp => sp.GetRequiredService<CacheServerService>());
        services.AddSingleton<IReadinessCheck>(sp => sp.GetRequiredService<CacheServerService>());
        services.AddAdminEndpoint(sp =>
        {
            var options = sp.GetRequiredService<CacheOptions>();
            return new AdminEndpointOptions(options.Admin, options.AdminToken);
        });
        return services;
    }
}
