using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Engines;
using Infra.DataNode.Storage;
using Microsoft.Data.Sqlite;

namespace Infra.Benchmarks;

/// <summary>
/// The data node's storage in process, on the real disk (WAL, synchronous=FULL): SQLite alone as the
/// limit (one single-row INSERT transaction, one point SELECT) against the node's own paths —
/// <see cref="NodeDatabase.ExecuteGroup"/> with one request (session capture, savepoint, log entry,
/// fsync) and with 16 requests committed together (the group commit a busy master does), and a
/// point query through the read pool. Figures are per write or per read.
/// </summary>
[SimpleJob(RunStrategy.Monitoring, launchCount: 1, warmupCount: 1, iterationCount: 5)]
[MemoryDiagnoser]
public class DataNodeBenchmarks
{
    private const int Writes = 512;
    private const int Reads = 20_000;
    private const int Rows = 100_000;
    private static readonly string Value = new('x', 100);
    private string _dir = "";
    private SqliteConnection? _sqlite;
    private SqliteCommand? _insert;
    private SqliteCommand? _select;
    private NodeDatabase? _node;
    private readonly Random _random = new(1);

    [GlobalSetup]
    public void Setup()
    {
        _dir = Path.Combine("/var/tmp", "infra-dbbench-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(_dir);
        _sqlite = new SqliteConnection($"Data Source={Path.Combine(_dir, "plain.db")};Pooling=False");
        _sqlite.Open();
        using (var setup = _sqlite.CreateCommand())
        {
            setup.CommandText = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE kv(id INTEGER PRIMARY KEY, v TEXT NOT NULL);";
            setup.ExecuteNonQuery();
            setup.CommandText = $"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {Rows}) INSERT INTO kv(id, v) SELECT i, '{Value}' FROM n";
            setup.ExecuteNonQuery();
        }

        _insert = _sqlite.CreateCommand();
        _insert.CommandText = "INSERT INTO kv(v) VALUES($v)";
        _insert.Parameters.AddWithValue("$v", Value);
        _insert.Prepare();
        _select = _sqlite.CreateCommand();
        _select.CommandText = "SELECT v FROM kv WHERE id = $id";
        _select.Parameters.AddWithValue("$id", 1L);
        _select.Prepare();

        _node = NodeDatabase.Open(Path.Combine(_dir, "node"), new DatabaseSettings(), TimeProvider.System);
        _node.SetEpochAndRole(1, "master");
        _node.ExecuteGroup([new WriteCommand([new SqlStatement("CREATE TABLE kv(id INTEGER PRIMARY KEY, v TEXT NOT NULL)", [])])]);
        for (var start = 1; start <= Rows; start += 1000)
        {
            _node.ExecuteGroup([new WriteCommand([.. Enumerable.Range(start, 1000).Select(i => new SqlStatement("INSERT INTO kv(id, v) VALUES(?, ?)", [(long)i, Value]))])]);
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _insert?.Dispose();
        _select?.Dispose();
        _sqlite?.Dispose();
        _node?.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    [Benchmark(OperationsPerInvoke = Writes)]
    public void SqliteInsertTransaction()
    {
        for (var i = 0; i < Writes; i++)
        {
            using var transaction = _sqlite!.BeginTransaction();
            _insert!.Transaction = transaction;
            _insert.ExecuteNonQuery();
            transaction.Commit();
        }
    }

    [Benchmark(OperationsPerInvoke = Writes)]
    public void NodeWriteAlone()
    {
        var command = new WriteCommand([new SqlStatement("INSERT INTO kv(v) VALUES(?)", [Value])]);
        for (var i = 0; i < Writes; i++)
        {
            _node!.ExecuteGroup([command]);
        }
    }

    [Benchmark(OperationsPerInvoke = Writes)]
    public void NodeWriteGroupOf16()
    {
        var command = new WriteCommand([new SqlStatement("INSERT INTO kv(v) VALUES(?)", [Value])]);
        var group = Enumerable.Repeat(command, 16).ToArray();
        for (var i = 0; i < Writes / 16; i++)
        {
            _node!.ExecuteGroup(group);
        }
    }

    [Benchmark(OperationsPerInvoke = Reads)]
    public long SqlitePointSelect()
    {
        long length = 0;
        for (var i = 0; i < Reads; i++)
        {
            _select!.Parameters[0].Value = (long)_random.Next(1, Rows + 1);
            length += ((string)_select.ExecuteScalar()!).Length;
        }

        return length;
    }

    [Benchmark(OperationsPerInvoke = Reads)]
    public long NodePointQuery()
    {
        long count = 0;
        object?[] args = [0L];
        for (var i = 0; i < Reads; i++)
        {
            args[0] = (long)_random.Next(1, Rows + 1);
            count += _node!.Query("SELECT v FROM kv WHERE id = ?", args).Rows.Count;
        }

        return count;
    }
}
