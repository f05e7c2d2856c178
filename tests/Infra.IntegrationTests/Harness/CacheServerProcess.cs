using StackExchange.Redis;

namespace Infra.IntegrationTests.Harness;

/// <summary>A cache server process on free ports, and clients for it.</summary>
internal sealed class CacheServerProcess : IAsyncDisposable
{
    private CacheServerProcess(ServiceProcess process)
    {
        Process = process;
        Port = process.Endpoints[0].Port;
        Admin = process.AdminEndpoint!;
        AdminClient = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { BaseAddress = Admin };
    }

    public ServiceProcess Process { get; }

    public int Port { get; }

    public string EndPoint => $"127.0.0.1:{Port}";

    public Uri Admin { get; }

    public HttpClient AdminClient { get; }

    public static async Task<CacheServerProcess> StartAsync(params string[] extra)
    {
        var args = new List<string> { "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0" };
        args.AddRange(extra);
        return new CacheServerProcess(await ServiceProcess.StartAsync(Artifacts.CacheServer, args, expectedEndpoints: 2));
    }

    /// <summary>A StackExchange.Redis connection (RESP2 unless <paramref name="resp3"/>).</summary>
    public Task<ConnectionMultiplexer> ConnectAsync(bool resp3 = false, string? password = null) =>
        ConnectionMultiplexer.ConnectAsync(Options(resp3, password));

    public ConfigurationOptions Options(bool resp3 = false, string? password = null)
    {
        var options = new ConfigurationOptions
        {
            EndPoints = { EndPoint },
            AbortOnConnectFail = true,
            ConnectTimeout = 10_000,
            SyncTimeout = 10_000,
            AsyncTimeout = 10_000,
            Password = password,
            Protocol = resp3 ? RedisProtocol.Resp3 : RedisProtocol.Resp2,
        };
        return options;
    }

    public Task<string> MetricsAsync() => AdminClient.GetStringAsync("/metrics");

    public async ValueTask DisposeAsync()
    {
        AdminClient.Dispose();
        await Process.DisposeAsync();
    }
}
