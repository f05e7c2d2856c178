using Infra.Testing;
using Infra.IntegrationTests.Harness;

namespace Infra.IntegrationTests;

/// <summary>
/// Every command of the issue against the real server, compared reply by reply with what Redis 7
/// answers (reply types and error strings included). Steps run in order on one connection.
/// </summary>
public class CacheCommandTests
{
    private static readonly (string[] Command, string Reply)[] Steps =
    [
        // Strings and SET's options.
        (["SET", "k", "v"], "+OK"),
        (["GET", "k"], "$v"),
        (["SET", "k", "other", "NX"], "$-1"),
        (["SET", "k", "v2", "XX", "GET"], "$v"),
        (["GET", "k"], "$v2"),
        (["SET", "k", "x", "EX", "0"], "-ERR invalid expire time in 'set' command"),
        (["SET", "k", "x", "EX", "10", "PX", "10"], "-ERR syntax error"),
        (["SET", "k", "x", "NX", "XX"], "-ERR syntax error"),
        (["SET", "k", "x", "EX", "ten"], "-ERR value is not an integer or out of range"),
        (["SET", "kt", "x", "EX", "100"], "+OK"),
        (["SET", "kt", "y", "KEEPTTL"], "+OK"),
        (["TTL", "kt"], ":100"),
        (["SET", "kt", "z"], "+OK"),
        (["TTL", "kt"], ":-1"),
        (["SETNX", "k", "x"], ":0"),
        (["SETNX", "fresh", "x"], ":1"),
        (["SETEX", "t", "100", "val"], "+OK"),
        (["TTL", "t"], ":100"),
        (["SETEX", "t", "-5", "val"], "-ERR invalid expire time in 'setex' command"),
        (["PSETEX", "pt", "100000", "v"], "+OK"),
        (["GETSET", "k", "g"], "$v2"),
        (["GETDEL", "k"], "$g"),
        (["GET", "k"], "$-1"),
        (["GETEX", "t", "PERSIST"], "$val"),
        (["TTL", "t"], ":-1"),
        (["GETEX", "t", "EX", "50"], "$val"),
        (["TTL", "t"], ":50"),
        (["MSET", "a", "1", "b", "2", "c", "3"], "+OK"),
        (["MSET", "a", "1", "b"], "-ERR wrong number of arguments for 'mset' command"),
        (["MGET", "a", "b", "nope"], "*3[$1,$2,$-1]"),
        (["MSETNX", "a", "9", "z", "9"], ":0"),
        (["MSETNX", "y", "1", "z", "2"], ":1"),
        (["INCR", "a"], ":2"),
        (["INCRBY", "a", "10"], ":12"),
        (["DECR", "a"], ":11"),
        (["DECRBY", "a", "1"], ":10"),
        (["INCRBY", "a", "x"], "-ERR value is not an integer or out of range"),
        (["SET", "s", "abc"], "+OK"),
        (["INCR", "s"], "-ERR value is not an integer or out of range"),
        (["SET", "big", "9223372036854775807"], "+OK"),
        (["INCR", "big"], "-ERR increment or decrement would overflow"),
        (["SET", "spaced", " 1"], "+OK"),
        (["INCR", "spaced"], "-ERR value is not an integer or out of range"),
        (["INCRBYFLOAT", "f", "1.5"], "$1.5"),
        (["INCRBYFLOAT", "f", "0.25"], "$1.75"),
        (["INCRBYFLOAT", "f", "abc"], "-ERR value is not a valid float"),
        (["INCRBYFLOAT", "f", "inf"], "-ERR increment would produce NaN or Infinity"),
        (["APPEND", "ap", "hello"], ":5"),
        (["APPEND", "ap", " world"], ":11"),
        (["STRLEN", "ap"], ":11"),
        (["STRLEN", "nope"], ":0"),
        (["GETRANGE", "ap", "0", "4"], "$hello"),
        (["GETRANGE", "ap", "-5", "-1"], "$world"),
        (["GETRANGE", "ap", "5", "1"], "$"),
        (["GETRANGE", "ap", "0", "100"], "$hello world"),
        (["SETRANGE", "ap", "6", "there"], ":11"),
        (["GET", "ap"], "$hello there"),
        (["SETRANGE", "pad", "3", "x"], ":4"),
        (["GET", "pad"], "$\0\0\0x"),
        (["SETRANGE", "ap", "-1", "x"], "-ERR offset is out of range"),
        (["SETRANGE", "empty", "0", ""], ":0"),
        (["EXISTS", "empty"], ":0"),

        // Hashes.
        (["HSET", "h", "f1", "v1", "f2", "v2"], ":2"),
        (["HSET", "h", "f1", "v9"], ":0"),
        (["HSET", "h", "f1"], "-ERR wrong number of arguments for 'hset' command"),
        (["HGET", "h", "f1"], "$v9"),
        (["HGET", "h", "nope"], "$-1"),
        (["HMGET", "h", "f1", "nope"], "*2[$v9,$-1]"),
        (["HLEN", "h"], ":2"),
        (["HEXISTS", "h", "f2"], ":1"),
        (["HDEL", "h", "f2", "nope"], ":1"),
        (["HINCRBY", "h", "n", "5"], ":5"),
        (["HINCRBY", "h", "f1", "1"], "-ERR hash value is not an integer"),
        (["HSETNX", "h", "f1", "x"], ":0"),
        (["HSETNX", "h", "new", "x"], ":1"),
        (["HDEL", "h", "new"], ":1"),
        (["HKEYS", "h"], "*2[$f1,$n]"),
        (["HVALS", "h"], "*2[$v9,$5]"),
        (["HGETALL", "h"], "*4[$f1,$v9,$n,$5]"),
        (["HGETALL", "nope"], "*0[]"),
        (["GET", "h"], "-WRONGTYPE Operation against a key holding the wrong kind of value"),
        (["HGET", "ap", "x"], "-WRONGTYPE Operation against a key holding the wrong kind of value"),
        (["HSET", "gone", "f", "v"], ":1"),
        (["HDEL", "gone", "f"], ":1"),
        (["EXISTS", "gone"], ":0"),

        // Keys.
        (["TYPE", "h"], "+hash"),
        (["TYPE", "ap"], "+string"),
        (["TYPE", "nope"], "+none"),
        (["EXISTS", "a", "b", "nope", "a"], ":3"),
        (["DEL", "a", "b", "nope"], ":2"),
        (["UNLINK", "c", "nope"], ":1"),
        (["SET", "c", "3"], "+OK"),
        (["EXPIRE", "c", "100"], ":1"),
        (["TTL", "c"], ":100"),
        (["EXPIRE", "c", "200", "NX"], ":0"),
        (["EXPIRE", "c", "50", "GT"], ":0"),
        (["EXPIRE", "c", "300", "GT"], ":1"),
        (["EXPIRE", "c", "10", "XX", "LT"], ":1"),
        (["EXPIRE", "c", "10", "NX", "XX"], "-ERR NX and XX, GT or LT options at the same time are not compatible"),
        (["EXPIRE", "nope", "10"], ":0"),
        (["PERSIST", "c"], ":1"),
        (["PERSIST", "c"], ":0"),
        (["TTL", "c"], ":-1"),
        (["TTL", "nope"], ":-2"),
        (["PTTL", "nope"], ":-2"),
        (["EXPIRETIME", "c"], ":-1"),
        (["EXPIREAT", "c", "99999999999"], ":1"),
        (["EXPIRETIME", "c"], ":99999999999"),
        (["PEXPIRE", "c", "1000000"], ":1"),
        (["EXPIRE", "c", "-1"], ":1"),
        (["EXISTS", "c"], ":0"),
        (["EXPIRE", "y", "99999999999999999"], "-ERR invalid expire time in 'expire' command"),
        (["RENAME", "y", "y2"], "+OK"),
        (["GET", "y2"], "$1"),
        (["RENAME", "nope", "x"], "-ERR no such key"),
        (["RENAMENX", "y2", "z"], ":0"),
        (["RENAMENX", "y2", "y3"], ":1"),
        (["RENAME", "h", "h2"], "+OK"),
        (["HGET", "h2", "f1"], "$v9"),
        (["OBJECT", "ENCODING", "y3"], "$int"),
        (["OBJECT", "ENCODING", "ap"], "$embstr"),
        (["OBJECT", "ENCODING", "h2"], "$listpack"),
        (["OBJECT", "ENCODING", "nope"], "$-1"),
        (["OBJECT", "FREQ", "y3"], "-ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust."),
        (["OBJECT", "IDLETIME", "y3"], ":0"),
        (["KEYS", "h*"], "*1[$h2]"),
        (["KEYS", "[xy]?"], "*1[$y3]"),

        // Connection and server.
        (["SELECT", "0"], "+OK"),
        (["SELECT", "1"], "-ERR DB index is out of range"),
        (["ECHO", "hi"], "$hi"),
        (["PING"], "+PONG"),
        (["PING", "x"], "$x"),
        (["FOO", "bar", "baz"], "-ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' "),
        (["GET"], "-ERR wrong number of arguments for 'get' command"),
        (["CLIENT", "SETNAME", "tester"], "+OK"),
        (["CLIENT", "GETNAME"], "$tester"),
        (["CLIENT", "SETNAME", "a b"], "-ERR Client names cannot contain spaces, newlines or special characters."),
        (["CLIENT", "NOPE"], "-ERR unknown subcommand 'NOPE'. Try CLIENT HELP."),
        (["CLIENT", "SETINFO", "LIB-NAME", "conformance"], "+OK"),
        (["FUNCTION", "FLUSH"], "+OK"),
        (["CLUSTER", "NODES"], "-ERR This instance has cluster support disabled"),
        (["AUTH", "x"], "-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"),
        (["CONFIG", "GET", "maxmemory-policy"], "*2[$maxmemory-policy,$allkeys-lru]"),
        (["CONFIG", "SET", "nope", "1"], "-ERR Unknown option or number of arguments for CONFIG SET - 'nope'"),
        (["COMMAND", "INFO", "get"], "*1[*10[$get,:2,*2[+readonly,+fast],:1,:1,:1,*1[+@string],*0[],*0[],*0[]]]"),
        (["DBSIZE"], ":13"),
        (["FLUSHALL"], "+OK"),
        (["DBSIZE"], ":0"),
        (["RANDOMKEY"], "$-1"),
    ];

    [Fact]
    public async Task Every_command_answers_as_redis_7_does()
    {
        await using var server = await CacheServerProcess.StartAsync();
        using var connection = await RespConnection.ConnectAsync(server.Port);
        var failures = new List<string>();
        foreach (var (command, expected) in Steps)
        {
            var reply = await connection.CallAsync(command);
            if (reply != expected)
            {
                failures.Add($"{string.Join(' ', command)}\n    expected {expected}\n    got      {reply}");
            }
        }

        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [Fact]
    public async Task Resp3_replies_use_resp3_types()
    {
        await using var server = await CacheServerProcess.StartAsync();
        using var connection = await RespConnection.ConnectAsync(server.Port);

        var hello = await connection.CallAsync("HELLO", "3");
        Assert.StartsWith("%7{$server:$redis,$version:$7.2.0,$proto::3,", hello, StringComparison.Ordinal);
        Assert.Equal("_", await connection.CallAsync("GET", "nope"));
        Assert.Equal(":2", await connection.CallAsync("HSET", "h", "a", "1", "b", "2"));
        Assert.Equal("%2{$a:$1,$b:$2}", await connection.CallAsync("HGETALL", "h"));
        Assert.Equal("%1{$maxmemory:$0}", await connection.CallAsync("CONFIG", "GET", "maxmemory"));
        Assert.Equal(">3[$subscribe,$ch,:1]", await connection.CallAsync("SUBSCRIBE", "ch"));
        Assert.Equal("+PONG", await connection.CallAsync("PING"));
        Assert.Equal(":1", await connection.CallAsync("EXISTS", "h"));
        Assert.Equal("-NOPROTO unsupported protocol version", await connection.CallAsync("HELLO", "4"));
    }

    [Fact]
    public async Task Subscribe_mode_in_resp2_refuses_other_commands()
    {
        await using var server = await CacheServerProcess.StartAsync();
        using var subscriber = await RespConnection.ConnectAsync(server.Port);
        using var publisher = await RespConnection.ConnectAsync(server.Port);

        Assert.Equal("*3[$subscribe,$news,:1]", await subscriber.CallAsync("SUBSCRIBE", "news"));
        Assert.Equal("*3[$psubscribe,$n*,:2]", await subscriber.CallAsync("PSUBSCRIBE", "n*"));
        Assert.Equal("-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            await subscriber.CallAsync("GET", "x"));
        Assert.Equal("*2[$pong,$]", await subscriber.CallAsync("PING"));
        Assert.Equal(":2", await publisher.CallAsync("PUBLISH", "news", "hello"));
        var messages = new[] { await subscriber.ReadAsync(), await subscriber.ReadAsync() };
        Assert.Contains("*3[$message,$news,$hello]", messages);
        Assert.Contains("*4[$pmessage,$n*,$news,$hello]", messages);
        Assert.Equal("*3[$unsubscribe,$news,:1]", await subscriber.CallAsync("UNSUBSCRIBE", "news"));
        Assert.Equal("+RESET", await subscriber.CallAsync("RESET"));
        Assert.Equal("$-1", await subscriber.CallAsync("GET", "x"));
    }

    [Fact]
    public async Task Requirepass_answers_noauth_until_authenticated()
    {
        await using var server = await CacheServerProcess.StartAsync("--requirepass", "pw");
        using var connection = await RespConnection.ConnectAsync(server.Port);

        Assert.Equal("-NOAUTH Authentication required.", await connection.CallAsync("GET", "k"));
        Assert.Equal("-NOAUTH Authentication required.", await connection.CallAsync("PING"));
        Assert.Equal("-WRONGPASS invalid username-password pair or user is disabled.", await connection.CallAsync("AUTH", "bad"));
        Assert.StartsWith("-NOAUTH HELLO must be called", await connection.CallAsync("HELLO", "3"), StringComparison.Ordinal);
        Assert.Equal("+OK", await connection.CallAsync("AUTH", "default", "pw"));
        Assert.Equal("$-1", await connection.CallAsync("GET", "k"));

        using var second = await RespConnection.ConnectAsync(server.Port);
        Assert.StartsWith("%7{", await second.CallAsync("HELLO", "3", "AUTH", "default", "pw"), StringComparison.Ordinal);
        Assert.Equal("+OK", await second.CallAsync("QUIT"));
    }
}
