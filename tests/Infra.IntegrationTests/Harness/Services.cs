using System.Net.Http.Json;
using System.Text.Json;

namespace Infra.IntegrationTests.Harness;

/// <summary>A load balancer process and clients for its two endpoints.</summary>
internal sealed class LoadBalancer : IAsyncDisposable
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    private LoadBalancer(ServiceProcess process)
    {
        Process = process;
        Proxy = process.Endpoints[0];
        Admin = process.AdminEndpoint!;
        Client = new HttpClient(new SocketsHttpHandler { UseProxy = false, AllowAutoRedirect = false }) { BaseAddress = Proxy, Timeout = TimeSpan.FromSeconds(30) };
        AdminClient = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { BaseAddress = Admin, Timeout = TimeSpan.FromSeconds(60) };
    }

    public ServiceProcess Process { get; }

    public Uri Proxy { get; }

    public Uri Admin { get; }

    public HttpClient Client { get; }

    public HttpClient AdminClient { get; }

    /// <summary>Starts the LB on ports 0 in front of <paramref name="backends"/>; fast health checks unless overridden.</summary>
    public static async Task<LoadBalancer> StartAsync(IEnumerable<string> backends, params string[] extra)
    {
        var args = new List<string> { "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0" };
        foreach (var backend in backends)
        {
            args.Add("--backend");
            args.Add(backend);
        }

        if (!extra.Contains("--health-interval"))
        {
            // Fast enough that killed backends leave rotation within a second, slow enough that a busy CI
            // runner answering a check late does not take a live one out (150 ms did, once).
            args.AddRange(["--health-interval", "300ms", "--health-timeout", "300ms"]);
        }

        args.AddRange(extra);
        var process = await ServiceProcess.StartAsync(Artifacts.LoadBalancer, args, expectedEndpoints: 2);
        return new LoadBalancer(process);
    }

    public async Task<BackendInfo[]> BackendsAsync() =>
        await AdminClient.GetFromJsonAsync<BackendInfo[]>("/backends", Json) ?? [];

    public async Task<BackendInfo?> BackendAsync(string url) =>
        (await BackendsAsync()).SingleOrDefault(b => b.Address == url);

    public Task<string> MetricsAsync() => AdminClient.GetStringAsync("/metrics");

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        AdminClient.Dispose();
        await Process.DisposeAsync();
    }
}

internal sealed record BackendInfo(string Address, int Weight, string State, int InFlight, long Requests);

/// <summary>A test backend process (Kestrel): see tests/Infra.TestBackend.</summary>
internal sealed class Backend : IAsyncDisposable
{
    private Backend(ServiceProcess process, string name)
    {
        Process = process;
        Name = name;
        var endpoint = process.Endpoints[0];
        Url = $"http://127.0.0.1:{endpoint.Port}";
        Client = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { BaseAddress = new Uri(Url), Timeout = TimeSpan.FromSeconds(10) };
    }

    public ServiceProcess Process { get; }

    public string Name { get; }

    /// <summary>The canonical backend address, as the LB shows it.</summary>
    public string Url { get; }

    public HttpClient Client { get; }

    public static async Task<Backend> StartAsync(string name, int port = 0)
    {
        var process = await ServiceProcess.StartAsync(Artifacts.TestBackend, ["--name", name, "--listen", $"127.0.0.1:{port}"], expectedEndpoints: 1);
        return new Backend(process, name);
    }

    public static Task<Backend[]> StartManyAsync(params string[] names) => Task.WhenAll(names.Select(n => StartAsync(n)));

    /// <summary>Requests this backend has served (health checks not counted).</summary>
    public async Task<long> RequestsAsync() => long.Parse(await Client.GetStringAsync("/requests"), System.Globalization.CultureInfo.InvariantCulture);

    public Task SetHealthyAsync(bool healthy) => Client.PostAsync($"/health?ok={healthy}", null);

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await Process.DisposeAsync();
    }
}

internal static class Eventually
{
    /// <summary>Polls until <paramref name="condition"/> holds, failing after <paramref name="timeout"/> (default 15 s).</summary>
    public static async Task HoldsAsync(Func<Task<bool>> condition, string what, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(15));
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"timed out waiting for: {what}");
            }

            await Task.Delay(25);
        }
    }

    /// <summary>As above, with a description computed when the wait fails (to show the state then).</summary>
    public static async Task HoldsAsync(Func<bool> condition, Func<string> what, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(15));
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"timed out waiting for: {what()}");
            }

            await Task.Delay(25);
        }
    }

    public static Task HoldsAsync(Func<bool> condition, string what, TimeSpan? timeout = null) =>
        HoldsAsync(() => Task.FromResult(condition()), what, timeout);
}
