using System.Collections.Concurrent;
using System.Net;
using System.Text;
using Infra.IntegrationTests.Harness;

namespace Infra.IntegrationTests;

/// <summary>Every error status the proxy makes itself, seen on the wire and in metrics.</summary>
public class LoadBalancerErrorTests
{
    public static TheoryData<string, int, string> MalformedRequests() => new()
    {
        { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "content_length_with_transfer_encoding" },
        { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd", 400, "multiple_content_length" },
        { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4x\r\n\r\nabcd", 400, "invalid_content_length" },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400, "invalid_transfer_encoding" },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX: 1\r\n folded\r\n\r\n", 400, "obsolete_line_folding" },
        { "GET / HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n", 400, "bare_carriage_return" },
        { "GET / HTTP/1.1\nHost: a\n\n", 400, "bare_line_feed" },
        { "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, "whitespace_before_colon" },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "invalid_chunk_size" },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n", 400, "invalid_chunk_terminator" },
        { "GET / HTTP/1.1\r\n\r\n", 400, "missing_host" },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, "unsupported_transfer_coding" },
        { "GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505, "unsupported_http_version" },
        { "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 405, "method_not_allowed" },
    };

    [Theory]
    [MemberData(nameof(MalformedRequests))]
    public async Task Malformed_requests_get_their_status_and_close_the_connection(string request, int status, string reason)
    {
        await using var scripted = ScriptedBackend.Create(async (stream, _) =>
        {
            // Any body is consumed by the proxy's framing; the backend answers what reached it.
            await stream.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"u8.ToArray());
        });
        await using var lb = await LoadBalancer.StartAsync([scripted.Url]);

        using var connection = await RawHttp.ConnectAsync(lb.Proxy);
        await connection.SendAsync(request);
        var response = await connection.ReadResponseAsync();

        Assert.Equal(status, response.Status);
        Assert.Contains(reason, response.BodyText, StringComparison.Ordinal);
        Assert.Equal("close", response.Header("Connection"));
        Assert.True(await connection.IsClosedAsync(TimeSpan.FromSeconds(5)));
        Assert.Contains($"infra_lb_rejections_total{{reason=\"{reason}\",status=\"{status}\"}} 1", await lb.MetricsAsync(), StringComparison.Ordinal);
        if (status != 400 || !reason.Contains("chunk", StringComparison.Ordinal))
        {
            Assert.Equal(0, scripted.Requests);
        }
    }

    [Fact]
    public async Task An_error_response_ends_with_a_clean_close_even_with_unread_input()
    {
        var backend = await Backend.StartAsync("b1");
        await using var lb = await LoadBalancer.StartAsync([backend.Url], "--max-body-size", "1k");
        try
        {
            // The proxy refuses the body at once. Closing a socket with unread input sends a reset,
            // which can destroy the 413 before a client reads it; the proxy lingers instead: FIN,
            // then it reads and drops the rest for a moment.
            using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
            await socket.ConnectAsync(lb.Proxy.Host, lb.Proxy.Port);
            await socket.SendAsync(Encoding.ASCII.GetBytes("POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 300000\r\n\r\n" + new string('x', 60_000)));
            await Task.Delay(300);

            var received = new MemoryStream();
            var buffer = new byte[4096];
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            int read;
            while ((read = await socket.ReceiveAsync(buffer, timeout.Token)) > 0)
            {
                received.Write(buffer, 0, read);
            }

            Assert.StartsWith("HTTP/1.1 413 ", Encoding.ASCII.GetString(received.ToArray()), StringComparison.Ordinal);
        }
        finally
        {
            await backend.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_backend_s_answer_before_the_body_is_read_reaches_the_client_through_a_lingering_close()
    {
        // From an audit: a backend that answers an upload at once (401, 413) without reading it. The proxy
        // relays the answer, stops the body and closes — with the client's upload still unread, which makes
        // the kernel send a reset that can destroy the relayed answer before the client reads it. It lingers
        // now, as it did only for its own error responses.
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        using var stop = new CancellationTokenSource();
        var backend = Task.Run(async () =>
        {
            using var client = await listener.AcceptTcpClientAsync(stop.Token);
            var stream = client.GetStream();
            var head = new List<byte>();
            var one = new byte[1];
            while (head.Count < 4 || !head.TakeLast(4).SequenceEqual("\r\n\r\n"u8.ToArray()))
            {
                if (await stream.ReadAsync(one, stop.Token) == 0)
                {
                    return;
                }

                head.Add(one[0]);
            }

            await stream.WriteAsync("HTTP/1.1 401 Unauthorized\r\nContent-Length: 7\r\n\r\ndenied\n"u8.ToArray(), stop.Token);
            await Task.Delay(TimeSpan.FromSeconds(5), stop.Token); // holds the connection, reads nothing more
        });
        var url = $"http://127.0.0.1:{((System.Net.IPEndPoint)listener.LocalEndpoint).Port}";
        await using var lb = await LoadBalancer.StartAsync([url], "--health-interval", "0");
        try
        {
            using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
            await socket.ConnectAsync(lb.Proxy.Host, lb.Proxy.Port);
            await socket.SendAsync(Encoding.ASCII.GetBytes("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 8000000\r\n\r\n"));
            var upload = Task.Run(async () =>
            {
                // Still uploading when the answer is back (the proxy stops reading, the rest stays unread).
                var chunk = new byte[64 * 1024];
                try
                {
                    for (var sent = 0; sent < 8_000_000; sent += chunk.Length)
                    {
                        await socket.SendAsync(chunk);
                    }
                }
                catch (System.Net.Sockets.SocketException)
                {
                    // The proxy closed: the rest of the upload has nowhere to go.
                }
            });

            var received = new MemoryStream();
            var buffer = new byte[4096];
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            try
            {
                int read;
                while ((read = await socket.ReceiveAsync(buffer, timeout.Token)) > 0)
                {
                    received.Write(buffer, 0, read);
                }
            }
            catch (System.Net.Sockets.SocketException ex)
            {
                Assert.Fail($"the connection was reset ({ex.SocketErrorCode}) after {received.Length} bytes of the answer");
            }

            Assert.StartsWith("HTTP/1.1 401 ", Encoding.ASCII.GetString(received.ToArray()), StringComparison.Ordinal);
            await upload.WaitAsync(TimeSpan.FromSeconds(10));
        }
        finally
        {
            await stop.CancelAsync();
            await Task.WhenAny(backend, Task.Delay(TimeSpan.FromSeconds(5)));
        }
    }

    [Fact]
    public async Task A_retry_after_a_pooled_connection_the_backend_closed_does_not_take_another_closed_one()
    {
        // From an audit: one backend closed its idle keep-alive connections (a graceful restart). A GET on a
        // pooled one (idle under a second: not polled) got no response; the retry went to the same backend
        // (the only one) and took the next pooled connection — closed as well: a 502 for an idempotent request.
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        using var stop = new CancellationTokenSource();
        var open = new ConcurrentBag<System.Net.Sockets.TcpClient>();
        async Task ServeAsync(System.Net.Sockets.TcpClient client)
        {
            var stream = client.GetStream();
            var buffer = new byte[4096];
            var pending = "";
            try
            {
                while (true)
                {
                    var read = await stream.ReadAsync(buffer, stop.Token);
                    if (read == 0)
                    {
                        return;
                    }

                    pending += Encoding.ASCII.GetString(buffer, 0, read);
                    while (pending.IndexOf("\r\n\r\n", StringComparison.Ordinal) is var end and >= 0)
                    {
                        pending = pending[(end + 4)..];
                        await Task.Delay(100, stop.Token); // slow enough that concurrent requests open several connections
                        await stream.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"u8.ToArray(), stop.Token);
                    }
                }
            }
            catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException)
            {
            }
        }

        var accepting = Task.Run(async () =>
        {
            try
            {
                while (true)
                {
                    var client = await listener.AcceptTcpClientAsync(stop.Token);
                    open.Add(client);
                    _ = ServeAsync(client);
                }
            }
            catch (OperationCanceledException)
            {
            }
        });
        var url = $"http://127.0.0.1:{((System.Net.IPEndPoint)listener.LocalEndpoint).Port}";
        await using var lb = await LoadBalancer.StartAsync([url], "--health-interval", "0", "--retries", "1");
        try
        {
            var warm = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => RawHttp.ExchangeAsync(lb.Proxy, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")));
            Assert.All(warm, r => Assert.Equal(200, r.Status));
            Assert.True(open.Count >= 2, $"{open.Count} pooled connections");
            foreach (var client in open)
            {
                client.Client.Shutdown(System.Net.Sockets.SocketShutdown.Both); // the backend closes them all (FIN)
            }

            await Task.Delay(100);
            var response = await RawHttp.ExchangeAsync(lb.Proxy, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            Assert.Equal(200, response.Status);
        }
        finally
        {
            await stop.CancelAsync();
            await Task.WhenAny(accepting, Task.Delay(TimeSpan.FromSeconds(5)));
            foreach (var client in open)
            {
                client.Dispose();
            }
        }
    }

    [Fact]
    public async Task An_h2c_upgrade_goes_on_as_a_plain_request_and_opens_no_tunnel()
    {
        // From an audit: any Upgrade was tunnelled, so h2c to a lenient backend opened an HTTP/2 connection in
        // which further requests passed the proxy unseen (no limits, no X-Forwarded-For, no access log).
        string? seen = null;
        await using var scripted = ScriptedBackend.Create(async (stream, request) =>
        {
            seen = request.Head;
            await stream.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"u8.ToArray());
        });
        await using var lb = await LoadBalancer.StartAsync([scripted.Url]);
        var response = await RawHttp.ExchangeAsync(lb.Proxy,
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n");
        Assert.Equal(200, response.Status);
        Assert.NotNull(seen);
        Assert.DoesNotContain("Upgrade", seen, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("HTTP2-Settings", seen, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task A_client_that_never_finishes_its_head_gets_408()
    {
        var backend = await Backend.StartAsync("b1");
        await using var lb = await LoadBalancer.StartAsync([backend.Url], "--header-timeout", "1s");
        try
        {
            using var slowloris = await RawHttp.ConnectAsync(lb.Proxy);
            await slowloris.SendAsync("GET / HTTP/1.1\r\nHost: a\r\n");
            for (var i = 0; i < 3; i++)
            {
                await Task.Delay(200);
                await slowloris.SendAsync($"X-Drip-{i}: 1\r\n");
            }

            var response = await slowloris.ReadResponseAsync(timeout: TimeSpan.FromSeconds(10));
            Assert.Equal(408, response.Status);
            Assert.True(await slowloris.IsClosedAsync(TimeSpan.FromSeconds(5)));
            Assert.Contains("reason=\"header_timeout\",status=\"408\"", await lb.MetricsAsync(), StringComparison.Ordinal);

            // An idle connection that never sent a byte is closed without a response.
            using var idle = await RawHttp.ConnectAsync(lb.Proxy);
            Assert.True(await idle.IsClosedAsync(TimeSpan.FromSeconds(10)));
        }
        finally
        {
            await backend.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_body_over_the_limit_gets_413_whether_declared_or_chunked()
    {
        var backend = await Backend.StartAsync("b1");
        await using var lb = await LoadBalancer.StartAsync([backend.Url], "--max-body-size", "1k");
        try
        {
            var declared = await RawHttp.ExchangeAsync(lb.Proxy, "POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\n\r\n");
            Assert.Equal(413, declared.Status);

            var chunk = new string('x', 600);
            var chunked = await RawHttp.ExchangeAsync(lb.Proxy,
                $"POST /sink HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n");
            Assert.Equal(413, chunked.Status);
            Assert.Contains("body_too_large", chunked.BodyText, StringComparison.Ordinal);

            var fits = await RawHttp.ExchangeAsync(lb.Proxy, $"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 1024\r\n\r\n{new string('y', 1024)}");
            Assert.Equal(200, fits.Status);
            Assert.StartsWith("1024 ", fits.BodyText, StringComparison.Ordinal);
        }
        finally
        {
            await backend.DisposeAsync();
        }
    }

    [Fact]
    public async Task Oversized_request_lines_and_headers_get_414_and_431()
    {
        var backend = await Backend.StartAsync("b1");
        await using var lb = await LoadBalancer.StartAsync([backend.Url], "--max-request-line", "1k", "--max-header-size", "2k", "--max-headers", "20");
        try
        {
            var longUri = await RawHttp.ExchangeAsync(lb.Proxy, $"GET /{new string('u', 2000)} HTTP/1.1\r\nHost: a\r\n\r\n");
            Assert.Equal(414, longUri.Status);

            var bigHeader = await RawHttp.ExchangeAsync(lb.Proxy, $"GET / HTTP/1.1\r\nHost: a\r\nX-Big: {new string('h', 3000)}\r\n\r\n");
            Assert.Equal(431, bigHeader.Status);

            var many = string.Concat(Enumerable.Range(0, 25).Select(i => $"X-{i}: v\r\n"));
            var manyHeaders = await RawHttp.ExchangeAsync(lb.Proxy, $"GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
            Assert.Equal(431, manyHeaders.Status);

            var metrics = await lb.MetricsAsync();
            Assert.Contains("reason=\"request_line_too_long\",status=\"414\"", metrics, StringComparison.Ordinal);
            Assert.Contains("reason=\"headers_too_large\",status=\"431\"", metrics, StringComparison.Ordinal);
            Assert.Contains("reason=\"too_many_headers\",status=\"431\"", metrics, StringComparison.Ordinal);
        }
        finally
        {
            await backend.DisposeAsync();
        }
    }

    public static TheoryData<string, string> BrokenBackends() => new()
    {
        { "garbage instead of a status line", "NOT HTTP AT ALL\r\n\r\n" },
        { "both Content-Length and chunked", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n" },
        { "a head cut short", "HTTP/1.1 200 OK\r\nContent-Le" },
        { "nothing at all", "" },
        { "an invalid header", "HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n" },
    };

    [Theory]
    [MemberData(nameof(BrokenBackends))]
    public async Task A_malformed_or_early_closed_backend_response_is_502(string what, string reply)
    {
        await using var scripted = ScriptedBackend.Create(async (stream, _) =>
        {
            await stream.WriteAsync(Encoding.Latin1.GetBytes(reply));
            stream.Close();
        });

        // Retries off: a GET that gets nothing would otherwise be tried again (covered elsewhere).
        await using var lb = await LoadBalancer.StartAsync([scripted.Url], "--retries", "0");
        var response = await RawHttp.ExchangeAsync(lb.Proxy, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");

        Assert.True(response.Status == 502, $"{what}: got {response.Status}");
        Assert.Contains("status=\"502\"", await lb.MetricsAsync(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_body_cut_short_by_the_backend_closes_the_client_connection()
    {
        await using var scripted = ScriptedBackend.Create(async (stream, _) =>
        {
            await stream.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part"u8.ToArray());
            stream.Close();
        });
        await using var lb = await LoadBalancer.StartAsync([scripted.Url]);

        using var connection = await RawHttp.ConnectAsync(lb.Proxy);
        await connection.SendAsync("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        await Assert.ThrowsAsync<IOException>(() => connection.ReadResponseAsync());
    }

    [Fact]
    public async Task No_healthy_backend_is_503_with_retry_after()
    {
        var backend = await Backend.StartAsync("b1");
        await using var lb = await LoadBalancer.StartAsync([backend.Url]);
        try
        {
            await backend.SetHealthyAsync(false);
            await Eventually.HoldsAsync(async () => (await lb.BackendAsync(backend.Url))!.State == "unhealthy", "backend marked unhealthy");

            var response = await RawHttp.ExchangeAsync(lb.Proxy, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");

            Assert.Equal(503, response.Status);
            Assert.NotNull(response.Header("Retry-After"));
            Assert.Contains("reason=\"no_backend\",status=\"503\"", await lb.MetricsAsync(), StringComparison.Ordinal);
        }
        finally
        {
            await backend.DisposeAsync();
        }

        await using var empty = await LoadBalancer.StartAsync([]);
        using var none = await empty.Client.GetAsync("/");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, none.StatusCode);
        Assert.True(none.Headers.RetryAfter is not null);
    }

    [Fact]
    public async Task A_backend_slower_than_the_backend_timeout_is_504()
    {
        var backend = await Backend.StartAsync("slow");
        await using var lb = await LoadBalancer.StartAsync([backend.Url], "--backend-timeout", "500ms");
        try
        {
            using var response = await lb.Client.GetAsync("/delay?ms=5000");
            Assert.Equal(HttpStatusCode.GatewayTimeout, response.StatusCode);
            Assert.Contains("reason=\"backend_timeout\",status=\"504\"", await lb.MetricsAsync(), StringComparison.Ordinal);

            // The client connection carries on.
            using var quick = await lb.Client.GetAsync("/");
            Assert.Equal(HttpStatusCode.OK, quick.StatusCode);
        }
        finally
        {
            await backend.DisposeAsync();
        }
    }
}
