using System.Text.Json;
using System.Text.Json.Serialization;
using Infra.Core.Admin;
using Infra.Core.Configuration;
using Infra.LoadBalancer.Balancing;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;

namespace Infra.LoadBalancer.Admin;

/// <summary>A backend as <c>GET /backends</c> shows it.</summary>
internal sealed record BackendView(string Address, int Weight, string State, int InFlight, long Requests);

/// <summary>The body of <c>POST</c> and <c>PUT /backends</c>. <c>State</c> (PUT only) drains or restores.</summary>
internal sealed record BackendChange(string? Address, int? Weight, string? State);

internal sealed record RemovedView(string Address, bool Drained);

internal sealed record ErrorView(string Error);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow)]
[JsonSerializable(typeof(BackendView))]
[JsonSerializable(typeof(BackendView[]))]
[JsonSerializable(typeof(BackendChange))]
[JsonSerializable(typeof(RemovedView))]
[JsonSerializable(typeof(ErrorView))]
internal sealed partial class AdminJson : JsonSerializerContext;

/// <summary>
/// Run-time backend management on the admin port: list, add, reweigh, drain and remove backends
/// without a restart and without failing a request.
/// </summary>
internal sealed class BackendsAdminRoutes : IAdminRoutes
{
    private static readonly string[] StateNames = ["healthy", "unhealthy", "draining"];
    private readonly BackendPool _pool;
    private readonly LoadBalancerOptions _options;
    private readonly ILogger _logger;

    public BackendsAdminRoutes(BackendPool pool, LoadBalancerOptions options, ILogger<BackendsAdminRoutes> logger)
    {
        _pool = pool;
        _options = options;
        _logger = logger;
    }

    public void Map(IEndpointRouteBuilder routes)
    {
        routes.MapGet("/backends", new RequestDelegate(ListAsync));
        routes.MapPost("/backends", new RequestDelegate(AddAsync));
        routes.MapPut("/backends", new RequestDelegate(ChangeAsync));
        routes.MapDelete("/backends", new RequestDelegate(RemoveAsync));
    }

    private Task ListAsync(HttpContext context)
    {
        var now = _pool.Now;
        var views = _pool.Backends.Select(b => View(b, now)).ToArray();
        return WriteAsync(context, StatusCodes.Status200OK, views, AdminJson.Default.BackendViewArray);
    }

    private async Task AddAsync(HttpContext context)
    {
        var change = await ReadChangeAsync(context);
        if (change is null)
        {
            return;
        }

        if (!BackendAddress.TryParse(change.Address, out var address, out var error))
        {
            await ErrorAsync(context, StatusCodes.Status400BadRequest, error);
            return;
        }

        if (change.State is not null)
        {
            await ErrorAsync(context, StatusCodes.Status400BadRequest, "state cannot be set when adding a backend");
            return;
        }

        var weight = change.Weight ?? 1;
        if (weight is < 0 or > LoadBalancerOptions.MaxWeight)
        {
            await ErrorAsync(context, StatusCodes.Status400BadRequest, $"weight must be in 0..{LoadBalancerOptions.MaxWeight}");
            return;
        }

        if (!_pool.TryAdd(address, weight, out var backend))
        {
            await ErrorAsync(context, StatusCodes.Status409Conflict, $"{address.Url} is already a backend");
            return;
        }

        Log.BackendAdded(_logger, backend.Url, weight);
        context.Response.Headers.Location = "/backends?address=" + Uri.EscapeDataString(backend.Url);
        await WriteAsync(context, StatusCodes.Status201Created, View(backend, _pool.Now), AdminJson.Default.BackendView);
    }

    private async Task ChangeAsync(HttpContext context)
    {
        var change = await ReadChangeAsync(context);
        if (change is null)
        {
            return;
        }

        if (change.Address is null || _pool.Find(change.Address) is not { } backend)
        {
            await ErrorAsync(context, StatusCodes.Status404NotFound, $"no backend {change.Address}");
            return;
        }

        if (backend.IsRemoving)
        {
            await ErrorAsync(context, StatusCodes.Status409Conflict, $"{backend.Url} is being removed");
            return;
        }

        if (change.Weight is { } weight)
        {
            if (weight is < 0 or > LoadBalancerOptions.MaxWeight)
            {
                await ErrorAsync(context, StatusCodes.Status400BadRequest, $"weight must be in 0..{LoadBalancerOptions.MaxWeight}");
                return;
            }

            backend.Weight = weight;
            Log.BackendReweighted(_logger, backend.Url, weight);
        }

        switch (change.State?.ToUpperInvariant())
        {
            case null:
                break;
            case "DRAINING":
                backend.StartDrain();
                Log.BackendDraining(_logger, backend.Url);
                break;
            case "HEALTHY" or "ACTIVE":
                if (backend.StopDrain())
                {
                    Log.BackendUndrained(_logger, backend.Url);
                }

                break;
            default:
                await ErrorAsync(context, StatusCodes.Status400BadRequest, "state must be draining or healthy");
                return;
        }

        await WriteAsync(context, StatusCodes.Status200OK, View(backend, _pool.Now), AdminJson.Default.BackendView);
    }

    private async Task RemoveAsync(HttpContext context)
    {
        var address = context.Request.Query["address"].ToString();
        if (address.Length == 0)
        {
            await ErrorAsync(context, StatusCodes.Status400BadRequest, "DELETE /backends needs ?address=URL");
            return;
        }

        if (_pool.Find(address) is not { } backend)
        {
            await ErrorAsync(context, StatusCodes.Status404NotFound, $"no backend {address}");
            return;
        }

        if (backend.IsRemoving)
        {
            await ErrorAsync(context, StatusCodes.Status409Conflict, $"{backend.Url} is already being removed");
            return;
        }

        var timeout = _options.DrainTimeout;
        var timeoutText = context.Request.Query["timeout"].ToString();
        if (timeoutText.Length > 0 && !OptionValues.TryParseDuration(timeoutText, out timeout))
        {
            await ErrorAsync(context, StatusCodes.Status400BadRequest, $"timeout '{timeoutText}' is not a duration");
            return;
        }

        Log.BackendDraining(_logger, backend.Url);
        var drained = await _pool.DrainAndRemoveAsync(backend, timeout);
        Log.BackendRemoved(_logger, backend.Url, drained);
        await WriteAsync(context, StatusCodes.Status200OK, new RemovedView(backend.Url, drained), AdminJson.Default.RemovedView);
    }

    private static async Task<BackendChange?> ReadChangeAsync(HttpContext context)
    {
        try
        {
            var change = await JsonSerializer.DeserializeAsync(context.Request.Body, AdminJson.Default.BackendChange, context.RequestAborted);
            if (change is null)
            {
                await ErrorAsync(context, StatusCodes.Status400BadRequest, "body must be a JSON object");
            }

            return change;
        }
        catch (JsonException ex)
        {
            await ErrorAsync(context, StatusCodes.Status400BadRequest, $"invalid JSON: {ex.Message}");
            return null;
        }
    }

    private static BackendView View(Backend backend, long now) =>
        new(backend.Url, backend.Weight, StateNames[(int)backend.State(now)], backend.InFlight, backend.Requests);

    private static Task ErrorAsync(HttpContext context, int status, string error) =>
        WriteAsync(context, status, new ErrorView(error), AdminJson.Default.ErrorView);

    private static async Task WriteAsync<T>(HttpContext context, int status, T value, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json; charset=utf-8";
        await JsonSerializer.SerializeAsync(context.Response.Body, value, type, context.RequestAborted);
    }
}
