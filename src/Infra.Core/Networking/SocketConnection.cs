using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;

namespace Infra.Core.Networking;

/// <summary>
/// A connected TCP socket exposed as a pair of pipes (<see cref="SocketPipeReader"/>,
/// <see cref="SocketPipeWriter"/>). Reads and writes go straight to the socket, with no copy loop
/// between, so a read that finds data already in the kernel completes inline.
/// </summary>
public sealed class SocketConnection : IAsyncDisposable
{
    private int _aborted;
    private int _disposed;

    public SocketConnection(Socket socket)
    {
        ArgumentNullException.ThrowIfNull(socket);
        Socket = socket;
        RemoteEndPoint = socket.RemoteEndPoint;
        LocalEndPoint = socket.LocalEndPoint;
        Input = new SocketPipeReader(socket);
        Output = new SocketPipeWriter(socket);
    }

    public Socket Socket { get; }

    public PipeReader Input { get; }

    public PipeWriter Output { get; }

    public EndPoint? RemoteEndPoint { get; }

    public EndPoint? LocalEndPoint { get; }

    public bool IsClosed => Volatile.Read(ref _aborted) != 0 || Volatile.Read(ref _disposed) != 0;

    /// <summary>Opens a TCP connection, failing with <see cref="TimeoutException"/> after <paramref name="timeout"/>.</summary>
    public static async ValueTask<SocketConnection> ConnectAsync(EndPoint endPoint, TimeSpan timeout, TimeProvider timeProvider, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(endPoint);
        var socket = new Socket(endPoint.AddressFamily == AddressFamily.Unspecified ? AddressFamily.InterNetwork : endPoint.AddressFamily,
            SocketType.Stream, ProtocolType.Tcp)
        {
            NoDelay = true,
        };
        using var timeoutSource = new CancellationTokenSource(timeout, timeProvider);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeoutSource.Token, cancellationToken);
        try
        {
            await socket.ConnectAsync(endPoint, linked.Token);
            return new SocketConnection(socket);
        }
        catch (OperationCanceledException) when (timeoutSource.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            socket.Dispose();
            throw new TimeoutException($"connect to {endPoint} timed out after {timeout.TotalMilliseconds:0} ms");
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>
    /// True when the peer has closed or sent unexpected bytes while the connection sat idle:
    /// such a connection must not be reused. Costs one poll(2).
    /// </summary>
    public bool HasPendingInputOrClosed()
    {
        try
        {
            // Readable covers data, end of stream and a pending error alike: one poll(2).
            return Socket.Poll(0, SelectMode.SelectRead);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            return true;
        }
    }

    /// <summary>Closes the socket at once with a reset, failing pending reads and writes.</summary>
    public void Abort()
    {
        if (Interlocked.Exchange(ref _aborted, 1) != 0)
        {
            return;
        }

        try
        {
            Socket.LingerState = new LingerOption(true, 0);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // Already closed by the peer; nothing left to reset.
        }

        Socket.Dispose();
    }

    /// <summary>Half-closes the send side so the peer sees end of stream after everything written.</summary>
    public void ShutdownSend()
    {
        try
        {
            Socket.Shutdown(SocketShutdown.Send);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // The peer is gone; the close that follows is all that is left to do.
        }
    }

    /// <summary>Closes gracefully without waiting: completes both pipes and closes the socket (FIN).</summary>
    public void Close()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        if (Volatile.Read(ref _aborted) == 0)
        {
            try
            {
                Output.Complete();
            }
            catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
            {
                // Final flush failed because the peer is gone; closing is all that is left.
            }
        }

        Input.Complete();
        Socket.Dispose();
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        if (Volatile.Read(ref _aborted) == 0)
        {
            try
            {
                await Output.CompleteAsync();
            }
            catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
            {
                // Final flush failed because the peer is gone; closing is all that is left.
            }
        }

        await Input.CompleteAsync();
        Socket.Dispose();
    }
}
