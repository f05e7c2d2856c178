using Infra.CacheServer.Eviction;
using Infra.CacheServer.Storage;

namespace Infra.CacheServer.Tests;

/// <summary>The store-wide limit's eviction across shards, on the store directly.</summary>
public class MemoryBudgetTests
{
    [Fact]
    public void A_write_finds_keys_it_may_evict_on_any_of_many_shards_past_a_larger_shard_that_has_none()
    {
        // Found by review: shards past the 64th were never marked as tried, so with 128 shards a large
        // shard there without TTL keys was picked again and again and a volatile-lru write got OOM.
        const int shards = 128;
        using var store = new CacheStore(shards, 64 * 1024, EvictionPolicyKind.VolatileLru, TimeProvider.System, activeExpiry: false);
        byte[] KeyOn(int shard, int n)
        {
            for (var i = 0; ; i++)
            {
                var key = System.Text.Encoding.ASCII.GetBytes($"s{shard}:{n}:{i}");
                if (store.ShardIndexFor(store.HashOf(key)) == shard)
                {
                    return key;
                }
            }
        }

        void Put(byte[] key, int size, long expireAt)
        {
            var hash = store.HashOf(key);
            var shard = store.ShardFor(hash);
            lock (shard.Lock)
            {
                Assert.True(shard.Reserve(shard.CostOfNewString(key.Length, size), -1), "refused");
                shard.AddString(key, hash, new byte[size], expireAt, nowMs: 1);
            }
        }

        // Shard 100 (past 64) holds the most, none of it with a TTL; shard 3 holds keys with a TTL.
        for (var i = 0; i < 40; i++)
        {
            Put(KeyOn(100, i), 1000, expireAt: 0);
        }

        for (var i = 0; i < 10; i++)
        {
            Put(KeyOn(3, i), 1000, expireAt: long.MaxValue / 2);
        }

        Assert.True(store.Memory.Used > 50 * 1024);

        // A write on an empty shard that needs more room than is free: shard 3's TTL keys go.
        var key = KeyOn(7, 0);
        var hash = store.HashOf(key);
        var target = store.ShardFor(hash);
        lock (target.Lock)
        {
            Assert.True(target.Reserve(target.CostOfNewString(key.Length, 8000), -1), "OOM although shard 3 has keys with a TTL");
        }

        Assert.True(store.Shards[3].Count < 10);
        Assert.Equal(40, store.Shards[100].Count);
    }
}
