using System.Buffers;
using System.Text;
using Infra.LoadBalancer.Http;
using Infra.Testing;

namespace Infra.LoadBalancer.Tests.Http;

public class ChunkedDecoderTests
{
    [Theory]
    [InlineData("5\r\nhello\r\n0\r\n\r\n", "5\r\nhello\r\n0\r\n\r\n", "hello")]
    [InlineData("5;name=value\r\nhello\r\n0\r\n\r\n", "5\r\nhello\r\n0\r\n\r\n", "hello")]
    [InlineData("5 ; quoted=\"a b\"\r\nhello\r\n0;last\r\n\r\n", "5\r\nhello\r\n0\r\n\r\n", "hello")]
    [InlineData("A\r\n0123456789\r\n1\r\n!\r\n0\r\n\r\n", "a\r\n0123456789\r\n1\r\n!\r\n0\r\n\r\n", "0123456789!")]
    [InlineData("0005\r\nhello\r\n000\r\n\r\n", "5\r\nhello\r\n0\r\n\r\n", "hello")]
    [InlineData("0\r\n\r\n", "0\r\n\r\n", "")]
    [InlineData("3\r\nabc\r\n0\r\nX-Checksum: 42\r\nX-Other: y\r\n\r\n", "3\r\nabc\r\n0\r\nX-Checksum: 42\r\nX-Other: y\r\n\r\n", "abc")]
    public void Reencodes_and_decodes(string input, string reencoded, string data)
    {
        Assert.Equal(reencoded, Run(input, reencode: true));
        Assert.Equal(data, Run(input, reencode: false));
    }

    [Fact]
    public void Any_segmentation_gives_the_same_output()
    {
        const string Input = "5;x=y\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: v\r\n\r\n";
        var expected = Run(Input, reencode: true);
        var bytes = Encoding.ASCII.GetBytes(Input);
        for (var cut = 1; cut < bytes.Length; cut++)
        {
            Assert.Equal(expected, RunIncrementally(bytes, cut));
        }

        Assert.Equal(expected, RunIncrementally(bytes, 1, byteByByte: true));
    }

    [Fact]
    public void Stops_at_the_end_of_the_body()
    {
        var bytes = Encoding.ASCII.GetBytes("2\r\nhi\r\n0\r\n\r\nGET /next HTTP/1.1\r\n");
        var decoder = new ChunkedDecoder(0, 1024);
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes));
        var output = new ArrayBufferWriter<byte>();

        Assert.True(decoder.Decode(ref reader, output, reencode: true));
        Assert.Equal("GET /next", Encoding.ASCII.GetString(bytes, (int)reader.Consumed, 9));
        Assert.True(decoder.IsComplete);
        Assert.Equal(2, decoder.DataBytes);
    }

    [Fact]
    public void Every_proper_prefix_asks_for_more()
    {
        var bytes = Encoding.ASCII.GetBytes("5\r\nhello\r\n0\r\nT: v\r\n\r\n");
        for (var length = 0; length < bytes.Length; length++)
        {
            var decoder = new ChunkedDecoder(0, 1024);
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes, 0, length));
            Assert.False(decoder.Decode(ref reader, new ArrayBufferWriter<byte>(), reencode: true), $"prefix {length}");
        }
    }

    [Theory]
    [InlineData("\r\nhello\r\n0\r\n\r\n", nameof(RejectionReason.InvalidChunkSize))]
    [InlineData("g\r\n", nameof(RejectionReason.InvalidChunkSize))]
    [InlineData("-5\r\nhello\r\n", nameof(RejectionReason.InvalidChunkSize))]
    [InlineData("+5\r\nhello\r\n", nameof(RejectionReason.InvalidChunkSize))]
    [InlineData("0x5\r\nhello\r\n", nameof(RejectionReason.InvalidChunkSize))]
    [InlineData(" 5\r\nhello\r\n", nameof(RejectionReason.InvalidChunkSize))]
    [InlineData("5 \r\nhello\r\n", nameof(RejectionReason.InvalidChunkSize))]
    [InlineData("5 5\r\nhello\r\n", nameof(RejectionReason.InvalidChunkSize))]
    [InlineData("5\nhello\r\n", nameof(RejectionReason.InvalidChunkSize))]
    [InlineData("5\r\r\nhello\r\n", nameof(RejectionReason.InvalidChunkSize))]
    [InlineData("5;a\u0001b\r\nhello\r\n", nameof(RejectionReason.InvalidChunkSize))]
    [InlineData("1000000000000000000\r\n", nameof(RejectionReason.InvalidChunkSize))]
    [InlineData("fffffffffffffffff\r\n", nameof(RejectionReason.InvalidChunkSize))]
    [InlineData("5\r\nhelloX\r\n0\r\n\r\n", nameof(RejectionReason.InvalidChunkTerminator))]
    [InlineData("5\r\nhello\n0\r\n\r\n", nameof(RejectionReason.InvalidChunkTerminator))]
    [InlineData("5\r\nhello\rX", nameof(RejectionReason.InvalidChunkTerminator))]
    [InlineData("5\r\nhelloXY", nameof(RejectionReason.InvalidChunkTerminator))]
    [InlineData("0\r\nbad trailer\r\n\r\n", nameof(RejectionReason.InvalidTrailer))]
    [InlineData("0\r\n folded: x\r\n\r\n", nameof(RejectionReason.InvalidTrailer))]
    [InlineData("0\r\nX: a\nY: b\r\n\r\n", nameof(RejectionReason.InvalidTrailer))]
    [InlineData("0\r\n\n", nameof(RejectionReason.InvalidTrailer))]
    public void Rejects_malformed_chunked_bodies(string input, string expected)
    {
        var ex = Assert.Throws<HttpRejectionException>(() => Run(input, reencode: true));
        Assert.Equal(expected, ex.Reason.ToString());
        Assert.Equal(400, RejectionReasons.StatusCode(ex.Reason));
    }

    [Fact]
    public void A_size_line_that_never_ends_is_rejected_once_over_its_limit()
    {
        var input = "5;" + new string('x', 5000);
        var ex = Assert.Throws<HttpRejectionException>(() => Run(input, reencode: true, expectComplete: false));
        Assert.Equal(RejectionReason.InvalidChunkSize, ex.Reason);
    }

    [Fact]
    public void Data_over_the_body_limit_is_413()
    {
        var bytes = Encoding.ASCII.GetBytes("5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n");

        var ex = Assert.Throws<HttpRejectionException>(() => DecodeAll(bytes, maxData: 8, maxTrailer: 1024));
        Assert.Equal(RejectionReason.BodyTooLarge, ex.Reason);
        Assert.Equal(413, RejectionReasons.StatusCode(ex.Reason));
    }

    [Fact]
    public void Trailers_over_their_limit_are_rejected()
    {
        var bytes = Encoding.ASCII.GetBytes("0\r\nX-Long-Trailer: " + new string('v', 40) + "\r\n\r\n");

        var ex = Assert.Throws<HttpRejectionException>(() => DecodeAll(bytes, maxData: 0, maxTrailer: 16));
        Assert.Equal(RejectionReason.InvalidTrailer, ex.Reason);
    }

    [Fact]
    public void Passes_large_chunks_through_as_they_arrive()
    {
        // A 1 MiB chunk fed in 1 KiB pieces: each piece comes out before the chunk is complete.
        var data = new byte[1 << 20];
        new Random(7).NextBytes(data);
        var header = Encoding.ASCII.GetBytes("100000\r\n");
        var decoder = new ChunkedDecoder(0, 1024);
        var output = new ArrayBufferWriter<byte>();

        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(header));
        Assert.False(decoder.Decode(ref reader, output, reencode: false));
        for (var offset = 0; offset < data.Length; offset += 1024)
        {
            reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(data, offset, 1024));
            Assert.False(decoder.Decode(ref reader, output, reencode: false));
            Assert.Equal(offset + 1024, output.WrittenCount);
            Assert.True(decoder.InData || offset + 1024 == data.Length);
        }

        reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(Encoding.ASCII.GetBytes("\r\n0\r\n\r\n")));
        Assert.True(decoder.Decode(ref reader, output, reencode: false));
        Assert.True(output.WrittenSpan.SequenceEqual(data));
    }

    [Fact]
    public void Random_bytes_never_escape_as_other_exceptions()
    {
        var random = new Random(11);
        var seed = Encoding.ASCII.GetBytes("5;x=y\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: v\r\n\r\n");
        for (var i = 0; i < 20_000; i++)
        {
            var bytes = (byte[])seed.Clone();
            for (var m = random.Next(1, 4); m > 0; m--)
            {
                bytes[random.Next(bytes.Length)] = (byte)random.Next(256);
            }

            var decoder = new ChunkedDecoder(1 << 20, 1024);
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes));
            try
            {
                decoder.Decode(ref reader, new ArrayBufferWriter<byte>(), reencode: true);
            }
            catch (HttpRejectionException)
            {
                // Expected for most mutations.
            }
        }
    }

    private static bool DecodeAll(byte[] bytes, long maxData, int maxTrailer)
    {
        var decoder = new ChunkedDecoder(maxData, maxTrailer);
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes));
        return decoder.Decode(ref reader, new ArrayBufferWriter<byte>(), reencode: true);
    }

    private static string Run(string input, bool reencode, bool expectComplete = true)
    {
        var decoder = new ChunkedDecoder(0, 8192);
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(Encoding.Latin1.GetBytes(input)));
        var output = new ArrayBufferWriter<byte>();
        var complete = decoder.Decode(ref reader, output, reencode);
        if (expectComplete)
        {
            Assert.True(complete, "body should be complete");
        }

        return Encoding.ASCII.GetString(output.WrittenSpan);
    }

    /// <summary>Feeds the bytes in pieces, keeping unconsumed bytes as a pipe would.</summary>
    private static string RunIncrementally(byte[] bytes, int cut, bool byteByByte = false)
    {
        var decoder = new ChunkedDecoder(0, 8192);
        var output = new ArrayBufferWriter<byte>();
        var pending = new List<byte>();
        var pieces = byteByByte ? bytes.Select(b => new[] { b }) : [bytes[..cut], bytes[cut..]];
        var complete = false;
        foreach (var piece in pieces)
        {
            pending.AddRange(piece);
            var reader = new SequenceReader<byte>(Segments.Split([.. pending], pending.Count / 2));
            complete = decoder.Decode(ref reader, output, reencode: true);
            pending.RemoveRange(0, (int)reader.Consumed);
        }

        Assert.True(complete);
        return Encoding.ASCII.GetString(output.WrittenSpan);
    }
}
