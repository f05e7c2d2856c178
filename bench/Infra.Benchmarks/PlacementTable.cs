using System.Globalization;
using System.Text;
using Infra.Core.Placement;
using Infra.ShardRouter.Placement;

namespace Infra.Benchmarks;

/// <summary>
/// Placement quality, not speed: over 1M keys, the load spread (relative standard deviation of keys
/// per node) and the keys moved when a node is added, for the slot table (4096 slots by weighted
/// rendezvous hashing) and a Karger consistent-hash ring with 100 and 1,000 virtual nodes per node.
/// <c>dotnet run -c Release --project bench/Infra.Benchmarks -- placement [keys]</c>
/// </summary>
internal static class PlacementTable
{
    public static int Run(string[] args)
    {
        var keyCount = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 1_000_000;
        var keys = Enumerable.Range(0, keyCount).Select(i => Encoding.UTF8.GetBytes($"user:{i}")).ToArray();
        Console.WriteLine($"{keyCount:N0} keys; spread = stddev of keys per node / mean; moved = keys that change node when node n+1 joins (ideal 1/(n+1)), all toward the new node?");
        Console.WriteLine($"{"nodes",5} {"scheme",-22} {"spread",8} {"max/mean",9} {"moved",8} {"ideal",7} {"only to new",11}");
        foreach (var n in new[] { 2, 3, 4, 8, 16 })
        {
            Report(n, "rendezvous, 4096 slots", keys, nodes => { var t = SlotTable.Create(nodes.Select(name => new PlacementNode(name))); return key => t.NodeFor(key); });
            ReportRouter(n, keys);
            Report(n, "ring, 100 vnodes", keys, nodes => Ring(nodes, 100));
            Report(n, "ring, 1000 vnodes", keys, nodes => Ring(nodes, 1000));
        }

        return 0;
    }

    private static void Report(int n, string scheme, byte[][] keys, Func<string[], Func<byte[], int>> build)
    {
        var names = Enumerable.Range(0, n + 1).Select(i => $"shard-{i}").ToArray();
        var before = build(names[..n]);
        var after = build(names);
        var counts = new long[n];
        long moved = 0;
        var onlyToNew = true;
        foreach (var key in keys)
        {
            var b = before(key);
            counts[b]++;
            var a = after(key);
            if (a != b)
            {
                moved++;
                onlyToNew &= a == n;
            }
        }

        var mean = counts.Average();
        var spread = Math.Sqrt(counts.Select(c => (c - mean) * (c - mean)).Average()) / mean;
        Console.WriteLine($"{n,5} {scheme,-22} {spread,8:P1} {counts.Max() / mean,9:F3} {(double)moved / keys.Length,8:P1} {1.0 / (n + 1),7:P1} {(onlyToNew ? "yes" : "no"),11}");
    }

    /// <summary>The router's placement: rendezvous with quotas, the new shard added to the seeded map.</summary>
    private static void ReportRouter(int n, byte[][] keys)
    {
        var shards = Enumerable.Range(0, n + 1).Select(i => new ShardInfo($"shard-{i}", $"127.0.0.1:{7000 + i}", [])).ToArray();
        var seeded = ShardMap.Seed(shards[..n]);
        var target = seeded.WithShard(shards[n]).TargetOwners();
        Report(n, "router: + quotas", keys, nodes => nodes.Length == n
            ? key => seeded.Owners[SlotTable.SlotOf(key)]
            : key => target[SlotTable.SlotOf(key)]);
    }

    /// <summary>Karger et al.: each node at <paramref name="vnodes"/> points of a 64-bit ring; a key goes to the next point clockwise.</summary>
    private static Func<byte[], int> Ring(string[] nodes, int vnodes)
    {
        var points = new List<(ulong Hash, int Node)>();
        for (var i = 0; i < nodes.Length; i++)
        {
            for (var v = 0; v < vnodes; v++)
            {
                points.Add((XxHash64.Hash(Encoding.UTF8.GetBytes($"{nodes[i]}#{v}")), i));
            }
        }

        points.Sort((x, y) => x.Hash.CompareTo(y.Hash));
        var hashes = points.Select(p => p.Hash).ToArray();
        var owners = points.Select(p => p.Node).ToArray();
        return key =>
        {
            var h = XxHash64.Hash(key);
            var at = Array.BinarySearch(hashes, h);
            if (at < 0)
            {
                at = ~at;
            }

            return owners[at == hashes.Length ? 0 : at];
        };
    }
}
