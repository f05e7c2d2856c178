using System.Buffers.Binary;
using Infra.CacheServer.Storage;

namespace Infra.CacheServer.Eviction;

/// <summary>
/// Replays a key trace against one shard with an entry-counted capacity (every key costs 1): each
/// request is a read, and a miss inserts the key. The miss ratio is comparable with cache simulators'.
/// </summary>
internal static class PolicySimulator
{
    public static double MissRatio(EvictionPolicyKind policy, IReadOnlyList<long> trace, int capacity, AdaptiveSettings? settings = null)
    {
        var shard = new CacheShard(policy, capacity, new Random(42), countEntries: true, settings);
        shard.SetBudget(capacity);
        Span<byte> key = stackalloc byte[8];
        long misses = 0;
        foreach (var item in trace)
        {
            BinaryPrimitives.WriteInt64BigEndian(key, item);
            var hash = CacheShard.HashOfKey(key);
            if (shard.Find(key, hash, nowMs: 1, Lookup.Read) >= 0)
            {
                continue;
            }

            misses++;
            var index = shard.AddString(key, hash, [], expireAt: 0, nowMs: 1);
            shard.MakeRoom(index);
        }

        return trace.Count == 0 ? 0 : (double)misses / trace.Count;
    }
}
