using System.Globalization;
using System.Text.Json;
using Infra.Core.Admin;
using Infra.Core.Framing;
using Infra.DataNode.Storage;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Infra.DataNode.Api;

/// <summary>
/// The HTTP/JSON API, in the spirit of rqlite, on the admin endpoint:
/// <c>POST /execute</c>, <c>POST /query</c>, <c>GET /status</c>, <c>GET /checksum</c>,
/// <c>POST /promote</c>, <c>POST /follow</c>, <c>POST /claim</c>, <c>DELETE /replicas/{id}</c>.
/// Values: null, numbers (integers stay integers), strings, booleans (1/0) and blobs as
/// <c>{"base64": "…"}</c>. Errors are <c>{"error", "code"}</c>: 400 bad request or SQL, 409 not master
/// or stale epoch, 503 behind, not replicated, busy or unavailable.
/// </summary>
internal sealed class HttpApi(Node node) : IAdminRoutes
{
    /// <summary>
    /// Paths Kestrel runs on the thread that read the request (<see cref="AdminEndpointOptions.InlinePaths"/>):
    /// a write only parses its body and queues it for the writer thread, a read whose text has been cheap
    /// (<see cref="QueryCosts"/>) runs right there; a large body, another query or a read that must wait
    /// for an LSN first moves to the thread pool.
    /// </summary>
    public static readonly IReadOnlySet<string> InlinePaths = new HashSet<string>(StringComparer.Ordinal) { "/execute", "/query" };

    public void Map(IEndpointRouteBuilder routes)
    {
        routes.MapPost("/execute", context => Guard(context, ExecuteAsync));
        routes.MapPost("/query", context => Guard(context, QueryAsync));
        routes.MapGet("/status", context => Guard(context, StatusAsync));
        routes.MapGet("/checksum", context => Guard(context, ChecksumAsync));
        routes.MapPost("/promote", context => Guard(context, PromoteAsync));
        routes.MapPost("/follow", context => Guard(context, FollowAsync));
        routes.MapPost("/claim", context => Guard(context, ClaimAsync));
        routes.MapDelete("/replicas/{id}", context => Guard(context, ForgetAsync));
    }

    private async Task Guard(HttpContext context, Func<HttpContext, Task> handler)
    {
        try
        {
            await handler(context);
        }
        catch (NodeException ex)
        {
            node.CountError(ex.Code);
            await ErrorAsync(context, ex.Code, ex.Message);
        }
        catch (BadHttpRequestException ex)
        {
            node.CountError(NodeErrorCode.BadRequest);
            await ErrorAsync(context, NodeErrorCode.BadRequest, ex.Message, ex.StatusCode);
        }
        catch (JsonException ex)
        {
            node.CountError(NodeErrorCode.BadRequest);
            await ErrorAsync(context, NodeErrorCode.BadRequest, "the body is not valid JSON: " + ex.Message);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away.
        }
        catch (Exception ex) when (ex is InvalidOperationException or IOException or Microsoft.Data.Sqlite.SqliteException)
        {
            // A bug or a storage failure: the request gets a JSON 500, the process goes on.
            node.CountError(NodeErrorCode.Unavailable);
            await ErrorAsync(context, NodeErrorCode.Unavailable, "internal error: " + ex.Message, StatusCodes.Status500InternalServerError);
        }
    }

    private static Task ErrorAsync(HttpContext context, NodeErrorCode code, string message, int? status = null)
    {
        if (context.Response.HasStarted)
        {
            return Task.CompletedTask;
        }

        context.Response.StatusCode = status ?? NodeException.HttpStatus(code);
        if (code is NodeErrorCode.Busy or NodeErrorCode.Behind or NodeErrorCode.Unavailable)
        {
            context.Response.Headers.RetryAfter = "1";
        }

        return JsonHttp.WriteAsync(context, w =>
        {
            w.WriteStartObject();
            w.WriteString("error", message);
            w.WriteString("code", code.ToString());
            w.WriteEndObject();
        });
    }

    private async Task ExecuteAsync(HttpContext context)
    {
        using var body = await ReadJsonAsync(context);
        var root = body.RootElement;
        JsonElement statements;
        long? epoch = null;
        long? maxTimeMs = null;
        if (root.ValueKind == JsonValueKind.Array)
        {
            statements = root;
        }
        else if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("statements", out statements) && statements.ValueKind == JsonValueKind.Array)
        {
            if (root.TryGetProperty("epoch", out var e))
            {
                epoch = IsInteger(e) && e.TryGetInt64(out var value) && value >= 0 ? value : throw Bad("\"epoch\" must be a non-negative integer");
            }

            if (root.TryGetProperty("maxTimeMs", out var m))
            {
                maxTimeMs = IsInteger(m) && m.TryGetInt64(out var value) && value >= 0 ? value : throw Bad("\"maxTimeMs\" must be a non-negative integer");
            }
        }
        else
        {
            throw Bad("expected {\"statements\": [[\"SQL\", param, ...], ...]}");
        }

        var count = statements.GetArrayLength();
        if (count == 0)
        {
            throw Bad("\"statements\" is empty");
        }

        if (count > node.Options.MaxStatements)
        {
            throw Bad($"{count} statements in one request; the limit is {node.Options.MaxStatements}");
        }

        var list = new List<SqlStatement>(count);
        var index = 0;
        foreach (var statement in statements.EnumerateArray())
        {
            index++;
            list.Add(ParseStatement(statement, index));
        }

        var answer = await node.ExecuteAsync(new WriteCommand(list, epoch, MaxTime: NativeApi.MaxTime(maxTimeMs)), context.RequestAborted);
        await JsonHttp.WriteAsync(context, w =>
        {
            w.WriteStartObject();
            w.WriteStartArray("results");
            foreach (var result in answer.Results)
            {
                w.WriteStartObject();
                w.WriteNumber("rowsAffected", result.RowsAffected);
                w.WriteNumber("lastInsertId", result.LastInsertId);
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteNumber("lsn", answer.Lsn);
            w.WriteNumber("epoch", answer.Epoch);
            w.WriteEndObject();
        });
    }

    private SqlStatement ParseStatement(JsonElement statement, int index)
    {
        string? sql;
        var parameters = new List<object?>();
        if (statement.ValueKind == JsonValueKind.String)
        {
            sql = statement.GetString();
        }
        else if (statement.ValueKind == JsonValueKind.Array && statement.GetArrayLength() > 0 && statement[0].ValueKind == JsonValueKind.String)
        {
            sql = statement[0].GetString();
            var position = 0;
            foreach (var value in statement.EnumerateArray().Skip(1))
            {
                position++;
                parameters.Add(ToSqlValue(value, $"statement {index}, parameter {position}"));
            }
        }
        else
        {
            throw Bad($"statement {index} is not \"SQL\" or [\"SQL\", param, ...]");
        }

        if (string.IsNullOrWhiteSpace(sql))
        {
            throw Bad($"statement {index} has no SQL");
        }

        if (sql.Length > node.Options.MaxSqlBytes)
        {
            throw Bad($"statement {index} is {sql.Length} characters; the limit is {node.Options.MaxSqlBytes}");
        }

        return new SqlStatement(sql, parameters);
    }

    private static object? ToSqlValue(JsonElement value, string where)
    {
        try
        {
            return SqlJson.ToSqlValue(value, where);
        }
        catch (FormatException ex)
        {
            throw Bad(ex.Message);
        }
    }

    private static bool IsInteger(JsonElement element) => element.ValueKind == JsonValueKind.Number;

    private async Task QueryAsync(HttpContext context)
    {
        using var body = await ReadJsonAsync(context);
        var root = body.RootElement;
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("sql", out var sqlElement) || sqlElement.ValueKind != JsonValueKind.String)
        {
            throw Bad("expected {\"sql\": \"SELECT ...\", \"params\": [...], \"minLsn\": n}");
        }

        var sql = sqlElement.GetString()!;
        if (sql.Length > node.Options.MaxSqlBytes)
        {
            throw Bad($"the query is {sql.Length} characters; the limit is {node.Options.MaxSqlBytes}");
        }

        var parameters = new List<object?>();
        if (root.TryGetProperty("params", out var p) && p.ValueKind != JsonValueKind.Null)
        {
            if (p.ValueKind != JsonValueKind.Array)
            {
                throw Bad("\"params\" must be an array");
            }

            var position = 0;
            foreach (var value in p.EnumerateArray())
            {
                parameters.Add(ToSqlValue(value, $"parameter {++position}"));
            }
        }

        long? minLsn = null;
        if (root.TryGetProperty("minLsn", out var m) && m.ValueKind != JsonValueKind.Null)
        {
            minLsn = IsInteger(m) && m.TryGetInt64(out var value) && value >= 0 ? value : throw Bad("\"minLsn\" must be a non-negative integer");
        }

        TimeSpan? wait = null;
        if (root.TryGetProperty("timeoutMs", out var t) && t.ValueKind != JsonValueKind.Null)
        {
            wait = t.ValueKind == JsonValueKind.Number && t.TryGetInt32(out var ms) && ms is >= 0 and <= 600_000 ? TimeSpan.FromMilliseconds(ms) : throw Bad("\"timeoutMs\" must be 0..600000");
        }

        var result = await node.QueryOnCallerIfCheapAsync(sql, parameters, minLsn, wait, context.RequestAborted);
        await JsonHttp.WriteAsync(context, w =>
        {
            w.WriteStartObject();
            SqlJson.WriteRows(w, result.Columns, result.Rows);
            w.WriteNumber("lsn", result.Lsn);
            w.WriteEndObject();
        });
    }

    private Task StatusAsync(HttpContext context)
    {
        var db = node.Db;
        var follower = node.Follower;
        var replicas = node.Hub.Replicas.Select(r => (r, lag: node.Hub.LagMs(r))).ToList();
        return JsonHttp.WriteAsync(context, w =>
        {
            w.WriteStartObject();
            w.WriteString("nodeId", db.NodeId);
            w.WriteString("role", node.Role == NodeRole.Master ? "master" : "replica");
            w.WriteNumber("epoch", db.Epoch);
            w.WriteNumber("lsn", db.Lsn);
            w.WriteNumber("appliedLsn", db.Lsn);
            w.WriteNumber("lastEpoch", db.LastEntryEpoch);
            w.WriteNumber("durableLsn", node.Durable.Value);
            if (node.Flusher.Failure is { } walFailure)
            {
                w.WriteString("walSyncFailed", walFailure.Message);
            }
            if (node.FencedBy > 0)
            {
                w.WriteNumber("fencedBy", node.FencedBy);
            }

            if (db.ClosedSlots is { Count: > 0 } closed)
            {
                w.WriteStartArray("closedSlots");
                foreach (var slot in closed)
                {
                    w.WriteNumberValue(slot);
                }

                w.WriteEndArray();
                if (db.ClosedBy is { Count: > 0 } closedBy)
                {
                    w.WriteStartObject("closedBy");
                    foreach (var (slot, by) in closedBy.OrderBy(c => c.Key))
                    {
                        w.WriteString(slot.ToString(CultureInfo.InvariantCulture), by);
                    }

                    w.WriteEndObject();
                }
            }

            w.WriteStartObject("sync");
            w.WriteString("mode", node.Options.Sync == SyncMode.SemiSync ? "semi-sync" : "async");
            w.WriteBoolean("waiting", node.Hub.SemiSyncRequired);
            w.WriteNumber("replicas", node.Options.SyncReplicas);
            w.WriteNumber("timeoutMs", (long)node.Options.SyncTimeout.TotalMilliseconds);
            w.WriteEndObject();
            if (node.Role == NodeRole.Replica)
            {
                w.WriteString("master", node.Master);
                if (follower is not null)
                {
                    w.WriteBoolean("connected", follower.Connected);
                    w.WriteNumber("masterLsn", follower.MasterLsn);
                    w.WriteNumber("lagEntries", Math.Max(0, follower.MasterLsn - db.Lsn));
                    if (follower.Diverged is { } diverged)
                    {
                        w.WriteString("diverged", diverged);
                    }

                    if (follower.LastError is { } error)
                    {
                        w.WriteString("lastError", error);
                    }
                }
            }

            w.WriteStartArray("registered");
            foreach (var id in node.Role == NodeRole.Master ? node.Hub.Registered : db.RegisteredReplicas)
            {
                w.WriteStringValue(id);
            }

            w.WriteEndArray();
            w.WriteStartArray("replicas");
            foreach (var (r, lag) in replicas)
            {
                w.WriteStartObject();
                w.WriteString("id", r.Id);
                w.WriteString("address", r.Address);
                w.WriteBoolean("connected", r.Connected);
                w.WriteNumber("ackedLsn", Interlocked.Read(ref r.AckedLsn));
                w.WriteNumber("lagEntries", Math.Max(0, db.Lsn - Interlocked.Read(ref r.AckedLsn)));
                w.WriteNumber("lagMs", lag);
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteEndObject();
        });
    }

    private Task ChecksumAsync(HttpContext context)
    {
        var (checksum, lsn, tables) = node.Db.Checksum();
        return JsonHttp.WriteAsync(context, w =>
        {
            w.WriteStartObject();
            w.WriteString("checksum", checksum);
            w.WriteNumber("lsn", lsn);
            w.WriteStartObject("tables");
            foreach (var (name, rows) in tables)
            {
                w.WriteNumber(name, rows);
            }

            w.WriteEndObject();
            w.WriteEndObject();
        });
    }

    private async Task PromoteAsync(HttpContext context)
    {
        using var body = await ReadJsonAsync(context);
        if (body.RootElement.ValueKind != JsonValueKind.Object || !body.RootElement.TryGetProperty("epoch", out var e) || !IsInteger(e) || !e.TryGetInt64(out var epoch) || epoch <= 0)
        {
            throw Bad("expected {\"epoch\": n} with n above the node's epoch");
        }

        await node.PromoteAsync(epoch);
        await RoleAsync(context);
    }

    private async Task FollowAsync(HttpContext context)
    {
        using var body = await ReadJsonAsync(context);
        var root = body.RootElement;
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("master", out var m) || m.ValueKind != JsonValueKind.String)
        {
            throw Bad("expected {\"master\": \"host:port\", \"epoch\": n?, \"reclone\": false?}");
        }

        var master = m.GetString()!;
        if (!Infra.Core.Configuration.OptionValues.TryParseHostPort(master, out _, out _))
        {
            throw Bad($"'{master}' is not host:port");
        }

        long? epoch = root.TryGetProperty("epoch", out var e) && e.ValueKind != JsonValueKind.Null
            ? (IsInteger(e) && e.TryGetInt64(out var value) && value >= 0 ? value : throw Bad("\"epoch\" must be a non-negative integer"))
            : null;
        var reclone = root.TryGetProperty("reclone", out var r) && r.ValueKind == JsonValueKind.True;
        await node.FollowAsync(master, epoch, reclone);
        await RoleAsync(context);
    }

    private async Task ClaimAsync(HttpContext context)
    {
        using var body = await ReadJsonAsync(context);
        var root = body.RootElement;
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("epoch", out var e) || !IsInteger(e) || !e.TryGetInt64(out var epoch) || epoch <= 0
            || !root.TryGetProperty("leader", out var l) || l.ValueKind != JsonValueKind.String || l.GetString() is not { Length: > 0 } leader)
        {
            throw Bad("expected {\"epoch\": n, \"leader\": \"nodeId\"}");
        }

        await node.ClaimAsync(epoch, leader);
        await RoleAsync(context);
    }

    private async Task ForgetAsync(HttpContext context)
    {
        var id = (string)context.Request.RouteValues["id"]!;
        if (!await node.Hub.ForgetAsync(id))
        {
            context.Response.StatusCode = StatusCodes.Status404NotFound;
        }

        await JsonHttp.WriteAsync(context, w =>
        {
            w.WriteStartObject();
            w.WriteStartArray("registered");
            foreach (var r in node.Hub.Registered)
            {
                w.WriteStringValue(r);
            }

            w.WriteEndArray();
            w.WriteEndObject();
        });
    }

    private Task RoleAsync(HttpContext context) => JsonHttp.WriteAsync(context, w =>
    {
        w.WriteStartObject();
        w.WriteString("role", node.Role == NodeRole.Master ? "master" : "replica");
        w.WriteNumber("epoch", node.Db.Epoch);
        w.WriteNumber("lsn", node.Db.Lsn);
        w.WriteEndObject();
    });

    private static async Task<JsonDocument> ReadJsonAsync(HttpContext context) =>
        await JsonHttp.ReadAsync(context) ?? throw Bad("the body is empty; expected JSON");

    private static NodeException Bad(string message) => new(NodeErrorCode.BadRequest, message);
}
