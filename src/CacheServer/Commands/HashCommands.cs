using System.Text;
using Infra.CacheServer.Storage;

namespace Infra.CacheServer.Commands;

/// <summary>Hash commands (the web tier keeps sessions in hashes).</summary>
internal static class HashCommands
{
    /// <summary>HSET key field value [field value ...]: returns how many fields were new.</summary>
    public static void HSet(ref CommandContext c)
    {
        if (c.Count % 2 != 0)
        {
            c.Reply.Error(Errors.Arity(c.Spec.LowerName));
            return;
        }

        long extra = 0;
        for (var i = 2; i < c.Count; i += 2)
        {
            extra += HashValue.FieldOverhead + c.Arg(i).Length + c.Arg(i + 1).Length;
        }

        WithHash(ref c, create: true, extra, static (ref CommandContext c, CacheShard shard, int index, HashValue value) =>
        {
            long added = 0;
            for (var i = 2; i < c.Count; i += 2)
            {
                added += value.Set(c.Arg(i), c.Arg(i + 1)) ? 1 : 0;
            }

            c.Reply.Integer(added);
        });
    }

    /// <summary>HMSET: HSET that answers OK (deprecated in Redis, still sent by old clients).</summary>
    public static void HMSet(ref CommandContext c)
    {
        if (c.Count % 2 != 0)
        {
            c.Reply.Error(Errors.Arity(c.Spec.LowerName));
            return;
        }

        long extra = 0;
        for (var i = 2; i < c.Count; i += 2)
        {
            extra += HashValue.FieldOverhead + c.Arg(i).Length + c.Arg(i + 1).Length;
        }

        WithHash(ref c, create: true, extra, static (ref CommandContext c, CacheShard shard, int index, HashValue value) =>
        {
            for (var i = 2; i < c.Count; i += 2)
            {
                value.Set(c.Arg(i), c.Arg(i + 1));
            }

            c.Reply.Ok();
        });
    }

    public static void HSetNx(ref CommandContext c)
    {
        WithHash(ref c, create: true, HashValue.FieldOverhead + c.Arg(2).Length + c.Arg(3).Length,
            static (ref CommandContext c, CacheShard shard, int index, HashValue value) =>
            {
                if (value.TryGet(c.Arg(2), out _))
                {
                    c.Reply.Integer(0);
                    return;
                }

                value.Set(c.Arg(2), c.Arg(3));
                c.Reply.Integer(1);
            });
    }

    public static void HGet(ref CommandContext c) =>
        ReadHash(ref c, static (ref CommandContext c, HashValue? value) =>
        {
            if (value is not null && value.TryGet(c.Arg(2), out var field))
            {
                c.Reply.Bulk(field);
            }
            else
            {
                c.Reply.Null();
            }
        });

    public static void HMGet(ref CommandContext c) =>
        ReadHash(ref c, static (ref CommandContext c, HashValue? value) =>
        {
            c.Reply.ArrayHeader(c.Count - 2);
            for (var i = 2; i < c.Count; i++)
            {
                if (value is not null && value.TryGet(c.Arg(i), out var field))
                {
                    c.Reply.Bulk(field);
                }
                else
                {
                    c.Reply.Null();
                }
            }
        });

    public static void HGetAll(ref CommandContext c) =>
        ReadHash(ref c, static (ref CommandContext c, HashValue? value) =>
        {
            c.Reply.MapHeader(value?.Count ?? 0);
            if (value is null)
            {
                return;
            }

            foreach (var (field, data) in value.Fields)
            {
                c.Reply.Bulk(field);
                c.Reply.Bulk(data);
            }
        });

    public static void HKeys(ref CommandContext c) =>
        ReadHash(ref c, static (ref CommandContext c, HashValue? value) =>
        {
            c.Reply.ArrayHeader(value?.Count ?? 0);
            foreach (var field in value?.Fields.Keys ?? (IEnumerable<byte[]>)[])
            {
                c.Reply.Bulk(field);
            }
        });

    public static void HVals(ref CommandContext c) =>
        ReadHash(ref c, static (ref CommandContext c, HashValue? value) =>
        {
            c.Reply.ArrayHeader(value?.Count ?? 0);
            foreach (var data in value?.Fields.Values ?? (IEnumerable<byte[]>)[])
            {
                c.Reply.Bulk(data);
            }
        });

    public static void HLen(ref CommandContext c) =>
        ReadHash(ref c, static (ref CommandContext c, HashValue? value) => c.Reply.Integer(value?.Count ?? 0));

    public static void HExists(ref CommandContext c) =>
        ReadHash(ref c, static (ref CommandContext c, HashValue? value) => c.Reply.Integer(value is not null && value.TryGet(c.Arg(2), out _) ? 1 : 0));

    public static void HStrLen(ref CommandContext c) =>
        ReadHash(ref c, static (ref CommandContext c, HashValue? value) =>
            c.Reply.Integer(value is not null && value.TryGet(c.Arg(2), out var field) ? field.Length : 0));

    public static void HDel(ref CommandContext c) =>
        WithHash(ref c, create: false, 0, static (ref CommandContext c, CacheShard shard, int index, HashValue value) =>
        {
            long removed = 0;
            for (var i = 2; i < c.Count; i++)
            {
                removed += value.Remove(c.Arg(i)) ? 1 : 0;
            }

            c.Reply.Integer(removed);
        });

    public static void HIncrBy(ref CommandContext c)
    {
        if (!c.TryLong(3, out _))
        {
            c.Reply.Error(Errors.NotInteger);
            return;
        }

        WithHash(ref c, create: true, HashValue.FieldOverhead + c.Arg(2).Length + 20,
            static (ref CommandContext c, CacheShard shard, int index, HashValue value) =>
            {
                c.TryLong(3, out var delta);
                long current = 0;
                if (value.TryGet(c.Arg(2), out var field) && !RespNumbers.TryParseLong(field, out current))
                {
                    c.Reply.Error(Errors.HashNotInteger);
                    return;
                }

                if (!StringCommands.TryIncrement(ref c, current, delta, out var result))
                {
                    return;
                }

                Span<byte> digits = stackalloc byte[20];
                value.Set(c.Arg(2), digits[..RespNumbers.Format(result, digits)]);
                c.Reply.Integer(result);
            });
    }

    public static void HIncrByFloat(ref CommandContext c)
    {
        if (!LongDouble.TryParse(c.Arg(3), out var increment))
        {
            c.Reply.Error(Errors.NotFloat);
            return;
        }

        if (increment.IsInfinity)
        {
            c.Reply.Error("ERR value is NaN or Infinity");
            return;
        }

        WithHash(ref c, create: true, HashValue.FieldOverhead + c.Arg(2).Length + 32,
            static (ref CommandContext c, CacheShard shard, int index, HashValue value) =>
            {
                _ = LongDouble.TryParse(c.Arg(3), out var delta); // checked above
                var current = default(LongDouble);
                if (value.TryGet(c.Arg(2), out var field) && !LongDouble.TryParse(field, out current))
                {
                    c.Reply.Error(Errors.HashNotFloat);
                    return;
                }

                if (!StringCommands.TryIncrement(ref c, current, delta, out var result))
                {
                    return;
                }

                var text = Encoding.ASCII.GetBytes(result.ToString());
                value.Set(c.Arg(2), text);
                c.Reply.Bulk(text);
            });
    }

    private delegate void HashReader(ref CommandContext context, HashValue? value);

    private delegate void HashWriter(ref CommandContext context, CacheShard shard, int index, HashValue value);

    /// <summary>Runs a read on the key's hash (null when absent); WRONGTYPE for other types.</summary>
    private static void ReadHash(ref CommandContext c, HashReader read)
    {
        var key = c.Arg(1);
        var hash = c.Store.HashOf(key);
        var shard = c.Store.ShardFor(hash);
        lock (shard.Lock)
        {
            var index = shard.Find(key, hash, c.Now, Lookup.Read);
            if (index >= 0 && shard.KindOf(index) != ValueKind.Hash)
            {
                c.Reply.Error(Errors.WrongType);
                return;
            }

            read(ref c, index < 0 ? null : shard.HashOf(index));
        }
    }

    /// <summary>
    /// Runs a change on the key's hash, creating it if asked; keeps the memory accounting right, makes
    /// room first (OOM when impossible) and deletes the key once its last field is gone.
    /// </summary>
    private static void WithHash(ref CommandContext c, bool create, long extra, HashWriter write)
    {
        var key = c.Arg(1);
        var hash = c.Store.HashOf(key);
        var shard = c.Store.ShardFor(hash);
        lock (shard.Lock)
        {
            var index = shard.Find(key, hash, c.Now, Lookup.Write);
            if (index >= 0 && shard.KindOf(index) != ValueKind.Hash)
            {
                c.Reply.Error(Errors.WrongType);
                return;
            }

            if (index < 0 && !create)
            {
                c.Reply.Integer(0);
                return;
            }

            if (extra > 0 && !shard.Reserve(extra + (index < 0 ? shard.CostOfNewString(key.Length, 0) : 0), index))
            {
                c.Reply.Error(Errors.Oom);
                return;
            }

            if (index < 0)
            {
                index = shard.AddHash(key, hash, c.Now);
            }

            var oldCost = shard.CostOf(index);
            var value = shard.HashOf(index);
            write(ref c, shard, index, value);

            // Account the change first: removing an emptied hash frees what is left of it.
            shard.Resized(index, oldCost, c.Now);
            if (value.Count == 0)
            {
                shard.Remove(index, Removal.Deleted);
                return;
            }

            shard.MakeRoom(index);
        }
    }
}
