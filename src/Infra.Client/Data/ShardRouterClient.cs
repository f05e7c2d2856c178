using Infra.Client.Rpc;
using MessagePack;

namespace Infra.Client.Data;

/// <summary>How fresh a routed read must be.</summary>
public enum ReadConsistency
{
    /// <summary>Any healthy replica: fastest, may be a little behind.</summary>
    Replica,

    /// <summary>Never older than the writes whose tokens are presented.</summary>
    Session,

    /// <summary>The shard's master.</summary>
    Strong,
}

/// <summary>What a write returns for read-your-writes: present it with <see cref="ReadConsistency.Session"/>.</summary>
public readonly record struct SessionToken(string Shard, long Lsn);

/// <summary>A routed write: per-statement outcomes, the shard, the session token and the shard's epoch.</summary>
public sealed record RoutedWrite(IReadOnlyList<StatementOutcome> Results, string Shard, SessionToken Token, long Epoch);

/// <summary>A routed read: the merged rows and which node of which shard answered each part.</summary>
public sealed record RoutedRows(IReadOnlyList<string> Columns, IReadOnlyList<object?[]> Rows, IReadOnlyList<(string Shard, string Node, long Lsn)> Shards)
{
    /// <summary>Shards a fan-out with <see cref="QueryOptions.AllowPartial"/> could not read: their rows are missing.</summary>
    public IReadOnlyList<string> FailedShards { get; init; } = [];
}

/// <summary>Options of a routed read.</summary>
public sealed record QueryOptions
{
    /// <summary>The shard key; null fans the read out to every shard.</summary>
    public object? Key { get; init; }

    public ReadConsistency Consistency { get; init; } = ReadConsistency.Replica;

    public IReadOnlyList<SessionToken> Tokens { get; init; } = [];

    /// <summary>Fan-out merge order: "col" or "col DESC".</summary>
    public IReadOnlyList<string> OrderBy { get; init; } = [];

    public int? Limit { get; init; }

    public bool AllowPartial { get; init; }
}

/// <summary>
/// A connection to a shard router's MessagePack port (<c>--listen</c>): keyed writes, routed and
/// fanned-out reads, schema changes. Thread-safe, many requests in flight. Errors are
/// <see cref="DataException"/>; <see cref="DataException.IsRetriable"/> is true for "FailingOver" and
/// other transient ones.
/// </summary>
public sealed class ShardRouterClient : IAsyncDisposable
{
    private static readonly RpcErrors Errors = new("the shard router", (code, message) => new DataException(code, message), (message, cause) => new DataException(message, cause));
    private readonly FrameRpcClient _rpc;

    private ShardRouterClient(FrameRpcClient rpc) => _rpc = rpc;

    public bool IsConnected => _rpc.IsConnected;

    /// <summary>
    /// How long a request may wait for the router's answer (default 30 s). Past it the request fails
    /// as a lost connection, and so does the connection: what the router did with it is unknown.
    /// </summary>
    public TimeSpan RequestTimeout
    {
        get => _rpc.RequestTimeout;
        set => _rpc.RequestTimeout = value;
    }

    public static async Task<ShardRouterClient> ConnectAsync(string address, CancellationToken cancellationToken = default)
    {
        var (host, port) = DataNodeClient.SplitAddress(address);
        return new ShardRouterClient(await FrameRpcClient.ConnectAsync(host, port, Errors, cancellationToken));
    }

    /// <summary>Statements (<c>[sql, params…]</c>) in one transaction on the master of <paramref name="key"/>'s shard.</summary>
    public async Task<RoutedWrite> ExecuteAsync(object key, IReadOnlyList<object?[]> statements)
    {
        ArgumentNullException.ThrowIfNull(statements);
        var body = await _rpc.SendAsync("execute", (ref MessagePackWriter w) =>
        {
            w.WriteMapHeader(2);
            w.Write("key");
            FrameRpcClient.WriteValue(ref w, key);
            w.Write("statements");
            w.WriteArrayHeader(statements.Count);
            foreach (var statement in statements)
            {
                FrameRpcClient.WriteValue(ref w, statement);
            }
        });
        return RpcAnswers.Read("execute", body, ReadWrite, DataNodeClient.BadAnswer);
    }

    private static RoutedWrite ReadWrite(ref MessagePackReader reader)
    {
        var results = new List<StatementOutcome>();
        string shard = "";
        SessionToken token = default;
        long epoch = 0;
        for (var fields = reader.ReadMapHeader(); fields > 0; fields--)
        {
            switch (reader.ReadString())
            {
                case "results":
                    DataNodeClient.ReadOutcomes(ref reader, results);
                    break;
                case "shard":
                    shard = reader.ReadString() ?? "";
                    break;
                case "token":
                    var (tokenShard, _, lsn) = ReadPosition(ref reader);
                    token = new SessionToken(tokenShard, lsn);
                    break;
                case "epoch":
                    epoch = reader.ReadInt64();
                    break;
                default:
                    reader.Skip();
                    break;
            }
        }

        return new RoutedWrite(results, shard, token, epoch);
    }

    /// <summary>A read: keyed (one shard) or keyless (every shard, merged).</summary>
    public async Task<RoutedRows> QueryAsync(string sql, IReadOnlyList<object?>? parameters = null, QueryOptions? options = null)
    {
        options ??= new QueryOptions();
        var args = new Dictionary<string, object?>
        {
            ["sql"] = sql,
            ["params"] = parameters ?? [],
            ["consistency"] = options.Consistency.ToString().ToLowerInvariant(),
        };
        if (options.Key is not null)
        {
            args["key"] = options.Key;
        }

        if (options.Tokens.Count > 0)
        {
            args["token"] = options.Tokens.Select(t => (object?)new Dictionary<string, object?> { ["shard"] = t.Shard, ["lsn"] = t.Lsn }).ToList();
        }

        if (options.OrderBy.Count > 0)
        {
            args["orderBy"] = options.OrderBy.Cast<object?>().ToList();
        }

        if (options.Limit is { } limit)
        {
            args["limit"] = limit;
        }

        if (options.AllowPartial)
        {
            args["allowPartial"] = true;
        }

        var body = await _rpc.SendAsync("query", (ref MessagePackWriter w) => FrameRpcClient.WriteValue(ref w, args));
        var rows = DataNodeClient.ReadRows(body);
        var (shards, failed) = MessagePackShards(body);
        return new RoutedRows(rows.Columns, rows.Rows, shards) { FailedShards = failed };
    }

    /// <summary>The <c>shards</c> that answered a read and the <c>failedShards</c> ids (<c>[{shard, code, error}]</c>).</summary>
    private static (List<(string, string, long)> Shards, List<string> Failed) MessagePackShards(byte[] body) =>
        RpcAnswers.Read("query", body, MessagePackShards, DataNodeClient.BadAnswer);

    private static (List<(string, string, long)> Shards, List<string> Failed) MessagePackShards(ref MessagePackReader reader)
    {
        var shards = new List<(string, string, long)>();
        var failed = new List<string>();
        for (var fields = reader.ReadMapHeader(); fields > 0; fields--)
        {
            switch (reader.ReadString())
            {
                case "shards":
                    for (var n = reader.ReadArrayHeader(); n > 0; n--)
                    {
                        shards.Add(ReadPosition(ref reader));
                    }

                    break;
                case "failedShards":
                    for (var n = reader.ReadArrayHeader(); n > 0; n--)
                    {
                        failed.Add(ReadPosition(ref reader).Shard);
                    }

                    break;
                default:
                    reader.Skip();
                    break;
            }
        }

        return (shards, failed);
    }

    /// <summary>A <c>{shard, node?, lsn}</c> map: a session token, or one shard's entry in a read's <c>shards</c>.</summary>
    private static (string Shard, string Node, long Lsn) ReadPosition(ref MessagePackReader reader)
    {
        string shard = "", node = "";
        long lsn = 0;
        for (var f = reader.ReadMapHeader(); f > 0; f--)
        {
            switch (reader.ReadString())
            {
                case "shard":
                    shard = reader.ReadString() ?? "";
                    break;
                case "node":
                    node = reader.ReadString() ?? "";
                    break;
                case "lsn":
                    lsn = reader.ReadInt64();
                    break;
                default:
                    reader.Skip();
                    break;
            }
        }

        return (shard, node, lsn);
    }

    /// <summary>DDL to every shard; <paramref name="tables"/> registers sharded tables and their shard-key columns. Returns per-shard outcomes.</summary>
    public async Task<IReadOnlyList<Dictionary<string, object?>>> SchemaAsync(IReadOnlyList<string> statements, IReadOnlyList<(string Name, string ShardKey)>? tables = null)
    {
        ArgumentNullException.ThrowIfNull(statements);
        var answer = await _rpc.CallAsync("schema", new()
        {
            ["statements"] = statements.Cast<object?>().ToList(),
            ["tables"] = (tables ?? []).Select(t => (object?)new Dictionary<string, object?> { ["name"] = t.Name, ["shardKey"] = t.ShardKey }).ToList(),
        });
        return [.. (answer.GetValueOrDefault("shards") as List<object?> ?? []).OfType<Dictionary<string, object?>>()];
    }

    public Task PingAsync() => _rpc.CallAsync("ping", []);

    public ValueTask DisposeAsync() => _rpc.DisposeAsync();
}
