using System.Text.Json;

namespace Infra.Cli;

/// <summary>What kind of service a node runs.</summary>
internal enum NodeKind
{
    Cache,
    Queue,
    DataMaster,
    DataReplica,
    Router,
    Web,
    Worker,
    LoadBalancer,
}

/// <summary>
/// How many of each node <c>infra up</c> starts, and extra flags per kind. The default is the
/// architecture's picture: 1 load balancer, 3 web nodes, 1 worker, 3 cache servers, 1 queue
/// broker, 1 shard router, 2 shards of 1 master + 1 replica. A --topology file may set any of
/// these fields (missing ones keep their defaults).
/// </summary>
internal sealed record Topology
{
    public int WebNodes { get; init; } = 3;

    public int Workers { get; init; } = 1;

    public int Caches { get; init; } = 3;

    public int Shards { get; init; } = 2;

    public int ReplicasPerShard { get; init; } = 1;

    /// <summary>Extra flags by kind name ("lb", "web", "worker", "cache", "queue", "router", "data").</summary>
    public Dictionary<string, string[]> Args { get; init; } = [];

    // Unknown keys are refused: a misspelled setting ("replicas") silently kept its default.
    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNameCaseInsensitive = true,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
        UnmappedMemberHandling = System.Text.Json.Serialization.JsonUnmappedMemberHandling.Disallow,
    };

    public static Topology Load(string path)
    {
        Topology? topology;
        try
        {
            topology = JsonSerializer.Deserialize<Topology>(File.ReadAllText(path), Json);
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"--topology {path}: not valid JSON: {ex.Message}", ex);
        }

        return (topology ?? new Topology()).Validated(path);
    }

    public Topology Validated(string source)
    {
        var problems = new List<string>();
        Check(WebNodes, 1, 64, "webNodes");
        Check(Workers, 0, 16, "workers");
        Check(Caches, 1, 64, "caches");
        Check(Shards, 1, 64, "shards");
        Check(ReplicasPerShard, 0, 8, "replicasPerShard");
        if (Args is null)
        {
            problems.Add("args must be an object of flag lists (is null)");
        }
        else
        {
            foreach (var kind in Args.Keys.Where(k => k is not ("lb" or "web" or "worker" or "cache" or "queue" or "router" or "data")))
            {
                problems.Add($"args: '{kind}' is not one of lb, web, worker, cache, queue, router, data");
            }

            foreach (var (kind, flags) in Args.Where(a => a.Value is null || a.Value.Any(f => f is null)))
            {
                problems.Add($"args.{kind} must be a list of strings");
            }
        }

        return problems.Count == 0 ? this : throw new InvalidDataException($"{source}: {string.Join("; ", problems)}");

        void Check(int value, int min, int max, string name)
        {
            if (value < min || value > max)
            {
                problems.Add($"{name} must be {min} to {max} (is {value})");
            }
        }
    }

    /// <summary>
    /// The data directory remembers the shards and replicas it was made with (<c>shape.json</c>); a topology
    /// that differs is refused with the reason, or null. The router keeps its stored map, not the new
    /// topology: with fewer shards it never became ready, with more the new shards sat outside the map, and
    /// renamed replicas were missing from it (a master's failover had nothing to promote).
    /// </summary>
    public string? CheckDataShape(string dataDir)
    {
        var path = Path.Combine(dataDir, "shape.json");
        var shape = $"{{\"shards\":{Shards},\"replicasPerShard\":{ReplicasPerShard}}}";
        if (!File.Exists(path))
        {
            File.WriteAllText(path, shape);
            return null;
        }

        var stored = File.ReadAllText(path).Trim();
        return stored == shape
            ? null
            : $"{dataDir} was made with {stored} and this topology has {shape}: shards and replicas of an existing data directory do not change with the topology (use another --data-dir; add a shard to a running stack with POST /shards on the router)";
    }

    /// <summary>Every node, in the order they start (dependencies first).</summary>
    public IReadOnlyList<NodeSpec> Nodes()
    {
        var nodes = new List<NodeSpec>();
        for (var i = 1; i <= Caches; i++)
        {
            nodes.Add(new NodeSpec($"cache-{i}", NodeKind.Cache, Stage: 0));
        }

        nodes.Add(new NodeSpec("queue", NodeKind.Queue, Stage: 0));
        for (var s = 0; s < Shards; s++)
        {
            nodes.Add(new NodeSpec($"s{s}-master", NodeKind.DataMaster, Stage: 0, Shard: $"s{s}"));
            for (var r = 1; r <= ReplicasPerShard; r++)
            {
                nodes.Add(new NodeSpec(ReplicasPerShard == 1 ? $"s{s}-replica" : $"s{s}-replica-{r}", NodeKind.DataReplica, Stage: 1, Shard: $"s{s}"));
            }
        }

        nodes.Add(new NodeSpec("router", NodeKind.Router, Stage: 2));
        for (var i = 1; i <= WebNodes; i++)
        {
            nodes.Add(new NodeSpec($"web-{i}", NodeKind.Web, Stage: 3, Index: i));
        }

        for (var i = 1; i <= Workers; i++)
        {
            nodes.Add(new NodeSpec($"worker-{i}", NodeKind.Worker, Stage: 3, Index: i));
        }

        nodes.Add(new NodeSpec("lb", NodeKind.LoadBalancer, Stage: 4));
        return nodes;
    }
}

/// <summary>One node of the topology: its name (what status, kill and restart take), what it runs, and when it starts.</summary>
internal sealed record NodeSpec(string Name, NodeKind Kind, int Stage, string? Shard = null, int Index = 0)
{
    public string ArgsKey => Kind switch
    {
        NodeKind.LoadBalancer => "lb",
        NodeKind.Web => "web",
        NodeKind.Worker => "worker",
        NodeKind.Cache => "cache",
        NodeKind.Queue => "queue",
        NodeKind.Router => "router",
        _ => "data",
    };

    public string Describe => Kind switch
    {
        NodeKind.LoadBalancer => "load balancer",
        NodeKind.Web => "web node",
        NodeKind.Worker => "click worker",
        NodeKind.Cache => "cache server",
        NodeKind.Queue => "queue broker",
        NodeKind.Router => "shard router",
        NodeKind.DataMaster => $"{Shard} data node",
        _ => $"{Shard} data node",
    };

    public string Assembly => Kind switch
    {
        NodeKind.LoadBalancer => "Infra.LoadBalancer",
        NodeKind.Web or NodeKind.Worker => "Infra.WebNode",
        NodeKind.Cache => "Infra.CacheServer",
        NodeKind.Queue => "Infra.QueueBroker",
        NodeKind.Router => "Infra.ShardRouter",
        _ => "Infra.DataNode",
    };

    public string Project => Kind switch
    {
        NodeKind.LoadBalancer => "LoadBalancer",
        NodeKind.Web or NodeKind.Worker => "WebNode",
        NodeKind.Cache => "CacheServer",
        NodeKind.Queue => "QueueBroker",
        NodeKind.Router => "ShardRouter",
        _ => "DataNode",
    };
}
