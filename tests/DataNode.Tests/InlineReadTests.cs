using System.Diagnostics;
using Infra.DataNode.Storage;

namespace Infra.DataNode.Tests;

/// <summary>
/// What decides that a read may run on the thread that read its request (no hop to the thread pool):
/// the text's recent cost, and a read connection free without waiting.
/// </summary>
public sealed class InlineReadTests : IDisposable
{
    private static readonly long Micro = Stopwatch.Frequency / 1_000_000;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "infra-inline-" + Guid.NewGuid().ToString("N")[..10]);

    public void Dispose()
    {
        if (Directory.Exists(_root))
        {
            Directory.Delete(_root, recursive: true);
        }
    }

    [Fact]
    public void A_text_is_cheap_only_after_enough_fast_runs()
    {
        var costs = new QueryCosts();
        Assert.False(costs.IsCheap("SELECT 1"));
        for (var i = 1; i < QueryCosts.MinSamples; i++)
        {
            costs.Record("SELECT 1", 5 * Micro);
            Assert.False(costs.IsCheap("SELECT 1"));
        }

        costs.Record("SELECT 1", 5 * Micro);
        Assert.True(costs.IsCheap("SELECT 1"));
        Assert.False(costs.IsCheap("SELECT 2"));
    }

    [Fact]
    public void One_slow_run_sends_a_cheap_text_back_to_the_pool_until_it_is_fast_again()
    {
        var costs = new QueryCosts();
        for (var i = 0; i < 20; i++)
        {
            costs.Record("q", 5 * Micro);
        }

        costs.Record("q", 2_000 * Micro); // 2 ms: a scan that found many rows this time
        Assert.False(costs.IsCheap("q"));

        var runs = 0;
        while (!costs.IsCheap("q"))
        {
            costs.Record("q", 5 * Micro);
            runs++;
            Assert.True(runs < 100, "the average never came back down");
        }

        Assert.True(runs > 5, $"back to cheap after only {runs} fast runs");
    }

    [Fact]
    public void A_text_that_is_always_slow_never_becomes_cheap()
    {
        var costs = new QueryCosts();
        for (var i = 0; i < 100; i++)
        {
            costs.Record("slow", 500 * Micro);
        }

        Assert.False(costs.IsCheap("slow"));
    }

    [Fact]
    public void The_table_of_texts_stays_bounded_and_long_texts_are_never_cheap()
    {
        var costs = new QueryCosts();
        for (var i = 0; i < QueryCosts.MaxTexts + 10; i++)
        {
            for (var run = 0; run < QueryCosts.MinSamples; run++)
            {
                costs.Record("SELECT " + i, Micro);
            }
        }

        // Full at MaxTexts: the next new text started the table over, so old texts are relearned.
        Assert.Equal(10, costs.Count);
        Assert.False(costs.IsCheap("SELECT 0"));
        Assert.True(costs.IsCheap("SELECT " + (QueryCosts.MaxTexts + 5)));

        var longText = "SELECT " + new string('x', QueryCosts.MaxTextLength);
        for (var run = 0; run < 20; run++)
        {
            costs.Record(longText, Micro);
        }

        Assert.False(costs.IsCheap(longText));
        Assert.Equal(10, costs.Count);
    }

    [Fact]
    public void A_read_that_may_not_wait_is_refused_rather_than_opening_a_connection()
    {
        using var db = NodeDatabase.Open(_root, new DatabaseSettings(), TimeProvider.System);
        db.SetEpochAndRole(1, "master");
        var outcome = db.ExecuteGroup([new WriteCommand([new SqlStatement("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", []), new SqlStatement("INSERT INTO t VALUES(1, 'a')", [])])])[0];
        Assert.Null(outcome.Error);

        // No read connection is open yet: opening one takes a while, so not without waiting.
        Assert.Null(db.TryQuery("SELECT v FROM t WHERE id = ?", [1L], mayWait: false));

        // A read that may wait opens one and returns it to the pool; then the same read runs at once.
        Assert.Equal("a", db.Query("SELECT v FROM t WHERE id = ?", [1L]).Rows.Single()[0]);
        var now = db.TryQuery("SELECT v FROM t WHERE id = ?", [1L], mayWait: false);
        Assert.NotNull(now);
        Assert.Equal("a", now.Rows.Single()[0]);
    }

    [Fact]
    public async Task A_read_interrupted_at_the_query_time_limit_is_not_cheap_any_more()
    {
        // Its cost was recorded only when it succeeded: a text cheap once stayed cheap however often it was
        // interrupted at --max-query-time, and each such run held the network thread it came in on.
        using var meters = new TestMeters();
        var options = new NodeOptions
        {
            Listen = new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0),
            DataDir = _root,
            Role = NodeRole.Master,
            Sync = SyncMode.Async,
            MaxQueryTime = TimeSpan.FromMilliseconds(200),
        };
        await using var node = new Node(options, TimeProvider.System, meters, Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance);
        const string Sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) SELECT count(*) FROM c";
        for (var i = 0; i < 50 && !node.QueryCosts.IsCheap(Sql); i++)
        {
            await node.QueryOnCallerIfCheapAsync(Sql, [1L], null, null, default);
        }

        Assert.True(node.QueryCosts.IsCheap(Sql));
        await Assert.ThrowsAnyAsync<Exception>(() => node.QueryOnCallerIfCheapAsync(Sql, [(long)1e12], null, null, default));
        Assert.False(node.QueryCosts.IsCheap(Sql));
    }
}
