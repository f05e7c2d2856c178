using System.Buffers.Binary;
using System.Text;
using Infra.Core.Storage;

namespace Infra.QueueBroker.Log;

/// <summary>A message header: a name and opaque bytes.</summary>
internal readonly record struct MessageHeader(string Name, byte[] Value);

/// <summary>A message to append (or as a producer sends it): optional key and headers, the payload.</summary>
internal sealed record LogMessage(byte[]? Key, IReadOnlyList<MessageHeader> Headers, ReadOnlyMemory<byte> Payload);

/// <summary>A message read back from the log.</summary>
internal sealed record StoredMessage(long Offset, long Timestamp, byte[]? Key, MessageHeader[] Headers, byte[] Payload)
{
    public string? HeaderText(string name)
    {
        foreach (var header in Headers)
        {
            if (header.Name == name)
            {
                return Encoding.UTF8.GetString(header.Value);
            }
        }

        return null;
    }
}

/// <summary>The fixed part of a batch, read before the rest.</summary>
internal readonly record struct BatchHeader(int Length, uint Crc, long BaseOffset, int Count, long ProducerId, int BaseSequence)
{
    /// <summary>Bytes of the whole batch on disk, length field included.</summary>
    public int TotalSize => Length + 4;

    public long NextOffset => BaseOffset + Count;
}

internal enum BatchCheck
{
    Valid,

    /// <summary>The buffer ends before the batch does (a torn write at the end of the log).</summary>
    Incomplete,

    /// <summary>The bytes are not a batch: bad length, magic, count or checksum.</summary>
    Corrupt,

    /// <summary>Zeros where the next batch would start: the end of the data in a preallocated segment.</summary>
    End,
}

/// <summary>
/// The on-disk framing. A batch is the unit of append, checksum and offset assignment:
/// <code>
/// int32  length        bytes after this field
/// uint32 crc32c        of every byte after this field
/// byte   magic (1)     byte attributes (0)
/// int64  base offset   int32 count   int64 producer id (-1 none)   int32 base sequence (-1 none)
/// count × record: int64 timestamp, int32 key length (-1 = no key), key, uint16 header count,
///                 headers (uint16 name length, name UTF-8, int32 value length, value),
///                 int32 payload length, payload
/// </code>
/// All integers big-endian. Nothing is trusted before the checksum and every length is bounds-checked.
/// </summary>
internal static class RecordBatch
{
    public const int HeaderSize = 34;
    public const byte Magic = 1;
    public const int MaxHeaders = 256;

    /// <summary>Bytes <paramref name="messages"/> take as one batch.</summary>
    public static int Measure(IReadOnlyList<LogMessage> messages)
    {
        long size = HeaderSize;
        foreach (var message in messages)
        {
            size += 8 + 4 + (message.Key?.Length ?? 0) + 2 + 4 + message.Payload.Length;
            foreach (var header in message.Headers)
            {
                size += 2 + Encoding.UTF8.GetByteCount(header.Name) + 4 + header.Value.Length;
            }
        }

        return size > int.MaxValue - 64 ? throw new ArgumentException("batch larger than 2 GiB") : (int)size;
    }

    /// <summary>Writes the batch into <paramref name="destination"/> (exactly <see cref="Measure"/> bytes); every record gets <paramref name="timestamp"/> (Unix ms).</summary>
    public static void Write(Span<byte> destination, long baseOffset, long producerId, int baseSequence, long timestamp, IReadOnlyList<LogMessage> messages)
    {
        BinaryPrimitives.WriteInt32BigEndian(destination, destination.Length - 4);
        destination[8] = Magic;
        destination[9] = 0;
        BinaryPrimitives.WriteInt64BigEndian(destination[10..], baseOffset);
        BinaryPrimitives.WriteInt32BigEndian(destination[18..], messages.Count);
        BinaryPrimitives.WriteInt64BigEndian(destination[22..], producerId);
        BinaryPrimitives.WriteInt32BigEndian(destination[30..], baseSequence);
        var at = HeaderSize;
        foreach (var message in messages)
        {
            BinaryPrimitives.WriteInt64BigEndian(destination[at..], timestamp);
            at += 8;
            if (message.Key is null)
            {
                BinaryPrimitives.WriteInt32BigEndian(destination[at..], -1);
                at += 4;
            }
            else
            {
                BinaryPrimitives.WriteInt32BigEndian(destination[at..], message.Key.Length);
                message.Key.CopyTo(destination[(at + 4)..]);
                at += 4 + message.Key.Length;
            }

            BinaryPrimitives.WriteUInt16BigEndian(destination[at..], checked((ushort)message.Headers.Count));
            at += 2;
            foreach (var header in message.Headers)
            {
                var nameLength = Encoding.UTF8.GetBytes(header.Name, destination[(at + 2)..]);
                BinaryPrimitives.WriteUInt16BigEndian(destination[at..], checked((ushort)nameLength));
                at += 2 + nameLength;
                BinaryPrimitives.WriteInt32BigEndian(destination[at..], header.Value.Length);
                header.Value.CopyTo(destination[(at + 4)..]);
                at += 4 + header.Value.Length;
            }

            BinaryPrimitives.WriteInt32BigEndian(destination[at..], message.Payload.Length);
            message.Payload.Span.CopyTo(destination[(at + 4)..]);
            at += 4 + message.Payload.Length;
        }

        BinaryPrimitives.WriteUInt32BigEndian(destination[4..], Crc32C.Compute(destination[8..at]));
    }

    /// <summary>Reads the fixed header at the start of <paramref name="source"/> and checks what can be checked without the body.</summary>
    public static BatchCheck ReadHeader(ReadOnlySpan<byte> source, int maxBatchSize, out BatchHeader header)
    {
        header = default;
        if (source.Length < 4)
        {
            return BatchCheck.Incomplete;
        }

        var length = BinaryPrimitives.ReadInt32BigEndian(source);
        if (length < HeaderSize - 4 || length > maxBatchSize)
        {
            return BatchCheck.Corrupt;
        }

        if (source.Length < HeaderSize)
        {
            return BatchCheck.Incomplete;
        }

        var count = BinaryPrimitives.ReadInt32BigEndian(source[18..]);
        if (source[8] != Magic || count <= 0 || count > length)
        {
            return BatchCheck.Corrupt;
        }

        header = new BatchHeader(
            length,
            BinaryPrimitives.ReadUInt32BigEndian(source[4..]),
            BinaryPrimitives.ReadInt64BigEndian(source[10..]),
            count,
            BinaryPrimitives.ReadInt64BigEndian(source[22..]),
            BinaryPrimitives.ReadInt32BigEndian(source[30..]));
        return BatchCheck.Valid;
    }

    /// <summary>Header, completeness and checksum of the batch at the start of <paramref name="source"/>.</summary>
    public static BatchCheck Check(ReadOnlySpan<byte> source, int maxBatchSize, out BatchHeader header)
    {
        var check = ReadHeader(source, maxBatchSize, out header);
        if (check != BatchCheck.Valid)
        {
            return check;
        }

        if (source.Length < header.TotalSize)
        {
            return BatchCheck.Incomplete;
        }

        return Crc32C.Compute(source[8..header.TotalSize]) == header.Crc ? BatchCheck.Valid : BatchCheck.Corrupt;
    }

    /// <summary>
    /// Decodes the records of a checked batch with offsets ≥ <paramref name="fromOffset"/>, stopping
    /// before <paramref name="endOffset"/> or when <paramref name="maxMessages"/> are in <paramref name="into"/>.
    /// A batch whose checksum matched but whose records do not parse is corrupt (InvalidDataException).
    /// </summary>
    public static void Decode(ReadOnlySpan<byte> batch, in BatchHeader header, long fromOffset, long endOffset, int maxMessages, List<StoredMessage> into)
    {
        var body = batch[HeaderSize..header.TotalSize];
        var at = 0;
        for (var i = 0; i < header.Count; i++)
        {
            var offset = header.BaseOffset + i;
            if (offset >= endOffset || into.Count >= maxMessages)
            {
                return;
            }

            var timestamp = ReadInt64(body, ref at);
            var keyLength = ReadInt32(body, ref at);
            var key = keyLength == -1 ? null : ReadBytes(body, ref at, keyLength);
            var headerCount = ReadUInt16(body, ref at);
            var headers = headerCount == 0 ? [] : new MessageHeader[headerCount];
            for (var h = 0; h < headerCount; h++)
            {
                var nameLength = ReadUInt16(body, ref at);
                var name = Encoding.UTF8.GetString(Slice(body, ref at, nameLength));
                var valueLength = ReadInt32(body, ref at);
                headers[h] = new MessageHeader(name, ReadBytes(body, ref at, valueLength));
            }

            var payloadLength = ReadInt32(body, ref at);
            var payload = Slice(body, ref at, payloadLength);
            if (offset >= fromOffset)
            {
                into.Add(new StoredMessage(offset, timestamp, key, headers, payload.ToArray()));
            }
        }

        if (at != body.Length)
        {
            throw new InvalidDataException($"batch at offset {header.BaseOffset} has {body.Length - at} bytes after its last record");
        }
    }

    private static long ReadInt64(ReadOnlySpan<byte> body, ref int at) => BinaryPrimitives.ReadInt64BigEndian(Slice(body, ref at, 8));

    private static int ReadInt32(ReadOnlySpan<byte> body, ref int at) => BinaryPrimitives.ReadInt32BigEndian(Slice(body, ref at, 4));

    private static ushort ReadUInt16(ReadOnlySpan<byte> body, ref int at) => BinaryPrimitives.ReadUInt16BigEndian(Slice(body, ref at, 2));

    private static byte[] ReadBytes(ReadOnlySpan<byte> body, ref int at, int length) => Slice(body, ref at, length).ToArray();

    private static ReadOnlySpan<byte> Slice(ReadOnlySpan<byte> body, ref int at, int length)
    {
        if (length < 0 || length > body.Length - at)
        {
            throw new InvalidDataException($"record field of {length} bytes runs past the end of its batch");
        }

        var slice = body.Slice(at, length);
        at += length;
        return slice;
    }
}
