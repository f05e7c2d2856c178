using System.Buffers;
using System.Text;

namespace Infra.LoadBalancer.Http;

/// <summary>Size limits of a message head.</summary>
/// <param name="MaxStartLine">Longest request or status line, CRLF included.</param>
/// <param name="MaxHeaderBytes">Total bytes of the header lines, CRLFs included.</param>
/// <param name="MaxHeaderCount">Most header lines.</param>
internal readonly record struct HeadLimits(int MaxStartLine, int MaxHeaderBytes, int MaxHeaderCount);

/// <summary>
/// Incremental HTTP/1.1 head parser (RFC 9112). It takes every complete line it finds, copies it into
/// the <see cref="HttpHead"/>, validates it and moves the reader past it; it returns false when it
/// needs more bytes (the caller marks the rest examined) and true once the empty line ending the
/// head is taken. Malformed input throws <see cref="HttpRejectionException"/>. Knows nothing of
/// sockets; runs on any segmentation of the input.
/// </summary>
internal static class HttpHeadParser
{
    // Some clients send a stray CRLF after a POST body; RFC 9112 §2.2 says to skip at least one.
    private const int MaxLeadingEmptyLines = 8;

    public static bool TryParseRequest(ref SequenceReader<byte> reader, HttpHead head, in HeadLimits limits) =>
        TryParse(ref reader, head, limits, isRequest: true);

    public static bool TryParseResponse(ref SequenceReader<byte> reader, HttpHead head, in HeadLimits limits) =>
        TryParse(ref reader, head, limits, isRequest: false);

    private static bool TryParse(ref SequenceReader<byte> reader, HttpHead head, in HeadLimits limits, bool isRequest)
    {
        while (true)
        {
            if (!reader.TryReadTo(out ReadOnlySequence<byte> raw, (byte)'\n', advancePastDelimiter: true))
            {
                // An unfinished line already over its limit will not get better by waiting.
                if (!head.StartLineDone)
                {
                    if (reader.Remaining > limits.MaxStartLine)
                    {
                        throw Reject(isRequest ? RejectionReason.RequestLineTooLong : RejectionReason.InvalidStatusLine);
                    }
                }
                else if (head.HeaderBytes + reader.Remaining > limits.MaxHeaderBytes)
                {
                    throw Reject(RejectionReason.HeadersTooLarge);
                }

                return false;
            }

            var lineLength = raw.Length + 1;
            if (!head.StartLineDone)
            {
                if (lineLength > limits.MaxStartLine)
                {
                    throw Reject(isRequest ? RejectionReason.RequestLineTooLong : RejectionReason.InvalidStatusLine);
                }
            }
            else if (head.HeaderBytes + lineLength > limits.MaxHeaderBytes)
            {
                throw Reject(RejectionReason.HeadersTooLarge);
            }

            var line = head.AppendLine((int)lineLength, out var offset);
            raw.CopyTo(line);
            line[^1] = (byte)'\n';
            if (line.Length < 2 || line[^2] != (byte)'\r')
            {
                throw Reject(RejectionReason.BareLineFeed);
            }

            var content = line[..^2];
            if (content.Contains((byte)'\r'))
            {
                throw Reject(RejectionReason.BareCarriageReturn);
            }

            if (!head.StartLineDone)
            {
                if (content.IsEmpty)
                {
                    // Tolerated before a request line only; not stored.
                    if (!isRequest || ++head.LeadingEmptyLines > MaxLeadingEmptyLines)
                    {
                        throw Reject(isRequest ? RejectionReason.TooManyLeadingEmptyLines : RejectionReason.InvalidStatusLine);
                    }

                    head.DropLastLine(line.Length);
                    continue;
                }

                if (isRequest)
                {
                    ParseRequestLine(content, offset, head);
                }
                else
                {
                    ParseStatusLine(content, offset, head);
                }

                head.StartLineDone = true;
                continue;
            }

            head.HeaderBytes += line.Length;
            if (content.IsEmpty)
            {
                return true;
            }

            if (head.FieldCount >= limits.MaxHeaderCount)
            {
                throw Reject(RejectionReason.TooManyHeaders);
            }

            ParseHeaderLine(content, offset, head);
        }
    }

    private static void ParseRequestLine(ReadOnlySpan<byte> line, int offset, HttpHead head)
    {
        var firstSpace = line.IndexOf((byte)' ');
        if (firstSpace <= 0)
        {
            throw Reject(RejectionReason.InvalidRequestLine);
        }

        var method = line[..firstSpace];
        if (method.IndexOfAnyExcept(HttpChars.Token) >= 0)
        {
            throw Reject(RejectionReason.InvalidMethod);
        }

        var rest = line[(firstSpace + 1)..];
        var secondSpace = rest.IndexOf((byte)' ');
        if (secondSpace <= 0)
        {
            throw Reject(RejectionReason.InvalidRequestLine);
        }

        var target = rest[..secondSpace];
        var version = rest[(secondSpace + 1)..];
        if (target.IndexOfAnyExcept(HttpChars.Target) >= 0)
        {
            throw Reject(RejectionReason.InvalidRequestTarget);
        }

        head.IsHttp11 = ParseVersion(version, RejectionReason.InvalidRequestLine);
        head.Method = Classify(method);
        head.MethodRange = new Range(offset, offset + firstSpace);
        var targetStart = offset + firstSpace + 1;
        head.TargetRange = new Range(targetStart, targetStart + target.Length);

        // RFC 9112 §3.2: origin-form, absolute-form, authority-form (CONNECT only), asterisk-form (OPTIONS only).
        if (head.Method == HttpMethod.Connect)
        {
            throw Reject(RejectionReason.MethodNotAllowed);
        }

        var valid = target[0] == (byte)'/'
            || (target.Length == 1 && target[0] == (byte)'*' && head.Method == HttpMethod.Options)
            || (SplitAbsoluteForm(target, out var authority, out _) && !authority.IsEmpty && !authority.Contains((byte)'@'));
        if (!valid)
        {
            throw Reject(RejectionReason.InvalidRequestTarget);
        }
    }

    private static void ParseStatusLine(ReadOnlySpan<byte> line, int offset, HttpHead head)
    {
        // HTTP-version SP 3DIGIT SP [ reason-phrase ]; a missing final SP is tolerated.
        if (line.Length < 12 || line[8] != (byte)' ')
        {
            throw Reject(RejectionReason.InvalidStatusLine);
        }

        head.IsHttp11 = ParseVersion(line[..8], RejectionReason.InvalidStatusLine);
        var code = line.Slice(9, 3);
        if (!char.IsAsciiDigit((char)code[0]) || !char.IsAsciiDigit((char)code[1]) || !char.IsAsciiDigit((char)code[2]))
        {
            throw Reject(RejectionReason.InvalidStatusLine);
        }

        var status = ((code[0] - '0') * 100) + ((code[1] - '0') * 10) + (code[2] - '0');
        if (status is < 100 or > 599)
        {
            throw Reject(RejectionReason.InvalidStatusLine);
        }

        head.StatusCode = status;
        if (line.Length == 12)
        {
            head.ReasonRange = new Range(offset + 12, offset + 12);
            return;
        }

        if (line[12] != (byte)' ' || line[13..].IndexOfAnyExcept(HttpChars.FieldValue) >= 0)
        {
            throw Reject(RejectionReason.InvalidStatusLine);
        }

        head.ReasonRange = new Range(offset + 13, offset + line.Length);
    }

    /// <summary>True for HTTP/1.1, false for HTTP/1.0; 505 for other versions; 400 for garbage.</summary>
    private static bool ParseVersion(ReadOnlySpan<byte> version, RejectionReason malformed)
    {
        if (version.SequenceEqual("HTTP/1.1"u8))
        {
            return true;
        }

        if (version.SequenceEqual("HTTP/1.0"u8))
        {
            return false;
        }

        if (version.Length == 8 && version.StartsWith("HTTP/"u8) && char.IsAsciiDigit((char)version[5])
            && version[6] == (byte)'.' && char.IsAsciiDigit((char)version[7]))
        {
            throw Reject(malformed == RejectionReason.InvalidRequestLine ? RejectionReason.UnsupportedHttpVersion : malformed);
        }

        throw Reject(malformed);
    }

    private static void ParseHeaderLine(ReadOnlySpan<byte> line, int offset, HttpHead head)
    {
        if (HttpChars.IsOws(line[0]))
        {
            throw Reject(RejectionReason.ObsoleteLineFolding);
        }

        var colon = line.IndexOf((byte)':');
        if (colon <= 0)
        {
            throw Reject(RejectionReason.InvalidHeaderName);
        }

        var name = line[..colon];
        var bad = name.IndexOfAnyExcept(HttpChars.Token);
        if (bad >= 0)
        {
            throw Reject(HttpChars.IsOws(name[bad]) ? RejectionReason.WhitespaceBeforeColon : RejectionReason.InvalidHeaderName);
        }

        var valueStart = colon + 1;
        while (valueStart < line.Length && HttpChars.IsOws(line[valueStart]))
        {
            valueStart++;
        }

        var valueEnd = line.Length;
        while (valueEnd > valueStart && HttpChars.IsOws(line[valueEnd - 1]))
        {
            valueEnd--;
        }

        var value = line[valueStart..valueEnd];
        if (value.IndexOfAnyExcept(HttpChars.FieldValue) >= 0)
        {
            throw Reject(RejectionReason.InvalidHeaderValue);
        }

        head.AddField(offset, colon, offset + valueStart, value.Length, KnownHeaders.Classify(name));
    }

    private static HttpMethod Classify(ReadOnlySpan<byte> method) => method.Length switch
    {
        3 when method.SequenceEqual("GET"u8) => HttpMethod.Get,
        3 when method.SequenceEqual("PUT"u8) => HttpMethod.Put,
        4 when method.SequenceEqual("POST"u8) => HttpMethod.Post,
        4 when method.SequenceEqual("HEAD"u8) => HttpMethod.Head,
        5 when method.SequenceEqual("PATCH"u8) => HttpMethod.Patch,
        5 when method.SequenceEqual("TRACE"u8) => HttpMethod.Trace,
        6 when method.SequenceEqual("DELETE"u8) => HttpMethod.Delete,
        7 when method.SequenceEqual("OPTIONS"u8) => HttpMethod.Options,
        7 when method.SequenceEqual("CONNECT"u8) => HttpMethod.Connect,
        _ => HttpMethod.Other,
    };

    /// <summary>
    /// An absolute-form target (<c>http://authority/path?query</c>) split into its authority and the rest
    /// (empty when the target has no path); false for other forms.
    /// </summary>
    public static bool SplitAbsoluteForm(ReadOnlySpan<byte> target, out ReadOnlySpan<byte> authority, out ReadOnlySpan<byte> rest)
    {
        authority = rest = default;
        if (target.IsEmpty || target[0] == (byte)'/')
        {
            return false; // origin-form, nearly every request: no scheme to look for
        }

        var scheme = StartsWithIgnoreCase(target, "http://"u8) ? 7 : StartsWithIgnoreCase(target, "https://"u8) ? 8 : 0;
        if (scheme == 0)
        {
            return false;
        }

        var after = target[scheme..];
        var end = after.IndexOfAny("/?#"u8);
        authority = end < 0 ? after : after[..end];
        rest = end < 0 ? [] : after[end..];
        return true;
    }

    private static bool StartsWithIgnoreCase(ReadOnlySpan<byte> value, ReadOnlySpan<byte> prefix) =>
        value.Length >= prefix.Length && Ascii.EqualsIgnoreCase(value[..prefix.Length], prefix);

    private static HttpRejectionException Reject(RejectionReason reason) => new(reason);
}
