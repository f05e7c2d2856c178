using System.Diagnostics;
using System.Globalization;

namespace Infra.Cli;

/// <summary>A node of the running topology: its ports, its process (when running) and its log.</summary>
internal sealed class Node(NodeSpec spec, int port, int adminPort, string logPath) : IDisposable
{
    private readonly Lock _lock = new();
    private readonly Queue<string> _tail = new();
    private StreamWriter? _log;

    public NodeSpec Spec { get; } = spec;

    public string Name => Spec.Name;

    /// <summary>The service's main port (the site for web nodes, RESP for caches, the protocol for the rest).</summary>
    public int Port { get; } = port;

    /// <summary>Where /healthz and /metrics are (the same as <see cref="Port"/> for web nodes and workers).</summary>
    public int AdminPort { get; } = adminPort;

    public string Address => "127.0.0.1:" + Port.ToString(CultureInfo.InvariantCulture);

    public Uri AdminUrl => new($"http://127.0.0.1:{AdminPort.ToString(CultureInfo.InvariantCulture)}");

    public string LogPath { get; } = logPath;

    public Process? Process { get; private set; }

    /// <summary>starting, up, killed (by infra kill), exited (on its own), stopped.</summary>
    public string State { get; set; } = "stopped";

    /// <summary>True while a stop or kill we asked for is under way: its exit is expected.</summary>
    public bool ExpectExit { get; set; }

    public int Restarts { get; set; }

    /// <summary>When the running process was started (Environment.TickCount64).</summary>
    public long StartedAt { get; set; }

    /// <summary>Exits in a row each within <see cref="Supervisor.QuickExit"/> of its start (a node that cannot start).</summary>
    public int QuickExits { get; set; }

    public int? Pid => Process is { } p && !HasExited(p) ? p.Id : null;

    public string Url => Spec.Kind switch
    {
        NodeKind.Web or NodeKind.LoadBalancer => $"http://{Address}",
        NodeKind.Worker => $"http://{Address} (/healthz, /metrics)",
        NodeKind.Cache => $"redis://{Address}",
        NodeKind.Queue => $"{Address} (HTTP {AdminUrl})",
        _ => $"{Address} (HTTP {AdminUrl})",
    };

    public void Attach(Process process)
    {
        lock (_lock)
        {
            DisposeLog();
            _log = new StreamWriter(new FileStream(LogPath, FileMode.Append, FileAccess.Write, FileShare.ReadWrite)) { AutoFlush = true };
            _tail.Clear();
        }

        Process = process;
        process.OutputDataReceived += (_, e) => OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => OnLine(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    /// <summary>Closes the log (under the lock); what it still buffers is lost when the disk is full.</summary>
    private void DisposeLog()
    {
        try
        {
            _log?.Dispose();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
        }

        _log = null;
    }

    /// <summary>Output lines that could not be written to the node's log (the disk was full).</summary>
    public long LostLogLines { get; private set; }

    /// <summary>The last lines the process wrote (for a start that failed).</summary>
    public string Tail()
    {
        lock (_lock)
        {
            return string.Join('\n', _tail);
        }
    }

    private void OnLine(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_lock)
        {
            try
            {
                _log?.WriteLine(line);
            }
            catch (Exception ex) when (ex is IOException or ObjectDisposedException or UnauthorizedAccessException)
            {
                // A full disk (or a log taken away): the line is lost, and counted. Thrown from here it ended
                // the whole `infra up` (this runs on the runtime's output reader), and every node with it.
                LostLogLines++;
            }

            _tail.Enqueue(line);
            while (_tail.Count > 30)
            {
                _tail.Dequeue();
            }
        }
    }

    public void CloseLog()
    {
        lock (_lock)
        {
            DisposeLog();
            _log = null;
        }
    }

    public void Dispose() => CloseLog();

    private static bool HasExited(Process process)
    {
        try
        {
            return process.HasExited;
        }
        catch (InvalidOperationException)
        {
            return true;
        }
    }
}
