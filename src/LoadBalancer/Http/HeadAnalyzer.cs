using System.Text;

namespace Infra.LoadBalancer.Http;

/// <summary>
/// Works out, from a parsed head, how its body is framed and what its Connection header asks, and
/// rejects the ambiguous framings request smuggling relies on (RFC 9112 §6.1–6.3, §11.2).
/// </summary>
internal static class HeadAnalyzer
{
    // 18 decimal digits cannot overflow a long.
    private const int MaxContentLengthDigits = 18;

    /// <summary>Analyses a request head; throws on framing that cannot be trusted.</summary>
    public static void AnalyzeRequest(HttpHead head, long maxBodySize)
    {
        var hosts = 0;
        var (contentLength, transferEncodings, chunkedLast, otherCodings) = ReadFraming(head, ref hosts, isRequest: true);

        if (hosts > 1)
        {
            throw new HttpRejectionException(RejectionReason.MultipleHost);
        }

        if (hosts == 0 && head.IsHttp11)
        {
            throw new HttpRejectionException(RejectionReason.MissingHost);
        }

        if (transferEncodings > 0)
        {
            if (!head.IsHttp11)
            {
                throw new HttpRejectionException(RejectionReason.TransferEncodingInHttp10);
            }

            if (contentLength >= 0)
            {
                throw new HttpRejectionException(RejectionReason.ContentLengthWithTransferEncoding);
            }

            if (!chunkedLast)
            {
                throw new HttpRejectionException(RejectionReason.InvalidTransferEncoding);
            }

            if (otherCodings)
            {
                // e.g. "gzip, chunked": framed correctly, but the proxy re-chunks and would have to
                // carry the other codings along. Refused rather than silently dropped (RFC 9112 §6.1).
                throw new HttpRejectionException(RejectionReason.UnsupportedTransferCoding);
            }

            head.Framing = BodyFraming.Chunked;
        }
        else if (contentLength >= 0)
        {
            if (maxBodySize > 0 && contentLength > maxBodySize)
            {
                throw new HttpRejectionException(RejectionReason.BodyTooLarge);
            }

            head.ContentLength = contentLength;
            head.Framing = contentLength > 0 ? BodyFraming.ContentLength : BodyFraming.None;
        }
        else
        {
            head.Framing = BodyFraming.None;
        }
    }

    /// <summary>
    /// Analyses a response head for the request it answers; throws (the caller answers 502) on framing
    /// the proxy could not relay faithfully.
    /// </summary>
    public static void AnalyzeResponse(HttpHead head, HttpMethod requestMethod)
    {
        var hosts = 0;
        var (contentLength, transferEncodings, chunkedLast, otherCodings) = ReadFraming(head, ref hosts, isRequest: false);
        if (transferEncodings > 0 && (contentLength >= 0 || !chunkedLast || otherCodings))
        {
            throw new HttpRejectionException(contentLength >= 0
                ? RejectionReason.ContentLengthWithTransferEncoding
                : RejectionReason.InvalidTransferEncoding);
        }

        if (transferEncodings > 0 && !head.IsHttp11)
        {
            // An HTTP/1.0 message with Transfer-Encoding has faulty framing (RFC 9112 §6.1): a 1.0 peer does
            // not chunk, so whatever follows is not what the header says. Relayed as chunked, it was a way to
            // desynchronise the proxy's reading of the backend connection.
            throw new HttpRejectionException(RejectionReason.TransferEncodingInHttp10);
        }

        head.ContentLength = contentLength;
        var status = head.StatusCode;
        if (requestMethod == HttpMethod.Head || status is < 200 or 204 or 304)
        {
            head.Framing = BodyFraming.None;
        }
        else if (transferEncodings > 0)
        {
            head.Framing = BodyFraming.Chunked;
        }
        else if (contentLength >= 0)
        {
            head.Framing = contentLength > 0 ? BodyFraming.ContentLength : BodyFraming.None;
        }
        else
        {
            head.Framing = BodyFraming.UntilClose;
        }
    }

    private static (long ContentLength, int TransferEncodings, bool ChunkedLast, bool OtherCodings) ReadFraming(HttpHead head, ref int hosts, bool isRequest)
    {
        long contentLength = -1;
        var transferEncodings = 0;
        var chunkedLast = false;
        var chunkedCount = 0;
        var codings = 0;
        for (var i = 0; i < head.FieldCount; i++)
        {
            ref var field = ref head.Field(i);
            var value = head.Value(field);
            switch (field.Kind)
            {
                case KnownHeader.Host:
                    hosts++;
                    head.HostField = i;
                    break;
                case KnownHeader.ContentLength:
                    if (contentLength >= 0)
                    {
                        throw new HttpRejectionException(RejectionReason.MultipleContentLength);
                    }

                    contentLength = ParseContentLength(value);
                    break;
                case KnownHeader.TransferEncoding:
                    transferEncodings++;
                    codings += ReadTransferCodings(value, ref chunkedLast, ref chunkedCount);
                    break;
                case KnownHeader.Connection:
                    ReadConnectionOptions(head, value);
                    break;
                case KnownHeader.Upgrade:
                    head.UpgradeField = i;
                    break;
                case KnownHeader.Expect when isRequest:
                    head.ExpectContinue |= Ascii.EqualsIgnoreCase(value, "100-continue"u8);
                    break;
            }
        }

        if (chunkedCount > 1)
        {
            throw new HttpRejectionException(RejectionReason.InvalidTransferEncoding);
        }

        if (head.HasNominatedFields)
        {
            MarkNominatedFields(head);
        }

        return (contentLength, transferEncodings, chunkedLast, codings > chunkedCount);
    }

    /// <summary>1*DIGIT and nothing else: no sign, no list, no spaces inside.</summary>
    internal static long ParseContentLength(ReadOnlySpan<byte> value)
    {
        if (value.IsEmpty || value.Length > MaxContentLengthDigits)
        {
            throw new HttpRejectionException(RejectionReason.InvalidContentLength);
        }

        long result = 0;
        foreach (var b in value)
        {
            if (b is < (byte)'0' or > (byte)'9')
            {
                throw new HttpRejectionException(RejectionReason.InvalidContentLength);
            }

            result = (result * 10) + (b - '0');
        }

        return result;
    }

    /// <summary>
    /// Reads a Transfer-Encoding list. Each coding must be a token (parameters allowed after ';'), and
    /// what matters is whether the last coding of the whole message is exactly <c>chunked</c>.
    /// </summary>
    /// <returns>How many codings the value lists.</returns>
    private static int ReadTransferCodings(ReadOnlySpan<byte> value, ref bool chunkedLast, ref int chunkedCount)
    {
        var count = 0;
        foreach (var range in value.Split((byte)','))
        {
            var element = HttpChars.TrimOws(value[range]);
            if (element.IsEmpty)
            {
                continue; // Empty list elements are allowed by the list syntax (RFC 9110 §5.6.1).
            }

            var semicolon = element.IndexOf((byte)';');
            var coding = semicolon >= 0 ? HttpChars.TrimOws(element[..semicolon]) : element;
            if (coding.IsEmpty || coding.IndexOfAnyExcept(HttpChars.Token) >= 0)
            {
                throw new HttpRejectionException(RejectionReason.InvalidTransferEncoding);
            }

            var isChunked = Ascii.EqualsIgnoreCase(coding, "chunked"u8);
            if (isChunked && semicolon >= 0)
            {
                throw new HttpRejectionException(RejectionReason.InvalidTransferEncoding);
            }

            chunkedCount += isChunked ? 1 : 0;
            chunkedLast = isChunked;
            count++;
        }

        if (count == 0)
        {
            throw new HttpRejectionException(RejectionReason.InvalidTransferEncoding);
        }

        return count;
    }

    private static void ReadConnectionOptions(HttpHead head, ReadOnlySpan<byte> value)
    {
        foreach (var range in value.Split((byte)','))
        {
            var option = HttpChars.TrimOws(value[range]);
            if (option.IsEmpty)
            {
                continue;
            }

            if (Ascii.EqualsIgnoreCase(option, "close"u8))
            {
                head.ConnectionClose = true;
            }
            else if (Ascii.EqualsIgnoreCase(option, "keep-alive"u8))
            {
                head.ConnectionKeepAlive = true;
            }
            else if (Ascii.EqualsIgnoreCase(option, "upgrade"u8))
            {
                head.ConnectionUpgrade = true;
            }
            else
            {
                head.HasNominatedFields = true;
            }
        }
    }

    /// <summary>Marks the fields the Connection header names (other than its own options): hop-by-hop.</summary>
    private static void MarkNominatedFields(HttpHead head)
    {
        for (var c = 0; c < head.FieldCount; c++)
        {
            if (head.Field(c).Kind != KnownHeader.Connection)
            {
                continue;
            }

            var value = head.Value(head.Field(c));
            foreach (var range in value.Split((byte)','))
            {
                var option = HttpChars.TrimOws(value[range]);
                if (option.IsEmpty)
                {
                    continue;
                }

                for (var i = 0; i < head.FieldCount; i++)
                {
                    ref var field = ref head.Field(i);
                    if (field.Kind is KnownHeader.Other or KnownHeader.Expect or KnownHeader.Via
                        or KnownHeader.XForwardedFor or KnownHeader.XForwardedHost or KnownHeader.XForwardedProto
                        && Ascii.EqualsIgnoreCase(head.Name(field), option))
                    {
                        field.Nominated = true;
                    }
                }
            }
        }
    }
}
