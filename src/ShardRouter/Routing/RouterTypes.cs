using Infra.Client.Data;

namespace Infra.ShardRouter.Routing;

internal enum Consistency
{
    /// <summary>Any healthy replica (least in flight); the master when none is.</summary>
    Replica,

    /// <summary>A replica that has applied the client's token, else the master: never older than the client's own writes.</summary>
    Session,

    /// <summary>The master.</summary>
    Strong,
}

/// <summary>What a write returns for read-your-writes: the shard it went to and its LSN there.</summary>
internal readonly record struct SessionToken(string Shard, long Lsn);

/// <summary>A sort column of a fan-out merge.</summary>
internal readonly record struct OrderKey(string Column, bool Descending);

internal sealed record QueryRequest(
    bool HasKey,
    object? Key,
    string Sql,
    IReadOnlyList<object?> Parameters,
    Consistency Consistency,
    IReadOnlyList<SessionToken> Tokens,
    IReadOnlyList<OrderKey> OrderBy,
    int? Limit,
    bool AllowPartial);

/// <summary>Which node of which shard answered, at what LSN, with how many rows.</summary>
internal sealed record ShardAnswer(string Shard, string Node, long Lsn, int Rows);

/// <summary>A shard that failed a fan-out, and why.</summary>
internal sealed record ShardFailure(string Shard, string Code, string Error);

internal sealed record QueryReply(IReadOnlyList<string> Columns, IReadOnlyList<object?[]> Rows, IReadOnlyList<ShardAnswer> Shards, IReadOnlyList<ShardFailure> Failed);

internal sealed record ExecuteReply(ExecuteOutcome Outcome, string Shard)
{
    public SessionToken Token => new(Shard, Outcome.Lsn);
}

/// <summary>What happened on one shard when DDL was broadcast.</summary>
internal sealed record SchemaOutcome(string Shard, bool Ok, long Lsn, string? Code, string? Error)
{
    /// <summary>Something that did not stop the schema on this shard (its slot index could not be made).</summary>
    public string? Warning { get; init; }
}

/// <summary>A request failed; <see cref="Code"/> names why, <see cref="Status"/> is its HTTP status.</summary>
internal sealed class RouterException(string code, string message, int status, bool retriable = false, IReadOnlyList<ShardFailure>? failed = null) : Exception(message)
{
    public string Code { get; } = code;

    public int Status { get; } = status;

    /// <summary>Sent as Retry-After (503).</summary>
    public bool Retriable { get; } = retriable;

    public IReadOnlyList<ShardFailure> Failed { get; } = failed ?? [];

    public static RouterException Bad(string message) => new("BadRequest", message, 400);

    /// <summary>A data node's error as the router's: SQL and request errors pass through; the rest are 503.</summary>
    public static RouterException From(DataException error, string shard, string node, bool write) => error.Code switch
    {
        "BadRequest" or "SqlError" or "NotAllowed" => new(error.Code, error.Reason, 400),
        "NotMaster" or "StaleEpoch" => new("FailingOver", $"shard {shard}: {node} is no longer its master ({error.Reason}); retry", 503, retriable: true),
        "ConnectionLost" or "Timeout" when write => new("Unavailable", $"shard {shard}: lost {node} during the write; it may or may not have been applied ({error.Reason})", 503, retriable: true),
        "BadAnswer" when write => new("Unavailable", $"shard {shard}: {node} answered the write with something unreadable; it may or may not have been applied ({error.Reason})", 503, retriable: true),
        _ => new(error.Code is "Unreachable" or "ConnectionLost" or "Timeout" ? "Unavailable" : error.Code, $"shard {shard}: {node}: {error.Reason}", 503, retriable: true),
    };
}
