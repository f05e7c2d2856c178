namespace Infra.DataNode.Storage;

/// <summary>What a failed request gets back; the API maps each to an HTTP status.</summary>
internal enum NodeErrorCode
{
    /// <summary>The request itself is wrong: malformed, too big, a non-parameter value (400).</summary>
    BadRequest,

    /// <summary>SQLite refused a statement: syntax, constraint, missing table (400).</summary>
    SqlError,

    /// <summary>A statement the node does not allow (transactions, ATTACH, PRAGMA, triggers, tables without a primary key) (400).</summary>
    NotAllowed,

    /// <summary>Writes go to the master (409).</summary>
    NotMaster,

    /// <summary>The request or the peer carries an epoch older than the node's, or the node knows a newer one exists (409).</summary>
    StaleEpoch,

    /// <summary>A read asked for an LSN this node has not applied within the wait (503).</summary>
    Behind,

    /// <summary>Committed on the master, but not confirmed by enough replicas within the timeout (503).</summary>
    NotReplicated,

    /// <summary>The node cannot take the request now (shutting down, promotion in progress, disk failure) (503).</summary>
    Unavailable,

    /// <summary>Too many requests are waiting (503, retry).</summary>
    Busy,

    /// <summary>The changes asked for are no longer in the replication log (or the node is behind the asker) (409).</summary>
    Truncated,

    /// <summary>A state-changing request without the admin token the node requires (401).</summary>
    Unauthorized,

    /// <summary>A write for a shard-map slot that is closed here: the slot has moved, or is moving, to another shard (409).</summary>
    SlotClosed,
}

/// <summary>A request failed with a code the client can act on.</summary>
internal sealed class NodeException(NodeErrorCode code, string message) : Exception(message)
{
    public NodeErrorCode Code { get; } = code;

    public static int HttpStatus(NodeErrorCode code) => code switch
    {
        NodeErrorCode.BadRequest or NodeErrorCode.SqlError or NodeErrorCode.NotAllowed => 400,
        NodeErrorCode.NotMaster or NodeErrorCode.StaleEpoch or NodeErrorCode.Truncated or NodeErrorCode.SlotClosed => 409,
        NodeErrorCode.Unauthorized => 401,
        _ => 503,
    };
}
