using System.Text;
using Infra.Core.Placement;

namespace Infra.Core.Tests;

public class PlacementTests
{
    [Theory]
    [InlineData("", 0xEF46DB3751D8E999UL)]
    [InlineData("a", 0xD24EC4F1A98C6E5BUL)]
    [InlineData("abc", 0x44BC2CF5AD770999UL)]
    [InlineData("Nobody inspects the spammish repetition", 0xFBCEA83C8A378BF1UL)]
    public void XxHash64_matches_the_reference_vectors(string input, ulong expected)
    {
        Assert.Equal(expected, XxHash64.Hash(Encoding.ASCII.GetBytes(input)));
    }

    [Fact]
    public void XxHash64_covers_every_tail_length_consistently()
    {
        // Lengths 0..100 walk every branch (32-byte stripes, 8-, 4- and 1-byte tails); the hash must
        // depend on every byte.
        var data = Enumerable.Range(0, 100).Select(i => (byte)(i * 7)).ToArray();
        var seen = new HashSet<ulong>();
        for (var length = 0; length <= data.Length; length++)
        {
            Assert.True(seen.Add(XxHash64.Hash(data.AsSpan(0, length))));
        }

        var flipped = (byte[])data.Clone();
        flipped[63] ^= 1;
        Assert.NotEqual(XxHash64.Hash(data), XxHash64.Hash(flipped));
    }

    [Fact]
    public void Slots_spread_evenly_over_equal_nodes()
    {
        var table = SlotTable.Create(Nodes(4));
        var counts = Count(table);
        Assert.All(counts, c => Assert.InRange(c, 4096 / 4 * 0.9, 4096 / 4 * 1.1));
    }

    [Fact]
    public void Weights_are_honoured()
    {
        var table = SlotTable.Create([new PlacementNode("a", 1), new PlacementNode("b", 2), new PlacementNode("c", 1)]);
        var counts = Count(table);
        Assert.InRange(counts[1] / (double)table.SlotCount, 0.46, 0.54);
        Assert.InRange(counts[0] / (double)table.SlotCount, 0.21, 0.29);
    }

    [Fact]
    public void Adding_a_node_moves_only_the_slots_it_wins()
    {
        var before = SlotTable.Create(Nodes(4));
        var after = before.With(Nodes(5));

        var moved = 0;
        for (var slot = 0; slot < before.SlotCount; slot++)
        {
            var from = before.Nodes[before.OwnerOf(slot)].Name;
            var to = after.Nodes[after.OwnerOf(slot)].Name;
            if (from != to)
            {
                Assert.Equal("node-4", to);
                moved++;
            }
        }

        Assert.InRange(moved / (double)before.SlotCount, 0.16, 0.24);
        Assert.Equal(before.Version + 1, after.Version);
    }

    [Fact]
    public void Removing_a_node_moves_only_its_own_slots()
    {
        var before = SlotTable.Create(Nodes(5));
        var after = before.With(Nodes(5).Where(n => n.Name != "node-2"));

        for (var slot = 0; slot < before.SlotCount; slot++)
        {
            var from = before.Nodes[before.OwnerOf(slot)].Name;
            var to = after.Nodes[after.OwnerOf(slot)].Name;
            Assert.True(from == to || from == "node-2", $"slot {slot} moved from {from} to {to}");
        }
    }

    [Fact]
    public void Keys_map_to_the_same_node_in_every_process()
    {
        var table = SlotTable.Create(Nodes(3));
        Assert.Equal(SlotTable.SlotOf(Encoding.UTF8.GetBytes("user:42")), table.SlotFor(Encoding.UTF8.GetBytes("user:42")));
        Assert.Equal((int)(XxHash64.Hash(Encoding.UTF8.GetBytes("user:42")) % 4096), table.SlotFor(Encoding.UTF8.GetBytes("user:42")));
        Assert.Equal(table.NodeFor("user:42"), SlotTable.Create(Nodes(3)).NodeFor("user:42"));
    }

    [Fact]
    public void Bad_tables_are_refused()
    {
        Assert.Throws<ArgumentException>(() => SlotTable.Create([]));
        Assert.Throws<ArgumentException>(() => SlotTable.Create([new PlacementNode("a"), new PlacementNode("a")]));
        Assert.Throws<ArgumentException>(() => SlotTable.Create([new PlacementNode("a", 0)]));
        Assert.Throws<ArgumentException>(() => SlotTable.Create([new PlacementNode("a", double.NaN)]));
    }

    private static List<PlacementNode> Nodes(int count) => Enumerable.Range(0, count).Select(i => new PlacementNode($"node-{i}")).ToList();

    private static int[] Count(SlotTable table)
    {
        var counts = new int[table.Nodes.Count];
        for (var slot = 0; slot < table.SlotCount; slot++)
        {
            counts[table.OwnerOf(slot)]++;
        }

        return counts;
    }
}
