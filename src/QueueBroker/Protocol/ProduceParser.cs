using System.Buffers;
using System.Text;
using Infra.Core.Framing;
using Infra.QueueBroker.Log;
using MessagePack;

namespace Infra.QueueBroker.Protocol;

/// <summary>A produce request read straight from its frame.</summary>
internal sealed record ProduceRequest(string Topic, int? Partition, long ProducerId, int Sequence, List<LogMessage> Messages);

/// <summary>
/// The hot path of the protocol: a well-formed <c>[id, "produce", {topic, partition?, producerId?,
/// sequence?, messages}]</c> read with one pass of the MessagePack reader, without building the generic
/// value tree. Anything unexpected returns false and the generic parser handles the frame (and words
/// the error), so this path never decides what is malformed.
/// </summary>
internal static class ProduceParser
{
    public static bool TryParse(ReadOnlySequence<byte> body, out long id, out ProduceRequest? request)
    {
        id = 0;
        request = null;
        var reader = new MessagePackReader(body);
        try
        {
            if (reader.NextMessagePackType != MessagePackType.Array || reader.ReadArrayHeader() != 3
                || reader.NextMessagePackType != MessagePackType.Integer)
            {
                return false;
            }

            id = reader.ReadInt64();
            if (reader.NextMessagePackType != MessagePackType.String || reader.ReadString() != "produce" || reader.NextMessagePackType != MessagePackType.Map)
            {
                return false;
            }

            string? topic = null;
            int? partition = null;
            long producerId = -1;
            var sequence = -1;
            List<LogMessage>? messages = null;
            for (var fields = reader.ReadMapHeader(); fields > 0; fields--)
            {
                if (reader.NextMessagePackType != MessagePackType.String)
                {
                    return false;
                }

                var name = reader.ReadString();
                var ok = name switch
                {
                    "topic" => TryText(ref reader, out topic),
                    "partition" => TryOptionalInt(ref reader, out partition),
                    "producerId" => TryOptionalLong(ref reader, out producerId),
                    "sequence" => TryOptionalInt(ref reader, out var s) && (sequence = s ?? -1) >= -1,
                    "messages" => TryMessages(ref reader, out messages),
                    _ => false,
                };
                if (!ok)
                {
                    return false;
                }
            }

            if (!reader.End || topic is null || messages is not { Count: > 0 })
            {
                return false;
            }

            request = new ProduceRequest(topic, partition, producerId, sequence, messages);
            return true;
        }
        catch (Exception ex) when (MessagePackValues.IsMalformed(ex) || ex is InvalidOperationException)
        {
            return false;
        }
    }

    private static bool TryText(ref MessagePackReader reader, out string? text)
    {
        text = reader.NextMessagePackType == MessagePackType.String ? reader.ReadString() : null;
        return text is not null;
    }

    private static bool TryOptionalLong(ref MessagePackReader reader, out long value)
    {
        value = -1;
        if (reader.TryReadNil())
        {
            return true;
        }

        if (reader.NextMessagePackType != MessagePackType.Integer || reader.NextCode == MessagePackCode.UInt64)
        {
            return false;
        }

        value = reader.ReadInt64();
        return true;
    }

    private static bool TryOptionalInt(ref MessagePackReader reader, out int? value)
    {
        value = null;
        if (reader.TryReadNil())
        {
            return true;
        }

        if (reader.NextMessagePackType != MessagePackType.Integer || reader.NextCode == MessagePackCode.UInt64)
        {
            return false;
        }

        var number = reader.ReadInt64();
        if (number is < 0 or > int.MaxValue)
        {
            return false;
        }

        value = (int)number;
        return true;
    }

    private static bool TryMessages(ref MessagePackReader reader, out List<LogMessage>? messages)
    {
        messages = null;
        if (reader.NextMessagePackType != MessagePackType.Array)
        {
            return false;
        }

        var count = reader.ReadArrayHeader();
        var list = new List<LogMessage>(Math.Min(count, 1024));
        for (var i = 0; i < count; i++)
        {
            if (reader.NextMessagePackType != MessagePackType.Array || reader.ReadArrayHeader() != 3
                || !TryBytes(ref reader, allowNil: true, out var key))
            {
                return false;
            }

            List<MessageHeader> headers = [];
            if (!reader.TryReadNil())
            {
                if (reader.NextMessagePackType != MessagePackType.Map)
                {
                    return false;
                }

                for (var h = reader.ReadMapHeader(); h > 0; h--)
                {
                    if (reader.NextMessagePackType != MessagePackType.String)
                    {
                        return false;
                    }

                    var name = reader.ReadString()!;
                    if (!TryBytes(ref reader, allowNil: false, out var value))
                    {
                        return false;
                    }

                    headers.Add(new MessageHeader(name, value!));
                }
            }

            if (!TryBytes(ref reader, allowNil: false, out var payload))
            {
                return false;
            }

            list.Add(new LogMessage(key, headers, payload));
        }

        messages = list;
        return true;
    }

    private static bool TryBytes(ref MessagePackReader reader, bool allowNil, out byte[]? bytes)
    {
        bytes = null;
        switch (reader.NextMessagePackType)
        {
            case MessagePackType.Nil when allowNil:
                reader.ReadNil();
                return true;
            case MessagePackType.Binary:
                bytes = reader.ReadBytes()?.ToArray() ?? [];
                return true;
            case MessagePackType.String:
                bytes = Encoding.UTF8.GetBytes(reader.ReadString() ?? "");
                return true;
            default:
                return false;
        }
    }
}
