using Infra.CacheServer.Storage;

namespace Infra.CacheServer.Commands;

/// <summary>
/// Holds the locks of every shard a multi-key command touches, taken in shard order so two such
/// commands can never deadlock. Released by <see cref="Dispose"/>.
/// </summary>
internal readonly struct ShardLocks : IDisposable
{
    private readonly CacheShard[] _locked;

    private ShardLocks(CacheShard[] locked) => _locked = locked;

    /// <summary>Locks the shards of the keys at positions first, first+step, ... up to count (exclusive).</summary>
    public static ShardLocks ForKeys(ref CommandContext context, int first, int step, int end)
    {
        var store = context.Store;
        var indices = new SortedSet<int>();
        for (var i = first; i < end; i += step)
        {
            indices.Add(store.ShardIndexFor(store.HashOf(context.Arg(i))));
        }

        var shards = new CacheShard[indices.Count];
        var n = 0;
        foreach (var index in indices)
        {
            shards[n] = store.Shards[index];
            shards[n].Lock.Enter();
            n++;
        }

        return new ShardLocks(shards);
    }

    public void Dispose()
    {
        for (var i = _locked.Length - 1; i >= 0; i--)
        {
            _locked[i].Lock.Exit();
        }
    }
}
