using System.Buffers;
using System.Buffers.Text;
using System.Globalization;
using System.IO.Pipelines;
using System.Text;

namespace Infra.CacheServer.Resp;

/// <summary>
/// Writes replies in the connection's protocol: RESP2, or RESP3 after <c>HELLO 3</c> (typed nulls,
/// maps, doubles, booleans, push messages). Each reply goes straight into the pipe's buffer.
/// </summary>
internal sealed class RespWriter(PipeWriter output)
{
    private static ReadOnlySpan<byte> Crlf => "\r\n"u8;

    public PipeWriter Output { get; } = output;

    /// <summary>2 or 3.</summary>
    public int Protocol { get; set; } = 2;

    public bool IsResp3 => Protocol == 3;

    public void Ok() => Output.Write("+OK\r\n"u8);

    public void Pong() => Output.Write("+PONG\r\n"u8);

    public void Queued() => Output.Write("+QUEUED\r\n"u8);

    public void SimpleString(string text)
    {
        var span = Output.GetSpan(text.Length + 3);
        span[0] = (byte)'+';
        var written = Encoding.ASCII.GetBytes(text, span[1..]);
        span[1 + written] = (byte)'\r';
        span[2 + written] = (byte)'\n';
        Output.Advance(written + 3);
    }

    /// <summary>An error reply; the text starts with its code ("ERR ...", "WRONGTYPE ...").</summary>
    public void Error(string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text.Replace('\r', ' ').Replace('\n', ' '));
        var span = Output.GetSpan(bytes.Length + 3);
        span[0] = (byte)'-';
        bytes.CopyTo(span[1..]);
        span[1 + bytes.Length] = (byte)'\r';
        span[2 + bytes.Length] = (byte)'\n';
        Output.Advance(bytes.Length + 3);
    }

    public void Integer(long value) => Prefixed((byte)':', value);

    public void Bulk(ReadOnlySpan<byte> value)
    {
        var span = Output.GetSpan(value.Length + 24);
        span[0] = (byte)'$';
        Utf8Formatter.TryFormat(value.Length, span[1..], out var digits);
        var position = 1 + digits;
        span[position++] = (byte)'\r';
        span[position++] = (byte)'\n';
        value.CopyTo(span[position..]);
        position += value.Length;
        span[position++] = (byte)'\r';
        span[position++] = (byte)'\n';
        Output.Advance(position);
    }

    public void Bulk(string value) => Bulk(Encoding.UTF8.GetBytes(value));

    /// <summary>Text for people (INFO, CLIENT LIST): a verbatim string <c>=N\r\ntxt:…</c> in RESP3, a bulk string in RESP2.</summary>
    public void Verbatim(string text)
    {
        if (!IsResp3)
        {
            Bulk(text);
            return;
        }

        var bytes = Encoding.UTF8.GetBytes("txt:" + text);
        Prefixed((byte)'=', bytes.Length);
        Output.Write(bytes);
        Output.Write("\r\n"u8);
    }

    /// <summary>A long as a bulk string (what INCRBYFLOAT and friends return).</summary>
    public void BulkNumber(long value)
    {
        Span<byte> digits = stackalloc byte[20];
        Utf8Formatter.TryFormat(value, digits, out var length);
        Bulk(digits[..length]);
    }

    /// <summary>A null bulk string: <c>$-1</c> in RESP2, <c>_</c> in RESP3.</summary>
    public void Null() => Output.Write(IsResp3 ? "_\r\n"u8 : "$-1\r\n"u8);

    /// <summary>A null array: <c>*-1</c> in RESP2, <c>_</c> in RESP3.</summary>
    public void NullArray() => Output.Write(IsResp3 ? "_\r\n"u8 : "*-1\r\n"u8);

    public void ArrayHeader(int count) => Prefixed((byte)'*', count);

    /// <summary>A map of <paramref name="pairs"/> entries (a flat array of 2×pairs in RESP2).</summary>
    public void MapHeader(int pairs)
    {
        if (IsResp3)
        {
            Prefixed((byte)'%', pairs);
        }
        else
        {
            Prefixed((byte)'*', pairs * 2L);
        }
    }

    /// <summary>A set (an array in RESP2).</summary>
    public void SetHeader(int count) => Prefixed(IsResp3 ? (byte)'~' : (byte)'*', count);

    /// <summary>An out-of-band push (pub/sub messages): <c>&gt;</c> in RESP3, an array in RESP2.</summary>
    public void PushHeader(int count) => Prefixed(IsResp3 ? (byte)'>' : (byte)'*', count);

    public void Double(double value)
    {
        var text = FormatDouble(value);
        if (IsResp3)
        {
            var span = Output.GetSpan(text.Length + 3);
            span[0] = (byte)',';
            var written = Encoding.ASCII.GetBytes(text, span[1..]);
            Crlf.CopyTo(span[(1 + written)..]);
            Output.Advance(written + 3);
        }
        else
        {
            Bulk(text);
        }
    }

    public void Boolean(bool value)
    {
        if (IsResp3)
        {
            Output.Write(value ? "#t\r\n"u8 : "#f\r\n"u8);
        }
        else
        {
            Integer(value ? 1 : 0);
        }
    }

    /// <summary>Redis's way of printing a double: shortest round-trip, never an exponent, "inf"/"-inf".</summary>
    public static string FormatDouble(double value)
    {
        if (double.IsPositiveInfinity(value))
        {
            return "inf";
        }

        if (double.IsNegativeInfinity(value))
        {
            return "-inf";
        }

        var text = value.ToString("R", CultureInfo.InvariantCulture);
        if (text.Contains('E', StringComparison.Ordinal))
        {
            text = value.ToString("F17", CultureInfo.InvariantCulture).TrimEnd('0').TrimEnd('.');
        }

        return text;
    }

    private void Prefixed(byte prefix, long value)
    {
        var span = Output.GetSpan(24);
        span[0] = prefix;
        Utf8Formatter.TryFormat(value, span[1..], out var digits);
        span[1 + digits] = (byte)'\r';
        span[2 + digits] = (byte)'\n';
        Output.Advance(digits + 3);
    }
}
