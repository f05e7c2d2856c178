using System.Globalization;
using System.Text;

namespace Infra.Core.Placement;

/// <summary>
/// How a shard-key value becomes the bytes that hash to a slot, the same everywhere: in the router
/// (a key from a request) and inside a data node (the <c>infra_slot(column, slots)</c> SQL function
/// that selects a slot's rows when it moves). Text is its UTF-8; integers (and doubles that are whole
/// numbers) are their decimal text, so <c>42</c> and <c>"42"</c> land together; other doubles are their
/// round-trip text; blobs are their bytes. Null has no slot.
/// </summary>
public static class ShardKey
{
    public static byte[]? Bytes(object? value) => value switch
    {
        null or DBNull => null,
        string s => Encoding.UTF8.GetBytes(s),
        long l => Encoding.ASCII.GetBytes(l.ToString(CultureInfo.InvariantCulture)),
        int i => Encoding.ASCII.GetBytes(i.ToString(CultureInfo.InvariantCulture)),
        double d when Math.Floor(d) == d && Math.Abs(d) < 9.2e18 => Encoding.ASCII.GetBytes(((long)d).ToString(CultureInfo.InvariantCulture)),
        double d => Encoding.ASCII.GetBytes(d.ToString("R", CultureInfo.InvariantCulture)),
        byte[] b => b,
        bool b => Encoding.ASCII.GetBytes(b ? "1" : "0"),
        _ => throw new ArgumentException($"a shard key cannot be a {value.GetType().Name}"),
    };

    /// <summary>
    /// <c>infra_slot("column", slots)</c> with the count written out: the expression of a sharded table's
    /// slot index (the router creates it) and of every query that selects a slot's rows (the data node's
    /// slot copy, the router's slot deletes). SQLite uses an expression index only for an identical
    /// expression, and a parameter for the count would not be one, so both sides write it here.
    /// </summary>
    public static string SlotSql(string column, int slots) =>
        $"infra_slot(\"{column.Replace("\"", "\"\"", StringComparison.Ordinal)}\", {slots.ToString(CultureInfo.InvariantCulture)})";

    /// <summary>The slot of a key value, or -1 for null.</summary>
    public static int Slot(object? value, int slots = SlotTable.DefaultSlots) =>
        Bytes(value) is { } bytes ? SlotTable.SlotOf(bytes, slots) : -1;
}
