using System.Text;

namespace Infra.Core.Placement;

/// <summary>A place data can live: a shard or a cache node, with a stable name and a weight.</summary>
public sealed record PlacementNode(string Name, double Weight = 1.0);

/// <summary>
/// Keys hash (xxHash64) to a fixed number of slots; slots are placed on nodes by weighted
/// rendezvous hashing. Adding a node moves only the slots it wins (about weight/total of them),
/// removing one moves only its own, and weights are honoured. The table is immutable; changing the
/// nodes makes a new table with the next <see cref="Version"/>.
/// </summary>
public sealed class SlotTable
{
    /// <summary>The default slot count: fine-grained enough to balance, small enough to ship around.</summary>
    public const int DefaultSlots = 4096;

    private readonly int[] _owners;

    private SlotTable(IReadOnlyList<PlacementNode> nodes, int slots, long version)
    {
        Nodes = nodes;
        Version = version;
        _owners = new int[slots];
        var names = nodes.Select(n => XxHash64.Hash(Encoding.UTF8.GetBytes(n.Name))).ToArray();
        for (var slot = 0; slot < slots; slot++)
        {
            _owners[slot] = Rendezvous(slot, names, nodes);
        }
    }

    public IReadOnlyList<PlacementNode> Nodes { get; }

    public long Version { get; }

    public int SlotCount => _owners.Length;

    public static SlotTable Create(IEnumerable<PlacementNode> nodes, int slots = DefaultSlots, long version = 1)
    {
        ArgumentNullException.ThrowIfNull(nodes);
        var list = nodes.ToList();
        if (list.Count == 0)
        {
            throw new ArgumentException("a slot table needs at least one node", nameof(nodes));
        }

        if (list.Select(n => n.Name).Distinct(StringComparer.Ordinal).Count() != list.Count)
        {
            throw new ArgumentException("node names must be unique", nameof(nodes));
        }

        if (list.Any(n => !(n.Weight > 0) || double.IsInfinity(n.Weight)))
        {
            throw new ArgumentException("node weights must be positive and finite", nameof(nodes));
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(slots, 1);
        return new SlotTable(list, slots, version);
    }

    /// <summary>The table for another set of nodes, one version on.</summary>
    public SlotTable With(IEnumerable<PlacementNode> nodes) => Create(nodes, SlotCount, Version + 1);

    public static int SlotOf(ReadOnlySpan<byte> key, int slots = DefaultSlots) => (int)(XxHash64.Hash(key) % (ulong)slots);

    public int SlotFor(ReadOnlySpan<byte> key) => SlotOf(key, _owners.Length);

    /// <summary>Index into <see cref="Nodes"/> of the owner of a slot.</summary>
    public int OwnerOf(int slot) => _owners[slot];

    /// <summary>Index into <see cref="Nodes"/> of the node that holds <paramref name="key"/>.</summary>
    public int NodeFor(ReadOnlySpan<byte> key) => _owners[SlotFor(key)];

    public int NodeFor(string key) => NodeFor(Encoding.UTF8.GetBytes(key));

    /// <summary>
    /// Weighted rendezvous: each node scores -weight / ln(u) with u = hash(slot, node) in (0, 1); the
    /// highest wins. A node's share of slots is its share of the total weight.
    /// </summary>
    private static int Rendezvous(int slot, ulong[] nodeHashes, IReadOnlyList<PlacementNode> nodes)
    {
        var best = 0;
        var bestScore = double.NegativeInfinity;
        Span<byte> input = stackalloc byte[12];
        for (var i = 0; i < nodeHashes.Length; i++)
        {
            BitConverter.TryWriteBytes(input, nodeHashes[i]);
            BitConverter.TryWriteBytes(input[8..], slot);
            var h = XxHash64.Hash(input);
            var unit = ((h >> 11) + 0.5) / (1UL << 53);
            var score = -nodes[i].Weight / Math.Log(unit);
            if (score > bestScore)
            {
                bestScore = score;
                best = i;
            }
        }

        return best;
    }
}
