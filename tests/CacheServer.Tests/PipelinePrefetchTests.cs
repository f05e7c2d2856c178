using System.Text;
using Infra.CacheServer.Eviction;
using Infra.CacheServer.Storage;
using Infra.Testing;

namespace Infra.CacheServer.Tests;

/// <summary>
/// A pipelined batch is looked at twice: once ahead, without locks, to prefetch its keys, then
/// command by command. The look ahead must change no reply and must survive any state of a shard.
/// </summary>
public class PipelinePrefetchTests
{
    [Fact]
    public async Task A_pipelined_batch_split_at_any_byte_answers_as_commands_sent_one_by_one()
    {
        await using var server = InProcessCacheServer.Start(shards: 4);
        using var c = await server.ConnectAsync();
        var commands = new List<string[]>();
        for (var i = 0; i < 120; i++)
        {
            commands.Add((i % 6) switch
            {
                0 => ["SET", $"k{i % 17}", $"v{i}"],
                1 => ["GET", $"k{(i * 7) % 17}"],
                2 => ["HSET", $"h{i % 5}", "f", $"{i}"],
                3 => ["INCR", $"n{i % 3}"],
                4 => ["DEL", $"k{(i * 3) % 17}"],
                _ => ["PING"],
            });
        }

        // The expected replies: the same commands one at a time on a second, fresh server.
        await using var reference = InProcessCacheServer.Start(shards: 4);
        using var r = await reference.ConnectAsync();
        var expected = new List<string>();
        foreach (var command in commands)
        {
            expected.Add(await r.CallAsync(command));
        }

        // The batch arrives in pieces of 1, 2, 3 ... 13 bytes, so frames straddle reads everywhere.
        var batch = commands.SelectMany(RespConnection.Encode).ToArray();
        for (int offset = 0, piece = 1; offset < batch.Length; offset += piece, piece = piece % 13 + 1)
        {
            await c.SendRawAsync(batch.AsMemory(offset, Math.Min(piece, batch.Length - offset)));
        }

        var actual = new List<string>();
        foreach (var _ in commands)
        {
            actual.Add(await c.ReadAsync());
        }

        Assert.Equal(expected, actual);

        // And whole, in one write.
        await c.CallAsync("FLUSHALL");
        await c.SendRawAsync(batch);
        actual.Clear();
        foreach (var _ in commands)
        {
            actual.Add(await c.ReadAsync());
        }

        Assert.Equal(expected, actual);
    }

    [Fact]
    public async Task Prefetch_hints_race_writers_that_grow_shrink_and_flush_the_shard_without_failing()
    {
        var shard = new CacheShard(EvictionPolicyKind.AllKeysLru, budget: 0, new Random(7));
        using var stop = new CancellationTokenSource();
        using var started = new ManualResetEventSlim();
        var hinted = 0L;
        var reader = Task.Run(() =>
        {
            var random = new Random(11);
            started.Set();
            while (!stop.IsCancellationRequested)
            {
                var hash = random.Next();
                for (var level = 0; level < 3; level++)
                {
                    shard.Prefetch(hash, level);
                }

                hinted++;
            }
        });

        Assert.True(started.Wait(TimeSpan.FromSeconds(30)), "the prefetching thread did not start");
        var value = new byte[300];
        for (var round = 0; round < 30; round++)
        {
            for (var i = 0; i < 3000; i++)
            {
                var key = Encoding.UTF8.GetBytes($"key:{round}:{i}");
                var hash = CacheShard.HashOfKey(key);
                lock (shard.Lock)
                {
                    var index = shard.Find(key, hash, 0, Lookup.Write);
                    if (index < 0)
                    {
                        shard.AddString(key, hash, value.AsSpan(0, i % value.Length), 0, 0);
                    }
                    else if (i % 3 == 0)
                    {
                        shard.Remove(index, Removal.Deleted);
                    }
                }
            }

            if (round % 5 == 4)
            {
                lock (shard.Lock)
                {
                    shard.Clear();
                }
            }
        }

        stop.Cancel();
        await reader; // a prefetch that threw would surface here
        Assert.True(hinted > 0);
    }
}
