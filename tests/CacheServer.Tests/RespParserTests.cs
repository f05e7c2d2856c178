using System.Buffers;
using System.Text;
using Infra.CacheServer.Resp;
using Infra.Testing;

namespace Infra.CacheServer.Tests;

public class RespParserTests
{
    private static readonly RespLimits Limits = RespLimits.Default;

    public static TheoryData<string, string[]> ValidFrames() => new()
    {
        { "*1\r\n$4\r\nPING\r\n", ["PING"] },
        { "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n", ["SET", "key", "value"] },
        { "*2\r\n$3\r\nGET\r\n$0\r\n\r\n", ["GET", ""] },
        { "*2\r\n$4\r\nECHO\r\n$6\r\na\r\nb\0c\r\n", ["ECHO", "a\r\nb\0c"] },
        { "PING\r\n", ["PING"] },
        { "PING\n", ["PING"] },
        { "SET  k   v\r\n", ["SET", "k", "v"] },
        { "SET k \"hello world\"\r\n", ["SET", "k", "hello world"] },
        { "SET k \"a\\x41\\n\\\"q\\\"\"\r\n", ["SET", "k", "aA\n\"q\""] },
        { "SET k 'it''s'\r\n", null! },
        { "SET k 'don\\'t'\r\n", ["SET", "k", "don't"] },
        { "SET k \"\"\r\n", ["SET", "k", ""] },
    };

    [Theory]
    [MemberData(nameof(ValidFrames))]
    public void Parses_valid_frames(string frame, string[]? expected)
    {
        var bytes = Encoding.Latin1.GetBytes(frame);
        var request = new RespRequest();
        var status = RespParser.TryParse(bytes, request, Limits, out var consumed, out var error);
        if (expected is null)
        {
            // 'it''s': a closing quote not followed by a space is unbalanced, as in Redis.
            Assert.Equal(ParseStatus.Error, status);
            Assert.Equal("Protocol error: unbalanced quotes in request", error);
            return;
        }

        Assert.Equal(ParseStatus.Complete, status);
        Assert.Equal(bytes.Length, consumed);
        Assert.Equal(expected, Args(bytes, request));
    }

    [Theory]
    [MemberData(nameof(ValidFrames))]
    public void Every_proper_prefix_is_incomplete(string frame, string[]? expected)
    {
        if (expected is null)
        {
            return;
        }

        var bytes = Encoding.Latin1.GetBytes(frame);
        for (var length = 0; length < bytes.Length; length++)
        {
            var request = new RespRequest();
            var status = RespParser.TryParse(bytes.AsSpan(0, length), request, Limits, out _, out var error);

            // An inline frame cut after its last word but before '\n' is still incomplete.
            Assert.True(status == ParseStatus.Incomplete, $"prefix {length}: {status} {error}");
        }
    }

    [Theory]
    [MemberData(nameof(ValidFrames))]
    public void A_frame_arriving_in_pieces_parses_once_complete(string frame, string[]? expected)
    {
        if (expected is null)
        {
            return;
        }

        // As the session does: the same request object, the buffer growing from the frame start.
        var bytes = Encoding.Latin1.GetBytes(frame);
        var request = new RespRequest();
        for (var length = 1; length <= bytes.Length; length++)
        {
            var status = RespParser.TryParse(bytes.AsSpan(0, length), request, Limits, out var consumed, out _);
            if (length < bytes.Length)
            {
                Assert.Equal(ParseStatus.Incomplete, status);
            }
            else
            {
                Assert.Equal(ParseStatus.Complete, status);
                Assert.Equal(bytes.Length, consumed);
                Assert.Equal(expected, Args(bytes, request));
            }
        }
    }

    [Fact]
    public void Multi_segment_buffers_parse_like_contiguous_ones()
    {
        var bytes = Encoding.ASCII.GetBytes("*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n*1\r\n$4\r\nPING\r\n");
        for (var cut = 1; cut < bytes.Length; cut++)
        {
            byte[]? scratch = null;
            var span = CacheSession.Contiguous(Segments.Split(bytes, cut), ref scratch);
            var request = new RespRequest();
            Assert.Equal(ParseStatus.Complete, RespParser.TryParse(span, request, Limits, out var first, out _));
            Assert.Equal(["SET", "key", "value"], Args(span, request));
            Assert.Equal(ParseStatus.Complete, RespParser.TryParse(span[first..], request, Limits, out _, out _));
            Assert.Equal(["PING"], Args(span[first..], request));
        }

        byte[]? single = null;
        Assert.True(CacheSession.Contiguous(Segments.OneBytePerSegment(bytes), ref single).SequenceEqual(bytes));
    }

    [Fact]
    public void Pipelined_commands_parse_one_after_another()
    {
        var bytes = Encoding.ASCII.GetBytes("*1\r\n$4\r\nPING\r\nECHO hi\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        var request = new RespRequest();
        var position = 0;
        var commands = new List<string[]>();
        while (position < bytes.Length)
        {
            Assert.Equal(ParseStatus.Complete, RespParser.TryParse(bytes.AsSpan(position), request, Limits, out var used, out _));
            commands.Add(Args(bytes.AsSpan(position, used), request));
            position += used;
        }

        Assert.Equal([["PING"], ["ECHO", "hi"], ["GET", "k"]], commands);
    }

    [Theory]
    [InlineData("*0\r\n")]
    [InlineData("*-1\r\n")]
    [InlineData("\r\n")]
    [InlineData("   \r\n")]
    public void Empty_commands_parse_to_nothing(string frame)
    {
        var request = new RespRequest();
        Assert.Equal(ParseStatus.Complete, RespParser.TryParse(Encoding.ASCII.GetBytes(frame), request, Limits, out var consumed, out _));
        Assert.Equal(frame.Length, consumed);
        Assert.Equal(0, request.Count);
    }

    public static TheoryData<string, string> HostileFrames() => new()
    {
        { "*1\r\n$-5\r\nabcde\r\n", "Protocol error: invalid bulk length" },
        { "*1\r\n$99999999999999999999\r\n", "Protocol error: invalid bulk length" },
        { "*1\r\n$536870913\r\n", "Protocol error: invalid bulk length" },
        { "*1\r\n$abc\r\n", "Protocol error: invalid bulk length" },
        { "*1\r\n$3\nfoo\r\n", "Protocol error: invalid bulk length" },
        { "*abc\r\n", "Protocol error: invalid multibulk length" },
        { "*1048577\r\n", "Protocol error: invalid multibulk length" },
        { "*9223372036854775807\r\n", "Protocol error: invalid multibulk length" },
        { "*2\n$3\r\nGET\r\n", "Protocol error: invalid multibulk length" },
        { "*1\r\n:3\r\n", "Protocol error: expected '$', got ':'" },
        { "*1\r\n\u00ff3\r\n", "Protocol error: expected '$', got '?'" },
        { "*1\r\n$3\r\nfooXY", "Protocol error: bulk data is not followed by CRLF" },
        { "*1\r\n$3\r\nfoo\n\r", "Protocol error: bulk data is not followed by CRLF" },
        { "SET \"open\r\n", "Protocol error: unbalanced quotes in request" },
        { "SET \"closed\"x\r\n", "Protocol error: unbalanced quotes in request" },
    };

    [Theory]
    [MemberData(nameof(HostileFrames))]
    public void Rejects_hostile_frames_with_redis_error_text(string frame, string expected)
    {
        var request = new RespRequest();
        var status = RespParser.TryParse(Encoding.Latin1.GetBytes(frame), request, Limits, out _, out var error);
        Assert.Equal(ParseStatus.Error, status);
        Assert.Equal(expected, error);
    }

    [Fact]
    public void A_million_element_header_allocates_nothing_until_the_elements_come()
    {
        var request = new RespRequest();
        var before = GC.GetAllocatedBytesForCurrentThread();
        var status = RespParser.TryParse("*1000000\r\n"u8, request, Limits, out _, out _);
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Equal(ParseStatus.Incomplete, status);
        Assert.True(allocated < 1024, $"allocated {allocated} bytes for a header");
    }

    [Fact]
    public void Over_long_lines_are_refused_before_they_end()
    {
        var limits = new RespLimits(512 * 1024 * 1024, 1024 * 1024, 1024);
        var request = new RespRequest();

        Assert.Equal("Protocol error: too big inline request",
            Error(Encoding.ASCII.GetBytes("SET k " + new string('x', 2000)), limits));
        Assert.Equal("Protocol error: too big mbulk count string",
            Error(Encoding.ASCII.GetBytes("*" + new string('1', 2000)), limits));
        Assert.Equal("Protocol error: too big bulk count string",
            Error(Encoding.ASCII.GetBytes("*1\r\n$" + new string('1', 2000)), limits));
        Assert.Equal("Protocol error: invalid bulk length",
            Error(Encoding.ASCII.GetBytes("*1\r\n$2000000000\r\n"), limits with { MaxBulkLength = 1000 }));
        Assert.Equal("Protocol error: invalid multibulk length",
            Error(Encoding.ASCII.GetBytes("*11\r\n"), limits with { MaxMultibulkLength = 10 }));

        string? Error(byte[] bytes, RespLimits l) => RespParser.TryParse(bytes, request, l, out _, out var error) == ParseStatus.Error ? error : null;
    }

    [Fact]
    public void Fuzz_regression_random_bytes_never_throw()
    {
        var random = new Random(1234);
        var seeds = new[]
        {
            "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n", "SET k \"v\\x41\"\r\n", "*1\r\n$4\r\nPING\r\n", "GET 'a b'\r\n",
        }.Select(Encoding.ASCII.GetBytes).ToArray();
        for (var i = 0; i < 50_000; i++)
        {
            var bytes = (byte[])seeds[random.Next(seeds.Length)].Clone();
            for (var m = random.Next(1, 4); m > 0; m--)
            {
                bytes[random.Next(bytes.Length)] = (byte)random.Next(256);
            }

            var request = new RespRequest();
            var length = random.Next(bytes.Length + 1);
            var status = RespParser.TryParse(bytes.AsSpan(0, length), request, Limits, out var consumed, out var error);
            Assert.True(consumed <= length);
            Assert.True(status != ParseStatus.Error || error is not null);
            if (status == ParseStatus.Complete)
            {
                for (var a = 0; a < request.Count; a++)
                {
                    _ = request.Arg(bytes, a);
                }
            }
        }

        // Regressions found by hand: each must answer without throwing.
        foreach (var raw in new[] { "*", "*\r\n", "$", "*1\r\n$", "*1\r\n$\r\n", "\"", "'\r\n", "\\x", "*-9223372036854775808\r\n", "*1\r\n$0\r\n" })
        {
            RespParser.TryParse(Encoding.ASCII.GetBytes(raw), new RespRequest(), Limits, out _, out _);
        }
    }

    private static string[] Args(ReadOnlySpan<byte> frame, RespRequest request)
    {
        var args = new string[request.Count];
        for (var i = 0; i < request.Count; i++)
        {
            args[i] = Encoding.Latin1.GetString(request.Arg(frame, i));
        }

        return args;
    }
}
