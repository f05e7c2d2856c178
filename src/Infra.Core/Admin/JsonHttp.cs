using System.Runtime.InteropServices;
using System.Text.Encodings.Web;
using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace Infra.Core.Admin;

/// <summary>JSON bodies of the services' HTTP APIs: read with a nesting limit, written straight to the response.</summary>
public static class JsonHttp
{
    private static readonly JsonDocumentOptions DocumentOptions = new() { MaxDepth = 16 };
    private static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>
    /// The request body as JSON (nested at most 16 deep), or null when it is declared empty. Bad JSON
    /// throws <see cref="JsonException"/> — including a string or name whose escapes are not valid
    /// UTF-16 (a lone surrogate, <c>"\ud800"</c>): the parser takes it, and reading it as a .NET
    /// string later would throw InvalidOperationException, which the APIs answer with a 500.
    /// </summary>
    public static async Task<JsonDocument?> ReadAsync(HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (context.Request.ContentLength == 0)
        {
            return null;
        }

        JsonDocument document;
        try
        {
            document = await JsonDocument.ParseAsync(context.Request.Body, DocumentOptions, context.RequestAborted);
        }
        catch (IOException ex) when (ex is not BadHttpRequestException && !context.RequestAborted.IsCancellationRequested)
        {
            // Kestrel reports some malformed bodies as IOException, not BadHttpRequestException: a chunk
            // size that overflows ("Bad chunk size data"). The client's fault: 400, not 500.
            throw new BadHttpRequestException("the request body could not be read: " + ex.Message, StatusCodes.Status400BadRequest, ex);
        }

        try
        {
            CheckText(document.RootElement);
        }
        catch (InvalidOperationException ex)
        {
            document.Dispose();
            throw new JsonException("a string is not valid text: " + ex.Message, ex);
        }

        return document;
    }

    /// <summary>
    /// Decodes (and so checks) only the strings and names with escapes: one without a backslash is the
    /// UTF-8 the parser already validated, and decoding every string of every request would allocate
    /// each one a second time.
    /// </summary>
    private static void CheckText(JsonElement element)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.String:
                if (JsonMarshal.GetRawUtf8Value(element).Contains((byte)'\\'))
                {
                    _ = element.GetString();
                }

                break;
            case JsonValueKind.Array:
                foreach (var item in element.EnumerateArray())
                {
                    CheckText(item);
                }

                break;
            case JsonValueKind.Object:
                foreach (var property in element.EnumerateObject())
                {
                    if (JsonMarshal.GetRawUtf8PropertyName(property).Contains((byte)'\\'))
                    {
                        _ = property.Name;
                    }

                    CheckText(property.Value);
                }

                break;
        }
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
