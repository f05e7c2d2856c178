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
        Assert.Equal(server.Store.Stats().UsedMemory, server.Store.Memory.Used);
        Assert.All(server.Store.Shards, s => Assert.InRange(s.Used, 15_000, 35_000)); // each shard paid its part (share 25,000)
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

    [Theory]
    [InlineData("NoEviction")]
    [InlineData("AllKeysLru")]
    public async Task Mset_pairs_on_different_shards_must_fit_maxmemory_together(string policyName)
    {
        // Found by review: with one store-wide limit each shard's part of an MSET was checked alone, so two
        // 600 KB values on two shards of an empty 1 MB store were both stored (1.2 MB, under noeviction too).
        const long maxMemory = 1024 * 1024;
        await using var server = InProcessCacheServer.Start(maxMemory, Enum.Parse<EvictionPolicyKind>(policyName), shards: 8);
        using var c = await server.ConnectAsync();
        var store = server.Store;
        var keys = Enumerable.Range(0, 100).Select(i => "m" + i.ToString(CultureInfo.InvariantCulture)).ToList();
        var first = keys[0];
        var second = keys.First(k => store.ShardIndexFor(store.HashOf(System.Text.Encoding.UTF8.GetBytes(k))) != store.ShardIndexFor(store.HashOf(System.Text.Encoding.UTF8.GetBytes(first))));
        var big = new string('b', 600_000);

        Assert.Equal("-" + Errors.Oom, await c.CallAsync("MSET", first, big, second, big));
        Assert.Equal(":0", await c.CallAsync("DBSIZE"));
        Assert.Equal("+OK", await c.CallAsync("MSET", first, new string('a', 400_000), second, new string('b', 400_000)));
        Assert.True(store.Stats().UsedMemory <= maxMemory, $"used {store.Stats().UsedMemory}");
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
    public async Task A_write_larger_than_maxmemory_is_refused_without_evicting_anything()
    {
        // Found by a stress helper: the shard evicted every key it had, then refused the write anyway.
        await using var server = InProcessCacheServer.Start(1024 * 1024, EvictionPolicyKind.AllKeysLru, shards: 8);
        using var c = await server.ConnectAsync();
        for (var i = 0; i < 2000; i++)
        {
            Assert.Equal("+OK", await c.CallAsync("SET", "k:" + i.ToString(CultureInfo.InvariantCulture), new string('v', 100)));
        }

        var evicted = server.Store.Stats().Evicted;
        Assert.Equal("-" + Errors.Oom, await c.CallAsync("SET", "huge", new string('h', 1_100_000)));
        Assert.Equal(":2000", await c.CallAsync("DBSIZE"));
        Assert.Equal(evicted, server.Store.Stats().Evicted);
    }

    [Theory]
    [InlineData("AllKeysLru")]
    [InlineData("AllKeysLfu")]
    [InlineData("Fifo")]
    [InlineData("AllKeysAdaptive")]
    public async Task A_value_larger_than_its_shards_share_is_stored_by_evicting_from_the_other_shards(string policyName)
    {
        // maxmemory is the store's, not maxmemory ÷ shards per shard: with 8 shards of a 1 MB store a
        // 600 KB value used to be refused with OOM although every other shard had keys to evict.
        const long maxMemory = 1024 * 1024;
        await using var server = InProcessCacheServer.Start(maxMemory, Enum.Parse<EvictionPolicyKind>(policyName), shards: 8);
        using var c = await server.ConnectAsync();
        for (var i = 0; i < 20_000; i++)
        {
            Assert.Equal("+OK", await c.CallAsync("SET", "k:" + i.ToString(CultureInfo.InvariantCulture), new string('v', 100)));
        }

        var big = new string('b', 600_000);
        Assert.Equal("+OK", await c.CallAsync("SET", "big", big));
        Assert.Equal("$" + big, await c.CallAsync("GET", "big"));
        var stats = server.Store.Stats();
        Assert.True(stats.UsedMemory <= maxMemory, $"used {stats.UsedMemory}");
        Assert.Equal(stats.UsedMemory, server.Store.Shards.Sum(s => s.Used));

        // The shard that holds it gave up its own keys first; then the others paid for the rest.
        var home = server.Store.ShardFor(server.Store.HashOf("big"u8));
        Assert.Equal(1, home.Count);
        Assert.All(server.Store.Shards.Where(s => s != home), s => Assert.True(s.Used < maxMemory / 8, $"a shard kept {s.Used}"));
    }

    [Fact]
    public async Task Shards_that_gave_memory_away_take_it_back_from_the_ones_over_their_share()
    {
        const long maxMemory = 1024 * 1024;
        const long share = maxMemory / 8;
        await using var server = InProcessCacheServer.Start(maxMemory, EvictionPolicyKind.AllKeysLru, shards: 8);
        using var c = await server.ConnectAsync();
        var next = 0;
        async Task FillAsync(int keys)
        {
            for (var i = 0; i < keys; i++, next++)
            {
                Assert.Equal("+OK", await c.CallAsync("SET", "k:" + next.ToString(CultureInfo.InvariantCulture), new string('v', 100)));
            }
        }

        // A full store; a big value drains the other shards; it goes, and its shard is left empty.
        await FillAsync(10_000);
        Assert.Equal("+OK", await c.CallAsync("SET", "big", new string('b', 600_000)));
        Assert.Equal(":1", await c.CallAsync("DEL", "big"));

        // Small keys everywhere again. Without a way back the empty shard would grow only into the
        // free memory, as fast as the others, and then evict its own keys at half their size forever.
        await FillAsync(30_000);
        var used = server.Store.Stats().UsedMemory;
        Assert.InRange(used, maxMemory * 95 / 100, maxMemory);
        Assert.All(server.Store.Shards, s => Assert.InRange(s.Used, share * 80 / 100, share * 120 / 100));
    }

    [Fact]
    public async Task Noeviction_fills_the_whole_store_before_it_refuses_whatever_shard_a_key_lands_on()
    {
        // With a limit per shard the first full shard refused writes while the store was far from full.
        const long maxMemory = 256 * 1024;
        await using var server = InProcessCacheServer.Start(maxMemory, EvictionPolicyKind.NoEviction, shards: 8);
        using var c = await server.ConnectAsync();
        var refused = 0;
        for (var i = 0; i < 5000 && refused < 50; i++)
        {
            var reply = await c.CallAsync("SET", "k:" + i.ToString(CultureInfo.InvariantCulture), new string('v', 200));
            if (reply != "+OK")
            {
                Assert.Equal("-" + Errors.Oom, reply);
                refused++;
            }
        }

        Assert.Equal(50, refused);
        var used = server.Store.Stats().UsedMemory;
        Assert.InRange(used, maxMemory - 400, maxMemory); // within one entry (200 B value, key, chunk and entry overhead) of the limit
        Assert.Equal(0, server.Store.Stats().Evicted);

        // A deleted key's memory is free for a key on any shard.
        var freedShard = server.Store.ShardIndexFor(server.Store.HashOf("k:0"u8));
        Assert.Equal(":1", await c.CallAsync("DEL", "k:0"));
        var other = Enumerable.Range(0, 100).Select(i => "new:" + i.ToString(CultureInfo.InvariantCulture))
            .First(k => server.Store.ShardIndexFor(server.Store.HashOf(System.Text.Encoding.UTF8.GetBytes(k))) != freedShard);
        Assert.Equal("+OK", await c.CallAsync("SET", other, new string('v', 200)));
    }

    [Fact]
    public async Task Volatile_lru_evicts_keys_with_a_ttl_from_any_shard_for_a_write_on_a_shard_without_them()
    {
        const long maxMemory = 128 * 1024;
        await using var server = InProcessCacheServer.Start(maxMemory, EvictionPolicyKind.VolatileLru, shards: 4);
        using var c = await server.ConnectAsync();
        var store = server.Store;

        // Keys with a TTL on shard 0 only; persistent keys fill the rest.
        var volatileKeys = Enumerable.Range(0, 4000).Select(i => "v:" + i.ToString(CultureInfo.InvariantCulture))
            .Where(k => store.ShardIndexFor(store.HashOf(System.Text.Encoding.UTF8.GetBytes(k))) == 0).Take(150).ToList();
        foreach (var key in volatileKeys)
        {
            Assert.Equal("+OK", await c.CallAsync("SET", key, new string('v', 200), "EX", "1000"));
        }

        var persistent = 0;
        string reply;
        while ((reply = await c.CallAsync("SET", "p:" + (persistent++).ToString(CultureInfo.InvariantCulture), new string('p', 200))) == "+OK")
        {
            Assert.True(persistent < 10_000);
        }

        // The store filled, then writes to shards 1-3 evicted shard 0's volatile keys; only when none
        // was left did a write fail.
        Assert.Equal("-" + Errors.Oom, reply);
        Assert.Equal(0, store.Shards[0].VolatileCount);
        Assert.Equal(volatileKeys.Count, (int)store.Stats().Evicted);
        Assert.True(store.Stats().UsedMemory <= maxMemory);
    }

    [Fact]
    public async Task Concurrent_writers_on_every_shard_keep_the_store_within_maxmemory_and_the_count_exact()
    {
        const long maxMemory = 512 * 1024;
        await using var server = InProcessCacheServer.Start(maxMemory, EvictionPolicyKind.AllKeysLru, shards: 8);
        var peak = 0L;
        var writers = Enumerable.Range(0, 4).Select(async w =>
        {
            using var c = await server.ConnectAsync();
            var random = new Random(w);
            for (var i = 0; i < 3000; i++)
            {
                // Small keys everywhere, and now and then a value bigger than a shard's share.
                var size = i % 500 == 499 ? 100_000 : random.Next(10, 2000);
                Assert.Equal("+OK", await c.CallAsync("SET", "k:" + random.Next(50_000).ToString(CultureInfo.InvariantCulture), new string('v', size)));
                Interlocked.Exchange(ref peak, Math.Max(Interlocked.Read(ref peak), server.Store.Stats().UsedMemory));
            }
        }).ToArray();
        await Task.WhenAll(writers);

        // Each write makes room before it runs and evicts again after, so at rest the store is within
        // maxmemory; while they run, writes on other shards may each be in flight (as Redis exceeds
        // maxmemory by the command that runs after its eviction).
        var stats = server.Store.Stats();
        Assert.True(stats.UsedMemory <= maxMemory, $"used {stats.UsedMemory}");
        Assert.True(peak <= maxMemory + (writers.Length * 100_200), $"peak {peak}");
        Assert.Equal(stats.UsedMemory, server.Store.Memory.Used);
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
