using System.IO.Pipelines;
using System.Text;
using Infra.CacheServer.Resp;

namespace Infra.CacheServer.Tests;

public class RespWriterTests
{
    [Fact]
    public async Task Writes_resp2_and_resp3_forms()
    {
        Assert.Equal("$-1\r\n*-1\r\n*4\r\n$3\r\n1.5\r\n:1\r\n*2\r\n", await Write(2, w =>
        {
            w.Null();
            w.NullArray();
            w.MapHeader(2);
            w.Double(1.5);
            w.Boolean(true);
            w.SetHeader(2);
        }));
        Assert.Equal("_\r\n_\r\n%2\r\n,1.5\r\n#t\r\n~2\r\n>3\r\n", await Write(3, w =>
        {
            w.Null();
            w.NullArray();
            w.MapHeader(2);
            w.Double(1.5);
            w.Boolean(true);
            w.SetHeader(2);
            w.PushHeader(3);
        }));
    }

    [Fact]
    public async Task Writes_simple_values_and_binary_bulk_strings()
    {
        Assert.Equal("+OK\r\n-ERR bad  thing\r\n:-42\r\n$5\r\na\r\nb\0\r\n$0\r\n\r\n", await Write(2, w =>
        {
            w.Ok();
            w.Error("ERR bad\r\nthing");
            w.Integer(-42);
            w.Bulk("a\r\nb\0"u8);
            w.Bulk([]);
        }));
    }

    [Theory]
    [InlineData(1.5, "1.5")]
    [InlineData(10.0, "10")]
    [InlineData(0.1 + 0.2, "0.30000000000000004")]
    [InlineData(1e20, "100000000000000000000")]
    [InlineData(double.PositiveInfinity, "inf")]
    [InlineData(double.NegativeInfinity, "-inf")]
    public void Formats_doubles_as_redis_does(double value, string expected) => Assert.Equal(expected, RespWriter.FormatDouble(value));

    private static async Task<string> Write(int protocol, Action<RespWriter> write)
    {
        var pipe = new Pipe();
        var writer = new RespWriter(pipe.Writer) { Protocol = protocol };
        write(writer);
        await pipe.Writer.FlushAsync();
        await pipe.Writer.CompleteAsync();
        var result = await pipe.Reader.ReadAsync();
        var text = Encoding.Latin1.GetString(System.Buffers.BuffersExtensions.ToArray(result.Buffer));
        pipe.Reader.AdvanceTo(result.Buffer.End);
        return text;
    }
}
