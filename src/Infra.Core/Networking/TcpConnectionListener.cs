using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace Infra.Core.Networking;

/// <summary>Settings of one listening endpoint.</summary>
public sealed record ListenerOptions
{
    /// <summary>Connections beyond this are accepted and closed at once, so the backlog never stalls.</summary>
    public int MaxConnections { get; init; } = 10_000;

    /// <summary>Kernel accept queue length; 512 absorbs a burst of wrk-style connects.</summary>
    public int Backlog { get; init; } = 512;

    /// <summary>
    /// Bytes sent (best effort, never waited for) to a connection refused at <see cref="MaxConnections"/>
    /// before it is closed, e.g. Redis's <c>-ERR max number of clients reached</c>.
    /// </summary>
    public ReadOnlyMemory<byte> RejectMessage { get; init; }
}

/// <summary>
/// Accepts TCP connections on one endpoint and runs each on an <see cref="IConnectionHandler"/>.
/// Stopping closes the listening socket, asks every connection to finish, waits for them up to a
/// deadline and then aborts the rest.
/// </summary>
public sealed partial class TcpConnectionListener : IAsyncDisposable
{
    private readonly EndPoint _endPoint;
    private readonly IConnectionHandler _handler;
    private readonly ListenerOptions _options;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<long, ConnectionContext> _connections = new();
    private readonly CancellationTokenSource _stopping = new();
    private readonly TaskCompletionSource _allClosed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Socket? _socket;
    private IPEndPoint? _bound;
    private Task? _acceptLoop;
    private long _nextId;
    private int _active;

    public TcpConnectionListener(EndPoint endPoint, IConnectionHandler handler, ListenerOptions options, ILogger logger)
    {
        _endPoint = endPoint;
        _handler = handler;
        _options = options;
        _logger = logger;
    }

    /// <summary>The bound endpoint, with the real port when 0 was asked for.</summary>
    public IPEndPoint BoundEndPoint => _bound ?? throw new InvalidOperationException("not started");

    public int ActiveConnections => Volatile.Read(ref _active);

    /// <summary>Raised (on the accept loop) for every connection refused because of the connection limit.</summary>
    public event Action? ConnectionRejected;

    /// <summary>Raised when a connection is accepted and when it ends (true = opened).</summary>
    public event Action<bool>? ConnectionChanged;

    public void Start()
    {
        var socket = new Socket(_endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        if (_endPoint is IPEndPoint { Address: var address } && address.Equals(IPAddress.IPv6Any))
        {
            socket.DualMode = true;
        }

        try
        {
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            socket.Bind(_endPoint);
            socket.Listen(_options.Backlog);
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        _socket = socket;
        _bound = (IPEndPoint)socket.LocalEndPoint!;
        _acceptLoop = Task.Run(AcceptLoopAsync);
    }

    private async Task AcceptLoopAsync()
    {
        var listenSocket = _socket!;
        while (!_stopping.IsCancellationRequested)
        {
            Socket accepted;
            try
            {
                accepted = await listenSocket.AcceptAsync(_stopping.Token);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            catch (ObjectDisposedException)
            {
                break;
            }
            catch (SocketException ex) when (ex.SocketErrorCode is SocketError.ConnectionAborted or SocketError.ConnectionReset)
            {
                continue; // The client gave up while in the accept queue.
            }
            catch (SocketException ex)
            {
                // EMFILE and friends: keep serving the connections we have, try again shortly.
                LogAcceptFailed(_logger, ex.SocketErrorCode, ex);
                await Task.Delay(50);
                continue;
            }

            if (Interlocked.Increment(ref _active) > _options.MaxConnections)
            {
                Interlocked.Decrement(ref _active);
                LogConnectionLimit(_logger, _options.MaxConnections);
                ConnectionRejected?.Invoke();
                Reject(accepted);
                continue;
            }

            ConnectionContext context;
            try
            {
                accepted.NoDelay = true;
                var id = Interlocked.Increment(ref _nextId);
                context = new ConnectionContext(id, new SocketConnection(accepted));
                _connections[id] = context;
                ConnectionChanged?.Invoke(true);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                // Reset between accept and set-up: nothing to serve.
                accepted.Dispose();
                Interlocked.Decrement(ref _active);
                continue;
            }

            // The handler starts on the thread pool so a slow first read never holds up accepting.
            _ = Task.Run(() => RunConnectionAsync(context));
            if (_stopping.IsCancellationRequested)
            {
                context.RequestClose();
            }
        }
    }

    private async Task RunConnectionAsync(ConnectionContext context)
    {
        try
        {
            await _handler.OnConnectedAsync(context);
        }
        catch (Exception ex) when (ex is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
        {
            LogConnectionEnded(_logger, context.Id, ex.Message);
        }
#pragma warning disable CA1031 // One connection's bug must never take the process down.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            LogConnectionFailed(_logger, context.Id, ex);
        }
        finally
        {
            await context.Transport.DisposeAsync();
            _connections.TryRemove(context.Id, out _);
            context.Dispose();
            ConnectionChanged?.Invoke(false);
            if (Interlocked.Decrement(ref _active) == 0 && _stopping.IsCancellationRequested)
            {
                _allClosed.TrySetResult();
            }
        }
    }

    /// <summary>
    /// Stops accepting, asks connections to close, waits until they do or <paramref name="gracePeriod"/>
    /// passes, then aborts the rest.
    /// </summary>
    public async Task StopAsync(TimeSpan gracePeriod, CancellationToken cancellationToken = default)
    {
        if (_stopping.IsCancellationRequested)
        {
            return;
        }

        await _stopping.CancelAsync();
        _socket?.Dispose();
        if (_acceptLoop is not null)
        {
            await _acceptLoop;
        }

        if (Volatile.Read(ref _active) == 0)
        {
            _allClosed.TrySetResult();
        }

        foreach (var context in _connections.Values)
        {
            context.RequestClose();
        }

        try
        {
            await _allClosed.Task.WaitAsync(gracePeriod, cancellationToken);
        }
        catch (Exception ex) when (ex is TimeoutException or OperationCanceledException)
        {
            foreach (var context in _connections.Values)
            {
                context.Transport.Abort();
            }

            try
            {
                // Aborted sockets fail pending I/O at once; this only bounds a handler that ignores it.
                await _allClosed.Task.WaitAsync(TimeSpan.FromSeconds(5), CancellationToken.None);
            }
            catch (TimeoutException)
            {
                LogStopTimedOut(_logger, Volatile.Read(ref _active));
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(TimeSpan.Zero);
        _stopping.Dispose();
    }

    private void Reject(Socket accepted)
    {
        try
        {
            if (!_options.RejectMessage.IsEmpty)
            {
                accepted.Blocking = false; // A fresh socket's send buffer takes it; never wait for a client.
                accepted.Send(_options.RejectMessage.Span, SocketFlags.None, out _);
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // The client is gone already: nothing to tell it.
        }
        finally
        {
            accepted.Dispose();
        }
    }

    [LoggerMessage(EventId = 100, Level = LogLevel.Warning, Message = "Accept failed with {Error}; retrying")]
    private static partial void LogAcceptFailed(ILogger logger, SocketError error, Exception exception);

    [LoggerMessage(EventId = 104, Level = LogLevel.Warning, Message = "{Count} connections were still running when the listener stopped")]
    private static partial void LogStopTimedOut(ILogger logger, int count);

    [LoggerMessage(EventId = 101, Level = LogLevel.Debug, Message = "Connection refused: limit of {Limit} connections reached")]
    private static partial void LogConnectionLimit(ILogger logger, int limit);

    [LoggerMessage(EventId = 102, Level = LogLevel.Debug, Message = "Connection {ConnectionId} ended: {Reason}")]
    private static partial void LogConnectionEnded(ILogger logger, long connectionId, string reason);

    [LoggerMessage(EventId = 103, Level = LogLevel.Error, Message = "Connection {ConnectionId} failed")]
    private static partial void LogConnectionFailed(ILogger logger, long connectionId, Exception exception);
}
