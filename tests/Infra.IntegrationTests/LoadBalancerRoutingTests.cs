using System.Net;
using System.Net.Http.Json;
using Infra.IntegrationTests.Harness;

namespace Infra.IntegrationTests;

public class LoadBalancerRoutingTests
{
    [Fact]
    public async Task Round_robin_spreads_requests_evenly()
    {
        var backends = await Backend.StartManyAsync("b1", "b2", "b3");
        await using var lb = await LoadBalancer.StartAsync(backends.Select(b => b.Url));
        try
        {
            var counts = new Dictionary<string, int>();
            for (var i = 0; i < 90; i++)
            {
                using var response = await lb.Client.GetAsync("/");
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                var name = response.Headers.GetValues("X-Backend").Single();
                counts[name] = counts.GetValueOrDefault(name) + 1;
            }

            Assert.Equal(30, counts["b1"]);
            Assert.Equal(30, counts["b2"]);
            Assert.Equal(30, counts["b3"]);
            var infos = await lb.BackendsAsync();
            Assert.All(infos, b => Assert.Equal(30, b.Requests));
            Assert.All(infos, b => Assert.Equal("healthy", b.State));
        }
        finally
        {
            await DisposeAll(backends);
        }
    }

    [Fact]
    public async Task Weighted_round_robin_follows_weights()
    {
        var backends = await Backend.StartManyAsync("heavy", "light");
        await using var lb = await LoadBalancer.StartAsync(
            [backends[0].Url + ",weight=3", backends[1].Url], "--algorithm", "weighted-round-robin");
        try
        {
            var heavy = 0;
            for (var i = 0; i < 80; i++)
            {
                using var response = await lb.Client.GetAsync("/");
                heavy += response.Headers.GetValues("X-Backend").Single() == "heavy" ? 1 : 0;
            }

            Assert.Equal(60, heavy);
        }
        finally
        {
            await DisposeAll(backends);
        }
    }

    [Fact]
    public async Task Least_connections_sends_new_requests_away_from_a_busy_backend()
    {
        var backends = await Backend.StartManyAsync("busy", "free");
        await using var lb = await LoadBalancer.StartAsync(backends.Select(b => b.Url), "--algorithm", "least-connections");
        try
        {
            // Occupy one backend with slow requests, then check that quick ones avoid it.
            var slow = Enumerable.Range(0, 2).Select(_ => lb.Client.GetStringAsync("/delay?ms=2500")).ToList();
            await Eventually.HoldsAsync(async () => (await lb.BackendsAsync()).Sum(b => b.InFlight) == 2, "two slow requests in flight");
            var busy = (await lb.BackendsAsync()).OrderByDescending(b => b.InFlight).First();
            if (busy.InFlight == 2)
            {
                for (var i = 0; i < 10; i++)
                {
                    using var response = await lb.Client.GetAsync("/");
                    Assert.NotEqual(busy.Address, backends.Single(b => b.Name == response.Headers.GetValues("X-Backend").Single()).Url);
                }
            }
            else
            {
                // One slow request each: the quick ones share both.
                Assert.All(await lb.BackendsAsync(), b => Assert.Equal(1, b.InFlight));
            }

            await Task.WhenAll(slow);
        }
        finally
        {
            await DisposeAll(backends);
        }
    }

    [Fact]
    public async Task Admin_api_adds_reweighs_drains_and_removes_backends()
    {
        var backends = await Backend.StartManyAsync("b1", "b2");
        await using var lb = await LoadBalancer.StartAsync([backends[0].Url]);
        try
        {
            Assert.Single(await lb.BackendsAsync());

            using var added = await lb.AdminClient.PostAsJsonAsync("/backends", new { address = backends[1].Url, weight = 2 });
            Assert.Equal(HttpStatusCode.Created, added.StatusCode);
            var info = await added.Content.ReadFromJsonAsync<BackendInfo>();
            Assert.Equal(backends[1].Url, info!.Address);
            Assert.Equal(2, info.Weight);

            await Eventually.HoldsAsync(async () =>
            {
                using var response = await lb.Client.GetAsync("/");
                return response.Headers.GetValues("X-Backend").Single() == "b2";
            }, "traffic reaches the added backend");

            using var duplicate = await lb.AdminClient.PostAsJsonAsync("/backends", new { address = backends[1].Url + "/" });
            Assert.Equal(HttpStatusCode.Conflict, duplicate.StatusCode);

            using var reweighed = await lb.AdminClient.PutAsJsonAsync("/backends", new { address = backends[1].Url, weight = 7 });
            Assert.Equal(HttpStatusCode.OK, reweighed.StatusCode);
            Assert.Equal(7, (await lb.BackendAsync(backends[1].Url))!.Weight);

            using var drain = await lb.AdminClient.PutAsJsonAsync("/backends", new { address = backends[1].Url, state = "draining" });
            Assert.Equal(HttpStatusCode.OK, drain.StatusCode);
            Assert.Equal("draining", (await lb.BackendAsync(backends[1].Url))!.State);
            for (var i = 0; i < 10; i++)
            {
                using var response = await lb.Client.GetAsync("/");
                Assert.Equal("b1", response.Headers.GetValues("X-Backend").Single());
            }

            using var undrain = await lb.AdminClient.PutAsJsonAsync("/backends", new { address = backends[1].Url, state = "healthy" });
            Assert.Equal("healthy", (await lb.BackendAsync(backends[1].Url))!.State);

            using var removed = await lb.AdminClient.DeleteAsync("/backends?address=" + Uri.EscapeDataString(backends[1].Url));
            Assert.Equal(HttpStatusCode.OK, removed.StatusCode);
            Assert.Contains("\"drained\":true", await removed.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            Assert.Equal([backends[0].Url], (await lb.BackendsAsync()).Select(b => b.Address));

            using var missing = await lb.AdminClient.DeleteAsync("/backends?address=" + Uri.EscapeDataString(backends[1].Url));
            Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        }
        finally
        {
            await DisposeAll(backends);
        }
    }

    [Theory]
    [InlineData("POST", "{\"address\":\"ftp://x:1\"}", HttpStatusCode.BadRequest)]
    [InlineData("POST", "{\"address\":\"http://127.0.0.1:1\",\"weight\":1000}", HttpStatusCode.BadRequest)]
    [InlineData("POST", "{\"address\":\"http://127.0.0.1:1\",\"wieght\":2}", HttpStatusCode.BadRequest)]
    [InlineData("POST", "{not json", HttpStatusCode.BadRequest)]
    [InlineData("POST", "[]", HttpStatusCode.BadRequest)]
    [InlineData("POST", "null", HttpStatusCode.BadRequest)]
    [InlineData("PUT", "{\"address\":\"http://127.0.0.1:2\",\"weight\":1}", HttpStatusCode.NotFound)]
    [InlineData("PUT", "{\"address\":\"http://127.0.0.1:1\",\"state\":\"asleep\"}", HttpStatusCode.BadRequest)]
    [InlineData("DELETE", "", HttpStatusCode.BadRequest)]
    public async Task Admin_api_rejects_bad_input_clearly(string method, string body, HttpStatusCode expected)
    {
        await using var lb = await LoadBalancer.StartAsync(["http://127.0.0.1:1"], "--health-interval", "0");
        using var request = new HttpRequestMessage(new HttpMethod(method), "/backends")
        {
            Content = body.Length > 0 ? new StringContent(body, System.Text.Encoding.UTF8, "application/json") : null,
        };

        using var response = await lb.AdminClient.SendAsync(request);

        Assert.Equal(expected, response.StatusCode);
        Assert.Contains("\"error\"", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Single(await lb.BackendsAsync());
    }

    [Fact]
    public async Task Admin_token_guards_changes_but_not_reads()
    {
        await using var lb = await LoadBalancer.StartAsync(["http://127.0.0.1:1"], "--health-interval", "0", "--admin-token", "t0ken");

        using var anonymous = await lb.AdminClient.PostAsJsonAsync("/backends", new { address = "http://127.0.0.1:2" });
        Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
        using var wrong = new HttpRequestMessage(HttpMethod.Delete, "/backends?address=http://127.0.0.1:1");
        wrong.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", "guess");
        Assert.Equal(HttpStatusCode.Unauthorized, (await lb.AdminClient.SendAsync(wrong)).StatusCode);
        Assert.Single(await lb.BackendsAsync());

        using var authorized = new HttpRequestMessage(HttpMethod.Post, "/backends") { Content = JsonContent.Create(new { address = "http://127.0.0.1:2" }) };
        authorized.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", "t0ken");
        Assert.Equal(HttpStatusCode.Created, (await lb.AdminClient.SendAsync(authorized)).StatusCode);
        Assert.Equal(2, (await lb.BackendsAsync()).Length);
    }

    [Fact]
    public async Task Healthz_and_metrics_report_the_proxy_state()
    {
        var backend = await Backend.StartAsync("only");
        await using var lb = await LoadBalancer.StartAsync([backend.Url]);
        try
        {
            Assert.Equal(HttpStatusCode.OK, (await lb.AdminClient.GetAsync("/healthz")).StatusCode);
            for (var i = 0; i < 5; i++)
            {
                (await lb.Client.GetAsync("/")).Dispose();
            }

            (await lb.Client.GetAsync("/missing-page")).Dispose();
            using var bad = await RawHttp.ConnectAsync(lb.Proxy);
            await bad.SendAsync("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
            Assert.Equal(400, (await bad.ReadResponseAsync()).Status);

            var metrics = await lb.MetricsAsync();
            Assert.Contains($"infra_lb_requests_total{{backend=\"{backend.Url}\",status_class=\"2xx\"}} 5", metrics, StringComparison.Ordinal);
            Assert.Contains($"infra_lb_requests_total{{backend=\"{backend.Url}\",status_class=\"4xx\"}} 1", metrics, StringComparison.Ordinal);
            Assert.Contains("infra_lb_requests_total{backend=\"none\",status_class=\"4xx\"} 1", metrics, StringComparison.Ordinal);
            Assert.Contains("infra_lb_rejections_total{reason=\"multiple_content_length\",status=\"400\"} 1", metrics, StringComparison.Ordinal);
            Assert.Contains($"infra_lb_backend_state{{backend=\"{backend.Url}\",state=\"healthy\"}} 1", metrics, StringComparison.Ordinal);
            Assert.Contains("infra_lb_request_duration_seconds_count 6", metrics, StringComparison.Ordinal);
            Assert.Contains("infra_lb_health_checks_total{backend=", metrics, StringComparison.Ordinal);
            Assert.Contains("infra_lb_requests_in_flight 0", metrics, StringComparison.Ordinal);

            // No backend left: healthz says so.
            await backend.DisposeAsync();
            await Eventually.HoldsAsync(async () => (await lb.AdminClient.GetAsync("/healthz")).StatusCode == HttpStatusCode.ServiceUnavailable,
                "healthz turns 503 once the only backend is down");
        }
        finally
        {
            await backend.DisposeAsync();
        }
    }

    internal static async Task DisposeAll(IEnumerable<IAsyncDisposable> items)
    {
        foreach (var item in items)
        {
            await item.DisposeAsync();
        }
    }
}
