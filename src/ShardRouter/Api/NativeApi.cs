using Infra.Core.Framing;
using Infra.Core.Networking;
using Infra.ShardRouter.Routing;
using MessagePack;

namespace Infra.ShardRouter.Api;

/// <summary>
/// The MessagePack protocol on <c>--listen</c> (the C# client's): requests <c>[id, op, {args}]</c>,
/// answers <c>[id, "ok", {result}]</c> or <c>[id, code, message]</c>, many in flight per connection.
/// Ops and arguments mirror the HTTP API: <c>execute</c> {key, statements} → {results: [[rowsAffected,
/// lastInsertId]…], shard, token: {shard, lsn}, epoch}; <c>query</c> {key?, sql, params?, consistency?,
/// token?, orderBy?, limit?, allowPartial?} → {columns, rows, shards: [{shard, node, lsn, rows}],
/// failedShards?}; <c>schema</c> {statements, tables?} → {shards: [{shard, ok, lsn | code, error}]};
/// <c>shards</c> → {version, slots, shards: [{id, master, replicas, epoch, slotCount}]}; <c>ping</c>.
/// </summary>
internal sealed class NativeApi(Router router) : IConnectionHandler
{
    public const int MaxInFlightPerConnection = 1024;

    public Task OnConnectedAsync(ConnectionContext connection) =>
        RequestConnection.RunAsync(connection, router.Options.MaxRequestBytes, MaxInFlightPerConnection, HandleAsync, handlerLeavesReader: true);

    /// <summary>
    /// Called on the connection's reading thread (an epoll thread on the router's engine). A keyed read
    /// or write runs right there, its node call written by this thread and its answer carried on by the
    /// thread that reads it (<see cref="NodeConnections"/>): no thread hop anywhere on the path.
    /// Everything else — DDL, the shard map — leaves the reading thread first (fan-outs and large results leave it in <see cref="Router.QueryAsync"/>).
    /// </summary>
    private async Task<RequestAnswer> HandleAsync(string op, ReadOnlyMemory<byte> args, CancellationToken cancellationToken)
    {
        if (args.Length > RequestConnection.InlineArgsLimit || op is not ("ping" or "execute" or "query"))
        {
            await RequestConnection.LeaveReaderAsync();
        }

        try
        {
            var value = MessagePackValues.ReadWhole(new System.Buffers.ReadOnlySequence<byte>(args));
            var map = value as Dictionary<string, object?> ?? (value is null ? [] : throw RouterException.Bad("the arguments are not a map"));
            return RequestAnswer.Ok(await RunAsync(op, map, cancellationToken));
        }
        catch (InvalidDataException ex)
        {
            return RequestAnswer.Error("BadRequest", ex.Message);
        }
        catch (RouterException ex)
        {
            router.Metrics.Errors.Add(1, new KeyValuePair<string, object?>("code", ex.Code));
            return RequestAnswer.Error(ex.Code, ex.Message);
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
                    var (key, statements) = RequestParser.Execute(args, router.Options.MaxStatements);
                    var reply = await router.ExecuteAsync(key, statements, cancellationToken);
                    return (ref MessagePackWriter w) =>
                    {
                        w.WriteMapHeader(4);
                        w.Write("results");
                        w.WriteArrayHeader(reply.Outcome.Results.Count);
                        foreach (var result in reply.Outcome.Results)
                        {
                            w.WriteArrayHeader(2);
                            w.Write(result.RowsAffected);
                            w.Write(result.LastInsertId);
                        }

                        w.Write("shard");
                        w.Write(reply.Shard);
                        w.Write("token");
                        w.WriteMapHeader(2);
                        w.Write("shard");
                        w.Write(reply.Token.Shard);
                        w.Write("lsn");
                        w.Write(reply.Token.Lsn);
                        w.Write("epoch");
                        w.Write(reply.Outcome.Epoch);
                    };
                }

            case "query":
                {
                    var reply = await router.QueryAsync(RequestParser.Query(args), cancellationToken);

                    return (ref MessagePackWriter w) =>
                    {
                        w.WriteMapHeader(reply.Failed.Count > 0 ? 4 : 3);
                        MessagePackValues.WriteRows(ref w, reply.Columns, reply.Rows);

                        w.Write("shards");
                        w.WriteArrayHeader(reply.Shards.Count);
                        foreach (var shard in reply.Shards)
                        {
                            w.WriteMapHeader(4);
                            w.Write("shard");
                            w.Write(shard.Shard);
                            w.Write("node");
                            w.Write(shard.Node);
                            w.Write("lsn");
                            w.Write(shard.Lsn);
                            w.Write("rows");
                            w.Write(shard.Rows);
                        }

                        if (reply.Failed.Count > 0)
                        {
                            w.Write("failedShards");
                            w.WriteArrayHeader(reply.Failed.Count);
                            foreach (var failed in reply.Failed)
                            {
                                w.WriteMapHeader(3);
                                w.Write("shard");
                                w.Write(failed.Shard);
                                w.Write("code");
                                w.Write(failed.Code);
                                w.Write("error");
                                w.Write(failed.Error);
                            }
                        }
                    };
                }

            case "schema":
                {
                    var (statements, tables) = RequestParser.Schema(args, router.Options.MaxStatements);
                    var outcomes = await router.SchemaAsync(statements, tables, cancellationToken);
                    return (ref MessagePackWriter w) =>
                    {
                        w.WriteMapHeader(1);
                        w.Write("shards");
                        w.WriteArrayHeader(outcomes.Count);
                        foreach (var o in outcomes)
                        {
                            w.WriteMapHeader(o.Ok ? (o.Warning is null ? 3 : 4) : 4);
                            w.Write("shard");
                            w.Write(o.Shard);
                            w.Write("ok");
                            w.Write(o.Ok);
                            if (o.Ok)
                            {
                                w.Write("lsn");
                                w.Write(o.Lsn);
                                if (o.Warning is not null)
                                {
                                    w.Write("warning");
                                    w.Write(o.Warning);
                                }
                            }
                            else
                            {
                                w.Write("code");
                                w.Write(o.Code);
                                w.Write("error");
                                w.Write(o.Error);
                            }
                        }
                    };
                }

            case "shards":
                {
                    var map = router.Map;
                    var counts = map.SlotCounts();
                    return (ref MessagePackWriter w) =>
                    {
                        w.WriteMapHeader(3);
                        w.Write("version");
                        w.Write(map.Version);
                        w.Write("slots");
                        w.Write(map.Slots);
                        w.Write("shards");
                        w.WriteArrayHeader(map.Shards.Count);
                        for (var i = 0; i < map.Shards.Count; i++)
                        {
                            var shard = map.Shards[i];
                            w.WriteMapHeader(5);
                            w.Write("id");
                            w.Write(shard.Id);
                            w.Write("master");
                            w.Write(shard.Master);
                            w.Write("replicas");
                            w.WriteArrayHeader(shard.Replicas.Count);
                            foreach (var replica in shard.Replicas)
                            {
                                w.Write(replica);
                            }

                            w.Write("epoch");
                            w.Write(shard.Epoch);
                            w.Write("slotCount");
                            w.Write(counts[i]);
                        }
                    };
                }

            default:
                throw RouterException.Bad($"unknown op '{op}'");
        }
    }
}
