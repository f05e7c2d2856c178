using System.IO.Pipelines;
using System.Net;

namespace Infra.Core.Networking;

/// <summary>One accepted client connection as a protocol handler sees it.</summary>
public sealed class ConnectionContext : IDisposable
{
    private readonly CancellationTokenSource _closing = new();

    internal ConnectionContext(long id, SocketConnection transport)
    {
        Id = id;
        Transport = transport;
    }

    public long Id { get; }

    public SocketConnection Transport { get; }

    public PipeReader Input => Transport.Input;

    public PipeWriter Output => Transport.Output;

    public EndPoint? RemoteEndPoint => Transport.RemoteEndPoint;

    public EndPoint? LocalEndPoint => Transport.LocalEndPoint;

    /// <summary>
    /// Signalled when the server is shutting down: finish the work in hand, then close. Handlers
    /// waiting idle for the next request should stop waiting.
    /// </summary>
    public CancellationToken ClosingRequested => _closing.Token;

    internal void RequestClose()
    {
        try
        {
            _closing.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // The connection finished while shutdown began.
        }
    }

    public void Dispose() => _closing.Dispose();
}

/// <summary>The protocol side of a listener: runs one connection from accept to close.</summary>
public interface IConnectionHandler
{
    /// <summary>
    /// Runs the connection. The listener disposes the transport when the returned task ends, so the
    /// handler does not need to; exceptions are logged by the listener and end only this connection.
    /// </summary>
    Task OnConnectedAsync(ConnectionContext connection);
}
