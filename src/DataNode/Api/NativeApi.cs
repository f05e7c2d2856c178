using System.Buffers;
using System.Security.Cryptography;
using System.Text;
using Infra.Core.Framing;
using Infra.Core.Networking;
using Infra.DataNode.Replication;
using Infra.DataNode.Storage;
using MessagePack;
using Microsoft.Extensions.Logging;

namespace Infra.DataNode.Api;

/// <summary>
/// The client protocol on <c>--listen</c>, beside replication (a connection whose first frame is not a
/// replica's <c>hello</c> speaks this): length-prefixed MessagePack frames, a request is
/// <c>[id, op, {args}]</c> with id &gt; 0, the answer <c>[id, "ok", {result}]</c> or
/// <c>[id, "&lt;ErrorCode&gt;", "message"]</c>. Requests on one connection run concurrently and are
/// answered as they finish (<see cref="RequestConnection"/>). Ops: <c>execute</c> {statements: [[sql, params…]], epoch?, slot?} →
/// {results: [[rowsAffected, lastInsertId]…], lsn, epoch}; <c>query</c> {sql, params?, minLsn?,
/// timeoutMs?} → {columns, rows, lsn}; <c>status</c>; <c>checksum</c>; <c>promote</c> {epoch};
/// <c>follow</c> {master, epoch?, reclone?}; <c>claim</c> {epoch, leader}; <c>closeSlot</c> {slot, epoch?, by?} / <c>openSlot</c> {slot, epoch?, ifClosedBy?} → {closedSlots} (writes tagged with a closed slot are refused, SlotClosed); <c>slotRows</c> {tables: [[name, shardKey]…], slots, slot, since?, epoch?} →
/// {lsn, epoch, tables: [{name, columns, rows, keyColumns, gone}]} (a slot's rows, or the delta since an LSN, for resharding); <c>ping</c>. State-changing
/// ops carry <c>token</c> when the node has an admin token.
/// </summary>
internal sealed partial class NativeApi(Node node, ILogger logger)
{
    public const int MaxInFlightPerConnection = 256;

    /// <summary>Serves a connection whose first frame (already read) was a request, not a replica's hello.</summary>
    public Task RunAsync(ConnectionContext connection, Frame first) =>
        RequestConnection.RunAsync(connection, node.Options.MaxReplicationFrameBytes, MaxInFlightPerConnection, HandleAsync, first.Whole, reason =>
        {
            LogBadFrame(logger, reason);
            node.CountError(NodeErrorCode.BadRequest);
        }, handlerLeavesReader: true);

    /// <summary>
    /// Called on the connection's reading thread. A ping, a write (queued for the writer thread) and a
    /// query whose text has been cheap (<see cref="QueryCosts"/>) run right there — the hop to the thread
    /// pool would cost more than they do; everything else leaves the reading thread first.
    /// </summary>
    private async Task<RequestAnswer> HandleAsync(string op, ReadOnlyMemory<byte> args, CancellationToken closing)
    {
        if (args.Length > RequestConnection.InlineArgsLimit || op is not ("ping" or "execute" or "query"))
        {
            await RequestConnection.LeaveReaderAsync();
        }

        try
        {
            var value = args.IsEmpty ? null : MessagePackValues.ReadWhole(new ReadOnlySequence<byte>(args));
            var map = value switch
            {
                Dictionary<string, object?> m => m,
                null => [],
                _ => throw Bad("the arguments are not a map"),
            };
            return RequestAnswer.Ok(await RunAsync(op, map, closing));
        }
        catch (InvalidDataException ex)
        {
            node.CountError(NodeErrorCode.BadRequest);
            return RequestAnswer.Error(nameof(NodeErrorCode.BadRequest), ex.Message);
        }
        catch (NodeException ex)
        {
            node.CountError(ex.Code);
            return RequestAnswer.Error(ex.Code.ToString(), ex.Message);
        }
        catch (Exception ex) when (ex is Microsoft.Data.Sqlite.SqliteException or InvalidOperationException)
        {
            LogFailed(logger, op, ex);
            node.CountError(NodeErrorCode.Unavailable);
            return RequestAnswer.Error(nameof(NodeErrorCode.Unavailable), "internal error: " + ex.Message);
        }
    }

    private async Task<MessagePackBody> RunAsync(string op, Dictionary<string, object?> args, CancellationToken cancellationToken)
    {
        switch (op)
        {
            case "ping":
                return static (ref MessagePackWriter w) => w.WriteMapHeader(0);
            case "execute":
                {
                    var statements = args.GetValueOrDefault("statements") as List<object?> ?? throw Bad("expected {statements: [[sql, params...], ...]}");
                    if (statements.Count == 0)
                    {
                        throw Bad("\"statements\" is empty");
                    }

                    if (statements.Count > node.Options.MaxStatements)
                    {
                        throw Bad($"{statements.Count} statements in one request; the limit is {node.Options.MaxStatements}");
                    }

                    var list = new List<SqlStatement>(statements.Count);
                    for (var i = 0; i < statements.Count; i++)
                    {
                        list.Add(ParseStatement(statements[i], i + 1));
                    }

                    var epoch = OptionalLong(args, "epoch");
                    var answer = await node.ExecuteAsync(new WriteCommand(list, epoch, OptionalSlot(args), MaxTime: MaxTime(OptionalLong(args, "maxTimeMs"))), cancellationToken);
                    return (ref MessagePackWriter w) =>
                    {
                        w.WriteMapHeader(3);
                        w.Write("results");
                        w.WriteArrayHeader(answer.Results.Length);
                        foreach (var result in answer.Results)
                        {
                            w.WriteArrayHeader(2);
                            w.Write(result.RowsAffected);
                            w.Write(result.LastInsertId);
                        }

                        w.Write("lsn");
                        w.Write(answer.Lsn);
                        w.Write("epoch");
                        w.Write(answer.Epoch);
                    };
                }

            case "query":
                {
                    var sql = args.GetValueOrDefault("sql") as string ?? throw Bad("expected {sql: \"SELECT ...\", params: [...]}");
                    CheckSql(sql, "the query");
                    var parameters = new List<object?>();
                    if (args.GetValueOrDefault("params") is { } p)
                    {
                        var values = p as List<object?> ?? throw Bad("\"params\" must be an array");
                        for (var i = 0; i < values.Count; i++)
                        {
                            parameters.Add(ToSqlValue(values[i], $"parameter {i + 1}"));
                        }
                    }

                    var minLsn = OptionalLong(args, "minLsn");
                    var timeoutMs = OptionalLong(args, "timeoutMs");
                    if (timeoutMs is > 600_000)
                    {
                        throw Bad("\"timeoutMs\" must be 0..600000");
                    }

                    var result = await node.QueryOnCallerIfCheapAsync(sql, parameters, minLsn, timeoutMs is { } ms ? TimeSpan.FromMilliseconds(ms) : null, cancellationToken);
                    return (ref MessagePackWriter w) =>
                    {
                        w.WriteMapHeader(3);
                        MessagePackValues.WriteRows(ref w, result.Columns, result.Rows);

                        w.Write("lsn");
                        w.Write(result.Lsn);
                    };
                }

            case "slotRows":
                {
                    var list = args.GetValueOrDefault("tables") as List<object?> ?? throw Bad("expected {tables: [[name, shardKey], ...], slots, slot, since?, epoch?}");
                    if (list.Count is 0 or > 1000)
                    {
                        throw Bad("\"tables\" must name 1..1000 tables");
                    }

                    var tables = list.Select(t => t is List<object?> { Count: 2 } pair && pair[0] is string { Length: > 0 } name && pair[1] is string { Length: > 0 } key
                        ? new ShardedTable(name, key)
                        : throw Bad("each table is [name, shardKey]")).ToList();
                    if (tables.Select(t => t.Name).Distinct(StringComparer.OrdinalIgnoreCase).Count() != tables.Count)
                    {
                        throw Bad("a table is named twice");
                    }

                    if (node.Role != NodeRole.Master)
                    {
                        throw new NodeException(NodeErrorCode.NotMaster, "a slot is copied from its shard's master; this node is a " + node.Role.ToString().ToLowerInvariant());
                    }

                    var slots = RequiredLong(args, "slots");
                    var slot = OptionalLong(args, "slot") ?? throw Bad("\"slot\" is missing");
                    if (slots > 1 << 20 || slot >= slots)
                    {
                        throw Bad("expected 1 <= slots <= 1048576 and 0 <= slot < slots");
                    }

                    var copy = node.Db.SlotRows(tables, (int)slots, (int)slot, OptionalLong(args, "since"), OptionalLong(args, "epoch"));

                    // Its LSN becomes the next copy's "since": it must not name commits this node could lose.
                    if (!await node.Flusher.UntilDurableAsync(copy.Lsn, node.Options.SyncTimeout, cancellationToken))
                    {
                        throw new NodeException(NodeErrorCode.Unavailable, $"the slot's rows at LSN {copy.Lsn} are not on this node's disk yet" + (node.Flusher.Failure is { } f ? ": " + f.Message : ""));
                    }
                    return (ref MessagePackWriter w) =>
                    {
                        w.WriteMapHeader(3);
                        w.Write("lsn");
                        w.Write(copy.Lsn);
                        w.Write("epoch");
                        w.Write(copy.Epoch);
                        w.Write("tables");
                        w.WriteArrayHeader(copy.Tables.Count);
                        foreach (var table in copy.Tables)
                        {
                            w.WriteMapHeader(5);
                            w.Write("name");
                            w.Write(table.Table);
                            MessagePackValues.WriteRows(ref w, table.Columns, table.Rows);
                            w.Write("keyColumns");
                            w.WriteArrayHeader(table.KeyColumns.Length);
                            foreach (var column in table.KeyColumns)
                            {
                                w.Write(column);
                            }

                            w.Write("gone");
                            w.WriteArrayHeader(table.Gone.Count);
                            foreach (var key in table.Gone)
                            {
                                w.WriteArrayHeader(key.Length);
                                foreach (var value in key)
                                {
                                    MessagePackValues.WriteSqlValue(ref w, value);
                                }
                            }
                        }
                    };
                }

            case "status":
                return Status();
            case "checksum":
                {
                    var (checksum, lsn, tables) = node.Db.Checksum();
                    return (ref MessagePackWriter w) =>
                    {
                        w.WriteMapHeader(3);
                        w.Write("checksum");
                        w.Write(checksum);
                        w.Write("lsn");
                        w.Write(lsn);
                        w.Write("tables");
                        w.WriteMapHeader(tables.Count);
                        foreach (var (name, rows) in tables)
                        {
                            w.Write(name);
                            w.Write(rows);
                        }
                    };
                }

            case "promote":
                CheckToken(args);
                await node.PromoteAsync(RequiredLong(args, "epoch"));
                return Status();
            case "follow":
                {
                    CheckToken(args);
                    var master = args.GetValueOrDefault("master") as string ?? throw Bad("expected {master: \"host:port\", epoch?, reclone?}");
                    if (!Infra.Core.Configuration.OptionValues.TryParseHostPort(master, out _, out _))
                    {
                        throw Bad($"'{master}' is not host:port");
                    }

                    await node.FollowAsync(master, OptionalLong(args, "epoch"), args.GetValueOrDefault("reclone") is true);
                    return Status();
                }

            case "closeSlot" or "openSlot":
                {
                    CheckToken(args);
                    var slot = OptionalSlot(args) ?? throw Bad($"expected {{slot, epoch?}}: the slot to {(op == "closeSlot" ? "close" : "open")}");
                    var byName = op == "closeSlot" ? "by" : "ifClosedBy";
                    var by = args.GetValueOrDefault(byName) switch
                    {
                        null => null,
                        string { Length: > 0 and <= 200 } b => b,
                        _ => throw Bad($"\"{byName}\" (the name of a close) must be a string of 1 to 200 characters"),
                    };
                    await node.ChangeSlotAsync(new SlotChange(slot, op == "closeSlot", by), OptionalLong(args, "epoch"));
                    var closed = node.Db.ClosedSlots;
                    return (ref MessagePackWriter w) =>
                    {
                        w.WriteMapHeader(1);
                        WriteClosedSlots(ref w, closed);
                    };
                }

            case "claim":
                {
                    CheckToken(args);
                    var leader = args.GetValueOrDefault("leader") as string is { Length: > 0 } l ? l : throw Bad("expected {epoch, leader: nodeId}");
                    await node.ClaimAsync(RequiredLong(args, "epoch"), leader);
                    return Status();
                }

            default:
                throw Bad($"unknown op '{op}'");
        }
    }

    /// <summary>{nodeId, role, epoch, lsn, lastEpoch (the epoch of the entry at lsn), fencedBy, durableLsn, walSyncFailed? (once the WAL fsync failed), closedSlots? and closedBy? ([[slot, by]…]) (a master's, when any), syncReplicas (a master's: the confirmations a write waits for, 0 when async), master?, connected?, masterLsn?, diverged?}.</summary>
    private MessagePackBody Status()
    {
        var db = node.Db;
        var replica = node.Role == NodeRole.Replica;
        var follower = node.Follower;
        var nodeId = db.NodeId;
        var epoch = db.Epoch;
        var lsn = db.Lsn;
        var lastEpoch = db.LastEntryEpoch;
        var master = node.Master;
        var diverged = follower?.Diverged;
        var fencedBy = node.FencedBy;
        var connected = follower?.Connected ?? false;
        var masterLsn = follower?.MasterLsn ?? 0;
        var durableLsn = node.Durable.Value;
        var walFailure = node.Flusher.Failure?.Message;
        IReadOnlyList<int> closed = replica ? [] : db.ClosedSlots;
        var closedBy = closed.Count > 0 ? db.ClosedBy : null;
        var syncReplicas = node.Options.Sync == SyncMode.SemiSync ? node.Options.SyncReplicas : 0;
        return (ref MessagePackWriter w) =>
        {
            w.WriteMapHeader((replica ? 11 : 8) + (walFailure is null ? 0 : 1) + (closed.Count > 0 ? 1 : 0) + (closedBy is { Count: > 0 } ? 1 : 0));
            w.Write("nodeId");
            w.Write(nodeId);
            w.Write("role");
            w.Write(replica ? "replica" : "master");
            w.Write("epoch");
            w.Write(epoch);
            w.Write("lsn");
            w.Write(lsn);
            w.Write("lastEpoch");
            w.Write(lastEpoch);
            w.Write("fencedBy");
            w.Write(fencedBy);
            w.Write("durableLsn");
            w.Write(durableLsn);
            if (walFailure is not null)
            {
                w.Write("walSyncFailed");
                w.Write(walFailure);
            }

            if (closed.Count > 0)
            {
                WriteClosedSlots(ref w, closed);
            }

            if (closedBy is { Count: > 0 })
            {
                w.Write("closedBy");
                w.WriteArrayHeader(closedBy.Count);
                foreach (var (slot, by) in closedBy)
                {
                    w.WriteArrayHeader(2);
                    w.Write(slot);
                    w.Write(by);
                }
            }

            if (!replica)
            {
                w.Write("syncReplicas");
                w.Write(syncReplicas);
            }

            if (replica)
            {
                w.Write("master");
                MessagePackValues.WriteSqlValue(ref w, master);
                w.Write("connected");
                w.Write(connected);
                w.Write("masterLsn");
                w.Write(masterLsn);
                w.Write("diverged");
                MessagePackValues.WriteSqlValue(ref w, diverged);
            }
        };
    }

    private static void WriteClosedSlots(ref MessagePackWriter w, IReadOnlyList<int> closed)
    {
        w.Write("closedSlots");
        w.WriteArrayHeader(closed.Count);
        foreach (var slot in closed)
        {
            w.Write(slot);
        }
    }

    private void CheckToken(Dictionary<string, object?> args)
    {
        if (node.Options.AdminToken is not { } expected)
        {
            return;
        }

        var given = args.GetValueOrDefault("token") as string ?? "";
        if (!CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(given), Encoding.UTF8.GetBytes(expected)))
        {
            throw new NodeException(NodeErrorCode.Unauthorized, "this node requires its admin token for promote, follow, claim, closeSlot and openSlot");
        }
    }

    private SqlStatement ParseStatement(object? statement, int index)
    {
        switch (statement)
        {
            case string sql:
                CheckSql(sql, $"statement {index}");
                return new SqlStatement(sql, []);
            case List<object?> { Count: > 0 } list when list[0] is string sql:
                CheckSql(sql, $"statement {index}");
                var parameters = new List<object?>(list.Count - 1);
                for (var i = 1; i < list.Count; i++)
                {
                    parameters.Add(ToSqlValue(list[i], $"statement {index}, parameter {i}"));
                }

                return new SqlStatement(sql, parameters);
            default:
                throw Bad($"statement {index} is not \"SQL\" or [\"SQL\", param, ...]");
        }
    }

    private void CheckSql(string sql, string what)
    {
        if (string.IsNullOrWhiteSpace(sql))
        {
            throw Bad($"{what} has no SQL");
        }

        if (sql.Length > node.Options.MaxSqlBytes)
        {
            throw Bad($"{what} is {sql.Length} characters; the limit is {node.Options.MaxSqlBytes}");
        }
    }

    private static object? ToSqlValue(object? value, string where) => value switch
    {
        null or long or double or string or byte[] => value,
        bool b => b ? 1L : 0L,
        ulong => throw Bad($"{where} is an integer beyond the 64-bit signed range"),
        _ => throw Bad($"{where} is not a SQL value: use nil, an integer, a float, a string, a boolean or bytes"),
    };

    private static long? OptionalLong(Dictionary<string, object?> args, string name) => args.GetValueOrDefault(name) switch
    {
        null => null,
        long l when l >= 0 => l,
        _ => throw Bad($"\"{name}\" must be a non-negative integer"),
    };

    /// <summary>A write's own run-time limit (<c>maxTimeMs</c>, 0: none), or null for the node's <c>--max-write-time</c>.</summary>
    internal static TimeSpan? MaxTime(long? milliseconds) => milliseconds switch
    {
        null => null,
        <= MaxTimeMs => TimeSpan.FromMilliseconds(milliseconds.Value),
        _ => throw Bad($"\"maxTimeMs\" must be 0..{MaxTimeMs} (0: no limit)"),
    };

    /// <summary>The longest <c>maxTimeMs</c> a write may ask for: an hour, as <c>--max-write-time</c>.</summary>
    private const long MaxTimeMs = 3_600_000;

    /// <summary>A shard-map slot number (0–65535), or null when the request has none.</summary>
    private static int? OptionalSlot(Dictionary<string, object?> args) => args.GetValueOrDefault("slot") switch
    {
        null => null,
        long l and >= 0 and <= ushort.MaxValue => (int)l,
        _ => throw Bad("\"slot\" must be an integer from 0 to 65535"),
    };

    private static long RequiredLong(Dictionary<string, object?> args, string name) =>
        OptionalLong(args, name) is { } value and > 0 ? value : throw Bad($"\"{name}\" must be an integer above 0");

    private static NodeException Bad(string message) => new(NodeErrorCode.BadRequest, message);

    [LoggerMessage(EventId = 640, Level = LogLevel.Debug, Message = "A client sent a bad frame: {Reason}")]
    private static partial void LogBadFrame(ILogger logger, string reason);

    [LoggerMessage(EventId = 641, Level = LogLevel.Error, Message = "A client request ({Op}) failed inside the node")]
    private static partial void LogFailed(ILogger logger, string op, Exception exception);
}
