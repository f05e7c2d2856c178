using System.Buffers;
using System.Text;
using BenchmarkDotNet.Attributes;
using Infra.LoadBalancer.Http;

namespace Infra.Benchmarks;

/// <summary>
/// The load balancer's request path without sockets: parse a head, analyse its framing, write the
/// forwarded head. The happy path must not allocate.
/// </summary>
[MemoryDiagnoser]
public class HttpParserBenchmarks
{
    private static readonly HeadLimits Limits = new(8192, 32768, 100);
    private readonly HttpHead _head = new();
    private readonly ArrayBufferWriter<byte> _output = new(4096);
    private readonly byte[] _client = "192.0.2.10"u8.ToArray();
    private ReadOnlySequence<byte> _small;
    private ReadOnlySequence<byte> _browser;
    private ReadOnlySequence<byte> _chunked;

    [GlobalSetup]
    public void Setup()
    {
        _small = new ReadOnlySequence<byte>(Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n\r\n"));
        _browser = new ReadOnlySequence<byte>(Encoding.ASCII.GetBytes(
            "GET /products/42?ref=home&utm_source=newsletter HTTP/1.1\r\nHost: shop.example.com\r\n"
            + "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n"
            + "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n"
            + "Accept-Language: en-GB,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n"
            + "Cookie: session=3f9a8b7c6d5e4f3a2b1c; theme=dark; consent=yes\r\nReferer: https://shop.example.com/\r\n"
            + "Connection: keep-alive\r\nUpgrade-Insecure-Requests: 1\r\nSec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\n\r\n"));
        _chunked = new ReadOnlySequence<byte>(Encoding.ASCII.GetBytes(
            "400\r\n" + new string('x', 1024) + "\r\n400;ext=1\r\n" + new string('y', 1024) + "\r\n0\r\n\r\n"));
    }

    [Benchmark(Baseline = true)]
    public int ParseSmallRequest() => Parse(_small);

    [Benchmark]
    public int ParseBrowserRequest() => Parse(_browser);

    [Benchmark]
    public int ParseAndForwardBrowserRequest()
    {
        Parse(_browser);
        _output.ResetWrittenCount();
        HeadWriter.WriteRequest(_output, _head, _client, "backend:9001"u8, upgrade: false);
        return _output.WrittenCount;
    }

    [Benchmark]
    public long DecodeChunkedBody()
    {
        var decoder = new ChunkedDecoder(0, 1024);
        var reader = new SequenceReader<byte>(_chunked);
        _output.ResetWrittenCount();
        decoder.Decode(ref reader, _output, reencode: true);
        return decoder.DataBytes;
    }

    [GlobalCleanup]
    public void Cleanup() => _head.Dispose();

    private int Parse(ReadOnlySequence<byte> request)
    {
        _head.Reset();
        var reader = new SequenceReader<byte>(request);
        HttpHeadParser.TryParseRequest(ref reader, _head, Limits);
        HeadAnalyzer.AnalyzeRequest(_head, 0);
        return _head.FieldCount;
    }
}
