using System.Net;
using System.Net.WebSockets;
using System.Security.Cryptography;
using System.Text;
using Infra.IntegrationTests.Harness;

namespace Infra.IntegrationTests;

public class LoadBalancerStreamingTests
{
    [Fact]
    public async Task Pipelined_requests_are_answered_in_order()
    {
        var backends = await Backend.StartManyAsync("b1", "b2");
        await using var lb = await LoadBalancer.StartAsync(backends.Select(b => b.Url));
        try
        {
            using var connection = await RawHttp.ConnectAsync(lb.Proxy);
            var requests = new StringBuilder();
            for (var i = 0; i < 10; i++)
            {
                // Slow ones first: a proxy that answered out of order would show it.
                requests.Append($"GET /delay?ms={(10 - i) * 20} HTTP/1.1\r\nHost: a\r\n\r\n");
            }

            requests.Append("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
            requests.Append("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
            await connection.SendAsync(requests.ToString());

            for (var i = 0; i < 10; i++)
            {
                var response = await connection.ReadResponseAsync();
                Assert.Equal(200, response.Status);
                Assert.StartsWith($"slept {(10 - i) * 20} ms", response.BodyText, StringComparison.Ordinal);
            }

            Assert.Equal("hello", (await connection.ReadResponseAsync()).BodyText);
            var last = await connection.ReadResponseAsync();
            Assert.StartsWith("hello from", last.BodyText, StringComparison.Ordinal);
            Assert.Equal("close", last.Header("Connection"));
            Assert.True(await connection.IsClosedAsync(TimeSpan.FromSeconds(5)));
        }
        finally
        {
            await LoadBalancerRoutingTests.DisposeAll(backends);
        }
    }

    [Fact]
    public async Task Chunked_bodies_stream_both_ways_with_extensions_dropped_and_trailers_kept()
    {
        var forwarded = new List<ScriptedRequest>();
        await using var scripted = ScriptedBackend.Create(async (stream, request) =>
        {
            forwarded.Add(request);
            var body = request.Body;
            var reply = $"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{body.Length:x}\r\n{body}\r\n3;ext=1\r\nend\r\n0\r\nX-Trailer: t\r\n\r\n";
            await stream.WriteAsync(Encoding.Latin1.GetBytes(reply));
        });
        await using var lb = await LoadBalancer.StartAsync([scripted.Url]);

        using var connection = await RawHttp.ConnectAsync(lb.Proxy);
        await connection.SendAsync("POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;name=v\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n");
        var response = await connection.ReadResponseAsync();

        Assert.Equal(200, response.Status);
        Assert.Equal("chunked", response.Header("Transfer-Encoding"));
        Assert.Equal("hello worldend", response.BodyText);
        Assert.Contains("Transfer-Encoding: chunked\r\n", forwarded[0].Head, StringComparison.Ordinal);
        Assert.Equal("hello world", forwarded[0].Body);
        Assert.Equal("5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n", forwarded[0].RawBody);

        // An HTTP/1.0 client cannot take chunked: it gets the bare body, then the connection closes.
        using var old = await RawHttp.ConnectAsync(lb.Proxy);
        await old.SendAsync("POST /up HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi");
        var plain = await old.ReadResponseAsync();
        Assert.Null(plain.Header("Transfer-Encoding"));
        Assert.Equal("close", plain.Header("Connection"));
        Assert.Equal("hiend", plain.BodyText);
    }

    [Fact]
    public async Task A_100_MB_upload_and_download_stream_through_in_bounded_memory()
    {
        var backend = await Backend.StartAsync("sink");
        await using var lb = await LoadBalancer.StartAsync([backend.Url]);
        try
        {
            (await lb.Client.GetAsync("/")).Dispose();
            var baseline = lb.Process.PeakResidentBytes();
            const long Size = 100L * 1024 * 1024;

            using var content = new PatternContent(Size);
            using var upload = await lb.Client.PostAsync("/sink", content);
            Assert.Equal(HttpStatusCode.OK, upload.StatusCode);
            var reply = (await upload.Content.ReadAsStringAsync()).Split(' ');
            Assert.Equal(Size.ToString(System.Globalization.CultureInfo.InvariantCulture), reply[0]);
            Assert.Equal(content.Sha256Hex, reply[1]);

            using var download = await lb.Client.GetAsync($"/big?bytes={Size}", HttpCompletionOption.ResponseHeadersRead);
            await using var stream = await download.Content.ReadAsStreamAsync();
            var buffer = new byte[1 << 16];
            long total = 0;
            int read;
            while ((read = await stream.ReadAsync(buffer)) > 0)
            {
                total += read;
            }

            Assert.Equal(Size, total);

            // Buffering either body whole would add at least 100 MB.
            var growth = lb.Process.PeakResidentBytes() - baseline;
            Assert.True(growth < 48L * 1024 * 1024, $"peak memory grew by {growth / (1024 * 1024)} MB while streaming 2 x 100 MB");
        }
        finally
        {
            await backend.DisposeAsync();
        }
    }

    [Fact]
    public async Task WebSocket_upgrades_become_a_two_way_tunnel()
    {
        var backends = await Backend.StartManyAsync("ws1", "ws2");
        await using var lb = await LoadBalancer.StartAsync(backends.Select(b => b.Url));
        try
        {
            using var socket = new ClientWebSocket();
            await socket.ConnectAsync(new Uri($"ws://127.0.0.1:{lb.Proxy.Port}/ws"), CancellationToken.None);
            var buffer = new byte[1024];
            string? backendName = null;
            for (var i = 0; i < 5; i++)
            {
                await socket.SendAsync(Encoding.UTF8.GetBytes($"message {i}"), WebSocketMessageType.Text, true, CancellationToken.None);
                var result = await socket.ReceiveAsync(buffer, CancellationToken.None);
                var text = Encoding.UTF8.GetString(buffer, 0, result.Count);
                backendName ??= text.Split(':')[0];
                Assert.Equal($"{backendName}: message {i}", text);
            }

            await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", CancellationToken.None);
            Assert.Equal(WebSocketState.Closed, socket.State);
            Assert.Contains("status_class=\"1xx\"", await lb.MetricsAsync(), StringComparison.Ordinal);
        }
        finally
        {
            await LoadBalancerRoutingTests.DisposeAll(backends);
        }
    }

    [Fact]
    public async Task Expect_100_continue_is_answered_before_the_body_is_sent()
    {
        var backend = await Backend.StartAsync("b1");
        await using var lb = await LoadBalancer.StartAsync([backend.Url]);
        try
        {
            using var connection = await RawHttp.ConnectAsync(lb.Proxy);
            await connection.SendAsync("POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
            var interim = await connection.ReadResponseAsync();
            Assert.Equal(100, interim.Status);

            await connection.SendAsync("hello");
            var final = await connection.ReadResponseAsync();
            Assert.Equal(200, final.Status);
            Assert.Equal("hello", final.BodyText);
        }
        finally
        {
            await backend.DisposeAsync();
        }
    }

    [Fact]
    public async Task Forwarding_headers_are_added_and_hop_by_hop_headers_stripped()
    {
        var backend = await Backend.StartAsync("b1");
        await using var lb = await LoadBalancer.StartAsync([backend.Url]);
        try
        {
            var response = await RawHttp.ExchangeAsync(lb.Proxy,
                "GET /headers HTTP/1.1\r\nHost: shop.example:8080\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n"
                + "Connection: keep-alive, X-Private\r\nX-Private: secret\r\nKeep-Alive: timeout=9\r\nTE: trailers\r\nX-Custom: kept\r\n\r\n");
            var seen = response.BodyText;

            Assert.Contains("X-Forwarded-For: 203.0.113.9, 127.0.0.1\n", seen, StringComparison.Ordinal);
            Assert.Contains("X-Forwarded-Proto: http\n", seen, StringComparison.Ordinal);
            Assert.Contains("X-Forwarded-Host: shop.example:8080\n", seen, StringComparison.Ordinal);
            Assert.Contains("Via: 1.1 infra-lb\n", seen, StringComparison.Ordinal);
            Assert.Contains("X-Custom: kept\n", seen, StringComparison.Ordinal);
            Assert.DoesNotContain("X-Private", seen, StringComparison.Ordinal);
            Assert.DoesNotContain("Keep-Alive", seen, StringComparison.Ordinal);
            Assert.DoesNotContain("TE:", seen, StringComparison.Ordinal);
            Assert.Contains("1.1 infra-lb", response.Header("Via"), StringComparison.Ordinal);
        }
        finally
        {
            await backend.DisposeAsync();
        }
    }

    [Fact]
    public async Task An_http10_request_without_host_reaches_the_backend_with_one()
    {
        var backend = await Backend.StartAsync("b1");
        await using var lb = await LoadBalancer.StartAsync([backend.Url]);
        try
        {
            var response = await RawHttp.ExchangeAsync(lb.Proxy, "GET /headers HTTP/1.0\r\n\r\n");
            Assert.Equal(200, response.Status);
            Assert.Contains($"Host: {new Uri(backend.Url).Authority}\n", response.BodyText, StringComparison.Ordinal);
            Assert.Contains("Via: 1.0 infra-lb\n", response.BodyText, StringComparison.Ordinal);
        }
        finally
        {
            await backend.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_slow_upload_is_not_a_backend_timeout()
    {
        var backend = await Backend.StartAsync("b1");
        await using var lb = await LoadBalancer.StartAsync([backend.Url], "--backend-timeout", "500ms", "--client-timeout", "5s");
        try
        {
            using var connection = await RawHttp.ConnectAsync(lb.Proxy);
            await connection.SendAsync("POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n");
            foreach (var piece in new[] { "a", "b", "c", "d", "e" })
            {
                await Task.Delay(400);
                await connection.SendAsync(piece);
            }

            var response = await connection.ReadResponseAsync();
            Assert.Equal(200, response.Status);
            Assert.StartsWith("5 ", response.BodyText, StringComparison.Ordinal);
            Assert.DoesNotContain("infra_lb_backend_ejections_total{", await lb.MetricsAsync(), StringComparison.Ordinal);
        }
        finally
        {
            await backend.DisposeAsync();
        }
    }

    [Fact]
    public async Task Stray_bytes_after_a_bodiless_response_never_reach_the_next_client()
    {
        await using var scripted = ScriptedBackend.Create(async (stream, request) =>
        {
            if (request.Head.StartsWith("HEAD ", StringComparison.Ordinal))
            {
                // A buggy backend: a body after a HEAD response, sent a moment later.
                await stream.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 27\r\n\r\n"u8.ToArray());
                await Task.Delay(50);
                await stream.WriteAsync("HTTP/1.1 200 OK\r\n\r\nstray"u8.ToArray());
                return;
            }

            await stream.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nright"u8.ToArray());
        });

        // The one backend must stay in rotation whatever the machine's load: health checks that time out
        // (150 ms) on a busy CI runner are not what this test is about (it once saw 503 there).
        await using var lb = await LoadBalancer.StartAsync([scripted.Url], "--health-fall", "100");

        using (var connection = await RawHttp.ConnectAsync(lb.Proxy))
        {
            await connection.SendAsync("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
            var head = await connection.ReadResponseAsync(headRequest: true);
            Assert.Equal(200, head.Status);
            Assert.Equal("27", head.Header("Content-Length"));
        }

        await Task.Delay(200);
        for (var i = 0; i < 3; i++)
        {
            var next = await RawHttp.ExchangeAsync(lb.Proxy, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            Assert.Equal("right", next.BodyText);
        }
    }

    [Fact]
    public async Task Keep_alive_connections_carry_many_requests_to_pooled_backend_connections()
    {
        var backend = await Backend.StartAsync("b1");
        await using var lb = await LoadBalancer.StartAsync([backend.Url]);
        try
        {
            using var connection = await RawHttp.ConnectAsync(lb.Proxy);
            for (var i = 0; i < 50; i++)
            {
                await connection.SendAsync("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
                Assert.Equal(200, (await connection.ReadResponseAsync()).Status);
            }

            var opened = (await lb.MetricsAsync()).Split('\n').Single(l => l.StartsWith("infra_lb_backend_connections_opened_total{", StringComparison.Ordinal));
            Assert.EndsWith(" 1", opened, StringComparison.Ordinal);

            // HEAD: a Content-Length but no body; the connection stays usable.
            await connection.SendAsync("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
            var head = await connection.ReadResponseAsync(headRequest: true);
            Assert.Equal(200, head.Status);
            await connection.SendAsync("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            Assert.Equal(200, (await connection.ReadResponseAsync()).Status);
        }
        finally
        {
            await backend.DisposeAsync();
        }
    }

    /// <summary>A large request body generated on the fly (never held whole), with its SHA-256.</summary>
    private sealed class PatternContent(long length) : HttpContent
    {
        private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);

        public string Sha256Hex { get; private set; } = string.Empty;

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            var block = new byte[256 * 1024];
            for (var i = 0; i < block.Length; i++)
            {
                block[i] = (byte)(i * 31 % 253);
            }

            for (long sent = 0; sent < length; sent += block.Length)
            {
                var count = (int)Math.Min(block.Length, length - sent);
                _hash.AppendData(block, 0, count);
                await stream.WriteAsync(block.AsMemory(0, count));
            }

            Sha256Hex = Convert.ToHexString(_hash.GetHashAndReset());
        }

        protected override bool TryComputeLength(out long size)
        {
            size = length;
            return true;
        }

        protected override void Dispose(bool disposing)
        {
            _hash.Dispose();
            base.Dispose(disposing);
        }
    }
}
