using System.Text.Json;
using Infra.Core.Admin;
using Infra.Core.Framing;
using Infra.ShardRouter.Placement;
using Infra.ShardRouter.Routing;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Routing;

namespace Infra.ShardRouter.Api;

/// <summary>
/// The HTTP/JSON API, in the spirit of rqlite: <c>POST /db/execute</c>, <c>POST /db/query</c>,
/// <c>POST /db/schema</c>, <c>GET /shards</c>, <c>POST /shards</c> (add a shard, then rebalance),
/// <c>DELETE /shards/{id}</c> (drain, then remove). Errors are <c>{"error", "code"}</c>; 503 with
/// <c>Retry-After</c> while a shard fails over.
/// </summary>
internal sealed class HttpApi(Router router, Resharder resharder) : IAdminRoutes
{
    /// <summary>
    /// Paths Kestrel runs on the thread that read the request (<see cref="AdminEndpointOptions.InlinePaths"/>),
    /// as the MessagePack API does: a keyed read or write is parsed and sent to its node right there, and
    /// the node's answer is turned into the response by the thread that read it (<see cref="NodeConnections"/>).
    /// A large body moves to the thread pool first; a fan-out or a large result does in <see cref="Router.QueryAsync"/>.
    /// </summary>
    public static readonly IReadOnlySet<string> InlinePaths = new HashSet<string>(StringComparer.Ordinal) { "/db/execute", "/db/query" };

    public void Map(IEndpointRouteBuilder routes)
    {
        routes.MapPost("/db/execute", context => Guard(context, ExecuteAsync));
        routes.MapPost("/db/query", context => Guard(context, QueryAsync));
        routes.MapPost("/db/schema", context => Guard(context, SchemaAsync));
        routes.MapGet("/shards", context => Guard(context, ShardsAsync));
        routes.MapPost("/shards", context => Guard(context, AddShardAsync));
        routes.MapDelete("/shards/{id}", context => Guard(context, RemoveShardAsync));
    }

    private async Task Guard(HttpContext context, Func<HttpContext, Task> handler)
    {
        try
        {
            await handler(context);
        }
        catch (RouterException ex)
        {
            router.Metrics.Errors.Add(1, new KeyValuePair<string, object?>("code", ex.Code));
            await ErrorAsync(context, ex);
        }
        catch (BadHttpRequestException ex)
        {
            await ErrorAsync(context, new RouterException("BadRequest", ex.Message, ex.StatusCode));
        }
        catch (JsonException ex)
        {
            await ErrorAsync(context, RouterException.Bad("the body is not valid JSON: " + ex.Message));
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away.
        }
        catch (Exception ex) when (ex is InvalidOperationException or IOException)
        {
            await ErrorAsync(context, new RouterException("Internal", "internal error: " + ex.Message, 500));
        }
    }

    private static Task ErrorAsync(HttpContext context, RouterException error)
    {
        if (context.Response.HasStarted)
        {
            return Task.CompletedTask;
        }

        context.Response.StatusCode = error.Status;
        if (error.Retriable)
        {
            context.Response.Headers.RetryAfter = "1";
        }

        return JsonHttp.WriteAsync(context, w =>
        {
            w.WriteStartObject();
            w.WriteString("error", error.Message);
            w.WriteString("code", error.Code);
            if (error.Failed.Count > 0)
            {
                WriteFailed(w, error.Failed);
            }

            w.WriteEndObject();
        });
    }

    private static void WriteFailed(Utf8JsonWriter w, IReadOnlyList<ShardFailure> failed)
    {
        w.WriteStartArray("failedShards");
        foreach (var f in failed)
        {
            w.WriteStartObject();
            w.WriteString("shard", f.Shard);
            w.WriteString("code", f.Code);
            w.WriteString("error", f.Error);
            w.WriteEndObject();
        }

        w.WriteEndArray();
    }

    private async Task ExecuteAsync(HttpContext context)
    {
        var (key, statements) = RequestParser.Execute(await ReadAsync(context), router.Options.MaxStatements);
        var reply = await router.ExecuteAsync(key, statements, context.RequestAborted);
        await JsonHttp.WriteAsync(context, w =>
        {
            w.WriteStartObject();
            w.WriteStartArray("results");
            foreach (var result in reply.Outcome.Results)
            {
                w.WriteStartObject();
                w.WriteNumber("rowsAffected", result.RowsAffected);
                w.WriteNumber("lastInsertId", result.LastInsertId);
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteString("shard", reply.Shard);
            w.WriteStartObject("token");
            w.WriteString("shard", reply.Token.Shard);
            w.WriteNumber("lsn", reply.Token.Lsn);
            w.WriteEndObject();
            w.WriteNumber("epoch", reply.Outcome.Epoch);
            w.WriteEndObject();
        });
    }

    private async Task QueryAsync(HttpContext context)
    {
        var reply = await router.QueryAsync(RequestParser.Query(await ReadAsync(context)), context.RequestAborted);

        await JsonHttp.WriteAsync(context, w =>
        {
            w.WriteStartObject();
            SqlJson.WriteRows(w, reply.Columns, reply.Rows);
            w.WriteStartArray("shards");
            foreach (var shard in reply.Shards)
            {
                w.WriteStartObject();
                w.WriteString("shard", shard.Shard);
                w.WriteString("node", shard.Node);
                w.WriteNumber("lsn", shard.Lsn);
                w.WriteNumber("rows", shard.Rows);
                w.WriteEndObject();
            }

            w.WriteEndArray();
            if (reply.Failed.Count > 0)
            {
                WriteFailed(w, reply.Failed);
            }

            w.WriteEndObject();
        });
    }

    private async Task SchemaAsync(HttpContext context)
    {
        var (statements, tables) = RequestParser.Schema(await ReadAsync(context), router.Options.MaxStatements);
        var outcomes = await router.SchemaAsync(statements, tables, context.RequestAborted);
        var ok = outcomes.All(o => o.Ok);
        context.Response.StatusCode = ok ? 200 : outcomes.Any(o => o.Ok) ? 502 : outcomes.All(o => o.Code is "BadRequest" or "SqlError" or "NotAllowed") ? 400 : 503;
        await JsonHttp.WriteAsync(context, w =>
        {
            w.WriteStartObject();
            if (!ok)
            {
                w.WriteString("error", $"{outcomes.Count(o => !o.Ok)} of {outcomes.Count} shards did not apply the schema");
                w.WriteString("code", "SchemaIncomplete");
            }

            w.WriteStartArray("shards");
            foreach (var o in outcomes)
            {
                w.WriteStartObject();
                w.WriteString("shard", o.Shard);
                w.WriteBoolean("ok", o.Ok);
                if (o.Ok)
                {
                    w.WriteNumber("lsn", o.Lsn);
                    if (o.Warning is not null)
                    {
                        w.WriteString("warning", o.Warning);
                    }
                }
                else
                {
                    w.WriteString("code", o.Code);
                    w.WriteString("error", o.Error);
                }

                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteEndObject();
        });
    }

    private Task ShardsAsync(HttpContext context)
    {
        var map = router.Map;
        var counts = map.SlotCounts();
        return JsonHttp.WriteAsync(context, w =>
        {
            w.WriteStartObject();
            w.WriteNumber("version", map.Version);
            w.WriteNumber("slots", map.Slots);
            w.WriteStartArray("shards");
            for (var i = 0; i < map.Shards.Count; i++)
            {
                var shard = map.Shards[i];
                var health = router.Health.Shard(shard.Id);
                w.WriteStartObject();
                ShardMap.WriteShardFields(w, shard);
                w.WriteNumber("slotCount", counts[i]);
                w.WriteBoolean("failingOver", health.FailingOver);
                w.WriteNumber("failovers", health.Failovers);
                if (health.LastFailover is { } last)
                {
                    w.WriteString("lastFailover", last);
                }

                w.WriteStartArray("nodes");
                foreach (var address in shard.Nodes)
                {
                    var node = router.Health.Node(address);
                    w.WriteStartObject();
                    w.WriteString("address", address);
                    w.WriteBoolean("up", node.Up);
                    if (node.Status is { } status)
                    {
                        w.WriteString("role", status.Role);
                        w.WriteNumber("epoch", status.Epoch);
                        w.WriteNumber("lsn", status.Lsn);
                    }

                    w.WriteNumber("lagMs", node.LagMs);
                    w.WriteBoolean("inRotation", address != shard.Master && router.Health.InRotation(address, 0, (long)router.Options.MaxReplicaLag.TotalMilliseconds));
                    if (node.LastError is { } error)
                    {
                        w.WriteString("lastError", error);
                    }

                    w.WriteEndObject();
                }

                w.WriteEndArray();
                w.WriteEndObject();
            }

            w.WriteEndArray();
            map.WriteTablesAndOwners(w);
            resharder.WriteStatus(w);
            w.WriteEndObject();
        });
    }

    private async Task AddShardAsync(HttpContext context)
    {
        using var body = await ReadDocumentAsync(context);
        ShardInfo shard;
        try
        {
            shard = ShardMap.ParseShard(body.RootElement, "the shard");
        }
        catch (FormatException ex)
        {
            throw RouterException.Bad(ex.Message);
        }

        var moving = await resharder.AddShardAsync(shard with { Epoch = Math.Max(1, shard.Epoch), Draining = false });
        context.Response.StatusCode = StatusCodes.Status202Accepted;
        await JsonHttp.WriteAsync(context, w =>
        {
            w.WriteStartObject();
            w.WriteString("shard", shard.Id);
            w.WriteNumber("slotsToMove", moving);
            w.WriteEndObject();
        });
    }

    private async Task RemoveShardAsync(HttpContext context)
    {
        var id = (string)context.Request.RouteValues["id"]!;
        var moving = await resharder.RemoveShardAsync(id);
        context.Response.StatusCode = StatusCodes.Status202Accepted;
        await JsonHttp.WriteAsync(context, w =>
        {
            w.WriteStartObject();
            w.WriteString("shard", id);
            w.WriteNumber("slotsToMove", moving);
            w.WriteEndObject();
        });
    }

    private static async Task<Dictionary<string, object?>> ReadAsync(HttpContext context)
    {
        using var document = await ReadDocumentAsync(context);
        return RequestParser.FromJson(document.RootElement) as Dictionary<string, object?> ?? throw RouterException.Bad("the body must be a JSON object");
    }

    private static async Task<JsonDocument> ReadDocumentAsync(HttpContext context) =>
        await JsonHttp.ReadAsync(context) ?? throw RouterException.Bad("the body is empty; expected JSON");

}
