using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Infra.Cli;

/// <summary>Settings of <c>infra up</c>.</summary>
internal sealed record UpOptions(Topology Topology, string DataDir, int LbPort, bool RestartAlways, string BinRoot, string Configuration);

/// <summary>
/// <c>infra up</c>: starts every node of the topology as a child process on loopback, stage by stage
/// (caches, queue and masters; replicas; router; web nodes and workers; load balancer), each stage
/// waiting until its nodes answer /healthz; then watches them. A node that dies stays down (so
/// people can watch the rest heal) unless the restart policy is "always". Stop (Ctrl-C, SIGTERM,
/// or the control endpoint) stops the nodes in reverse order with SIGTERM, then SIGKILL for any
/// that did not exit in time.
/// </summary>
internal sealed class Supervisor : IAsyncDisposable
{
    public const string StateFile = "infra.json";
    private static readonly TimeSpan StartDeadline = TimeSpan.FromSeconds(90);
    private static readonly TimeSpan StopDeadline = TimeSpan.FromSeconds(15);
    private readonly UpOptions _options;
    private readonly List<Node> _nodes = [];
    private readonly HttpClient _http = new(new SocketsHttpHandler { UseProxy = false, PooledConnectionLifetime = TimeSpan.FromSeconds(30) }) { Timeout = TimeSpan.FromSeconds(2) };
    private readonly SemaphoreSlim _changes = new(1, 1);
    private readonly CancellationTokenSource _stopping = new();
    private readonly TextWriter _out;
    private readonly Lock _stateLock = new();
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    public Supervisor(UpOptions options, TextWriter output)
    {
        _options = options;
        _out = output;
        Directory.CreateDirectory(options.DataDir);
        Directory.CreateDirectory(Path.Combine(options.DataDir, "logs"));
        var specs = options.Topology.Nodes();
        var ports = Ports.LoadOrAssign(options.DataDir, specs, options.LbPort);
        foreach (var spec in specs)
        {
            var p = ports[spec.Name];
            _nodes.Add(new Node(spec, p[0], p.Length > 1 ? p[1] : p[0], Path.Combine(options.DataDir, "logs", spec.Name + ".log")));
        }
    }

    public IReadOnlyList<Node> Nodes => _nodes;

    public Node LoadBalancer => _nodes.Single(n => n.Spec.Kind == NodeKind.LoadBalancer);

    public Node Router => _nodes.Single(n => n.Spec.Kind == NodeKind.Router);

    public CancellationToken Stopping => _stopping.Token;

    public void RequestStop() => _stopping.Cancel();

    public Node? Find(string name) => _nodes.FirstOrDefault(n => n.Name == name);

    /// <summary>Starts everything; false (after stopping what started) when a node does not come up.</summary>
    public async Task<bool> StartAllAsync()
    {
        WriteSeedMap();
        foreach (var stage in _nodes.GroupBy(n => n.Spec.Stage).OrderBy(g => g.Key))
        {
            var results = await Task.WhenAll(stage.Select(node => StartAsync(node, _stopping.Token)));
            var failed = stage.Zip(results).Where(r => r.Second is not null).ToList();
            if (failed.Count > 0)
            {
                foreach (var (node, problem) in failed)
                {
                    await _out.WriteLineAsync($"infra: {node.Name} did not start: {problem}\n--- last lines of {node.LogPath} ---\n{node.Tail()}\n---");
                }

                return false;
            }
        }

        return true;
    }

    /// <summary>Starts one node and waits until it is healthy; the problem, or null when it is up.</summary>
    public async Task<string?> StartAsync(Node node, CancellationToken cancellationToken)
    {
        if (node.Pid is not null)
        {
            return null;
        }

        var dll = Path.Combine(_options.BinRoot, "src", node.Spec.Project, "bin", _options.Configuration, "net10.0", node.Spec.Assembly + ".dll");
        if (!File.Exists(dll))
        {
            return $"{dll} is not built (dotnet build -c {_options.Configuration})";
        }

        var args = new List<string> { dll };
        args.AddRange(await ArgumentsAsync(node));
        node.State = "starting";
        node.ExpectExit = false;
        var process = await Spawner.StartAsync("dotnet", args, node.LogPath);
        node.StartedAt = Environment.TickCount64;
        node.Attach(process);
        process.Exited += (_, _) => OnExited(node, process);
        WriteState();
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < StartDeadline && !cancellationToken.IsCancellationRequested)
        {
            if (process.HasExited)
            {
                return $"exited with code {process.ExitCode}";
            }

            if (await HealthyAsync(node))
            {
                node.State = "up";
                return null;
            }

            await Task.Delay(100, CancellationToken.None);
        }

        return cancellationToken.IsCancellationRequested ? "stopped while starting" : $"not healthy within {StartDeadline.TotalSeconds:0}s";
    }

    private void OnExited(Node node, Process process)
    {
        if (!ReferenceEquals(node.Process, process) || node.ExpectExit || _stopping.IsCancellationRequested)
        {
            return;
        }

        node.State = "exited";
        node.QuickExits = Environment.TickCount64 - node.StartedAt < (long)QuickExit.TotalMilliseconds ? node.QuickExits + 1 : 0;
        var delay = RestartDelay(node.QuickExits);
        _out.WriteLine($"infra: {node.Name} exited with code {SafeExitCode(process)} (log: {node.LogPath})"
            + (_options.RestartAlways ? $"; restarting it in {delay.TotalSeconds:0} s" : ""));
        if (_options.RestartAlways)
        {
            _ = Task.Run(async () =>
            {
                await Task.Delay(delay);
                await RestartAsync(node, kill: false);
            });
        }
    }

    /// <summary>A node that exits this soon after its start counts as one that cannot start.</summary>
    public static readonly TimeSpan QuickExit = TimeSpan.FromSeconds(30);

    /// <summary>
    /// How long to wait before restarting a node that exited: 1 s, doubling with each quick exit in a row up to
    /// a minute. A node that could not start (its port taken, its data refused) was restarted every second
    /// for as long as the stack ran — a whole .NET start each time on a 2-core machine.
    /// </summary>
    public static TimeSpan RestartDelay(int quickExits) => TimeSpan.FromSeconds(Math.Min(60, 1 << Math.Clamp(quickExits - 1, 0, 6)));

    /// <summary>SIGKILL, as a crash would. The node stays down unless the restart policy is "always".</summary>
    public async Task<bool> KillAsync(Node node)
    {
        await _changes.WaitAsync();
        try
        {
            if (node.Process is not { } process || node.Pid is null)
            {
                return false;
            }

            node.ExpectExit = true;
            Spawner.Signal(process.Id, 9);
            await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
            node.State = "killed";
            _out.WriteLine($"infra: killed {node.Name} (pid {process.Id})" + (_options.RestartAlways ? "; restarting it (--restart-policy always)" : "; it stays down until 'infra restart " + node.Name + "'"));
            if (_options.RestartAlways)
            {
                _ = Task.Run(async () =>
                {
                    await Task.Delay(1000);
                    await RestartAsync(node, kill: false);
                });
            }

            return true;
        }
        finally
        {
            _changes.Release();
        }
    }

    /// <summary>Stops the node if it runs (SIGTERM, then SIGKILL) and starts it again; the problem, or null.</summary>
    public async Task<string?> RestartAsync(Node node, bool kill)
    {
        await _changes.WaitAsync();
        try
        {
            if (_stopping.IsCancellationRequested)
            {
                return "infra is stopping";
            }

            if (kill)
            {
                await StopAsync(node);
            }

            node.Restarts++;
            var problem = await StartAsync(node, _stopping.Token);
            _out.WriteLine(problem is null ? $"infra: {node.Name} is up again (pid {node.Pid})" : $"infra: {node.Name} did not restart: {problem}");
            return problem;
        }
        finally
        {
            _changes.Release();
        }
    }

    /// <summary>Every node, in reverse start order: SIGTERM, wait, SIGKILL what is left.</summary>
    public async Task StopAllAsync()
    {
        _stopping.Cancel();
        await _changes.WaitAsync();
        try
        {
            foreach (var stage in _nodes.GroupBy(n => n.Spec.Stage).OrderByDescending(g => g.Key))
            {
                await Task.WhenAll(stage.Select(StopAsync));
            }
        }
        finally
        {
            _changes.Release();
        }

        WriteState();
    }

    private async Task StopAsync(Node node)
    {
        if (node.Process is not { } process || node.Pid is null)
        {
            node.CloseLog();
            return;
        }

        node.ExpectExit = true;
        Spawner.Signal(process.Id, 15);
        try
        {
            await process.WaitForExitAsync().WaitAsync(StopDeadline);
        }
        catch (TimeoutException)
        {
            _out.WriteLine($"infra: {node.Name} did not stop within {StopDeadline.TotalSeconds:0}s; SIGKILL");
            Spawner.Signal(process.Id, 9);
            await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
        }

        node.State = "stopped";
        node.CloseLog();
    }

    public async Task<bool> HealthyAsync(Node node)
    {
        try
        {
            using var response = await _http.GetAsync(new Uri(node.AdminUrl, "/healthz"));
            return response.IsSuccessStatusCode;
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
        {
            return false;
        }
    }

    /// <summary>One key figure per node from its /metrics (a counter summed over its labels), or "".</summary>
    public async Task<string> KeyMetricAsync(Node node)
    {
        var (metric, label) = node.Spec.Kind switch
        {
            NodeKind.LoadBalancer => ("infra_lb_requests", "requests"),
            NodeKind.Web => ("infra_web_redirects", "redirects"),
            NodeKind.Worker => ("infra_web_clicks_counted", "clicks counted"),
            NodeKind.Cache => ("infra_cache_keys", "keys"),
            NodeKind.Queue => ("infra_queue_produced_messages", "messages produced"),
            NodeKind.Router => ("infra_router_requests", "requests"),
            _ => ("infra_datanode_lsn", "lsn"),
        };
        try
        {
            var text = await _http.GetStringAsync(new Uri(node.AdminUrl, "/metrics"));
            return Metrics.Sum(text, metric) is { } value ? $"{value.ToString("0.##", CultureInfo.InvariantCulture)} {label}" : "";
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
        {
            return "";
        }
    }

    /// <summary>Each shard's master address and replicas, from the router (or its stored map when it is not up).</summary>
    public async Task<Dictionary<string, string>> MastersAsync()
    {
        var masters = new Dictionary<string, string>(StringComparer.Ordinal);
        JsonNode? map = null;
        if (Router.Pid is not null)
        {
            try
            {
                map = JsonNode.Parse(await _http.GetStringAsync(new Uri(Router.AdminUrl, "/shards")));
            }
            catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException or JsonException)
            {
                map = null;
            }
        }

        var stored = Path.Combine(_options.DataDir, "router", "shard-map.json");
        if (map is null && File.Exists(stored))
        {
            try
            {
                map = JsonNode.Parse(await File.ReadAllTextAsync(stored));
            }
            catch (JsonException)
            {
                map = null;
            }
        }

        foreach (var shard in map?["shards"]?.AsArray() ?? [])
        {
            if (shard?["id"]?.GetValue<string>() is { } id && shard["master"]?.GetValue<string>() is { } master)
            {
                masters[id] = master;
            }
        }

        return masters;
    }

    private async Task<IEnumerable<string>> ArgumentsAsync(Node node)
    {
        var d = _options.DataDir;
        var args = new List<string>();
        switch (node.Spec.Kind)
        {
            case NodeKind.Cache:
                args.AddRange(["--listen", node.Address, "--admin", $"127.0.0.1:{node.AdminPort}", "--maxmemory", "256mb"]);
                break;
            case NodeKind.Queue:
                args.AddRange(["--listen", node.Address, "--http", $"127.0.0.1:{node.AdminPort}", "--data-dir", Path.Combine(d, "queue"), "--visibility-timeout", "10s"]);
                break;
            case NodeKind.DataMaster or NodeKind.DataReplica:
                args.AddRange(["--listen", node.Address, "--http", $"127.0.0.1:{node.AdminPort}", "--data-dir", Path.Combine(d, node.Name)]);
                args.AddRange(await RoleArgumentsAsync(node));
                break;
            case NodeKind.Router:
                args.AddRange(["--listen", node.Address, "--http", $"127.0.0.1:{node.AdminPort}", "--shards", Path.Combine(d, "router", "shards.json"), "--data-dir", Path.Combine(d, "router")]);
                break;
            case NodeKind.Web:
                args.AddRange(["--listen", node.Address, "--node-id", node.Spec.Index.ToString(CultureInfo.InvariantCulture), "--router", Router.Address, "--queue", Queue.Address]);
                foreach (var cache in _nodes.Where(n => n.Spec.Kind == NodeKind.Cache))
                {
                    args.AddRange(["--cache", cache.Address]);
                }

                break;
            case NodeKind.Worker:
                args.AddRange(["--role", "worker", "--listen", node.Address, "--router", Router.Address, "--queue", Queue.Address]);
                break;
            case NodeKind.LoadBalancer:
                args.AddRange(["--listen", node.Address, "--admin", $"127.0.0.1:{node.AdminPort}", "--health-path", "/healthz", "--health-interval", "1s"]);
                foreach (var web in _nodes.Where(n => n.Spec.Kind == NodeKind.Web))
                {
                    args.AddRange(["--backend", $"http://{web.Address}"]);
                }

                break;
        }

        if (_options.Topology.Args.TryGetValue(node.Spec.ArgsKey, out var extra))
        {
            args.AddRange(extra);
        }

        return args;
    }

    private Node Queue => _nodes.Single(n => n.Spec.Kind == NodeKind.Queue);

    /// <summary>
    /// A data node starts as master only if the router's map says it is its shard's master; otherwise
    /// it follows whoever is. So a master killed and failed over comes back as a replica of the
    /// promoted one instead of a second master.
    /// </summary>
    private async Task<string[]> RoleArgumentsAsync(Node node)
    {
        var masters = await MastersAsync();
        var master = masters.TryGetValue(node.Spec.Shard!, out var current)
            ? current
            : _nodes.Single(n => n.Spec.Kind == NodeKind.DataMaster && n.Spec.Shard == node.Spec.Shard).Address;
        return master == node.Address ? ["--role", "master"] : ["--role", "replica", "--master", master];
    }

    private void WriteSeedMap()
    {
        var dir = Path.Combine(_options.DataDir, "router");
        Directory.CreateDirectory(dir);
        var shards = new JsonArray();
        foreach (var shard in _nodes.Where(n => n.Spec.Kind == NodeKind.DataMaster))
        {
            var replicas = new JsonArray([.. _nodes.Where(n => n.Spec.Kind == NodeKind.DataReplica && n.Spec.Shard == shard.Spec.Shard).Select(n => JsonValue.Create(n.Address))]);
            shards.Add(new JsonObject { ["id"] = shard.Spec.Shard, ["master"] = shard.Address, ["replicas"] = replicas });
        }

        File.WriteAllText(Path.Combine(dir, "shards.json"), new JsonObject { ["shards"] = shards }.ToJsonString());
    }

    public string? ControlUrl { get; set; }

    /// <summary>infra.json: where the control endpoint is, this process, and every child's pid (so a later run can clean up).</summary>
    public void WriteState()
    {
        lock (_stateLock)
        {
            WriteStateLocked();
        }
    }

    private void WriteStateLocked()
    {
        var children = new JsonObject();
        foreach (var node in _nodes)
        {
            if (node.Pid is { } pid)
            {
                children[node.Name] = pid;
            }
        }

        var state = new JsonObject
        {
            ["pid"] = Environment.ProcessId,
            ["control"] = ControlUrl,
            ["lb"] = $"http://{LoadBalancer.Address}",
            ["children"] = children,
        };
        var path = Path.Combine(_options.DataDir, StateFile);
        File.WriteAllText(path + ".tmp", state.ToJsonString(Indented));
        File.Move(path + ".tmp", path, overwrite: true);
    }

    private static string SafeExitCode(Process process)
    {
        try
        {
            return process.ExitCode.ToString(CultureInfo.InvariantCulture);
        }
        catch (InvalidOperationException)
        {
            return "?";
        }
    }

    public async ValueTask DisposeAsync()
    {
        _http.Dispose();
        _changes.Dispose();
        foreach (var node in _nodes)
        {
            node.Dispose();
        }

        _stopping.Dispose();
        await Task.CompletedTask;
    }
}
