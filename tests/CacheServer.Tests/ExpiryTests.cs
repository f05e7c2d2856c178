using System.Globalization;

namespace Infra.CacheServer.Tests;

/// <summary>TTLs against a fake clock: lazy expiry on access and the active cycle on its timer.</summary>
public class ExpiryTests
{
    [Fact]
    public async Task A_key_lives_until_its_millisecond_and_not_one_after()
    {
        await using var server = InProcessCacheServer.Start();
        using var c = await server.ConnectAsync();

        Assert.Equal("+OK", await c.CallAsync("SET", "k", "v", "PX", "1500"));
        server.Clock.Advance(TimeSpan.FromMilliseconds(1499));
        Assert.Equal(":1", await c.CallAsync("PTTL", "k"));
        Assert.Equal("$v", await c.CallAsync("GET", "k"));

        server.Clock.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Equal("$-1", await c.CallAsync("GET", "k"));
        Assert.Equal(":-2", await c.CallAsync("PTTL", "k"));
        Assert.Equal(1, server.Store.Stats().Expired);
    }

    [Fact]
    public async Task Every_ttl_form_lands_on_the_same_instant()
    {
        await using var server = InProcessCacheServer.Start();
        using var c = await server.ConnectAsync();
        var now = server.Clock.GetUtcNow().ToUnixTimeMilliseconds();
        var at = now + 10_000;
        var atText = at.ToString(CultureInfo.InvariantCulture);
        var atSeconds = (at / 1000).ToString(CultureInfo.InvariantCulture);

        await c.CallAsync("SET", "ex", "v", "EX", "10");
        await c.CallAsync("SET", "px", "v", "PX", "10000");
        await c.CallAsync("SET", "exat", "v", "EXAT", atSeconds);
        await c.CallAsync("SET", "pxat", "v", "PXAT", atText);
        await c.CallAsync("SETEX", "setex", "10", "v");
        await c.CallAsync("PSETEX", "psetex", "10000", "v");
        foreach (var key in new[] { "expire", "pexpire", "expireat", "pexpireat", "getex" })
        {
            await c.CallAsync("SET", key, "v");
        }

        Assert.Equal(":1", await c.CallAsync("EXPIRE", "expire", "10"));
        Assert.Equal(":1", await c.CallAsync("PEXPIRE", "pexpire", "10000"));
        Assert.Equal(":1", await c.CallAsync("EXPIREAT", "expireat", atSeconds));
        Assert.Equal(":1", await c.CallAsync("PEXPIREAT", "pexpireat", atText));
        Assert.Equal("$v", await c.CallAsync("GETEX", "getex", "PX", "10000"));

        foreach (var key in new[] { "ex", "px", "pxat", "setex", "psetex", "expire", "pexpire", "pexpireat", "getex" })
        {
            Assert.Equal(":" + atText, await c.CallAsync("PEXPIRETIME", key));
        }

        Assert.Equal(":" + atSeconds, await c.CallAsync("EXPIRETIME", "exat"));
        Assert.Equal(":10", await c.CallAsync("TTL", "expireat"));

        server.Clock.Advance(TimeSpan.FromMilliseconds(9_999));
        Assert.Equal(":11", await c.CallAsync("EXISTS", "ex", "px", "exat", "pxat", "setex", "psetex", "expire", "pexpire", "expireat", "pexpireat", "getex"));
        server.Clock.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Equal(":0", await c.CallAsync("EXISTS", "ex", "px", "exat", "pxat", "setex", "psetex", "expire", "pexpire", "expireat", "pexpireat", "getex"));
    }

    [Fact]
    public async Task Ttl_is_kept_cleared_or_moved_as_redis_does()
    {
        await using var server = InProcessCacheServer.Start();
        using var c = await server.ConnectAsync();

        await c.CallAsync("SET", "k", "v", "EX", "100");
        Assert.Equal("+OK", await c.CallAsync("SET", "k", "v2", "KEEPTTL"));
        Assert.Equal(":100", await c.CallAsync("TTL", "k"));
        Assert.Equal(":101", await c.CallAsync("APPEND", "k", new string('x', 99)));
        Assert.Equal(":100", await c.CallAsync("TTL", "k"));
        Assert.Equal("+OK", await c.CallAsync("SET", "k", "v3"));
        Assert.Equal(":-1", await c.CallAsync("TTL", "k"));

        await c.CallAsync("SET", "n", "1", "EX", "100");
        Assert.Equal(":2", await c.CallAsync("INCR", "n"));
        Assert.Equal(":100", await c.CallAsync("TTL", "n"));
        Assert.Equal(":1", await c.CallAsync("PERSIST", "n"));
        Assert.Equal(":-1", await c.CallAsync("TTL", "n"));
        Assert.Equal(":0", await c.CallAsync("PERSIST", "n"));

        await c.CallAsync("SET", "from", "v", "PX", "5000");
        Assert.Equal("+OK", await c.CallAsync("RENAME", "from", "to"));
        Assert.Equal(":5000", await c.CallAsync("PTTL", "to"));

        await c.CallAsync("SET", "g", "v", "EX", "100");
        Assert.Equal("$v", await c.CallAsync("GETEX", "g", "PERSIST"));
        Assert.Equal(":-1", await c.CallAsync("TTL", "g"));

        // A TTL in the past deletes the key at once, as Redis does.
        var past = (server.Clock.GetUtcNow().ToUnixTimeSeconds() - 1).ToString(CultureInfo.InvariantCulture);
        Assert.Equal(":1", await c.CallAsync("EXPIREAT", "g", past));
        Assert.Equal(":0", await c.CallAsync("EXISTS", "g"));
        Assert.Equal(":1", await c.CallAsync("EXPIRE", "to", "-1"));
        Assert.Equal(":0", await c.CallAsync("EXISTS", "to"));
        Assert.Equal(":-2", await c.CallAsync("EXPIRETIME", "to"));
    }

    [Fact]
    public async Task Expired_hashes_and_strings_behave_as_missing_for_every_command()
    {
        await using var server = InProcessCacheServer.Start();
        using var c = await server.ConnectAsync();

        await c.CallAsync("HSET", "h", "f", "v");
        await c.CallAsync("PEXPIRE", "h", "10");
        await c.CallAsync("SET", "s", "5", "PX", "10");
        server.Clock.Advance(TimeSpan.FromMilliseconds(10));

        Assert.Equal(":0", await c.CallAsync("HLEN", "h"));
        Assert.Equal("*0[]", await c.CallAsync("HGETALL", "h"));
        Assert.Equal(":1", await c.CallAsync("INCR", "s"));
        Assert.Equal(":-1", await c.CallAsync("TTL", "s"));
        Assert.Equal("+OK", await c.CallAsync("SET", "h", "now a string", "NX"));
        Assert.Equal("*0[]", await c.CallAsync("KEYS", "x*"));
        Assert.Equal(":2", await c.CallAsync("DBSIZE"));
    }

    [Fact]
    public async Task The_active_cycle_frees_expired_keys_nobody_touches()
    {
        await using var server = InProcessCacheServer.Start();
        using var c = await server.ConnectAsync();
        var baseline = server.Store.Stats().UsedMemory;

        for (var i = 0; i < 500; i++)
        {
            await c.CallAsync("SET", "keep:" + i, "value");
        }

        var persistentUsed = server.Store.Stats().UsedMemory;
        for (var i = 0; i < 2000; i++)
        {
            await c.CallAsync("SET", "gone:" + i, new string('v', 100), "PX", (1000 + (i % 50)).ToString(CultureInfo.InvariantCulture));
        }

        Assert.Equal(2500, server.Store.Stats().Keys);
        Assert.True(server.Store.Stats().UsedMemory > persistentUsed);

        // The timer runs every 100 ms of store time; ManualTimeProvider fires it as the clock passes.
        for (var step = 0; step < 12; step++)
        {
            server.Clock.Advance(TimeSpan.FromMilliseconds(100));
        }

        var stats = server.Store.Stats();
        Assert.Equal(500, stats.Keys);
        Assert.Equal(0, stats.Expires);
        Assert.Equal(2000, stats.Expired);
        Assert.Equal(2000, server.Store.ActiveExpired);
        Assert.Equal(persistentUsed, stats.UsedMemory);
        Assert.True(persistentUsed > baseline);
        Assert.Equal("$value", await c.CallAsync("GET", "keep:499"));
    }
}
