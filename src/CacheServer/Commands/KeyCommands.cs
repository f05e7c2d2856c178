using Infra.CacheServer.Eviction;
using Infra.CacheServer.Storage;
using static Infra.CacheServer.Commands.StringCommands;

namespace Infra.CacheServer.Commands;

/// <summary>Generic key commands: existence, deletion, expiry, renaming, iteration, introspection.</summary>
internal static class KeyCommands
{
    public static void Del(ref CommandContext c)
    {
        long removed = 0;
        for (var i = 1; i < c.Count; i++)
        {
            var key = c.Arg(i);
            var hash = c.Store.HashOf(key);
            var shard = c.Store.ShardFor(hash);
            lock (shard.Lock)
            {
                var index = shard.Find(key, hash, c.Now, Lookup.Write);
                if (index >= 0)
                {
                    shard.Remove(index, Removal.Deleted);
                    removed++;
                }
            }
        }

        c.Reply.Integer(removed);
    }

    public static void Exists(ref CommandContext c)
    {
        long found = 0;
        for (var i = 1; i < c.Count; i++)
        {
            var key = c.Arg(i);
            var hash = c.Store.HashOf(key);
            var shard = c.Store.ShardFor(hash);
            lock (shard.Lock)
            {
                found += shard.Find(key, hash, c.Now, Lookup.Check) >= 0 ? 1 : 0;
            }
        }

        c.Reply.Integer(found);
    }

    public static void Type(ref CommandContext c)
    {
        var key = c.Arg(1);
        var hash = c.Store.HashOf(key);
        var shard = c.Store.ShardFor(hash);
        lock (shard.Lock)
        {
            var index = shard.Find(key, hash, c.Now, Lookup.Check);
            c.Reply.SimpleString(index < 0 ? "none" : TypeName(shard.KindOf(index)));
        }
    }

    public static void Expire(ref CommandContext c) => ExpireCore(ref c, ExpireUnit.Seconds);

    public static void PExpire(ref CommandContext c) => ExpireCore(ref c, ExpireUnit.Milliseconds);

    public static void ExpireAt(ref CommandContext c) => ExpireCore(ref c, ExpireUnit.UnixSeconds);

    public static void PExpireAt(ref CommandContext c) => ExpireCore(ref c, ExpireUnit.UnixMilliseconds);

    /// <summary>EXPIRE key time [NX|XX|GT|LT]: a time in the past deletes the key.</summary>
    private static void ExpireCore(ref CommandContext c, ExpireUnit unit)
    {
        bool nx = false, xx = false, gt = false, lt = false;
        for (var i = 3; i < c.Count; i++)
        {
            if (c.Is(i, "NX"u8))
            {
                nx = true;
            }
            else if (c.Is(i, "XX"u8))
            {
                xx = true;
            }
            else if (c.Is(i, "GT"u8))
            {
                gt = true;
            }
            else if (c.Is(i, "LT"u8))
            {
                lt = true;
            }
            else
            {
                c.Reply.Error($"ERR Unsupported option {Errors.Truncate(c.Text(i))}");
                return;
            }
        }

        if (nx && (xx || gt || lt))
        {
            c.Reply.Error("ERR NX and XX, GT or LT options at the same time are not compatible");
            return;
        }

        if (gt && lt)
        {
            c.Reply.Error("ERR GT and LT options at the same time are not compatible");
            return;
        }

        if (!c.TryLong(2, out var value)) // after the options (Redis's order of errors)
        {
            c.Reply.Error(Errors.NotInteger);
            return;
        }

        if (!TryAbsolute(value, unit, c.Now, out var when))
        {
            c.Reply.Error(Errors.InvalidExpire(c.Spec.LowerName));
            return;
        }

        var key = c.Arg(1);
        var hash = c.Store.HashOf(key);
        var shard = c.Store.ShardFor(hash);
        lock (shard.Lock)
        {
            var index = shard.Find(key, hash, c.Now, Lookup.Write);
            if (index < 0)
            {
                c.Reply.Integer(0);
                return;
            }

            var current = shard.ExpireAtOf(index);
            var persistent = current == 0;
            if ((nx && !persistent) || (xx && persistent) || (gt && (persistent || when <= current)) || (lt && !persistent && when >= current))
            {
                c.Reply.Integer(0);
                return;
            }

            if (when <= c.Now)
            {
                shard.Remove(index, Removal.Deleted);
            }
            else
            {
                shard.SetExpire(index, when);
            }

            c.Reply.Integer(1);
        }
    }

    public static void Ttl(ref CommandContext c) => TimeLeft(ref c, milliseconds: false, absolute: false);

    public static void PTtl(ref CommandContext c) => TimeLeft(ref c, milliseconds: true, absolute: false);

    public static void ExpireTime(ref CommandContext c) => TimeLeft(ref c, milliseconds: false, absolute: true);

    public static void PExpireTime(ref CommandContext c) => TimeLeft(ref c, milliseconds: true, absolute: true);

    private static void TimeLeft(ref CommandContext c, bool milliseconds, bool absolute)
    {
        var key = c.Arg(1);
        var hash = c.Store.HashOf(key);
        var shard = c.Store.ShardFor(hash);
        lock (shard.Lock)
        {
            var index = shard.Find(key, hash, c.Now, Lookup.Check);
            if (index < 0)
            {
                c.Reply.Integer(-2);
                return;
            }

            var when = shard.ExpireAtOf(index);
            if (when == 0)
            {
                c.Reply.Integer(-1);
                return;
            }

            var left = absolute ? when : Math.Max(0, when - c.Now);
            c.Reply.Integer(milliseconds ? left : (left + 500) / 1000); // rounded, EXPIRETIME too (as Redis)
        }
    }

    public static void Persist(ref CommandContext c)
    {
        var key = c.Arg(1);
        var hash = c.Store.HashOf(key);
        var shard = c.Store.ShardFor(hash);
        lock (shard.Lock)
        {
            var index = shard.Find(key, hash, c.Now, Lookup.Write);
            if (index < 0 || shard.ExpireAtOf(index) == 0)
            {
                c.Reply.Integer(0);
                return;
            }

            shard.SetExpire(index, 0);
            c.Reply.Integer(1);
        }
    }

    public static void Rename(ref CommandContext c) => RenameCore(ref c, onlyIfAbsent: false);

    public static void RenameNx(ref CommandContext c) => RenameCore(ref c, onlyIfAbsent: true);

    /// <summary>Moves a value (with its TTL) to another key, across shards if need be.</summary>
    private static void RenameCore(ref CommandContext c, bool onlyIfAbsent)
    {
        var from = c.Arg(1);
        var to = c.Arg(2);
        using var locks = ShardLocks.ForKeys(ref c, 1, 1, 3);
        var fromHash = c.Store.HashOf(from);
        var fromShard = c.Store.ShardFor(fromHash);
        var source = fromShard.Find(from, fromHash, c.Now, Lookup.Write);
        if (source < 0)
        {
            c.Reply.Error(Errors.NoSuchKey);
            return;
        }

        if (from.SequenceEqual(to))
        {
            if (onlyIfAbsent)
            {
                c.Reply.Integer(0);
            }
            else
            {
                c.Reply.Ok();
            }

            return;
        }

        var toHash = c.Store.HashOf(to);
        var toShard = c.Store.ShardFor(toHash);
        var target = toShard.Find(to, toHash, c.Now, Lookup.Write);
        if (target >= 0)
        {
            if (onlyIfAbsent)
            {
                c.Reply.Integer(0);
                return;
            }

            toShard.Remove(target, Removal.Deleted);
        }

        var expireAt = fromShard.ExpireAtOf(source);
        if (fromShard.KindOf(source) == ValueKind.Hash)
        {
            var value = fromShard.HashOf(source);
            fromShard.Remove(source, Removal.Deleted);
            toShard.MakeRoom(toShard.AddHash(to, toHash, c.Now, value, expireAt));
        }
        else
        {
            var value = fromShard.StringOf(source).ToArray();
            fromShard.Remove(source, Removal.Deleted);
            toShard.MakeRoom(toShard.AddString(to, toHash, value, expireAt, c.Now));
        }

        if (onlyIfAbsent)
        {
            c.Reply.Integer(1);
        }
        else
        {
            c.Reply.Ok();
        }
    }

    public static void Keys(ref CommandContext c)
    {
        var pattern = c.Arg(1).ToArray();
        var keys = new List<byte[]>();
        foreach (var shard in c.Store.Shards)
        {
            lock (shard.Lock)
            {
                foreach (var index in shard.LiveEntries())
                {
                    var expireAt = shard.ExpireAtOf(index);
                    var key = shard.KeyOf(index);
                    if ((expireAt == 0 || expireAt > c.Now) && GlobMatcher.IsMatch(pattern, key, ignoreCase: false))
                    {
                        keys.Add(key.ToArray());
                    }
                }
            }
        }

        c.Reply.ArrayHeader(keys.Count);
        foreach (var key in keys)
        {
            c.Reply.Bulk(key);
        }
    }

    /// <summary>
    /// SCAN cursor [MATCH p] [COUNT n] [TYPE t]. The cursor is the shard (high 32 bits) and a
    /// reverse-binary bucket cursor within it (Redis's scheme), so every key present for the whole
    /// iteration is returned even if the index grows between calls.
    /// </summary>
    public static void Scan(ref CommandContext c)
    {
        if (!ulong.TryParse(c.Arg(1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var cursor))
        {
            c.Reply.Error("ERR invalid cursor");
            return;
        }

        byte[]? pattern = null;
        string? type = null;
        long count = 10;
        for (var i = 2; i < c.Count; i++)
        {
            if (c.Is(i, "MATCH"u8) && i + 1 < c.Count)
            {
                pattern = c.Arg(++i).ToArray();
            }
            else if (c.Is(i, "COUNT"u8) && i + 1 < c.Count)
            {
                if (!c.TryLong(++i, out count))
                {
                    c.Reply.Error(Errors.NotInteger);
                    return;
                }

                if (count < 1)
                {
                    c.Reply.Error(Errors.Syntax);
                    return;
                }
            }
            else if (c.Is(i, "TYPE"u8) && i + 1 < c.Count)
            {
                type = c.Text(++i).ToLowerInvariant();
            }
            else
            {
                c.Reply.Error(Errors.Syntax);
                return;
            }
        }

        // A cursor past the last shard (hostile or stale) ends the walk, as an unknown cursor does in Redis.
        var shardIndex = (cursor >> 32) >= (ulong)c.Store.ShardCount ? c.Store.ShardCount : (int)(cursor >> 32);
        var bucketCursor = (uint)cursor;
        var found = new List<byte[]>();
        var visited = 0L;
        while (shardIndex < c.Store.ShardCount && visited < count)
        {
            var shard = c.Store.Shards[shardIndex];
            lock (shard.Lock)
            {
                var mask = (uint)shard.BucketCount - 1;
                do
                {
                    foreach (var index in shard.BucketEntries((int)(bucketCursor & mask)))
                    {
                        visited++;
                        var expireAt = shard.ExpireAtOf(index);
                        if (expireAt != 0 && expireAt <= c.Now)
                        {
                            continue;
                        }

                        var key = shard.KeyOf(index);
                        if ((pattern is null || GlobMatcher.IsMatch(pattern, key, ignoreCase: false))
                            && (type is null || type == TypeName(shard.KindOf(index))))
                        {
                            found.Add(key.ToArray());
                        }
                    }

                    bucketCursor = NextCursor(bucketCursor, mask);
                }
                while (bucketCursor != 0 && visited < count);
            }

            if (bucketCursor == 0)
            {
                shardIndex++;
            }
        }

        var next = shardIndex >= c.Store.ShardCount ? 0UL : ((ulong)shardIndex << 32) | bucketCursor;
        c.Reply.ArrayHeader(2);
        c.Reply.Bulk(System.Text.Encoding.ASCII.GetBytes(next.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        c.Reply.ArrayHeader(found.Count);
        foreach (var key in found)
        {
            c.Reply.Bulk(key);
        }
    }

    /// <summary>Redis's reverse-binary cursor increment: stable under table growth.</summary>
    internal static uint NextCursor(uint cursor, uint mask)
    {
        cursor |= ~mask;
        cursor = Reverse(cursor);
        cursor++;
        return Reverse(cursor);
    }

    private static uint Reverse(uint v)
    {
        v = ((v >> 1) & 0x55555555u) | ((v & 0x55555555u) << 1);
        v = ((v >> 2) & 0x33333333u) | ((v & 0x33333333u) << 2);
        v = ((v >> 4) & 0x0F0F0F0Fu) | ((v & 0x0F0F0F0Fu) << 4);
        v = ((v >> 8) & 0x00FF00FFu) | ((v & 0x00FF00FFu) << 8);
        return (v >> 16) | (v << 16);
    }

    public static void RandomKey(ref CommandContext c)
    {
        var store = c.Store;
        var start = Random.Shared.Next(store.ShardCount);
        for (var attempt = 0; attempt < store.ShardCount * 4; attempt++)
        {
            var shard = store.Shards[(start + attempt) % store.ShardCount];
            lock (shard.Lock)
            {
                var index = shard.RandomEntry();
                if (index < 0)
                {
                    continue;
                }

                var expireAt = shard.ExpireAtOf(index);
                if (expireAt != 0 && expireAt <= c.Now)
                {
                    shard.Remove(index, Removal.Expired);
                    continue;
                }

                c.Reply.Bulk(shard.KeyOf(index));
                return;
            }
        }

        c.Reply.Null();
    }

    private static readonly string[] ObjectSubcommands = ["ENCODING", "REFCOUNT", "FREQ", "IDLETIME"];

    /// <summary>OBJECT ENCODING|FREQ|IDLETIME|REFCOUNT key, OBJECT HELP.</summary>
    public static void Object(ref CommandContext c)
    {
        if (c.Is(1, "HELP"u8))
        {
            if (!c.SubcommandArity("object|help", 2))
            {
                return;
            }

            string[] help =
            [
                "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "ENCODING <key>", "    Return the kind of internal representation used in order to store the value", "    associated with a <key>.",
                "FREQ <key>", "    Return the access frequency index of the <key>. The returned integer is", "    proportional to the logarithm of the recent access frequency of the key.",
                "IDLETIME <key>", "    Return the idle time of the <key>, that is the approximated number of", "    seconds elapsed since the last access to the key.",
                "REFCOUNT <key>", "    Return the number of references of the value associated with the specified", "    <key>.",
                "HELP", "    Print this help.",
            ];
            c.Reply.ArrayHeader(help.Length);
            foreach (var line in help)
            {
                c.Reply.SimpleString(line);
            }

            return;
        }

        string? subcommand = null;
        foreach (var name in ObjectSubcommands)
        {
            if (System.Text.Ascii.EqualsIgnoreCase(c.Arg(1), name))
            {
                subcommand = name;
                break;
            }
        }

        if (subcommand is null)
        {
            c.Reply.Error(Errors.UnknownSubcommand("object", c.Text(1))); // before the key is looked at (as Redis)
            return;
        }

        if (!c.SubcommandArity("object|" + subcommand.ToLowerInvariant(), 3))
        {
            return;
        }

        var key = c.Arg(2);
        var hash = c.Store.HashOf(key);
        var shard = c.Store.ShardFor(hash);
        lock (shard.Lock)
        {
            var index = shard.Find(key, hash, c.Now, Lookup.Write);
            if (index < 0)
            {
                c.Reply.Null();
                return;
            }

            if (c.Is(1, "ENCODING"u8))
            {
                c.Reply.Bulk(EncodingOf(shard, index));
            }
            else if (c.Is(1, "REFCOUNT"u8))
            {
                c.Reply.Integer(1);
            }
            else if (c.Is(1, "FREQ"u8))
            {
                if (!shard.Policy.TracksFrequency)
                {
                    c.Reply.Error("ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.");
                    return;
                }

                c.Reply.Integer(LfuPolicy.Counter(shard.EntryAt(index).Access));
            }
            else if (c.Is(1, "IDLETIME"u8))
            {
                if (shard.Policy.TracksFrequency)
                {
                    c.Reply.Error("ERR An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.");
                    return;
                }

                c.Reply.Integer(Math.Max(0, CacheShard.Seconds(c.Now) - shard.EntryAt(index).Access));
            }
            else
            {
                c.Reply.Error(Errors.UnknownSubcommand("object", c.Text(1)));
            }
        }
    }

    internal static string TypeName(ValueKind kind) => kind == ValueKind.Hash ? "hash" : "string";

    private static string EncodingOf(CacheShard shard, int index)
    {
        if (shard.KindOf(index) == ValueKind.Hash)
        {
            return shard.HashOf(index).Encoding;
        }

        var value = shard.StringOf(index);
        if (value.Length <= 20 && RespNumbers.TryParseLong(value, out _))
        {
            return "int";
        }

        return value.Length <= 44 ? "embstr" : "raw";
    }
}
