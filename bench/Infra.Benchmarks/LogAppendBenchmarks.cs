using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Engines;
using FASTER.core;
using Infra.QueueBroker.Log;
using Microsoft.Extensions.Logging.Abstractions;

namespace Infra.Benchmarks;

/// <summary>
/// Acknowledged (fsync'd) appends of 100-byte records on the real disk: our segment log with group
/// commit vs FasterLog (Microsoft.FASTER.Core, commit awaited per record, checksums off as by default),
/// with 1 and 64 concurrent appenders. 6,400 appends per invocation; the figure is per append.
/// Kept so the choice of a hand-built log stays visible (see bench/RESULTS.md).
/// </summary>
[SimpleJob(RunStrategy.Monitoring, launchCount: 1, warmupCount: 1, iterationCount: 5)]
[MemoryDiagnoser]
public class LogAppendBenchmarks
{
    private const int Appends = 6400;
    private static readonly byte[] Payload = new byte[100];
    private string _dir = "";
    private SegmentLog? _log;
    private FasterLog? _faster;
    private IDevice? _device;

    [Params(1, 64)]
    public int Appenders { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _dir = Path.Combine("/var/tmp", "infra-logbench-" + Guid.NewGuid().ToString("N")[..8]);
        _log = SegmentLog.Open(DiskFileSystem.Instance, Path.Combine(_dir, "ours"), new Infra.QueueBroker.Log.LogSettings(), TimeProvider.System, NullLogger.Instance);
        _device = Devices.CreateLogDevice(Path.Combine(_dir, "faster", "log"));
        _faster = new FasterLog(new FasterLogSettings { LogDevice = _device, AutoCommit = true });
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _log!.DisposeAsync().AsTask().GetAwaiter().GetResult();
        _faster!.Dispose();
        _device!.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Appends)]
    public Task SegmentLogGroupCommit() => Run(async () => await _log!.Append([new LogMessage(null, [], Payload)]).Durable);

    [Benchmark(OperationsPerInvoke = Appends)]
    public Task FasterLogCommitPerAppend() => Run(async () => await _faster!.EnqueueAndWaitForCommitAsync(Payload));

    private Task Run(Func<Task> append) => Task.WhenAll(Enumerable.Range(0, Appenders).Select(_ => Task.Run(async () =>
    {
        for (var i = 0; i < Appends / Appenders; i++)
        {
            await append();
        }
    })));
}
