using Infra.ShardRouter.Routing;

namespace Infra.ShardRouter.Tests;

/// <summary>
/// Fan-out merge: shard order without sort keys, SQLite's value order with them, stability, limits.
/// </summary>
public sealed class MergeTests
{
    private static readonly string[] Columns = ["id", "name", "score"];

    private static object?[] Row(params object?[] values) => values;

    private static List<object?[]> Merged(IReadOnlyList<IReadOnlyList<object?[]>> parts, int? limit, params (string Column, bool Descending)[] keys) =>
        Merge.Rows(Columns, parts, [.. keys.Select(k => new OrderKey(k.Column, k.Descending))], limit);

    private static object?[] Ids(List<object?[]> rows) => [.. rows.Select(r => r[0])];

    [Fact]
    public void Without_sort_keys_rows_are_concatenated_in_shard_order()
    {
        IReadOnlyList<object?[]>[] parts =
        [
            [Row(3L, "c", 1L), Row(1L, "a", 2L)],
            [],
            [Row(2L, "b", 3L)],
            [Row(9L, "z", 0L), Row(0L, "0", 9L)],
        ];
        Assert.Equal([3L, 1L, 2L, 9L, 0L], Ids(Merged(parts, null)));
        Assert.Equal([3L, 1L, 2L], Ids(Merged(parts, 3)));
        Assert.Equal([3L, 1L, 2L, 9L, 0L], Ids(Merged(parts, 5)));
        Assert.Equal([3L, 1L, 2L, 9L, 0L], Ids(Merged(parts, 100)));
        Assert.Empty(Merged(parts, 0));
        Assert.Empty(Merged([], null));
        Assert.Empty(Merged([[], []], 10));

        // The rows themselves are passed through, not copied.
        Assert.Same(parts[2][0], Merged(parts, null)[2]);
    }

    [Fact]
    public void Sort_keys_order_across_shards_ascending_and_descending()
    {
        IReadOnlyList<object?[]>[] parts =
        [
            [Row(1L, "b", 10L), Row(4L, "d", 40L)],
            [Row(2L, "a", 30L), Row(3L, "c", 20L)],
        ];
        Assert.Equal([1L, 2L, 3L, 4L], Ids(Merged(parts, null, ("id", false))));
        Assert.Equal([4L, 3L, 2L, 1L], Ids(Merged(parts, null, ("id", true))));
        Assert.Equal([2L, 1L, 3L, 4L], Ids(Merged(parts, null, ("name", false))));
        Assert.Equal([4L, 2L, 3L, 1L], Ids(Merged(parts, null, ("score", true))));

        // Column names match case-insensitively, as SQL names do.
        Assert.Equal([4L, 3L, 2L, 1L], Ids(Merged(parts, null, ("ID", true))));

        // The limit applies after sorting: the top rows over all shards, not the first shard's.
        Assert.Equal([4L, 3L], Ids(Merged(parts, 2, ("id", true))));
        Assert.Equal([1L], Ids(Merged(parts, 1, ("id", false))));
        Assert.Empty(Merged(parts, 0, ("id", false)));
        Assert.Equal(4, Merged(parts, 10, ("id", false)).Count);
    }

    [Fact]
    public void Later_keys_break_ties_of_earlier_ones()
    {
        IReadOnlyList<object?[]>[] parts =
        [
            [Row(1L, "x", 2L), Row(2L, "y", 1L)],
            [Row(3L, "x", 1L), Row(4L, "y", 2L), Row(5L, "x", 3L)],
        ];
        Assert.Equal([3L, 1L, 5L, 2L, 4L], Ids(Merged(parts, null, ("name", false), ("score", false))));
        Assert.Equal([5L, 1L, 3L, 4L, 2L], Ids(Merged(parts, null, ("name", false), ("score", true))));
        Assert.Equal([4L, 2L, 5L, 1L, 3L], Ids(Merged(parts, null, ("name", true), ("score", true))));
        Assert.Equal([2L, 4L, 3L, 1L, 5L], Ids(Merged(parts, null, ("name", true), ("score", false))));
    }

    [Fact]
    public void Equal_keys_keep_shard_order_then_row_order()
    {
        // Many equal keys, so an unstable sort would be caught.
        var parts = Enumerable.Range(0, 5)
            .Select(p => (IReadOnlyList<object?[]>)[.. Enumerable.Range(0, 40).Select(r => Row((long)(p * 100 + r), "same", (long)(r % 2)))])
            .ToArray();
        var asc = Merged(parts, null, ("name", false));
        Assert.Equal(Enumerable.Range(0, 5).SelectMany(p => Enumerable.Range(0, 40).Select(r => (object?)(long)(p * 100 + r))), Ids(asc));

        // Descending reverses the keys, not the tie order.
        var desc = Merged(parts, null, ("name", true));
        Assert.Equal(Ids(asc), Ids(desc));

        var byScore = Merged(parts, null, ("score", true));
        var expected = Enumerable.Range(0, 5).SelectMany(p => Enumerable.Range(0, 40).Where(r => r % 2 == 1).Select(r => (object?)(long)(p * 100 + r)))
            .Concat(Enumerable.Range(0, 5).SelectMany(p => Enumerable.Range(0, 40).Where(r => r % 2 == 0).Select(r => (object?)(long)(p * 100 + r))));
        Assert.Equal(expected, Ids(byScore));
    }

    [Fact]
    public void Values_order_as_in_sqlite_null_numbers_text_blobs()
    {
        // One row per shard, shuffled; the sort must put them in SQLite's order.
        object?[] ordered =
        [
            null,
            double.NegativeInfinity,
            long.MinValue,
            -1.5,
            -1L,
            0L,
            0.5,
            1L,
            1.5,
            2L,
            long.MaxValue,
            1e19,
            double.PositiveInfinity,
            "",
            "A",
            "B",
            "a",
            "ab",
            "b",
            "\u00e9",
            "\uffff",
            "\U0001F600",
            Array.Empty<byte>(),
            new byte[] { 0 },
            new byte[] { 0, 0 },
            new byte[] { 1 },
            new byte[] { 0xFF },
        ];
        var shuffled = ordered.Select((v, i) => (v, i)).OrderBy(x => (x.i * 7919) % ordered.Length).ToArray();
        IReadOnlyList<object?[]>[] parts = [.. shuffled.Select(x => (IReadOnlyList<object?[]>)[Row((long)x.i, "n", x.v)])];

        var asc = Merged(parts, null, ("score", false));
        Assert.Equal(Enumerable.Range(0, ordered.Length).Select(i => (object?)(long)i), Ids(asc));
        var desc = Merged(parts, null, ("score", true));
        Assert.Equal(Enumerable.Range(0, ordered.Length).Reverse().Select(i => (object?)(long)i), Ids(desc));

        for (var i = 0; i < ordered.Length; i++)
        {
            Assert.Equal(0, Merge.Compare(ordered[i], ordered[i]));
            for (var j = i + 1; j < ordered.Length; j++)
            {
                Assert.True(Merge.Compare(ordered[i], ordered[j]) < 0, $"{Show(ordered[i])} < {Show(ordered[j])}");
                Assert.True(Merge.Compare(ordered[j], ordered[i]) > 0, $"{Show(ordered[j])} > {Show(ordered[i])}");
            }
        }
    }

    private static string Show(object? value) => value switch
    {
        null => "NULL",
        byte[] b => "x'" + Convert.ToHexString(b) + "'",
        string s => "'" + string.Join(" ", s.EnumerateRunes().Select(r => $"U+{r.Value:X4}")) + "'",
        _ => $"{value} ({value.GetType().Name})",
    };

    [Fact]
    public void Integers_and_reals_compare_by_value()
    {
        Assert.True(Merge.Compare(1L, 1.5) < 0);
        Assert.True(Merge.Compare(1.5, 2L) < 0);
        Assert.True(Merge.Compare(2L, 1.5) > 0);
        Assert.Equal(0, Merge.Compare(2L, 2.0));
        Assert.Equal(0, Merge.Compare(2.0, 2L));
        Assert.Equal(0, Merge.Compare(-0.0, 0L));
        Assert.Equal(0, Merge.Compare(0.0, -0.0));
        Assert.True(Merge.Compare(-3L, -2.5) < 0);

        // Beyond 2^53 a double cannot hold every integer: the comparison must still be exact.
        const long twoTo53 = 1L << 53;
        Assert.Equal(0, Merge.Compare(twoTo53, (double)twoTo53));
        Assert.Equal(0, Merge.Compare((double)twoTo53, twoTo53));
        Assert.True(Merge.Compare(twoTo53 + 1, (double)twoTo53) > 0);
        Assert.True(Merge.Compare((double)twoTo53, twoTo53 + 1) < 0);
        Assert.True(Merge.Compare(twoTo53 - 1, (double)twoTo53) < 0);
        Assert.True(Merge.Compare(123456789012345678L, 123456789012345680.0) < 0);
        Assert.True(Merge.Compare(long.MaxValue, 9223372036854775807.0) < 0); // the double is 2^63
        Assert.Equal(0, Merge.Compare(long.MinValue, -9223372036854775808.0));
        Assert.True(Merge.Compare(long.MinValue, -9.3e18) > 0);
        Assert.True(Merge.Compare(long.MaxValue, 1e300) < 0);
        Assert.True(Merge.Compare(long.MinValue, -1e300) > 0);

        IReadOnlyList<object?[]>[] parts = [[Row(1L, "", 2L)], [Row(2L, "", 1.5)], [Row(3L, "", 1L)], [Row(4L, "", 2.0)]];
        Assert.Equal([3L, 2L, 1L, 4L], Ids(Merged(parts, null, ("score", false))));
        Assert.Equal([1L, 4L, 2L, 3L], Ids(Merged(parts, null, ("score", true))));
    }

    [Fact]
    public void Text_compares_by_code_point_as_utf8_bytes_do()
    {
        // UTF-16 order would put the surrogate pair (0xD83D...) before U+FFFF; SQLite's memcmp of UTF-8
        // puts U+1F600 after it.
        Assert.True(Merge.Compare("\uffff", "\U0001F600") < 0);
        Assert.True(Merge.Compare("\U0001F600", "\uffff") > 0);
        Assert.True(Merge.Compare("\ue000", "\U00010000") < 0);
        Assert.True(string.CompareOrdinal("\uffff", "\U0001F600") > 0);

        // Not culture order: upper case before lower case, accents after ASCII.
        Assert.True(Merge.Compare("Z", "a") < 0);
        Assert.True(Merge.Compare("e", "\u00e9") < 0);
        Assert.True(Merge.Compare("\u00e9", "f") > 0);

        // Prefixes come first.
        Assert.True(Merge.Compare("ab", "abc") < 0);
        Assert.True(Merge.Compare("abc", "ab") > 0);
        Assert.True(Merge.Compare("", "a") < 0);
        Assert.Equal(0, Merge.Compare("abc", new string("abc".AsSpan())));
        Assert.Equal(0, Merge.Compare("\U0001F600", "\U0001F600"));
    }

    [Fact]
    public void Blobs_compare_bytewise_shorter_first_on_a_common_prefix()
    {
        Assert.True(Merge.Compare(new byte[] { 1, 2 }, new byte[] { 1, 3 }) < 0);
        Assert.True(Merge.Compare(new byte[] { 0x7F }, new byte[] { 0x80 }) < 0);
        Assert.True(Merge.Compare(new byte[] { 1, 2 }, new byte[] { 1, 2, 0 }) < 0);
        Assert.True(Merge.Compare(new byte[] { 2 }, new byte[] { 1, 9, 9 }) > 0);
        Assert.Equal(0, Merge.Compare(new byte[] { 5, 6 }, new byte[] { 5, 6 }));

        // Every blob sorts after every text and number.
        Assert.True(Merge.Compare(Array.Empty<byte>(), "\U0010FFFF") > 0);
        Assert.True(Merge.Compare(Array.Empty<byte>(), double.MaxValue) > 0);
    }

    [Fact]
    public void Nulls_sort_first_ascending_and_last_descending()
    {
        IReadOnlyList<object?[]>[] parts = [[Row(1L, "a", 5L), Row(2L, "b", null)], [Row(3L, "c", null), Row(4L, "d", -5L)]];
        Assert.Equal([2L, 3L, 4L, 1L], Ids(Merged(parts, null, ("score", false))));
        Assert.Equal([1L, 4L, 2L, 3L], Ids(Merged(parts, null, ("score", true))));
    }

    [Fact]
    public void An_unknown_sort_column_is_a_bad_request()
    {
        IReadOnlyList<object?[]>[] parts = [[Row(1L, "a", 1L)]];
        var error = Assert.Throws<RouterException>(() => Merged(parts, null, ("id", false), ("missing", true)));
        Assert.Equal("BadRequest", error.Code);
        Assert.Equal(400, error.Status);
        Assert.Contains("'missing'", error.Message, StringComparison.Ordinal);
        Assert.Contains("id, name, score", error.Message, StringComparison.Ordinal);

        // Even when no shard returned rows.
        Assert.Equal("BadRequest", Assert.Throws<RouterException>(() => Merged([], 0, ("nope", false))).Code);
    }
}
