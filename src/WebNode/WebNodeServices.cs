using Infra.Core.Admin;
using Infra.Core.Configuration;
using Infra.WebNode.Accounts;
using Infra.WebNode.Api;
using Infra.WebNode.Backends;
using Infra.WebNode.Clicks;
using Infra.WebNode.Links;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Infra.WebNode;

internal static class WebNodeServices
{
    /// <summary>Requests to the site are small JSON bodies.</summary>
    public const long MaxRequestBodyBytes = 64 * 1024;

    public static IServiceCollection AddWebNode(this IServiceCollection services)
    {
        services.AddServiceOptions<WebOptions>();
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<WebOptions>>().Value);
        services.AddOptions<HostOptions>().Configure<IOptions<WebOptions>>(
            (host, options) => host.ShutdownTimeout = options.Value.ShutdownTimeout + TimeSpan.FromSeconds(5));
        services.AddSingleton<WebMetrics>();
        services.AddSingleton(sp => new LinkCodes(sp.GetRequiredService<WebOptions>().NodeId, sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton<Database>();
        services.AddSingleton(sp =>
        {
            // Connecting does not wait for the servers: one that is down is retried in the background.
            var options = sp.GetRequiredService<WebOptions>();
            return Cache.ConnectAsync(options, sp.GetRequiredService<WebMetrics>(), sp.GetRequiredService<ILoggerFactory>()).GetAwaiter().GetResult();
        });
        services.AddSingleton<Accounts.Accounts>();
        services.AddSingleton<Sessions>();
        services.AddSingleton<LinkStore>();
        services.AddSingleton<StaticAssets>();
        services.AddSingleton<ClickPublisher>();
        services.AddHostedService(sp => sp.GetRequiredService<ClickPublisher>());
        services.AddSingleton<ClickWorker>();
        services.AddSingleton(sp => new Dependencies(
            sp.GetRequiredService<WebOptions>(),
            sp.GetRequiredService<Database>(),
            sp.GetRequiredService<WebOptions>().Role == WebRole.Web ? sp.GetRequiredService<Cache>() : null,
            sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<ILogger<Dependencies>>()));
        services.AddHostedService(sp => sp.GetRequiredService<Dependencies>());
        services.AddHostedService(sp => new RoleGate(sp.GetRequiredService<WebOptions>().Role == WebRole.Worker ? sp.GetRequiredService<ClickWorker>() : null));
        services.AddSingleton<IReadinessCheck>(sp => sp.GetRequiredService<Dependencies>());
        services.AddSingleton<IAdminRoutes>(sp => sp.GetRequiredService<WebOptions>().Role == WebRole.Web ? ActivatorUtilities.CreateInstance<WebRoutes>(sp) : new NoRoutes());
        services.AddAdminEndpoint(sp => new AdminEndpointOptions(sp.GetRequiredService<WebOptions>().Listen, Token: null, MaxRequestBodyBytes, IsAdmin: false));
        return services;
    }

    /// <summary>The worker loop runs only with --role worker.</summary>
    private sealed class RoleGate(IHostedService? inner) : IHostedService
    {
        public Task StartAsync(CancellationToken cancellationToken) => inner?.StartAsync(cancellationToken) ?? Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => inner?.StopAsync(cancellationToken) ?? Task.CompletedTask;
    }

    private sealed class NoRoutes : IAdminRoutes
    {
        public void Map(IEndpointRouteBuilder routes)
        {
        }
    }
}
