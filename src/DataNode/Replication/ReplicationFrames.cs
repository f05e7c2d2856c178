using System.Buffers;
using System.IO.Pipelines;
using Infra.Core.Framing;
using Infra.DataNode.Storage;
using MessagePack;

namespace Infra.DataNode.Replication;

/// <summary>
/// The replication protocol: length-prefixed MessagePack frames <c>[0, tag, body]</c> on the node's
/// <c>--listen</c> port. The replica speaks first (<c>hello</c>); the master answers <c>stream</c>,
/// <c>truncate</c>, <c>snapshot</c> or <c>error</c>, then pushes <c>entries</c> and <c>heartbeat</c>s;
/// the replica answers <c>ack</c> after each durable apply.
/// </summary>
internal static class Tags
{
    public const string Hello = "hello";
    public const string Stream = "stream";
    public const string Entries = "entries";
    public const string Heartbeat = "heartbeat";
    public const string Truncate = "truncate";
    public const string Snapshot = "snapshot";
    public const string Chunk = "chunk";
    public const string End = "end";
    public const string Error = "error";
    public const string Ack = "ack";
}

/// <summary>One received frame: its id (0 for replication, the request id for the client protocol), its tag and its body.</summary>
internal readonly struct Frame(long id, string tag, ReadOnlyMemory<byte> body, byte[] whole)
{
    /// <summary>The whole frame body, <c>[id, tag, body]</c>.</summary>
    public byte[] Whole { get; } = whole;

    public long Id { get; } = id;

    public string Tag { get; } = tag;

    public ReadOnlyMemory<byte> Bytes { get; } = body;

    public MessagePackReader Body() => new(Bytes);
}

/// <summary>Frames over a pair of pipes; reads on one task, writes serialised by a lock.</summary>
internal sealed class FrameConnection(PipeReader input, PipeWriter output, int maxFrameBytes) : IDisposable
{
    private readonly SemaphoreSlim _writeLock = new(1, 1);

    public async ValueTask<Frame?> ReadAsync(CancellationToken cancellationToken)
    {
        // Infra.Core's pipe readers ignore the token ReadAsync is given: a peer that sent nothing (a hello that
        // never came, a caught-up replica's acks at shutdown) held this read — and its connection, and a
        // shutdown — for good. Cancelling the pending read instead wakes it; it then throws as a token would.
        using var wake = cancellationToken.CanBeCanceled
            ? cancellationToken.UnsafeRegister(static state => ((PipeReader)state!).CancelPendingRead(), input)
            : default;
        while (true)
        {
            var result = await input.ReadAsync(cancellationToken);
            if (result.IsCanceled)
            {
                input.AdvanceTo(result.Buffer.Start); // nothing consumed; the read is over
                cancellationToken.ThrowIfCancellationRequested();
                continue; // someone else's CancelPendingRead: read on
            }

            var buffer = result.Buffer;
            var status = Frames.TryRead(ref buffer, maxFrameBytes, out var body, out var declared);
            switch (status)
            {
                case FrameStatus.Complete:
                    var bytes = body.ToArray();
                    input.AdvanceTo(buffer.Start);
                    await LeaveSocketThreadAsync();
                    return Parse(bytes);
                case FrameStatus.Incomplete when !result.IsCompleted:
                    input.AdvanceTo(buffer.Start, buffer.End);
                    continue;
                case FrameStatus.Incomplete:
                    input.AdvanceTo(buffer.Start, buffer.End);
                    return null;
                default:
                    throw new InvalidDataException($"a replication frame declares {declared} bytes (limit {maxFrameBytes})");
            }
        }
    }

    /// <summary>True when a whole frame is already buffered (so a reader can take several without waiting).</summary>
    public bool TryReadBuffered(out Frame frame)
    {
        frame = default;
        if (!input.TryRead(out var result))
        {
            return false;
        }

        var buffer = result.Buffer;
        if (Frames.TryRead(ref buffer, maxFrameBytes, out var body, out _) == FrameStatus.Complete)
        {
            var bytes = body.ToArray();
            input.AdvanceTo(buffer.Start);
            frame = Parse(bytes);
            return true;
        }

        input.AdvanceTo(result.Buffer.Start, result.Buffer.End);
        return false;
    }

    private static Frame Parse(byte[] bytes)
    {
        try
        {
            var reader = new MessagePackReader(bytes);
            if (reader.ReadArrayHeader() != 3)
            {
                throw new InvalidDataException("a replication frame is not [id, tag, body]");
            }

            var id = reader.ReadInt64();
            var tag = reader.ReadString() ?? throw new InvalidDataException("a replication frame without a tag");
            return new Frame(id, tag, bytes.AsMemory((int)reader.Consumed), bytes);
        }
        catch (Exception ex) when (MessagePackValues.IsMalformed(ex))
        {
            throw new InvalidDataException("a replication frame is not valid MessagePack: " + ex.Message, ex);
        }
    }

    public ValueTask SendAsync(string tag, MessagePackBody body, CancellationToken cancellationToken) => SendAsync(0, tag, body, cancellationToken);

    /// <summary>
    /// A read or send that waited resumes on a socket thread (an epoll thread, or .NET's socket engine
    /// with inline completions); what a replication stream does next — reading the log, applying
    /// entries, writing a snapshot — must not hold up that thread's other connections.
    /// </summary>
    private static async ValueTask LeaveSocketThreadAsync()
    {
        if (!Thread.CurrentThread.IsThreadPoolThread)
        {
            await Task.Yield();
        }
    }

    public async ValueTask SendAsync(long id, string tag, MessagePackBody body, CancellationToken cancellationToken)
    {
        var frame = Frames.Build(id, tag, body);
        await _writeLock.WaitAsync(cancellationToken);
        try
        {
            await output.WriteAsync(frame, cancellationToken);
        }
        finally
        {
            _writeLock.Release();
        }

        await LeaveSocketThreadAsync();
    }

    public void Dispose() => _writeLock.Dispose();

    public static void WriteEntry(ref MessagePackWriter writer, LogRecord entry)
    {
        writer.WriteArrayHeader(5);
        writer.Write(entry.Lsn);
        writer.Write(entry.Epoch);
        writer.Write(entry.Crc);
        writer.Write(entry.Body);
        writer.Write(entry.CommittedMs);
    }

    public static LogRecord ReadEntry(ref MessagePackReader reader)
    {
        if (reader.ReadArrayHeader() != 5)
        {
            throw new InvalidDataException("a replicated entry is not [lsn, epoch, crc, body, committedMs]");
        }

        return new LogRecord(reader.ReadInt64(), reader.ReadInt64(), reader.ReadUInt32(), reader.ReadBytes()?.ToArray() ?? [], reader.ReadInt64());
    }
}
