using System.Net.Http.Json;
using System.Text.Json;
using Infra.Client.Queue;

namespace Infra.IntegrationTests.Harness;

/// <summary>A queue broker process over a data directory the test owns (kept across restarts).</summary>
internal sealed class QueueBrokerProcess : IAsyncDisposable
{
    private QueueBrokerProcess(ServiceProcess process, string dataDir)
    {
        Process = process;
        DataDir = dataDir;
        Port = process.Endpoints[0].Port;
        Http = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { BaseAddress = process.AdminEndpoint!, Timeout = TimeSpan.FromSeconds(60) };
    }

    public ServiceProcess Process { get; }

    public string DataDir { get; }

    public int Port { get; }

    public HttpClient Http { get; }

    public static string NewDataDir() => Path.Combine(Path.GetTempPath(), "infra-queue-" + Guid.NewGuid().ToString("N")[..12]);

    public static async Task<QueueBrokerProcess> StartAsync(string dataDir, params string[] extra)
    {
        var args = new List<string> { "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir", dataDir };
        args.AddRange(extra);
        return new QueueBrokerProcess(await ServiceProcess.StartAsync(Artifacts.QueueBroker, args, expectedEndpoints: 2), dataDir);
    }

    public Task<QueueClient> ConnectAsync() => QueueClient.ConnectAsync("127.0.0.1", Port);

    public async Task<JsonElement> GetJsonAsync(string path) => await Http.GetFromJsonAsync<JsonElement>(path);

    public async Task<(int Status, JsonElement Body)> PostJsonAsync(string path, object body)
    {
        using var response = await Http.PostAsJsonAsync(path, body);
        return ((int)response.StatusCode, await response.Content.ReadFromJsonAsync<JsonElement>());
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await Process.DisposeAsync();
    }
}
