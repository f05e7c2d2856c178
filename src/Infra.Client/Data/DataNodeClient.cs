using Infra.Client.Rpc;
using Infra.Core.Framing;
using MessagePack;

namespace Infra.Client.Data;

/// <summary>A typed error from a data node or the shard router (<see cref="Code"/> is its error name, e.g. "NotMaster").</summary>
public sealed class DataException : Exception
{
    public DataException(string code, string message)
        : base($"{code}: {message}")
    {
        Code = code;
        Reason = message;
    }

    public DataException()
        : this("Internal", "data error")
    {
    }

    public DataException(string message)
        : this("Internal", message)
    {
    }

    public DataException(string message, Exception innerException)
        : base(message, innerException)
    {
        Code = "ConnectionLost";
        Reason = message;
    }

    public string Code { get; }

    /// <summary>The message without the code.</summary>
    public string Reason { get; }

    /// <summary>
    /// True when sending the same request again may succeed: a lost connection, Busy, Behind, Unavailable, a
    /// failover in progress, a slot closed for a move (the write was not applied; the router answers it 503).
    /// </summary>
    public bool IsRetriable => Code is "ConnectionLost" or "Busy" or "Behind" or "Unavailable" or "FailingOver" or "NotMaster" or "StaleEpoch" or "SlotClosed";
}

/// <summary>Rows a query returned, and the LSN of the snapshot they were read at.</summary>
public sealed record QueryRows(IReadOnlyList<string> Columns, IReadOnlyList<object?[]> Rows, long Lsn);

/// <summary>What one statement of a write did.</summary>
public readonly record struct StatementOutcome(long RowsAffected, long LastInsertId);

/// <summary>A committed write: per statement outcomes, its LSN (0 when nothing changed) and the node's epoch.</summary>
public sealed record ExecuteOutcome(IReadOnlyList<StatementOutcome> Results, long Lsn, long Epoch);

/// <summary>A sharded table for a slot copy: its name and shard-key column.</summary>
public readonly record struct SlotTableName(string Name, string ShardKey);

/// <summary>
/// One table's part of a slot copy: the slot's rows (all of them, or those changed since the copy's
/// LSN), and the primary keys (<see cref="KeyColumns"/>) of changed rows no longer in the slot.
/// </summary>
public sealed record SlotTableRows(string Name, IReadOnlyList<string> Columns, IReadOnlyList<object?[]> Rows, IReadOnlyList<string> KeyColumns, IReadOnlyList<object?[]> Gone);

/// <summary>A slot's rows (or their delta) as of <see cref="Lsn"/> on a node of <see cref="Epoch"/>.</summary>
public sealed record SlotRows(long Lsn, long Epoch, IReadOnlyList<SlotTableRows> Tables)
{
    public int Changes => Tables.Sum(t => t.Rows.Count + t.Gone.Count);
}

/// <summary>A data node's role and position.</summary>
public sealed record DataNodeStatus(string NodeId, string Role, long Epoch, long Lsn, long FencedBy, string? Master, bool Connected, long MasterLsn, string? Diverged)
{
    public bool IsMaster => Role == "master";

    /// <summary>A master's slots closed to writes (<see cref="DataNodeClient.CloseSlotAsync"/>).</summary>
    public IReadOnlyList<int> ClosedSlots { get; init; } = [];

    /// <summary>The name of each of <see cref="ClosedSlots"/>' closes, when it was given one.</summary>
    public IReadOnlyDictionary<int, string> ClosedBy { get; init; } = new Dictionary<int, string>();

    /// <summary>The last LSN on the node's disk (its WAL fsync'd); <see cref="Lsn"/> may be ahead of it by the commits in flight.</summary>
    public long DurableLsn { get; init; }

    /// <summary>A master's: the replicas' confirmations a write waits for (0: asynchronous); null from a replica or an older node.</summary>
    public int? SyncReplicas { get; init; }

    /// <summary>
    /// The epoch the node's last log entry was written in. <see cref="Epoch"/> is the newest epoch it
    /// promised (claims raise it without writing anything); histories rank by (this, <see cref="Lsn"/>).
    /// </summary>
    public long LastEntryEpoch { get; init; }

    /// <summary>Why the node's WAL fsync failed, once it has: the node refuses writes and acknowledges nothing more until restarted.</summary>
    public string? WalSyncFailed { get; init; }
}

/// <summary>
/// One connection to a data node's <c>--listen</c> port, speaking its request protocol (MessagePack
/// frames; many requests in flight). Values are null, long, double, string and byte[]. Thread-safe;
/// after the connection is lost every call fails with <see cref="DataException"/> code "ConnectionLost".
/// </summary>
public sealed class DataNodeClient : IAsyncDisposable
{
    private static readonly RpcErrors Errors = new("the data node", (code, message) => new DataException(code, message), (message, cause) => new DataException(message, cause));
    private readonly FrameRpcClient _rpc;

    private readonly bool _inline;

    private DataNodeClient(FrameRpcClient rpc, string address, bool inline)
    {
        _rpc = rpc;
        Address = address;
        _inline = inline;
    }

    public string Address { get; }

    public bool IsConnected => _rpc.IsConnected;

    /// <summary>
    /// How long a request may wait for the data node's answer (default 30 s). Past it the request fails
    /// as a lost connection, and so does the connection: what the data node did with it is unknown.
    /// </summary>
    public TimeSpan RequestTimeout
    {
        get => _rpc.RequestTimeout;
        set => _rpc.RequestTimeout = value;
    }

    /// <summary>Requests sent and not answered yet.</summary>
    public int InFlight => _rpc.InFlight;

    /// <summary>Connects to <c>host:port</c>.</summary>
    public static Task<DataNodeClient> ConnectAsync(string address, CancellationToken cancellationToken = default) =>
        ConnectAsync(address, inline: false, cancellationToken);

    /// <summary>
    /// Connects to <c>host:port</c>. <paramref name="inline"/> is for a service's own request path (the
    /// shard router's): the connection runs on Infra.Core's epoll engine when the process chose it
    /// (<c>INFRA_SOCKET_ENGINE=epoll</c>), a request is written by the calling thread, and the answer of
    /// <see cref="ExecuteAsync"/> or <see cref="QueryAsync"/> completes on the thread that read it, so the
    /// code after the caller's await runs there until its next wait — it must never block, or every
    /// connection of that thread waits (the other operations' answers go on on the thread pool).
    /// Application code leaves it false.
    /// </summary>
    public static async Task<DataNodeClient> ConnectAsync(string address, bool inline, CancellationToken cancellationToken = default)
    {
        var (host, port) = SplitAddress(address);
        return new DataNodeClient(await FrameRpcClient.ConnectAsync(host, port, Errors, inline, cancellationToken), address, inline);
    }

    public static (string Host, int Port) SplitAddress(string address)
    {
        ArgumentNullException.ThrowIfNull(address);
        var colon = address.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(address.AsSpan(colon + 1), out var port) || port is < 1 or > 65535)
        {
            throw new ArgumentException($"'{address}' is not host:port", nameof(address));
        }

        return (address[..colon].Trim('[', ']'), port);
    }

    /// <summary>
    /// Runs statements (each <c>[sql, params…]</c>) in one transaction on the master; <paramref name="epoch"/>,
    /// when given, must be the node's; <paramref name="slot"/>, when given, tags the write with its shard-map
    /// slot, and the node refuses it (SlotClosed) if that slot is closed there (<see cref="CloseSlotAsync"/>);
    /// <paramref name="maxTime"/>, when given, replaces the node's <c>--max-write-time</c> for this write (zero: no limit).
    /// </summary>
    public async Task<ExecuteOutcome> ExecuteAsync(IReadOnlyList<object?[]> statements, long? epoch = null, int? slot = null, TimeSpan? maxTime = null)
    {
        ArgumentNullException.ThrowIfNull(statements);
        var body = await _rpc.SendAsync("execute", (ref MessagePackWriter w) =>
        {
            w.WriteMapHeader(1 + (epoch is null ? 0 : 1) + (slot is null ? 0 : 1) + (maxTime is null ? 0 : 1));
            if (maxTime is { } limit)
            {
                w.Write("maxTimeMs");
                w.Write((long)Math.Ceiling(limit.TotalMilliseconds)); // never 0 (no limit) for a limit under 1 ms
            }

            if (slot is { } s)
            {
                w.Write("slot");
                w.Write(s);
            }

            w.Write("statements");
            w.WriteArrayHeader(statements.Count);
            foreach (var statement in statements)
            {
                FrameRpcClient.WriteValue(ref w, statement);
            }

            if (epoch is { } e)
            {
                w.Write("epoch");
                w.Write(e);
            }
        }, serverWait: maxTime ?? default, inline: _inline); // a write allowed to run long is no lost connection
        return ReadExecute(body);
    }

    internal static ExecuteOutcome ReadExecute(byte[] body) =>
        RpcAnswers.Read("execute", body, ReadExecute, BadAnswer);

    private static ExecuteOutcome ReadExecute(ref MessagePackReader reader)
    {
        var results = new List<StatementOutcome>();
        long lsn = 0, epoch = 0;
        for (var fields = reader.ReadMapHeader(); fields > 0; fields--)
        {
            switch (reader.ReadString())
            {
                case "results":
                    ReadOutcomes(ref reader, results);
                    break;
                case "lsn":
                    lsn = reader.ReadInt64();
                    break;
                case "epoch":
                    epoch = reader.ReadInt64();
                    break;
                default:
                    reader.Skip();
                    break;
            }
        }

        return new ExecuteOutcome(results, lsn, epoch);
    }

    /// <summary>The <c>results</c> of a write: <c>[[rowsAffected, lastInsertId], ...]</c>.</summary>
    internal static void ReadOutcomes(ref MessagePackReader reader, List<StatementOutcome> results)
    {
        for (var n = reader.ReadArrayHeader(); n > 0; n--)
        {
            reader.ReadArrayHeader();
            results.Add(new StatementOutcome(reader.ReadInt64(), reader.ReadInt64()));
        }
    }

    /// <summary>A read; with <paramref name="minLsn"/> the node first waits (up to <paramref name="timeoutMs"/>) until it has applied that LSN.</summary>
    public async Task<QueryRows> QueryAsync(string sql, IReadOnlyList<object?>? parameters = null, long? minLsn = null, int? timeoutMs = null)
    {
        var body = await _rpc.SendAsync("query", (ref MessagePackWriter w) =>
        {
            w.WriteMapHeader(2 + (minLsn is null ? 0 : 1) + (timeoutMs is null ? 0 : 1));
            w.Write("sql");
            w.Write(sql);
            w.Write("params");
            FrameRpcClient.WriteValue(ref w, parameters ?? []);
            if (minLsn is { } m)
            {
                w.Write("minLsn");
                w.Write(m);
            }

            if (timeoutMs is { } t)
            {
                w.Write("timeoutMs");
                w.Write(t);
            }
        }, serverWait: minLsn is not null && timeoutMs is { } wait ? TimeSpan.FromMilliseconds(wait) : default, inline: _inline); // the wait asked for is added to the deadline
        return ReadRows(body);
    }

    internal static QueryRows ReadRows(byte[] body) =>
        RpcAnswers.Read("query", body, ReadRows, BadAnswer);

    internal static DataException BadAnswer(string message) => new("BadAnswer", message);

    private static QueryRows ReadRows(ref MessagePackReader reader)
    {
        var columns = new List<string>();
        var rows = new List<object?[]>();
        long lsn = 0;
        for (var fields = reader.ReadMapHeader(); fields > 0; fields--)
        {
            switch (reader.ReadString())
            {
                case "columns":
                    for (var n = reader.ReadArrayHeader(); n > 0; n--)
                    {
                        columns.Add(reader.ReadString() ?? "");
                    }

                    break;
                case "rows":
                    for (var n = reader.ReadArrayHeader(); n > 0; n--)
                    {
                        var row = new object?[reader.ReadArrayHeader()];
                        for (var i = 0; i < row.Length; i++)
                        {
                            row[i] = ReadSqlValue(ref reader);
                        }

                        rows.Add(row);
                    }

                    break;
                case "lsn":
                    lsn = reader.ReadInt64();
                    break;
                default:
                    reader.Skip();
                    break;
            }
        }

        return new QueryRows(columns, rows, lsn);
    }

    private static object? ReadSqlValue(ref MessagePackReader reader)
    {
        try
        {
            return MessagePackValues.ReadSqlValue(ref reader);
        }
        catch (InvalidDataException ex)
        {
            throw new DataException("BadAnswer", "a row value: " + ex.Message);
        }
    }

    public async Task<DataNodeStatus> StatusAsync() => ToStatus(await _rpc.CallAsync("status", []));

    /// <summary>Makes the node master of <paramref name="epoch"/> (above its own, or claimed for it).</summary>
    public async Task<DataNodeStatus> PromoteAsync(long epoch, string? token = null) =>
        ToStatus(await _rpc.CallAsync("promote", new() { ["epoch"] = epoch, ["token"] = token }));

    /// <summary>Makes the node a replica of <paramref name="master"/> (a data node's <c>--listen</c> address).</summary>
    public async Task<DataNodeStatus> FollowAsync(string master, long? epoch = null, bool reclone = false, string? token = null) =>
        ToStatus(await _rpc.CallAsync("follow", new() { ["master"] = master, ["epoch"] = epoch, ["reclone"] = reclone, ["token"] = token }));

    /// <summary>
    /// Closes a shard-map slot on the master to writes tagged with it, in order with the writes queued before
    /// (those are applied, later ones refused); the slots closed now. Not persisted: a restart opens them all.
    /// <paramref name="by"/> names the close (a shard router's id and move attempt), reported in the status
    /// (<see cref="DataNodeStatus.ClosedBy"/>) and matched by a conditional <see cref="OpenSlotAsync"/>.
    /// </summary>
    public async Task<IReadOnlyList<int>> CloseSlotAsync(int slot, long? epoch = null, string? token = null, string? by = null) =>
        ReadClosedSlots(await _rpc.CallAsync("closeSlot", new() { ["slot"] = slot, ["epoch"] = epoch, ["token"] = token, ["by"] = by }));

    /// <summary>
    /// Opens a slot closed by <see cref="CloseSlotAsync"/>; the slots still closed. With
    /// <paramref name="ifClosedBy"/>, only while the close in force is the one named so (else nothing changes).
    /// </summary>
    public async Task<IReadOnlyList<int>> OpenSlotAsync(int slot, long? epoch = null, string? token = null, string? ifClosedBy = null) =>
        ReadClosedSlots(await _rpc.CallAsync("openSlot", new() { ["slot"] = slot, ["epoch"] = epoch, ["token"] = token, ["ifClosedBy"] = ifClosedBy }));

    private static int[] ReadClosedSlots(Dictionary<string, object?> answer) =>
        answer.GetValueOrDefault("closedSlots") is List<object?> slots ? [.. slots.OfType<long>().Select(s => (int)s)] : [];

    /// <summary>Claims <paramref name="epoch"/> for the node <paramref name="leaderId"/>: the node joins it as a replica and votes for that leader only.</summary>
    public async Task<DataNodeStatus> ClaimAsync(long epoch, string leaderId, string? token = null) =>
        ToStatus(await _rpc.CallAsync("claim", new() { ["epoch"] = epoch, ["leader"] = leaderId, ["token"] = token }));

    /// <summary>A digest of every user table's rows, the LSN it was taken at, and row counts.</summary>
    public async Task<(string Checksum, long Lsn, IReadOnlyDictionary<string, long> Tables)> ChecksumAsync()
    {
        var answer = await _rpc.CallAsync("checksum", []);
        var tables = (answer.GetValueOrDefault("tables") as Dictionary<string, object?> ?? []).ToDictionary(t => t.Key, t => t.Value is long l ? l : 0, StringComparer.Ordinal);
        return ((string)answer["checksum"]!, (long)answer["lsn"]!, tables);
    }

    /// <summary>
    /// The rows of <paramref name="slot"/> of <paramref name="tables"/> (shard-key values hashed as the
    /// router does) in one snapshot; with <paramref name="since"/> only what changed after that LSN,
    /// from the node's replication log — code "Truncated" when the log no longer holds it, "StaleEpoch"
    /// when the node is no longer in <paramref name="epoch"/>. Resharding copies slots with it.
    /// </summary>
    public async Task<SlotRows> SlotRowsAsync(IReadOnlyList<SlotTableName> tables, int slots, int slot, long? since = null, long? epoch = null)
    {
        ArgumentNullException.ThrowIfNull(tables);
        var answer = await _rpc.CallAsync("slotRows", new()
        {
            ["tables"] = tables.Select(t => (object?)new List<object?> { t.Name, t.ShardKey }).ToList(),
            ["slots"] = (long)slots,
            ["slot"] = (long)slot,
            ["since"] = since,
            ["epoch"] = epoch,
        });
        static List<object?> List(object? value) => value as List<object?> ?? throw new DataException("BadAnswer", "a slot copy without the expected arrays");
        static object?[] Row(object? value) => [.. List(value)];
        var parts = List(answer.GetValueOrDefault("tables")).Select(t =>
        {
            var table = t as Dictionary<string, object?> ?? throw new DataException("BadAnswer", "a slot copy table is not a map");
            return new SlotTableRows(
                table.GetValueOrDefault("name") as string ?? "",
                [.. List(table.GetValueOrDefault("columns")).Select(c => c as string ?? "")],
                [.. List(table.GetValueOrDefault("rows")).Select(Row)],
                [.. List(table.GetValueOrDefault("keyColumns")).Select(c => c as string ?? "")],
                [.. List(table.GetValueOrDefault("gone")).Select(Row)]);
        }).ToList();
        return new SlotRows(answer.GetValueOrDefault("lsn") as long? ?? 0, answer.GetValueOrDefault("epoch") as long? ?? 0, parts);
    }

    public Task PingAsync() => _rpc.CallAsync("ping", []);

    private static DataNodeStatus ToStatus(Dictionary<string, object?> s) => new(
        s.GetValueOrDefault("nodeId") as string ?? "",
        s.GetValueOrDefault("role") as string ?? "",
        s.GetValueOrDefault("epoch") as long? ?? 0,
        s.GetValueOrDefault("lsn") as long? ?? 0,
        s.GetValueOrDefault("fencedBy") as long? ?? 0,
        s.GetValueOrDefault("master") as string,
        s.GetValueOrDefault("connected") is true,
        s.GetValueOrDefault("masterLsn") as long? ?? 0,
        s.GetValueOrDefault("diverged") as string)
    {
        ClosedSlots = ReadClosedSlots(s),
        ClosedBy = ReadClosedBy(s),
        DurableLsn = s.GetValueOrDefault("durableLsn") as long? ?? 0,
        SyncReplicas = s.GetValueOrDefault("syncReplicas") is long sync ? (int)sync : null,
        LastEntryEpoch = s.GetValueOrDefault("lastEpoch") as long? ?? 0,
        WalSyncFailed = s.GetValueOrDefault("walSyncFailed") as string,
    };

    /// <summary>closedBy: [[slot, by]…]; malformed pairs are skipped and a repeated slot keeps its first closer.</summary>
    private static Dictionary<int, string> ReadClosedBy(Dictionary<string, object?> status)
    {
        var closers = new Dictionary<int, string>();
        if (status.GetValueOrDefault("closedBy") is List<object?> pairs)
        {
            foreach (var pair in pairs)
            {
                if (pair is List<object?> { Count: 2 } p && p[0] is long slot and >= 0 and <= int.MaxValue && p[1] is string by)
                {
                    closers.TryAdd((int)slot, by);
                }
            }
        }

        return closers;
    }

    public ValueTask DisposeAsync() => _rpc.DisposeAsync();
}
