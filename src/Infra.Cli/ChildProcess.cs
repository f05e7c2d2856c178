using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Infra.Cli;

/// <summary>
/// Starts child processes so that none outlives <c>infra up</c>: through <c>setpriv --pdeathsig
/// TERM</c> when it is there, so the kernel sends SIGTERM to a child whose parent died, even by
/// SIGKILL. The parent-death signal fires when the spawning <em>thread</em> ends, so every child is
/// started from one dedicated thread that lives as long as the process. Each child runs in a session
/// of its own (<c>setsid</c>, which execs in place: same pid): a terminal's Ctrl-C reached every child
/// at once and they all stopped together, not in the supervisor's order (load balancer first).
/// </summary>
internal static partial class Spawner
{
    private static readonly BlockingCollection<(ProcessStartInfo Info, TaskCompletionSource<Process> Done)> Requests = [];
    private static readonly Lazy<bool> HasSetpriv = new(() => File.Exists("/usr/bin/setpriv") && RuntimeInformation.IsOSPlatform(OSPlatform.Linux));
    private static readonly Lazy<bool> HasSetsid = new(() => File.Exists("/usr/bin/setsid") && RuntimeInformation.IsOSPlatform(OSPlatform.Linux));

    static Spawner()
    {
        var thread = new Thread(Run) { IsBackground = true, Name = "infra-spawner" };
        thread.Start();
    }

    public static Task<Process> StartAsync(string file, IEnumerable<string> args, string logPath)
    {
        var info = new ProcessStartInfo(HasSetsid.Value ? "/usr/bin/setsid" : HasSetpriv.Value ? "/usr/bin/setpriv" : file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = false,
            UseShellExecute = false,
        };
        if (HasSetsid.Value)
        {
            info.ArgumentList.Add(HasSetpriv.Value ? "/usr/bin/setpriv" : file);
        }

        if (HasSetpriv.Value)
        {
            info.ArgumentList.Add("--pdeathsig");
            info.ArgumentList.Add("TERM");
            info.ArgumentList.Add("--");
            info.ArgumentList.Add(file);
        }

        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        info.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        var done = new TaskCompletionSource<Process>(TaskCreationOptions.RunContinuationsAsynchronously);
        Requests.Add((info, done));
        return done.Task;
    }

    private static void Run()
    {
        foreach (var (info, done) in Requests.GetConsumingEnumerable())
        {
            try
            {
                var process = new Process { StartInfo = info, EnableRaisingEvents = true };
                process.Start();
                done.SetResult(process);
            }
            catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or InvalidOperationException or IOException)
            {
                done.SetException(ex);
            }
        }
    }

    public static bool Signal(int pid, int signal) => Kill(pid, signal) == 0;

    public static bool IsAlive(int pid) => Kill(pid, 0) == 0;

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
