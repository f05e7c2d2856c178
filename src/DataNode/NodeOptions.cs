using System.Net;
using Infra.Core.Configuration;
using Infra.Core.Storage;
using Infra.DataNode.Storage;
using Microsoft.Win32.SafeHandles;

namespace Infra.DataNode;

internal enum SyncMode
{
    /// <summary>Acknowledge after K replicas confirm (once any replica is registered).</summary>
    SemiSync,

    /// <summary>Acknowledge after the master's own commit.</summary>
    Async,
}

/// <summary>Settings of a data node.</summary>
internal sealed class NodeOptions : ServiceOptions
{
    /// <summary>Replication (MessagePack frames): replicas connect here.</summary>
    public IPEndPoint Listen { get; set; } = new(IPAddress.Loopback, 7600);

    /// <summary>HTTP/JSON API, /healthz and /metrics.</summary>
    public IPEndPoint Http { get; set; } = new(IPAddress.Loopback, 7601);

    public string DataDir { get; set; } = "./data/node";

    public NodeRole Role { get; set; } = NodeRole.Master;

    /// <summary>The master's replication address (host:port), for a replica.</summary>
    public string? Master { get; set; }

    public SyncMode Sync { get; set; } = SyncMode.SemiSync;

    public int SyncReplicas { get; set; } = 1;

    public TimeSpan SyncTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>How long a read with minLsn waits for this node to catch up before answering "behind".</summary>
    public TimeSpan ReadWaitTimeout { get; set; } = TimeSpan.FromSeconds(2);

    public string Synchronous { get; set; } = "FULL";

    public long LogRetention { get; set; } = 100_000;

    public int MaxStatements { get; set; } = 1000;

    public int MaxSqlBytes { get; set; } = 1 << 20;

    public int MaxRequestBytes { get; set; } = 16 << 20;

    public int MaxResultRows { get; set; } = 100_000;

    /// <summary>Most bytes of values in one query result (a single value longer than this is refused by SQLite itself).</summary>
    public long MaxResultBytes { get; set; } = 64L << 20;

    /// <summary>How long one read may run before SQLite is interrupted (0: no limit).</summary>
    public TimeSpan MaxQueryTime { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How long the row-changing statements of one write may run before SQLite is interrupted (0: no limit; DDL is not limited).</summary>
    public TimeSpan MaxWriteTime { get; set; } = TimeSpan.FromSeconds(10);

    public long ReadMmapBytes { get; set; } = 256L << 20;

    public int MaxPendingWrites { get; set; } = 10_000;

    public int MaxGroupSize { get; set; } = 256;

    public int MaxReplicationFrameBytes => MaxRequestBytes * 2 + (4 << 20);

    /// <summary>
    /// Largest frame a replica takes from its master: one log entry can be far larger than any request (the
    /// changeset of a DELETE or UPDATE over a whole table), and a replica that refused it could never pass it.
    /// The master is the node the replica chose to follow (and, with --admin-token, proved itself).
    /// </summary>
    public int MaxStreamFrameBytes => int.Max(MaxReplicationFrameBytes, 1 << 30);

    public string? AdminToken { get; set; }

    public int MaxConnections { get; set; } = 1000;

    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Fault injection for chaos tests: when this environment variable names a file, each WAL fsync first
    /// looks for that file and, while it exists, fails as a disk error would — the node then refuses
    /// writes until it is restarted (see <see cref="CommitFlusher"/>). Unset, nothing is checked.
    /// </summary>
    public const string WalSyncFaultVariable = "INFRA_FAULT_WAL_SYNC_FILE";

    /// <summary>Fault injection for tests: a master waits this many milliseconds before each snapshot backup.</summary>
    public const string SnapshotDelayVariable = "INFRA_FAULT_SNAPSHOT_DELAY_MS";

    /// <summary>Tests only (<see cref="SnapshotDelayVariable"/>): a slow snapshot backup.</summary>
    internal TimeSpan SnapshotDelay { get; set; } = int.TryParse(Environment.GetEnvironmentVariable(SnapshotDelayVariable), out var ms) && ms > 0 ? TimeSpan.FromMilliseconds(ms) : TimeSpan.Zero;

    /// <summary>How long a replica waits for its master's answer, a snapshot chunk, before it reconnects.</summary>
    public TimeSpan ReplicationTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Tests only: replaces the WAL's fsync (<see cref="DatabaseSettings.FlushWal"/>).</summary>
    internal Action<SafeFileHandle>? FlushWal { get; set; }

    internal static Action<SafeFileHandle>? WalSyncFault(string? file) => string.IsNullOrEmpty(file) ? null : handle =>
    {
        if (File.Exists(file))
        {
            throw new IOException($"injected WAL fsync failure: {file} exists ({WalSyncFaultVariable})");
        }

        FileSync.DataSync(handle);
    };

    public DatabaseSettings DatabaseSettings => new()
    {
        Synchronous = Synchronous,
        FlushWal = FlushWal ?? WalSyncFault(Environment.GetEnvironmentVariable(WalSyncFaultVariable)),
        LogRetention = LogRetention,
        MaxResultRows = MaxResultRows,
        MaxResultBytes = MaxResultBytes,
        MaxQueryTime = MaxQueryTime,
        MaxWriteTime = MaxWriteTime,
        ReadMmapBytes = ReadMmapBytes,
    };

    public override void Bind(ConfigReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        Listen = reader.ListenEndPoint("Listen", "127.0.0.1:7600");
        Http = reader.ListenEndPoint("Http", "127.0.0.1:7601");
        DataDir = reader.Text("DataDir", DataDir) is { Length: > 0 } dir ? dir : DataDir;
        switch (reader.Text("Role", "master")?.Trim().ToLowerInvariant())
        {
            case "master":
                Role = NodeRole.Master;
                break;
            case "replica":
                Role = NodeRole.Replica;
                break;
            case var other:
                reader.Problems.Add($"Role: '{other}' is not master or replica");
                break;
        }

        Master = reader.Text("Master", null) is { Length: > 0 } master ? master.Trim() : null;
        if (Master is not null && !OptionValues.TryParseHostPort(Master, out _, out _))
        {
            reader.Problems.Add($"Master: '{Master}' is not host:port");
        }

        switch (reader.Text("Sync", "semi-sync")?.Trim().ToLowerInvariant())
        {
            case "semi-sync" or "semisync":
                Sync = SyncMode.SemiSync;
                break;
            case "async":
                Sync = SyncMode.Async;
                break;
            case var other:
                reader.Problems.Add($"Sync: '{other}' is not semi-sync or async");
                break;
        }

        SyncReplicas = reader.Number("SyncReplicas", SyncReplicas, 1, 64);
        SyncTimeout = reader.Duration("SyncTimeout", SyncTimeout, TimeSpan.FromMilliseconds(1), TimeSpan.FromMinutes(10));
        ReadWaitTimeout = reader.Duration("ReadWaitTimeout", ReadWaitTimeout, TimeSpan.Zero, TimeSpan.FromMinutes(10));
        switch (reader.Text("Synchronous", "full")?.Trim().ToUpperInvariant())
        {
            case var s and ("FULL" or "NORMAL" or "EXTRA"):
                Synchronous = s;
                break;
            case var other:
                reader.Problems.Add($"Synchronous: '{other}' is not full, normal or extra");
                break;
        }

        LogRetention = reader.Size("LogRetention", LogRetention, 1, long.MaxValue / 4);
        ReplicationTimeout = reader.Duration("ReplicationTimeout", ReplicationTimeout, TimeSpan.FromSeconds(1), TimeSpan.FromHours(1));
        MaxStatements = reader.Number("MaxStatements", MaxStatements, 1, 1_000_000);
        MaxSqlBytes = (int)reader.Size("MaxSqlBytes", MaxSqlBytes, 16, 64L << 20);
        MaxRequestBytes = (int)reader.Size("MaxRequestBytes", MaxRequestBytes, 1024, 256L << 20);
        MaxResultRows = reader.Number("MaxResultRows", MaxResultRows, 1, 100_000_000);
        MaxResultBytes = reader.Size("MaxResultBytes", MaxResultBytes, 1024, 1L << 30);
        MaxQueryTime = reader.Duration("MaxQueryTime", MaxQueryTime, TimeSpan.Zero, TimeSpan.FromHours(1));
        MaxWriteTime = reader.Duration("MaxWriteTime", MaxWriteTime, TimeSpan.Zero, TimeSpan.FromHours(1));
        ReadMmapBytes = reader.Size("ReadMmap", ReadMmapBytes, 0, 1L << 40);
        MaxPendingWrites = reader.Number("MaxPendingWrites", MaxPendingWrites, 1, 1_000_000);
        MaxGroupSize = reader.Number("MaxGroupSize", MaxGroupSize, 1, 100_000);
        AdminToken = reader.Text("AdminToken", null) is { Length: > 0 } token ? token : null;
        MaxConnections = reader.Number("MaxConnections", MaxConnections, 1, 1_000_000);
        ShutdownTimeout = reader.Duration("ShutdownTimeout", ShutdownTimeout, TimeSpan.Zero, TimeSpan.FromHours(1));
    }

    protected override IEnumerable<string> CheckConsistency()
    {
        if (Listen.Port != 0 && Listen.Equals(Http))
        {
            yield return $"Http: {Http} is the same endpoint as Listen";
        }

        if (Role == NodeRole.Master && Master is not null)
        {
            yield return "Master: a master does not follow another node (drop --master, or use --role replica)";
        }
    }
}
