using System.Buffers;
using System.Globalization;
using System.Text;

namespace Infra.LoadBalancer.Http;

/// <summary>
/// Writes the heads the proxy sends: the request as forwarded to a backend, the response as relayed to
/// the client, and the proxy's own error responses. Hop-by-hop fields are dropped, framing and
/// connection handling are stated anew, forwarding fields are added.
/// </summary>
internal static class HeadWriter
{
    private static ReadOnlySpan<byte> Crlf => "\r\n"u8;

    private static ReadOnlySpan<byte> ViaToken => "1.1 infra-lb"u8;

    /// <summary>
    /// The request head for a backend: request line as received (always HTTP/1.1 upstream), end-to-end
    /// fields, then X-Forwarded-For (the client appended to any existing list), X-Forwarded-Proto and
    /// X-Forwarded-Host (replacing what a client might have forged), Via, and the framing. A request
    /// without Host (HTTP/1.0 allows that; HTTP/1.1 upstream does not) gets <c>defaultHost</c>.
    /// </summary>
    public static void WriteRequest(IBufferWriter<byte> output, HttpHead request, ReadOnlySpan<byte> clientAddress, ReadOnlySpan<byte> defaultHost, bool upgrade)
    {
        // Everything written comes from the head (fields, and at most once more the values merged
        // into X-Forwarded-For, Via and X-Forwarded-Host) plus fixed text: one span holds it all.
        var head = new SpanWriter(output.GetSpan((2 * request.Length) + clientAddress.Length + defaultHost.Length + 256));
        head.Write(request.Method8);
        head.Write(" "u8);

        // An absolute-form target (http://host/path) names the host itself: RFC 9112 §3.2.2 has a proxy
        // ignore the Host field then and use the target's. It goes upstream in origin-form with that Host
        // (backends that pick the virtual host from one or the other then agree).
        if (HttpHeadParser.SplitAbsoluteForm(request.Target, out var authority, out var path))
        {
            if (path.IsEmpty || path[0] != (byte)'/')
            {
                head.Write("/"u8);
            }

            head.Write(path);
        }
        else
        {
            head.Write(request.Target);
            authority = default;
        }

        head.Write(" HTTP/1.1\r\n"u8);

        var forwardedForCount = 0;
        var viaCount = 0;
        foreach (ref readonly var field in request.Fields)
        {
            switch (field.Kind)
            {
                case KnownHeader.XForwardedFor:
                    forwardedForCount++;
                    continue;
                case KnownHeader.Via:
                    viaCount++;
                    continue;
                case KnownHeader.XForwardedProto or KnownHeader.XForwardedHost:
                    continue;
                case KnownHeader.Host when !authority.IsEmpty:
                    continue; // replaced by the target's authority below
                case KnownHeader.Expect when request.ExpectContinue:
                    continue; // The proxy answers 100-continue itself.
            }

            if (KnownHeaders.IsHopByHop(field.Kind) || field.Nominated)
            {
                continue;
            }

            head.WriteField(request.Name(field), request.Value(field));
        }

        if (!authority.IsEmpty)
        {
            head.WriteField("Host"u8, authority);
        }
        else if (request.HostField < 0)
        {
            head.WriteField("Host"u8, defaultHost);
        }

        head.Write("X-Forwarded-For: "u8);
        if (forwardedForCount > 0)
        {
            WriteMergedValues(ref head, request, KnownHeader.XForwardedFor);
            head.Write(", "u8);
        }

        head.Write(clientAddress);
        head.Write(Crlf);
        head.Write("X-Forwarded-Proto: http\r\n"u8);
        if (!authority.IsEmpty)
        {
            head.WriteField("X-Forwarded-Host"u8, authority);
        }
        else if (request.HostField >= 0)
        {
            head.WriteField("X-Forwarded-Host"u8, request.Value(request.Field(request.HostField)));
        }

        WriteVia(ref head, request, viaCount, request.IsHttp11);
        if (request.Framing == BodyFraming.Chunked)
        {
            head.Write("Transfer-Encoding: chunked\r\n"u8);
        }

        if (upgrade)
        {
            head.Write("Connection: Upgrade\r\n"u8);
            head.WriteField("Upgrade"u8, request.Value(request.Field(request.UpgradeField)));
        }

        head.Write(Crlf);
        output.Advance(head.Position);
    }

    /// <summary>
    /// The response head for the client. <paramref name="chunked"/> restates chunked framing (1.1
    /// clients); <paramref name="keepAlive"/> false adds <c>Connection: close</c>.
    /// </summary>
    public static void WriteResponse(IBufferWriter<byte> output, HttpHead response, bool clientHttp11, bool keepAlive, bool chunked, bool upgrade)
    {
        var head = new SpanWriter(output.GetSpan((2 * response.Length) + 256));
        WriteStatusLine(ref head, response);
        var viaCount = 0;
        foreach (ref readonly var field in response.Fields)
        {
            if (field.Kind == KnownHeader.Via)
            {
                viaCount++;
                continue;
            }

            if (KnownHeaders.IsHopByHop(field.Kind) || field.Nominated)
            {
                continue;
            }

            head.WriteField(response.Name(field), response.Value(field));
        }

        WriteVia(ref head, response, viaCount, response.IsHttp11);
        if (chunked)
        {
            head.Write("Transfer-Encoding: chunked\r\n"u8);
        }

        if (upgrade)
        {
            head.Write("Connection: Upgrade\r\n"u8);
            if (response.UpgradeField >= 0)
            {
                head.WriteField("Upgrade"u8, response.Value(response.Field(response.UpgradeField)));
            }
        }
        else if (!keepAlive)
        {
            head.Write("Connection: close\r\n"u8);
        }
        else if (!clientHttp11)
        {
            head.Write("Connection: keep-alive\r\n"u8);
        }

        head.Write(Crlf);
        output.Advance(head.Position);
    }

    /// <summary>An interim (1xx) response, relayed as is apart from hop-by-hop fields.</summary>
    public static void WriteInterim(IBufferWriter<byte> output, HttpHead response)
    {
        var head = new SpanWriter(output.GetSpan((2 * response.Length) + 256));
        WriteStatusLine(ref head, response);
        foreach (ref readonly var field in response.Fields)
        {
            if (!KnownHeaders.IsHopByHop(field.Kind) && !field.Nominated)
            {
                head.WriteField(response.Name(field), response.Value(field));
            }
        }

        head.Write(Crlf);
        output.Advance(head.Position);
    }

    private static void WriteStatusLine(ref SpanWriter head, HttpHead response)
    {
        head.Write("HTTP/1.1 "u8);
        var status = response.StatusCode;
        Span<byte> code = [(byte)('0' + (status / 100)), (byte)('0' + (status / 10 % 10)), (byte)('0' + (status % 10)), (byte)' '];
        head.Write(code);
        head.Write(response.Reason);
        head.Write(Crlf);
    }

    /// <summary>A response the proxy makes itself: a short text body naming the reason.</summary>
    public static void WriteError(IBufferWriter<byte> output, int status, string detail, bool keepAlive, bool clientHttp11, TimeSpan? retryAfter, bool headOnly)
    {
        var phrase = ReasonPhrase(status);
        var body = string.Create(CultureInfo.InvariantCulture, $"{status} {phrase}: {detail}\n");
        output.Write("HTTP/1.1 "u8);
        WriteStatus(output, status);
        output.Write(" "u8);
        output.Write(Encoding.ASCII.GetBytes(phrase));
        output.Write("\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "u8);
        WriteNumber(output, body.Length);
        output.Write(Crlf);
        if (retryAfter is { } after)
        {
            output.Write("Retry-After: "u8);
            WriteNumber(output, Math.Max(1, (long)Math.Ceiling(after.TotalSeconds)));
            output.Write(Crlf);
        }

        output.Write(keepAlive ? (clientHttp11 ? ""u8 : "Connection: keep-alive\r\n"u8) : "Connection: close\r\n"u8);
        output.Write(Crlf);
        if (!headOnly)
        {
            output.Write(Encoding.ASCII.GetBytes(body));
        }
    }

    public static void WriteContinue(IBufferWriter<byte> output) => output.Write("HTTP/1.1 100 Continue\r\n\r\n"u8);

    public static string ReasonPhrase(int status) => status switch
    {
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        501 => "Not Implemented",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    };

    private static void WriteVia(ref SpanWriter head, HttpHead message, int existing, bool http11)
    {
        head.Write("Via: "u8);
        if (existing > 0)
        {
            WriteMergedValues(ref head, message, KnownHeader.Via);
            head.Write(", "u8);
        }

        head.Write(http11 ? ViaToken : "1.0 infra-lb"u8);
        head.Write(Crlf);
    }

    /// <summary>Every value of a repeated field as one comma-separated list (RFC 9110 §5.3).</summary>
    private static void WriteMergedValues(ref SpanWriter head, HttpHead message, KnownHeader kind)
    {
        var first = true;
        foreach (ref readonly var field in message.Fields)
        {
            if (field.Kind != kind)
            {
                continue;
            }

            if (!first)
            {
                head.Write(", "u8);
            }

            head.Write(message.Value(field));
            first = false;
        }
    }

    private static void WriteStatus(IBufferWriter<byte> output, int status)
    {
        var span = output.GetSpan(3);
        span[0] = (byte)('0' + (status / 100));
        span[1] = (byte)('0' + (status / 10 % 10));
        span[2] = (byte)('0' + (status % 10));
        output.Advance(3);
    }

    private static void WriteNumber(IBufferWriter<byte> output, long value)
    {
        var span = output.GetSpan(20);
        value.TryFormat(span, out var written, default, CultureInfo.InvariantCulture);
        output.Advance(written);
    }

    /// <summary>Writes into a span reserved up front; the caller advances the writer once.</summary>
    private ref struct SpanWriter(Span<byte> span)
    {
        private readonly Span<byte> _span = span;

        public int Position { get; private set; }

        public void Write(scoped ReadOnlySpan<byte> bytes)
        {
            bytes.CopyTo(_span[Position..]);
            Position += bytes.Length;
        }

        public void WriteField(scoped ReadOnlySpan<byte> name, scoped ReadOnlySpan<byte> value)
        {
            Write(name);
            Write(": "u8);
            Write(value);
            Write("\r\n"u8);
        }
    }
}
