using System.Buffers;
using Infra.Core.Framing;
using Infra.Core.Storage;
using MessagePack;

namespace Infra.DataNode.Storage;

/// <summary>One part of a log entry: the row changes of some statements, or one DDL statement.</summary>
internal abstract record EntryPart;

/// <summary>Row changes as SQLite's session extension recorded them.</summary>
internal sealed record ChangesetPart(byte[] Changeset) : EntryPart;

/// <summary>A schema change, replayed as the statement itself (sessions do not record DDL).</summary>
internal sealed record StatementPart(string Sql, IReadOnlyList<object?> Parameters) : EntryPart;

/// <summary>One committed write request in the replication log: its LSN, the epoch of the master that wrote it, and its parts.</summary>
internal sealed record LogRecord(long Lsn, long Epoch, uint Crc, byte[] Body, long CommittedMs)
{
    public static LogRecord Create(long lsn, long epoch, byte[] body, long committedMs) => new(lsn, epoch, Checksum(lsn, epoch, body), body, committedMs);

    /// <summary>CRC-32C over the LSN, the epoch and the body, so an entry cannot be moved or mislabelled unnoticed.</summary>
    public static uint Checksum(long lsn, long epoch, ReadOnlySpan<byte> body)
    {
        Span<byte> header = stackalloc byte[16];
        BitConverter.TryWriteBytes(header, lsn);
        BitConverter.TryWriteBytes(header[8..], epoch);
        return ~Crc32C.Append(Crc32C.Append(uint.MaxValue, header), body);
    }

    public bool IsIntact => Checksum(Lsn, Epoch, Body) == Crc;
}

/// <summary>The MessagePack form of an entry body: an array of parts, <c>[0, changeset]</c> or <c>[1, sql, [params]]</c>.</summary>
internal static class EntryCodec
{
    private const int Changeset = 0;
    private const int Statement = 1;

    public static byte[] Encode(IReadOnlyList<EntryPart> parts)
    {
        var buffer = new ArrayBufferWriter<byte>(256);
        var writer = new MessagePackWriter(buffer);
        writer.WriteArrayHeader(parts.Count);
        foreach (var part in parts)
        {
            switch (part)
            {
                case ChangesetPart c:
                    writer.WriteArrayHeader(2);
                    writer.Write(Changeset);
                    writer.Write(c.Changeset);
                    break;
                case StatementPart s:
                    writer.WriteArrayHeader(3);
                    writer.Write(Statement);
                    writer.Write(s.Sql);
                    writer.WriteArrayHeader(s.Parameters.Count);
                    foreach (var value in s.Parameters)
                    {
                        MessagePackValues.WriteSqlValue(ref writer, value);
                    }

                    break;
            }
        }

        writer.Flush();
        return buffer.WrittenSpan.ToArray();
    }

    public static List<EntryPart> Decode(ReadOnlyMemory<byte> body)
    {
        try
        {
            var reader = new MessagePackReader(body);
            var count = reader.ReadArrayHeader();
            var parts = new List<EntryPart>(count);
            for (var i = 0; i < count; i++)
            {
                var fields = reader.ReadArrayHeader();
                var kind = reader.ReadInt32();
                if (kind == Changeset && fields == 2)
                {
                    parts.Add(new ChangesetPart(reader.ReadBytes()?.ToArray() ?? []));
                }
                else if (kind == Statement && fields == 3)
                {
                    var sql = reader.ReadString() ?? throw new InvalidDataException("a statement part without SQL");
                    var n = reader.ReadArrayHeader();
                    var values = new object?[n];
                    for (var v = 0; v < n; v++)
                    {
                        values[v] = MessagePackValues.ReadSqlValue(ref reader);
                    }

                    parts.Add(new StatementPart(sql, values));
                }
                else
                {
                    throw new InvalidDataException($"unknown entry part kind {kind} with {fields} fields");
                }
            }

            return parts;
        }
        catch (MessagePackSerializationException ex)
        {
            throw new InvalidDataException("a log entry is not valid MessagePack: " + ex.Message, ex);
        }
        catch (Exception ex) when (ex is EndOfStreamException or ArgumentOutOfRangeException)
        {
            throw new InvalidDataException("a log entry is truncated", ex);
        }
    }
}
