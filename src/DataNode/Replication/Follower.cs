using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;
using Infra.Core.Framing;
using Infra.Core.Configuration;
using Infra.Core.Storage;
using Infra.DataNode.Storage;
using MessagePack;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;

namespace Infra.DataNode.Replication;

/// <summary>
/// The replica side of replication: connects to the master with its last LSN and epoch, then streams
/// (apply in batches, each in one transaction with its LSN; ack after commit), discards a divergent tail
/// when told to (inverse changesets, newest first), or re-clones from a snapshot. Reconnects with
/// back-off; stops for good on a conflict (divergence is reported, never skipped).
/// </summary>
internal sealed partial class Follower(Node node, string master, bool reclone, ILogger logger) : IDisposable
{
    private static readonly TimeSpan IdleTimeout = TimeSpan.FromSeconds(5);

    private readonly CancellationTokenSource _stop = new();
    private Task _run = Task.CompletedTask;
    private bool _wantClone = reclone;

    public string MasterAddress { get; } = master;

    public bool Connected { get; private set; }

    /// <summary>The master's LSN as last heard (for lag in entries).</summary>
    public long MasterLsn { get; private set; }

    public string? Diverged { get; private set; }

    public string? LastError { get; private set; }

    /// <summary>
    /// The storage error of the last apply that failed, until one succeeds (the node's readiness):
    /// unlike <see cref="LastError"/> it survives reconnecting, since the next session fails the same way.
    /// </summary>
    public string? ApplyFailure { get; private set; }

    public void Start() => _run = Task.Run(RunAsync);

    public async Task StopAsync()
    {
        await _stop.CancelAsync();
        try
        {
            await _run;
        }
        catch (OperationCanceledException)
        {
        }
    }

    public void Dispose() => _stop.Dispose();

    private async Task RunAsync()
    {
        var backoff = TimeSpan.FromMilliseconds(100);
        while (!_stop.IsCancellationRequested && Diverged is null && node.Flusher.Failure is null)
        {
            try
            {
                if (await SessionAsync())
                {
                    backoff = TimeSpan.FromMilliseconds(100);
                    continue;
                }
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                break;
            }
            catch (DivergedException ex)
            {
                Diverged = ex.Message;
                LogDiverged(logger, ex.Lsn, ex.Message);
                break;
            }
            catch (Exception ex) when (ex is SocketException or IOException or InvalidDataException or OperationCanceledException or NodeException or TimeoutException or SqliteException
                || MessagePackValues.IsMalformed(ex))
            {
                LastError = node.Flusher.Failure is { } failure ? "this node's WAL fsync failed; it follows no more until it is restarted: " + failure.Message : ex.Message;
                LogSessionEnded(logger, MasterAddress, LastError);
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                // Anything else (a file the snapshot cannot be written to, a bug) used to end this task with
                // nobody awaiting it: the replica stopped following for good, said nothing, and still reported
                // its master. It is logged as an error, shown in the status, and the follower tries again.
                LastError = $"{ex.GetType().Name}: {ex.Message}";
                LogSessionFailed(logger, ex, MasterAddress, LastError);
            }
            finally
            {
                Connected = false;
            }

            try
            {
                await Task.Delay(backoff, _stop.Token);
            }
            catch (OperationCanceledException)
            {
                break;
            }

            backoff = TimeSpan.FromMilliseconds(Math.Min(2000, backoff.TotalMilliseconds * 2));
        }
    }

    /// <summary>One connection; true when it ended in a way that calls for an immediate reconnect.</summary>
    private async Task<bool> SessionAsync()
    {
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        using (var connectTimeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token))
        {
            connectTimeout.CancelAfter(TimeSpan.FromSeconds(5));
            if (!OptionValues.TryParseHostPort(MasterAddress, out var host, out var port))
            {
                throw new IOException($"'{MasterAddress}' is not host:port");
            }

            if (IPAddress.TryParse(host, out var ip))
            {
                await socket.ConnectAsync(new IPEndPoint(ip, port), connectTimeout.Token);
            }
            else
            {
                await socket.ConnectAsync(host, port, connectTimeout.Token);
            }
        }

        await using var stream = new NetworkStream(socket, ownsSocket: false);
        var input = PipeReader.Create(stream);
        var output = PipeWriter.Create(stream);
        using var frames = new FrameConnection(input, output, node.Options.MaxStreamFrameBytes);
        var token = _stop.Token;

        var (lsn, lastEpoch) = await node.RunOnWriterAsync(db => (db.Lsn, db.EpochAt(db.Lsn)));
        var epoch = node.Db.Epoch;
        var id = node.Db.NodeId;
        var wantClone = _wantClone;
        var advertised = node.Options.Listen.ToString();
        var adminToken = node.Options.AdminToken;
        await frames.SendAsync(Tags.Hello, (ref MessagePackWriter w) =>
        {
            w.WriteArrayHeader(adminToken is null ? 6 : 7);
            w.Write(id);
            w.Write(epoch);
            w.Write(lsn);
            w.Write(lastEpoch);
            w.Write(wantClone);
            w.Write(advertised);
            if (adminToken is not null)
            {
                w.Write(adminToken);
            }
        }, token);

        // Heartbeats come first while the master prepares a snapshot (its backup can take minutes).
        Frame answer;
        while ((answer = await ReadWithTimeoutAsync(frames, node.Options.ReplicationTimeout) ?? throw new IOException("the master closed the connection")).Tag == Tags.Heartbeat)
        {
        }

        switch (answer.Tag)
        {
            case Tags.Error:
                var error = answer.Body();
                error.ReadArrayHeader();
                var code = error.ReadString();
                var message = error.ReadString();
                throw new IOException($"the master refused: {code}: {message}");
            case Tags.Truncate:
                await TruncateAsync(answer);
                ApplyFailure = null; // the storage took a write again
                return true;
            case Tags.Snapshot:
                await ReceiveSnapshotAsync(frames, answer);
                ApplyFailure = null; // a whole new copy is in place: nothing failed to apply to it
                return true;
            case Tags.Stream:
                await StreamAsync(frames, answer);
                return false;
            default:
                throw new InvalidDataException($"unexpected answer to hello: {answer.Tag}");
        }
    }

    private async Task StreamAsync(FrameConnection frames, Frame start)
    {
        var body = start.Body();
        body.ReadArrayHeader();
        var streamEpoch = body.ReadInt64();
        var from = body.ReadInt64();
        MasterLsn = body.ReadInt64();
        var count = body.ReadArrayHeader();
        var registered = new List<string>(count);
        for (var i = 0; i < count; i++)
        {
            registered.Add(body.ReadString() ?? "");
        }

        if (streamEpoch < node.Db.Epoch)
        {
            throw new IOException($"the master at {MasterAddress} is at epoch {streamEpoch}, older than this node's {node.Db.Epoch}: entries from an older epoch are refused");
        }

        if (from != node.Db.Lsn + 1)
        {
            throw new InvalidDataException($"the master streams from {from}; this node needs {node.Db.Lsn + 1}");
        }

        await node.RunOnWriterAsync(db =>
        {
            if (streamEpoch > db.Epoch)
            {
                db.SetEpochAndRole(streamEpoch, "replica");
            }

            if (!registered.SequenceEqual(db.RegisteredReplicas))
            {
                db.SetRegisteredReplicas(registered);
            }

            return 0;
        });
        Connected = true;
        LastError = null;
        LogStreaming(logger, MasterAddress, from, streamEpoch);

        var token = _stop.Token;
        var entries = new List<LogRecord>();
        using var session = CancellationTokenSource.CreateLinkedTokenSource(token);
        var ackWanted = Channel.CreateBounded<long>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropOldest });
        var acks = SendAcksAsync(frames, ackWanted.Reader, session);
        try
        {
            while (!token.IsCancellationRequested)
            {
                var frame = await ReadWithTimeoutAsync(frames, IdleTimeout, session.Token) ?? throw new IOException("the master closed the connection");
                entries.Clear();
                Take(frame, entries, streamEpoch);
                while (entries.Count < 4096 && frames.TryReadBuffered(out var more))
                {
                    Take(more, entries, streamEpoch);
                }

                if (entries.Count > 0)
                {
                    // Applied and visible here at once; on disk when the flusher's next fsync returns.
                    var batch = entries.ToList();
                    try
                    {
                        await node.RunOnWriterAsync(db =>
                        {
                            // A router has claimed a newer epoch here (this node voted, or was told to follow
                            // another master): the old master's entries may be ones the new master never gets,
                            // so none is applied, nor acknowledged, once the vote is cast. (Checked on the writer
                            // thread, where the claim runs: no batch slips in between.)
                            if (db.Epoch > streamEpoch)
                            {
                                throw new StaleStreamException($"this node is at epoch {db.Epoch} now; the stream of {MasterAddress} is epoch {streamEpoch}'s");
                            }

                            db.ApplyEntries(batch);
                            return 0;
                        }, syncLater: true);
                        ApplyFailure = null;
                    }
                    catch (Exception ex) when (ex is SqliteException || (ex is NodeException { Code: NodeErrorCode.Unavailable } && !_stop.IsCancellationRequested))
                    {
                        ApplyFailure = ex.Message; // a storage failure (SessionNative.StorageFailure) or the database locked at BEGIN
                        throw;
                    }
                    finally
                    {
                        node.OnApplied(batch.Count);
                    }
                }

                // Every frame is answered (a heartbeat too: the master counts acks as signs of life).
                ackWanted.Writer.TryWrite(node.Db.Lsn);
            }
        }
        finally
        {
            await session.CancelAsync();
            await acks;
        }
    }

    /// <summary>
    /// Acknowledges what is on disk here (<see cref="Node.Durable"/>), apart from the loop that applies:
    /// the next batch is applied while the last one is synced. Ends the session when it cannot send, or
    /// when this node's WAL fsync failed (nothing more can be acknowledged).
    /// </summary>
    private async Task SendAcksAsync(FrameConnection frames, ChannelReader<long> wanted, CancellationTokenSource session)
    {
        var token = session.Token;
        try
        {
            while (true)
            {
                var applied = await wanted.ReadAsync(token);
                while (!await node.Durable.WaitAsync(applied, TimeSpan.FromSeconds(1), token))
                {
                    if (node.Flusher.Failure is not null)
                    {
                        return; // the session ends (finally) and RunAsync reports the failure
                    }
                }

                var durable = node.Durable.Value;
                await frames.SendAsync(Tags.Ack, (ref MessagePackWriter w) =>
                {
                    w.WriteArrayHeader(1);
                    w.Write(durable);
                }, token);
            }
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
            // The session ended.
        }
        catch (Exception ex)
        {
            LastError = "acknowledging failed: " + ex.Message;
        }
        finally
        {
            await session.CancelAsync();
        }
    }

    private void Take(Frame frame, List<LogRecord> entries, long streamEpoch)
    {
        var body = frame.Body();
        switch (frame.Tag)
        {
            case Tags.Entries:
                body.ReadArrayHeader();
                MasterLsn = body.ReadInt64();
                var n = body.ReadArrayHeader();
                for (var i = 0; i < n; i++)
                {
                    var entry = FrameConnection.ReadEntry(ref body);
                    if (entry.Epoch > streamEpoch)
                    {
                        throw new InvalidDataException($"entry {entry.Lsn} claims epoch {entry.Epoch}, above the stream's {streamEpoch}");
                    }

                    entries.Add(entry);
                }

                break;
            case Tags.Heartbeat:
                body.ReadArrayHeader();
                MasterLsn = body.ReadInt64();
                break;
            case Tags.Error:
                body.ReadArrayHeader();
                throw new IOException($"the master ended the stream: {body.ReadString()}: {body.ReadString()}");
            default:
                throw new InvalidDataException($"unexpected frame in the stream: {frame.Tag}");
        }
    }

    private async Task TruncateAsync(Frame answer)
    {
        var body = answer.Body();
        body.ReadArrayHeader();
        var epoch = body.ReadInt64();
        var fork = body.ReadInt64();
        var from = node.Db.Lsn;
        var undone = await node.RunOnWriterAsync(db =>
        {
            var ok = db.RollbackTo(fork);
            if (ok)
            {
                db.SetEpochAndRole(Math.Max(epoch, db.Epoch), "replica");
            }

            return ok;
        });
        if (undone)
        {
            node.Applied.Reset(node.Db.Lsn);
            LogTruncated(logger, fork, from, epoch);
        }
        else
        {
            _wantClone = true;
            LogTruncateNeedsClone(logger, fork, from);
        }
    }

    private async Task ReceiveSnapshotAsync(FrameConnection frames, Frame answer)
    {
        var body = answer.Body();
        body.ReadArrayHeader();
        var epoch = body.ReadInt64();
        var lsn = body.ReadInt64();
        var length = body.ReadInt64();
        var file = Path.Combine(node.Options.DataDir, "incoming-snapshot.tmp");
        var crc = uint.MaxValue;
        long received = 0;
        await using (var stream = new FileStream(file, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            while (true)
            {
                var frame = await ReadWithTimeoutAsync(frames, node.Options.ReplicationTimeout) ?? throw new IOException("the master closed the connection during a snapshot");
                var reader = frame.Body();
                if (frame.Tag == Tags.Chunk)
                {
                    var chunk = reader.ReadBytes() ?? throw new InvalidDataException("an empty snapshot chunk");
                    foreach (var segment in chunk)
                    {
                        crc = Crc32C.Append(crc, segment.Span);
                        await stream.WriteAsync(segment, _stop.Token);
                    }

                    received += chunk.Length;
                    if (received > length)
                    {
                        throw new InvalidDataException($"the snapshot is longer than the {length} bytes announced");
                    }
                }
                else if (frame.Tag == Tags.End)
                {
                    reader.ReadArrayHeader();
                    var total = reader.ReadInt64();
                    var expected = reader.ReadUInt32();
                    if (total != received || expected != ~crc)
                    {
                        throw new InvalidDataException($"the snapshot arrived damaged ({received} of {total} bytes, checksum {(expected == ~crc ? "ok" : "wrong")})");
                    }

                    break;
                }
                else
                {
                    throw new InvalidDataException($"unexpected frame in a snapshot: {frame.Tag}");
                }
            }

            stream.Flush(flushToDisk: true);
        }

        await node.RunOnWriterAsync(db =>
        {
            db.ReplaceWith(file, "replica");
            if (epoch > db.Epoch)
            {
                db.SetEpochAndRole(epoch, "replica");
            }

            return 0;
        });
        _wantClone = false;
        node.Applied.Reset(node.Db.Lsn);
        LogCloned(logger, lsn, received);
    }

    private Task<Frame?> ReadWithTimeoutAsync(FrameConnection frames, TimeSpan timeout) => ReadWithTimeoutAsync(frames, timeout, _stop.Token);

    private async Task<Frame?> ReadWithTimeoutAsync(FrameConnection frames, TimeSpan timeout, CancellationToken token)
    {
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(token);
        cancel.CancelAfter(timeout);
        try
        {
            return await frames.ReadAsync(cancel.Token);
        }
        catch (OperationCanceledException) when (!token.IsCancellationRequested)
        {
            throw new TimeoutException($"nothing from the master at {MasterAddress} for {timeout.TotalSeconds:0} s");
        }
    }

    [LoggerMessage(EventId = 640, Level = LogLevel.Information, Message = "Streaming from the master at {Master} from LSN {Lsn} (epoch {Epoch})")]
    private static partial void LogStreaming(ILogger logger, string master, long lsn, long epoch);

    [LoggerMessage(EventId = 641, Level = LogLevel.Information, Message = "Replication from {Master} ended: {Reason}; reconnecting")]
    private static partial void LogSessionEnded(ILogger logger, string master, string reason);

    [LoggerMessage(EventId = 646, Level = LogLevel.Error, Message = "Replication from {Master} failed unexpectedly: {Reason}; retrying")]
    private static partial void LogSessionFailed(ILogger logger, Exception exception, string master, string reason);

    [LoggerMessage(EventId = 642, Level = LogLevel.Critical, Message = "DIVERGED at entry {Lsn}: {Reason}. Applying stopped; re-clone this replica (POST /follow with \"reclone\": true)")]
    private static partial void LogDiverged(ILogger logger, long lsn, string reason);

    [LoggerMessage(EventId = 643, Level = LogLevel.Warning, Message = "Discarded the entries after the fork point {Fork} up to {From} (epoch {Epoch}): they were never acknowledged")]
    private static partial void LogTruncated(ILogger logger, long fork, long from, long epoch);

    [LoggerMessage(EventId = 644, Level = LogLevel.Warning, Message = "Entries after the fork point {Fork} (up to {From}) cannot be undone in place (DDL or conflict): re-cloning")]
    private static partial void LogTruncateNeedsClone(ILogger logger, long fork, long from);

    [LoggerMessage(EventId = 645, Level = LogLevel.Warning, Message = "Re-cloned from a snapshot at LSN {Lsn} ({Bytes} bytes)")]
    private static partial void LogCloned(ILogger logger, long lsn, long bytes);
}

/// <summary>The stream a follower reads belongs to an epoch older than the node's: it ends, unapplied.</summary>
internal sealed class StaleStreamException(string message) : IOException(message);
