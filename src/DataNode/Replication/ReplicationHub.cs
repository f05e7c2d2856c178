using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Security.Cryptography;
using System.Text;
using Infra.Core.Framing;
using Infra.Core.Networking;
using Infra.Core.Storage;
using Infra.DataNode.Storage;
using MessagePack;
using Microsoft.Extensions.Logging;

namespace Infra.DataNode.Replication;

/// <summary>What the master knows of one replica.</summary>
internal sealed class ReplicaState(string id)
{
    public string Id { get; } = id;

    public string Address { get; set; } = "";

    /// <summary>The last LSN the replica confirmed it has durably applied.</summary>
    public long AckedLsn;

    /// <summary>The LSN of the snapshot it is being sent (it streams from the next one), or -1.</summary>
    public long CloneLsn = -1;

    public bool Connected { get; set; }

    public long LastSeenMs { get; set; }

    public CancellationTokenSource? Session { get; set; }
}

/// <summary>
/// The master side of replication: accepts replica connections on <c>--listen</c>, decides per
/// replica whether it streams, truncates a divergent tail or re-clones, pushes committed entries,
/// and counts confirmations for semi-sync. Every replica that ever connected is registered durably:
/// semi-sync counts on it until it is forgotten (<c>DELETE /replicas/{id}</c>).
/// </summary>
internal sealed partial class ReplicationHub(Node node, ILogger logger, Api.NativeApi clients) : IConnectionHandler
{
    private const int MaxBatchEntries = 512;

    /// <summary>Entry bytes per frame (a single larger entry goes alone; see <see cref="NodeOptions.MaxStreamFrameBytes"/>).</summary>
    private const int MaxBatchBytes = 4 << 20;
    private const int ChunkBytes = 1 << 20;

    private readonly ConcurrentDictionary<string, ReplicaState> _replicas = new(StringComparer.Ordinal);
    private readonly ProgressWaiters _replicated = new();
    private readonly Lock _registryLock = new();

    /// <summary>
    /// The end of the last snapshot backup queued (under <see cref="_registryLock"/>): one is taken at a
    /// time, replicas re-cloning together wait their turn (kept alive meanwhile).
    /// </summary>
    private Task _lastSnapshotTurn = Task.CompletedTask;
    private HashSet<string> _registered = new(StringComparer.Ordinal);
    private volatile int _registeredCount;

    public IReadOnlyCollection<ReplicaState> Replicas => [.. _replicas.Values.OrderBy(r => r.Id, StringComparer.Ordinal)];

    public IReadOnlyCollection<string> Registered
    {
        get
        {
            lock (_registryLock)
            {
                return [.. _registered.Order(StringComparer.Ordinal)];
            }
        }
    }

    /// <summary>Semi-sync waits when it is the mode and some replica is registered.</summary>
    public bool SemiSyncRequired => node.Options.Sync == SyncMode.SemiSync && _registeredCount > 0;

    public void LoadRegistry(IReadOnlyList<string> ids)
    {
        lock (_registryLock)
        {
            _registered = new HashSet<string>(ids, StringComparer.Ordinal);
            _registeredCount = _registered.Count;
        }

        Recompute(reset: true);
    }

    public Task<bool> WaitReplicatedAsync(long lsn, TimeSpan timeout, CancellationToken cancellationToken) => _replicated.WaitAsync(lsn, timeout, cancellationToken);

    /// <summary>Removes a replica from the registry (it no longer counts for semi-sync).</summary>
    public async Task<bool> ForgetAsync(string id)
    {
        bool removed;
        lock (_registryLock)
        {
            removed = _registered.Remove(id);
            _registeredCount = _registered.Count;
        }

        if (removed)
        {
            var ids = Registered.ToList();
            await node.RunOnWriterAsync(db =>
            {
                db.SetRegisteredReplicas(ids);
                return 0;
            });
            if (_replicas.TryRemove(id, out var state))
            {
                CancelSession(state);
            }

            Recompute(reset: true);
        }

        return removed;
    }

    public void DisconnectAll()
    {
        foreach (var state in _replicas.Values)
        {
            CancelSession(state);
        }
    }

    private static void CancelSession(ReplicaState state)
    {
        lock (state)
        {
            try
            {
                state.Session?.Cancel();
            }
            catch (ObjectDisposedException)
            {
                // That session already ended.
            }
        }
    }

    private void Recompute(bool reset = false)
    {
        List<long> acked;
        int needed = node.Options.SyncReplicas;
        lock (_registryLock)
        {
            acked = [.. _registered.Select(id => _replicas.TryGetValue(id, out var r) ? Interlocked.Read(ref r.AckedLsn) : 0)];
        }

        acked.Sort((a, b) => b.CompareTo(a));
        var confirmed = acked.Count >= needed ? acked[needed - 1] : 0;
        if (reset)
        {
            _replicated.Reset(confirmed);
        }
        else
        {
            _replicated.Advance(confirmed);
        }

        PinLog();
    }

    /// <summary>
    /// Keeps the log from the first entry a replica this master knows still needs (the one after what it
    /// confirmed, or after the snapshot it is being sent): trimmed by count alone, a replica whose clone or
    /// catch-up took longer than the log's retention at the write rate found its next entry gone, and
    /// re-cloned forever. <see cref="NodeDatabase.RetainFrom"/> bounds how far back this holds it.
    /// </summary>
    private void PinLog()
    {
        var from = long.MaxValue;
        foreach (var replica in _replicas.Values)
        {
            var clone = Interlocked.Read(ref replica.CloneLsn);
            from = Math.Min(from, (clone >= 0 ? clone : Interlocked.Read(ref replica.AckedLsn)) + 1);
        }

        node.Db.RetainFrom = from;
    }

    public IEnumerable<Measurement<long>> ObserveLagEntries()
    {
        var lsn = node.Db.Lsn;
        return _replicas.Values.Select(r => new Measurement<long>(Math.Max(0, lsn - Interlocked.Read(ref r.AckedLsn)), new KeyValuePair<string, object?>("replica", r.Id)));
    }

    public IEnumerable<Measurement<long>> ObserveLagMs() =>
        _replicas.Values.Select(r => new Measurement<long>(LagMs(r), new KeyValuePair<string, object?>("replica", r.Id)));

    /// <summary>How long the oldest entry the replica has not confirmed has been committed (0 when caught up).</summary>
    public long LagMs(ReplicaState replica)
    {
        var acked = Interlocked.Read(ref replica.AckedLsn);
        if (acked >= node.Db.Lsn)
        {
            return 0;
        }

        var committed = node.Db.ReadLog(acked + 1, 1) is [var first, ..] ? first.CommittedMs : 0;
        return committed == 0 ? 0 : Math.Max(0, node.Time.GetUtcNow().ToUnixTimeMilliseconds() - committed);
    }

    public async Task OnConnectedAsync(ConnectionContext connection)
    {
        using var frames = new FrameConnection(connection.Input, connection.Output, node.Options.MaxReplicationFrameBytes);
        var closing = connection.ClosingRequested;
        Frame? first;
        using (var helloTimeout = CancellationTokenSource.CreateLinkedTokenSource(closing))
        {
            helloTimeout.CancelAfter(TimeSpan.FromSeconds(10));
            try
            {
                first = await frames.ReadAsync(helloTimeout.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or InvalidDataException)
            {
                return;
            }
        }

        if (first is not { } hello)
        {
            return;
        }

        if (hello.Tag != Tags.Hello || hello.Id != 0)
        {
            // Not a replica: a client (the shard router, Infra.Client) speaking the request protocol.
            await clients.RunAsync(connection, hello);
            return;
        }

        string id;
        long epoch, lastLsn, lastEpoch;
        bool wantClone;
        string address;
        string? adminToken = null;
        try
        {
            var body = hello.Body();
            var fields = body.ReadArrayHeader();
            if (fields is not (6 or 7))
            {
                throw new InvalidDataException("hello is [nodeId, epoch, lastLsn, lastEpoch, wantClone, address, adminToken?]");
            }

            id = body.ReadString() ?? throw new InvalidDataException("hello without a node id");
            epoch = body.ReadInt64();
            lastLsn = body.ReadInt64();
            lastEpoch = body.ReadInt64();
            wantClone = body.ReadBoolean();
            address = body.ReadString() ?? "";
            if (fields == 7)
            {
                adminToken = body.ReadString();
            }
        }
        catch (Exception ex) when (ex is InvalidDataException || MessagePackValues.IsMalformed(ex))
        {
            await SendErrorAsync(frames, NodeErrorCode.BadRequest, "malformed hello: " + ex.Message, closing);
            return;
        }

        // A hello can fence this node (a newer epoch) and streams it whole: with an admin token, only a
        // replica that has it may say one (as for promote, follow and the other state-changing ops).
        if (node.Options.AdminToken is { } expected
            && !CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(adminToken ?? ""), Encoding.UTF8.GetBytes(expected)))
        {
            await SendErrorAsync(frames, NodeErrorCode.Unauthorized, "this node requires its admin token from replicas (start them with the same --admin-token)", closing);
            return;
        }

        if (node.Role != NodeRole.Master)
        {
            await SendErrorAsync(frames, NodeErrorCode.NotMaster, node.Master is { } m ? $"not the master; the master is {m}" : "not the master", closing);
            return;
        }

        var myEpoch = node.Db.Epoch;
        if (epoch > myEpoch)
        {
            node.Fence(epoch);
            await SendErrorAsync(frames, NodeErrorCode.StaleEpoch, $"this master is at epoch {myEpoch}; the replica has seen epoch {epoch}", closing);
            return;
        }

        if (id == node.Db.NodeId)
        {
            await SendErrorAsync(frames, NodeErrorCode.BadRequest, "a node cannot replicate from itself", closing);
            return;
        }

        try
        {
            var fork = await node.RunOnWriterAsync(db => db.ForkPoint(lastEpoch, lastLsn));
            var oldest = node.Db.OldestLogLsn();
            var masterLsn = node.Db.Lsn;
            var truncated = lastLsn < masterLsn && (oldest == 0 || oldest > lastLsn + 1);
            if (fork < lastLsn && !wantClone)
            {
                LogTruncate(logger, id, lastLsn, lastEpoch, fork);
                await frames.SendAsync(Tags.Truncate, (ref MessagePackWriter w) =>
                {
                    w.WriteArrayHeader(2);
                    w.Write(myEpoch);
                    w.Write(fork);
                }, closing);
                return;
            }

            if (wantClone || truncated)
            {
                await SendSnapshotAsync(frames, id, closing);
                return;
            }

            await StreamAsync(connection, frames, id, address, lastLsn, myEpoch);
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or InvalidDataException or ObjectDisposedException || MessagePackValues.IsMalformed(ex))
        {
            // The replica went away or sent garbage; it reconnects.
            LogSessionEnded(logger, id, ex.Message);
        }
    }

    private async Task StreamAsync(ConnectionContext connection, FrameConnection frames, string id, string address, long lastLsn, long epoch)
    {
        await RegisterAsync(id);
        var state = _replicas.GetOrAdd(id, static i => new ReplicaState(i));
        CancelSession(state);
        using var session = CancellationTokenSource.CreateLinkedTokenSource(connection.ClosingRequested);
        lock (state)
        {
            state.Session = session;
        }

        state.Address = address;
        state.Connected = true;
        state.LastSeenMs = node.Time.GetUtcNow().ToUnixTimeMilliseconds();
        Interlocked.Exchange(ref state.AckedLsn, lastLsn);
        Interlocked.Exchange(ref state.CloneLsn, -1);
        Recompute();
        LogReplicaConnected(logger, id, address, lastLsn);
        var token = session.Token;
        var registered = Registered.ToArray();
        await frames.SendAsync(Tags.Stream, (ref MessagePackWriter w) =>
        {
            w.WriteArrayHeader(4);
            w.Write(epoch);
            w.Write(lastLsn + 1);
            w.Write(node.Db.Lsn);
            w.WriteArrayHeader(registered.Length);
            foreach (var r in registered)
            {
                w.Write(r);
            }
        }, token);

        var acks = ReadAcksAsync(frames, state, session);
        try
        {
            var next = lastLsn + 1;
            while (!token.IsCancellationRequested && node.Role == NodeRole.Master && node.Db.Epoch == epoch)
            {
                // Only what is on disk here is shipped: a replica never holds an entry this master could
                // lose to a crash (it would then give that LSN to a different write).
                var durable = node.Durable.Value;
                if (durable < next)
                {
                    if (!await node.Durable.WaitAsync(next, TimeSpan.FromSeconds(1), token))
                    {
                        await frames.SendAsync(Tags.Heartbeat, (ref MessagePackWriter w) =>
                        {
                            w.WriteArrayHeader(2);
                            w.Write(node.Db.Lsn);
                            w.Write(epoch);
                        }, token);
                    }

                    continue;
                }

                // A frame holds entries up to a byte budget (at least one): 512 large ones in one frame passed
                // the replica's frame limit, and it refused the same frame on every reconnect.
                var batch = node.Db.ReadLog(next, (int)Math.Min(MaxBatchEntries, durable - next + 1), MaxBatchBytes);
                if (batch.Count == 0 || batch[0].Lsn != next)
                {
                    // Trimmed under the replica's feet: it re-clones on reconnect.
                    break;
                }


                var masterLsn = node.Db.Lsn;
                await frames.SendAsync(Tags.Entries, (ref MessagePackWriter w) =>
                {
                    w.WriteArrayHeader(2);
                    w.Write(masterLsn);
                    w.WriteArrayHeader(batch.Count);
                    foreach (var entry in batch)
                    {
                        FrameConnection.WriteEntry(ref w, entry);
                    }
                }, token);
                next = batch[^1].Lsn + 1;
            }
        }
        catch (OperationCanceledException)
        {
            // Disconnected, replaced by a newer session, or shutting down.
        }
        finally
        {
            await session.CancelAsync();
            await acks;
            lock (state)
            {
                if (ReferenceEquals(state.Session, session))
                {
                    state.Session = null;
                    state.Connected = false;
                }
            }

            LogReplicaDisconnected(logger, id, Interlocked.Read(ref state.AckedLsn));
        }
    }

    private async Task ReadAcksAsync(FrameConnection frames, ReplicaState state, CancellationTokenSource session)
    {
        try
        {
            while (await frames.ReadAsync(session.Token) is { } frame)
            {
                if (frame.Tag != Tags.Ack)
                {
                    break;
                }

                var body = frame.Body();
                body.ReadArrayHeader();
                var lsn = body.ReadInt64();
                state.LastSeenMs = node.Time.GetUtcNow().ToUnixTimeMilliseconds();
                if (lsn > Interlocked.Read(ref state.AckedLsn))
                {
                    Interlocked.Exchange(ref state.AckedLsn, lsn);
                    Recompute();
                }
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or InvalidDataException || MessagePackValues.IsMalformed(ex))
        {
            // Ends the session below.
        }

        await session.CancelAsync();
    }

    private async Task RegisterAsync(string id)
    {
        bool added;
        lock (_registryLock)
        {
            added = _registered.Add(id);
            _registeredCount = _registered.Count;
        }

        if (added)
        {
            var ids = Registered.ToList();
            await node.RunOnWriterAsync(db =>
            {
                db.SetRegisteredReplicas(ids);
                return 0;
            });
            LogRegistered(logger, id);
        }
    }

    private async Task SendSnapshotAsync(FrameConnection frames, string id, CancellationToken token)
    {
        var file = Path.Combine(node.Options.DataDir, $"snapshot-{Guid.NewGuid():N}.tmp");
        try
        {
            // The backup of a large database takes longer than a replica waits for an answer: it ran on this
            // task, the replica gave up, reconnected and started another backup beside the first — none was
            // ever sent, and the copies piled up on disk. It runs aside now, one at a time, while heartbeats
            // tell the replica the master is working on its answer.
            long lsn;
            var turn = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            Task previous;
            lock (_registryLock)
            {
                (previous, _lastSnapshotTurn) = (_lastSnapshotTurn, turn.Task);
            }

            try
            {
                await KeepAliveWhileAsync(frames, previous, token); // returns (or throws) only once the turn before ended
                lsn = await KeepAliveWhileAsync(frames, Task.Run(() =>
                {
                    if (node.Options.SnapshotDelay > TimeSpan.Zero)
                    {
                        Thread.Sleep(node.Options.SnapshotDelay); // fault injection (tests): a slow backup
                    }

                    return node.Db.BackupTo(file);
                }, CancellationToken.None), token);
            }
            finally
            {
                turn.SetResult();
            }

            Interlocked.Exchange(ref _replicas.GetOrAdd(id, static i => new ReplicaState(i)).CloneLsn, lsn);
            PinLog();

            // The backup may hold commits not yet on disk here: never hand a replica what this master could lose.
            if (!await node.Flusher.UntilDurableAsync(lsn, TimeSpan.FromSeconds(30), token))
            {
                throw new IOException($"the snapshot's LSN {lsn} is not on this master's disk" + (node.Flusher.Failure is { } f ? ": " + f.Message : ""));
            }

            var length = new FileInfo(file).Length;
            LogSnapshot(logger, id, lsn, length);
            var epoch = node.Db.Epoch;
            await frames.SendAsync(Tags.Snapshot, (ref MessagePackWriter w) =>
            {
                w.WriteArrayHeader(3);
                w.Write(epoch);
                w.Write(lsn);
                w.Write(length);
            }, token);
            var crc = uint.MaxValue;
            var buffer = new byte[ChunkBytes];
            await using (var stream = File.OpenRead(file))
            {
                int read;
                while ((read = await stream.ReadAsync(buffer, token)) > 0)
                {
                    var chunk = buffer.AsMemory(0, read);
                    crc = Crc32C.Append(crc, chunk.Span);
                    await frames.SendAsync(Tags.Chunk, (ref MessagePackWriter w) => w.Write(chunk.Span), token);
                }
            }

            var final = ~crc;
            await frames.SendAsync(Tags.End, (ref MessagePackWriter w) =>
            {
                w.WriteArrayHeader(2);
                w.Write(length);
                w.Write(final);
            }, token);
        }
        finally
        {
            File.Delete(file);
        }
    }

    /// <summary>Sends a heartbeat every 250 ms until <paramref name="work"/> ends (it is awaited even when sending fails).</summary>
    private async Task<T> KeepAliveWhileAsync<T>(FrameConnection frames, Task<T> work, CancellationToken token)
    {
        await KeepAliveWhileAsync(frames, (Task)work, token);
        return await work;
    }

    private async Task KeepAliveWhileAsync(FrameConnection frames, Task work, CancellationToken token)
    {
        try
        {
            while (await Task.WhenAny(work, Task.Delay(KeepAliveInterval, token)) != work)
            {
                await frames.SendAsync(Tags.Heartbeat, (ref MessagePackWriter w) =>
                {
                    w.WriteArrayHeader(2);
                    w.Write(node.Db.Lsn);
                    w.Write(node.Db.Epoch);
                }, token);
            }
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException)
        {
            // The replica went away: the work still finishes (a backup cannot be stopped half-way) before the
            // snapshot's turn passes on and its file is deleted.
            await work.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            throw;
        }

        await work;
    }

    private static readonly TimeSpan KeepAliveInterval = TimeSpan.FromMilliseconds(250);

    private static Task SendErrorAsync(FrameConnection frames, NodeErrorCode code, string message, CancellationToken token) =>
        frames.SendAsync(Tags.Error, (ref MessagePackWriter w) =>
        {
            w.WriteArrayHeader(2);
            w.Write(code.ToString());
            w.Write(message);
        }, token).AsTask();

    [LoggerMessage(EventId = 620, Level = LogLevel.Information, Message = "Replica {Id} ({Address}) streaming from LSN {Lsn}")]
    private static partial void LogReplicaConnected(ILogger logger, string id, string address, long lsn);

    [LoggerMessage(EventId = 621, Level = LogLevel.Information, Message = "Replica {Id} disconnected at LSN {Lsn}")]
    private static partial void LogReplicaDisconnected(ILogger logger, string id, long lsn);

    [LoggerMessage(EventId = 622, Level = LogLevel.Warning, Message = "Replica {Id} ends at LSN {Lsn} of epoch {Epoch}, past the fork point {Fork}: told to discard its tail")]
    private static partial void LogTruncate(ILogger logger, string id, long lsn, long epoch, long fork);

    [LoggerMessage(EventId = 623, Level = LogLevel.Information, Message = "Sending replica {Id} a snapshot at LSN {Lsn} ({Bytes} bytes)")]
    private static partial void LogSnapshot(ILogger logger, string id, long lsn, long bytes);

    [LoggerMessage(EventId = 625, Level = LogLevel.Debug, Message = "Replication session with {Id} ended: {Reason}")]
    private static partial void LogSessionEnded(ILogger logger, string id, string reason);

    [LoggerMessage(EventId = 624, Level = LogLevel.Information, Message = "Replica {Id} registered: semi-sync counts on it until it is forgotten")]
    private static partial void LogRegistered(ILogger logger, string id);
}
