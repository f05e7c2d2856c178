using System.Globalization;

namespace Infra.CacheServer.Tests;

/// <summary>
/// Replies checked against Redis 7.0.15 itself (Debian's redis-server, run by hand the day these were
/// written): the exact text, the error a client sees first, and RESP3's reply types.
/// </summary>
public sealed class RedisConformanceTests
{
    /// <summary>
    /// SET k a, INCRBYFLOAT k b: Redis adds in x87 long double and prints "%.17Lf" trimmed — including the
    /// binary noise of values past ~128 (1000.1 prints 1000.09999999999999998), ties to even (…562|5 → …562),
    /// and every digit of 1e300. The random rows were made with a seeded generator and Redis's answers kept.
    /// </summary>
    [Theory]
    [InlineData("0.1", "0.2", "0.3")]
    [InlineData("1000.1", "0", "1000.09999999999999998")]
    [InlineData("0", "0.000003814697265625", "0.00000381469726562")]
    [InlineData("0", "1000.1", "1000.09999999999999998")]
    [InlineData("1000.09999999999999998", "123456789.123456789", "123457789.22345678899728227")]
    [InlineData("1e300", "1", "1000000000000000000008997324079559193870523944273290747938260082321265646596180935755849152083750497190350372508614274835903592556184672983913096260520748646287327135641843653294084255107606016789726652932370030551382947620994540294772781889620606179267611627097410650567187386105690089424915104006144")]
    [InlineData("-0", "-0", "0")]
    [InlineData("5", "1e-20", "5")]
    [InlineData("5.0e3", "2.0e2", "5200")]
    [InlineData("10.50", "0.1", "10.6")]
    [InlineData("1.5", "-1.5", "0")]
    [InlineData("3", "-10.25", "-7.25")]
    [InlineData("0", "1e-4940", "0")]
    [InlineData("123456789012345678901234567890", "1", "123456789012345678899921813504")]
    [InlineData("0.3", "-0.1", "0.2")]
    [InlineData("1.1", "2.2", "3.3")]
    [InlineData("-1.1", "-2.2", "-3.3")]
    [InlineData("99999999999999999999", "1", "100000000000000000000")]
    [InlineData("+7", "0.5", "7.5")]
    [InlineData(".5", "1.", "1.5")]
    [InlineData("1E+05", "2e-3", "100000.00200000000000244")]
    [InlineData("0", "0.00000000000000000000001", "0")]
    [InlineData("2.5e-10", "0", "0.00000000025")]
    [InlineData("18446744073709551615", "0.5", "18446744073709551616")]
    [InlineData("-18446744073709551617", "0", "-18446744073709551616")]
    [InlineData("-0.000035", "0.00000030", "-0.0000347")]
    [InlineData("-8117399161", "0", "-8117399161")]
    [InlineData("-82810.6", "-518673999.745950", "-518756810.3459500000171829")]
    [InlineData("-8817789878.4", "894899401414.9749755859", "886081611536.57497560977935791")]
    [InlineData("0.000000017", "0.000", "0.000000017")]
    [InlineData("-9068346387644874752.00", "-0.00004208", "-9068346387644874752")]
    [InlineData("-7.64415524", "0.0", "-7.64415524")]
    [InlineData("163200327324.932", "-255204914.54853755236", "162945122410.38346244394779205")]
    [InlineData("-0.000000087", "-5880825743613.46875000", "-5880825743613.46875")]
    [InlineData("-14.4815389", "171123.72702", "171109.24548109999999213")]
    [InlineData("-40046600627263528.00", "0.0", "-40046600627263528")]
    [InlineData("14884742.0517342", "750274991146857.7500000", "750275006031599.8017578125")]
    [InlineData("-0.0", "0.000023865661", "0.000023865661")]
    [InlineData("-3158883.876803", "-9215854859051.2", "-9215858017935.07680320739746094")]
    [InlineData("5291417324.256262779236", "75.09556", "5291417399.35182277904823422")]
    [InlineData("39059073254.7318573", "159790.4", "39059233045.13185729831457138")]
    [InlineData("0.6799356", "0", "0.6799356")]
    [InlineData("4.6231866928", "1558924614354.3623047", "1558924614358.98549139499664307")]
    [InlineData("-4308.0893581170", "-305989.48862", "-310297.57797811699998647")]
    [InlineData("-0.0000066", "-8820911613373792.0000", "-8820911613373792")]
    [InlineData("-0.074132", "-2181005937335458560.0000000", "-2181005937335458560.125")]
    [InlineData("-838837.397600", "9887981828807479296.00", "9887981828806640459")]
    [InlineData("6385596756714826752.00000000", "-44315.78710", "6385596756714782436")]
    [InlineData("3654.461", "-0.00", "3654.46100000000000008")]
    [InlineData("-0", "-300745393.17", "-300745393.17000000001280569")]
    public async Task Incrbyfloat_answers_what_redis_answers(string start, string increment, string expected)
    {
        await using var server = InProcessCacheServer.Start();
        using var c = await server.ConnectAsync();
        Assert.Equal("+OK", await c.CallAsync("SET", "k", start));
        Assert.Equal("$" + expected, await c.CallAsync("INCRBYFLOAT", "k", increment));
        Assert.Equal("$" + expected, await c.CallAsync("GET", "k"));
        Assert.Equal("+OK", await c.CallAsync("SET", "k", start)); // and in a hash field
        Assert.Equal(":1", await c.CallAsync("HSET", "h" + start, "f", start));
        Assert.Equal("$" + expected, await c.CallAsync("HINCRBYFLOAT", "h" + start, "f", increment));
    }

    [Theory]
    [InlineData("0x10")] // strtold reads hexadecimal; this server refuses it
    [InlineData("1e-5000")] // rounds to zero: ERANGE
    [InlineData("1e4933")] // past the largest long double: ERANGE
    [InlineData("nan")]
    [InlineData(" 1")]
    [InlineData("1 ")]
    [InlineData("1e")]
    [InlineData("1e+")]
    [InlineData("+")]
    [InlineData(".")]
    [InlineData("1..2")]
    [InlineData("--1")]
    [InlineData("1_000")]
    public async Task Incrbyfloat_refuses_what_is_not_a_number_for_redis(string increment)
    {
        await using var server = InProcessCacheServer.Start();
        using var c = await server.ConnectAsync();
        Assert.Equal("-ERR value is not a valid float", await c.CallAsync("INCRBYFLOAT", "k", increment));
        Assert.Equal("$-1", await c.CallAsync("GET", "k"));
        Assert.Equal("-ERR value is not a valid float", await c.CallAsync("INCRBYFLOAT", "k", new string('1', 5 * 1024)));
    }

    [Fact]
    public async Task Replies_and_errors_are_redis_s()
    {
        await using var server = InProcessCacheServer.Start();
        using var c = await server.ConnectAsync();
        var expireAt = ((server.Clock.GetUtcNow().ToUnixTimeMilliseconds() / 1000) + 100) * 1000 + 600;
        (string[] Command, string Reply)[] script =
        [
            // A '+' is no integer (string2ll); Utf8Parser took it.
            (["SET", "k", "+5"], "+OK"),
            (["INCR", "k"], "-ERR value is not an integer or out of range"),
            (["HSET", "h", "f", "+5"], ":1"),
            (["HINCRBY", "h", "f", "1"], "-ERR hash value is not an integer"),
            (["EXPIRE", "k", "+10"], "-ERR value is not an integer or out of range"),
            (["OBJECT", "ENCODING", "k"], "$embstr"),

            // EXPIRETIME rounds to the nearest second, as TTL does.
            (["SET", "k", "v", "PXAT", expireAt.ToString(CultureInfo.InvariantCulture)], "+OK"),
            (["EXPIRETIME", "k"], ":" + ((expireAt / 1000) + 1).ToString(CultureInfo.InvariantCulture)),

            // Arity of commands and of subcommands.
            (["PING", "a", "b"], "-ERR wrong number of arguments for 'ping' command"),
            (["CLIENT", "SETNAME"], "-ERR wrong number of arguments for 'client|setname' command"),
            (["CLIENT", "INFO", "x"], "-ERR wrong number of arguments for 'client|info' command"),
            (["OBJECT", "ENCODING"], "-ERR wrong number of arguments for 'object|encoding' command"),
            (["OBJECT", "HELP", "x"], "-ERR wrong number of arguments for 'object|help' command"),
            (["OBJECT", "foo", "missing"], "-ERR unknown subcommand 'foo'. Try OBJECT HELP."),
            (["COMMAND", "COUNT", "x"], "-ERR wrong number of arguments for 'command|count' command"),
            (["CONFIG", "RESETSTAT", "x"], "-ERR wrong number of arguments for 'config|resetstat' command"),
            (["CLIENT", "LIST", "foo"], "-ERR syntax error"),
            (["CLIENT", "KILL", "ID", "99999"], ":0"),
            (["CLIENT", "KILL", "ID", "abc"], "-ERR client-id should be greater than 0"),
            (["CLIENT", "KILL", "1.2.3.4:5"], "-ERR No such client"),

            // The same expiry option twice: the last counts; two different ones: a syntax error.
            (["SET", "k", "v", "EX", "10", "EX", "20"], "+OK"),
            (["TTL", "k"], ":20"),
            (["SET", "k", "v", "PX", "1", "EX", "2"], "-ERR syntax error"),
            (["SET", "k", "v", "KEEPTTL", "KEEPTTL"], "+OK"),
            (["SET", "k", "v", "EX", "10", "KEEPTTL"], "-ERR syntax error"),
            (["GETEX", "k", "PERSIST", "PERSIST"], "$v"),
            (["SET", "k", "v", "GET", "GET"], "$v"),

            // Which error comes first.
            (["DEL", "h"], ":1"),
            (["HSET", "h", "f", "v"], ":1"),
            (["INCRBYFLOAT", "h", "abc"], "-WRONGTYPE Operation against a key holding the wrong kind of value"),
            (["EXPIRE", "k", "abc", "FOO"], "-ERR Unsupported option FOO"),
            (["EXPIRE", "k", "abc", "NX", "XX"], "-ERR NX and XX, GT or LT options at the same time are not compatible"),
            (["EXPIRE", "k", "10", "GT", "LT"], "-ERR GT and LT options at the same time are not compatible"),
            (["PEXPIRE", "k", "abc"], "-ERR value is not an integer or out of range"),
            (["GETEX", "missing", "EX", "0"], "$-1"),
            (["GETEX", "h", "EX", "0"], "-WRONGTYPE Operation against a key holding the wrong kind of value"),
            (["GETEX", "k", "EX", "0"], "-ERR invalid expire time in 'getex' command"),
            (["SET", "k", "v", "EX", "0", "NX", "XX"], "-ERR syntax error"),
            (["SET", "k", "v", "EX", "abc", "FOO"], "-ERR syntax error"),
            (["SET", "k", "v", "EX", "0"], "-ERR invalid expire time in 'set' command"),
            (["HINCRBYFLOAT", "h", "f", "inf"], "-ERR value is NaN or Infinity"),
            (["HINCRBYFLOAT", "h", "f", "1"], "-ERR hash value is not a float"),
            (["SET", "k", "inf"], "+OK"),
            (["INCRBYFLOAT", "k", "1"], "-ERR increment would produce NaN or Infinity"),
        ];
        foreach (var (command, reply) in script)
        {
            Assert.Equal((string.Join(' ', command), reply), (string.Join(' ', command), await c.CallAsync(command)));
        }
    }

    [Fact]
    public async Task Info_and_client_lists_are_verbatim_strings_in_resp3_and_commandstats_only_when_asked()
    {
        await using var server = InProcessCacheServer.Start();
        using var c = await server.ConnectAsync();
        var info = await c.CallAsync("INFO");
        Assert.StartsWith("$# Server", info, StringComparison.Ordinal);
        Assert.DoesNotContain("# Commandstats", info, StringComparison.Ordinal); // not a default section
        Assert.Contains("# Commandstats", await c.CallAsync("INFO", "all"), StringComparison.Ordinal);
        Assert.Contains("# Commandstats", await c.CallAsync("INFO", "commandstats"), StringComparison.Ordinal);
        Assert.StartsWith("$id=", await c.CallAsync("CLIENT", "INFO"), StringComparison.Ordinal);

        await c.CallAsync("HELLO", "3");
        Assert.StartsWith("$txt:# Server", await c.CallAsync("INFO"), StringComparison.Ordinal); // '=' verbatim, read as "$" + text
        Assert.StartsWith("$txt:id=", await c.CallAsync("CLIENT", "INFO"), StringComparison.Ordinal);
        Assert.StartsWith("$txt:id=", await c.CallAsync("CLIENT", "LIST"), StringComparison.Ordinal);
    }
}
