using System.Buffers;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Text;
using System.Threading.Channels;
using Infra.CacheServer.Commands;
using Infra.CacheServer.Resp;
using Infra.CacheServer.Storage;
using Infra.Core.Networking;
using Infra.Core.Timing;
using Microsoft.Extensions.Logging;

namespace Infra.CacheServer;

/// <summary>Runs each accepted connection as a <see cref="CacheSession"/>.</summary>
internal sealed class CacheConnectionHandler(CacheServerState server, Heartbeat heartbeat, ILogger logger) : IConnectionHandler
{
    public async Task OnConnectedAsync(ConnectionContext connection)
    {
        using var session = new CacheSession(connection, server, heartbeat, logger);
        await session.RunAsync();
    }
}

/// <summary>
/// One client connection: reads as much as has arrived, runs every complete command in it in order
/// (pipelining), writes all their replies and flushes once. A protocol error is answered, then the
/// connection closes; other clients are unaffected. Pub/sub messages for this client are queued and
/// written by a pump that takes turns with the command loop.
/// </summary>
internal sealed class CacheSession : IDisposable
{
    // Replies are flushed early once this much is waiting, so a huge pipeline does not buffer without bound.
    private const int FlushThreshold = 256 * 1024;

    /// <summary>How many pipelined commands ahead the session prefetches keys for.</summary>
    private const int PrefetchDepth = 16;

    private readonly ConnectionContext _connection;
    private readonly PipeReader _input;
    private readonly ConnectionDeadlines _deadlines;
    private readonly ILogger _logger;
    private readonly RespRequest _request = new();
    private readonly RespRequest _ahead = new();
    private readonly int[] _aheadHashes = new int[PrefetchDepth];
    private readonly RespLimits _limits;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly Lock _pushLock = new();
    private Channel<(string Channel, string? Pattern, byte[] Message)>? _pushes;
    private Task? _pushPump;
    private bool _pushRequested;
    private byte[]? _scratch;

    public CacheSession(ConnectionContext connection, CacheServerState server, Heartbeat heartbeat, ILogger logger)
    {
        _connection = connection;
        _input = connection.Input;
        _deadlines = new ConnectionDeadlines(connection.Transport, heartbeat);
        _logger = logger;
        Server = server;
        _limits = server.Options.Limits;
        Reply = new RespWriter(connection.Output);
        var now = server.Store.NowMs;
        Client = new ClientInfo
        {
            Id = server.NextClientId(),
            Address = connection.RemoteEndPoint,
            LocalAddress = connection.LocalEndPoint,
            CreatedMs = now,
            LastInteractionMs = now,
        };
        Authenticated = server.Config.RequirePass is null;
    }

    public CacheServerState Server { get; }

    public ClientInfo Client { get; }

    public RespWriter Reply { get; }

    public bool Authenticated { get; set; }

    /// <summary>Set by QUIT: close once the replies so far are flushed.</summary>
    public bool CloseRequested { get; set; }

    public HashSet<string> Channels { get; } = new(StringComparer.Ordinal);

    public HashSet<string> Patterns { get; } = new(StringComparer.Ordinal);

    public bool InSubscribeMode => Channels.Count + Patterns.Count > 0;

    public async Task RunAsync()
    {
        Server.Sessions[Client.Id] = this;
        Server.ConnectionOpened();
        Server.Metrics.ConnectionOpened();
        _deadlines.Start();
        using var closing = _connection.ClosingRequested.UnsafeRegister(static state => ((CacheSession)state!).Wake(), this);
        try
        {
            await LoopAsync();
        }
        finally
        {
            foreach (var channel in Channels)
            {
                Server.PubSub.Unsubscribe(channel, this);
            }

            foreach (var pattern in Patterns)
            {
                Server.PubSub.PUnsubscribe(pattern, this);
            }

            _pushes?.Writer.TryComplete();
            if (_pushPump is not null)
            {
                await _pushPump;
            }

            _deadlines.Stop();
            Server.Sessions.TryRemove(Client.Id, out _);
            Server.Metrics.ConnectionClosed();
        }
    }

    private async Task LoopAsync()
    {
        while (true)
        {
            if (Server.Options.Timeout > TimeSpan.Zero && !InSubscribeMode)
            {
                _deadlines.ArmRead(Server.Options.Timeout);
            }

            ReadResult result;
            try
            {
                result = await _input.ReadAsync();
            }
            catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
            {
                return;
            }

            var buffer = result.Buffer;
            if (result.IsCanceled && (_connection.ClosingRequested.IsCancellationRequested || _deadlines.ReadExpired()))
            {
                return;
            }

            if (buffer.Length > Server.Options.MaxQueryBuffer)
            {
                await FailAsync("Protocol error: query buffer exceeds client-query-buffer-limit", "query_buffer");
                return;
            }

            if (_pushPump is not null)
            {
                await _writeLock.WaitAsync();
            }

            bool keepGoing;
            long consumed;
            string? protocolError;
            try
            {
                (consumed, keepGoing, protocolError) = Process(buffer);
                _input.AdvanceTo(buffer.GetPosition(consumed), keepGoing ? buffer.End : buffer.GetPosition(consumed));
                if (!await FlushAsync())
                {
                    return;
                }
            }
            finally
            {
                if (_pushPump is not null)
                {
                    _writeLock.Release();
                }
            }

            if (protocolError is not null)
            {
                await FailAsync(protocolError, "malformed");
                return;
            }

            if (_pushRequested && _pushPump is null)
            {
                _pushPump = PumpPushesAsync();
            }

            if (CloseRequested || (result.IsCompleted && consumed == buffer.Length))
            {
                return;
            }

            if (result.IsCompleted && keepGoing)
            {
                return; // The client closed in the middle of a command.
            }
        }
    }

    /// <summary>
    /// Runs every complete command in the buffer. Returns bytes consumed, whether the rest is an
    /// incomplete command (wait for more) rather than output waiting to be flushed, and a protocol
    /// error if one was found.
    /// </summary>
    private (long Consumed, bool NeedMore, string? Error) Process(in ReadOnlySequence<byte> buffer)
    {
        var span = Contiguous(buffer, ref _scratch);

        var consumed = 0;
        var executed = 0;
        var prefetched = 0;
        var now = Server.Store.NowMs;
        while (consumed < span.Length)
        {
            if (consumed >= prefetched)
            {
                prefetched = PrefetchAhead(span, consumed);
            }

            var status = RespParser.TryParse(span[consumed..], _request, _limits, out var used, out var error);
            if (status == ParseStatus.Incomplete)
            {
                Server.CommandsProcessed(executed);
                return (consumed, true, null);
            }

            if (status == ParseStatus.Error)
            {
                Server.CommandsProcessed(executed);
                return (consumed, false, error);
            }

            var frame = span.Slice(consumed, used);
            consumed += used;
            if (_request.Count > 0)
            {
                Execute(frame, now);
                executed++;
            }

            if (CloseRequested || Reply.Output.UnflushedBytes > FlushThreshold)
            {
                break;
            }
        }

        Server.CommandsProcessed(executed);
        return (consumed, false, null);
    }

    /// <summary>
    /// For the next <see cref="PrefetchDepth"/> complete commands of a pipelined batch: hashes the
    /// first argument (the key, for the commands that take one; a wrong guess costs one wasted hint)
    /// and prefetches its bucket, entry and chunk level by level, so the commands' cache misses
    /// overlap instead of each waiting its turn. Returns the offset after the last command looked at,
    /// or the end of the buffer once a command is incomplete (so a partly received command is looked at
    /// once per read at most, and not at all while the parser is resuming it: a huge command arriving
    /// in small pieces costs no repeated walks). Nothing happens for a single command.
    /// </summary>
    private int PrefetchAhead(ReadOnlySpan<byte> span, int offset)
    {
        if (_request.ResumeAt != 0)
        {
            return span.Length; // the command here is partly parsed already, and incomplete
        }

        var store = Server.Store;
        var count = 0;
        while (count < PrefetchDepth && offset < span.Length && span[offset] == (byte)'*')
        {
            _ahead.Reset();
            if (RespParser.TryParse(span[offset..], _ahead, _limits, out var used, out _) != ParseStatus.Complete)
            {
                offset = span.Length;
                break;
            }

            if (_ahead.Count >= 2)
            {
                _aheadHashes[count++] = store.HashOf(_ahead.Arg(span.Slice(offset, used), 1));
            }

            offset += used;
        }

        if (count > 1)
        {
            var hashes = _aheadHashes.AsSpan(0, count);
            for (var level = 0; level < 3; level++)
            {
                foreach (var hash in hashes)
                {
                    store.ShardFor(hash).Prefetch(hash, level);
                }
            }
        }

        return offset;
    }

    /// <summary>
    /// The buffer as one span: as it is when it is one segment (always, with the socket reader),
    /// else copied into <paramref name="scratch"/>. Offsets are the same either way.
    /// </summary>
    internal static ReadOnlySpan<byte> Contiguous(in ReadOnlySequence<byte> buffer, ref byte[]? scratch)
    {
        if (buffer.IsSingleSegment)
        {
            return buffer.FirstSpan;
        }

        var length = (int)Math.Min(buffer.Length, int.MaxValue);
        if (scratch is null || scratch.Length < length)
        {
            scratch = new byte[Math.Max(length, 4096)];
        }

        buffer.Slice(0, length).CopyTo(scratch);
        return scratch.AsSpan(0, length);
    }

    private void Execute(ReadOnlySpan<byte> frame, long now)
    {
        var name = _request.Arg(frame, 0);
        var spec = CommandTable.Find(name);
        Client.LastInteractionMs = now;
        if (spec is null)
        {
            Reply.Error(UnknownCommand(frame));
            return;
        }

        Client.LastCommand = spec.Name;
        if (!spec.ArityOk(_request.Count))
        {
            Reply.Error(Errors.Arity(spec.LowerName));
            return;
        }

        if (!Authenticated && (spec.Flags & CommandFlags.NoAuth) == 0)
        {
            Reply.Error(Errors.NoAuth);
            return;
        }

        if (InSubscribeMode && !Reply.IsResp3 && (spec.Flags & CommandFlags.PubSubContext) == 0)
        {
            Reply.Error($"ERR Can't execute '{spec.LowerName}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context");
            return;
        }

        if ((spec.Flags & (CommandFlags.DenyOom | CommandFlags.StoresKey)) != 0 && HasKeyTooLong(frame, spec))
        {
            Reply.Error(Errors.KeyTooLong);
            return;
        }

        Server.Metrics.CommandExecuted(spec.Id);
        var context = new CommandContext(frame, _request, this, spec, now);
        spec.Handler(ref context);
    }

    /// <summary>Whether a key argument of a command that stores under it is longer than the store holds (checked before it runs, so nothing changes).</summary>
    private bool HasKeyTooLong(ReadOnlySpan<byte> frame, CommandSpec spec)
    {
        if (spec.FirstKey <= 0)
        {
            return false;
        }

        var last = spec.LastKey < 0 ? _request.Count + spec.LastKey : spec.LastKey;
        for (var i = spec.FirstKey; i <= last && i < _request.Count; i += Math.Max(1, spec.Step))
        {
            if (_request.Arg(frame, i).Length > CacheShard.MaxKeyLength)
            {
                return true;
            }
        }

        return false;
    }

    private string UnknownCommand(ReadOnlySpan<byte> frame)
    {
        var text = new StringBuilder("ERR unknown command '");
        text.Append(Errors.Truncate(Encoding.UTF8.GetString(_request.Arg(frame, 0)))).Append("', with args beginning with: ");
        for (var i = 1; i < _request.Count && i < 16; i++)
        {
            text.Append('\'').Append(Errors.Truncate(Encoding.UTF8.GetString(_request.Arg(frame, i)))).Append("' ");
        }

        return text.ToString();
    }

    /// <summary>A protocol error: answer it, count it, close (Redis does the same).</summary>
    private async Task FailAsync(string error, string reason)
    {
        Server.Metrics.ProtocolError(reason);
        Log.ProtocolError(_logger, Client.Id, error);
        await _writeLock.WaitAsync();
        try
        {
            Reply.Error("ERR " + error);
            await FlushAsync();
        }
        finally
        {
            _writeLock.Release();
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<bool> FlushAsync()
    {
        try
        {
            await Reply.Output.FlushAsync();
            return true;
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
        {
            return false;
        }
    }

    private void Wake()
    {
        try
        {
            _input.CancelPendingRead();
        }
        catch (Exception ex) when (ex is InvalidOperationException or ObjectDisposedException)
        {
            // Already finishing.
        }
    }

    // ---- Pub/sub ----------------------------------------------------------------------------------

    /// <summary>Called on the publisher's thread: queue it, the pump writes it.</summary>
    public void EnqueueMessage(string channel, string? pattern, byte[] message)
    {
        var queue = _pushes ?? EnsurePushQueue();
        queue.Writer.TryWrite((channel, pattern, message));
    }

    /// <summary>Subscribing: messages may come from now on; the pump starts after this batch's replies.</summary>
    public void EnablePushes()
    {
        EnsurePushQueue();
        _pushRequested = true;
    }

    private Channel<(string, string?, byte[])> EnsurePushQueue()
    {
        lock (_pushLock)
        {
            return _pushes ??= Channel.CreateUnbounded<(string, string?, byte[])>(new UnboundedChannelOptions { SingleReader = true });
        }
    }

    private async Task PumpPushesAsync()
    {
        var reader = _pushes!.Reader;
        while (await reader.WaitToReadAsync())
        {
            await _writeLock.WaitAsync();
            try
            {
                while (reader.TryRead(out var push))
                {
                    WritePush(push.Channel, push.Pattern, push.Message);
                }

                if (!await FlushAsync())
                {
                    return;
                }
            }
            finally
            {
                _writeLock.Release();
            }
        }
    }

    private void WritePush(string channel, string? pattern, byte[] message)
    {
        if (pattern is null)
        {
            Reply.PushHeader(3);
            Reply.Bulk("message"u8);
        }
        else
        {
            Reply.PushHeader(4);
            Reply.Bulk("pmessage"u8);
            Reply.Bulk(pattern);
        }

        Reply.Bulk(channel);
        Reply.Bulk(message);
    }

    /// <summary>CLIENT KILL: close this connection at once.</summary>
    public void Kill()
    {
        CloseRequested = true;
        _connection.Transport.Abort();
    }

    public void Dispose()
    {
        _deadlines.Stop();
        _writeLock.Dispose();
    }
}
