using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using Infra.Core.Framing;
using Infra.Core.Storage;
using Infra.QueueBroker.Log;
using Infra.Testing;

namespace Infra.QueueBroker.Tests;

public sealed class ParserTests
{
    private static byte[] Batch(params string[] payloads)
    {
        var messages = payloads.Select(p => new LogMessage(Encoding.UTF8.GetBytes("k"), [new MessageHeader("h", [1, 2])], Encoding.UTF8.GetBytes(p))).ToList();
        var bytes = new byte[RecordBatch.Measure(messages)];
        RecordBatch.Write(bytes, 10, 3, 7, 5, messages);
        return bytes;
    }

    [Fact]
    public void Crc32c_matches_the_standard_check_value()
    {
        Assert.Equal(0xE3069283u, Crc32C.Compute("123456789"u8));
        Assert.Equal(0u, Crc32C.Compute([]));
    }

    [Fact]
    public void A_batch_round_trips_and_every_prefix_is_incomplete()
    {
        var bytes = Batch("one", "two");
        Assert.Equal(BatchCheck.Valid, RecordBatch.Check(bytes, 1 << 20, out var header));
        Assert.Equal((10L, 2, 3L, 7), (header.BaseOffset, header.Count, header.ProducerId, header.BaseSequence));
        var messages = new List<StoredMessage>();
        RecordBatch.Decode(bytes, header, 11, long.MaxValue, 10, messages);
        var only = Assert.Single(messages);
        Assert.Equal((11L, "two", "k", "h"), (only.Offset, Encoding.UTF8.GetString(only.Payload), Encoding.UTF8.GetString(only.Key!), only.Headers[0].Name));
        for (var cut = 0; cut < bytes.Length; cut++)
        {
            var check = RecordBatch.Check(bytes.AsSpan(0, cut), 1 << 20, out _);
            Assert.True(check == BatchCheck.Incomplete, $"prefix of {cut} bytes: {check}");
        }
    }

    [Fact]
    public void Every_flipped_bit_is_caught()
    {
        var bytes = Batch("payload");
        for (var i = 0; i < bytes.Length * 8; i++)
        {
            var copy = (byte[])bytes.Clone();
            copy[i / 8] ^= (byte)(1 << (i % 8));
            Assert.NotEqual(BatchCheck.Valid, RecordBatch.Check(copy, 1 << 20, out _));
        }
    }

    [Fact]
    public void Hostile_lengths_are_rejected_even_with_a_matching_checksum()
    {
        Assert.Equal(BatchCheck.Corrupt, RecordBatch.ReadHeader([0x7f, 0xff, 0xff, 0xff], 1 << 20, out _));
        Assert.Equal(BatchCheck.Corrupt, RecordBatch.ReadHeader([0, 0, 0, 3], 1 << 20, out _));
        var bytes = Batch("x");
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(RecordBatch.HeaderSize + 8), int.MaxValue); // key length
        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(4), Crc32C.Compute(bytes.AsSpan(8)));
        Assert.Equal(BatchCheck.Valid, RecordBatch.Check(bytes, 1 << 20, out var header));
        Assert.Throws<InvalidDataException>(() => RecordBatch.Decode(bytes, header, 0, long.MaxValue, 10, []));
    }

    [Fact]
    public void Frames_need_every_byte_and_refuse_bad_lengths()
    {
        var body = new byte[] { 0x91, 0x01 };
        var buffer = new ArrayBufferWriter<byte>();
        Frames.Write(buffer, body);
        var frame = buffer.WrittenSpan.ToArray();
        for (var cut = 0; cut < frame.Length; cut++)
        {
            var partial = new ReadOnlySequence<byte>(frame, 0, cut);
            Assert.Equal(FrameStatus.Incomplete, Frames.TryRead(ref partial, 100, out _, out _));
        }

        var split = Segments.OneBytePerSegment(frame);
        Assert.Equal(FrameStatus.Complete, Frames.TryRead(ref split, 100, out var read, out _));
        Assert.Equal(body, read.ToArray());
        Assert.True(split.IsEmpty);

        var tooLarge = new ReadOnlySequence<byte>(new byte[] { 0, 0, 1, 0 });
        Assert.Equal(FrameStatus.TooLarge, Frames.TryRead(ref tooLarge, 255, out _, out var declared));
        Assert.Equal(256, declared);
        var zero = new ReadOnlySequence<byte>(new byte[] { 0, 0, 0, 0 });
        Assert.Equal(FrameStatus.Invalid, Frames.TryRead(ref zero, 255, out _, out _));
        var negative = new ReadOnlySequence<byte>(new byte[] { 0xff, 0, 0, 0 });
        Assert.Equal(FrameStatus.Invalid, Frames.TryRead(ref negative, 255, out _, out _));
    }

    [Theory]
    [InlineData(new byte[] { 0xc1 })] // never used
    [InlineData(new byte[] { 0x92, 0x01 })] // array of 2 with 1 element
    [InlineData(new byte[] { 0x81, 0x01, 0x02 })] // map with an integer key
    [InlineData(new byte[] { 0xdd, 0x7f, 0xff, 0xff, 0xff })] // array claiming 2^31 elements
    [InlineData(new byte[] { 0xc6, 0x7f, 0xff, 0xff, 0xff, 0x00 })] // bin claiming 2 GiB
    [InlineData(new byte[] { 0x01, 0x02 })] // trailing bytes
    [InlineData(new byte[] { 0xdb, 0xff, 0xff, 0xff, 0xff })] // str32 claiming 4 GiB (a negative int: the reader threw ArgumentOutOfRange)
    [InlineData(new byte[] { 0x93, 0x01, 0xa4, (byte)'p', (byte)'i', (byte)'n', (byte)'g', 0x81, 0xa1, (byte)'a', 0xdb, 0xff, 0xff, 0xff, 0xff })] // the same inside a request
    [InlineData(new byte[] { 0xc6, 0xff, 0xff, 0xff, 0xff })] // bin32 claiming 4 GiB
    public void Malformed_messagepack_is_an_invalid_data_error(byte[] body)
    {
        Assert.Throws<InvalidDataException>(() => MessagePackValues.ReadWhole(new ReadOnlySequence<byte>(body)));
    }

    [Fact]
    public void Deep_nesting_is_refused_without_overflowing_the_stack()
    {
        var deep = Enumerable.Repeat((byte)0x91, 100_000).Append((byte)0x01).ToArray();
        Assert.Throws<InvalidDataException>(() => MessagePackValues.ReadWhole(new ReadOnlySequence<byte>(deep)));
    }
}

public sealed class ProduceParserTests
{
    private static ReadOnlySequence<byte> Encode(Action<MessagePack.MessagePackWriter> build)
    {
        var buffer = new ArrayBufferWriter<byte>();
        var writer = new MessagePack.MessagePackWriter(buffer);
        build(writer);
        return new ReadOnlySequence<byte>(buffer.WrittenMemory);
    }

    private static ReadOnlySequence<byte> Produce(bool extraField = false, bool truncate = false)
    {
        var body = Encode(w =>
        {
            w.WriteArrayHeader(3);
            w.Write(9L);
            w.Write("produce");
            w.WriteMapHeader(extraField ? 5 : 4);
            w.Write("topic");
            w.Write("t");
            w.Write("partition");
            w.Write(2);
            w.Write("producerId");
            w.Write(77L);
            if (extraField)
            {
                w.Write("surprise");
                w.Write(1);
            }

            w.Write("messages");
            w.WriteArrayHeader(2);
            w.WriteArrayHeader(3);
            w.Write("key"u8);
            w.WriteMapHeader(1);
            w.Write("h");
            w.Write("v");
            w.Write("payload"u8);
            w.WriteArrayHeader(3);
            w.WriteNil();
            w.WriteNil();
            w.Write("second");
            w.Flush();
        });
        return truncate ? body.Slice(0, body.Length - 3) : body;
    }

    [Fact]
    public void A_well_formed_produce_is_read_in_one_pass()
    {
        Assert.True(Protocol.ProduceParser.TryParse(Produce(), out var id, out var request));
        Assert.Equal(9, id);
        Assert.Equal(("t", 2, 77L, -1), (request!.Topic, request.Partition, request.ProducerId, request.Sequence));
        Assert.Equal(2, request.Messages.Count);
        Assert.Equal("key", Encoding.UTF8.GetString(request.Messages[0].Key!));
        Assert.Equal("v", Encoding.UTF8.GetString(request.Messages[0].Headers[0].Value));
        Assert.Null(request.Messages[1].Key);
        Assert.Equal("second", Encoding.UTF8.GetString(request.Messages[1].Payload.Span));
    }

    [Fact]
    public void Anything_unexpected_is_left_to_the_generic_parser()
    {
        Assert.False(Protocol.ProduceParser.TryParse(Produce(extraField: true), out _, out _));
        var truncated = Produce(truncate: true);
        for (var cut = 0; cut < truncated.Length; cut++)
        {
            Assert.False(Protocol.ProduceParser.TryParse(truncated.Slice(0, cut), out _, out _));
        }

        Assert.False(Protocol.ProduceParser.TryParse(new ReadOnlySequence<byte>([0x93, 0x01, 0xa4, (byte)'p', (byte)'i', (byte)'n', (byte)'g', 0x80]), out _, out _));
        Assert.False(Protocol.ProduceParser.TryParse(new ReadOnlySequence<byte>([0xc1]), out _, out _));

        // A payload whose bin32 length runs far past the frame (found by a protocol fuzzer: it threw
        // ArgumentOutOfRange out of the connection, which closed without an answer).
        byte[] hugePayload = [0x93, 0x01, 0xa7, .. "produce"u8, 0x82, 0xa5, .. "topic"u8, 0xa1, (byte)'t', 0xa8, .. "messages"u8, 0x91, 0x93, 0xc0, 0xc0, 0xc6, 0xff, 0xff, 0xff, 0xff];
        Assert.False(Protocol.ProduceParser.TryParse(new ReadOnlySequence<byte>(hugePayload), out _, out _));
    }
}

public sealed class ProducerTableTests
{
    [Fact]
    public void Past_its_limit_the_table_forgets_the_least_recently_used_producers()
    {
        var table = new ProducerTable(maxProducers: 10);
        for (var id = 0; id < 10; id++)
        {
            table.Record(id, 0, 1, id, Task.CompletedTask);
        }

        table.Record(0, 1, 1, 100, Task.CompletedTask); // producer 0 is used again: now the most recent
        table.Record(10, 0, 1, 101, Task.CompletedTask); // over the limit: producer 1 (least recent) goes
        Assert.Equal(10, table.Count);
        Assert.Equal(SequenceCheck.Accept, table.Check(1, 5, 1, out _, out _, out _)); // forgotten: accepted as new
        Assert.Equal(SequenceCheck.Duplicate, table.Check(0, 1, 1, out var offset, out _, out _));
        Assert.Equal(100, offset);
        Assert.Equal(SequenceCheck.OutOfOrder, table.Check(2, 7, 1, out _, out _, out _)); // still known

        for (var id = 1000; id < 1000 + 100_000; id++)
        {
            table.Record(id, 0, 1, id, Task.CompletedTask); // a client inventing ids
        }

        Assert.True(table.Count <= 10);
    }
}
