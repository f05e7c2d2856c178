using System.Buffers;
using System.Text;
using Infra.CacheServer.Storage;

namespace Infra.CacheServer.Commands;

/// <summary>String commands: GET, SET and its family, counters, ranges.</summary>
internal static class StringCommands
{
    public static void Get(ref CommandContext c)
    {
        var key = c.Arg(1);
        var hash = c.Store.HashOf(key);
        var shard = c.Store.ShardFor(hash);
        lock (shard.Lock)
        {
            var index = FindStringForReply(ref c, shard, key, hash);
            if (index >= 0)
            {
                c.Reply.Bulk(shard.StringOf(index));
            }
        }
    }

    /// <summary>SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL].</summary>
    public static void Set(ref CommandContext c)
    {
        bool nx = false, xx = false, get = false, keepTtl = false;
        ExpireUnit? expireUnit = null;
        var expireArg = 0;
        for (var i = 3; i < c.Count; i++)
        {
            if (c.Is(i, "NX"u8) && !xx)
            {
                nx = true;
            }
            else if (c.Is(i, "XX"u8) && !nx)
            {
                xx = true;
            }
            else if (c.Is(i, "GET"u8))
            {
                get = true;
            }
            else if (c.Is(i, "KEEPTTL"u8) && expireUnit is null)
            {
                keepTtl = true;
            }
            else if (!keepTtl && i + 1 < c.Count && ExpireOption(ref c, i) is { } unit && (expireUnit is null || expireUnit == unit))
            {
                expireUnit = unit; // the same option again: the last one counts (as Redis)
                expireArg = ++i;
            }
            else
            {
                c.Reply.Error(Errors.Syntax);
                return;
            }
        }

        // The options' syntax first, then the time (as Redis: "EX 0 NX XX" is a syntax error).
        long expireAt = 0;
        if (expireUnit is { } chosen && !ParseExpire(ref c, expireArg, chosen, "set", out expireAt))
        {
            return;
        }

        SetString(ref c, c.Arg(1), c.Arg(2), nx, xx, get, keepTtl, expireAt, replyOk: true);
    }

    public static void SetNx(ref CommandContext c) => SetString(ref c, c.Arg(1), c.Arg(2), nx: true, xx: false, get: false, keepTtl: false, 0, replyOk: false);

    public static void SetEx(ref CommandContext c) => SetWithTtl(ref c, ExpireUnit.Seconds, "setex");

    public static void PSetEx(ref CommandContext c) => SetWithTtl(ref c, ExpireUnit.Milliseconds, "psetex");

    public static void GetSet(ref CommandContext c) => SetString(ref c, c.Arg(1), c.Arg(2), false, false, get: true, keepTtl: false, 0, replyOk: false);

    public static void GetDel(ref CommandContext c)
    {
        var key = c.Arg(1);
        var hash = c.Store.HashOf(key);
        var shard = c.Store.ShardFor(hash);
        lock (shard.Lock)
        {
            var index = FindStringForReply(ref c, shard, key, hash);
            if (index < 0)
            {
                return;
            }

            c.Reply.Bulk(shard.StringOf(index));
            shard.Remove(index, Removal.Deleted);
        }
    }

    /// <summary>GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST].</summary>
    public static void GetEx(ref CommandContext c)
    {
        long expireAt = -1;
        var persist = false;
        ExpireUnit? expireUnit = null;
        var expireArg = 0;
        for (var i = 2; i < c.Count; i++)
        {
            if (c.Is(i, "PERSIST"u8) && expireUnit is null)
            {
                persist = true;
            }
            else if (!persist && i + 1 < c.Count && ExpireOption(ref c, i) is { } unit && (expireUnit is null || expireUnit == unit))
            {
                expireUnit = unit; // the same option again: the last one counts (as Redis)
                expireArg = ++i;
            }
            else
            {
                c.Reply.Error(Errors.Syntax);
                return;
            }
        }

        var key = c.Arg(1);
        var hash = c.Store.HashOf(key);
        var shard = c.Store.ShardFor(hash);
        lock (shard.Lock)
        {
            // The key before the time (as Redis): a missing key is nil and a hash WRONGTYPE whatever the time says.
            var index = FindStringForReply(ref c, shard, key, hash);
            if (index < 0 || (expireUnit is { } chosen && !ParseExpire(ref c, expireArg, chosen, "getex", out expireAt)))
            {
                return;
            }

            c.Reply.Bulk(shard.StringOf(index));
            if (persist)
            {
                shard.SetExpire(index, 0);
            }
            else if (expireAt >= 0)
            {
                shard.SetExpire(index, expireAt);
            }
        }
    }

    public static void MGet(ref CommandContext c)
    {
        c.Reply.ArrayHeader(c.Count - 1);
        using var locks = ShardLocks.ForKeys(ref c, 1, 1, c.Count);
        for (var i = 1; i < c.Count; i++)
        {
            var key = c.Arg(i);
            var hash = c.Store.HashOf(key);
            var shard = c.Store.ShardFor(hash);
            var index = shard.Find(key, hash, c.Now, Lookup.Read);
            if (index < 0 || shard.KindOf(index) == ValueKind.Hash)
            {
                c.Reply.Null();
            }
            else
            {
                c.Reply.Bulk(shard.StringOf(index));
            }
        }
    }

    public static void MSet(ref CommandContext c) => MSetCore(ref c, onlyIfNoneExist: false);

    public static void MSetNx(ref CommandContext c) => MSetCore(ref c, onlyIfNoneExist: true);

    private static void MSetCore(ref CommandContext c, bool onlyIfNoneExist)
    {
        if (c.Count % 2 == 0)
        {
            c.Reply.Error(Errors.Arity(c.Spec.LowerName));
            return;
        }

        using var locks = ShardLocks.ForKeys(ref c, 1, 2, c.Count);
        if (onlyIfNoneExist)
        {
            for (var i = 1; i < c.Count; i += 2)
            {
                var key = c.Arg(i);
                var hash = c.Store.HashOf(key);
                if (c.Store.ShardFor(hash).Find(key, hash, c.Now, Lookup.Write) >= 0)
                {
                    c.Reply.Integer(0);
                    return;
                }
            }
        }

        // All or nothing: make room for every pair first (Redis checks memory once, before running), each
        // time for the sum of the pairs so far, whatever their shards: maxmemory is the store's, so the
        // pairs together must fit, not each one alone nor each shard's part.
        long reserved = 0;
        for (var i = 1; i < c.Count; i += 2)
        {
            var key = c.Arg(i);
            var hash = c.Store.HashOf(key);
            var shard = c.Store.ShardFor(hash);
            var index = shard.Find(key, hash, c.Now, Lookup.Write);
            reserved += ExtraCost(shard, index, key.Length, c.Arg(i + 1).Length);
            if (!shard.Reserve(reserved, index))
            {
                c.Reply.Error(Errors.Oom);
                return;
            }
        }

        for (var i = 1; i < c.Count; i += 2)
        {
            var key = c.Arg(i);
            var hash = c.Store.HashOf(key);
            var shard = c.Store.ShardFor(hash);
            Store(shard, shard.Find(key, hash, c.Now, Lookup.Write), key, hash, c.Arg(i + 1), expireAt: 0, keepTtl: false, c.Now);
        }

        if (onlyIfNoneExist)
        {
            c.Reply.Integer(1);
        }
        else
        {
            c.Reply.Ok();
        }
    }

    public static void Incr(ref CommandContext c) => IncrBy(ref c, 1);

    public static void Decr(ref CommandContext c) => IncrBy(ref c, -1);

    public static void IncrByCommand(ref CommandContext c)
    {
        if (!c.TryLong(2, out var delta))
        {
            c.Reply.Error(Errors.NotInteger);
            return;
        }

        IncrBy(ref c, delta);
    }

    public static void DecrByCommand(ref CommandContext c)
    {
        if (!c.TryLong(2, out var delta) || delta == long.MinValue)
        {
            c.Reply.Error(delta == long.MinValue ? "ERR decrement would overflow" : Errors.NotInteger);
            return;
        }

        IncrBy(ref c, -delta);
    }

    private static void IncrBy(ref CommandContext c, long delta)
    {
        var key = c.Arg(1);
        var hash = c.Store.HashOf(key);
        var shard = c.Store.ShardFor(hash);
        lock (shard.Lock)
        {
            if (!TryFindString(ref c, shard, key, hash, Lookup.Write, out var index))
            {
                return;
            }

            long current = 0;
            if (index >= 0 && !RespNumbers.TryParseLong(shard.StringOf(index), out current))
            {
                c.Reply.Error(Errors.NotInteger);
                return;
            }

            if (!TryIncrement(ref c, current, delta, out var result))
            {
                return;
            }

            Span<byte> digits = stackalloc byte[20];
            var text = digits[..RespNumbers.Format(result, digits)];
            if (!ReserveOrOom(ref c, shard, index, key.Length, text.Length))
            {
                return;
            }

            Store(shard, index, key, hash, text, 0, keepTtl: true, c.Now);
            c.Reply.Integer(result);
        }
    }

    public static void IncrByFloat(ref CommandContext c)
    {
        var key = c.Arg(1);
        var hash = c.Store.HashOf(key);
        var shard = c.Store.ShardFor(hash);
        lock (shard.Lock)
        {
            if (!TryFindString(ref c, shard, key, hash, Lookup.Write, out var index))
            {
                return;
            }

            // The key's type, then its value, then the increment (Redis's order of errors).
            var current = default(LongDouble);
            if ((index >= 0 && !LongDouble.TryParse(shard.StringOf(index), out current)) || !LongDouble.TryParse(c.Arg(2), out var delta))
            {
                c.Reply.Error(Errors.NotFloat);
                return;
            }

            if (!TryIncrement(ref c, current, delta, out var result))
            {
                return;
            }

            var text = Encoding.ASCII.GetBytes(result.ToString());
            if (!ReserveOrOom(ref c, shard, index, key.Length, text.Length))
            {
                return;
            }

            Store(shard, index, key, hash, text, 0, keepTtl: true, c.Now);
            c.Reply.Bulk(text);
        }
    }

    public static void Append(ref CommandContext c)
    {
        var key = c.Arg(1);
        var suffix = c.Arg(2);
        var hash = c.Store.HashOf(key);
        var shard = c.Store.ShardFor(hash);
        lock (shard.Lock)
        {
            if (!TryFindString(ref c, shard, key, hash, Lookup.Write, out var index))
            {
                return;
            }

            var length = (long)(index >= 0 ? shard.StringOf(index).Length : 0) + suffix.Length;
            if (length > c.Server.Options.MaxBulkLength)
            {
                c.Reply.Error(Errors.StringTooLarge);
                return;
            }

            if (!ReserveOrOom(ref c, shard, index, key.Length, (int)length))
            {
                return;
            }

            var combined = ArrayPool<byte>.Shared.Rent((int)length);
            try
            {
                var current = index >= 0 ? shard.StringOf(index) : [];
                current.CopyTo(combined);
                suffix.CopyTo(combined.AsSpan(current.Length));
                Store(shard, index, key, hash, combined.AsSpan(0, (int)length), 0, keepTtl: true, c.Now);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(combined);
            }

            c.Reply.Integer(length);
        }
    }

    public static void StrLen(ref CommandContext c)
    {
        var key = c.Arg(1);
        var hash = c.Store.HashOf(key);
        var shard = c.Store.ShardFor(hash);
        lock (shard.Lock)
        {
            if (!TryFindString(ref c, shard, key, hash, Lookup.Read, out var index))
            {
                return;
            }

            c.Reply.Integer(index < 0 ? 0 : shard.StringOf(index).Length);
        }
    }

    public static void GetRange(ref CommandContext c)
    {
        if (!c.TryLong(2, out var start) || !c.TryLong(3, out var end))
        {
            c.Reply.Error(Errors.NotInteger);
            return;
        }

        var key = c.Arg(1);
        var hash = c.Store.HashOf(key);
        var shard = c.Store.ShardFor(hash);
        lock (shard.Lock)
        {
            if (!TryFindString(ref c, shard, key, hash, Lookup.Read, out var index))
            {
                return;
            }

            var value = index < 0 ? [] : shard.StringOf(index);
            long length = value.Length;
            if (start < 0 && end < 0 && start > end)
            {
                c.Reply.Bulk([]);
                return;
            }

            if (start < 0)
            {
                start = Math.Max(0, length + start);
            }

            if (end < 0)
            {
                end = Math.Max(0, length + end);
            }

            end = Math.Min(end, length - 1);
            c.Reply.Bulk(length == 0 || start > end ? [] : value.Slice((int)start, (int)(end - start + 1)));
        }
    }

    public static void SetRange(ref CommandContext c)
    {
        if (!c.TryLong(2, out var offset))
        {
            c.Reply.Error(Errors.NotInteger);
            return;
        }

        if (offset < 0)
        {
            c.Reply.Error(Errors.OffsetRange);
            return;
        }

        var key = c.Arg(1);
        var patch = c.Arg(3);
        var hash = c.Store.HashOf(key);
        var shard = c.Store.ShardFor(hash);
        lock (shard.Lock)
        {
            if (!TryFindString(ref c, shard, key, hash, Lookup.Write, out var index))
            {
                return;
            }

            var old = index >= 0 ? shard.StringOf(index) : [];
            if (patch.IsEmpty)
            {
                c.Reply.Integer(old.Length);
                return;
            }

            // offset + patch.Length cannot overflow once offset is known to be within the limit.
            if (offset > c.Server.Options.MaxBulkLength - patch.Length)
            {
                c.Reply.Error(Errors.StringTooLarge);
                return;
            }

            var length = Math.Max(old.Length, offset + patch.Length);
            if (length > c.Server.Options.MaxBulkLength)
            {
                c.Reply.Error(Errors.StringTooLarge);
                return;
            }

            if (!ReserveOrOom(ref c, shard, index, key.Length, (int)length))
            {
                return;
            }

            var combined = ArrayPool<byte>.Shared.Rent((int)length);
            try
            {
                var current = index >= 0 ? shard.StringOf(index) : [];
                current.CopyTo(combined);
                combined.AsSpan(current.Length, (int)length - current.Length).Clear();
                patch.CopyTo(combined.AsSpan((int)offset));
                Store(shard, index, key, hash, combined.AsSpan(0, (int)length), 0, keepTtl: true, c.Now);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(combined);
            }

            c.Reply.Integer(length);
        }
    }

    // ---- shared -------------------------------------------------------------------------------------

    internal enum ExpireUnit
    {
        Seconds,
        Milliseconds,
        UnixSeconds,
        UnixMilliseconds,
    }

    private static ExpireUnit? ExpireOption(ref CommandContext c, int index) =>
        c.Is(index, "EX"u8) ? ExpireUnit.Seconds
        : c.Is(index, "PX"u8) ? ExpireUnit.Milliseconds
        : c.Is(index, "EXAT"u8) ? ExpireUnit.UnixSeconds
        : c.Is(index, "PXAT"u8) ? ExpireUnit.UnixMilliseconds
        : null;

    /// <summary>Parses a positive expiry into absolute Unix milliseconds; replies with the error if not.</summary>
    internal static bool ParseExpire(ref CommandContext c, int index, ExpireUnit unit, string command, out long expireAt)
    {
        expireAt = 0;
        if (!c.TryLong(index, out var value))
        {
            c.Reply.Error(Errors.NotInteger);
            return false;
        }

        if (value <= 0 || !TryAbsolute(value, unit, c.Now, out expireAt))
        {
            c.Reply.Error(Errors.InvalidExpire(command));
            return false;
        }

        return true;
    }

    internal static bool TryAbsolute(long value, ExpireUnit unit, long nowMs, out long expireAt)
    {
        expireAt = 0;
        try
        {
            expireAt = unit switch
            {
                ExpireUnit.Seconds => checked((value * 1000) + nowMs),
                ExpireUnit.Milliseconds => checked(value + nowMs),
                ExpireUnit.UnixSeconds => checked(value * 1000),
                _ => value,
            };
            return true;
        }
        catch (OverflowException)
        {
            return false;
        }
    }

    private static void SetWithTtl(ref CommandContext c, ExpireUnit unit, string command)
    {
        if (!ParseExpire(ref c, 2, unit, command, out var expireAt))
        {
            return;
        }

        SetString(ref c, c.Arg(1), c.Arg(3), false, false, false, false, expireAt, replyOk: true);
    }

    /// <summary>The core of SET and its relatives.</summary>
    private static void SetString(ref CommandContext c, ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, bool nx, bool xx, bool get, bool keepTtl, long expireAt, bool replyOk)
    {
        var hash = c.Store.HashOf(key);
        var shard = c.Store.ShardFor(hash);
        lock (shard.Lock)
        {
            var index = shard.Find(key, hash, c.Now, get ? Lookup.Read : Lookup.Write);
            if (get && index >= 0 && shard.KindOf(index) == ValueKind.Hash)
            {
                c.Reply.Error(Errors.WrongType);
                return;
            }

            if ((nx && index >= 0) || (xx && index < 0))
            {
                if (get)
                {
                    WriteValueOrNull(ref c, shard, index);
                }
                else if (replyOk)
                {
                    c.Reply.Null();
                }
                else
                {
                    c.Reply.Integer(0);
                }

                return;
            }

            if (!ReserveOrOom(ref c, shard, index, key.Length, value.Length))
            {
                return;
            }

            if (get)
            {
                WriteValueOrNull(ref c, shard, index);
            }

            Store(shard, index, key, hash, value, expireAt, keepTtl, c.Now);
            if (!get)
            {
                if (replyOk)
                {
                    c.Reply.Ok();
                }
                else
                {
                    c.Reply.Integer(1);
                }
            }
        }
    }

    /// <summary>
    /// The entry of a string key being read (GET, GETDEL, GETEX), or -1 after answering nil (no such
    /// key) or WRONGTYPE (a hash). Caller holds the shard's lock.
    /// </summary>
    /// <summary>current + delta; false, with Redis's overflow error sent, when it leaves the 64-bit range (INCRBY, HINCRBY).</summary>
    internal static bool TryIncrement(ref CommandContext c, long current, long delta, out long result)
    {
        result = current + delta;
        if ((delta > 0 && current > long.MaxValue - delta) || (delta < 0 && current < long.MinValue - delta))
        {
            c.Reply.Error(Errors.Overflow);
            return false;
        }

        return true;
    }

    /// <summary>current + delta; false, with Redis's NaN-or-infinity error sent, when the sum is not finite (INCRBYFLOAT, HINCRBYFLOAT).</summary>
    internal static bool TryIncrement(ref CommandContext c, LongDouble current, LongDouble delta, out LongDouble result)
    {
        result = current + delta;
        if (result.IsInfinity)
        {
            c.Reply.Error(Errors.NaNOrInfinity);
            return false;
        }

        return true;
    }

    /// <summary>Makes room for the new value (evicting by policy); false, with Redis's OOM error sent, when it cannot.</summary>
    private static bool ReserveOrOom(ref CommandContext c, CacheShard shard, int index, int keyLength, int valueLength)
    {
        if (shard.Reserve(ExtraCost(shard, index, keyLength, valueLength), index))
        {
            return true;
        }

        c.Reply.Error(Errors.Oom);
        return false;
    }

    /// <summary>Finds a key that must hold a string (or be missing: index -1); false, with WRONGTYPE sent, when it holds a hash.</summary>
    private static bool TryFindString(ref CommandContext c, CacheShard shard, ReadOnlySpan<byte> key, int hash, Lookup lookup, out int index)
    {
        index = shard.Find(key, hash, c.Now, lookup);
        if (index >= 0 && shard.KindOf(index) == ValueKind.Hash)
        {
            c.Reply.Error(Errors.WrongType);
            return false;
        }

        return true;
    }

    private static int FindStringForReply(ref CommandContext c, CacheShard shard, ReadOnlySpan<byte> key, int hash)
    {
        var index = shard.Find(key, hash, c.Now, Lookup.Read);
        if (index < 0)
        {
            c.Reply.Null();
        }
        else if (shard.KindOf(index) == ValueKind.Hash)
        {
            c.Reply.Error(Errors.WrongType);
            index = -1;
        }

        return index;
    }

    private static void WriteValueOrNull(ref CommandContext c, CacheShard shard, int index)
    {
        if (index < 0)
        {
            c.Reply.Null();
        }
        else
        {
            c.Reply.Bulk(shard.StringOf(index));
        }
    }

    /// <summary>
    /// Writes a string under a key whose entry is <paramref name="index"/> (-1 if absent), replacing a
    /// value of any type. <paramref name="keepTtl"/> keeps an existing TTL; otherwise the TTL becomes
    /// <paramref name="expireAt"/> (0 = none). Caller holds the lock.
    /// </summary>
    internal static int Store(CacheShard shard, int index, ReadOnlySpan<byte> key, int hash, ReadOnlySpan<byte> value, long expireAt, bool keepTtl, long now)
    {
        if (index >= 0 && shard.KindOf(index) == ValueKind.Hash)
        {
            var ttl = shard.ExpireAtOf(index);
            shard.Remove(index, Removal.Deleted);
            index = -1;
            if (keepTtl)
            {
                expireAt = ttl;
            }
        }

        if (index < 0)
        {
            index = shard.AddString(key, hash, value, keepTtl ? 0 : expireAt, now);
        }
        else
        {
            shard.ReplaceString(index, value, now);
            if (!keepTtl)
            {
                shard.SetExpire(index, expireAt);
            }
        }

        shard.MakeRoom(index);
        return index;
    }

    /// <summary>How much more the shard will hold after writing this string (for the pre-write eviction).</summary>
    internal static long ExtraCost(CacheShard shard, int existing, int keyLength, int valueLength) =>
        Math.Max(0, shard.CostOfNewString(keyLength, valueLength) - (existing >= 0 ? shard.CostOf(existing) : 0));
}
