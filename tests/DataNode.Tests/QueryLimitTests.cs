using Infra.DataNode.Storage;

namespace Infra.DataNode.Tests;

/// <summary>
/// A read cannot hold a read connection forever or make the node allocate without bound (found by a
/// protocol fuzzer: four never-ending recursive queries took every read slot, and zeroblob(1e9) or many
/// large rows took gigabytes).
/// </summary>
public sealed class QueryLimitTests : IDisposable
{
    private const string Endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    private readonly string _root = Path.Combine(Path.GetTempPath(), "infra-limits-" + Guid.NewGuid().ToString("N")[..10]);

    public void Dispose()
    {
        if (Directory.Exists(_root))
        {
            Directory.Delete(_root, recursive: true);
        }
    }

    [Fact]
    public async Task A_read_that_runs_past_the_limit_is_interrupted_and_its_connection_serves_the_next_read()
    {
        var settings = new DatabaseSettings { MaxQueryTime = TimeSpan.FromMilliseconds(200), ReadConnections = 2 };
        using var db = NodeDatabase.Open(_root, settings, TimeProvider.System);

        // More endless reads at once than there are read connections: each one ends, none holds a slot.
        var endless = Enumerable.Range(0, 5).Select(_ => Task.Run(() => Assert.Throws<NodeException>(() => db.Query(Endless, [])))).ToList();
        var errors = await Task.WhenAll(endless).WaitAsync(TimeSpan.FromSeconds(60));
        foreach (var error in errors)
        {
            Assert.Equal(NodeErrorCode.SqlError, error.Code);
            Assert.Contains("--max-query-time", error.Message, StringComparison.Ordinal);
        }

        Assert.Equal(1L, db.Query("SELECT 1", []).Rows[0][0]);
        Assert.Equal(55L, db.Query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10) SELECT sum(x) FROM c", []).Rows[0][0]);
    }

    [Fact]
    public void Without_a_limit_a_long_read_runs_to_its_end()
    {
        using var db = NodeDatabase.Open(_root, new DatabaseSettings { MaxQueryTime = TimeSpan.Zero }, TimeProvider.System);
        Assert.Equal(2_000_000L, db.Query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) SELECT count(*) FROM c", []).Rows[0][0]);
    }

    [Fact]
    public void A_result_over_the_byte_limit_is_refused_and_no_read_may_make_a_value_longer_than_it()
    {
        using var db = NodeDatabase.Open(_root, new DatabaseSettings { MaxResultBytes = 1 << 20 }, TimeProvider.System);

        // One value: SQLite refuses to make it at all (nothing near a gigabyte is allocated).
        var tooBig = Assert.Throws<NodeException>(() => db.Query("SELECT zeroblob(1000000000)", []));
        Assert.Equal(NodeErrorCode.SqlError, tooBig.Code);
        Assert.Contains("too big", tooBig.Message, StringComparison.Ordinal);

        // Many values that add up: refused as the rows are read.
        var many = Assert.Throws<NodeException>(() => db.Query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100) SELECT randomblob(20000) FROM c", []));
        Assert.Equal(NodeErrorCode.BadRequest, many.Code);
        Assert.Contains("--max-result-size", many.Message, StringComparison.Ordinal);

        // Under the limit, fine.
        Assert.Equal(40, db.Query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 40) SELECT randomblob(20000) FROM c", []).Rows.Count);
    }
}
