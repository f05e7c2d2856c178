namespace Infra.ShardRouter.Routing;

/// <summary>
/// Merges the rows of a fan-out: concatenated in shard order, or — when the request names sort
/// columns — ordered as SQLite orders values (NULL, then numbers, then text by bytes, then blobs),
/// then cut to the limit. Each shard's rows may already be sorted (the query's own ORDER BY); the
/// merge does not rely on it.
/// </summary>
internal static class Merge
{
    public static List<object?[]> Rows(IReadOnlyList<string> columns, IReadOnlyList<IReadOnlyList<object?[]>> parts, IReadOnlyList<OrderKey> orderBy, int? limit)
    {
        var total = parts.Sum(p => p.Count);
        var rows = new List<object?[]>(limit is { } l ? Math.Min(l, total) : total);
        if (orderBy.Count == 0)
        {
            foreach (var part in parts)
            {
                foreach (var row in part)
                {
                    if (limit is { } max && rows.Count >= max)
                    {
                        return rows;
                    }

                    rows.Add(row);
                }
            }

            return rows;
        }

        var keys = new (int Index, bool Descending)[orderBy.Count];
        for (var i = 0; i < orderBy.Count; i++)
        {
            var index = IndexOf(columns, orderBy[i].Column);
            keys[i] = index >= 0 ? (index, orderBy[i].Descending) : throw RouterException.Bad($"orderBy names column '{orderBy[i].Column}', which the query does not return (columns: {string.Join(", ", columns)})");
        }

        var all = new List<(object?[] Row, int Part, int At)>(total);
        for (var p = 0; p < parts.Count; p++)
        {
            for (var r = 0; r < parts[p].Count; r++)
            {
                all.Add((parts[p][r], p, r));
            }
        }

        // Stable: equal rows keep shard order, then their order within the shard.
        all.Sort((a, b) =>
        {
            foreach (var (index, descending) in keys)
            {
                var c = Compare(a.Row[index], b.Row[index]);
                if (c != 0)
                {
                    return descending ? -c : c;
                }
            }

            return a.Part != b.Part ? a.Part.CompareTo(b.Part) : a.At.CompareTo(b.At);
        });
        foreach (var (row, _, _) in limit is { } n ? all.Take(n) : all)
        {
            rows.Add(row);
        }

        return rows;
    }

    private static int IndexOf(IReadOnlyList<string> columns, string name)
    {
        for (var i = 0; i < columns.Count; i++)
        {
            if (string.Equals(columns[i], name, StringComparison.OrdinalIgnoreCase))
            {
                return i;
            }
        }

        return -1;
    }

    /// <summary>SQLite's order of values under the BINARY collation.</summary>
    public static int Compare(object? a, object? b)
    {
        var ra = Rank(a);
        var rb = Rank(b);
        if (ra != rb)
        {
            return ra.CompareTo(rb);
        }

        return (a, b) switch
        {
            (null, null) => 0,
            (long x, long y) => x.CompareTo(y),
            (long x, double y) => CompareMixed(x, y),
            (double x, long y) => -CompareMixed(y, x),
            (double x, double y) => x.CompareTo(y),
            (string x, string y) => CompareUtf8(x, y),
            (byte[] x, byte[] y) => x.AsSpan().SequenceCompareTo(y),
            _ => 0,
        };
    }

    private static int Rank(object? value) => value switch
    {
        null => 0,
        long or double => 1,
        string => 2,
        _ => 3,
    };

    private static int CompareMixed(long x, double y)
    {
        if (double.IsNaN(y))
        {
            return 1;
        }

        // Exact, as SQLite compares: converting x to double (or y to decimal) rounds beyond 2^53.
        if (y < -9223372036854775808.0)
        {
            return 1;
        }

        if (y >= 9223372036854775808.0)
        {
            return -1;
        }

        var whole = (long)y;
        return x != whole ? x.CompareTo(whole) : 0.0.CompareTo(y - whole);
    }

    /// <summary>Text compares as its UTF-8 bytes (memcmp), which is code-point order.</summary>
    private static int CompareUtf8(string x, string y)
    {
        var ex = x.EnumerateRunes();
        var ey = y.EnumerateRunes();
        while (true)
        {
            var hx = ex.MoveNext();
            var hy = ey.MoveNext();
            if (!hx || !hy)
            {
                return hx ? 1 : hy ? -1 : 0;
            }

            var c = ex.Current.Value.CompareTo(ey.Current.Value);
            if (c != 0)
            {
                return c;
            }
        }
    }
}
