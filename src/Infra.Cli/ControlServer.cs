using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Infra.Cli;

/// <summary>
/// The local control endpoint of a running <c>infra up</c> (loopback, a port the kernel picks,
/// written to infra.json): GET /status, POST /nodes/{name}/kill, POST /nodes/{name}/restart, POST /stop.
/// </summary>
internal sealed class ControlServer(Supervisor supervisor) : IAsyncDisposable
{
    private WebApplication? _app;

    public async Task<string> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
        var app = builder.Build();
        app.Use(async (context, next) =>
        {
            if (!IsFromThisMachinesTools(context.Request))
            {
                context.Response.StatusCode = StatusCodes.Status403Forbidden;
                await context.Response.WriteAsync("the control endpoint takes requests from the infra command and scripts on this machine, not from web pages\n");
                return;
            }

            await next(context);
        });
        app.MapGet("/status", StatusAsync);
        app.MapPost("/nodes/{name}/kill", KillAsync);
        app.MapPost("/nodes/{name}/restart", RestartAsync);
        app.MapPost("/stop", () =>
        {
            supervisor.RequestStop();
            return Results.Accepted();
        });
        await app.StartAsync();
        _app = app;
        return app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
    }

    /// <summary>
    /// Not a browser acting for a web page: any page could otherwise POST /stop or a kill here (a request
    /// without a body needs no preflight), or read /status through a DNS name rebound to 127.0.0.1. So the
    /// Host must be a loopback name, and a request carrying a page's Origin or cross-site fetch metadata is
    /// refused; the infra command, curl and scripts send neither.
    /// </summary>
    internal static bool IsFromThisMachinesTools(HttpRequest request)
    {
        var host = request.Host.Host;
        if (host is not ("127.0.0.1" or "localhost" or "[::1]" or "::1"))
        {
            return false;
        }

        if (request.Headers.Origin.Count > 0)
        {
            return false;
        }

        return request.Headers["Sec-Fetch-Site"] is not { Count: > 0 } site || site.ToString() == "none";
    }

    private async Task StatusAsync(HttpContext context)
    {
        var masters = await supervisor.MastersAsync();
        var rows = await Task.WhenAll(supervisor.Nodes.Select(async node =>
        {
            var running = node.Pid is not null;
            var healthy = running && await supervisor.HealthyAsync(node);
            var role = node.Spec.Kind is NodeKind.DataMaster or NodeKind.DataReplica
                ? (masters.TryGetValue(node.Spec.Shard!, out var master) ? master == node.Address ? "master" : "replica" : "?") + $" ({node.Spec.Shard})"
                : node.Spec.Describe;
            return new StatusRow(node.Name, role, node.Url, node.Pid, running ? healthy ? "up" : "unhealthy" : node.State, running ? await supervisor.KeyMetricAsync(node) : "", node.Restarts);
        }));
        await context.Response.WriteAsJsonAsync(rows, CliJson.Default.StatusRowArray);
    }

    private async Task KillAsync(HttpContext context)
    {
        if (Find(context) is not { } node)
        {
            await NotFoundAsync(context);
            return;
        }

        if (!await supervisor.KillAsync(node))
        {
            context.Response.StatusCode = StatusCodes.Status409Conflict;
            await context.Response.WriteAsync($"{node.Name} is not running\n");
            return;
        }

        await context.Response.WriteAsync($"killed {node.Name}\n");
    }

    private async Task RestartAsync(HttpContext context)
    {
        if (Find(context) is not { } node)
        {
            await NotFoundAsync(context);
            return;
        }

        if (await supervisor.RestartAsync(node, kill: true) is { } problem)
        {
            context.Response.StatusCode = StatusCodes.Status500InternalServerError;
            await context.Response.WriteAsync($"{node.Name} did not restart: {problem}\n");
            return;
        }

        await context.Response.WriteAsync($"{node.Name} is up (pid {node.Pid})\n");
    }

    private Node? Find(HttpContext context) => supervisor.Find(context.Request.RouteValues["name"] as string ?? "");

    private Task NotFoundAsync(HttpContext context)
    {
        context.Response.StatusCode = StatusCodes.Status404NotFound;
        return context.Response.WriteAsync($"no node named '{context.Request.RouteValues["name"]}'; nodes: {string.Join(", ", supervisor.Nodes.Select(n => n.Name))}\n");
    }

    public async ValueTask DisposeAsync()
    {
        if (_app is not null)
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
    }
}

internal sealed record StatusRow(string Name, string Role, string Url, int? Pid, string Health, string Metric, int Restarts);

[System.Text.Json.Serialization.JsonSourceGenerationOptions(PropertyNamingPolicy = System.Text.Json.Serialization.JsonKnownNamingPolicy.CamelCase)]
[System.Text.Json.Serialization.JsonSerializable(typeof(StatusRow[]))]
internal sealed partial class CliJson : System.Text.Json.Serialization.JsonSerializerContext;
