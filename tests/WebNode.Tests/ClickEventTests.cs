using System.Text;
using Infra.WebNode.Clicks;

namespace Infra.WebNode.Tests;

public sealed class ClickEventTests
{
    [Fact]
    public void An_event_round_trips()
    {
        var click = new ClickEvent("0123456789abcdef", "Ab3", 1_700_000_000_000);
        Assert.Equal(click, ClickEvent.TryParse(click.ToJson(), out var problem));
        Assert.Null(problem);
    }

    [Fact]
    public void Every_truncation_of_an_event_is_refused()
    {
        var json = new ClickEvent("id-1", "Ab3", 42).ToJson();
        for (var length = 0; length < json.Length; length++)
        {
            Assert.Null(ClickEvent.TryParse(json.AsSpan(0, length), out var problem));
            Assert.NotNull(problem);
        }
    }

    [Theory]
    [InlineData("", "malformed")]
    [InlineData("[]", "not a JSON object")]
    [InlineData("\"text\"", "not a JSON object")]
    [InlineData("{\"id\":\"a\",\"code\":\"b\"}", "at")]
    [InlineData("{\"id\":\"a\",\"at\":1}", "code")]
    [InlineData("{\"code\":\"b\",\"at\":1}", "id")]
    [InlineData("{\"id\":\"\",\"code\":\"b\",\"at\":1}", "id")]
    [InlineData("{\"id\":1,\"code\":\"b\",\"at\":1}", "id")]
    [InlineData("{\"id\":\"a\",\"code\":\"../x\",\"at\":1}", "code")]
    [InlineData("{\"id\":\"a\",\"code\":\"b\",\"at\":1.5}", "at")]
    [InlineData("{\"id\":\"a\",\"code\":\"b\",\"at\":\"1\"}", "at")]
    [InlineData("{\"id\":\"a\",\"code\":\"b\",\"at\":1}{}", "malformed")]
    [InlineData("{\"id\":\"a\",\"code\":\"b\",\"at\":1,\"x\":[[[[[[[[1]]]]]]]]}", "malformed")]
    [InlineData("{\"id\":\"a\" \"code\":\"b\"}", "malformed")]
    public void Hostile_payloads_are_refused_with_a_reason(string json, string reason)
    {
        Assert.Null(ClickEvent.TryParse(Encoding.UTF8.GetBytes(json), out var problem));
        Assert.Contains(reason, problem, StringComparison.Ordinal);
    }

    [Fact]
    public void Oversized_ids_are_refused()
    {
        var json = Encoding.UTF8.GetBytes($$"""{"id":"{{new string('x', 65)}}","code":"b","at":1}""");
        Assert.Null(ClickEvent.TryParse(json, out var problem));
        Assert.Contains("64", problem, StringComparison.Ordinal);
    }

    [Fact]
    public void Unknown_fields_are_ignored()
    {
        var json = Encoding.UTF8.GetBytes("""{"v":2,"id":"a","code":"b","at":1,"extra":{"k":[1,2]}}""");
        Assert.Equal(new ClickEvent("a", "b", 1), ClickEvent.TryParse(json, out _));
    }

    [Fact]
    public void Counting_statements_raise_the_count_only_for_an_unseen_event_id()
    {
        var statements = ClickWorker.CountStatements([new ClickEvent("e1", "c", 1), new ClickEvent("e2", "c", 2)]);
        Assert.Equal(4, statements.Count);
        Assert.StartsWith("UPDATE links SET clicks = clicks + 1 WHERE code = ? AND NOT EXISTS", (string)statements[0][0]!, StringComparison.Ordinal);
        Assert.Equal(["c", "e1"], statements[0][1..]);
        Assert.StartsWith("INSERT OR IGNORE INTO clicks", (string)statements[1][0]!, StringComparison.Ordinal);
        Assert.True(ClickWorker.EventsPerWrite * 2 <= 1000, "within the router's statement limit");
    }

    [Theory]
    [InlineData(1, 2)]
    [InlineData(2, 4)]
    [InlineData(4, 16)]
    [InlineData(5, 30)]
    [InlineData(1000, 30)]
    [InlineData(0, 2)]
    public void Retries_back_off(int deliveries, int seconds) => Assert.Equal(TimeSpan.FromSeconds(seconds), ClickWorker.NackDelay(deliveries));

    [Fact]
    public void The_waits_before_the_brokers_default_last_delivery_give_a_failing_shard_half_a_minute()
    {
        // 1 + 2 + 4 + 8 s: dead-lettered 15 s into a shard outage, while the README promised about 30.
        Assert.Equal(30, Enumerable.Range(1, 4).Sum(d => ClickWorker.NackDelay(d).TotalSeconds));
    }
}
