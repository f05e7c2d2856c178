using System.Buffers;
using MessagePack;

namespace Infra.Core.Framing;

/// <summary>
/// Reads any MessagePack value into plain objects — null, bool, long, ulong, double, string, byte[],
/// <see cref="List{T}"/> of object, <see cref="Dictionary{TKey, TValue}"/> of string to object — with a
/// nesting limit, so hostile input fails with <see cref="InvalidDataException"/> instead of a stack
/// overflow or a huge allocation. Maps must have string keys.
/// </summary>
public static class MessagePackValues
{
    public const int MaxDepth = 16;

    /// <summary>
    /// Whether <paramref name="ex"/> is what MessagePack's reader throws on bytes that are not valid
    /// MessagePack: a bad code, a value cut short, a number out of range, or a string/binary length past
    /// the end of the buffer (ArgumentOutOfRange: a length of 0xffffffff is a negative int to the reader).
    /// Every parser of untrusted frames catches exactly these.
    /// </summary>
    public static bool IsMalformed(Exception ex) => ex is MessagePackSerializationException or EndOfStreamException or OverflowException or ArgumentOutOfRangeException;

    /// <summary>The single value in <paramref name="body"/>; bytes after it are an error.</summary>
    public static object? ReadWhole(ReadOnlySequence<byte> body)
    {
        var reader = new MessagePackReader(body);
        try
        {
            var value = Read(ref reader, 0);
            if (!reader.End)
            {
                throw new InvalidDataException($"{body.Length - reader.Consumed} bytes after the value");
            }

            return value;
        }
        catch (Exception ex) when (IsMalformed(ex) || ex is InvalidOperationException)
        {
            throw new InvalidDataException("not valid MessagePack: " + ex.Message, ex);
        }
    }

    /// <summary>Writes a SQL value: nil, integer, float, string or bytes (what data nodes store and return).</summary>
    public static void WriteSqlValue(ref MessagePackWriter writer, object? value)
    {
        switch (value)
        {
            case null:
                writer.WriteNil();
                break;
            case long l:
                writer.Write(l);
                break;
            case double d:
                writer.Write(d);
                break;
            case string s:
                writer.Write(s);
                break;
            case byte[] b:
                writer.Write(b);
                break;
            default:
                throw new ArgumentException($"not a SQL value: {value.GetType().Name}", nameof(value));
        }
    }

    /// <summary>Writes <c>"columns": [...], "rows": [[...], ...]</c> (two map entries) of a query result.</summary>
    public static void WriteRows(ref MessagePackWriter writer, IReadOnlyCollection<string> columns, IReadOnlyCollection<object?[]> rows)
    {
        ArgumentNullException.ThrowIfNull(columns);
        ArgumentNullException.ThrowIfNull(rows);
        writer.Write("columns");
        writer.WriteArrayHeader(columns.Count);
        foreach (var column in columns)
        {
            writer.Write(column);
        }

        writer.Write("rows");
        writer.WriteArrayHeader(rows.Count);
        foreach (var row in rows)
        {
            writer.WriteArrayHeader(row.Length);
            foreach (var value in row)
            {
                WriteSqlValue(ref writer, value);
            }
        }
    }

    /// <summary>Reads a SQL value (a boolean reads as 1 or 0); anything else is <see cref="InvalidDataException"/>.</summary>
    public static object? ReadSqlValue(ref MessagePackReader reader)
    {
        switch (reader.NextMessagePackType)
        {
            case MessagePackType.Nil:
                reader.ReadNil();
                return null;
            case MessagePackType.Integer:
                return reader.ReadInt64();
            case MessagePackType.Float:
                return reader.ReadDouble();
            case MessagePackType.String:
                return reader.ReadString();
            case MessagePackType.Binary:
                return reader.ReadBytes()?.ToArray() ?? [];
            case MessagePackType.Boolean:
                return reader.ReadBoolean() ? 1L : 0L;
            case var other:
                throw new InvalidDataException($"a value of type {other} is not a SQL value");
        }
    }

    private static object? Read(ref MessagePackReader reader, int depth)
    {
        if (depth > MaxDepth)
        {
            throw new InvalidDataException($"nested deeper than {MaxDepth} levels");
        }

        switch (reader.NextMessagePackType)
        {
            case MessagePackType.Nil:
                reader.ReadNil();
                return null;
            case MessagePackType.Boolean:
                return reader.ReadBoolean();
            case MessagePackType.Integer:
                if (reader.NextCode == MessagePackCode.UInt64)
                {
                    var unsigned = reader.ReadUInt64();
                    return unsigned <= long.MaxValue ? (long)unsigned : unsigned;
                }

                return reader.ReadInt64();
            case MessagePackType.Float:
                return reader.ReadDouble();
            case MessagePackType.String:
                return reader.ReadString();
            case MessagePackType.Binary:
                return reader.ReadBytes()?.ToArray();
            case MessagePackType.Array:
                {
                    var count = reader.ReadArrayHeader(); // checks the count against the bytes left
                    var list = new List<object?>(Math.Min(count, 1024));
                    for (var i = 0; i < count; i++)
                    {
                        list.Add(Read(ref reader, depth + 1));
                    }

                    return list;
                }

            case MessagePackType.Map:
                {
                    var count = reader.ReadMapHeader();
                    var map = new Dictionary<string, object?>(Math.Min(count, 64), StringComparer.Ordinal);
                    for (var i = 0; i < count; i++)
                    {
                        if (reader.NextMessagePackType != MessagePackType.String)
                        {
                            throw new InvalidDataException("map keys must be strings");
                        }

                        var key = reader.ReadString()!;
                        map[key] = Read(ref reader, depth + 1);
                    }

                    return map;
                }

            default:
                throw new InvalidDataException($"unsupported MessagePack type {reader.NextMessagePackType}");
        }
    }
}
