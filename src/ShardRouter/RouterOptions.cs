using System.Net;
using Infra.Core.Configuration;
using Infra.ShardRouter.Placement;

namespace Infra.ShardRouter;

/// <summary>Settings of a shard router.</summary>
internal sealed class RouterOptions : ServiceOptions
{
    /// <summary>The MessagePack client protocol.</summary>
    public IPEndPoint Listen { get; set; } = new(IPAddress.Loopback, 7700);

    /// <summary>HTTP/JSON API (/db/*, /shards), /healthz and /metrics.</summary>
    public IPEndPoint Http { get; set; } = new(IPAddress.Loopback, 7701);

    /// <summary>The seed map (shards.json); used when the data directory holds no map yet.</summary>
    public string? ShardsFile { get; set; }

    /// <summary>Where the router keeps its map (shard-map.json).</summary>
    public string DataDir { get; set; } = "./data/router";

    public TimeSpan ProbeInterval { get; set; } = TimeSpan.FromMilliseconds(500);

    public TimeSpan ProbeTimeout { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>Failed probes in a row after which a master is replaced.</summary>
    public int FailAfter { get; set; } = 3;

    /// <summary>A replica further behind than this leaves the read rotation.</summary>
    public TimeSpan MaxReplicaLag { get; set; } = TimeSpan.FromSeconds(5);

    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(10);

    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(1);

    public int ConnectionsPerNode { get; set; } = 2;

    public int MaxRequestBytes { get; set; } = 16 << 20;

    public int MaxStatements { get; set; } = 1000;

    public int MaxConnections { get; set; } = 10_000;

    /// <summary>Rows copied per batch when a slot moves.</summary>
    public int CopyBatchRows { get; set; } = 500;

    /// <summary>Required on POST/DELETE of the HTTP API and the admin ops of the MessagePack protocol.</summary>
    public string? AdminToken { get; set; }

    /// <summary>The data nodes' admin token, sent with promote / follow / claim.</summary>
    public string? NodeToken { get; set; }

    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(10);

    public override void Bind(ConfigReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        Listen = reader.ListenEndPoint("Listen", "127.0.0.1:7700");
        Http = reader.ListenEndPoint("Http", "127.0.0.1:7701");
        ShardsFile = reader.Text("ShardsFile", null) is { Length: > 0 } file ? file : null;
        DataDir = reader.Text("DataDir", DataDir) is { Length: > 0 } dir ? dir : DataDir;
        ProbeInterval = reader.Duration("ProbeInterval", ProbeInterval, TimeSpan.FromMilliseconds(10), TimeSpan.FromMinutes(1));
        ProbeTimeout = reader.Duration("ProbeTimeout", ProbeTimeout, TimeSpan.FromMilliseconds(10), TimeSpan.FromMinutes(1));
        FailAfter = reader.Number("FailAfter", FailAfter, 1, 1000);
        MaxReplicaLag = reader.Duration("MaxReplicaLag", MaxReplicaLag, TimeSpan.Zero, TimeSpan.FromHours(1));
        RequestTimeout = reader.Duration("RequestTimeout", RequestTimeout, TimeSpan.FromMilliseconds(10), TimeSpan.FromMinutes(10));
        ConnectTimeout = reader.Duration("ConnectTimeout", ConnectTimeout, TimeSpan.FromMilliseconds(10), TimeSpan.FromMinutes(1));
        ConnectionsPerNode = reader.Number("ConnectionsPerNode", ConnectionsPerNode, 1, 64);
        MaxRequestBytes = (int)reader.Size("MaxRequestBytes", MaxRequestBytes, 1024, 256L << 20);
        MaxStatements = reader.Number("MaxStatements", MaxStatements, 1, 1_000_000);
        MaxConnections = reader.Number("MaxConnections", MaxConnections, 1, 1_000_000);
        CopyBatchRows = reader.Number("CopyBatchRows", CopyBatchRows, 1, 100_000);
        AdminToken = reader.Text("AdminToken", null) is { Length: > 0 } token ? token : null;
        NodeToken = reader.Text("NodeToken", null) is { Length: > 0 } nodeToken ? nodeToken : null;
        ShutdownTimeout = reader.Duration("ShutdownTimeout", ShutdownTimeout, TimeSpan.Zero, TimeSpan.FromHours(1));
    }

    protected override IEnumerable<string> CheckConsistency()
    {
        if (Listen.Port != 0 && Listen.Equals(Http))
        {
            yield return $"Http: {Http} is the same endpoint as Listen";
        }

        var stored = Path.Combine(DataDir, MapStore.FileName);
        if (ShardsFile is null && !File.Exists(stored))
        {
            yield return $"ShardsFile: --shards is required (no stored map at {stored})";
        }
        else if (ShardsFile is not null && !File.Exists(ShardsFile))
        {
            yield return $"ShardsFile: {ShardsFile} does not exist";
        }
    }
}
