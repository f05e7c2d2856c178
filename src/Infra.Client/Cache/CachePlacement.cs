using Infra.Core.Placement;

namespace Infra.Client.Cache;

/// <summary>A cache server in the set: a stable name (placement hashes it), where it listens, its weight.</summary>
/// <param name="Name">Stable identity; renaming a node moves its keys, moving it to another address does not.</param>
/// <param name="EndPoint">host:port, as StackExchange.Redis takes it.</param>
/// <param name="Weight">Share of the keys relative to the other nodes.</param>
public sealed record CacheNode(string Name, string EndPoint, double Weight = 1.0);

/// <summary>
/// Which cache node holds a key: the key (or its <c>{hash tag}</c>, as in Redis Cluster) hashes to
/// one of a fixed number of slots, and slots are placed on nodes by weighted rendezvous hashing
/// (<see cref="SlotTable"/>). When nodes are marked down, their slots alone go to the runners-up;
/// every other key stays where it was. Thread-safe: reads see one immutable table.
/// </summary>
public sealed class CachePlacement
{
    private readonly CacheNode[] _nodes;
    private readonly Lock _lock = new();
    private readonly bool[] _down;
    private readonly SlotTable _full;
    private readonly SlotTable?[] _without;
    private Route _route;

    public CachePlacement(IEnumerable<CacheNode> nodes, int slots = SlotTable.DefaultSlots)
    {
        ArgumentNullException.ThrowIfNull(nodes);
        _nodes = [.. nodes];
        _down = new bool[_nodes.Length];
        var table = SlotTable.Create(_nodes.Select(n => new PlacementNode(n.Name, n.Weight)), slots);
        _route = new Route(table, Enumerable.Range(0, _nodes.Length).ToArray());
        _full = table;
        _without = new SlotTable?[_nodes.Length];
        for (var i = 0; i < _nodes.Length && _nodes.Length > 1; i++)
        {
            var skip = i;
            _without[i] = table.With(_nodes.Where((_, n) => n != skip).Select(n => new PlacementNode(n.Name, n.Weight)));
        }
    }

    /// <summary>
    /// Where a key lives with every node up (its home) and where it goes while its home is marked down
    /// (its runner-up). Clients decide "down" each on their own, so for a while after a node fails or
    /// comes back, one client may have written a key to its home and another to its runner-up; a
    /// reader that must not miss a live key (a session) looks in both.
    /// </summary>
    public (int Home, int RunnerUp) Candidates(ReadOnlySpan<byte> key)
    {
        var part = HashPart(key);
        var home = _full.NodeFor(part);
        if (_without[home] is not { } without)
        {
            return (home, home);
        }

        var runnerUp = without.NodeFor(part);
        return (home, runnerUp >= home ? runnerUp + 1 : runnerUp);
    }

    /// <summary>Every node, in the order given.</summary>
    public IReadOnlyList<CacheNode> Nodes => _nodes;

    /// <summary>The table keys are placed by now (it leaves out nodes marked down, unless all are).</summary>
    public SlotTable Table => _route.Table;

    /// <summary>Index into <see cref="Nodes"/> of the node for a key.</summary>
    public int NodeFor(ReadOnlySpan<byte> key)
    {
        var route = _route;
        return route.ToNode[route.Table.NodeFor(HashPart(key))];
    }

    /// <summary>Whether a node is currently marked down.</summary>
    public bool IsDown(int node)
    {
        lock (_lock)
        {
            return _down[node];
        }
    }

    /// <summary>Takes a node out: its slots go to the runners-up. False if it was already out.</summary>
    public bool MarkDown(int node) => SetDown(node, true);

    /// <summary>Puts a node back: its slots come back to it. False if it was not out.</summary>
    public bool MarkUp(int node) => SetDown(node, false);

    /// <summary>
    /// The part of a key that is hashed: the text between the first <c>{</c> and the next <c>}</c>
    /// when that is not empty (so <c>{user:42}:profile</c> and <c>{user:42}:cart</c> live together),
    /// else the whole key. The same rule as Redis Cluster.
    /// </summary>
    public static ReadOnlySpan<byte> HashPart(ReadOnlySpan<byte> key)
    {
        var open = key.IndexOf((byte)'{');
        if (open < 0)
        {
            return key;
        }

        var close = key[(open + 1)..].IndexOf((byte)'}');
        return close > 0 ? key.Slice(open + 1, close) : key;
    }

    private bool SetDown(int node, bool down)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(node);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(node, _nodes.Length);
        lock (_lock)
        {
            if (_down[node] == down)
            {
                return false;
            }

            _down[node] = down;
            var live = Enumerable.Range(0, _nodes.Length).Where(i => !_down[i]).ToArray();

            // With every node down there is nowhere better to send a key: keep the full table, so
            // requests fail fast on their own node and nothing moves when nodes come back.
            if (live.Length == 0)
            {
                live = Enumerable.Range(0, _nodes.Length).ToArray();
            }

            var table = _route.Table.With(live.Select(i => new PlacementNode(_nodes[i].Name, _nodes[i].Weight)));
            _route = new Route(table, live);
            return true;
        }
    }

    private sealed record Route(SlotTable Table, int[] ToNode);
}
