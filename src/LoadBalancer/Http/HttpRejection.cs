namespace Infra.LoadBalancer.Http;

/// <summary>Why a message was refused. Each maps to one status code and one metric label.</summary>
internal enum RejectionReason
{
    InvalidRequestLine,
    InvalidMethod,
    InvalidRequestTarget,
    UnsupportedHttpVersion,
    RequestLineTooLong,
    HeadersTooLarge,
    TooManyHeaders,
    InvalidHeaderName,
    WhitespaceBeforeColon,
    ObsoleteLineFolding,
    BareCarriageReturn,
    BareLineFeed,
    InvalidHeaderValue,
    MissingHost,
    MultipleHost,
    ContentLengthWithTransferEncoding,
    MultipleContentLength,
    InvalidContentLength,
    InvalidTransferEncoding,
    UnsupportedTransferCoding,
    TransferEncodingInHttp10,
    InvalidChunkSize,
    InvalidChunkTerminator,
    InvalidTrailer,
    BodyTooLarge,
    HeaderTimeout,
    BodyTimeout,
    MethodNotAllowed,
    InvalidStatusLine,
    TooManyLeadingEmptyLines,
}

/// <summary>Thrown by the parsers on malformed input; carries the reason, never a message to parse.</summary>
internal sealed class HttpRejectionException : Exception
{
    public HttpRejectionException(RejectionReason reason)
        : base($"HTTP message rejected: {RejectionReasons.Label(reason)}")
    {
        Reason = reason;
    }

    public HttpRejectionException()
        : this(RejectionReason.InvalidRequestLine)
    {
    }

    public HttpRejectionException(string message)
        : base(message)
    {
    }

    public HttpRejectionException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public RejectionReason Reason { get; }
}

internal static class RejectionReasons
{
    private static readonly string[] Labels = BuildLabels();

    /// <summary>The status code a client gets for a rejected request.</summary>
    public static int StatusCode(RejectionReason reason) => reason switch
    {
        RejectionReason.RequestLineTooLong => 414,
        RejectionReason.HeadersTooLarge or RejectionReason.TooManyHeaders => 431,
        RejectionReason.BodyTooLarge => 413,
        RejectionReason.HeaderTimeout or RejectionReason.BodyTimeout => 408,
        RejectionReason.UnsupportedHttpVersion => 505,
        RejectionReason.MethodNotAllowed => 405,
        RejectionReason.UnsupportedTransferCoding => 501,
        _ => 400,
    };

    /// <summary>snake_case name used in metrics, logs and error bodies.</summary>
    public static string Label(RejectionReason reason) => Labels[(int)reason];

    private static string[] BuildLabels()
    {
        var values = Enum.GetValues<RejectionReason>();
        var labels = new string[values.Length];
        foreach (var value in values)
        {
            var name = value.ToString();
            var builder = new System.Text.StringBuilder(name.Length + 8);
            for (var i = 0; i < name.Length; i++)
            {
                if (char.IsUpper(name[i]) && i > 0)
                {
                    builder.Append('_');
                }

                builder.Append(char.ToLowerInvariant(name[i]));
            }

            labels[(int)value] = builder.ToString();
        }

        return labels;
    }

    public static HttpRejectionException Reject(RejectionReason reason) => new(reason);
}
