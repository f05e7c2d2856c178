using System.Globalization;
using Infra.CacheServer.Commands;
using Infra.CacheServer.Eviction;

namespace Infra.CacheServer.Tests;

/// <summary>maxmemory accounting and each policy's choice of victims, through the commands.</summary>
public class MemoryPolicyTests
{
    [Theory]
    [InlineData("AllKeysLru")]
    [InlineData("AllKeysLfu")]
    [InlineData("Fifo")]
    [InlineData("AllKeysAdaptive")]
    [InlineData("VolatileLru")]
    [InlineData("VolatileTtl")]
    public async Task Under_a_write_flood_used_memory_stays_within_maxmemory_plus_one_percent(string policyName)
    {
        var policy = Enum.Parse<EvictionPolicyKind>(policyName);
        const long maxMemory = 2 * 1024 * 1024;
        await using var server = InProcessCacheServer.Start(maxMemory, policy, shards: 8);
        using var c = await server.ConnectAsync();
        var random = new Random(42);
        var peak = 0L;

        for (var i = 0; i < 6000; i++)
        {
            var key = "k:" + random.Next(20_000).ToString(CultureInfo.InvariantCulture);
            var value = new string('v', random.Next(1, 3000));
            var reply = (i % 4) switch
            {
                0 => await c.CallAsync("HSET", "h" + key, "f" + (i % 7).ToString(CultureInfo.InvariantCulture), value),
                1 => await c.CallAsync("APPEND", key, value),
                _ => await c.CallAsync("SET", key, value, "EX", "1000"),
            };
            Assert.False(reply.StartsWith("-OOM", StringComparison.Ordinal) && policy != EvictionPolicyKind.VolatileLru && policy != EvictionPolicyKind.VolatileTtl,
                $"{policy} refused a write: {reply}");
            peak = Math.Max(peak, server.Store.Stats().UsedMemory);
        }

        Assert.True(peak <= maxMemory * 101 / 100, $"peak used {peak} over {maxMemory} + 1 %");
        Assert.True(server.Store.Stats().Evicted > 0);
    }

    [Fact]
    public async Task Noeviction_refuses_writes_with_redis_oom_error_but_serves_reads_and_deletes()
    {
        await using var server = InProcessCacheServer.Start(64 * 1024, EvictionPolicyKind.NoEviction, shards: 1);
        using var c = await server.ConnectAsync();

        var stored = 0;
        string reply;
        while ((reply = await c.CallAsync("SET", "k" + stored, new string('v', 500))) == "+OK")
        {
            stored++;
        }

        Assert.Equal("-" + Errors.Oom, reply);
        Assert.True(stored > 50);
        Assert.Equal("-" + Errors.Oom, await c.CallAsync("HSET", "h", "f", new string('v', 500)));
        Assert.Equal("$" + new string('v', 500), await c.CallAsync("GET", "k0"));
        Assert.Equal(":" + stored, await c.CallAsync("DBSIZE"));
        Assert.Equal(":1", await c.CallAsync("DEL", "k0"));
        Assert.Equal("+OK", await c.CallAsync("SET", "again", new string('v', 500)));
        Assert.Equal(0, server.Store.Stats().Evicted);
    }

    [Fact]
    public async Task Volatile_lru_evicts_only_keys_with_a_ttl_least_recently_used_first()
    {
        await using var server = InProcessCacheServer.Start(0, EvictionPolicyKind.VolatileLru, shards: 1);
        using var c = await server.ConnectAsync();

        for (var i = 0; i < 20; i++)
        {
            await c.CallAsync("SET", "persistent:" + i, new string('p', 500));
        }

        for (var i = 0; i < 40; i++)
        {
            await c.CallAsync("SET", "volatile:" + i, new string('t', 500), "EX", "1000");
        }

        Assert.Equal("$" + new string('t', 500), await c.CallAsync("GET", "volatile:0"));
        await SetMaxMemoryToUsed(server, c);

        // Fill until the volatile keys are gone: persistent ones must all survive; volatile:0 was
        // touched last among the old ones, so it outlives volatile:1.
        string reply;
        var n = 0;
        while ((reply = await c.CallAsync("SET", "new:" + n, new string('n', 500))) == "+OK")
        {
            n++;
            if (n == 10)
            {
                Assert.Equal(":0", await c.CallAsync("EXISTS", "volatile:1"));
                Assert.Equal(":1", await c.CallAsync("EXISTS", "volatile:0"));
            }
        }

        Assert.Equal("-" + Errors.Oom, reply);
        for (var i = 0; i < 20; i++)
        {
            Assert.Equal(":1", await c.CallAsync("EXISTS", "persistent:" + i));
        }

        Assert.Equal(0, server.Store.Stats().Expires);
    }

    [Fact]
    public async Task Volatile_ttl_evicts_the_nearest_expiry_first()
    {
        await using var server = InProcessCacheServer.Start(0, EvictionPolicyKind.VolatileTtl, shards: 1);
        using var c = await server.ConnectAsync();

        for (var i = 0; i < 60; i++)
        {
            // Sampled policy (5 samples, as Redis): with 60 candidates the soonest of each sample goes.
            await c.CallAsync("SET", "t:" + i, new string('t', 500), "EX", (1000 + i).ToString(CultureInfo.InvariantCulture));
        }

        await SetMaxMemoryToUsed(server, c);
        var before = server.Store.Stats().Keys;
        for (var i = 0; i < 30; i++)
        {
            Assert.Equal("+OK", await c.CallAsync("SET", "p:" + i, new string('p', 500)));
        }

        var evicted = before + 30 - server.Store.Stats().Keys;
        Assert.True(evicted >= 25, $"evicted {evicted}");
        var survivorsLate = 0;
        var survivorsEarly = 0;
        for (var i = 0; i < 20; i++)
        {
            survivorsEarly += (await c.CallAsync("EXISTS", "t:" + i)) == ":1" ? 1 : 0;
            survivorsLate += (await c.CallAsync("EXISTS", "t:" + (59 - i))) == ":1" ? 1 : 0;
        }

        Assert.True(survivorsLate > survivorsEarly, $"late survivors {survivorsLate}, early {survivorsEarly}");
    }

    [Fact]
    public async Task Allkeys_lru_keeps_the_recently_read_key_exactly()
    {
        await using var server = InProcessCacheServer.Start(64 * 1024, EvictionPolicyKind.AllKeysLru, shards: 1);
        using var c = await server.ConnectAsync();

        for (var i = 0; i < 1000; i++)
        {
            await c.CallAsync("SET", "k:" + i, new string('v', 500));
            Assert.Equal("$" + new string('v', 500), await c.CallAsync("GET", "k:0"));
        }

        Assert.Equal(":1", await c.CallAsync("EXISTS", "k:0"));
        Assert.Equal(":0", await c.CallAsync("EXISTS", "k:1"));
        Assert.Equal(":1", await c.CallAsync("EXISTS", "k:999"));
    }

    [Fact]
    public async Task Hash_accounting_grows_shrinks_and_returns_to_baseline()
    {
        await using var server = InProcessCacheServer.Start();
        using var c = await server.ConnectAsync();
        var baseline = server.Store.Stats().UsedMemory;

        await c.CallAsync("HSET", "h", "f0", "v");
        var one = server.Store.Stats().UsedMemory;
        for (var i = 1; i < 100; i++)
        {
            await c.CallAsync("HSET", "h", "f" + i, new string('v', 100));
        }

        var hundred = server.Store.Stats().UsedMemory;
        Assert.True(hundred - one >= 99 * 100, $"100 fields of 100 bytes cost only {hundred - one}");
        await c.CallAsync("HSET", "h", "f1", "short");
        Assert.True(server.Store.Stats().UsedMemory < hundred);
        for (var i = 1; i < 100; i++)
        {
            await c.CallAsync("HDEL", "h", "f" + i);
        }

        Assert.Equal(one, server.Store.Stats().UsedMemory);
        Assert.Equal(":1", await c.CallAsync("HDEL", "h", "f0"));
        Assert.Equal(":0", await c.CallAsync("EXISTS", "h"));
        Assert.Equal(baseline, server.Store.Stats().UsedMemory);
    }

    [Fact]
    public async Task Config_set_maxmemory_lower_evicts_down_at_once()
    {
        await using var server = InProcessCacheServer.Start(0, EvictionPolicyKind.AllKeysLru, shards: 4);
        using var c = await server.ConnectAsync();
        for (var i = 0; i < 2000; i++)
        {
            await c.CallAsync("SET", "k:" + i, new string('v', 200));
        }

        Assert.Equal("+OK", await c.CallAsync("CONFIG", "SET", "maxmemory", "100000"));
        Assert.True(server.Store.Stats().UsedMemory <= 101_000, $"used {server.Store.Stats().UsedMemory}");
        Assert.Equal("+OK", await c.CallAsync("CONFIG", "SET", "maxmemory-policy", "allkeys-lfu"));
        Assert.Equal("*2[$maxmemory-policy,$allkeys-lfu]", await c.CallAsync("CONFIG", "GET", "maxmemory-policy"));
    }

    [Fact]
    public async Task Mset_under_noeviction_fits_all_its_pairs_together_or_stores_none()
    {
        // Found by a stress helper: each pair was checked alone, so one MSET of 4,000 × 12 KB into an
        // empty store was accepted at 1.6 × maxmemory.
        const long maxMemory = 64 * 1024;
        await using var server = InProcessCacheServer.Start(maxMemory, EvictionPolicyKind.NoEviction, shards: 1);
        using var c = await server.ConnectAsync();
        var args = new List<string> { "MSET" };
        for (var i = 0; i < 100; i++)
        {
            args.Add("k" + i.ToString(CultureInfo.InvariantCulture));
            args.Add(new string('v', 1000));
        }

        Assert.Equal("-" + Errors.Oom, await c.CallAsync([.. args]));
        Assert.Equal(":0", await c.CallAsync("DBSIZE"));
        Assert.True(server.Store.Stats().UsedMemory <= maxMemory);

        // Half as many pairs fit, and are stored.
        Assert.Equal("+OK", await c.CallAsync([.. args.Take(1 + 2 * 40)]));
        Assert.Equal(":40", await c.CallAsync("DBSIZE"));
    }

    [Fact]
    public async Task Allkeys_lfu_still_finds_a_victim_when_few_keys_are_left_in_a_large_table()
    {
        // Found by a stress helper: after large values had evicted most of many small keys, 20 random
        // samples over the whole (never shrinking) entry table missed every live entry and SET answered OOM.
        await using var server = InProcessCacheServer.Start(2 * 1024 * 1024, EvictionPolicyKind.AllKeysLfu, shards: 1);
        using var c = await server.ConnectAsync();
        for (var i = 0; i < 20_000; i++)
        {
            await c.CallAsync("SET", "small:" + i.ToString(CultureInfo.InvariantCulture), "v");
        }

        var big = new string('b', 200_000);
        for (var i = 0; i < 40; i++)
        {
            Assert.Equal("+OK", await c.CallAsync("SET", "big:" + i.ToString(CultureInfo.InvariantCulture), big));
        }

        Assert.True(server.Store.Stats().UsedMemory <= 2 * 1024 * 1024);
    }

    [Fact]
    public async Task A_write_too_big_for_its_shard_is_refused_without_evicting_anything()
    {
        // Found by a stress helper: the shard evicted every key it had, then refused the write anyway.
        await using var server = InProcessCacheServer.Start(1024 * 1024, EvictionPolicyKind.AllKeysLru, shards: 8);
        using var c = await server.ConnectAsync();
        for (var i = 0; i < 2000; i++)
        {
            Assert.Equal("+OK", await c.CallAsync("SET", "k:" + i.ToString(CultureInfo.InvariantCulture), new string('v', 100)));
        }

        var evicted = server.Store.Stats().Evicted;
        Assert.Equal("-" + Errors.Oom, await c.CallAsync("SET", "huge", new string('h', 300_000))); // a shard's budget is 128 KB
        Assert.Equal(":2000", await c.CallAsync("DBSIZE"));
        Assert.Equal(evicted, server.Store.Stats().Evicted);
    }

    [Fact]
    public async Task Values_that_change_size_class_reuse_slab_pages_through_the_server_and_info_counts_the_moves()
    {
        // Found by a stress helper: floods of 15 value sizes at maxmemory 32mb left 690 MB of RSS (every
        // size class kept the most pages it ever held). Seeded hashing: the shard looks moved chunks up by key.
        const long maxMemory = 1024 * 1024;
        await using var server = InProcessCacheServer.Start(maxMemory, EvictionPolicyKind.AllKeysLru, shards: 2);
        using var c = await server.ConnectAsync();
        var next = 0;
        foreach (var size in new[] { 100, 300, 1200, 5000, 12000, 600 })
        {
            var value = new string((char)('a' + (size % 26)), size);
            for (var written = 0L; written < 2 * maxMemory; written += size)
            {
                Assert.Equal("+OK", await c.CallAsync("SET", "k" + (next++).ToString(CultureInfo.InvariantCulture), value));
            }
        }

        var info = await c.CallAsync("INFO", "memory");
        var moved = long.Parse(InfoField(info, "slab_pages_moved"), CultureInfo.InvariantCulture);
        Assert.True(moved > 0, info);
        var reserved = server.Store.Shards.Sum(s => s.SlabBytes);
        Assert.True(reserved <= maxMemory + (2 * 6 * 2 * SlabAllocatorPage), $"slab pages {reserved} bytes at maxmemory {maxMemory}");

        // The last keys written read back whole.
        Assert.Equal("$" + new string((char)('a' + (600 % 26)), 600), await c.CallAsync("GET", "k" + (next - 1).ToString(CultureInfo.InvariantCulture)));
    }

    private const long SlabAllocatorPage = Infra.CacheServer.Storage.SlabAllocator.PageSize;

    private static string InfoField(string info, string name)
    {
        var start = info.IndexOf(name + ":", StringComparison.Ordinal);
        Assert.True(start >= 0, $"INFO has no {name}: {info}");
        var end = info.IndexOf('\r', start);
        return info[(start + name.Length + 1)..(end < 0 ? info.Length : end)].Trim();
    }

    private static async Task SetMaxMemoryToUsed(InProcessCacheServer server, Infra.Testing.RespConnection c) =>
        Assert.Equal("+OK", await c.CallAsync("CONFIG", "SET", "maxmemory", server.Store.Stats().UsedMemory.ToString(CultureInfo.InvariantCulture)));
}
