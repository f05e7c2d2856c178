using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Infra.Core.Placement;

namespace Infra.IntegrationTests.Harness;

/// <summary>One shard: a master and a replica data node (semi-sync), each with its own data directory.</summary>
internal sealed class ShardNodes(string id, DataNodeProcess master, DataNodeProcess replica, string masterDir, string replicaDir)
{
    public string Id { get; } = id;

    public DataNodeProcess Master { get; set; } = master;

    public DataNodeProcess Replica { get; set; } = replica;

    public string MasterDir { get; } = masterDir;

    public string ReplicaDir { get; } = replicaDir;

    public string Json => $$"""{"id":"{{Id}}","master":"{{Master.ReplicationAddress}}","replicas":["{{Replica.ReplicationAddress}}"]}""";

    public static async Task<ShardNodes> StartAsync(string id, Func<string> newDir)
    {
        var masterDir = newDir();
        var replicaDir = newDir();
        var master = await DataNodeProcess.StartAsync(masterDir, "--role", "master");
        var replica = await DataNodeProcess.StartAsync(replicaDir, "--role", "replica", "--master", master.ReplicationAddress);
        return new ShardNodes(id, master, replica, masterDir, replicaDir);
    }
}

/// <summary>A shard router process over shards the test started, with a JSON client for its HTTP API.</summary>
internal sealed class ShardCluster : IAsyncDisposable
{
    private readonly List<string> _dirs = [];
    private List<string> _routerArgs = [];

    private ShardCluster()
    {
    }

    public List<ShardNodes> Shards { get; } = [];

    public ServiceProcess Router { get; private set; } = null!;

    public HttpClient Http { get; private set; } = null!;

    /// <summary>The router's --data-dir (its stored map and router-id).</summary>
    public string RouterDir { get; private set; } = "";

    /// <summary>host:port of the router's MessagePack listener.</summary>
    public string RouterAddress => $"127.0.0.1:{Router.Endpoints[0].Port}";

    public string NewDir()
    {
        var dir = DataNodeProcess.NewDataDir();
        _dirs.Add(dir);
        return dir;
    }

    public static async Task<ShardCluster> StartAsync(int shards, params string[] routerArgs)
    {
        var cluster = new ShardCluster();
        try
        {
            for (var i = 0; i < shards; i++)
            {
                cluster.Shards.Add(await ShardNodes.StartAsync($"s{i}", cluster.NewDir));
            }

            await cluster.StartRouterAsync($$"""{"shards":[{{string.Join(",", cluster.Shards.Select(s => s.Json))}}]}""", routerArgs);
            await Eventually.HoldsAsync(async () => (await cluster.Http.GetAsync("/healthz")).IsSuccessStatusCode, "the router is ready", TimeSpan.FromSeconds(30));
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// Stops the router (if one runs) and starts a new one with a fresh data directory and
    /// <paramref name="seedJson"/> as its --shards file (a whole map may be given: owners, cleanups).
    /// Returns once it listens (its /healthz may still say a shard is down).
    /// </summary>
    public async Task StartRouterAsync(string seedJson, params string[] routerArgs)
    {
        Http?.Dispose();
        if (Router is not null)
        {
            await Router.DisposeAsync();
        }

        var routerDir = RouterDir = NewDir();
        Directory.CreateDirectory(routerDir);
        var seed = Path.Combine(routerDir, "shards.json");
        await File.WriteAllTextAsync(seed, seedJson);
        var args = new List<string> { "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--shards", seed, "--data-dir", routerDir, "--probe-interval", "200ms", "--probe-timeout", "300ms" };
        args.AddRange(routerArgs);
        _routerArgs = args;
        await LaunchRouterAsync();
    }

    /// <summary>
    /// SIGKILLs the router and starts it again with the same arguments and data directory (its stored
    /// map wins over the seed), on new ports. Returns once it listens.
    /// </summary>
    public async Task RestartRouterAsync()
    {
        Router.Kill();
        await Router.WaitForExitAsync(TimeSpan.FromSeconds(10));
        Http.Dispose();
        await Router.DisposeAsync();
        await LaunchRouterAsync();
    }

    private async Task LaunchRouterAsync()
    {
        Router = await ServiceProcess.StartAsync(Artifacts.ShardRouter, _routerArgs, expectedEndpoints: 2);
        Http = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { BaseAddress = Router.AdminEndpoint!, Timeout = TimeSpan.FromSeconds(60) };
    }

    /// <summary>POSTs the body as JSON with a Content-Length, as most clients send it (<see cref="PostChunkedAsync"/> for the other way).</summary>
    public Task<(int Status, JsonElement Body)> PostAsync(string path, object body) => PostRawAsync(path, JsonSerializer.Serialize(body));

    /// <summary>POSTs the body as JSON in chunked transfer encoding (no Content-Length).</summary>
    public async Task<(int Status, JsonElement Body)> PostChunkedAsync(string path, object body)
    {
        using var response = await Http.PostAsJsonAsync(path, body);
        Assert.Null(response.RequestMessage?.Content?.Headers.ContentLength);
        var text = await response.Content.ReadAsStringAsync();
        return ((int)response.StatusCode, text.Length == 0 ? default : JsonDocument.Parse(text).RootElement.Clone());
    }

    public async Task<(int Status, JsonElement Body)> PostRawAsync(string path, string body)
    {
        using var content = new StringContent(body, Encoding.UTF8, "application/json");
        using var response = await Http.PostAsync(path, content);
        var text = await response.Content.ReadAsStringAsync();
        return ((int)response.StatusCode, text.Length == 0 ? default : JsonDocument.Parse(text).RootElement.Clone());
    }

    public Task<(int Status, JsonElement Body)> ExecuteAsync(object key, params object?[][] statements) => PostAsync("/db/execute", new { key, statements });

    public async Task<JsonElement> QueryAsync(object body)
    {
        var (status, answer) = await PostAsync("/db/query", body);
        Assert.True(status == 200, $"query: {status} {answer}");
        return answer;
    }

    public async Task<JsonElement> ShardsAsync() => await Http.GetFromJsonAsync<JsonElement>("/shards");

    /// <summary>The shard that owns <paramref name="key"/> according to the router's map.</summary>
    public static string OwnerOf(JsonElement map, object key)
    {
        var slot = ShardKey.Slot(key, map.GetProperty("slots").GetInt32());
        foreach (var run in map.GetProperty("owners").EnumerateArray())
        {
            if (slot >= run[1].GetInt32() && slot <= run[2].GetInt32())
            {
                return run[0].GetString()!;
            }
        }

        throw new InvalidOperationException($"slot {slot} has no owner");
    }

    /// <summary>The owner of every slot in <paramref name="map"/> (GET /shards).</summary>
    public static string[] SlotOwners(JsonElement map)
    {
        var owners = new string[map.GetProperty("slots").GetInt32()];
        foreach (var run in map.GetProperty("owners").EnumerateArray())
        {
            Array.Fill(owners, run[0].GetString()!, run[1].GetInt32(), run[2].GetInt32() - run[1].GetInt32() + 1);
        }

        return owners;
    }

    /// <summary>
    /// A whole map to seed a router with: <paramref name="map"/>'s next version and tables, the given
    /// shards (JSON objects, comma-separated) and these slot owners (written as runs of consecutive slots).
    /// </summary>
    public static string SeedMap(JsonElement map, string shardsJson, string[] owners)
    {
        var runs = new List<string>();
        for (var from = 0; from < owners.Length;)
        {
            var to = from;
            while (to + 1 < owners.Length && owners[to + 1] == owners[from])
            {
                to++;
            }

            runs.Add($"""["{owners[from]}",{from},{to}]""");
            from = to + 1;
        }

        return $$"""
            {"version":{{map.GetProperty("version").GetInt64() + 1}},"slots":{{owners.Length}},"shards":[{{shardsJson}}],
             "tables":{{map.GetProperty("tables").GetRawText()}},"owners":[{{string.Join(",", runs)}}]}
            """;
    }

    public async ValueTask DisposeAsync()
    {
        Http?.Dispose();
        if (Router is not null)
        {
            await Router.DisposeAsync();
        }

        foreach (var shard in Shards)
        {
            await shard.Replica.DisposeAsync();
            await shard.Master.DisposeAsync();
        }

        foreach (var dir in _dirs.Where(Directory.Exists))
        {
            try
            {
                Directory.Delete(dir, recursive: true);
            }
            catch (IOException)
            {
                // A process still closing a file; the temp dir is cleaned later.
            }
        }
    }
}
