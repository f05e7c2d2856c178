namespace Infra.QueueBroker;

/// <summary>
/// Typed errors of the broker. The same names travel in the native protocol (as the string) and in
/// HTTP JSON <c>{"error","code"}</c>; <see cref="BrokerErrors.HttpStatus"/> maps each to a status.
/// </summary>
public enum ErrorCode
{
    None = 0,

    /// <summary>Malformed request: bad frame, bad field, unknown operation.</summary>
    BadRequest,

    /// <summary>A frame or message over its size limit.</summary>
    TooLarge,

    UnknownTopic,

    /// <summary>The topic exists with a different partition count.</summary>
    TopicConflict,

    UnknownPartition,

    /// <summary>Over an in-flight bound (connection or partition): retry after a short wait.</summary>
    Busy,

    /// <summary>The partition stopped after a failed fsync or found corruption; it takes no more writes.</summary>
    PartitionFailed,

    /// <summary>The offset is before the log start or after its end.</summary>
    OffsetOutOfRange,

    /// <summary>An idempotent produce older than the broker remembers: it was appended before.</summary>
    DuplicateSequence,

    /// <summary>An idempotent produce that skips sequence numbers.</summary>
    OutOfOrderSequence,

    /// <summary>The consumer-group member is not (or no longer) known: join again.</summary>
    UnknownMember,

    /// <summary>The member does not own the partition (a rebalance moved it).</summary>
    NotOwner,

    Unauthorized,

    ShuttingDown,

    Internal,
}

/// <summary>A request the broker refused, with its typed reason.</summary>
public sealed class BrokerException : Exception
{
    public BrokerException(ErrorCode code, string message)
        : base(message)
    {
        Code = code;
    }

    public BrokerException()
        : this(ErrorCode.Internal, "broker error")
    {
    }

    public BrokerException(string message)
        : this(ErrorCode.Internal, message)
    {
    }

    public BrokerException(string message, Exception innerException)
        : base(message, innerException)
    {
        Code = ErrorCode.Internal;
    }

    public ErrorCode Code { get; }
}

public static class BrokerErrors
{
    public static int HttpStatus(ErrorCode code) => code switch
    {
        ErrorCode.BadRequest or ErrorCode.OutOfOrderSequence or ErrorCode.OffsetOutOfRange => 400,
        ErrorCode.Unauthorized => 401,
        ErrorCode.UnknownTopic or ErrorCode.UnknownPartition or ErrorCode.UnknownMember => 404,
        ErrorCode.TopicConflict or ErrorCode.NotOwner or ErrorCode.DuplicateSequence => 409,
        ErrorCode.TooLarge => 413,
        ErrorCode.Busy => 429,
        ErrorCode.PartitionFailed or ErrorCode.ShuttingDown => 503,
        _ => 500,
    };
}
