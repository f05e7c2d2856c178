using System.Text.Encodings.Web;
using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace Infra.Core.Admin;

/// <summary>JSON bodies of the services' HTTP APIs: read with a nesting limit, written straight to the response.</summary>
public static class JsonHttp
{
    private static readonly JsonDocumentOptions DocumentOptions = new() { MaxDepth = 16 };
    private static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>The request body as JSON (nested at most 16 deep), or null when it is declared empty. Bad JSON throws <see cref="JsonException"/>.</summary>
    public static async Task<JsonDocument?> ReadAsync(HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return context.Request.ContentLength == 0 ? null : await JsonDocument.ParseAsync(context.Request.Body, DocumentOptions, context.RequestAborted);
    }

    public static async Task WriteAsync(HttpContext context, Action<Utf8JsonWriter> write)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(write);
        context.Response.ContentType = "application/json";
        await using var writer = new Utf8JsonWriter(context.Response.BodyWriter, WriterOptions);
        write(writer);
        await writer.FlushAsync(context.RequestAborted);
    }
}
