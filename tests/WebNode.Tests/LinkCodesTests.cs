using Infra.Testing;
using Infra.WebNode.Links;

namespace Infra.WebNode.Tests;

public sealed class LinkCodesTests
{
    [Fact]
    public void Codes_are_unique_within_a_node_even_when_the_clock_stands_still_or_steps_back()
    {
        var time = new ManualTimeProvider();
        time.Advance(TimeSpan.FromDays(300));
        var codes = new LinkCodes(5, time);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < 5000; i++)
        {
            Assert.True(seen.Add(codes.Next()), "a code made twice");
        }

        // A clock stepping back does not bring old ids back.
        var last = codes.NextId();
        var earlier = new LinkCodes(5, new ManualTimeProvider());
        Assert.True(codes.NextId() > last);
        Assert.NotEqual(last, earlier.NextId());
    }

    [Fact]
    public void Two_nodes_at_the_same_instant_make_different_codes()
    {
        var time = new ManualTimeProvider();
        var a = new LinkCodes(1, time);
        var b = new LinkCodes(2, time);
        var fromA = Enumerable.Range(0, 1000).Select(_ => a.Next()).ToHashSet(StringComparer.Ordinal);
        Assert.DoesNotContain(Enumerable.Range(0, 1000).Select(_ => b.Next()), fromA.Contains);
    }

    [Fact]
    public void The_node_id_is_inside_the_id()
    {
        var codes = new LinkCodes(1023, new ManualTimeProvider());
        var id = codes.NextId();
        Assert.Equal(1023, (int)((id >> LinkCodes.SequenceBits) & ((1 << LinkCodes.NodeBits) - 1)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new LinkCodes(1024, new ManualTimeProvider()));
        Assert.Throws<ArgumentOutOfRangeException>(() => new LinkCodes(-1, new ManualTimeProvider()));
    }

    [Theory]
    [InlineData(0L, "0")]
    [InlineData(61L, "z")]
    [InlineData(62L, "10")]
    [InlineData(long.MaxValue, "AzL8n0Y58m7")]
    public void Base62(long id, string code)
    {
        Assert.Equal(code, LinkCodes.Encode(id));
        Assert.True(LinkCodes.IsCode(code));
    }

    [Theory]
    [InlineData("")]
    [InlineData("abc-def")]
    [InlineData("abcdefghijkl")]
    [InlineData("../etc")]
    [InlineData("abc%00")]
    [InlineData("é")]
    [InlineData("healthz ")]
    public void Anything_else_is_not_a_code(string text) => Assert.False(LinkCodes.IsCode(text));
}
