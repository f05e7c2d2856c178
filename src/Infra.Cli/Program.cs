using System.Globalization;
using System.Net.Http.Json;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using Infra.Cli;

return await Cli.RunAsync(args);

namespace Infra.Cli
{
    internal static class Cli
    {
        private const string Usage = """
            infra: run the whole Infra stack on this machine.

            Usage:
              infra up [--topology topology.json] [--data-dir ./data] [--lb-port 8080] [--restart-policy never|always]
              infra status  [--data-dir ./data]     every node: health, role, one key metric
              infra kill    <name> [--data-dir ./data]   SIGKILL one node (it stays down unless --restart-policy always)
              infra restart <name> [--data-dir ./data]   start it again (stopping it first if it runs)
              infra down    [--data-dir ./data]     stop a running 'infra up' (as Ctrl-C does)

            Nodes: lb, web-1..3, worker-1, cache-1..3, queue, router, s0-master, s0-replica, s1-master, s1-replica.
            up prints every node's URL and "Open http://127.0.0.1:<port>" (the load balancer) once all are healthy;
            logs are in <data-dir>/logs/<name>.log. --lb-port 0 picks a free port. topology.json may set
            webNodes, workers, caches, shards, replicasPerShard and "args": {"lb": ["--algorithm", "least-connections"], ...}.
            """;

        public static async Task<int> RunAsync(string[] args)
        {
            if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
            {
                Console.WriteLine(Usage);
                return args.Length == 0 ? 2 : 0;
            }

            var (positional, flags, problem) = Parse(args.Skip(1));
            if (problem is not null)
            {
                await Console.Error.WriteLineAsync("infra: " + problem);
                return 2;
            }

            var dataDir = Path.GetFullPath(flags.GetValueOrDefault("data-dir", "./data"));
            try
            {
                return args[0] switch
                {
                    "up" => await UpAsync(flags, dataDir),
                    "status" => await StatusAsync(dataDir),
                    "kill" or "restart" when positional.Count == 1 => await NodeCommandAsync(dataDir, positional[0], args[0]),
                    "kill" or "restart" => Fail($"{args[0]} takes one node name"),
                    "down" => await DownAsync(dataDir),
                    _ => Fail($"unknown command '{args[0]}' (up, status, kill, restart, down)"),
                };
            }
            catch (InvalidDataException ex)
            {
                return Fail(ex.Message);
            }
        }

        private static int NotAnswering(Uri control, HttpRequestException ex)
        {
            Console.Error.WriteLine($"infra: the control endpoint {control} does not answer ({ex.Message}); is 'infra up' still running?");
            return 1;
        }

        private static int Fail(string message)
        {
            Console.Error.WriteLine("infra: " + message);
            return 2;
        }

        private static (List<string> Positional, Dictionary<string, string> Flags, string? Problem) Parse(IEnumerable<string> args)
        {
            var positional = new List<string>();
            var flags = new Dictionary<string, string>(StringComparer.Ordinal);
            var list = args.ToList();
            for (var i = 0; i < list.Count; i++)
            {
                if (!list[i].StartsWith("--", StringComparison.Ordinal))
                {
                    positional.Add(list[i]);
                    continue;
                }

                var name = list[i][2..];
                var eq = name.IndexOf('=', StringComparison.Ordinal);
                if (eq >= 0)
                {
                    flags[name[..eq]] = name[(eq + 1)..];
                }
                else if (i + 1 < list.Count)
                {
                    flags[name] = list[++i];
                }
                else
                {
                    return (positional, flags, $"--{name} needs a value");
                }
            }

            var unknown = flags.Keys.FirstOrDefault(k => k is not ("topology" or "data-dir" or "lb-port" or "restart-policy" or "configuration" or "bin-root"));
            return (positional, flags, unknown is null ? null : $"unknown flag --{unknown}");
        }

        private static async Task<int> UpAsync(Dictionary<string, string> flags, string dataDir)
        {
            var topology = flags.TryGetValue("topology", out var file) ? Topology.Load(file) : new Topology();
            if (!int.TryParse(flags.GetValueOrDefault("lb-port", "8080"), NumberStyles.None, CultureInfo.InvariantCulture, out var lbPort) || lbPort > 65535)
            {
                return Fail("--lb-port must be a port number (0 picks a free one)");
            }

            var policy = flags.GetValueOrDefault("restart-policy", "never");
            if (policy is not ("never" or "always"))
            {
                return Fail("--restart-policy must be never or always");
            }

            var binRoot = flags.TryGetValue("bin-root", out var root) ? Path.GetFullPath(root) : RepositoryRoot();
            var configuration = flags.GetValueOrDefault("configuration", OwnConfiguration());
            Directory.CreateDirectory(dataDir);
            if (await CleanUpEarlierRunAsync(dataDir) is { } running)
            {
                return Fail(running);
            }

            if (topology.CheckDataShape(dataDir) is { } mismatch)
            {
                return Fail(mismatch);
            }

            if (lbPort != 0 && !Ports.IsFree(lbPort))
            {
                return Fail($"port {lbPort} (the load balancer's) is taken; free it or pass --lb-port 0 (or another port)");
            }

            await using var supervisor = new Supervisor(new UpOptions(topology, dataDir, lbPort, policy == "always", binRoot, configuration), Console.Out);
            await using var control = new ControlServer(supervisor);
            supervisor.ControlUrl = await control.StartAsync();
            supervisor.WriteState();
            using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
            using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
            using var sighup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, Stop);

            Console.WriteLine($"infra: starting {supervisor.Nodes.Count} nodes (data in {dataDir}, logs in {Path.Combine(dataDir, "logs")})");
            var started = await supervisor.StartAllAsync();
            if (started)
            {
                PrintTable(supervisor);
                Console.WriteLine($"Control: {supervisor.ControlUrl} (infra status / kill / restart --data-dir {dataDir})");
                Console.WriteLine($"Open http://{supervisor.LoadBalancer.Address}");
                try
                {
                    await Task.Delay(Timeout.Infinite, supervisor.Stopping);
                }
                catch (OperationCanceledException)
                {
                    // Ctrl-C, SIGTERM or POST /stop.
                }
            }

            Console.WriteLine("infra: stopping every node");
            await supervisor.StopAllAsync();
            File.Delete(Path.Combine(dataDir, Supervisor.StateFile));
            Console.WriteLine("infra: stopped");
            return started ? 0 : 1;

            void Stop(PosixSignalContext context)
            {
                context.Cancel = true;
                supervisor.RequestStop();
            }
        }

        private static void PrintTable(Supervisor supervisor)
        {
            var rows = supervisor.Nodes.Select(n => (n.Name, Role: n.Spec.Describe, n.Url)).ToList();
            var w1 = Math.Max(4, rows.Max(r => r.Name.Length));
            var w2 = Math.Max(4, rows.Max(r => r.Role.Length));
            Console.WriteLine($"{"NAME".PadRight(w1)}  {"ROLE".PadRight(w2)}  URL");
            foreach (var (name, role, url) in rows)
            {
                Console.WriteLine($"{name.PadRight(w1)}  {role.PadRight(w2)}  {url}");
            }
        }

        /// <summary>
        /// Refuses to start over a live <c>infra up</c> on the same data directory; kills children a
        /// dead one left behind (only processes that are Infra services).
        /// </summary>
        private static async Task<string?> CleanUpEarlierRunAsync(string dataDir)
        {
            var path = Path.Combine(dataDir, Supervisor.StateFile);
            if (!File.Exists(path))
            {
                return null;
            }

            var state = JsonNode.Parse(await File.ReadAllTextAsync(path));
            if (state?["pid"]?.GetValue<int>() is { } pid && pid != Environment.ProcessId && Spawner.IsAlive(pid) && CommandLineOf(pid).Contains("Infra.Cli", StringComparison.Ordinal))
            {
                return $"infra up is already running on {dataDir} (pid {pid}); 'infra down --data-dir {dataDir}' stops it";
            }

            foreach (var (name, value) in state?["children"]?.AsObject() ?? [])
            {
                if (value?.GetValue<int>() is { } child && Spawner.IsAlive(child) && CommandLineOf(child).Contains("Infra.", StringComparison.Ordinal))
                {
                    Console.WriteLine($"infra: killing {name} (pid {child}) left by an earlier run");
                    Spawner.Signal(child, 9);
                }
            }

            File.Delete(path);
            return null;
        }

        private static string CommandLineOf(int pid)
        {
            try
            {
                return File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ');
            }
            catch (IOException)
            {
                return "";
            }
            catch (UnauthorizedAccessException)
            {
                return "";
            }
        }

        private static async Task<(HttpClient Http, Uri Control)?> ConnectAsync(string dataDir)
        {
            var path = Path.Combine(dataDir, Supervisor.StateFile);
            if (!File.Exists(path) || JsonNode.Parse(await File.ReadAllTextAsync(path))?["control"]?.GetValue<string>() is not { } control)
            {
                await Console.Error.WriteLineAsync($"infra: no 'infra up' is running on {dataDir} (no {path})");
                return null;
            }

            return (new HttpClient(new SocketsHttpHandler { UseProxy = false }) { Timeout = TimeSpan.FromMinutes(2) }, new Uri(control));
        }

        private static async Task<int> StatusAsync(string dataDir)
        {
            if (await ConnectAsync(dataDir) is not var (http, control))
            {
                return 1;
            }

            using (http)
            {
                StatusRow[] rows;
                try
                {
                    rows = await http.GetFromJsonAsync(new Uri(control, "/status"), CliJson.Default.StatusRowArray) ?? [];
                }
                catch (HttpRequestException ex)
                {
                    return NotAnswering(control, ex);
                }

                var table = rows.Select(r => new[] { r.Name, r.Health, r.Role, r.Metric, r.Pid?.ToString(CultureInfo.InvariantCulture) ?? "-", r.Url }).ToList();
                string[] header = ["NODE", "HEALTH", "ROLE", "KEY METRIC", "PID", "URL"];
                var widths = header.Select((h, i) => Math.Max(h.Length, table.Count == 0 ? 0 : table.Max(r => r[i].Length))).ToArray();
                Console.WriteLine(string.Join("  ", header.Select((h, i) => h.PadRight(widths[i]))).TrimEnd());
                foreach (var row in table)
                {
                    Console.WriteLine(string.Join("  ", row.Select((c, i) => c.PadRight(widths[i]))).TrimEnd());
                }

                return 0;
            }
        }

        private static async Task<int> NodeCommandAsync(string dataDir, string name, string verb)
        {
            if (await ConnectAsync(dataDir) is not var (http, control))
            {
                return 1;
            }

            using (http)
            {
                try
                {
                    using var response = await http.PostAsync(new Uri(control, $"/nodes/{Uri.EscapeDataString(name)}/{verb}"), null);
                    var text = await response.Content.ReadAsStringAsync();
                    await (response.IsSuccessStatusCode ? Console.Out : Console.Error).WriteAsync(text);
                    return response.IsSuccessStatusCode ? 0 : 1;
                }
                catch (HttpRequestException ex)
                {
                    return NotAnswering(control, ex);
                }
                catch (TaskCanceledException)
                {
                    // HttpClient's timeout (a restart queued behind another): a line, not a stack trace.
                    return Fail($"infra up did not finish the {verb} of {name} within {http.Timeout.TotalSeconds:0} s; see 'infra status'");
                }
            }
        }

        private static async Task<int> DownAsync(string dataDir)
        {
            if (await ConnectAsync(dataDir) is not var (http, control))
            {
                return 1;
            }

            using (http)
            {
                try
                {
                    using var response = await http.PostAsync(new Uri(control, "/stop"), null);
                }
                catch (HttpRequestException ex)
                {
                    return NotAnswering(control, ex);
                }

                // A stop can take its 15 s per stage over the five stages.
                var path = Path.Combine(dataDir, Supervisor.StateFile);
                var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(150);
                while (File.Exists(path) && DateTime.UtcNow < deadline)
                {
                    await Task.Delay(200);
                }

                Console.WriteLine(File.Exists(path) ? "infra: still stopping" : "infra: stopped");
                return File.Exists(path) ? 1 : 0;
            }
        }

        private static string RepositoryRoot()
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Infra.sln")))
                {
                    return dir.FullName;
                }
            }

            throw new InvalidDataException("cannot find the repository (Infra.sln) above " + AppContext.BaseDirectory + "; pass --bin-root");
        }

        /// <summary>Debug or Release: the folder after bin/ in this program's path, so the services run as built with it.</summary>
        private static string OwnConfiguration()
        {
            var parts = AppContext.BaseDirectory.Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries);
            var bin = Array.LastIndexOf(parts, "bin");
            return bin >= 0 && bin + 1 < parts.Length ? parts[bin + 1] : "Debug";
        }
    }
}
