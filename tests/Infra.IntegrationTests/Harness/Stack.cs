using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Infra.IntegrationTests.Harness;

/// <summary>One row of <c>GET /status</c> on infra up's control endpoint.</summary>
internal sealed record StackNode(string Name, string Role, string Url, int? Pid, string Health, string Metric, int Restarts)
{
    /// <summary>host:port of the node's main endpoint.</summary>
    public string Address => Regex.Match(Url, @"127\.0\.0\.1:\d+").Value;

    /// <summary>The node's HTTP admin URL (its own URL for web nodes).</summary>
    public Uri AdminUrl => Regex.Match(Url, @"\(HTTP (http://[^)]+)\)") is { Success: true } m ? new Uri(m.Groups[1].Value) : new Uri("http://" + Address);
}

/// <summary>
/// <c>infra up</c> run as a real process on a temporary data directory with the load balancer on a
/// free port; driven through its control endpoint (what <c>infra status/kill/restart</c> use).
/// </summary>
internal sealed partial class Stack : IAsyncDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _lines = new();
    private readonly TaskCompletionSource<(Uri Lb, Uri Control)> _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private Stack(Process process, string dataDir)
    {
        _process = process;
        DataDir = dataDir;
    }

    public string DataDir { get; }

    public Uri Lb { get; private set; } = null!;

    public Uri Control { get; private set; } = null!;

    public HttpClient Http { get; } = new(new SocketsHttpHandler { UseProxy = false, AllowAutoRedirect = false, UseCookies = false, MaxConnectionsPerServer = 64 }) { Timeout = TimeSpan.FromSeconds(30) };

    public string Output => string.Join('\n', _lines);

    public int Pid => _process.Id;

    /// <summary>SIGKILL to infra up itself.</summary>
    public void KillSupervisor() => _process.Kill(entireProcessTree: false);

    public bool HasExited => _process.HasExited;

    public static async Task<Stack> StartAsync(string? topologyJson = null, params string[] extraArgs)
    {
        var dataDir = Path.Combine(Path.GetTempPath(), "infra-stack-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dataDir);
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in new[] { Artifacts.Cli, "up", "--data-dir", dataDir, "--lb-port", "0" })
        {
            info.ArgumentList.Add(arg);
        }

        if (topologyJson is not null)
        {
            var file = Path.Combine(dataDir, "topology.json");
            await File.WriteAllTextAsync(file, topologyJson);
            info.ArgumentList.Add("--topology");
            info.ArgumentList.Add(file);
        }

        foreach (var arg in extraArgs)
        {
            info.ArgumentList.Add(arg);
        }

        var process = new Process { StartInfo = info, EnableRaisingEvents = true };
        var stack = new Stack(process, dataDir);
        process.OutputDataReceived += (_, e) => stack.OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => stack.OnLine(e.Data);
        process.Exited += (_, _) => stack._ready.TrySetException(new InvalidOperationException("infra up exited before the stack was up:\n" + stack.Output));
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            (stack.Lb, stack.Control) = await stack._ready.Task.WaitAsync(TimeSpan.FromSeconds(150));
        }
        catch
        {
            await stack.DisposeAsync();
            throw;
        }

        return stack;
    }

    private Uri? _control;

    private void OnLine(string? line)
    {
        if (line is null)
        {
            return;
        }

        _lines.Enqueue(line);
        if (ControlLine().Match(line) is { Success: true } control)
        {
            _control = new Uri(control.Groups[1].Value);
        }

        if (OpenLine().Match(line) is { Success: true } open && _control is not null)
        {
            _ready.TrySetResult((new Uri(open.Groups[1].Value), _control));
        }
    }

    public async Task<StackNode[]> StatusAsync() =>
        await Http.GetFromJsonAsync<StackNode[]>(new Uri(Control, "/status"), new JsonSerializerOptions(JsonSerializerDefaults.Web)) ?? [];

    public async Task<StackNode> NodeAsync(string name) => (await StatusAsync()).Single(n => n.Name == name);

    public async Task KillAsync(string name)
    {
        using var response = await Http.PostAsync(new Uri(Control, $"/nodes/{name}/kill"), null);
        Assert.True(response.IsSuccessStatusCode, $"kill {name}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
    }

    public async Task RestartAsync(string name)
    {
        using var response = await Http.PostAsync(new Uri(Control, $"/nodes/{name}/restart"), null);
        Assert.True(response.IsSuccessStatusCode, $"restart {name}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}\n{Output}");
    }

    /// <summary>
    /// The failures the named nodes logged (a "fail:" or "crit:" line, after its timestamp, and the
    /// lines after it, which carry the exception's stack), for a failing test's message: the logs go with the data
    /// directory when the stack stops.
    /// </summary>
    public string FailuresLogged(string namePrefix, int maxLines = 40)
    {
        var dir = Path.Combine(DataDir, "logs");
        if (!Directory.Exists(dir))
        {
            return "(no logs)";
        }

        var found = new List<string>();
        foreach (var file in Directory.GetFiles(dir, namePrefix + "*.log").Order(StringComparer.Ordinal))
        {
            using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            using var reader = new StreamReader(stream);
            var name = Path.GetFileNameWithoutExtension(file);
            var after = 0;
            for (var line = reader.ReadLine(); line is not null && found.Count < maxLines; line = reader.ReadLine())
            {
                if (line.Contains("fail: ", StringComparison.Ordinal) || line.Contains("crit: ", StringComparison.Ordinal))
                {
                    after = 4;
                }

                if (after > 0)
                {
                    found.Add(name + ": " + line);
                    after--;
                }
            }
        }

        return found.Count == 0 ? "(nothing logged as failed)" : string.Join('\n', found);
    }

    /// <summary>Every node healthy again (after a test restarted what it killed).</summary>
    public Task AllUpAsync() => Eventually.HoldsAsync(async () => (await StatusAsync()).All(n => n.Health == "up"), "every node is up", TimeSpan.FromSeconds(60));

    /// <summary>The shard that owns a link code, from the router's map.</summary>
    public async Task<string> ShardOfAsync(string code)
    {
        var router = await NodeAsync("router");
        var map = await Http.GetFromJsonAsync<JsonElement>(new Uri(router.AdminUrl, "/shards"));
        return ShardCluster.OwnerOf(map, code);
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (!_process.HasExited)
            {
                using var response = await Http.PostAsync(new Uri(Control ?? new Uri("http://127.0.0.1:1"), "/stop"), null);
                await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
            }
        }
        catch (Exception ex) when (ex is HttpRequestException or TimeoutException or TaskCanceledException or InvalidOperationException)
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
            }
        }

        _process.Dispose();
        Http.Dispose();
        try
        {
            Directory.Delete(DataDir, recursive: true);
        }
        catch (IOException)
        {
            // A process still closing a file; the temp dir is cleaned later.
        }
    }

    [GeneratedRegex(@"^Open (http://\S+)$")]
    private static partial Regex OpenLine();

    [GeneratedRegex(@"^Control: (http://\S+?)/? ")]
    private static partial Regex ControlLine();
}

/// <summary>The default topology, started once for every test of the <see cref="StackGroup"/> collection.</summary>
public sealed class StackFixture : IAsyncLifetime
{
    internal Stack Stack { get; private set; } = null!;

    public async Task InitializeAsync() => Stack = await Stack.StartAsync();

    public async Task DisposeAsync() => await Stack.DisposeAsync();
}

[CollectionDefinition(Name)]
public sealed class StackGroup : ICollectionFixture<StackFixture>
{
    public const string Name = "stack";
}
