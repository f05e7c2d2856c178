using System.Text.Json;
using Infra.Core.Framing;
using Infra.ShardRouter.Placement;
using Infra.ShardRouter.Routing;

namespace Infra.ShardRouter.Api;

/// <summary>
/// Reads requests of both APIs from plain values (a MessagePack body read by MessagePackValues, or a
/// JSON body turned into the same shapes by <see cref="FromJson"/>): maps of string keys, lists,
/// null, long, double, string, bool, bytes. Every problem is a 400 <see cref="RouterException"/>.
/// </summary>
internal static class RequestParser
{
    public const int MaxSqlChars = 1 << 20;

    public static (object? Key, List<object?[]> Statements) Execute(Dictionary<string, object?> args, int maxStatements) =>
        (Key(args, required: true), Statements(args, maxStatements));

    public static QueryRequest Query(Dictionary<string, object?> args)
    {
        var hasKey = args.TryGetValue("key", out var keyValue) && keyValue is not null;
        var sql = args.GetValueOrDefault("sql") as string ?? throw RouterException.Bad("expected {\"sql\": \"SELECT ...\", \"params\": [...], \"key\"?, \"consistency\"?}");
        CheckSql(sql, "\"sql\"");
        var parameters = new List<object?>();
        if (args.GetValueOrDefault("params") is { } p)
        {
            var list = p as List<object?> ?? throw RouterException.Bad("\"params\" must be an array");
            for (var i = 0; i < list.Count; i++)
            {
                parameters.Add(SqlValue(list[i], $"parameter {i + 1}"));
            }
        }

        var tokens = Tokens(args.GetValueOrDefault("token"));
        var consistency = args.GetValueOrDefault("consistency") switch
        {
            null => tokens.Count > 0 ? Consistency.Session : Consistency.Replica,
            "replica" => Consistency.Replica,
            "session" => Consistency.Session,
            "strong" => Consistency.Strong,
            var other => throw RouterException.Bad($"\"consistency\" is replica, session or strong, not {other}"),
        };
        if (consistency == Consistency.Session && tokens.Count == 0)
        {
            throw RouterException.Bad("consistency \"session\" needs the \"token\" a write returned");
        }

        int? limit = args.GetValueOrDefault("limit") switch
        {
            null => null,
            long l when l is >= 0 and <= int.MaxValue => (int)l,
            _ => throw RouterException.Bad("\"limit\" must be a non-negative integer"),
        };
        var allowPartial = args.GetValueOrDefault("allowPartial") switch
        {
            null or false => false,
            true => true,
            _ => throw RouterException.Bad("\"allowPartial\" must be true or false"),
        };
        return new QueryRequest(hasKey, hasKey ? Key(args, required: true) : null, sql, parameters, consistency, tokens, OrderBy(args.GetValueOrDefault("orderBy")), limit, allowPartial);
    }

    public static (List<object?[]> Statements, List<TableInfo> Tables) Schema(Dictionary<string, object?> args, int maxStatements)
    {
        var statements = Statements(args, maxStatements);
        var tables = new List<TableInfo>();
        if (args.GetValueOrDefault("tables") is { } t)
        {
            foreach (var item in t as List<object?> ?? throw RouterException.Bad("\"tables\" must be an array of {\"name\", \"shardKey\"}"))
            {
                if (item is not Dictionary<string, object?> table || table.GetValueOrDefault("name") is not string name || table.GetValueOrDefault("shardKey") is not string shardKey)
                {
                    throw RouterException.Bad("a table is {\"name\", \"shardKey\"}");
                }

                try
                {
                    ShardMap.CheckIdentifier(name, "table name");
                    ShardMap.CheckIdentifier(shardKey, $"table {name}: shard key");
                }
                catch (FormatException ex)
                {
                    throw RouterException.Bad(ex.Message);
                }

                tables.Add(new TableInfo(name, shardKey));
            }
        }

        return (statements, tables);
    }

    private static object? Key(Dictionary<string, object?> args, bool required) => args.GetValueOrDefault("key") switch
    {
        null when required => throw RouterException.Bad("\"key\" is required: the shard key of the rows the request touches"),
        null => null,
        string s when s.Length <= 4096 => s,
        string => throw RouterException.Bad("\"key\" is longer than 4096 characters"),
        long l => l,
        _ => throw RouterException.Bad("\"key\" must be a string or an integer"),
    };

    private static List<object?[]> Statements(Dictionary<string, object?> args, int maxStatements)
    {
        var list = args.GetValueOrDefault("statements") as List<object?> ?? throw RouterException.Bad("expected \"statements\": [[\"SQL\", param, ...], ...]");
        if (list.Count == 0)
        {
            throw RouterException.Bad("\"statements\" is empty");
        }

        if (list.Count > maxStatements)
        {
            throw RouterException.Bad($"{list.Count} statements; the limit is {maxStatements}");
        }

        var statements = new List<object?[]>(list.Count);
        for (var i = 0; i < list.Count; i++)
        {
            switch (list[i])
            {
                case string sql:
                    CheckSql(sql, $"statement {i + 1}");
                    statements.Add([sql]);
                    break;
                case List<object?> { Count: > 0 } parts when parts[0] is string sql:
                    CheckSql(sql, $"statement {i + 1}");
                    var statement = new object?[parts.Count];
                    statement[0] = sql;
                    for (var p = 1; p < parts.Count; p++)
                    {
                        statement[p] = SqlValue(parts[p], $"statement {i + 1}, parameter {p}");
                    }

                    statements.Add(statement);
                    break;
                default:
                    throw RouterException.Bad($"statement {i + 1} is not \"SQL\" or [\"SQL\", param, ...]");
            }
        }

        return statements;
    }

    private static void CheckSql(string sql, string what)
    {
        if (string.IsNullOrWhiteSpace(sql))
        {
            throw RouterException.Bad($"{what} has no SQL");
        }

        if (sql.Length > MaxSqlChars)
        {
            throw RouterException.Bad($"{what} is {sql.Length} characters; the limit is {MaxSqlChars}");
        }
    }

    private static object? SqlValue(object? value, string where) => value switch
    {
        double d when !double.IsFinite(d) => throw RouterException.Bad($"{where} is not a finite number"),
        null or long or double or string or byte[] => value,
        bool b => b ? 1L : 0L,
        Dictionary<string, object?> { Count: 1 } m when m.GetValueOrDefault("base64") is string b64 =>
            SqlJson.TryBase64(b64) ?? throw RouterException.Bad($"{where}: \"base64\" is not valid base64"),
        _ => throw RouterException.Bad($"{where} is not a SQL value: use null, a number, a string, true/false or {{\"base64\": \"...\"}}"),
    };

    /// <summary>A token <c>{"shard","lsn"}</c>, or a list of them (one per shard written to).</summary>
    private static List<SessionToken> Tokens(object? value)
    {
        var tokens = new List<SessionToken>();
        switch (value)
        {
            case null:
                break;
            case Dictionary<string, object?> one:
                tokens.Add(Token(one));
                break;
            case List<object?> many when many.Count <= ShardMap.MaxShards:
                tokens.AddRange(many.Select(t => t is Dictionary<string, object?> m ? Token(m) : throw RouterException.Bad("\"token\" is {\"shard\", \"lsn\"} or a list of them")));
                break;
            default:
                throw RouterException.Bad("\"token\" is {\"shard\", \"lsn\"} or a list of them");
        }

        return tokens;
    }

    private static SessionToken Token(Dictionary<string, object?> map) =>
        map.GetValueOrDefault("shard") is string shard && map.GetValueOrDefault("lsn") is long lsn and >= 0
            ? new SessionToken(shard, lsn)
            : throw RouterException.Bad("a token is {\"shard\": \"id\", \"lsn\": n}");

    /// <summary>"col", "col DESC", or a list of them.</summary>
    private static List<OrderKey> OrderBy(object? value)
    {
        var items = value switch
        {
            null => [],
            string s => [s],
            List<object?> list when list.Count <= 16 => list.Select(i => i as string ?? throw RouterException.Bad("\"orderBy\" items are column names")).ToList(),
            _ => throw RouterException.Bad("\"orderBy\" is a column (\"col\", \"col DESC\") or a list of up to 16"),
        };
        var keys = new List<OrderKey>(items.Count);
        foreach (var item in items)
        {
            var parts = item.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            var descending = parts.Length == 2 && parts[1].Equals("desc", StringComparison.OrdinalIgnoreCase);
            if (parts.Length is 0 or > 2 || (parts.Length == 2 && !descending && !parts[1].Equals("asc", StringComparison.OrdinalIgnoreCase)))
            {
                throw RouterException.Bad($"orderBy '{item}' is not \"column\", \"column ASC\" or \"column DESC\"");
            }

            keys.Add(new OrderKey(parts[0], descending));
        }

        return keys;
    }

    /// <summary>A JSON value as the plain values the parser reads (numbers: long when integral, else double).</summary>
    public static object? FromJson(JsonElement element) => element.ValueKind switch
    {
        JsonValueKind.Null or JsonValueKind.Undefined => null,
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.String => element.GetString(),
        JsonValueKind.Number => element.TryGetInt64(out var l) ? (object)l : element.GetDouble(),
        JsonValueKind.Array => element.EnumerateArray().Select(FromJson).ToList(),
        JsonValueKind.Object => element.EnumerateObject().GroupBy(p => p.Name, StringComparer.Ordinal).ToDictionary(g => g.Key, g => FromJson(g.Last().Value), StringComparer.Ordinal),
        _ => null,
    };
}
