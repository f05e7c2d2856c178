using System.Collections.Concurrent;
using System.Net;
using System.Text;
using Infra.IntegrationTests.Harness;

namespace Infra.IntegrationTests;

public class LoadBalancerResilienceTests
{
    [Fact]
    public async Task Killing_a_backend_under_load_fails_no_GET()
    {
        var backends = await Backend.StartManyAsync("b1", "b2", "b3");
        await using var lb = await LoadBalancer.StartAsync(backends.Select(b => b.Url));
        try
        {
            await using var load = Load.Start(lb, workers: 8, path: "/");
            await load.WaitForAsync(300);

            backends[0].Process.Kill();
            var atKill = load.Succeeded;
            await load.WaitForAsync(atKill + 1500);
            await Eventually.HoldsAsync(async () => (await lb.BackendAsync(backends[0].Url))!.State == "unhealthy", "killed backend marked unhealthy");
            await load.WaitForAsync(load.Succeeded + 300);
            await load.StopAsync();

            Assert.Empty(load.Failures);
            Assert.True(load.Succeeded > atKill + 1500);
            Assert.True(load.ServedBy("b2") > 0 && load.ServedBy("b3") > 0);
        }
        finally
        {
            await LoadBalancerRoutingTests.DisposeAll(backends);
        }
    }

    [Fact]
    public async Task Health_checks_take_a_backend_out_and_bring_it_back()
    {
        var backends = await Backend.StartManyAsync("b1", "b2");
        await using var lb = await LoadBalancer.StartAsync(backends.Select(b => b.Url), "--health-interval", "100ms", "--health-timeout", "80ms");
        try
        {
            await backends[0].SetHealthyAsync(false);
            await Eventually.HoldsAsync(async () => (await lb.BackendAsync(backends[0].Url))!.State == "unhealthy", "b1 unhealthy after fall checks");
            var before = await backends[0].RequestsAsync();
            for (var i = 0; i < 20; i++)
            {
                using var response = await lb.Client.GetAsync("/");
                Assert.Equal("b2", response.Headers.GetValues("X-Backend").Single());
            }

            Assert.Equal(before, await backends[0].RequestsAsync());

            await backends[0].SetHealthyAsync(true);
            await Eventually.HoldsAsync(async () => (await lb.BackendAsync(backends[0].Url))!.State == "healthy", "b1 healthy after rise checks");
            var served = new HashSet<string>();
            for (var i = 0; i < 10; i++)
            {
                using var response = await lb.Client.GetAsync("/");
                served.Add(response.Headers.GetValues("X-Backend").Single());
            }

            Assert.Equal(["b1", "b2"], served.Order());
            var metrics = await lb.MetricsAsync();
            Assert.Contains($"infra_lb_health_checks_total{{backend=\"{backends[0].Url}\",result=\"failure\"}}", metrics, StringComparison.Ordinal);
        }
        finally
        {
            await LoadBalancerRoutingTests.DisposeAll(backends);
        }
    }

    [Fact]
    public async Task Draining_a_backend_under_load_loses_no_request()
    {
        var backends = await Backend.StartManyAsync("b1", "b2");
        await using var lb = await LoadBalancer.StartAsync(backends.Select(b => b.Url));
        try
        {
            // One slow request in flight on each backend (round robin sends the second to the other),
            // then steady load. Draining b1 must wait for its slow request to finish.
            var slowFirst = lb.Client.GetAsync("/delay?ms=2500");
            await Eventually.HoldsAsync(async () => (await lb.BackendsAsync()).Sum(b => b.InFlight) == 1, "first slow request in flight");
            var slowSecond = lb.Client.GetAsync("/delay?ms=2500");
            await Eventually.HoldsAsync(async () => (await lb.BackendsAsync()).All(b => b.InFlight == 1), "a slow request on each backend");
            await using var load = Load.Start(lb, workers: 6, path: "/delay?ms=20");
            await load.WaitForAsync(100);

            var removing = lb.AdminClient.DeleteAsync("/backends?address=" + Uri.EscapeDataString(backends[0].Url));
            await Eventually.HoldsAsync(async () => (await lb.BackendAsync(backends[0].Url))?.State == "draining", "b1 draining");
            var whileDraining = await lb.BackendAsync(backends[0].Url);
            using var undrain = await lb.AdminClient.PutAsync("/backends",
                new StringContent($"{{\"address\":\"{backends[0].Url}\",\"state\":\"healthy\"}}", Encoding.UTF8, "application/json"));
            Assert.True(undrain.StatusCode is HttpStatusCode.Conflict or HttpStatusCode.NotFound, $"un-draining a backend being removed gave {undrain.StatusCode}");
            Assert.True(whileDraining is null || whileDraining.InFlight == 0 || !removing.IsCompleted, "DELETE returned with a request still in flight");
            using var removed = await removing;
            Assert.Equal(HttpStatusCode.OK, removed.StatusCode);
            Assert.Contains("\"drained\":true", await removed.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            var slow = await Task.WhenAll(slowFirst, slowSecond);
            var onDrained = slow.Single(r => r.Headers.GetValues("X-Backend").Single() == "b1");
            Assert.Equal(HttpStatusCode.OK, onDrained.StatusCode);
            Assert.True(slow.All(r => r.StatusCode == HttpStatusCode.OK));
            Assert.True((await lb.BackendsAsync()).All(b => b.Address != backends[0].Url));

            var countAtRemoval = await backends[0].RequestsAsync();
            await load.WaitForAsync(load.Succeeded + 200);
            await load.StopAsync();

            Assert.Empty(load.Failures);
            Assert.Equal(countAtRemoval, await backends[0].RequestsAsync());
            Assert.Equal([backends[1].Url], (await lb.BackendsAsync()).Select(b => b.Address));
        }
        finally
        {
            await LoadBalancerRoutingTests.DisposeAll(backends);
        }
    }

    [Fact]
    public async Task Adding_and_removing_backends_under_load_fails_nothing()
    {
        var backends = await Backend.StartManyAsync("b1", "b2", "b3");
        await using var lb = await LoadBalancer.StartAsync([backends[0].Url]);
        try
        {
            await using var load = Load.Start(lb, workers: 6, path: "/");
            await load.WaitForAsync(100);
            foreach (var added in backends.Skip(1))
            {
                using var response = await lb.AdminClient.PostAsync("/backends",
                    new StringContent($"{{\"address\":\"{added.Url}\"}}", Encoding.UTF8, "application/json"));
                Assert.Equal(HttpStatusCode.Created, response.StatusCode);
            }

            await load.WaitForAsync(load.Succeeded + 300);
            using var gone = await lb.AdminClient.DeleteAsync("/backends?address=" + Uri.EscapeDataString(backends[0].Url));
            Assert.Equal(HttpStatusCode.OK, gone.StatusCode);
            await load.WaitForAsync(load.Succeeded + 300);
            await load.StopAsync();

            Assert.Empty(load.Failures);
            Assert.True(load.ServedBy("b2") > 0 && load.ServedBy("b3") > 0);
        }
        finally
        {
            await LoadBalancerRoutingTests.DisposeAll(backends);
        }
    }

    [Fact]
    public async Task A_GET_whose_backend_dies_before_answering_is_retried_elsewhere_but_a_POST_is_never_sent_twice()
    {
        await using var dies = ScriptedBackend.Create((stream, _) =>
        {
            stream.Socket.LingerState = new System.Net.Sockets.LingerOption(true, 0);
            stream.Close();
            return Task.CompletedTask;
        });
        var healthy = await Backend.StartAsync("healthy");
        await using var lb = await LoadBalancer.StartAsync([dies.Url, healthy.Url], "--eject-after", "0");
        try
        {
            for (var i = 0; i < 6; i++)
            {
                using var get = await lb.Client.GetAsync("/");
                Assert.Equal(HttpStatusCode.OK, get.StatusCode);
                Assert.Equal("healthy", get.Headers.GetValues("X-Backend").Single());
            }

            var getsThatReachedIt = dies.Requests;
            Assert.True(getsThatReachedIt >= 3, $"round robin sent {getsThatReachedIt} GETs to the dying backend");

            var postsBefore = await healthy.RequestsAsync();
            var statuses = new List<HttpStatusCode>();
            for (var i = 0; i < 6; i++)
            {
                using var post = await lb.Client.PostAsync("/echo", new StringContent("once"));
                statuses.Add(post.StatusCode);
            }

            var postsToDying = dies.Requests - getsThatReachedIt;
            var postsToHealthy = await healthy.RequestsAsync() - postsBefore;
            Assert.Equal(6, postsToDying + postsToHealthy);
            Assert.Equal(postsToDying, statuses.Count(s => s == HttpStatusCode.BadGateway));
            Assert.Equal(postsToHealthy, statuses.Count(s => s == HttpStatusCode.OK));
            Assert.True(postsToDying > 0);
            Assert.Contains("infra_lb_retries_total{reason=\"no_response\"}", await lb.MetricsAsync(), StringComparison.Ordinal);
        }
        finally
        {
            await healthy.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_refused_connection_is_retried_for_any_method_and_ejects_the_backend()
    {
        var healthy = await Backend.StartAsync("healthy");
        await using var lb = await LoadBalancer.StartAsync(["http://127.0.0.1:1", healthy.Url], "--health-interval", "0", "--eject-after", "2");
        try
        {
            for (var i = 0; i < 8; i++)
            {
                using var post = await lb.Client.PostAsync("/echo", new StringContent($"post {i}"));
                Assert.Equal(HttpStatusCode.OK, post.StatusCode);
                Assert.Equal($"post {i}", await post.Content.ReadAsStringAsync());
            }

            var dead = await lb.BackendAsync("http://127.0.0.1:1");
            Assert.Equal("unhealthy", dead!.State);
            var metrics = await lb.MetricsAsync();
            Assert.Contains("infra_lb_retries_total{reason=\"connect_failed\"} 2", metrics, StringComparison.Ordinal);
            Assert.Contains("infra_lb_backend_ejections_total{backend=\"http://127.0.0.1:1\"} 1", metrics, StringComparison.Ordinal);
        }
        finally
        {
            await healthy.DisposeAsync();
        }
    }

    [Fact]
    public async Task SIGTERM_finishes_in_flight_requests_then_exits_cleanly()
    {
        var backend = await Backend.StartAsync("b1");
        var lb = await LoadBalancer.StartAsync([backend.Url], "--shutdown-timeout", "10s");
        try
        {
            var slow = lb.Client.GetAsync("/delay?ms=1500");
            await Eventually.HoldsAsync(async () => (await lb.BackendAsync(backend.Url))!.InFlight == 1, "slow request in flight");

            lb.Process.Terminate();

            using var response = await slow;
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal("close", response.Headers.Connection.SingleOrDefault());
            Assert.Equal(0, await lb.Process.WaitForExitAsync(TimeSpan.FromSeconds(20)));
        }
        finally
        {
            await lb.DisposeAsync();
            await backend.DisposeAsync();
        }
    }

    [Fact]
    public async Task Invalid_configuration_exits_2_with_one_line_per_problem()
    {
        var process = await ServiceProcess.StartAsync(Artifacts.LoadBalancer,
            ["--listen", "nowhere", "--backend", "ftp://x", "--algorithm", "random", "--health-interval", "soon"], expectedEndpoints: 0);
        await using (process)
        {
            Assert.Equal(2, await process.WaitForExitAsync(TimeSpan.FromSeconds(30)));
            var errors = process.Output.Split('\n').Where(l => l.StartsWith("loadbalancer: error:", StringComparison.Ordinal)).ToList();
            Assert.Equal(4, errors.Count);
        }

        var unknown = await ServiceProcess.StartAsync(Artifacts.LoadBalancer, ["--lissten", "127.0.0.1:0"], expectedEndpoints: 0);
        await using (unknown)
        {
            Assert.Equal(2, await unknown.WaitForExitAsync(TimeSpan.FromSeconds(30)));
            Assert.Contains("unknown option --lissten", unknown.Output, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task A_taken_port_exits_1_with_a_clear_message()
    {
        using var taken = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        var port = ((IPEndPoint)taken.LocalEndpoint).Port;
        var process = await ServiceProcess.StartAsync(Artifacts.LoadBalancer, ["--listen", $"127.0.0.1:{port}", "--admin", "127.0.0.1:0"], expectedEndpoints: 0);
        await using (process)
        {
            Assert.Equal(1, await process.WaitForExitAsync(TimeSpan.FromSeconds(30)));
            Assert.Contains("cannot listen", process.Output, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task The_access_log_records_one_json_line_per_request()
    {
        var backend = await Backend.StartAsync("b1");
        var path = Path.Combine(Path.GetTempPath(), $"infra-access-{Guid.NewGuid():N}.log");
        await using var lb = await LoadBalancer.StartAsync([backend.Url], "--access-log", path);
        try
        {
            (await lb.Client.GetAsync("/?x=1")).Dispose();
            (await lb.Client.PostAsync("/echo", new StringContent("abc"))).Dispose();
            await Eventually.HoldsAsync(() => File.Exists(path) && File.ReadAllLines(path).Length == 2, "two access log lines");

            var lines = File.ReadAllLines(path).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement).ToList();
            Assert.Equal("GET", lines[0].GetProperty("method").GetString());
            Assert.Equal("/?x=1", lines[0].GetProperty("target").GetString());
            Assert.Equal(200, lines[0].GetProperty("status").GetInt32());
            Assert.Equal(backend.Url, lines[0].GetProperty("backend").GetString());
            Assert.Equal(3, lines[1].GetProperty("responseBytes").GetInt64());
        }
        finally
        {
            await backend.DisposeAsync();
            File.Delete(path);
        }
    }

    /// <summary>Concurrent GET loops against the proxy, recording every failure.</summary>
    private sealed class Load : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly List<Task> _workers = [];
        private readonly ConcurrentDictionary<string, int> _servedBy = new();
        private long _succeeded;

        public ConcurrentQueue<string> Failures { get; } = new();

        public long Succeeded => Interlocked.Read(ref _succeeded);

        public int ServedBy(string name) => _servedBy.GetValueOrDefault(name);

        public static Load Start(LoadBalancer lb, int workers, string path)
        {
            var load = new Load();
            for (var i = 0; i < workers; i++)
            {
                load._workers.Add(Task.Run(() => load.RunAsync(lb, path)));
            }

            return load;
        }

        private async Task RunAsync(LoadBalancer lb, string path)
        {
            while (!_stop.IsCancellationRequested)
            {
                try
                {
                    using var response = await lb.Client.GetAsync(path);
                    var body = await response.Content.ReadAsStringAsync();
                    if (response.StatusCode != HttpStatusCode.OK)
                    {
                        Failures.Enqueue($"{(int)response.StatusCode}: {body}");
                        continue;
                    }

                    _servedBy.AddOrUpdate(response.Headers.GetValues("X-Backend").Single(), 1, (_, n) => n + 1);
                    Interlocked.Increment(ref _succeeded);
                }
                catch (HttpRequestException ex)
                {
                    Failures.Enqueue(ex.Message);
                }
            }
        }

        public Task WaitForAsync(long succeeded) =>
            Eventually.HoldsAsync(() => Succeeded >= succeeded || !Failures.IsEmpty, $"{succeeded} successful requests", TimeSpan.FromSeconds(60));

        public async Task StopAsync()
        {
            await _stop.CancelAsync();
            await Task.WhenAll(_workers);
        }

        public async ValueTask DisposeAsync()
        {
            if (!_stop.IsCancellationRequested)
            {
                await StopAsync();
            }

            _stop.Dispose();
        }
    }
}
