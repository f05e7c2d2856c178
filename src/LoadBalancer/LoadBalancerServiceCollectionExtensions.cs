using Infra.Core.Admin;
using Infra.Core.Configuration;
using Infra.Core.Timing;
using Infra.LoadBalancer.Admin;
using Infra.LoadBalancer.Balancing;
using Infra.LoadBalancer.Health;
using Infra.LoadBalancer.Proxy;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Infra.LoadBalancer;

internal static class LoadBalancerServiceCollectionExtensions
{
    public static IServiceCollection AddLoadBalancer(this IServiceCollection services)
    {
        services.AddServiceOptions<LoadBalancerOptions>();
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<LoadBalancerOptions>>().Value);
        services.AddOptions<HostOptions>().Configure<IOptions<LoadBalancerOptions>>(
            (host, options) => host.ShutdownTimeout = options.Value.ShutdownTimeout + TimeSpan.FromSeconds(5));

        services.AddSingleton(sp => new Heartbeat(sp.GetRequiredService<TimeProvider>(), Heartbeat.DefaultInterval));
        services.AddSingleton<LoadBalancerMetrics>();
        services.AddSingleton(sp => BalancingAlgorithms.Create(sp.GetRequiredService<LoadBalancerOptions>().Algorithm, Random.Shared));
        services.AddSingleton<BackendPool>();
        services.AddSingleton(sp =>
        {
            var options = sp.GetRequiredService<LoadBalancerOptions>();
            var loggerFactory = sp.GetRequiredService<ILoggerFactory>();
            var accessLog = options.AccessLog is { } destination
                ? new AccessLog(destination, loggerFactory.CreateLogger<AccessLog>())
                : null;
            return new ProxyContext(options, sp.GetRequiredService<BackendPool>(), sp.GetRequiredService<LoadBalancerMetrics>(),
                sp.GetRequiredService<Heartbeat>(), loggerFactory.CreateLogger<ClientSession>(), accessLog);
        });

        services.AddSingleton<LoadBalancerService>();
        services.AddHostedService(sp => sp.GetRequiredService<LoadBalancerService>());
        services.AddSingleton<IReadinessCheck>(sp => sp.GetRequiredService<LoadBalancerService>());
        services.AddHostedService<HealthProber>();
        services.AddSingleton<IAdminRoutes, BackendsAdminRoutes>();
        services.AddAdminEndpoint(sp =>
        {
            var options = sp.GetRequiredService<LoadBalancerOptions>();
            return new AdminEndpointOptions(options.Admin, options.AdminToken);
        });
        return services;
    }
}
