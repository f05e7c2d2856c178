using System.Text;
using Infra.CacheServer.Commands;
using Infra.CacheServer.Storage;
using Infra.Testing;

namespace Infra.CacheServer.Tests;

/// <summary>Operations that span shards or walk the keyspace: RENAME, SCAN, KEYS, glob matching.</summary>
public class KeyspaceTests
{
    [Fact]
    public async Task Rename_moves_strings_and_hashes_across_shards_with_their_ttl_and_accounting()
    {
        await using var server = InProcessCacheServer.Start(shards: 16);
        using var c = await server.ConnectAsync();

        var crossShard = 0;
        for (var i = 0; i < 200; i++)
        {
            var from = "from:" + i;
            var to = "to:" + i;
            if (ShardOf(server, from) != ShardOf(server, to))
            {
                crossShard++;
            }

            if (i % 2 == 0)
            {
                await c.CallAsync("SET", from, "value" + i, "PX", "90000");
            }
            else
            {
                await c.CallAsync("HSET", from, "a", "1", "b", "value" + i);
            }
        }

        var used = server.Store.Stats().UsedMemory;
        for (var i = 0; i < 200; i++)
        {
            Assert.Equal("+OK", await c.CallAsync("RENAME", "from:" + i, "to:" + i));
        }

        Assert.True(crossShard > 150, $"only {crossShard} renames crossed shards");
        for (var i = 0; i < 200; i++)
        {
            Assert.Equal(":0", await c.CallAsync("EXISTS", "from:" + i));
            if (i % 2 == 0)
            {
                Assert.Equal("$value" + i, await c.CallAsync("GET", "to:" + i));
                Assert.Equal(":90000", await c.CallAsync("PTTL", "to:" + i));
            }
            else
            {
                Assert.Equal("*2[$1,$value" + i + "]", await c.CallAsync("HMGET", "to:" + i, "a", "b"));
            }
        }

        // "from:N" and "to:N" have the same length, so the bytes charged must not change.
        Assert.Equal(used, server.Store.Stats().UsedMemory);
        Assert.Equal(200, server.Store.Stats().Keys);
        Assert.Equal(100, server.Store.Stats().Expires);

        Assert.Equal("+OK", await c.CallAsync("RENAME", "to:0", "to:1"));
        Assert.Equal("+string", await c.CallAsync("TYPE", "to:1"));
        Assert.Equal(":0", await c.CallAsync("RENAMENX", "to:2", "to:3"));
        Assert.Equal("+OK", await c.CallAsync("RENAME", "to:2", "to:2"));
        Assert.Equal("-ERR no such key", await c.CallAsync("RENAME", "missing", "x"));
    }

    [Fact]
    public async Task A_key_longer_than_the_store_holds_is_refused_by_every_command_that_stores_it_and_changes_nothing()
    {
        await using var server = InProcessCacheServer.Start(shards: 4);
        using var c = await server.ConnectAsync();
        var longest = new string('k', CacheShard.MaxKeyLength);
        var tooLong = longest + "k";
        var error = "-" + Errors.KeyTooLong;
        await c.CallAsync("SET", "src", "v");
        await c.CallAsync("HSET", "hsrc", "f", "v");
        var used = server.Store.Stats().UsedMemory;

        string[][] refused =
        [
            ["RENAME", "src", tooLong], ["RENAMENX", "src", tooLong], ["RENAME", "hsrc", tooLong],
            ["SET", tooLong, "v"], ["SET", tooLong, new string('v', 40_000)], ["SETNX", tooLong, "v"], ["SETEX", tooLong, "10", "v"],
            ["PSETEX", tooLong, "10", "v"], ["GETSET", tooLong, "v"], ["MSET", "a", "1", tooLong, "2", "b", "3"],
            ["MSETNX", "a", "1", tooLong, "2"], ["INCR", tooLong], ["DECRBY", tooLong, "2"], ["INCRBYFLOAT", tooLong, "1.5"],
            ["APPEND", tooLong, "v"], ["SETRANGE", tooLong, "3", "v"], ["HSET", tooLong, "f", "v"], ["HSETNX", tooLong, "f", "v"],
            ["HINCRBY", tooLong, "f", "1"],
        ];
        foreach (var command in refused)
        {
            Assert.Equal(error, await c.CallAsync(command));
        }

        // Nothing moved, nothing was half made: the keyspace walks and the accounting are as before.
        Assert.Equal("$v", await c.CallAsync("GET", "src"));
        Assert.Equal("$v", await c.CallAsync("HGET", "hsrc", "f"));
        Assert.Equal(":2", await c.CallAsync("DBSIZE"));
        Assert.Equal(":0", await c.CallAsync("EXISTS", "a"));
        var keys = await c.CallAsync("KEYS", "*"); // KEYS reads every entry's key: a half-made one threw here
        Assert.True(keys is "*2[$src,$hsrc]" or "*2[$hsrc,$src]", keys);
        Assert.StartsWith("$", await c.CallAsync("RANDOMKEY"));
        Assert.Equal(used, server.Store.Stats().UsedMemory);

        // The longest key works everywhere, inline value or not.
        Assert.Equal("+OK", await c.CallAsync("SET", longest, "v"));
        Assert.Equal("+OK", await c.CallAsync("RENAME", "src", longest));
        Assert.Equal("$v", await c.CallAsync("GET", longest));
        Assert.Equal("+OK", await c.CallAsync("SET", longest, new string('v', 40_000)));
        Assert.Equal(":40000", await c.CallAsync("STRLEN", longest));
        Assert.Equal(":2", await c.CallAsync("DBSIZE"));
        Assert.Equal(":1", await c.CallAsync("DEL", longest));
        Assert.Equal(":0", await c.CallAsync("EXISTS", tooLong)); // reads of a longer key simply miss
    }

    [Fact]
    public async Task Scan_returns_every_key_present_throughout_even_while_tables_grow()
    {
        await using var server = InProcessCacheServer.Start(shards: 4);
        using var c = await server.ConnectAsync();
        for (var i = 0; i < 1000; i++)
        {
            await c.CallAsync("SET", "old:" + i, "v");
        }

        var seen = new HashSet<string>();
        var cursor = "0";
        var added = 0;
        var rounds = 0;
        do
        {
            var reply = Parse(await c.CallAsync("SCAN", cursor, "COUNT", "50"));
            cursor = reply.Cursor;
            seen.UnionWith(reply.Keys);
            rounds++;

            // Grow every table several times over while the walk is under way.
            for (var i = 0; i < 300 && added < 20_000; i++, added++)
            {
                await c.CallAsync("SET", "new:" + added, "v");
            }
        }
        while (cursor != "0" && rounds < 10_000);

        Assert.Equal("0", cursor);
        for (var i = 0; i < 1000; i++)
        {
            Assert.Contains("old:" + i, seen);
        }
    }

    [Fact]
    public async Task Scan_filters_by_match_and_type_and_rejects_bad_arguments()
    {
        await using var server = InProcessCacheServer.Start(shards: 4);
        using var c = await server.ConnectAsync();
        for (var i = 0; i < 100; i++)
        {
            await c.CallAsync("SET", "user:" + i, "v");
            await c.CallAsync("HSET", "session:" + i, "f", "v");
        }

        var users = await ScanAll(c, "MATCH", "user:1*");
        Assert.Equal(Enumerable.Range(0, 100).Select(i => "user:" + i).Where(k => k.StartsWith("user:1", StringComparison.Ordinal)).Order(), users.Order());
        var hashes = await ScanAll(c, "TYPE", "hash");
        Assert.Equal(100, hashes.Count);
        Assert.All(hashes, k => Assert.StartsWith("session:", k, StringComparison.Ordinal));

        Assert.Equal("-ERR invalid cursor", await c.CallAsync("SCAN", "-1"));
        Assert.Equal("-ERR invalid cursor", await c.CallAsync("SCAN", "abc"));
        Assert.Equal("-ERR syntax error", await c.CallAsync("SCAN", "0", "COUNT", "0"));
        Assert.Equal("-ERR value is not an integer or out of range", await c.CallAsync("SCAN", "0", "COUNT", "x"));
        Assert.Equal("-ERR syntax error", await c.CallAsync("SCAN", "0", "BOGUS"));
        Assert.Equal("*2[$0,*0[]]", await c.CallAsync("SCAN", "18446744073709551615"));
        Assert.Equal("*2[$0,*0[]]", await c.CallAsync("SCAN", "17179869184"));
        Assert.Equal("+PONG", await c.CallAsync("PING"));
    }

    [Fact]
    public async Task Keys_matches_across_all_shards()
    {
        await using var server = InProcessCacheServer.Start(shards: 8);
        using var c = await server.ConnectAsync();
        for (var i = 0; i < 50; i++)
        {
            await c.CallAsync("SET", "a" + i, "v");
            await c.CallAsync("SET", "b" + i, "v");
        }

        var reply = await c.CallAsync("KEYS", "a?");
        Assert.StartsWith("*10[", reply, StringComparison.Ordinal);
        Assert.StartsWith("*100[", await c.CallAsync("KEYS", "*"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Concurrent_clients_on_shared_keys_lose_no_increment_and_never_deadlock()
    {
        await using var server = InProcessCacheServer.Start(shards: 4);
        const int clients = 4;
        const int rounds = 1500;

        await Task.WhenAll(Enumerable.Range(0, clients).Select(id => Task.Run(async () =>
        {
            using var c = await server.ConnectAsync();
            for (var i = 0; i < rounds; i++)
            {
                await c.CallAsync("INCR", "counter");
                await c.CallAsync("HINCRBY", "hash", "f" + (i % 3), "1");

                // Multi-key commands over many shards, in opposite orders on alternate clients.
                var (a, b) = id % 2 == 0 ? ("x" + (i % 5), "y" + (i % 7)) : ("y" + (i % 7), "x" + (i % 5));
                await c.CallAsync("MSET", a, "1", b, "2", "z", "3");
                await c.CallAsync("RENAME", a, b);
                await c.CallAsync("MGET", a, b, "z", "counter");
                await c.CallAsync("DEL", b, a, "z");
            }
        })));

        using var check = await server.ConnectAsync();
        Assert.Equal("$" + (clients * rounds), await check.CallAsync("GET", "counter"));
        var total = 0;
        for (var f = 0; f < 3; f++)
        {
            total += int.Parse((await check.CallAsync("HGET", "hash", "f" + f))[1..], System.Globalization.CultureInfo.InvariantCulture);
        }

        Assert.Equal(clients * rounds, total);
    }

    [Theory]
    [InlineData("*", "", true)]
    [InlineData("*", "anything", true)]
    [InlineData("a*", "abc", true)]
    [InlineData("a*", "bac", false)]
    [InlineData("*c", "abc", true)]
    [InlineData("a?c", "abc", true)]
    [InlineData("a?c", "ac", false)]
    [InlineData("h[ae]llo", "hello", true)]
    [InlineData("h[ae]llo", "hillo", false)]
    [InlineData("h[^e]llo", "hallo", true)]
    [InlineData("h[^e]llo", "hello", false)]
    [InlineData("h[a-c]llo", "hbllo", true)]
    [InlineData("h[c-a]llo", "hbllo", true)]
    [InlineData("h[a-c]llo", "hdllo", false)]
    [InlineData("a\\*b", "a*b", true)]
    [InlineData("a\\*b", "axb", false)]
    [InlineData("h[\\]]llo", "h]llo", true)]
    [InlineData("user:*:session", "user:42:session", true)]
    [InlineData("user:*:session", "user:42:sessions", false)]
    [InlineData("*a*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false)]
    [InlineData("[", "[", false)]
    [InlineData("[abc", "a", true)]
    public void Glob_matches_as_redis_does(string pattern, string text, bool expected) =>
        Assert.Equal(expected, GlobMatcher.IsMatch(Encoding.ASCII.GetBytes(pattern), Encoding.ASCII.GetBytes(text), ignoreCase: false));

    [Fact]
    public void Glob_matching_of_hostile_patterns_stays_linear()
    {
        var pattern = Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("*a", 5000)) + "b");
        var text = Encoding.ASCII.GetBytes(new string('a', 20_000));
        Assert.False(GlobMatcher.IsMatch(pattern, text, ignoreCase: false));
    }

    private static int ShardOf(InProcessCacheServer server, string key) => server.Store.ShardIndexFor(server.Store.HashOf(Encoding.UTF8.GetBytes(key)));

    private static async Task<List<string>> ScanAll(RespConnection c, params string[] options)
    {
        var keys = new List<string>();
        var cursor = "0";
        do
        {
            var reply = Parse(await c.CallAsync(["SCAN", cursor, .. options]));
            cursor = reply.Cursor;
            keys.AddRange(reply.Keys);
        }
        while (cursor != "0");
        return keys;
    }

    // "*2[$cursor,*N[$k1,$k2]]" from RespConnection's compact form; keys here hold no commas.
    private static (string Cursor, string[] Keys) Parse(string reply)
    {
        var inner = reply["*2[$".Length..^1];
        var comma = inner.IndexOf(',', StringComparison.Ordinal);
        var cursor = inner[..comma];
        var list = inner[(comma + 1)..];
        var open = list.IndexOf('[', StringComparison.Ordinal);
        var body = list[(open + 1)..^1];
        return (cursor, body.Length == 0 ? [] : body.Split(',').Select(k => k[1..]).ToArray());
    }
}
