using System.Text;
using System.Text.Json;
using Infra.ShardRouter.Api;
using Infra.ShardRouter.Placement;
using Infra.ShardRouter.Routing;

namespace Infra.ShardRouter.Tests;

/// <summary>
/// Requests of both APIs, as plain values and as JSON: what valid requests become, and that every
/// malformed one is a 400 "BadRequest" <see cref="RouterException"/>.
/// </summary>
public sealed class RequestParserTests
{
    private const int MaxStatements = 8;

    private static Dictionary<string, object?> Args(params (string Key, object? Value)[] entries) =>
        entries.ToDictionary(e => e.Key, e => e.Value, StringComparer.Ordinal);

    private static List<object?> List(params object?[] items) => [.. items];

    private static Dictionary<string, object?> Json(string json)
    {
        using var document = JsonDocument.Parse(json);
        return Assert.IsType<Dictionary<string, object?>>(RequestParser.FromJson(document.RootElement));
    }

    private static void AssertBad(Action parse, string? reason = null)
    {
        var error = Assert.Throws<RouterException>(parse);
        Assert.Equal("BadRequest", error.Code);
        Assert.Equal(400, error.Status);
        Assert.False(error.Retriable);
        if (reason is not null)
        {
            Assert.Contains(reason, error.Message, StringComparison.Ordinal);
        }
    }

    // ------------------------------------------------------------------ FromJson

    [Fact]
    public void Json_values_become_plain_values()
    {
        var args = Json("""
            {"int": 42, "neg": -7, "big": 9223372036854775807, "huge": 9223372036854775808, "real": 1.5, "exp": 1e2, "zero": 0,
             "text": "h\u00e9", "t": true, "f": false, "nil": null, "list": [1, "a", [2.5]], "map": {"k": 1}}
            """);
        Assert.Equal(42L, Assert.IsType<long>(args["int"]));
        Assert.Equal(-7L, Assert.IsType<long>(args["neg"]));
        Assert.Equal(long.MaxValue, Assert.IsType<long>(args["big"]));
        Assert.Equal(9223372036854775808.0, Assert.IsType<double>(args["huge"]));
        Assert.Equal(1.5, Assert.IsType<double>(args["real"]));
        Assert.Equal(100.0, Assert.IsType<double>(args["exp"]));
        Assert.Equal(0L, Assert.IsType<long>(args["zero"]));
        Assert.Equal("h\u00e9", args["text"]);
        Assert.Equal(true, args["t"]);
        Assert.Equal(false, args["f"]);
        Assert.True(args.ContainsKey("nil"));
        Assert.Null(args["nil"]);
        var list = Assert.IsType<List<object?>>(args["list"]);
        Assert.Equal(1L, list[0]);
        Assert.Equal("a", list[1]);
        Assert.Equal([2.5], Assert.IsType<List<object?>>(list[2]));
        Assert.Equal(1L, Assert.IsType<Dictionary<string, object?>>(args["map"])["k"]);
    }

    [Fact]
    public void A_repeated_json_property_keeps_the_last_value()
    {
        var args = Json("""{"key": 1, "key": "two"}""");
        Assert.Equal("two", args["key"]);
        Assert.Single(args);

        // Names are case-sensitive.
        Assert.Equal(2, Json("""{"key": 1, "Key": 2}""").Count);
    }

    [Fact]
    public void A_json_number_beyond_double_is_not_a_crash()
    {
        // System.Text.Json reads 1e400 as infinity rather than failing: a double, like SQLite's 9e999.
        var args = Json("""{"a": 1e400, "b": -1e400, "c": 1e-400}""");
        Assert.Equal(double.PositiveInfinity, Assert.IsType<double>(args["a"]));
        Assert.Equal(double.NegativeInfinity, Assert.IsType<double>(args["b"]));
        Assert.Equal(0.0, Assert.IsType<double>(args["c"]));
    }

    // ------------------------------------------------------------------ Execute

    [Fact]
    public void Execute_reads_the_key_and_statements()
    {
        var (key, statements) = RequestParser.Execute(Args(
            ("key", "user:1"),
            ("statements", List(
                "DELETE FROM t",
                List("INSERT INTO t VALUES(?, ?, ?, ?, ?, ?, ?)", null, 5L, 2.5, "s", true, false, new byte[] { 1, 2 }),
                List("UPDATE t SET a = 1")))), MaxStatements);
        Assert.Equal("user:1", key);
        Assert.Equal(3, statements.Count);
        Assert.Equal(["DELETE FROM t"], statements[0]);
        Assert.Equal(["INSERT INTO t VALUES(?, ?, ?, ?, ?, ?, ?)", null, 5L, 2.5, "s", 1L, 0L, new byte[] { 1, 2 }], statements[1]);
        Assert.Equal(["UPDATE t SET a = 1"], statements[2]);

        var (intKey, _) = RequestParser.Execute(Args(("key", 42L), ("statements", List("SELECT 1"))), MaxStatements);
        Assert.Equal(42L, Assert.IsType<long>(intKey));
    }

    [Fact]
    public void Execute_from_json()
    {
        var (key, statements) = RequestParser.Execute(Json("""
            {"key": 42, "statements": ["DELETE FROM t", ["INSERT INTO t VALUES(?, ?, ?, ?, ?)", 7, 1.5, "x", {"base64": "AQID/w=="}, null]]}
            """), MaxStatements);
        Assert.Equal(42L, Assert.IsType<long>(key));
        Assert.Equal(["DELETE FROM t"], statements[0]);
        Assert.Equal(7L, Assert.IsType<long>(statements[1][1]));
        Assert.Equal(1.5, Assert.IsType<double>(statements[1][2]));
        Assert.Equal("x", statements[1][3]);
        Assert.Equal(new byte[] { 1, 2, 3, 255 }, Assert.IsType<byte[]>(statements[1][4]));
        Assert.Null(statements[1][5]);

        var (_, empty) = RequestParser.Execute(Json("""{"key": "k", "statements": [["SELECT ?", {"base64": ""}]]}"""), MaxStatements);
        Assert.Equal([], Assert.IsType<byte[]>(empty[0][1]));
    }

    [Fact]
    public void Execute_allows_the_statement_limit_exactly()
    {
        var (_, statements) = RequestParser.Execute(Args(("key", 1L), ("statements", List([.. Enumerable.Repeat<object?>("SELECT 1", MaxStatements)]))), MaxStatements);
        Assert.Equal(MaxStatements, statements.Count);

        var longKey = new string('k', 4096);
        Assert.Equal(longKey, RequestParser.Execute(Args(("key", longKey), ("statements", List("SELECT 1"))), MaxStatements).Key);
    }

    public static TheoryData<string, string> BadExecutes => new()
    {
        { """{"statements": ["SELECT 1"]}""", "\"key\" is required" },
        { """{"key": null, "statements": ["SELECT 1"]}""", "\"key\" is required" },
        { """{"key": {"a": 1}, "statements": ["SELECT 1"]}""", "\"key\" must be a string or an integer" },
        { """{"key": [1], "statements": ["SELECT 1"]}""", "\"key\" must be a string or an integer" },
        { """{"key": true, "statements": ["SELECT 1"]}""", "\"key\" must be a string or an integer" },
        { """{"key": 1.5, "statements": ["SELECT 1"]}""", "\"key\" must be a string or an integer" },
        { "{\"key\": \"" + new string('k', 4097) + "\", \"statements\": [\"SELECT 1\"]}", "longer than 4096" },
        { """{"key": 1}""", "expected \"statements\"" },
        { """{"key": 1, "statements": null}""", "expected \"statements\"" },
        { """{"key": 1, "statements": "SELECT 1"}""", "expected \"statements\"" },
        { """{"key": 1, "statements": {"sql": "SELECT 1"}}""", "expected \"statements\"" },
        { """{"key": 1, "statements": []}""", "\"statements\" is empty" },
        { """{"key": 1, "statements": ["S", "S", "S", "S", "S", "S", "S", "S", "S"]}""", "9 statements; the limit is 8" },
        { """{"key": 1, "statements": [5]}""", "statement 1 is not" },
        { """{"key": 1, "statements": ["SELECT 1", null]}""", "statement 2 is not" },
        { """{"key": 1, "statements": [[]]}""", "statement 1 is not" },
        { """{"key": 1, "statements": [[5, "SELECT 1"]]}""", "statement 1 is not" },
        { """{"key": 1, "statements": [{"sql": "SELECT 1"}]}""", "statement 1 is not" },
        { """{"key": 1, "statements": [""]}""", "statement 1 has no SQL" },
        { """{"key": 1, "statements": ["SELECT 1", ["  \n "]]}""", "statement 2 has no SQL" },
        { """{"key": 1, "statements": [["INSERT INTO t VALUES(?)", [1, 2]]]}""", "statement 1, parameter 1 is not a SQL value" },
        { """{"key": 1, "statements": [["INSERT INTO t VALUES(?)", 1, {"x": 1}]]}""", "statement 1, parameter 2 is not a SQL value" },
        { """{"key": 1, "statements": [["INSERT INTO t VALUES(?)", {"base64": "AQID", "x": 1}]]}""", "is not a SQL value" },
        { """{"key": 1, "statements": [["INSERT INTO t VALUES(?)", {"base64": 5}]]}""", "is not a SQL value" },
        { """{"key": 1, "statements": [["INSERT INTO t VALUES(?)", {}]]}""", "is not a SQL value" },
        { """{"key": 1, "statements": [["INSERT INTO t VALUES(?)", {"base64": "not base64!"}]]}""", "\"base64\" is not valid base64" },
        { """{"key": 1, "statements": [["INSERT INTO t VALUES(?)", 1e400]]}""", "is not a finite number" },
        { """{"key": 1, "statements": [["INSERT INTO t VALUES(?)", {"base64": "AQI"}]]}""", "\"base64\" is not valid base64" },
        { """{"key": 1, "statements": [["INSERT INTO t VALUES(?)", {"base64": "A"}]]}""", "\"base64\" is not valid base64" },
    };

    [Theory]
    [MemberData(nameof(BadExecutes))]
    public void Malformed_executes_are_bad_requests(string json, string reason) =>
        AssertBad(() => RequestParser.Execute(Json(json), MaxStatements), reason);

    [Fact]
    public void Over_long_sql_is_a_bad_request()
    {
        var sql = "SELECT 1 " + new string(' ', RequestParser.MaxSqlChars);
        AssertBad(() => RequestParser.Execute(Args(("key", 1L), ("statements", List(sql))), MaxStatements), "the limit is 1048576");
        AssertBad(() => RequestParser.Query(Args(("sql", sql))), "the limit is 1048576");
        var atLimit = "SELECT 1" + new string(' ', RequestParser.MaxSqlChars - 8);
        Assert.Single(RequestParser.Execute(Args(("key", 1L), ("statements", List(atLimit))), MaxStatements).Statements);
    }

    [Fact]
    public void Plain_values_that_are_not_sql_values_are_refused()
    {
        AssertBad(() => RequestParser.Execute(Args(("key", 1L), ("statements", List(List("SELECT ?", 5)))), MaxStatements), "not a SQL value");
        AssertBad(() => RequestParser.Execute(Args(("key", 1L), ("statements", List(List("SELECT ?", new object())))), MaxStatements), "not a SQL value");
        AssertBad(() => RequestParser.Execute(Args(("key", 5), ("statements", List("SELECT 1"))), MaxStatements), "\"key\" must be");
        AssertBad(() => RequestParser.Execute(Args(("key", new byte[] { 1 }), ("statements", List("SELECT 1"))), MaxStatements), "\"key\" must be");
    }

    // ------------------------------------------------------------------ Query

    [Fact]
    public void A_plain_query_defaults_to_replica_reads_everywhere()
    {
        var q = RequestParser.Query(Args(("sql", "SELECT * FROM t")));
        Assert.False(q.HasKey);
        Assert.Null(q.Key);
        Assert.Equal("SELECT * FROM t", q.Sql);
        Assert.Empty(q.Parameters);
        Assert.Equal(Consistency.Replica, q.Consistency);
        Assert.Empty(q.Tokens);
        Assert.Empty(q.OrderBy);
        Assert.Null(q.Limit);
        Assert.False(q.AllowPartial);

        // A null key is no key.
        Assert.False(RequestParser.Query(Args(("sql", "SELECT 1"), ("key", null))).HasKey);
    }

    [Fact]
    public void A_full_query_from_plain_values()
    {
        var q = RequestParser.Query(Args(
            ("sql", "SELECT * FROM t WHERE a = ? AND b = ?"),
            ("key", "user:9"),
            ("params", List(1L, 2.5, "x", null, true, new byte[] { 7 }, new Dictionary<string, object?> { ["base64"] = "AA==" })),
            ("consistency", "strong"),
            ("orderBy", List("a", "b DESC", "c asc")),
            ("limit", 10L),
            ("allowPartial", true)));
        Assert.True(q.HasKey);
        Assert.Equal("user:9", q.Key);
        Assert.Equal([1L, 2.5, "x", null, 1L, new byte[] { 7 }, new byte[] { 0 }], q.Parameters);
        Assert.Equal(Consistency.Strong, q.Consistency);
        Assert.Equal([new OrderKey("a", false), new OrderKey("b", true), new OrderKey("c", false)], q.OrderBy);
        Assert.Equal(10, q.Limit);
        Assert.True(q.AllowPartial);
    }

    [Fact]
    public void A_full_query_from_json()
    {
        var q = RequestParser.Query(Json("""
            {"sql": "SELECT * FROM t WHERE id = ?", "key": 12, "params": [12, 0.5, {"base64": "/w=="}],
             "token": {"shard": "s1", "lsn": 99}, "orderBy": "id DESC", "limit": 0, "allowPartial": false}
            """));
        Assert.True(q.HasKey);
        Assert.Equal(12L, Assert.IsType<long>(q.Key));
        Assert.Equal(12L, Assert.IsType<long>(q.Parameters[0]));
        Assert.Equal(0.5, Assert.IsType<double>(q.Parameters[1]));
        Assert.Equal(new byte[] { 255 }, q.Parameters[2]);
        Assert.Equal(Consistency.Session, q.Consistency);
        Assert.Equal([new SessionToken("s1", 99)], q.Tokens);
        Assert.Equal([new OrderKey("id", true)], q.OrderBy);
        Assert.Equal(0, q.Limit);
        Assert.False(q.AllowPartial);
    }

    [Fact]
    public void Tokens_make_reads_session_reads_unless_told_otherwise()
    {
        var one = RequestParser.Query(Json("""{"sql": "SELECT 1", "token": {"shard": "a", "lsn": 0}}"""));
        Assert.Equal(Consistency.Session, one.Consistency);
        Assert.Equal([new SessionToken("a", 0)], one.Tokens);

        var many = RequestParser.Query(Json("""{"sql": "SELECT 1", "token": [{"shard": "a", "lsn": 5}, {"shard": "b", "lsn": 7}]}"""));
        Assert.Equal(Consistency.Session, many.Consistency);
        Assert.Equal([new SessionToken("a", 5), new SessionToken("b", 7)], many.Tokens);

        var session = RequestParser.Query(Json("""{"sql": "SELECT 1", "consistency": "session", "token": {"shard": "a", "lsn": 3}}"""));
        Assert.Equal(Consistency.Session, session.Consistency);

        var strong = RequestParser.Query(Json("""{"sql": "SELECT 1", "consistency": "strong", "token": {"shard": "a", "lsn": 3}}"""));
        Assert.Equal(Consistency.Strong, strong.Consistency);

        var replica = RequestParser.Query(Json("""{"sql": "SELECT 1", "consistency": "replica", "token": [{"shard": "a", "lsn": 3}]}"""));
        Assert.Equal(Consistency.Replica, replica.Consistency);

        // An empty list is no token.
        Assert.Equal(Consistency.Replica, RequestParser.Query(Json("""{"sql": "SELECT 1", "token": []}""")).Consistency);

        var most = "[" + string.Join(", ", Enumerable.Range(0, ShardMap.MaxShards).Select(i => $"{{\"shard\": \"s{i}\", \"lsn\": {i}}}")) + "]";
        Assert.Equal(ShardMap.MaxShards, RequestParser.Query(Json("{\"sql\": \"SELECT 1\", \"token\": " + most + "}")).Tokens.Count);
    }

    [Fact]
    public void Order_keys_accept_spacing_and_case()
    {
        var q = RequestParser.Query(Json("""{"sql": "SELECT 1", "orderBy": ["  a  ", "b   desc", "c ASC", "d Desc"]}"""));
        Assert.Equal([new OrderKey("a", false), new OrderKey("b", true), new OrderKey("c", false), new OrderKey("d", true)], q.OrderBy);
        var sixteen = "[" + string.Join(", ", Enumerable.Range(0, 16).Select(i => $"\"c{i}\"")) + "]";
        Assert.Equal(16, RequestParser.Query(Json("{\"sql\": \"SELECT 1\", \"orderBy\": " + sixteen + "}")).OrderBy.Count);
    }

    public static TheoryData<string, string> BadQueries => new()
    {
        { """{}""", "expected {\"sql\"" },
        { """{"sql": null}""", "expected {\"sql\"" },
        { """{"sql": 5}""", "expected {\"sql\"" },
        { """{"sql": ["SELECT 1"]}""", "expected {\"sql\"" },
        { """{"sql": ""}""", "\"sql\" has no SQL" },
        { """{"sql": "   "}""", "\"sql\" has no SQL" },
        { """{"sql": "SELECT 1", "key": true}""", "\"key\" must be a string or an integer" },
        { """{"sql": "SELECT 1", "key": {"id": 1}}""", "\"key\" must be a string or an integer" },
        { """{"sql": "SELECT 1", "key": 2.5}""", "\"key\" must be a string or an integer" },
        { "{\"sql\": \"SELECT 1\", \"key\": \"" + new string('k', 4097) + "\"}", "longer than 4096" },
        { """{"sql": "SELECT 1", "params": 5}""", "\"params\" must be an array" },
        { """{"sql": "SELECT 1", "params": "a"}""", "\"params\" must be an array" },
        { """{"sql": "SELECT 1", "params": {"a": 1}}""", "\"params\" must be an array" },
        { """{"sql": "SELECT ?", "params": [[1]]}""", "parameter 1 is not a SQL value" },
        { """{"sql": "SELECT ?", "params": [1, {"a": 1}]}""", "parameter 2 is not a SQL value" },
        { """{"sql": "SELECT ?", "params": [{"base64": "%%%"}]}""", "\"base64\" is not valid base64" },
        { """{"sql": "SELECT 1", "consistency": "eventual"}""", "\"consistency\" is replica, session or strong" },
        { """{"sql": "SELECT 1", "consistency": "Strong"}""", "\"consistency\" is replica, session or strong" },
        { """{"sql": "SELECT 1", "consistency": 1}""", "\"consistency\" is replica, session or strong" },
        { """{"sql": "SELECT 1", "consistency": true}""", "\"consistency\" is replica, session or strong" },
        { """{"sql": "SELECT 1", "consistency": "session"}""", "needs the \"token\"" },
        { """{"sql": "SELECT 1", "consistency": "session", "token": []}""", "needs the \"token\"" },
        { """{"sql": "SELECT 1", "token": "s1:5"}""", "\"token\" is {\"shard\", \"lsn\"} or a list" },
        { """{"sql": "SELECT 1", "token": 5}""", "\"token\" is {\"shard\", \"lsn\"} or a list" },
        { """{"sql": "SELECT 1", "token": ["s1"]}""", "\"token\" is {\"shard\", \"lsn\"} or a list" },
        { """{"sql": "SELECT 1", "token": {"shard": "s1"}}""", "a token is {\"shard\": \"id\", \"lsn\": n}" },
        { """{"sql": "SELECT 1", "token": {"lsn": 1}}""", "a token is {\"shard\": \"id\", \"lsn\": n}" },
        { """{"sql": "SELECT 1", "token": {"shard": 1, "lsn": 1}}""", "a token is {\"shard\": \"id\", \"lsn\": n}" },
        { """{"sql": "SELECT 1", "token": {"shard": "s1", "lsn": -1}}""", "a token is {\"shard\": \"id\", \"lsn\": n}" },
        { """{"sql": "SELECT 1", "token": {"shard": "s1", "lsn": 1.5}}""", "a token is {\"shard\": \"id\", \"lsn\": n}" },
        { """{"sql": "SELECT 1", "token": {"shard": "s1", "lsn": "5"}}""", "a token is {\"shard\": \"id\", \"lsn\": n}" },
        { """{"sql": "SELECT 1", "token": [{"shard": "s1", "lsn": 1}, {"shard": "s2"}]}""", "a token is {\"shard\": \"id\", \"lsn\": n}" },
        { """{"sql": "SELECT 1", "limit": -1}""", "\"limit\" must be a non-negative integer" },
        { """{"sql": "SELECT 1", "limit": 2147483648}""", "\"limit\" must be a non-negative integer" },
        { """{"sql": "SELECT 1", "limit": 1e12}""", "\"limit\" must be a non-negative integer" },
        { """{"sql": "SELECT 1", "limit": 2.5}""", "\"limit\" must be a non-negative integer" },
        { """{"sql": "SELECT 1", "limit": "10"}""", "\"limit\" must be a non-negative integer" },
        { """{"sql": "SELECT 1", "limit": true}""", "\"limit\" must be a non-negative integer" },
        { """{"sql": "SELECT 1", "allowPartial": "true"}""", "\"allowPartial\" must be true or false" },
        { """{"sql": "SELECT 1", "allowPartial": 1}""", "\"allowPartial\" must be true or false" },
        { """{"sql": "SELECT 1", "allowPartial": []}""", "\"allowPartial\" must be true or false" },
        { """{"sql": "SELECT 1", "orderBy": "a b c"}""", "orderBy 'a b c' is not" },
        { """{"sql": "SELECT 1", "orderBy": "a sideways"}""", "orderBy 'a sideways' is not" },
        { """{"sql": "SELECT 1", "orderBy": ""}""", "orderBy '' is not" },
        { """{"sql": "SELECT 1", "orderBy": "   "}""", "is not \"column\"" },
        { """{"sql": "SELECT 1", "orderBy": ["a", "b c d"]}""", "orderBy 'b c d' is not" },
        { """{"sql": "SELECT 1", "orderBy": 5}""", "\"orderBy\" is a column" },
        { """{"sql": "SELECT 1", "orderBy": {"a": "desc"}}""", "\"orderBy\" is a column" },
        { """{"sql": "SELECT 1", "orderBy": ["a", 5]}""", "\"orderBy\" items are column names" },
        { """{"sql": "SELECT 1", "orderBy": ["a", null]}""", "\"orderBy\" items are column names" },
        { """{"sql": "SELECT 1", "orderBy": ["c0","c1","c2","c3","c4","c5","c6","c7","c8","c9","c10","c11","c12","c13","c14","c15","c16"]}""", "a list of up to 16" },
    };

    [Theory]
    [MemberData(nameof(BadQueries))]
    public void Malformed_queries_are_bad_requests(string json, string reason) =>
        AssertBad(() => RequestParser.Query(Json(json)), reason);

    [Fact]
    public void Too_many_tokens_are_a_bad_request()
    {
        var tokens = "[" + string.Join(", ", Enumerable.Range(0, ShardMap.MaxShards + 1).Select(i => $"{{\"shard\": \"s{i}\", \"lsn\": 1}}")) + "]";
        AssertBad(() => RequestParser.Query(Json("{\"sql\": \"SELECT 1\", \"token\": " + tokens + "}")), "\"token\" is");
    }

    [Fact]
    public void Plain_value_queries_with_wrong_types_are_bad_requests()
    {
        AssertBad(() => RequestParser.Query(Args(("sql", "SELECT 1"), ("limit", 10))), "\"limit\"");
        AssertBad(() => RequestParser.Query(Args(("sql", "SELECT 1"), ("limit", 10.0))), "\"limit\"");
        AssertBad(() => RequestParser.Query(Args(("sql", "SELECT 1"), ("params", new object?[] { 1L }))), "\"params\" must be an array");
        AssertBad(() => RequestParser.Query(Args(("sql", "SELECT 1"), ("token", new Dictionary<string, object?> { ["shard"] = "a", ["lsn"] = 5 }))), "a token is");
        Assert.Equal(int.MaxValue, RequestParser.Query(Args(("sql", "SELECT 1"), ("limit", (long)int.MaxValue))).Limit);
    }

    // ------------------------------------------------------------------ Schema

    [Fact]
    public void Schema_reads_statements_and_tables()
    {
        var (statements, tables) = RequestParser.Schema(Json("""
            {"statements": ["CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT)", ["CREATE INDEX users_name ON users(name)"]],
             "tables": [{"name": "users", "shardKey": "id"}, {"name": "_Orders2", "shardKey": "customer_id"}]}
            """), MaxStatements);
        Assert.Equal(2, statements.Count);
        Assert.Equal(["CREATE INDEX users_name ON users(name)"], statements[1]);
        Assert.Equal([new TableInfo("users", "id"), new TableInfo("_Orders2", "customer_id")], tables);

        var (only, none) = RequestParser.Schema(Args(("statements", List("CREATE TABLE x(a)")), ("tables", null)), MaxStatements);
        Assert.Single(only);
        Assert.Empty(none);

        // Schema has no key.
        Assert.Empty(RequestParser.Schema(Json("""{"key": {"ignored": true}, "statements": ["DROP TABLE x"]}"""), MaxStatements).Tables);
    }

    public static TheoryData<string, string> BadSchemas => new()
    {
        { """{}""", "expected \"statements\"" },
        { """{"statements": []}""", "\"statements\" is empty" },
        { """{"statements": [1]}""", "statement 1 is not" },
        { """{"statements": [""]}""", "has no SQL" },
        { """{"statements": ["S", "S", "S", "S", "S", "S", "S", "S", "S"]}""", "the limit is 8" },
        { """{"statements": ["CREATE TABLE t(a)"], "tables": {"name": "t", "shardKey": "a"}}""", "\"tables\" must be an array" },
        { """{"statements": ["CREATE TABLE t(a)"], "tables": "t"}""", "\"tables\" must be an array" },
        { """{"statements": ["CREATE TABLE t(a)"], "tables": ["t"]}""", "a table is {\"name\", \"shardKey\"}" },
        { """{"statements": ["CREATE TABLE t(a)"], "tables": [null]}""", "a table is {\"name\", \"shardKey\"}" },
        { """{"statements": ["CREATE TABLE t(a)"], "tables": [{"name": "t"}]}""", "a table is {\"name\", \"shardKey\"}" },
        { """{"statements": ["CREATE TABLE t(a)"], "tables": [{"name": "t", "shardKey": 1}]}""", "a table is {\"name\", \"shardKey\"}" },
        { """{"statements": ["CREATE TABLE t(a)"], "tables": [{"name": "t-1", "shardKey": "a"}]}""", "table name 't-1' must be a plain identifier" },
        { """{"statements": ["CREATE TABLE t(a)"], "tables": [{"name": "1t", "shardKey": "a"}]}""", "must be a plain identifier" },
        { """{"statements": ["CREATE TABLE t(a)"], "tables": [{"name": "t; DROP TABLE u", "shardKey": "a"}]}""", "must be a plain identifier" },
        { """{"statements": ["CREATE TABLE t(a)"], "tables": [{"name": "\"t\"", "shardKey": "a"}]}""", "must be a plain identifier" },
        { """{"statements": ["CREATE TABLE t(a)"], "tables": [{"name": "", "shardKey": "a"}]}""", "must be a plain identifier" },
        { """{"statements": ["CREATE TABLE t(a)"], "tables": [{"name": "t", "shardKey": "a b"}]}""", "table t: shard key 'a b' must be a plain identifier" },
        { """{"statements": ["CREATE TABLE t(a)"], "tables": [{"name": "t", "shardKey": ""}]}""", "must be a plain identifier" },
        { """{"statements": ["CREATE TABLE t(a)"], "tables": [{"name": "_infra_log", "shardKey": "a"}]}""", "is reserved" },
        { """{"statements": ["CREATE TABLE t(a)"], "tables": [{"name": "sqlite_sequence", "shardKey": "a"}]}""", "is reserved" },
        { """{"statements": ["CREATE TABLE t(a)"], "tables": [{"name": "t", "shardKey": "_Infra"}]}""", "is reserved" },
    };

    [Theory]
    [MemberData(nameof(BadSchemas))]
    public void Malformed_schema_requests_are_bad_requests(string json, string reason) =>
        AssertBad(() => RequestParser.Schema(Json(json), MaxStatements), reason);

    [Fact]
    public void Every_prefix_of_a_request_either_fails_as_json_or_parses()
    {
        // The HTTP API turns JsonException into a 400; what the parser sees is always whole JSON.
        var body = Encoding.UTF8.GetBytes("""{"sql": "SELECT 1", "params": [1, {"base64": "AA=="}], "orderBy": "a DESC", "limit": 5}""");
        for (var length = 0; length < body.Length; length++)
        {
            Assert.ThrowsAny<JsonException>(() => JsonDocument.Parse(body.AsMemory(0, length)).Dispose());
        }

        Assert.Equal(5, RequestParser.Query(Json(Encoding.UTF8.GetString(body))).Limit);
    }
}
