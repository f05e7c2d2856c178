using System.Globalization;
using System.Net;
using Infra.Core.Configuration;
using Infra.QueueBroker.Groups;
using Infra.QueueBroker.Log;

namespace Infra.QueueBroker;

/// <summary>Settings of the queue broker.</summary>
internal sealed class BrokerOptions : ServiceOptions
{
    public IPEndPoint Listen { get; set; } = new(IPAddress.Loopback, 7400);

    /// <summary>HTTP: the JSON API, /healthz and /metrics.</summary>
    public IPEndPoint Http { get; set; } = new(IPAddress.Loopback, 7401);

    public string DataDir { get; set; } = "./data/queue";

    public string? AdminToken { get; set; }

    public FsyncMode Fsync { get; set; } = FsyncMode.Always;

    public TimeSpan FsyncInterval { get; set; } = TimeSpan.FromMilliseconds(10);

    public int MaxMessageBytes { get; set; } = 1 << 20;

    /// <summary>Largest native-protocol frame (a produce batch travels in one).</summary>
    public int MaxFrameBytes { get; set; } = 16 << 20;

    /// <summary>
    /// Produce bytes one connection may have waiting for acknowledgement before it gets Busy; and, apart,
    /// the bytes its fetches in flight (long polls included) may read.
    /// </summary>
    public long MaxInFlightBytesPerConnection { get; set; } = 64L << 20;

    /// <summary>Requests one connection may have in flight before the broker stops reading from it.</summary>
    public int MaxInFlightRequestsPerConnection { get; set; } = 1024;

    public int MaxPendingBytesPerPartition { get; set; } = 32 << 20;

    public long SegmentBytes { get; set; } = 64L << 20;

    /// <summary>
    /// Most partitions the topics clients create may have in all (dead-letter topics not counted: each
    /// mirrors a topic). Each partition has its own flusher thread and, once written, a reserved segment.
    /// </summary>
    public int MaxPartitions { get; set; } = 1024;

    /// <summary>
    /// Most consumer groups (queue and stream, over all topics) the broker opens; groups whose state is on
    /// disk always open. Each group has a state log with its own flusher thread and files, and a fetch
    /// names its group, so without a bound any client could exhaust the threads and file handles.
    /// </summary>
    public int MaxGroups { get; set; } = 1024;

    public TimeSpan SegmentAge { get; set; } = TimeSpan.FromHours(1);

    public long RetentionBytes { get; set; } = -1;

    public TimeSpan RetentionAge { get; set; } = TimeSpan.FromDays(7);

    public TimeSpan VisibilityTimeout { get; set; } = TimeSpan.FromSeconds(30);

    public int MaxDeliveries { get; set; } = 5;

    public int MaxUnacked { get; set; } = 100_000;

    public TimeSpan SessionTimeout { get; set; } = TimeSpan.FromSeconds(10);

    public int MaxConnections { get; set; } = 10_000;

    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(10);

    public LogSettings LogSettings => new()
    {
        Fsync = Fsync,
        FsyncInterval = FsyncInterval,
        SegmentBytes = SegmentBytes,
        SegmentAge = SegmentAge,
        RetentionBytes = RetentionBytes,
        RetentionAge = RetentionAge,
        MaxPendingBytes = MaxPendingBytesPerPartition,
        MaxBatchBytes = Math.Max(MaxFrameBytes, 1 << 20) + (1 << 20),
    };

    public QueueSettings QueueSettings => new() { VisibilityTimeout = VisibilityTimeout, MaxDeliveries = MaxDeliveries, MaxUnacked = MaxUnacked };

    public override void Bind(ConfigReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        Listen = reader.ListenEndPoint("Listen", "127.0.0.1:7400");
        Http = reader.ListenEndPoint("Http", "127.0.0.1:7401");
        DataDir = reader.Text("DataDir", DataDir) is { Length: > 0 } dir ? dir : DataDir;
        AdminToken = reader.Text("AdminToken", null) is { Length: > 0 } token ? token : null;
        if (reader.Text("Fsync", null) is { } fsync)
        {
            if (TryParseFsync(fsync, out var mode, out var interval))
            {
                (Fsync, FsyncInterval) = (mode, interval);
            }
            else
            {
                reader.Problems.Add($"Fsync: '{fsync}' is not always, interval:<ms> (1..60000) or never");
            }
        }

        MaxMessageBytes = (int)reader.Size("MaxMessageBytes", MaxMessageBytes, 1, 64L << 20);
        MaxFrameBytes = (int)reader.Size("MaxFrameBytes", MaxFrameBytes, 1024, 256L << 20);
        MaxInFlightBytesPerConnection = reader.Size("MaxInFlightBytesPerConnection", MaxInFlightBytesPerConnection, 1024, 1L << 40);
        MaxInFlightRequestsPerConnection = reader.Number("MaxInFlightRequestsPerConnection", MaxInFlightRequestsPerConnection, 1, 1 << 20);
        MaxPendingBytesPerPartition = (int)reader.Size("MaxPendingBytesPerPartition", MaxPendingBytesPerPartition, 64 << 10, 1L << 30);
        SegmentBytes = reader.Size("SegmentBytes", SegmentBytes, 4096, 1L << 30);
        MaxPartitions = reader.Number("MaxPartitions", MaxPartitions, 1, 1_000_000);
        MaxGroups = reader.Number("MaxGroups", MaxGroups, 1, 1_000_000);
        SegmentAge = reader.Duration("SegmentAge", SegmentAge, TimeSpan.Zero, TimeSpan.FromDays(365));
        RetentionBytes = reader.Text("RetentionBytes", null) is null or "-1" ? -1 : reader.Size("RetentionBytes", 0, 0, long.MaxValue / 2);
        RetentionAge = reader.Duration("RetentionAge", RetentionAge, TimeSpan.Zero, TimeSpan.FromDays(36500));
        VisibilityTimeout = reader.Duration("VisibilityTimeout", VisibilityTimeout, TimeSpan.FromMilliseconds(10), TimeSpan.FromHours(12));
        MaxDeliveries = reader.Number("MaxDeliveries", MaxDeliveries, 1, 1000);
        MaxUnacked = reader.Number("MaxUnacked", MaxUnacked, 1, 10_000_000);
        SessionTimeout = reader.Duration("SessionTimeout", SessionTimeout, TimeSpan.FromMilliseconds(10), TimeSpan.FromHours(1));
        MaxConnections = reader.Number("MaxConnections", MaxConnections, 1, 1_000_000);
        ShutdownTimeout = reader.Duration("ShutdownTimeout", ShutdownTimeout, TimeSpan.Zero, TimeSpan.FromHours(1));
    }

    public static bool TryParseFsync(string text, out FsyncMode mode, out TimeSpan interval)
    {
        interval = TimeSpan.FromMilliseconds(10);
        mode = FsyncMode.Always;
        switch (text.Trim().ToLowerInvariant())
        {
            case "always":
                return true;
            case "never":
                mode = FsyncMode.Never;
                return true;
            case var value when value.StartsWith("interval:", StringComparison.Ordinal)
                && int.TryParse(value.AsSpan(9), NumberStyles.None, CultureInfo.InvariantCulture, out var ms) && ms is >= 1 and <= 60_000:
                mode = FsyncMode.Interval;
                interval = TimeSpan.FromMilliseconds(ms);
                return true;
            default:
                return false;
        }
    }

    protected override IEnumerable<string> CheckConsistency()
    {
        if (Listen.Port != 0 && Listen.Equals(Http))
        {
            yield return $"Http: {Http} is the same endpoint as Listen";
        }

        if (MaxMessageBytes > MaxFrameBytes - 1024)
        {
            yield return $"MaxMessageBytes: {MaxMessageBytes} does not fit a frame of MaxFrameBytes {MaxFrameBytes}";
        }
    }
}
