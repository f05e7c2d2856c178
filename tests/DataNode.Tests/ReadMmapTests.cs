using Infra.Core.Configuration;
using Infra.DataNode.Storage;
using Microsoft.Extensions.Configuration;

namespace Infra.DataNode.Tests;

/// <summary>Read connections map the database file (<see cref="DatabaseSettings.ReadMmapBytes"/>).</summary>
public sealed class ReadMmapTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "infra-mmap-" + Guid.NewGuid().ToString("N")[..10]);

    public void Dispose()
    {
        if (Directory.Exists(_root))
        {
            Directory.Delete(_root, recursive: true);
        }
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(64L << 10)]
    [InlineData(256L << 20)]
    public void Reads_see_every_commit_whether_the_file_is_mapped_or_not_and_after_it_outgrows_the_mapping(long mmapBytes)
    {
        using var db = NodeDatabase.Open(Path.Combine(_root, mmapBytes.ToString(System.Globalization.CultureInfo.InvariantCulture)), new DatabaseSettings { ReadMmapBytes = mmapBytes }, TimeProvider.System);
        db.SetEpochAndRole(1, "master");
        Assert.Null(db.ExecuteGroup([new WriteCommand([new SqlStatement("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)", [])])])[0].Error);
        Assert.Null(db.ExecuteGroup([new WriteCommand([new SqlStatement("INSERT INTO t VALUES(0, 'first')", [])])])[0].Error);

        // A read connection opens (and maps the file) while the file is small...
        Assert.Equal("first", db.Query("SELECT v FROM t WHERE id = ?", [0L]).Rows.Single()[0]);
        Assert.Equal(mmapBytes, db.ReaderMmapSize());

        // ...then the table grows to several MB, well past a 64 KB mapping, with checkpoints moving it from the WAL into the file.
        var value = new string('v', 300);
        for (var batch = 0; batch < 20; batch++)
        {
            var statements = Enumerable.Range(1 + (batch * 1000), 1000).Select(id => new SqlStatement("INSERT INTO t VALUES(?, ?)", [(long)id, value])).ToList();
            Assert.Null(db.ExecuteGroup([new WriteCommand(statements)])[0].Error);
        }

        Assert.Null(db.ExecuteGroup([new WriteCommand([new SqlStatement("UPDATE t SET v = 'changed' WHERE id = 0", [])])])[0].Error);

        var totals = db.Query("SELECT count(*), sum(length(v)) FROM t", []).Rows.Single();
        Assert.Equal(20_001L, totals[0]);
        Assert.Equal((20_000L * 300) + "changed".Length, totals[1]);
        Assert.Equal("changed", db.Query("SELECT v FROM t WHERE id = ?", [0L]).Rows.Single()[0]);
        Assert.Equal(value, db.Query("SELECT v FROM t WHERE id = ?", [19_999L]).Rows.Single()[0]);
        Assert.Empty(db.Query("SELECT v FROM t WHERE id = ?", [20_001L]).Rows);
    }

    [Theory]
    [InlineData(null, 256L << 20)]
    [InlineData("0", 0L)]
    [InlineData("64mb", 64L << 20)]
    [InlineData("8192", 8192L)]
    public void The_read_mapping_size_is_a_size_option(string? text, long expected)
    {
        var (options, problems) = Bind(text);
        Assert.Empty(problems);
        Assert.Equal(expected, options.ReadMmapBytes);
        Assert.Equal(expected, options.DatabaseSettings.ReadMmapBytes);
    }

    [Theory]
    [InlineData("-1")]
    [InlineData("lots")]
    [InlineData("2tb")]
    [InlineData("99999999999999999999999")]
    public void A_bad_read_mapping_size_is_a_clear_problem_and_keeps_the_default(string text)
    {
        var (options, problems) = Bind(text);
        Assert.Contains(problems, p => p.StartsWith("ReadMmap:", StringComparison.Ordinal));
        Assert.Equal(256L << 20, options.ReadMmapBytes);
    }

    private static (NodeOptions Options, List<string> Problems) Bind(string? readMmap)
    {
        var values = new Dictionary<string, string?>();
        if (readMmap is not null)
        {
            values["ReadMmap"] = readMmap;
        }

        var problems = new List<string>();
        var options = new NodeOptions();
        options.Bind(new ConfigReader(new ConfigurationBuilder().AddInMemoryCollection(values).Build(), problems));
        return (options, problems);
    }
}
