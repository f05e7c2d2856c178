using System.Globalization;
using System.Net.WebSockets;
using System.Security.Cryptography;
using System.Text;

// A small HTTP backend the integration tests run as a real process (so it can be SIGKILLed).
// Usage: Infra.TestBackend --name b1 [--listen 127.0.0.1:0]
var name = "backend";
var listen = "127.0.0.1:0";
for (var i = 0; i + 1 < args.Length; i += 2)
{
    switch (args[i])
    {
        case "--name": name = args[i + 1]; break;
        case "--listen": listen = args[i + 1]; break;
        default: Console.Error.WriteLine($"unknown option {args[i]}"); return 2;
    }
}

var builder = WebApplication.CreateSlimBuilder();
builder.Logging.ClearProviders();
builder.WebHost.ConfigureKestrel(k =>
{
    k.Limits.MaxRequestBodySize = null;
    k.Limits.MinRequestBodyDataRate = null;
    k.AddServerHeader = false;
});
builder.WebHost.UseUrls("http://" + listen);
var app = builder.Build();
app.UseWebSockets();

var healthy = true;
long requests = 0;

app.Use(async (context, next) =>
{
    // Traffic only: the probes of this count and of health are not counted.
    if (context.Request.Path != "/requests" && context.Request.Path != "/healthz")
    {
        Interlocked.Increment(ref requests);
    }

    context.Response.Headers["X-Backend"] = name;
    await next(context);
});

app.MapMethods("/", ["GET", "HEAD"], () => $"hello from {name}\n");
app.MapGet("/healthz", (HttpContext context) =>
{
    context.Response.StatusCode = healthy ? 200 : 503;
    return healthy ? "ok\n" : "unhealthy\n";
});
app.MapPost("/health", (bool ok) =>
{
    healthy = ok;
    return Results.Text($"healthy={healthy}\n");
});
app.MapGet("/requests", () => Interlocked.Read(ref requests).ToString(CultureInfo.InvariantCulture));

// Request headers as received, one per line: checks what the proxy added and stripped.
app.MapMethods("/headers", ["GET", "POST"], (HttpContext context) =>
{
    var text = new StringBuilder();
    foreach (var header in context.Request.Headers)
    {
        foreach (var value in header.Value)
        {
            text.Append(header.Key).Append(": ").Append(value).Append('\n');
        }
    }

    return text.ToString();
});

// Streams the request body straight back, as it arrives.
app.MapMethods("/echo", ["POST", "PUT"], async (HttpContext context) =>
{
    context.Response.ContentType = "application/octet-stream";
    if (context.Request.ContentLength is { } length)
    {
        context.Response.ContentLength = length;
    }

    await context.Request.Body.CopyToAsync(context.Response.Body, context.RequestAborted);
});

// Reads the whole body and answers its length and SHA-256, without keeping it.
app.MapMethods("/sink", ["POST", "PUT"], async (HttpContext context) =>
{
    using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    var buffer = new byte[64 * 1024];
    long total = 0;
    int read;
    while ((read = await context.Request.Body.ReadAsync(buffer, context.RequestAborted)) > 0)
    {
        hash.AppendData(buffer, 0, read);
        total += read;
    }

    return $"{total} {Convert.ToHexString(hash.GetHashAndReset())}";
});

// A chunked response of `count` chunks of `size` bytes, flushed one by one.
app.MapGet("/chunked", async (HttpContext context, int? count, int? size) =>
{
    var chunk = Encoding.ASCII.GetBytes(new string('c', size ?? 10));
    for (var i = 0; i < (count ?? 5); i++)
    {
        await context.Response.Body.WriteAsync(chunk, context.RequestAborted);
        await context.Response.Body.FlushAsync(context.RequestAborted);
    }
});

// `bytes` of a repeating pattern with a Content-Length.
app.MapGet("/big", async (HttpContext context, long bytes) =>
{
    context.Response.ContentLength = bytes;
    var block = new byte[64 * 1024];
    for (var i = 0; i < block.Length; i++)
    {
        block[i] = (byte)(i % 251);
    }

    for (long sent = 0; sent < bytes; sent += block.Length)
    {
        await context.Response.Body.WriteAsync(block.AsMemory(0, (int)Math.Min(block.Length, bytes - sent)), context.RequestAborted);
    }
});

app.MapGet("/delay", async (int ms, HttpContext context) =>
{
    await Task.Delay(ms, context.RequestAborted);
    return $"slept {ms} ms on {name}\n";
});

app.MapPost("/delay", async (int ms, HttpContext context) =>
{
    await Task.Delay(ms, context.RequestAborted);
    return $"slept {ms} ms on {name}\n";
});

app.Map("/ws", async (HttpContext context) =>
{
    if (!context.WebSockets.IsWebSocketRequest)
    {
        context.Response.StatusCode = 400;
        return;
    }

    using var socket = await context.WebSockets.AcceptWebSocketAsync();
    var buffer = new byte[64 * 1024];
    while (true)
    {
        var result = await socket.ReceiveAsync(buffer, context.RequestAborted);
        if (result.MessageType == WebSocketMessageType.Close)
        {
            await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", context.RequestAborted);
            return;
        }

        var reply = Encoding.UTF8.GetBytes($"{name}: ").Concat(buffer.Take(result.Count)).ToArray();
        await socket.SendAsync(reply, result.MessageType, result.EndOfMessage, context.RequestAborted);
    }
});

await app.StartAsync();
foreach (var address in app.Urls)
{
    Console.WriteLine($"Listening on {address}");
}

await app.WaitForShutdownAsync();
return 0;
