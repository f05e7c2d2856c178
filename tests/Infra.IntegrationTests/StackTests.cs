using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Infra.IntegrationTests.Harness;
using StackExchange.Redis;

namespace Infra.IntegrationTests;

/// <summary>
/// The whole architecture as <c>infra up</c> starts it (1 LB, 3 web nodes, 1 worker, 3 caches,
/// 1 queue, 1 router, 2 shards × master + replica), driven through the load balancer with real
/// HTTP, with nodes killed by SIGKILL through the control endpoint.
/// </summary>
[Collection(StackGroup.Name)]
public sealed class StackTests(StackFixture fixture)
{
    private Stack Stack => fixture.Stack;

    [Fact]
    public async Task Every_node_of_the_default_topology_is_up_and_named_as_documented()
    {
        var nodes = await Stack.StatusAsync();
        Assert.Equal(
            ["cache-1", "cache-2", "cache-3", "queue", "s0-master", "s0-replica", "s1-master", "s1-replica", "router", "web-1", "web-2", "web-3", "worker-1", "lb"],
            nodes.Select(n => n.Name).ToArray());
        Assert.All(nodes, n => Assert.True(n.Pid is not null, n.Name));

        // The status command prints the same table.
        var (exit, output) = await RunCliAsync("status", "--data-dir", Stack.DataDir);
        Assert.Equal(0, exit);
        foreach (var node in nodes)
        {
            Assert.Contains(node.Name, output, StringComparison.Ordinal);
        }

        Assert.Contains("master (s0)", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_session_made_on_one_web_node_is_used_on_another()
    {
        var webs = await WebNodesAsync();
        var name = "u" + Guid.NewGuid().ToString("N")[..10];
        using var web1 = new HttpClient(new SocketsHttpHandler { UseProxy = false, UseCookies = false }) { BaseAddress = webs[0] };
        using (var signup = await web1.PostAsJsonAsync("/api/signup", new { username = name, password = "first password" }))
        {
            Assert.Equal(HttpStatusCode.Created, signup.StatusCode);
        }

        using (var again = await web1.PostAsJsonAsync("/api/signup", new { username = name, password = "other password" }))
        {
            Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
        }

        // Log in through web-2; use the cookie on web-3 and web-1.
        using var web2 = new HttpClient(new SocketsHttpHandler { UseProxy = false, UseCookies = false }) { BaseAddress = webs[1] };
        using (var wrong = await web2.PostAsJsonAsync("/api/login", new { username = name, password = "wrong password" }))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, wrong.StatusCode);
        }

        string cookie;
        using (var login = await web2.PostAsJsonAsync("/api/login", new { username = name, password = "first password" }))
        {
            Assert.Equal(HttpStatusCode.OK, login.StatusCode);
            var setCookie = login.Headers.GetValues("Set-Cookie").Single();
            Assert.Contains("httponly", setCookie, StringComparison.OrdinalIgnoreCase);
            cookie = setCookie[..setCookie.IndexOf(';', StringComparison.Ordinal)];
        }

        using var other = new HttpClient(new SocketsHttpHandler { UseProxy = false, UseCookies = false }) { BaseAddress = webs[2] };
        other.DefaultRequestHeaders.Add("Cookie", cookie);
        var me = await other.GetFromJsonAsync<JsonElement>("/api/me");
        Assert.Equal(name, me.GetProperty("username").GetString());

        using (var create = await other.PostAsJsonAsync("/api/links", new { url = "https://example.com/from-web-3" }))
        {
            Assert.Equal(HttpStatusCode.Created, create.StatusCode);
        }

        // Read-your-writes through web-1: the list shows the link made a moment ago on web-3.
        using var first = new HttpClient(new SocketsHttpHandler { UseProxy = false, UseCookies = false }) { BaseAddress = webs[0] };
        first.DefaultRequestHeaders.Add("Cookie", cookie);
        var page = await first.GetFromJsonAsync<JsonElement>("/api/me/links");
        Assert.Equal("https://example.com/from-web-3", page.GetProperty("links")[0].GetProperty("url").GetString());

        // Log out on web-1: the session is gone everywhere.
        using (var logout = await first.PostAsync("/api/logout", null))
        {
            Assert.Equal(HttpStatusCode.NoContent, logout.StatusCode);
        }

        using var after = await other.GetAsync("/api/me");
        Assert.Equal(HttpStatusCode.Unauthorized, after.StatusCode);
    }

    [Fact]
    public async Task A_thousand_links_made_through_the_lb_read_back_and_repeated_reads_hit_the_cache()
    {
        var cookie = await SignUpAsync(Stack.Lb);
        var links = await CreateLinksAsync(cookie, 1000);
        Assert.Equal(1000, links.Select(l => l.Code).Distinct().Count());

        await ForEachAsync(links, async link => Assert.Equal(link.Url, await RedirectAsync(link.Code)));
        var before = await CacheStatsAsync();
        for (var round = 0; round < 3; round++)
        {
            await ForEachAsync(links, async link => Assert.Equal(link.Url, await RedirectAsync(link.Code)));
        }

        var after = await CacheStatsAsync();
        var hits = after.Hits - before.Hits;
        var misses = after.Misses - before.Misses;
        Assert.True(hits + misses >= 3000, $"{hits} hits + {misses} misses for 3000 reads");
        var ratio = (double)hits / (hits + misses);
        Assert.True(ratio > 0.90, $"cache hit ratio {ratio:P1} ({hits} hits, {misses} misses) from the cache servers' INFO");

        // Stats and a page of the owner's links.
        using var client = WithCookie(Stack.Lb, cookie);
        var stats = await client.GetFromJsonAsync<JsonElement>("/api/links/" + links[0].Code);
        Assert.Equal(links[0].Url, stats.GetProperty("url").GetString());
        var seen = new HashSet<string>();
        string? cursor = null;
        do
        {
            var page = await client.GetFromJsonAsync<JsonElement>("/api/me/links?limit=100" + (cursor is null ? "" : "&cursor=" + Uri.EscapeDataString(cursor)));
            foreach (var link in page.GetProperty("links").EnumerateArray())
            {
                Assert.True(seen.Add(link.GetProperty("code").GetString()!), "a link listed twice");
            }

            cursor = page.GetProperty("next").GetString();
        }
        while (cursor is not null);
        Assert.Equal(1000, seen.Count);
    }

    [Fact]
    public async Task Clicks_are_counted_exactly_once_when_the_worker_is_killed_mid_batch()
    {
        var cookie = await SignUpAsync(Stack.Lb);
        var links = await CreateLinksAsync(cookie, 20);
        const int Clicks = 3000;
        var counted0 = await MetricAsync("worker-1", "infra_web_clicks_counted");
        var dropped0 = await WebMetricSumAsync("infra_web_clicks_dropped");
        var load = ForEachAsync(Enumerable.Range(0, Clicks).ToList(), async i => Assert.Equal(links[i % links.Count].Url, await RedirectAsync(links[i % links.Count].Code)));

        // Kill the worker while it is counting: after it counted some of this test's clicks.
        await Eventually.HoldsAsync(async () => await MetricAsync("worker-1", "infra_web_clicks_counted") - counted0 >= 100, "the worker counts clicks", TimeSpan.FromSeconds(60));
        await Stack.KillAsync("worker-1");
        await load;
        await Stack.RestartAsync("worker-1");

        Assert.Equal(dropped0, await WebMetricSumAsync("infra_web_clicks_dropped"));
        var expected = links.ToDictionary(l => l.Code, l => Enumerable.Range(0, Clicks).Count(i => i % links.Count == links.IndexOf(l)));
        using var client = WithCookie(Stack.Lb, cookie);
        async Task<Dictionary<string, long>> CountsAsync()
        {
            var counts = new Dictionary<string, long>();
            foreach (var link in links)
            {
                counts[link.Code] = (await client.GetFromJsonAsync<JsonElement>("/api/links/" + link.Code)).GetProperty("clicks").GetInt64();
            }

            return counts;
        }

        // Redelivered events (the killed worker's unacked batch, after the visibility timeout) are not counted twice.
        await Eventually.HoldsAsync(async () => (await CountsAsync()).Values.Sum() >= Clicks, "every click counted", TimeSpan.FromSeconds(90));
        await Eventually.HoldsAsync(async () => await QueueUnackedAsync() == 0, "no click event waits for an ack", TimeSpan.FromSeconds(60));
        var final = await CountsAsync();
        foreach (var (code, count) in expected)
        {
            Assert.Equal(count, final[code]);
        }
    }

    [Fact]
    public async Task With_the_router_down_the_worker_waits_and_every_click_is_counted_when_it_is_back()
    {
        // The worker kept fetching while the router was down: each fetch spent a delivery, and 15 s into the
        // outage the broker moved every click made during it to the dead-letter topic, never counted.
        var cookie = await SignUpAsync(Stack.Lb);
        var links = await CreateLinksAsync(cookie, 10);
        using var client = WithCookie(Stack.Lb, cookie);
        async Task<long> TotalAsync()
        {
            long total = 0;
            foreach (var link in links)
            {
                total += (await client.GetFromJsonAsync<JsonElement>("/api/links/" + link.Code)).GetProperty("clicks").GetInt64();
            }

            return total;
        }

        foreach (var link in links)
        {
            Assert.Equal(link.Url, await RedirectAsync(link.Code)); // now in the cache: redirects need no router
        }

        await Eventually.HoldsAsync(async () => await TotalAsync() == links.Count, "the first clicks are counted", TimeSpan.FromSeconds(30));
        await Stack.KillAsync("router");
        try
        {
            await ForEachAsync(Enumerable.Range(0, 100).ToList(), async i => Assert.Equal(links[i % links.Count].Url, await RedirectAsync(links[i % links.Count].Code)));
            await Task.Delay(TimeSpan.FromSeconds(20)); // the outage itself: longer than the deliveries' back-off used to last
        }
        finally
        {
            await Stack.RestartAsync("router");
            await Stack.AllUpAsync();
        }

        await Eventually.HoldsAsync(async () => await TotalAsync() == links.Count + 100, "every click made while the router was down is counted", TimeSpan.FromSeconds(90));
    }

    [Fact]
    public async Task Every_node_runs_in_a_session_of_its_own_so_a_terminals_ctrl_c_reaches_only_the_supervisor()
    {
        // In the supervisor's process group, a terminal's Ctrl-C reached all the nodes at once: they stopped
        // together instead of in order (the load balancer first, the stores last).
        static long SessionOf(int pid)
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return long.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[3], System.Globalization.CultureInfo.InvariantCulture);
        }

        var supervisor = SessionOf(Stack.Pid);
        foreach (var node in await Stack.StatusAsync())
        {
            Assert.NotNull(node.Pid);
            Assert.Contains("dotnet", File.ReadAllText($"/proc/{node.Pid}/cmdline"), StringComparison.Ordinal); // the node itself, not a wrapper
            Assert.NotEqual(supervisor, SessionOf(node.Pid!.Value));
        }
    }

    [Fact]
    public async Task Killing_a_web_node_under_load_fails_no_get_through_the_lb()
    {
        var cookie = await SignUpAsync(Stack.Lb);
        var links = await CreateLinksAsync(cookie, 50);
        var failures = await KillUnderLoadAsync(links, "web-2", workers: 8, before: 500, after: 2000);
        try
        {
            Assert.True(failures.IsEmpty, $"{failures.Count} failed GETs, e.g. {failures.FirstOrDefault()}\nweb nodes' and the balancer's failures:\n{Stack.FailuresLogged("web-")}\n{Stack.FailuresLogged("lb")}");
        }
        finally
        {
            await Stack.RestartAsync("web-2");
            await Stack.AllUpAsync();
        }
    }

    [Fact]
    public async Task Killing_a_shard_master_fails_only_its_shard_and_only_until_failover()
    {
        var cookie = await SignUpAsync(Stack.Lb);
        var links = await CreateLinksAsync(cookie, 60);
        var byShard = new Dictionary<string, List<Link>>();
        foreach (var link in links)
        {
            var shard = await Stack.ShardOfAsync(link.Code);
            (byShard.TryGetValue(shard, out var list) ? list : byShard[shard] = []).Add(link);
        }

        Assert.True(byShard.ContainsKey("s0") && byShard.ContainsKey("s1"), "links on both shards");
        var master = (await Stack.StatusAsync()).Single(n => n.Role == "master (s0)");
        await FlushCachesAsync();
        cookie = await SignUpAsync(Stack.Lb); // the flush took the session with it

        // Reads and writes on both shards, all the time, through the LB.
        var results = new System.Collections.Concurrent.ConcurrentQueue<(string Shard, string Kind, TimeSpan At, bool Ok, string Detail)>();
        var clock = Stopwatch.StartNew();
        using var stop = new CancellationTokenSource();
        using var writer = WithCookie(Stack.Lb, cookie);
        var load = byShard.SelectMany(pair => Enumerable.Range(0, 3).Select(async worker =>
        {
            var i = worker;
            while (!stop.IsCancellationRequested)
            {
                var link = pair.Value[i++ % pair.Value.Count];
                var (ok, detail) = await TryRedirectAsync(link);
                results.Enqueue((pair.Key, "read", clock.Elapsed, ok, detail));
            }
        })).ToList();
        var creates = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    using var response = await writer.PostAsJsonAsync("/api/links", new { url = "https://example.com/during-failover" });
                    var body = await response.Content.ReadAsStringAsync();
                    var code = response.IsSuccessStatusCode ? JsonDocument.Parse(body).RootElement.GetProperty("code").GetString()! : null;
                    var shard = code is null ? "?" : await Stack.ShardOfAsync(code);
                    results.Enqueue((shard, "write", clock.Elapsed, response.IsSuccessStatusCode, $"{(int)response.StatusCode} {body}"));
                }
                catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
                {
                    results.Enqueue(("?", "write", clock.Elapsed, false, ex.Message));
                }
            }
        });

        await Eventually.HoldsAsync(() => results.Count(r => r.Ok) > 300, "load is flowing");
        var killedAt = clock.Elapsed;
        await Stack.KillAsync(master.Name);
        await Eventually.HoldsAsync(async () => (await Stack.StatusAsync()).Any(n => n.Role == "master (s0)" && n.Name != master.Name && n.Health == "up"),
            "the router promoted s0's replica", TimeSpan.FromSeconds(30));
        var promotedAt = clock.Elapsed;

        // After the promotion s0 serves reads again. Its writes need a replica to confirm them
        // (semi-sync): they come back when the old master returns, as a replica of the new one.
        await Eventually.HoldsAsync(() => results.Count(r => r.At > promotedAt + TimeSpan.FromSeconds(1) && r.Ok && r.Kind == "read" && r.Shard == "s0") >= 100,
            "s0 serves reads again", TimeSpan.FromSeconds(30));
        await Stack.RestartAsync(master.Name);
        var restartedAt = clock.Elapsed;
        await Eventually.HoldsAsync(() => results.Count(r => r.At > restartedAt && r.Ok && r.Kind == "write" && r.Shard == "s0") >= 3,
            () => $"writes land on s0 again (writer {creates.Status}; last writes: {string.Join(" | ", results.Where(r => r.Kind == "write").TakeLast(3).Select(r => $"{r.Shard} {r.Detail}"))})", TimeSpan.FromSeconds(30));
        stop.Cancel();
        await Task.WhenAll(load);
        await creates;
        await Stack.AllUpAsync();
        Assert.Equal("replica (s0)", (await Stack.NodeAsync(master.Name)).Role);

        var s1Failures = results.Where(r => r.Shard == "s1" && !r.Ok).ToList();
        Assert.True(s1Failures.Count == 0, $"{s1Failures.Count} s1 requests failed, e.g. {s1Failures.FirstOrDefault().Detail}");
        Assert.True(results.Any(r => r.Shard == "s1" && r.Ok && r.At > killedAt && r.At < promotedAt + TimeSpan.FromSeconds(1)), "s1 served while s0 failed over");
        var lastS0ReadFailure = results.Where(r => r.Shard == "s0" && !r.Ok && r.Kind == "read").Select(r => r.At).DefaultIfEmpty(killedAt).Max();
        Assert.True(lastS0ReadFailure - killedAt < TimeSpan.FromSeconds(10), $"s0 reads still failed {(lastS0ReadFailure - killedAt).TotalSeconds:0.0}s after the kill (promoted after {(promotedAt - killedAt).TotalSeconds:0.0}s)");
        Assert.True(promotedAt - killedAt < TimeSpan.FromSeconds(10), $"promotion took {(promotedAt - killedAt).TotalSeconds:0.0}s");
    }

    [Fact]
    public async Task Killing_a_cache_node_causes_no_errors_and_its_keys_are_served_from_the_database()
    {
        var cookie = await SignUpAsync(Stack.Lb);
        var links = await CreateLinksAsync(cookie, 100);
        await ForEachAsync(links, async link => Assert.Equal(link.Url, await RedirectAsync(link.Code)));
        var failures = await KillUnderLoadAsync(links, "cache-2", workers: 6, before: 300, after: 1500);
        try
        {
            Assert.True(failures.IsEmpty, $"{failures.Count} failed redirects, e.g. {failures.FirstOrDefault()}\nweb nodes' failures:\n{Stack.FailuresLogged("web-")}");
        }
        finally
        {
            await Stack.RestartAsync("cache-2");
            await Stack.AllUpAsync();

            // Each web node reconnects on its own schedule; until all have, they disagree on where
            // keys live. The next tests start from a settled state.
            await Eventually.HoldsAsync(async () => await WebMetricSumAsync("infra_web_cache_nodes_up") == 9, "every web node is connected to the three caches", TimeSpan.FromSeconds(30));
        }
    }

    [Fact]
    public async Task A_cache_server_that_hangs_makes_its_users_sessions_unavailable_not_logged_out()
    {
        // A timeout was taken for "no such session": signed-in users were told to log in (401) while their
        // session sat intact on a cache server that was only slow.
        var cookie = await SignUpAsync(Stack.Lb);
        var key = "session:" + cookie["sid=".Length..];
        var caches = (await Stack.StatusAsync()).Where(n => n.Name.StartsWith("cache-", StringComparison.Ordinal)).ToList();
        StackNode? home = null;
        foreach (var cache in caches)
        {
            await using var connection = await ConnectionMultiplexer.ConnectAsync(cache.Address);
            if (await connection.GetDatabase().KeyExistsAsync(key))
            {
                home = cache;
            }
        }

        Assert.NotNull(home);
        using var client = WithCookie(Stack.Lb, cookie);
        SendSignal(home.Pid!.Value, "STOP");
        try
        {
            var up0 = await WebMetricSumAsync("infra_web_cache_nodes_up");
            using var me = await client.GetAsync("/api/me");
            var up1 = await WebMetricSumAsync("infra_web_cache_nodes_up");
            Assert.True(me.StatusCode == HttpStatusCode.ServiceUnavailable, $"{me.StatusCode} up {up0} -> {up1} errors {await WebMetricSumAsync("infra_web_cache_errors")}"); // was 401
            Assert.True(me.Headers.Contains("Retry-After"));
        }
        finally
        {
            SendSignal(home.Pid!.Value, "CONT");
        }

        await Eventually.HoldsAsync(async () =>
        {
            using var me = await client.GetAsync("/api/me");
            return me.StatusCode == HttpStatusCode.OK;
        }, "the session is served again", TimeSpan.FromSeconds(30));
    }

    private static void SendSignal(int pid, string signal)
    {
        using var kill = Process.Start(new ProcessStartInfo("kill", ["-" + signal, pid.ToString(System.Globalization.CultureInfo.InvariantCulture)]) { UseShellExecute = false })!;
        kill.WaitForExit();
        Assert.Equal(0, kill.ExitCode);
    }

    [Fact]
    public async Task A_session_made_while_its_home_cache_was_down_stays_valid_and_keeps_its_write_tokens_once_the_home_is_back()
    {
        // Found by a chaos soak: sessions made while a cache server was down got intermittent 401s once
        // it was back. A write's token went to the home node (the session lives on the runner-up), where
        // HSET made a hash without "user" for a moment, and a concurrent read took that one as the session.
        var cookie = await SignUpAsync(Stack.Lb);
        var key = "session:" + cookie["sid=".Length..];
        var caches = (await Stack.StatusAsync()).Where(n => n.Name.StartsWith("cache-", StringComparison.Ordinal)).ToList();
        var connections = new List<ConnectionMultiplexer>();
        try
        {
            foreach (var cache in caches)
            {
                connections.Add(await ConnectionMultiplexer.ConnectAsync(cache.Address));
            }

            var dbs = connections.Select(c => c.GetDatabase()).ToList();
            var home = Assert.Single(dbs, db => db.KeyExists(key));
            var fields = await home.HashGetAllAsync(key);
            var others = dbs.Where(db => db != home).ToList();

            // As if made while its home was down: the session is on the other nodes (one is its runner-up),
            // and the home holds only what a token write leaves there for a moment.
            foreach (var db in others)
            {
                await db.HashSetAsync(key, fields);
                await db.KeyExpireAsync(key, TimeSpan.FromMinutes(10));
            }

            await home.KeyDeleteAsync(key);
            await home.HashSetAsync(key, "lsn:s0", 1);
            using var client = WithCookie(Stack.Lb, cookie);
            using (var me = await client.GetAsync("/api/me"))
            {
                Assert.Equal(HttpStatusCode.OK, me.StatusCode); // was 401
            }

            await home.KeyDeleteAsync(key);
            using (var create = await client.PostAsJsonAsync("/api/links", new { url = "https://example.com/made-after-the-cache-came-back" }))
            {
                Assert.Equal(HttpStatusCode.Created, create.StatusCode);
            }

            // The write's token is kept with the session (it went to the home node and was thrown away),
            // and nothing is left on the home node.
            var tokens = new List<string>();
            foreach (var db in others)
            {
                tokens.AddRange((await db.HashKeysAsync(key)).Select(k => k.ToString()).Where(k => k.StartsWith("lsn:", StringComparison.Ordinal)));
            }

            Assert.NotEmpty(tokens);
            Assert.False(await home.KeyExistsAsync(key));
        }
        finally
        {
            foreach (var connection in connections)
            {
                await connection.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task Killing_the_queue_never_holds_up_a_redirect_and_every_click_is_counted_when_it_is_back()
    {
        var cookie = await SignUpAsync(Stack.Lb);
        var links = await CreateLinksAsync(cookie, 20);
        var dropped0 = await WebMetricSumAsync("infra_web_clicks_dropped");

        // One click through each web node first, published: each has its producer connected when the broker
        // dies (a node that never connected waits in its connect loop, which never dropped anything).
        var webs = (await Stack.StatusAsync()).Where(n => n.Name.StartsWith("web-", StringComparison.Ordinal)).ToList();
        using (var direct = new HttpClient(new SocketsHttpHandler { UseProxy = false, AllowAutoRedirect = false, UseCookies = false }))
        {
            foreach (var web in webs)
            {
                using var response = await direct.GetAsync(new Uri("http://" + web.Address + "/" + links[0].Code));
                Assert.Equal(HttpStatusCode.Found, response.StatusCode);
            }
        }

        foreach (var web in webs)
        {
            await Eventually.HoldsAsync(async () => SumMetric(await Stack.Http.GetStringAsync(new Uri(web.AdminUrl, "/metrics")), "infra_web_clicks_published") > 0, $"{web.Name} published a click", TimeSpan.FromSeconds(30));
        }

        await Stack.KillAsync("queue");
        try
        {
            // Every redirect still answers while the broker is down; the clicks wait in the buffers — also
            // past the producer's 5 s retry window (its failed batches were dropped then, with room to spare).
            await ForEachAsync(Enumerable.Range(0, 300).ToList(), async i => Assert.Equal(links[i % links.Count].Url, await RedirectAsync(links[i % links.Count].Code)));
            await Task.Delay(TimeSpan.FromSeconds(7)); // the outage itself: it must outlast that window
            await ForEachAsync(Enumerable.Range(300, 300).ToList(), async i => Assert.Equal(links[i % links.Count].Url, await RedirectAsync(links[i % links.Count].Code)));
        }
        finally
        {
            await Stack.RestartAsync("queue");
            await Stack.AllUpAsync();
        }

        // Buffered clicks are published once the broker is back, and the worker counts them.
        using var client = WithCookie(Stack.Lb, cookie);
        await Eventually.HoldsAsync(async () =>
        {
            long total = 0;
            foreach (var link in links)
            {
                total += (await client.GetFromJsonAsync<JsonElement>("/api/links/" + link.Code)).GetProperty("clicks").GetInt64();
            }

            return total == 600 + webs.Count;
        }, "every click made while the queue was down is counted", TimeSpan.FromSeconds(90));
        Assert.Equal(dropped0, await WebMetricSumAsync("infra_web_clicks_dropped"));
    }

    [Fact]
    public async Task Hostile_requests_get_clear_errors_and_the_web_node_keeps_serving()
    {
        var web = (await WebNodesAsync())[0];
        using var client = new HttpClient(new SocketsHttpHandler { UseProxy = false, AllowAutoRedirect = false, UseCookies = false }) { BaseAddress = web };
        var cookie = await SignUpAsync(web);
        using var authed = WithCookie(web, cookie);

        async Task<HttpStatusCode> PostAsync(HttpClient c, string path, string body)
        {
            using var content = new StringContent(body, System.Text.Encoding.UTF8, "application/json");
            using var response = await c.PostAsync(path, content);
            return response.StatusCode;
        }

        Assert.Equal(HttpStatusCode.BadRequest, await PostAsync(client, "/api/signup", "{\"username\":"));
        Assert.Equal(HttpStatusCode.BadRequest, await PostAsync(client, "/api/signup", "[1,2,3]"));
        Assert.Equal(HttpStatusCode.BadRequest, await PostAsync(client, "/api/signup", "{\"username\":\"a b\",\"password\":\"long enough\"}"));
        Assert.Equal(HttpStatusCode.BadRequest, await PostAsync(client, "/api/signup", "{\"username\":\"abc\",\"password\":\"short\"}"));
        Assert.Equal(HttpStatusCode.BadRequest, await PostAsync(client, "/api/signup", new string('[', 100_00)));
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, await PostAsync(client, "/api/signup", "{\"username\":\"" + new string('a', 100_000) + "\"}"));
        Assert.Equal(HttpStatusCode.Unauthorized, await PostAsync(client, "/api/links", "{\"url\":\"https://example.com\"}"));
        Assert.Equal(HttpStatusCode.Unauthorized, await PostAsync(client, "/api/login", "{\"username\":\"nobody-here\",\"password\":\"whatever123\"}"));
        Assert.Equal(HttpStatusCode.BadRequest, await PostAsync(authed, "/api/links", "{\"url\":\"javascript:alert(1)\"}"));
        Assert.Equal(HttpStatusCode.BadRequest, await PostAsync(authed, "/api/links", "{\"url\":\"https://example.com/" + new string('x', 5000) + "\"}"));
        Assert.Equal(HttpStatusCode.BadRequest, await PostAsync(authed, "/api/links", "{\"url\":\"https://user:pw@example.com/\"}"));
        Assert.Equal(HttpStatusCode.BadRequest, await PostAsync(authed, "/api/links", "{\"url\":42}"));

        // Found by fuzzing the web node: a Unicode host with no valid ASCII form was stored as Unicode,
        // and every redirect of the link was a 500; a chunk size that overflows was a 500 too.
        Assert.Equal(HttpStatusCode.BadRequest, await PostAsync(authed, "/api/links", "{\"url\":\"http://-\u00fc.com/\"}"));
        var overflow = await RawHttp.ExchangeAsync(web, "POST /api/links HTTP/1.1\r\nHost: x\r\n" + cookie.Replace("sid=", "Cookie: sid=", StringComparison.Ordinal)
            + "\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nffffffffffffffffffff\r\n{\"url\":\"http://raw.example/\"}\r\n0\r\n\r\n");
        Assert.True(overflow.Status == 400, $"{overflow.Status} {overflow.BodyText}");
        using (var badCursor = await authed.GetAsync("/api/me/links?cursor=%27%3B%20DROP%20TABLE%20links"))
        {
            Assert.Equal(HttpStatusCode.BadRequest, badCursor.StatusCode);
        }

        using (var badLimit = await authed.GetAsync("/api/me/links?limit=100000"))
        {
            Assert.Equal(HttpStatusCode.BadRequest, badLimit.StatusCode);
        }

        using var forged = new HttpClient(new SocketsHttpHandler { UseProxy = false, UseCookies = false }) { BaseAddress = web };
        forged.DefaultRequestHeaders.Add("Cookie", "sid=" + new string('A', 43));
        using (var me = await forged.GetAsync("/api/me"))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, me.StatusCode);
        }

        foreach (var path in new[] { "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "/..%2f..%2fetc", "/api/links/%27", "/%F0%9F%92%A9" })
        {
            using var response = await client.GetAsync(path);
            Assert.True(response.StatusCode == HttpStatusCode.NotFound, $"{path}: {(int)response.StatusCode}");
        }

        using (var nul = await client.GetAsync("/%00"))
        {
            Assert.Equal(HttpStatusCode.BadRequest, nul.StatusCode);
        }

        // The static UI: versioned files with ETags; a revalidation gets 304.
        using var page = await client.GetAsync("/");
        var html = await page.Content.ReadAsStringAsync();
        var script = System.Text.RegularExpressions.Regex.Match(html, "/static/app\\.[0-9a-f]{8}\\.js").Value;
        using var js = await client.GetAsync(script);
        Assert.Equal(HttpStatusCode.OK, js.StatusCode);
        Assert.Contains("immutable", js.Headers.CacheControl!.ToString(), StringComparison.Ordinal);
        using var revalidate = new HttpRequestMessage(HttpMethod.Get, script);
        revalidate.Headers.IfNoneMatch.Add(js.Headers.ETag!);
        using var notModified = await client.SendAsync(revalidate);
        Assert.Equal(HttpStatusCode.NotModified, notModified.StatusCode);

        using var healthy = await client.GetAsync("/healthz");
        Assert.Equal(HttpStatusCode.OK, healthy.StatusCode);
    }

    // ------------------------------------------------------------------ helpers

    private sealed record Link(string Code, string Url);

    /// <summary>Redirects through the LB from <paramref name="workers"/> loops; SIGKILLs a node once <paramref name="before"/> succeeded and stops <paramref name="after"/> successes later. The failures.</summary>
    private async Task<System.Collections.Concurrent.ConcurrentBag<string>> KillUnderLoadAsync(List<Link> links, string node, int workers, int before, int after)
    {
        var failures = new System.Collections.Concurrent.ConcurrentBag<string>();
        var ok = 0;
        using var stop = new CancellationTokenSource();
        var load = Enumerable.Range(0, workers).Select(async worker =>
        {
            var i = worker;
            while (!stop.IsCancellationRequested)
            {
                var (success, detail) = await TryRedirectAsync(links[i++ % links.Count]);
                if (success)
                {
                    Interlocked.Increment(ref ok);
                }
                else
                {
                    failures.Add(detail);
                }
            }
        }).ToList();

        await Eventually.HoldsAsync(() => Volatile.Read(ref ok) >= before, "load is flowing");
        await Stack.KillAsync(node);
        var atKill = Volatile.Read(ref ok);
        await Eventually.HoldsAsync(() => Volatile.Read(ref ok) >= atKill + after, "load goes on after the kill", TimeSpan.FromSeconds(60));
        stop.Cancel();
        await Task.WhenAll(load);
        return failures;
    }

    private async Task<Uri[]> WebNodesAsync() =>
        [.. (await Stack.StatusAsync()).Where(n => n.Name.StartsWith("web-", StringComparison.Ordinal)).Select(n => new Uri("http://" + n.Address))];

    private static HttpClient WithCookie(Uri baseAddress, string cookie)
    {
        var client = new HttpClient(new SocketsHttpHandler { UseProxy = false, AllowAutoRedirect = false, UseCookies = false, MaxConnectionsPerServer = 32 }) { BaseAddress = baseAddress, Timeout = TimeSpan.FromSeconds(30) };
        client.DefaultRequestHeaders.Add("Cookie", cookie);
        return client;
    }

    private static async Task<string> SignUpAsync(Uri at)
    {
        using var client = new HttpClient(new SocketsHttpHandler { UseProxy = false, UseCookies = false }) { BaseAddress = at };
        using var response = await client.PostAsJsonAsync("/api/signup", new { username = "u" + Guid.NewGuid().ToString("N")[..12], password = "a fine password" });
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var setCookie = response.Headers.GetValues("Set-Cookie").Single();
        return setCookie[..setCookie.IndexOf(';', StringComparison.Ordinal)];
    }

    private async Task<List<Link>> CreateLinksAsync(string cookie, int count)
    {
        using var client = WithCookie(Stack.Lb, cookie);
        var links = new System.Collections.Concurrent.ConcurrentBag<Link>();
        await ForEachAsync(Enumerable.Range(0, count).ToList(), async i =>
        {
            var url = $"https://example.com/{Guid.NewGuid():N}?n={i}";
            using var response = await client.PostAsJsonAsync("/api/links", new { url });
            var body = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.Created, $"create: {(int)response.StatusCode} {body}");
            using var json = JsonDocument.Parse(body);
            var code = json.RootElement.GetProperty("code").GetString()!;
            Assert.Equal(new Uri(Stack.Lb, "/" + code).ToString(), json.RootElement.GetProperty("shortUrl").GetString());
            links.Add(new Link(code, url));
        });
        return [.. links];
    }

    private async Task<string?> RedirectAsync(string code)
    {
        using var response = await Stack.Http.GetAsync(new Uri(Stack.Lb, "/" + code));
        Assert.True(response.StatusCode == HttpStatusCode.Found, $"GET /{code}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        return response.Headers.Location?.OriginalString;
    }

    private async Task<(bool Ok, string Detail)> TryRedirectAsync(Link link)
    {
        try
        {
            using var response = await Stack.Http.GetAsync(new Uri(Stack.Lb, "/" + link.Code));
            return response.StatusCode == HttpStatusCode.Found && response.Headers.Location?.OriginalString == link.Url
                ? (true, "")
                : (false, $"{(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        }
        catch (HttpRequestException ex)
        {
            return (false, ex.Message);
        }
    }

    private static Task ForEachAsync<T>(IReadOnlyList<T> items, Func<T, Task> body) =>
        Parallel.ForEachAsync(items, new ParallelOptions { MaxDegreeOfParallelism = 16 }, async (item, _) => await body(item));

    private async Task<(long Hits, long Misses)> CacheStatsAsync()
    {
        long hits = 0, misses = 0;
        foreach (var cache in (await Stack.StatusAsync()).Where(n => n.Name.StartsWith("cache-", StringComparison.Ordinal)))
        {
            await using var redis = await ConnectionMultiplexer.ConnectAsync(cache.Address + ",allowAdmin=true");
            var info = await redis.GetServer(cache.Address).InfoAsync("stats");
            var stats = info.SelectMany(g => g).ToDictionary(p => p.Key, p => p.Value);
            hits += long.Parse(stats["keyspace_hits"], System.Globalization.CultureInfo.InvariantCulture);
            misses += long.Parse(stats["keyspace_misses"], System.Globalization.CultureInfo.InvariantCulture);
        }

        return (hits, misses);
    }

    private async Task FlushCachesAsync()
    {
        foreach (var cache in (await Stack.StatusAsync()).Where(n => n.Name.StartsWith("cache-", StringComparison.Ordinal)))
        {
            await using var redis = await ConnectionMultiplexer.ConnectAsync(cache.Address + ",allowAdmin=true");
            await redis.GetServer(cache.Address).FlushAllDatabasesAsync();
        }
    }

    private async Task<double> MetricAsync(string node, string metric)
    {
        var text = await Stack.Http.GetStringAsync(new Uri((await Stack.NodeAsync(node)).AdminUrl, "/metrics"));
        return SumMetric(text, metric);
    }

    private async Task<double> WebMetricSumAsync(string metric)
    {
        double sum = 0;
        foreach (var web in (await Stack.StatusAsync()).Where(n => n.Name.StartsWith("web-", StringComparison.Ordinal)))
        {
            sum += SumMetric(await Stack.Http.GetStringAsync(new Uri(web.AdminUrl, "/metrics")), metric);
        }

        return sum;
    }

    private async Task<double> QueueUnackedAsync() => await MetricAsync("queue", "infra_queue_group_unacked");

    private static double SumMetric(string page, string metric) => Infra.Cli.Metrics.Sum(page, metric) ?? 0;

    private static async Task<(int Exit, string Output)> RunCliAsync(params string[] args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(Artifacts.Cli);
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        using var process = Process.Start(info)!;
        var output = await process.StandardOutput.ReadToEndAsync() + await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        return (process.ExitCode, output);
    }
}
