using System.Buffers;
using System.Text;
using Infra.LoadBalancer.Http;
using Infra.Testing;

namespace Infra.LoadBalancer.Tests.Http;

public class HttpHeadParserTests
{
    private static readonly HeadLimits Limits = new(8 * 1024, 32 * 1024, 100);

    private const string SimpleGet = "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n";

    public static TheoryData<string> ValidRequests() =>
    [
        SimpleGet,
        "GET / HTTP/1.0\r\n\r\n",
        "POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\n",
        "PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET http://example.com/abs HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "DELETE /items/7 HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Spaces:    padded value   \r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Obs-Text: caf\u00e9\r\nX-Tab:\tvalue\twith\ttabs\r\n\r\n",
        "\r\nGET /after-stray-crlf HTTP/1.1\r\nHost: a\r\n\r\n",
        "PATCH /p HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
        "M-SEARCH /custom HTTP/1.1\r\nHost: a\r\n\r\n",
    ];

    [Theory]
    [MemberData(nameof(ValidRequests))]
    public void Parses_a_valid_request_in_one_piece(string request)
    {
        var bytes = Latin1(request);
        var (head, consumed) = ParseRequest(new ReadOnlySequence<byte>(bytes));

        Assert.Equal(bytes.Length, consumed);
        Assert.True(head.StartLineDone);
    }

    [Fact]
    public void Exposes_the_request_line_and_fields()
    {
        var (head, _) = ParseRequest(new ReadOnlySequence<byte>(Latin1(SimpleGet)));

        Assert.Equal("GET", head.MethodString);
        Assert.Equal(Infra.LoadBalancer.Http.HttpMethod.Get, head.Method);
        Assert.Equal("/index.html?q=1", head.TargetString);
        Assert.True(head.IsHttp11);
        Assert.Equal(3, head.FieldCount);
        Assert.Equal("example.com", head.GetValueString("host"));
        Assert.Equal("*/*", head.GetValueString("Accept"));
        Assert.Equal(KnownHeader.Host, head.Field(0).Kind);
    }

    [Fact]
    public void Trims_optional_whitespace_around_values()
    {
        var (head, _) = ParseRequest(new ReadOnlySequence<byte>(Latin1("GET / HTTP/1.1\r\nHost: a\r\nX-Spaces: \t  v a l  \t\r\nX-Empty:\r\n\r\n")));

        Assert.Equal("v a l", head.GetValueString("X-Spaces"));
        Assert.Equal(string.Empty, head.GetValueString("X-Empty"));
    }

    [Theory]
    [MemberData(nameof(ValidRequests))]
    public void Every_proper_prefix_asks_for_more(string request)
    {
        var bytes = Latin1(request);
        for (var length = 0; length < bytes.Length; length++)
        {
            using var head = new HttpHead();
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes, 0, length));
            Assert.False(HttpHeadParser.TryParseRequest(ref reader, head, Limits), $"prefix of {length} bytes");
        }
    }

    [Theory]
    [MemberData(nameof(ValidRequests))]
    public void Byte_by_byte_arrival_gives_the_same_head(string request)
    {
        var bytes = Latin1(request);
        var (expected, _) = ParseRequest(new ReadOnlySequence<byte>(bytes));

        // Feed as a pipe would: keep what was not consumed, add one byte, parse again.
        using var head = new HttpHead();
        var pending = new List<byte>();
        var complete = false;
        foreach (var b in bytes)
        {
            pending.Add(b);
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(pending.ToArray()));
            complete = HttpHeadParser.TryParseRequest(ref reader, head, Limits);
            pending.RemoveRange(0, (int)reader.Consumed);
        }

        Assert.True(complete);
        Assert.Empty(pending);
        AssertSameHead(expected, head);
    }

    [Theory]
    [MemberData(nameof(ValidRequests))]
    public void Multi_segment_buffers_give_the_same_head(string request)
    {
        var bytes = Latin1(request);
        var (expected, _) = ParseRequest(new ReadOnlySequence<byte>(bytes));

        for (var cut = 1; cut < bytes.Length; cut++)
        {
            var (split, consumed) = ParseRequest(Segments.Split(bytes, cut, cut + 3));
            Assert.Equal(bytes.Length, consumed);
            AssertSameHead(expected, split);
        }

        var (single, _) = ParseRequest(Segments.OneBytePerSegment(bytes));
        AssertSameHead(expected, single);
    }

    [Fact]
    public void Stops_at_the_end_of_the_head_leaving_the_body_and_next_request()
    {
        var bytes = Latin1("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: a\r\n\r\n");
        var (head, consumed) = ParseRequest(new ReadOnlySequence<byte>(bytes));

        Assert.Equal("/a", head.TargetString);
        Assert.Equal("abcGET /b", Encoding.ASCII.GetString(bytes, (int)consumed, 9));
    }

    public static TheoryData<string, string> MalformedRequests() => new()
    {
        // Request line.
        { "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", nameof(RejectionReason.InvalidRequestLine) },
        { "GET /\r\nHost: a\r\n\r\n", nameof(RejectionReason.InvalidRequestLine) },
        { "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", nameof(RejectionReason.InvalidRequestLine) },
        { "GET / FOO/1.1\r\nHost: a\r\n\r\n", nameof(RejectionReason.InvalidRequestLine) },
        { "GET / http/1.1\r\nHost: a\r\n\r\n", nameof(RejectionReason.InvalidRequestLine) },
        { " GET / HTTP/1.1\r\nHost: a\r\n\r\n", nameof(RejectionReason.InvalidRequestLine) },
        { "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", nameof(RejectionReason.InvalidMethod) },
        { "GET /a\u0001b HTTP/1.1\r\nHost: a\r\n\r\n", nameof(RejectionReason.InvalidRequestTarget) },
        { "GET /caf\u00e9 HTTP/1.1\r\nHost: a\r\n\r\n", nameof(RejectionReason.InvalidRequestTarget) },
        { "GET relative HTTP/1.1\r\nHost: a\r\n\r\n", nameof(RejectionReason.InvalidRequestTarget) },
        { "GET http:///no-host HTTP/1.1\r\nHost: a\r\n\r\n", nameof(RejectionReason.InvalidRequestTarget) }, // absolute-form without an authority
        { "GET http://user:pw@a/ HTTP/1.1\r\nHost: a\r\n\r\n", nameof(RejectionReason.InvalidRequestTarget) }, // userinfo (RFC 9110 §4.2.4)
        { "GET * HTTP/1.1\r\nHost: a\r\n\r\n", nameof(RejectionReason.InvalidRequestTarget) },
        { "GET / HTTP/2.0\r\nHost: a\r\n\r\n", nameof(RejectionReason.UnsupportedHttpVersion) },
        { "GET / HTTP/1.2\r\nHost: a\r\n\r\n", nameof(RejectionReason.UnsupportedHttpVersion) },
        { "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", nameof(RejectionReason.MethodNotAllowed) },

        // Line endings.
        { "GET / HTTP/1.1\nHost: a\r\n\r\n", nameof(RejectionReason.BareLineFeed) },
        { "GET / HTTP/1.1\r\nHost: a\n\r\n", nameof(RejectionReason.BareLineFeed) },
        { "GET / HTTP/1.1\r\nHost: a\r\n\n", nameof(RejectionReason.BareLineFeed) },
        { "GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", nameof(RejectionReason.BareCarriageReturn) },
        { "GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", nameof(RejectionReason.BareCarriageReturn) },
        { "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", nameof(RejectionReason.TooManyLeadingEmptyLines) },

        // Header lines.
        { "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n", nameof(RejectionReason.ObsoleteLineFolding) },
        { "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n\ttwo\r\n\r\n", nameof(RejectionReason.ObsoleteLineFolding) },
        { "GET / HTTP/1.1\r\n Host: a\r\n\r\n", nameof(RejectionReason.ObsoleteLineFolding) },
        { "GET / HTTP/1.1\r\nHost : a\r\n\r\n", nameof(RejectionReason.WhitespaceBeforeColon) },
        { "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", nameof(RejectionReason.WhitespaceBeforeColon) },
        { "GET / HTTP/1.1\r\nContent Length: 5\r\n\r\n", nameof(RejectionReason.WhitespaceBeforeColon) },
        { "GET / HTTP/1.1\r\nHost: a\r\n: empty-name\r\n\r\n", nameof(RejectionReason.InvalidHeaderName) },
        { "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", nameof(RejectionReason.InvalidHeaderName) },
        { "GET / HTTP/1.1\r\nHo(st: a\r\n\r\n", nameof(RejectionReason.InvalidHeaderName) },
        { "GET / HTTP/1.1\r\nHost: a\r\nX: nul\u0000here\r\n\r\n", nameof(RejectionReason.InvalidHeaderValue) },
        { "GET / HTTP/1.1\r\nHost: a\r\nX: del\u007fhere\r\n\r\n", nameof(RejectionReason.InvalidHeaderValue) },
        { "GET / HTTP/1.1\r\nHost: a\r\nX: esc\u001bhere\r\n\r\n", nameof(RejectionReason.InvalidHeaderValue) },
    };

    [Theory]
    [MemberData(nameof(MalformedRequests))]
    public void Rejects_malformed_heads_with_the_reason(string request, string expected)
    {
        var bytes = Latin1(request);
        var ex = Assert.Throws<HttpRejectionException>(() => ParseRequest(new ReadOnlySequence<byte>(bytes)));
        Assert.Equal(expected, ex.Reason.ToString());

        // The same verdict whatever the segmentation.
        var split = Assert.Throws<HttpRejectionException>(() => ParseRequest(Segments.OneBytePerSegment(bytes)));
        Assert.Equal(expected, split.Reason.ToString());
    }

    [Fact]
    public void A_request_line_over_the_limit_is_414_even_before_it_ends()
    {
        var limits = new HeadLimits(64, 1024, 10);
        var longLine = "GET /" + new string('a', 100);

        var incomplete = Assert.Throws<HttpRejectionException>(() => ParseRequest(new ReadOnlySequence<byte>(Latin1(longLine)), limits));
        Assert.Equal(RejectionReason.RequestLineTooLong, incomplete.Reason);
        var complete = Assert.Throws<HttpRejectionException>(() =>
            ParseRequest(new ReadOnlySequence<byte>(Latin1(longLine + " HTTP/1.1\r\nHost: a\r\n\r\n")), limits));
        Assert.Equal(RejectionReason.RequestLineTooLong, complete.Reason);
        Assert.Equal(414, RejectionReasons.StatusCode(complete.Reason));
    }

    [Fact]
    public void A_request_line_at_the_limit_is_accepted()
    {
        var limits = new HeadLimits(64, 1024, 10);
        var line = "GET /" + new string('a', 64 - "GET / HTTP/1.1\r\n".Length) + " HTTP/1.1\r\n";
        Assert.Equal(64, line.Length);

        var (head, _) = ParseRequest(new ReadOnlySequence<byte>(Latin1(line + "Host: a\r\n\r\n")), limits);
        Assert.True(head.StartLineDone);
    }

    [Fact]
    public void Header_bytes_over_the_limit_are_431_even_before_the_line_ends()
    {
        var limits = new HeadLimits(1024, 100, 10);
        var big = "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + new string('b', 200);

        var incomplete = Assert.Throws<HttpRejectionException>(() => ParseRequest(new ReadOnlySequence<byte>(Latin1(big)), limits));
        Assert.Equal(RejectionReason.HeadersTooLarge, incomplete.Reason);
        var complete = Assert.Throws<HttpRejectionException>(() => ParseRequest(new ReadOnlySequence<byte>(Latin1(big + "\r\n\r\n")), limits));
        Assert.Equal(RejectionReason.HeadersTooLarge, complete.Reason);
        Assert.Equal(431, RejectionReasons.StatusCode(complete.Reason));
    }

    [Fact]
    public void Too_many_header_lines_are_431()
    {
        var limits = new HeadLimits(1024, 64 * 1024, 5);
        var request = "GET / HTTP/1.1\r\n" + string.Concat(Enumerable.Range(0, 6).Select(i => $"X-{i}: v\r\n")) + "\r\n";

        var ex = Assert.Throws<HttpRejectionException>(() => ParseRequest(new ReadOnlySequence<byte>(Latin1(request)), limits));
        Assert.Equal(RejectionReason.TooManyHeaders, ex.Reason);
        Assert.Equal(431, RejectionReasons.StatusCode(ex.Reason));
    }

    public static TheoryData<string> ValidResponses() =>
    [
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 204 No Content\r\n\r\n",
        "HTTP/1.0 404 Not Found\r\nServer: x\r\n\r\n",
        "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 \r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    ];

    [Theory]
    [MemberData(nameof(ValidResponses))]
    public void Parses_valid_responses_whatever_the_segmentation(string response)
    {
        var bytes = Latin1(response);
        var whole = ParseResponse(new ReadOnlySequence<byte>(bytes));
        for (var length = 0; length < bytes.Length; length++)
        {
            using var partial = new HttpHead();
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes, 0, length));
            Assert.False(HttpHeadParser.TryParseResponse(ref reader, partial, Limits));
        }

        var split = ParseResponse(Segments.OneBytePerSegment(bytes));
        Assert.Equal(whole.StatusCode, split.StatusCode);
        Assert.Equal(whole.FieldCount, split.FieldCount);
        Assert.InRange(whole.StatusCode, 100, 599);
    }

    [Theory]
    [InlineData("HTTP/1.1 2000 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 20 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 099 Low\r\n\r\n")]
    [InlineData("HTTP/1.1 600 High\r\n\r\n")]
    [InlineData("HTTP/2.0 200 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 OK 200\r\n\r\n")]
    [InlineData("garbage\r\n\r\n")]
    [InlineData("\r\nHTTP/1.1 200 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n")]
    public void Rejects_malformed_responses(string response)
    {
        Assert.Throws<HttpRejectionException>(() => ParseResponse(new ReadOnlySequence<byte>(Latin1(response))));
    }

    [Fact]
    public void Random_mutations_of_valid_requests_either_parse_or_are_rejected()
    {
        // Fuzz regression: whatever bytes arrive, the parser answers with a head, "more", or a
        // rejection; never another exception.
        var random = new Random(20261124);
        var seeds = ((IEnumerable<object[]>)ValidRequests()).Select(row => Latin1((string)row[0])).ToArray();
        for (var i = 0; i < 20_000; i++)
        {
            var bytes = (byte[])seeds[random.Next(seeds.Length)].Clone();
            for (var m = random.Next(1, 4); m > 0; m--)
            {
                bytes[random.Next(bytes.Length)] = (byte)random.Next(256);
            }

            using var head = new HttpHead();
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes));
            try
            {
                if (HttpHeadParser.TryParseRequest(ref reader, head, Limits))
                {
                    HeadAnalyzer.AnalyzeRequest(head, 1 << 20);
                }
            }
            catch (HttpRejectionException)
            {
                // Expected for most mutations.
            }
        }
    }

    internal static (HttpHead Head, long Consumed) ParseRequest(ReadOnlySequence<byte> sequence, HeadLimits? limits = null)
    {
        var head = new HttpHead();
        var reader = new SequenceReader<byte>(sequence);
        Assert.True(HttpHeadParser.TryParseRequest(ref reader, head, limits ?? Limits), "head should be complete");
        HeadAnalyzer.AnalyzeRequest(head, 1 << 20);
        return (head, reader.Consumed);
    }

    private static HttpHead ParseResponse(ReadOnlySequence<byte> sequence)
    {
        var head = new HttpHead();
        var reader = new SequenceReader<byte>(sequence);
        Assert.True(HttpHeadParser.TryParseResponse(ref reader, head, Limits), "head should be complete");
        HeadAnalyzer.AnalyzeResponse(head, Infra.LoadBalancer.Http.HttpMethod.Get);
        return head;
    }

    private static void AssertSameHead(HttpHead expected, HttpHead actual)
    {
        Assert.Equal(expected.MethodString, actual.MethodString);
        Assert.Equal(expected.TargetString, actual.TargetString);
        Assert.Equal(expected.IsHttp11, actual.IsHttp11);
        Assert.Equal(expected.FieldCount, actual.FieldCount);
        for (var i = 0; i < expected.FieldCount; i++)
        {
            Assert.True(expected.Name(expected.Field(i)).SequenceEqual(actual.Name(actual.Field(i))));
            Assert.True(expected.Value(expected.Field(i)).SequenceEqual(actual.Value(actual.Field(i))));
            Assert.Equal(expected.Field(i).Kind, actual.Field(i).Kind);
        }
    }

    internal static byte[] Latin1(string text) => Encoding.Latin1.GetBytes(text);
}
