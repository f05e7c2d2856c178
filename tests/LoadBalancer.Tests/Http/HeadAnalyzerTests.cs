using System.Buffers;
using Infra.LoadBalancer.Http;
using HttpMethod = Infra.LoadBalancer.Http.HttpMethod;

namespace Infra.LoadBalancer.Tests.Http;

public class HeadAnalyzerTests
{
    private static readonly HeadLimits Limits = new(8192, 32768, 100);

    public static TheoryData<string, string> SmugglingShapes() => new()
    {
        { "Content-Length: 5\r\nTransfer-Encoding: chunked", nameof(RejectionReason.ContentLengthWithTransferEncoding) },
        { "Transfer-Encoding: chunked\r\nContent-Length: 5", nameof(RejectionReason.ContentLengthWithTransferEncoding) },
        { "Content-Length: 0\r\nTransfer-Encoding: chunked", nameof(RejectionReason.ContentLengthWithTransferEncoding) },
        { "Content-Length: 5\r\nContent-Length: 5", nameof(RejectionReason.MultipleContentLength) },
        { "Content-Length: 5\r\nContent-Length: 6", nameof(RejectionReason.MultipleContentLength) },
        { "Content-Length: 5, 5", nameof(RejectionReason.InvalidContentLength) },
        { "Content-Length: -1", nameof(RejectionReason.InvalidContentLength) },
        { "Content-Length: +5", nameof(RejectionReason.InvalidContentLength) },
        { "Content-Length: 0x10", nameof(RejectionReason.InvalidContentLength) },
        { "Content-Length: 5 5", nameof(RejectionReason.InvalidContentLength) },
        { "Content-Length: five", nameof(RejectionReason.InvalidContentLength) },
        { "Content-Length:", nameof(RejectionReason.InvalidContentLength) },
        { "Content-Length: 99999999999999999999", nameof(RejectionReason.InvalidContentLength) },
        { "Transfer-Encoding: chunked, identity", nameof(RejectionReason.InvalidTransferEncoding) },
        { "Transfer-Encoding: identity", nameof(RejectionReason.InvalidTransferEncoding) },
        { "Transfer-Encoding: gzip", nameof(RejectionReason.InvalidTransferEncoding) },
        { "Transfer-Encoding: xchunked", nameof(RejectionReason.InvalidTransferEncoding) },
        { "Transfer-Encoding: chunked;ext=1", nameof(RejectionReason.InvalidTransferEncoding) },
        { "Transfer-Encoding: chunked, chunked", nameof(RejectionReason.InvalidTransferEncoding) },
        { "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", nameof(RejectionReason.InvalidTransferEncoding) },
        { "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip", nameof(RejectionReason.InvalidTransferEncoding) },
        { "Transfer-Encoding: \"chunked\"", nameof(RejectionReason.InvalidTransferEncoding) },
        { "Transfer-Encoding:", nameof(RejectionReason.InvalidTransferEncoding) },
        { "Transfer-Encoding: ,", nameof(RejectionReason.InvalidTransferEncoding) },
    };

    [Theory]
    [MemberData(nameof(SmugglingShapes))]
    public void Rejects_every_ambiguous_request_framing(string fields, string expected)
    {
        var ex = Assert.Throws<HttpRejectionException>(() => Analyze($"POST / HTTP/1.1\r\nHost: a\r\n{fields}\r\n\r\n"));
        Assert.Equal(expected, ex.Reason.ToString());
        Assert.Equal(400, RejectionReasons.StatusCode(ex.Reason));
    }

    [Theory]
    [InlineData("Transfer-Encoding: chunked")]
    [InlineData("Transfer-Encoding: Chunked")]
    [InlineData("Transfer-Encoding:  chunked  ")]
    public void Accepts_chunked_as_the_final_coding(string fields)
    {
        var head = Analyze($"POST / HTTP/1.1\r\nHost: a\r\n{fields}\r\n\r\n");
        Assert.Equal(BodyFraming.Chunked, head.Framing);
        Assert.True(head.HasBody);
    }

    [Theory]
    [InlineData("Transfer-Encoding: gzip, chunked")]
    [InlineData("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked")]
    public void Other_codings_before_chunked_are_501_not_silently_dropped(string fields)
    {
        var ex = Assert.Throws<HttpRejectionException>(() => Analyze($"POST / HTTP/1.1\r\nHost: a\r\n{fields}\r\n\r\n"));
        Assert.Equal(RejectionReason.UnsupportedTransferCoding, ex.Reason);
        Assert.Equal(501, RejectionReasons.StatusCode(ex.Reason));
    }

    [Fact]
    public void Transfer_encoding_in_http10_is_rejected()
    {
        var ex = Assert.Throws<HttpRejectionException>(() => Analyze("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"));
        Assert.Equal(RejectionReason.TransferEncodingInHttp10, ex.Reason);
    }

    [Theory]
    [InlineData("GET / HTTP/1.1\r\n\r\n", nameof(RejectionReason.MissingHost))]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", nameof(RejectionReason.MultipleHost))]
    [InlineData("GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", nameof(RejectionReason.MultipleHost))]
    public void Host_must_appear_once_in_http11(string request, string expected)
    {
        var ex = Assert.Throws<HttpRejectionException>(() => Analyze(request));
        Assert.Equal(expected, ex.Reason.ToString());
    }

    [Fact]
    public void Content_length_frames_the_body_and_zero_means_none()
    {
        var head = Analyze("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0012\r\n\r\n");
        Assert.Equal(BodyFraming.ContentLength, head.Framing);
        Assert.Equal(12, head.ContentLength);

        var empty = Analyze("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        Assert.Equal(BodyFraming.None, empty.Framing);
        Assert.False(empty.HasBody);

        var none = Analyze("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        Assert.Equal(BodyFraming.None, none.Framing);
    }

    [Fact]
    public void A_declared_body_over_the_limit_is_413_at_once()
    {
        var ex = Assert.Throws<HttpRejectionException>(() => Analyze("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\n\r\n", maxBody: 1024));
        Assert.Equal(RejectionReason.BodyTooLarge, ex.Reason);
        Assert.Equal(413, RejectionReasons.StatusCode(ex.Reason));
        Assert.Equal(1024, Analyze("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1024\r\n\r\n", maxBody: 1024).ContentLength);
    }

    [Fact]
    public void Reads_connection_options_and_marks_nominated_fields()
    {
        var head = Analyze("GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret , Upgrade\r\nUpgrade: websocket\r\nX-Secret: 1\r\nX-Kept: 2\r\n\r\n");

        Assert.True(head.ConnectionClose);
        Assert.True(head.ConnectionUpgrade);
        Assert.True(head.UpgradeField >= 0);
        var secret = FieldNamed(head, "X-Secret");
        var kept = FieldNamed(head, "X-Kept");
        Assert.True(secret.Nominated);
        Assert.False(kept.Nominated);
    }

    [Fact]
    public void Connection_cannot_nominate_framing_or_host_fields()
    {
        var head = Analyze("POST / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length, Host\r\nContent-Length: 3\r\n\r\n");

        Assert.False(FieldNamed(head, "Content-Length").Nominated);
        Assert.False(FieldNamed(head, "Host").Nominated);
        Assert.Equal(3, head.ContentLength);
    }

    [Fact]
    public void Recognises_expect_100_continue()
    {
        Assert.True(Analyze("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n").ExpectContinue);
        Assert.False(Analyze("PUT / HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\nContent-Length: 1\r\n\r\n").ExpectContinue);
    }

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "GET", nameof(BodyFraming.ContentLength))]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "GET", nameof(BodyFraming.None))]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", nameof(BodyFraming.Chunked))]
    [InlineData("HTTP/1.1 200 OK\r\n\r\n", "GET", nameof(BodyFraming.UntilClose))]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD", nameof(BodyFraming.None))]
    [InlineData("HTTP/1.1 204 No Content\r\n\r\n", "GET", nameof(BodyFraming.None))]
    [InlineData("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", "GET", nameof(BodyFraming.None))]
    [InlineData("HTTP/1.1 101 Switching Protocols\r\n\r\n", "GET", nameof(BodyFraming.None))]
    public void Works_out_response_framing(string response, string method, string expected)
    {
        var head = AnalyzeResponse(response, method == "HEAD" ? HttpMethod.Head : HttpMethod.Get);
        Assert.Equal(expected, head.Framing.ToString());
    }

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")]
    [InlineData("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")] // faulty framing in HTTP/1.0 (RFC 9112 §6.1)
    public void Rejects_ambiguous_response_framing(string response)
    {
        Assert.Throws<HttpRejectionException>(() => AnalyzeResponse(response, HttpMethod.Get));
    }

    private static HeaderField FieldNamed(HttpHead head, string name)
    {
        for (var i = 0; i < head.FieldCount; i++)
        {
            if (System.Text.Ascii.EqualsIgnoreCase(head.Name(head.Field(i)), System.Text.Encoding.ASCII.GetBytes(name)))
            {
                return head.Field(i);
            }
        }

        throw new InvalidOperationException($"no field {name}");
    }

    private static HttpHead Analyze(string request, long maxBody = 1 << 20)
    {
        var head = new HttpHead();
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(HttpHeadParserTests.Latin1(request)));
        Assert.True(HttpHeadParser.TryParseRequest(ref reader, head, Limits));
        HeadAnalyzer.AnalyzeRequest(head, maxBody);
        return head;
    }

    private static HttpHead AnalyzeResponse(string response, HttpMethod method)
    {
        var head = new HttpHead();
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(HttpHeadParserTests.Latin1(response)));
        Assert.True(HttpHeadParser.TryParseResponse(ref reader, head, Limits));
        HeadAnalyzer.AnalyzeResponse(head, method);
        return head;
    }
}
