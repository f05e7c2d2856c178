using System.Buffers;
using System.Text;
using Infra.LoadBalancer.Http;

namespace Infra.LoadBalancer.Tests.Http;

public class HeadWriterTests
{
    [Fact]
    public void Forwards_end_to_end_fields_and_adds_forwarding_fields()
    {
        var head = Request("GET /p?q=1 HTTP/1.1\r\nHost: shop.example\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.1\r\n"
            + "X-Forwarded-For: 10.0.0.2\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: forged\r\nVia: 1.1 cdn\r\n\r\n");

        var text = WriteRequest(head, "192.0.2.7");

        Assert.StartsWith("GET /p?q=1 HTTP/1.1\r\n", text);
        Assert.Contains("Host: shop.example\r\n", text);
        Assert.DoesNotContain("backend:9001", text);
        Assert.Contains("Accept: */*\r\n", text);
        Assert.Contains("X-Forwarded-For: 10.0.0.1, 10.0.0.2, 192.0.2.7\r\n", text);
        Assert.Contains("X-Forwarded-Proto: http\r\n", text);
        Assert.Contains("X-Forwarded-Host: shop.example\r\n", text);
        Assert.Contains("Via: 1.1 cdn, 1.1 infra-lb\r\n", text);
        Assert.DoesNotContain("forged", text);
        Assert.DoesNotContain("https", text);
        Assert.Equal(1, Count(text, "X-Forwarded-For"));
        Assert.EndsWith("\r\n\r\n", text);
    }

    [Fact]
    public void Strips_hop_by_hop_fields_and_those_connection_names()
    {
        var head = Request("POST / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n"
            + "Proxy-Connection: keep-alive\r\nTE: trailers\r\nX-Hop: secret\r\nUpgrade: h2c\r\nX-End: kept\r\n"
            + "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");

        var text = WriteRequest(head, "127.0.0.1");

        foreach (var gone in new[] { "Connection:", "Keep-Alive", "Proxy-Connection", "TE:", "X-Hop", "Upgrade", "Expect" })
        {
            Assert.DoesNotContain(gone, text, StringComparison.OrdinalIgnoreCase);
        }

        Assert.Contains("X-End: kept\r\n", text);
        Assert.Equal(1, Count(text, "Transfer-Encoding: chunked\r\n"));
    }

    [Fact]
    public void Keeps_content_length_and_restates_an_upgrade()
    {
        var post = WriteRequest(Request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"), "::1");
        Assert.Contains("Content-Length: 3\r\n", post);
        Assert.Contains("X-Forwarded-For: ::1\r\n", post);

        var upgrade = Request("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n");
        var text = WriteRequest(upgrade, "127.0.0.1", upgrade: true);
        Assert.Contains("Connection: Upgrade\r\nUpgrade: websocket\r\n", text);
        Assert.Contains("Sec-WebSocket-Key: k\r\n", text);
    }

    [Fact]
    public void An_http10_request_goes_upstream_as_http11_with_a_1_0_via()
    {
        var text = WriteRequest(Request("GET / HTTP/1.0\r\n\r\n"), "127.0.0.1");
        Assert.StartsWith("GET / HTTP/1.1\r\n", text);
        Assert.Contains("Via: 1.0 infra-lb\r\n", text);
        Assert.Contains("Host: backend:9001\r\n", text);
        Assert.DoesNotContain("X-Forwarded-Host", text);
    }

    [Fact]
    public void Rewrites_the_response_head_for_the_client()
    {
        var response = Response("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive, X-Internal\r\n"
            + "X-Internal: 1\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\n\r\n");
        var output = new ArrayBufferWriter<byte>();

        HeadWriter.WriteResponse(output, response, clientHttp11: true, keepAlive: true, chunked: true, upgrade: false);
        var text = Encoding.ASCII.GetString(output.WrittenSpan);

        Assert.StartsWith("HTTP/1.1 200 OK\r\n", text);
        Assert.Contains("Content-Type: text/plain\r\n", text);
        Assert.Contains("Transfer-Encoding: chunked\r\n", text);
        Assert.Contains("Via: 1.1 infra-lb\r\n", text);
        Assert.DoesNotContain("X-Internal", text);
        Assert.DoesNotContain("Keep-Alive", text);
        Assert.DoesNotContain("Connection", text);
    }

    [Theory]
    [InlineData(true, true, "")]
    [InlineData(true, false, "Connection: close\r\n")]
    [InlineData(false, true, "Connection: keep-alive\r\n")]
    [InlineData(false, false, "Connection: close\r\n")]
    public void States_the_connection_outcome(bool http11, bool keepAlive, string expected)
    {
        var output = new ArrayBufferWriter<byte>();
        HeadWriter.WriteResponse(output, Response("HTTP/1.1 204 No Content\r\n\r\n"), http11, keepAlive, chunked: false, upgrade: false);
        var text = Encoding.ASCII.GetString(output.WrittenSpan);

        if (expected.Length == 0)
        {
            Assert.DoesNotContain("Connection", text);
        }
        else
        {
            Assert.Contains(expected, text);
        }
    }

    [Fact]
    public void Error_responses_carry_length_reason_and_retry_after()
    {
        var output = new ArrayBufferWriter<byte>();
        HeadWriter.WriteError(output, 503, "no backend available", keepAlive: false, clientHttp11: true, TimeSpan.FromSeconds(2), headOnly: false);
        var text = Encoding.ASCII.GetString(output.WrittenSpan);
        var split = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        var body = text[(split + 4)..];

        Assert.StartsWith("HTTP/1.1 503 Service Unavailable\r\n", text);
        Assert.Contains("Retry-After: 2\r\n", text);
        Assert.Contains("Connection: close\r\n", text);
        Assert.Contains($"Content-Length: {body.Length}\r\n", text);
        Assert.Equal("503 Service Unavailable: no backend available\n", body);
    }

    [Theory]
    [InlineData("http://admin.internal/x?y=1", "/x?y=1", "admin.internal")]
    [InlineData("HTTP://Admin.Internal:8080", "/", "Admin.Internal:8080")]
    [InlineData("https://a.example?q=1", "/?q=1", "a.example")]
    public void An_absolute_form_target_goes_upstream_in_origin_form_with_its_own_host(string target, string path, string host)
    {
        // RFC 9112 §3.2.2: the target's authority replaces the Host field. Forwarded as it came, a backend that
        // picks the virtual host from the target (Go, nginx) and one that reads Host (most others) disagreed,
        // and X-Forwarded-Host named the other one.
        var text = WriteRequest(Request($"GET {target} HTTP/1.1\r\nHost: www.public.example\r\nAccept: */*\r\n\r\n"), "192.0.2.7");
        Assert.StartsWith($"GET {path} HTTP/1.1\r\n", text);
        Assert.Contains($"Host: {host}\r\n", text);
        Assert.Contains($"X-Forwarded-Host: {host}\r\n", text);
        Assert.Equal(1, Count(text, "\r\nHost: "));
        Assert.DoesNotContain("www.public.example", text);
        Assert.Contains("Accept: */*\r\n", text);
    }

    [Theory]
    [InlineData("websocket", true)]
    [InlineData("WebSocket", true)]
    [InlineData("websocket/13", true)]
    [InlineData("h2c, websocket", true)]
    [InlineData("h2c", false)]
    [InlineData("TLS/1.0", false)]
    [InlineData("websockets", false)]
    [InlineData("", false)]
    public void Only_websocket_upgrades_are_tunnelled(string upgrade, bool tunnelled) =>
        Assert.Equal(tunnelled, Infra.LoadBalancer.Proxy.ClientSession.IsWebSocket(Encoding.ASCII.GetBytes(upgrade)));

    [Fact]
    public void An_interim_response_whose_fields_grow_when_restated_fits_its_buffer()
    {
        // "Link:<…>" goes out as "Link: <…>": a byte more per field, and the status line gains one when it
        // has no reason. The buffer was the head's length + 64: 90 such fields threw (the client lost its
        // connection with no answer).
        var text = "HTTP/1.1 103\r\n" + string.Concat(Enumerable.Repeat("Link:</style.css>; rel=preload\r\n", 90)) + "\r\n";
        var writer = new ExactWriter();
        HeadWriter.WriteInterim(writer, Response(text));
        var written = Encoding.ASCII.GetString([.. writer.Written]);
        Assert.StartsWith("HTTP/1.1 103 ", written);
        Assert.Equal(90, Count(written, "Link: </style.css>; rel=preload\r\n"));
        Assert.EndsWith("\r\n\r\n", written);
    }

    /// <summary>Hands out exactly the bytes asked for (as a rented buffer near its end does), no more.</summary>
    private sealed class ExactWriter : IBufferWriter<byte>
    {
        private byte[] _pending = [];

        public List<byte> Written { get; } = [];

        public void Advance(int count) => Written.AddRange(_pending.AsSpan(0, count).ToArray());

        public Memory<byte> GetMemory(int sizeHint = 0) => _pending = new byte[Math.Max(sizeHint, 1)];

        public Span<byte> GetSpan(int sizeHint = 0) => GetMemory(sizeHint).Span;
    }

    private static string WriteRequest(HttpHead head, string client, bool upgrade = false)
    {
        var output = new ArrayBufferWriter<byte>();
        HeadWriter.WriteRequest(output, head, Encoding.ASCII.GetBytes(client), "backend:9001"u8, upgrade);
        return Encoding.ASCII.GetString(output.WrittenSpan);
    }

    private static HttpHead Request(string text) => HttpHeadParserTests.ParseRequest(new ReadOnlySequence<byte>(Encoding.ASCII.GetBytes(text))).Head;

    private static HttpHead Response(string text)
    {
        var head = new HttpHead();
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(Encoding.ASCII.GetBytes(text)));
        Assert.True(HttpHeadParser.TryParseResponse(ref reader, head, new HeadLimits(8192, 8192, 100)));
        HeadAnalyzer.AnalyzeResponse(head, Infra.LoadBalancer.Http.HttpMethod.Get);
        return head;
    }

    private static int Count(string text, string value)
    {
        var count = 0;
        for (var i = text.IndexOf(value, StringComparison.Ordinal); i >= 0; i = text.IndexOf(value, i + 1, StringComparison.Ordinal))
        {
            count++;
        }

        return count;
    }
}
