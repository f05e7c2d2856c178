using System.Net;
using Infra.Core.Configuration;

namespace Infra.WebNode;

internal enum WebRole
{
    Web,
    Worker,
}

/// <summary>Settings of a web node or worker.</summary>
internal sealed class WebOptions : ServiceOptions
{
    public const int MaxNodeId = 1023;

    public IPEndPoint Listen { get; set; } = new(IPAddress.Loopback, 8000);

    public WebRole Role { get; set; } = WebRole.Web;

    /// <summary>Prefixes every code this node makes, so nodes never need to agree on codes.</summary>
    public int NodeId { get; set; }

    public string Router { get; set; } = "127.0.0.1:7700";

    public IReadOnlyList<string> Caches { get; set; } = [];

    public string Queue { get; set; } = "127.0.0.1:7400";

    /// <summary><see cref="Queue"/> split (validated at start).</summary>
    public (string Host, int Port) QueueHostPort => OptionValues.TryParseHostPort(Queue, out var host, out var port) ? (host, port) : ("127.0.0.1", 7400);

    public Uri? PublicUrl { get; set; }

    public string ClickTopic { get; set; } = "clicks";

    public int ClickPartitions { get; set; } = 4;

    public int ClickBuffer { get; set; } = 10_000;

    public TimeSpan LinkCacheTtl { get; set; } = TimeSpan.FromHours(1);

    public TimeSpan SessionTtl { get; set; } = TimeSpan.FromHours(24);

    public int KdfIterations { get; set; } = 100_000;

    public int MaxUrlLength { get; set; } = 2048;

    public int WorkerBatch { get; set; } = 500;

    public string WorkerGroup { get; set; } = "click-counter";

    /// <summary>
    /// Per call to the router or the queue. Longer than a data node's semi-sync wait (its --sync-timeout,
    /// 5 s): a write whose replica is slow then gets the node's own answer (NotReplicated: committed on
    /// the master, not yet copied) instead of a timeout here that says nothing about the write.
    /// </summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(6);

    public TimeSpan CacheTimeout { get; set; } = TimeSpan.FromMilliseconds(250);

    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(10);

    public override void Bind(ConfigReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        Listen = reader.ListenEndPoint("Listen", "127.0.0.1:8000");
        switch (reader.Text("Role", "web")?.Trim().ToLowerInvariant())
        {
            case "web":
                Role = WebRole.Web;
                break;
            case "worker":
                Role = WebRole.Worker;
                break;
            case var other:
                reader.Problems.Add($"Role: '{other}' is not web or worker");
                break;
        }

        NodeId = reader.Number("NodeId", 0, 0, MaxNodeId);
        Router = HostPort(reader, "Router", Router);
        Queue = HostPort(reader, "Queue", Queue);
        var caches = new List<string>();
        foreach (var section in reader.List("Caches"))
        {
            if (section.Value is { Length: > 0 } value)
            {
                if (OptionValues.TryParseHostPort(value.Trim(), out _, out _))
                {
                    caches.Add(value.Trim());
                }
                else
                {
                    reader.Problems.Add($"Caches: '{value}' is not host:port");
                }
            }
        }

        Caches = caches;
        if (reader.Text("PublicUrl", null) is { Length: > 0 } url)
        {
            if (Uri.TryCreate(url.TrimEnd('/'), UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https")
            {
                PublicUrl = uri;
            }
            else
            {
                reader.Problems.Add($"PublicUrl: '{url}' is not an http(s) URL");
            }
        }

        ClickTopic = reader.Text("ClickTopic", ClickTopic) is { Length: > 0 } topic ? topic : ClickTopic;
        ClickPartitions = reader.Number("ClickPartitions", ClickPartitions, 1, 256);
        ClickBuffer = reader.Number("ClickBuffer", ClickBuffer, 1, 10_000_000);
        LinkCacheTtl = reader.Duration("LinkCacheTtl", LinkCacheTtl, TimeSpan.FromSeconds(1), TimeSpan.FromDays(365));
        SessionTtl = reader.Duration("SessionTtl", SessionTtl, TimeSpan.FromSeconds(1), TimeSpan.FromDays(365));
        KdfIterations = reader.Number("KdfIterations", KdfIterations, 1_000, 10_000_000);
        MaxUrlLength = reader.Number("MaxUrlLength", MaxUrlLength, 16, 65_536);
        WorkerBatch = reader.Number("WorkerBatch", WorkerBatch, 1, 10_000);
        WorkerGroup = reader.Text("WorkerGroup", WorkerGroup) is { Length: > 0 } group ? group : WorkerGroup;
        RequestTimeout = reader.Duration("RequestTimeout", RequestTimeout, TimeSpan.FromMilliseconds(10), TimeSpan.FromMinutes(10));
        CacheTimeout = reader.Duration("CacheTimeout", CacheTimeout, TimeSpan.FromMilliseconds(10), TimeSpan.FromMinutes(1));
        ShutdownTimeout = reader.Duration("ShutdownTimeout", ShutdownTimeout, TimeSpan.Zero, TimeSpan.FromHours(1));
    }

    protected override IEnumerable<string> CheckConsistency()
    {
        if (Role == WebRole.Web && Caches.Count == 0)
        {
            yield return "Caches: a web node needs at least one --cache HOST:PORT";
        }
    }

    private static string HostPort(ConfigReader reader, string key, string fallback)
    {
        var value = reader.Text(key, fallback)?.Trim() ?? fallback;
        if (!OptionValues.TryParseHostPort(value, out _, out _))
        {
            reader.Problems.Add($"{key}: '{value}' is not host:port");
            return fallback;
        }

        return value;
    }
}
