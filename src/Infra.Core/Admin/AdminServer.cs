using System.Net;
using System.Security.Cryptography;
using System.Text;
using Infra.Core.Configuration;
using Infra.Core.Metrics;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Infra.Core.Admin;

/// <summary>
/// Where the admin endpoint listens, what guards it, and the largest request body it reads (1 MiB unless a
/// service needs more). <paramref name="IsAdmin"/> false when the endpoint is the service's own front
/// door (the web node): it is then announced as <c>Listening on URL</c> without "(admin)".
/// <paramref name="InlinePaths"/>, when set: Kestrel runs a request on the thread that read it instead
/// of handing it to the thread pool (<c>UnsafePreferInlineScheduling</c>; with
/// <c>DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=1</c> that is a socket engine thread) when its body is
/// at most <see cref="Framing.RequestConnection.InlineArgsLimit"/> bytes; a request for any other path, or
/// with a larger body or one of unknown length, is received whole (<see cref="AdminServer.ReceiveBodyAsync"/>),
/// then handed to the pool. The handlers of these paths must leave the thread (<c>await Task.Yield()</c>) before anything
/// that can take long, and remember that any await of the request body that waits resumes on the
/// socket thread: a hop costs more than a cheap request.
/// </summary>
public sealed record AdminEndpointOptions(IPEndPoint EndPoint, string? Token, long MaxRequestBodyBytes = 1 << 20, bool IsAdmin = true,
    IReadOnlySet<string>? InlinePaths = null);

/// <summary>Routes a service adds to its admin endpoint.</summary>
public interface IAdminRoutes
{
    void Map(IEndpointRouteBuilder routes);
}

/// <summary>A reason the service is not ready, or null when it is. <c>/healthz</c> is 200 only when all are null.</summary>
public interface IReadinessCheck
{
    string? NotReadyReason { get; }
}

/// <summary>
/// The HTTP admin endpoint every service has: <c>GET /healthz</c>, <c>GET /metrics</c> and the service's
/// own routes, served by Kestrel on its own port. When a token is set, every request that is not a
/// GET or HEAD must carry <c>Authorization: Bearer &lt;token&gt;</c> or gets 401.
/// </summary>
public sealed partial class AdminServer : IHostedService, IAsyncDisposable
{
    private readonly AdminEndpointOptions _options;
    private readonly PrometheusMetrics _metrics;
    private readonly IEnumerable<IAdminRoutes> _routes;
    private readonly IEnumerable<IReadinessCheck> _readiness;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private WebApplication? _app;

    public AdminServer(
        AdminEndpointOptions options,
        PrometheusMetrics metrics,
        IEnumerable<IAdminRoutes> routes,
        IEnumerable<IReadinessCheck> readiness,
        ILoggerFactory loggerFactory)
    {
        _options = options;
        _metrics = metrics;
        _routes = routes;
        _readiness = readiness;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger<AdminServer>();
    }

    /// <summary>The URL the endpoint is bound to, with the real port.</summary>
    public Uri? BoundUrl { get; private set; }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
        builder.Services.AddSingleton(_loggerFactory);
        builder.Services.AddRoutingCore();
        builder.WebHost.UseKestrelCore();
        if (_options.InlinePaths is not null)
        {
            builder.WebHost.UseSockets(sockets =>
            {
                sockets.UnsafePreferInlineScheduling = true;
                // Read into a buffer straight away instead of a zero-byte read first: one recv less
                // per request (+4% replica point reads at 16 clients); each idle keep-alive connection
                // holds a pooled 4 KB block meanwhile.
                sockets.WaitForDataBeforeAllocatingBuffer = false;
            });
        }
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Limits.MaxRequestBodySize = _options.MaxRequestBodyBytes;
            kestrel.Listen(_options.EndPoint);
        });

        var app = builder.Build();
        if (_options.InlinePaths is { } inlinePaths)
        {
            app.Use(async (context, next) =>
            {
                // Another path, or a body over InlineArgsLimit or of unknown length (chunked): received
                // whole, then the request moves to the thread pool. A small body stays on the socket thread.
                if (!inlinePaths.Contains(context.Request.Path.Value ?? "")
                    || context.Request.ContentLength is not (>= 0 and <= Framing.RequestConnection.InlineArgsLimit))
                {
                    await ReceiveBodyAsync(context);
                    await Task.Yield();
                }

                await next(context);
            });
        }

        app.UseRouting();
        if (_options.Token is { Length: > 0 } token)
        {
            var expected = Encoding.UTF8.GetBytes("Bearer " + token);
            app.Use(async (context, next) =>
            {
                if (!HttpMethods.IsGet(context.Request.Method) && !HttpMethods.IsHead(context.Request.Method)
                    && !Authorized(context.Request.Headers.Authorization.ToString(), expected))
                {
                    context.Response.StatusCode = StatusCodes.Status401Unauthorized;
                    context.Response.Headers.WWWAuthenticate = "Bearer";
                    await context.Response.WriteAsync("401 Unauthorized: this endpoint needs Authorization: Bearer <admin token>\n");
                    return;
                }

                await next(context);
            });
        }

        app.MapGet("/healthz", WriteHealthAsync);
        app.MapGet("/metrics", context =>
        {
            context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
            return context.Response.WriteAsync(_metrics.Scrape());
        });
        foreach (var routes in _routes)
        {
            routes.Map(app);
        }

        await app.StartAsync(cancellationToken);
        _app = app;
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.FirstOrDefault();
        var port = address is null ? _options.EndPoint.Port : new Uri(address).Port;
        var url = OptionValues.ToUrl("http", new IPEndPoint(_options.EndPoint.Address, port));
        BoundUrl = new Uri(url);
        if (_options.IsAdmin)
        {
            LogListening(_logger, url);
        }
        else
        {
            Hosting.ListeningLog.Listening(_logger, url);
        }
    }

    /// <summary>
    /// Waits until the whole request body has arrived (Kestrel still enforces its size limit), leaving it
    /// unread: reading it afterwards does not wait, so does not resume on a socket thread.
    /// </summary>
    public static async Task ReceiveBodyAsync(HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (context.Request.ContentLength == 0)
        {
            return;
        }

        var body = context.Request.BodyReader;
        while (true)
        {
            var result = await body.ReadAsync(context.RequestAborted);
            body.AdvanceTo(result.Buffer.Start, result.Buffer.End);
            if (result.IsCompleted || result.IsCanceled)
            {
                return;
            }
        }
    }

    private Task WriteHealthAsync(HttpContext context)
    {
        var reasons = _readiness.Select(r => r.NotReadyReason).OfType<string>().ToList();
        context.Response.ContentType = "text/plain; charset=utf-8";
        if (reasons.Count == 0)
        {
            return context.Response.WriteAsync("ok\n");
        }

        context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
        return context.Response.WriteAsync("not ready: " + string.Join("; ", reasons) + "\n");
    }

    private static bool Authorized(string header, byte[] expected) =>
        CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(header), expected);

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_app is not null)
        {
            await _app.StopAsync(cancellationToken);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_app is not null)
        {
            await _app.DisposeAsync();
            _app = null;
        }
    }

    [LoggerMessage(EventId = 110, Level = LogLevel.Information, Message = "Listening on {Url} (admin)")]
    private static partial void LogListening(ILogger logger, string url);
}

public static class AdminServerExtensions
{
    /// <summary>Adds the admin endpoint; its address and token come from <paramref name="options"/>.</summary>
    public static IServiceCollection AddAdminEndpoint(this IServiceCollection services, Func<IServiceProvider, AdminEndpointOptions> options)
    {
        services.AddSingleton(options);
        services.AddSingleton<AdminServer>();
        services.AddHostedService(sp => sp.GetRequiredService<AdminServer>());
        return services;
    }
}
