using System.Buffers;

namespace Infra.LoadBalancer.Http;

/// <summary>The byte classes of RFC 9110/9112 the parsers validate against.</summary>
internal static class HttpChars
{
    /// <summary>tchar: the characters of a token (method, header name, transfer coding).</summary>
    public static readonly SearchValues<byte> Token =
        SearchValues.Create("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"u8);

    /// <summary>field-vchar, SP and HTAB: what a header value may hold (obs-text included).</summary>
    public static readonly SearchValues<byte> FieldValue = SearchValues.Create(FieldValueBytes());

    /// <summary>Visible ASCII: what a request target may hold.</summary>
    public static readonly SearchValues<byte> Target = SearchValues.Create(Range(0x21, 0x7E));

    public static readonly SearchValues<byte> Hex = SearchValues.Create("0123456789ABCDEFabcdef"u8);

    private static byte[] FieldValueBytes()
    {
        var bytes = new List<byte> { (byte)'\t' };
        bytes.AddRange(Range(0x20, 0x7E));
        bytes.AddRange(Range(0x80, 0xFF));
        return [.. bytes];
    }

    private static byte[] Range(int first, int last)
    {
        var bytes = new byte[last - first + 1];
        for (var i = 0; i < bytes.Length; i++)
        {
            bytes[i] = (byte)(first + i);
        }

        return bytes;
    }

    public static bool IsOws(byte b) => b is (byte)' ' or (byte)'\t';

    public static ReadOnlySpan<byte> TrimOws(ReadOnlySpan<byte> span)
    {
        var start = 0;
        while (start < span.Length && IsOws(span[start]))
        {
            start++;
        }

        var end = span.Length;
        while (end > start && IsOws(span[end - 1]))
        {
            end--;
        }

        return span[start..end];
    }
}
