using System.Globalization;
using System.Text;
using System.Text.Json;
using Infra.Core.Admin;
using Infra.QueueBroker.Log;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Infra.QueueBroker.Http;

/// <summary>
/// The HTTP/JSON API for people and scripts, on the same endpoint as /healthz and /metrics. Queue-mode
/// consumption (payloads base64), produce of one message per request, topic and group inspection.
/// Every error is <c>{"error": "...", "code": "&lt;ErrorCode&gt;"}</c> with a 4xx/5xx status.
/// </summary>
internal sealed class HttpApi(Broker broker) : IAdminRoutes
{
    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    public void Map(IEndpointRouteBuilder routes)
    {
        routes.MapPost("/topics", context => Guard(context, CreateTopicAsync));
        routes.MapGet("/topics", context => Guard(context, ListTopicsAsync));
        routes.MapGet("/topics/{topic}", context => Guard(context, DescribeTopicAsync));
        routes.MapPost("/topics/{topic}/messages", context => Guard(context, ProduceAsync));
        routes.MapGet("/topics/{topic}/messages", context => Guard(context, ConsumeAsync));
        routes.MapPost("/topics/{topic}/ack", context => Guard(context, c => SettleAsync(c, ack: true)));
        routes.MapPost("/topics/{topic}/nack", context => Guard(context, c => SettleAsync(c, ack: false)));
        routes.MapGet("/topics/{topic}/groups/{group}", context => Guard(context, DescribeGroupAsync));
    }

    private async Task Guard(HttpContext context, Func<HttpContext, Task> handler)
    {
        try
        {
            await handler(context);
        }
        catch (BrokerException ex)
        {
            broker.CountError(ex.Code);
            await ErrorAsync(context, ex.Code, ex.Message);
        }
        catch (BadHttpRequestException ex)
        {
            var code = ex.StatusCode == StatusCodes.Status413PayloadTooLarge ? ErrorCode.TooLarge : ErrorCode.BadRequest;
            broker.CountError(code);
            await ErrorAsync(context, code, ex.Message);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away.
        }
    }

    private static Task ErrorAsync(HttpContext context, ErrorCode code, string message)
    {
        if (context.Response.HasStarted)
        {
            return Task.CompletedTask;
        }

        context.Response.StatusCode = BrokerErrors.HttpStatus(code);
        if (code == ErrorCode.Busy)
        {
            context.Response.Headers.RetryAfter = "1";
        }

        return context.Response.WriteAsJsonAsync(new { error = message, code = code.ToString() }, Json);
    }

    private async Task CreateTopicAsync(HttpContext context)
    {
        using var body = await ReadJsonAsync(context);
        var name = body.RootElement.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String ? n.GetString()! : throw Bad("\"name\" (a string) is required");
        var partitions = body.RootElement.TryGetProperty("partitions", out var p) ? (p.ValueKind == JsonValueKind.Number && p.TryGetInt32(out var count) ? count : throw Bad("\"partitions\" must be an integer")) : 1;
        var (topic, created) = broker.CreateTopic(name, partitions);
        context.Response.StatusCode = created ? StatusCodes.Status201Created : StatusCodes.Status200OK;
        await context.Response.WriteAsJsonAsync(new { name = topic.Name, partitions = topic.Partitions.Count }, Json);
    }

    private Task ListTopicsAsync(HttpContext context) =>
        context.Response.WriteAsJsonAsync(broker.Topics.All.OrderBy(t => t.Name, StringComparer.Ordinal).Select(t => new { name = t.Name, partitions = t.Partitions.Count }), Json);

    private Task DescribeTopicAsync(HttpContext context)
    {
        var topic = broker.Topics.Get(Route(context, "topic"));
        return context.Response.WriteAsJsonAsync(new
        {
            name = topic.Name,
            partitions = topic.Partitions.Select(p => new
            {
                partition = p.Id,
                startOffset = p.LogOrNull?.StartOffset,
                endOffset = p.LogOrNull?.CommittedEnd,
                sizeBytes = p.LogOrNull?.SizeBytes,
                failed = p.FailureReason,
            }),
        }, Json);
    }

    private async Task ProduceAsync(HttpContext context)
    {
        var topic = Route(context, "topic");
        var query = context.Request.Query;
        var key = query.TryGetValue("key", out var k) ? Encoding.UTF8.GetBytes(k.ToString()) : null;
        var partition = query.TryGetValue("partition", out var p)
            ? (int.TryParse(p, NumberStyles.None, CultureInfo.InvariantCulture, out var parsed) ? parsed : throw Bad("partition must be a whole number"))
            : (int?)null;
        var limit = broker.Options.MaxMessageBytes;
        if (context.Request.ContentLength > limit)
        {
            throw new BrokerException(ErrorCode.TooLarge, $"message of {context.Request.ContentLength} bytes is over the {limit}-byte limit");
        }

        var payload = await ReadBodyAsync(context, limit);
        var headers = context.Request.Headers.ContentType.ToString() is { Length: > 0 } type
            ? new List<MessageHeader> { new("content-type", Encoding.UTF8.GetBytes(type)) }
            : [];
        var result = await broker.ProduceAsync(topic, partition, [new LogMessage(key, headers, payload)]);
        await context.Response.WriteAsJsonAsync(new { partition = result.Partition, offset = result.BaseOffset }, Json);
    }

    private async Task ConsumeAsync(HttpContext context)
    {
        var topic = Route(context, "topic");
        var query = context.Request.Query;
        var max = QueryInt(query, "max", 1, 10_000) ?? 10;
        var wait = TimeSpan.FromMilliseconds(QueryInt(query, "waitMs", 0, 300_000) ?? 0);
        if (query["group"].ToString() is { Length: > 0 } group)
        {
            var deliveries = await broker.QueueFetchAsync(topic, group, max, wait, context.RequestAborted);
            await context.Response.WriteAsJsonAsync(deliveries.Select(d => new
            {
                partition = d.Partition,
                offset = d.Message.Offset,
                deliveryId = d.DeliveryId,
                deliveryCount = d.DeliveryCount,
                key = d.Message.Key is null ? null : Encoding.UTF8.GetString(d.Message.Key),
                headers = d.Message.Headers.Length == 0 ? null : d.Message.Headers.ToDictionary(h => h.Name, h => Encoding.UTF8.GetString(h.Value)),
                payload = Convert.ToBase64String(d.Message.Payload),
                timestamp = d.Message.Timestamp,
            }), Json);
            return;
        }

        // Without a group: a plain read of one partition from an offset (stream style).
        var partition = QueryInt(query, "partition", 0, int.MaxValue) ?? throw Bad("give group=G (queue mode) or partition=P&offset=O (a plain read)");
        var offset = long.TryParse(query["offset"], NumberStyles.None, CultureInfo.InvariantCulture, out var o) ? o : throw Bad("offset must be a whole number");
        var messages = await broker.FetchAsync(topic, partition, offset, max, 4 << 20, wait, context.RequestAborted);
        await context.Response.WriteAsJsonAsync(messages.Select(m => new
        {
            partition,
            offset = m.Offset,
            key = m.Key is null ? null : Encoding.UTF8.GetString(m.Key),
            headers = m.Headers.Length == 0 ? null : m.Headers.ToDictionary(h => h.Name, h => Encoding.UTF8.GetString(h.Value)),
            payload = Convert.ToBase64String(m.Payload),
            timestamp = m.Timestamp,
        }), Json);
    }

    private async Task SettleAsync(HttpContext context, bool ack)
    {
        var topic = Route(context, "topic");
        using var body = await ReadJsonAsync(context);
        var root = body.RootElement;
        var groupName = root.TryGetProperty("group", out var g) && g.ValueKind == JsonValueKind.String ? g.GetString()! : throw Bad("\"group\" (a string) is required");
        if (!root.TryGetProperty("deliveryIds", out var idsElement) || idsElement.ValueKind != JsonValueKind.Array)
        {
            throw Bad("\"deliveryIds\" (an array of strings) is required");
        }

        var ids = idsElement.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String ? e.GetString()! : throw Bad("\"deliveryIds\" must hold strings")).ToList();
        if (!broker.QueueGroupExists(topic, groupName))
        {
            broker.Topics.Get(topic);
            throw new BrokerException(ErrorCode.UnknownMember, $"group '{groupName}' has never consumed '{topic}'");
        }

        var group = await broker.QueueGroupAsync(topic, groupName);
        if (ack)
        {
            var (acked, unknown) = await group.AckAsync(ids);
            await context.Response.WriteAsJsonAsync(new { acked, unknown }, Json);
        }
        else
        {
            var delay = root.TryGetProperty("delayMs", out var d) ? (d.ValueKind == JsonValueKind.Number && d.TryGetInt32(out var ms) && ms >= 0 ? ms : throw Bad("\"delayMs\" must be a whole number ≥ 0")) : 0;
            var (nacked, unknown) = await group.NackAsync(ids, TimeSpan.FromMilliseconds(delay));
            await context.Response.WriteAsJsonAsync(new { nacked, unknown }, Json);
        }
    }

    private async Task DescribeGroupAsync(HttpContext context)
    {
        var topic = Route(context, "topic");
        var name = Route(context, "group");
        if (broker.QueueGroupExists(topic, name))
        {
            var partitions = (await broker.QueueGroupAsync(topic, name)).Describe();
            await context.Response.WriteAsJsonAsync(new
            {
                group = name,
                mode = "queue",
                lag = partitions.Sum(p => p.Lag),
                pending = partitions.Sum(p => p.InFlight + p.WaitingRedelivery),
                inFlight = partitions.Sum(p => p.InFlight),
                partitions,
            }, Json);
            return;
        }

        if (broker.Topics.TryGet(topic, out var found) && Directory.Exists(Path.Combine(found.Directory, "groups", "stream-" + name)))
        {
            var info = broker.StreamGroup(topic, name).Describe();
            await context.Response.WriteAsJsonAsync(new
            {
                group = name,
                mode = "stream",
                lag = info.Partitions.Sum(p => p.Lag),
                pending = 0,
                generation = info.Generation,
                members = info.Members,
                partitions = info.Partitions,
            }, Json);
            return;
        }

        broker.Topics.Get(topic);
        throw new BrokerException(ErrorCode.UnknownMember, $"group '{name}' of '{topic}' does not exist");
    }

    private static string Route(HttpContext context, string name) => context.Request.RouteValues[name] as string ?? "";

    private static int? QueryInt(IQueryCollection query, string name, int min, int max)
    {
        if (!query.TryGetValue(name, out var text))
        {
            return null;
        }

        return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value) && value >= min && value <= max
            ? value
            : throw Bad($"{name} must be a whole number in {min}..{max}");
    }

    private static async Task<byte[]> ReadBodyAsync(HttpContext context, int limit)
    {
        using var buffer = new MemoryStream();
        var chunk = new byte[16 * 1024];
        int read;
        while ((read = await context.Request.Body.ReadAsync(chunk, context.RequestAborted)) > 0)
        {
            if (buffer.Length + read > limit)
            {
                throw new BrokerException(ErrorCode.TooLarge, $"body is over the {limit}-byte limit");
            }

            buffer.Write(chunk, 0, read);
        }

        return buffer.ToArray();
    }

    private static async Task<JsonDocument> ReadJsonAsync(HttpContext context)
    {
        var bytes = await ReadBodyAsync(context, 1 << 20);
        try
        {
            var document = JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 16 });
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                document.Dispose();
                throw Bad("the body must be a JSON object");
            }

            return document;
        }
        catch (JsonException ex)
        {
            throw Bad("the body is not valid JSON: " + ex.Message);
        }
    }

    private static BrokerException Bad(string message) => new(ErrorCode.BadRequest, message);
}
