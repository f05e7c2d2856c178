using System.Net.Http.Json;
using System.Text;
using System.Text.Json;

namespace Infra.IntegrationTests.Harness;

/// <summary>A data node process over a data directory the test owns (kept across restarts).</summary>
internal sealed class DataNodeProcess : IAsyncDisposable
{
    private DataNodeProcess(ServiceProcess process, string dataDir)
    {
        Process = process;
        DataDir = dataDir;
        ReplicationAddress = $"127.0.0.1:{process.Endpoints[0].Port}";
        Http = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { BaseAddress = process.AdminEndpoint!, Timeout = TimeSpan.FromSeconds(60) };
    }

    public ServiceProcess Process { get; }

    public string DataDir { get; }

    /// <summary>host:port of the replication listener (what replicas pass as --master).</summary>
    public string ReplicationAddress { get; }

    public HttpClient Http { get; }

    public static string NewDataDir() => Path.Combine(Path.GetTempPath(), "infra-node-" + Guid.NewGuid().ToString("N")[..12]);

    /// <summary>
    /// While this file exists, the WAL fsyncs of the node on <paramref name="dataDir"/> fail (the node's
    /// fault injection, INFRA_FAULT_WAL_SYNC_FILE, set for every node the tests start).
    /// </summary>
    public static string WalSyncFaultFile(string dataDir) => dataDir.TrimEnd('/') + ".fail-wal-sync";

    public static Task<DataNodeProcess> StartAsync(string dataDir, params string[] extra) =>
        StartAsync(dataDir, new Dictionary<string, string>(), extra);

    /// <summary>With more environment variables (the node's fault injection, e.g. INFRA_FAULT_SNAPSHOT_DELAY_MS).</summary>
    public static async Task<DataNodeProcess> StartAsync(string dataDir, IReadOnlyDictionary<string, string> variables, params string[] extra)
    {
        var args = new List<string> { "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir", dataDir };
        args.AddRange(extra);
        var environment = new Dictionary<string, string>(variables) { ["INFRA_FAULT_WAL_SYNC_FILE"] = WalSyncFaultFile(dataDir) };
        return new DataNodeProcess(await ServiceProcess.StartAsync(Artifacts.DataNode, args, expectedEndpoints: 2, environment), dataDir);
    }

    public async Task<(int Status, JsonElement Body)> PostAsync(string path, object body)
    {
        using var response = await Http.PostAsJsonAsync(path, body);
        return ((int)response.StatusCode, await response.Content.ReadFromJsonAsync<JsonElement>());
    }

    public async Task<(int Status, JsonElement Body)> PostRawAsync(string path, string body)
    {
        using var content = new StringContent(body, Encoding.UTF8, "application/json");
        using var response = await Http.PostAsync(path, content);
        var text = await response.Content.ReadAsStringAsync();
        return ((int)response.StatusCode, text.Length == 0 ? default : JsonDocument.Parse(text).RootElement.Clone());
    }

    /// <summary>Runs one write of statements <c>[sql, params...]</c>.</summary>
    public Task<(int Status, JsonElement Body)> ExecuteAsync(params object[][] statements) => PostAsync("/execute", new { statements });

    public async Task<JsonElement> QueryAsync(string sql, params object?[] args)
    {
        var (status, body) = await PostAsync("/query", new { sql, @params = args });
        Assert.True(status == 200, $"query {sql}: {status} {body}");
        return body;
    }

    public async Task<JsonElement> StatusAsync() => await Http.GetFromJsonAsync<JsonElement>("/status");

    public async Task<string> ChecksumAsync() => (await Http.GetFromJsonAsync<JsonElement>("/checksum")).GetProperty("checksum").GetString()!;

    public async Task<long> LsnAsync() => (await StatusAsync()).GetProperty("lsn").GetInt64();

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await Process.DisposeAsync();
    }
}
