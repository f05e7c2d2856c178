using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;

namespace Infra.IntegrationTests.Harness;

/// <summary>
/// A service run as a real process (<c>dotnet some.dll …</c>). Start waits for its
/// <c>Listening on …</c> lines to learn the real ports; the process can be sent SIGTERM or SIGKILL.
/// </summary>
internal sealed partial class ServiceProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _lines = new();
    private readonly List<Uri> _endpoints = [];
    private readonly Lock _lock = new();
    private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly int _expectedEndpoints;

    private ServiceProcess(Process process, int expectedEndpoints)
    {
        _process = process;
        _expectedEndpoints = expectedEndpoints;
    }

    public int Id => _process.Id;

    public bool HasExited => _process.HasExited;

    /// <summary>Endpoints in the order the service announced them.</summary>
    public IReadOnlyList<Uri> Endpoints
    {
        get
        {
            lock (_lock)
            {
                return [.. _endpoints];
            }
        }
    }

    public Uri? AdminEndpoint { get; private set; }

    public string Output => string.Join('\n', _lines);

    public static async Task<ServiceProcess> StartAsync(string dll, IEnumerable<string> args, int expectedEndpoints, IDictionary<string, string>? environment = null)
    {
        var info = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(dll);
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        info.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            info.Environment[key] = value;
        }

        var process = new Process { StartInfo = info, EnableRaisingEvents = true };
        var service = new ServiceProcess(process, expectedEndpoints);
        process.OutputDataReceived += (_, e) => service.OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => service.OnLine(e.Data);
        process.Exited += (_, _) => service._ready.TrySetException(new InvalidOperationException($"exited with {SafeExitCode(process)} before it was ready:\n{service.Output}"));
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (expectedEndpoints == 0)
        {
            service._ready.TrySetResult();
        }

        try
        {
            await service._ready.Task.WaitAsync(TimeSpan.FromSeconds(60));
        }
        catch
        {
            await service.DisposeAsync();
            throw;
        }

        return service;
    }

    private void OnLine(string? line)
    {
        if (line is null)
        {
            return;
        }

        _lines.Enqueue(line);
        var match = ListeningLine().Match(line);
        if (!match.Success)
        {
            return;
        }

        lock (_lock)
        {
            var uri = new Uri(match.Groups[1].Value);
            if (match.Groups[2].Success)
            {
                AdminEndpoint = uri;
            }
            else
            {
                _endpoints.Add(uri);
            }

            if (_endpoints.Count + (AdminEndpoint is null ? 0 : 1) >= _expectedEndpoints)
            {
                _ready.TrySetResult();
            }
        }
    }

    /// <summary>SIGKILL: no chance to clean up, exactly like a crash.</summary>
    public void Kill()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: false);
        }
    }

    /// <summary>SIGTERM: the graceful stop path.</summary>
    public void Terminate() => Signal(15, "TERM");

    /// <summary>SIGSTOP: the process hangs (the kernel still accepts connections and buffers what they send).</summary>
    public void Pause() => Signal(19, "STOP");

    /// <summary>SIGCONT after <see cref="Pause"/>.</summary>
    public void Resume() => Signal(18, "CONT");

    private void Signal(int signal, string name)
    {
        if (!_process.HasExited && SendSignal(_process.Id, signal) != 0)
        {
            throw new InvalidOperationException($"kill -{name} {_process.Id} failed: {Marshal.GetLastPInvokeError()}");
        }
    }

    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cancel = new CancellationTokenSource(timeout);
        await _process.WaitForExitAsync(cancel.Token);
        return _process.ExitCode;
    }

    /// <summary>Peak resident memory so far (VmHWM), in bytes.</summary>
    public long PeakResidentBytes() => ReadStatus("VmHWM:");

    public long ResidentBytes() => ReadStatus("VmRSS:");

    private long ReadStatus(string field)
    {
        foreach (var line in File.ReadLines($"/proc/{_process.Id}/status"))
        {
            if (line.StartsWith(field, StringComparison.Ordinal))
            {
                var kb = line[field.Length..].Trim().Split(' ')[0];
                return long.Parse(kb, CultureInfo.InvariantCulture) * 1024;
            }
        }

        throw new InvalidOperationException($"{field} not in /proc/{_process.Id}/status");
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            Kill();
            await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
        }
        catch (Exception ex) when (ex is InvalidOperationException or TimeoutException)
        {
            // Already gone.
        }

        _process.Dispose();
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

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int SendSignal(int pid, int signal);

    [GeneratedRegex(@"Listening on (\S+?)( \(admin\))?$")]
    private static partial Regex ListeningLine();
}
