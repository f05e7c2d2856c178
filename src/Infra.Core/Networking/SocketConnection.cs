using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Infra.Core.Networking.Epoll;

namespace Infra.Core.Networking;

/// <summary>
/// A connected TCP socket exposed as a pair of pipes. Reads and writes go straight to the socket,
/// with no copy loop between, so a read that finds data already in the kernel completes inline.
/// The pipes run on .NET's socket engine (<see cref="SocketPipeReader"/>, <see cref="SocketPipeWriter"/>),
/// or on our own <see cref="EpollEngine"/> when the process chose it: <c>INFRA_SOCKET_ENGINE=epoll</c>
/// (the load balancer sets it unless told otherwise).
/// </summary>
public sealed class SocketConnection : IAsyncDisposable
{
    /// <summary>Environment variable choosing the socket engine: <c>epoll</c> or <c>dotnet</c> (default).</summary>
    public const string EngineVariable = "INFRA_SOCKET_ENGINE";

    /// <summary>Environment variable setting the epoll engine's thread count (default: one per core).</summary>
    public const string ThreadsVariable = "INFRA_EPOLL_THREADS";

    private static readonly Lazy<EpollEngine?> SharedEngine = new(CreateEngine);
    private readonly EpollSocket? _epoll;
    private int _aborted;
    private int _disposed;

    public SocketConnection(Socket socket)
        : this(socket, SharedEngine.Value?.Register(socket), socket.RemoteEndPoint)
    {
    }

    private SocketConnection(Socket socket, EpollSocket? epoll, EndPoint? remote)
    {
        ArgumentNullException.ThrowIfNull(socket);
        Socket = socket;
        RemoteEndPoint = remote;
        LocalEndPoint = socket.LocalEndPoint;
        _epoll = epoll;
        if (epoll is null)
        {
            Input = new SocketPipeReader(socket);
            Output = new SocketPipeWriter(socket);
        }
        else
        {
            Input = new EpollPipeReader(epoll);
            Output = new EpollPipeWriter(epoll);
        }
    }

    /// <summary>.NET's switch that runs its socket engine's completions on its epoll threads instead of the thread pool.</summary>
    public const string DotnetInlineCompletionsVariable = "DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS";

    /// <summary>
    /// A service's defaults for request paths with no hop to the thread pool: connections on Infra.Core's
    /// epoll engine (<see cref="EngineVariable"/> = epoll) and .NET's own socket completions (accepts, Kestrel)
    /// inline (<see cref="DotnetInlineCompletionsVariable"/> = 1). Call first thing in Main: both are read
    /// when the first socket is made. An explicit setting of either wins (dotnet / 0 go back).
    /// </summary>
    public static void PreferInlineCompletions()
    {
        foreach (var (variable, value) in new[] { (EngineVariable, "epoll"), (DotnetInlineCompletionsVariable, "1") })
        {
            if (Environment.GetEnvironmentVariable(variable) is null)
            {
                Environment.SetEnvironmentVariable(variable, value);
            }
        }
    }

    /// <summary>The epoll engine this process runs its connections on, or null for .NET's.</summary>
    public static EpollEngine? Engine => SharedEngine.Value;

    private static EpollEngine? CreateEngine()
    {
        var choice = Environment.GetEnvironmentVariable(EngineVariable);
        if (!string.Equals(choice, "epoll", StringComparison.OrdinalIgnoreCase) || !EpollEngine.IsSupported)
        {
            return null;
        }

        // INFRA_EPOLL_THREADS=N: N epoll threads instead of one per core (for measurements).
        return EpollEngine.Start(int.TryParse(Environment.GetEnvironmentVariable(ThreadsVariable), out var threads) && threads is > 0 and <= 1024 ? threads : 0);
    }

    /// <summary>The thread reads of this connection complete on (0 until known).</summary>
    public int CompletionThread => ((ICompletionThread)Input).CompletionThread;

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
        EpollSocket? epoll = null;
        try
        {
            if (SharedEngine.Value is { } engine)
            {
                // Connected by the engine, so .NET's own engine never registers the socket.
                if (endPoint is DnsEndPoint dns)
                {
                    var addresses = await Dns.GetHostAddressesAsync(dns.Host, socket.AddressFamily, linked.Token);
                    endPoint = new IPEndPoint(addresses.Length > 0 ? addresses[0] : throw new SocketException((int)SocketError.HostNotFound), dns.Port);
                }

                var started = EpollSocket.StartConnect(socket, endPoint);
                epoll = engine.Register(socket);
                if (started != 0)
                {
                    await epoll.FinishConnectAsync(linked.Token);
                }

                return new SocketConnection(socket, epoll, endPoint);
            }

            await socket.ConnectAsync(endPoint, linked.Token);
            return new SocketConnection(socket);
        }
        catch (OperationCanceledException) when (timeoutSource.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            epoll?.Close();
            socket.Dispose();
            throw new TimeoutException($"connect to {endPoint} timed out after {timeout.TotalMilliseconds:0} ms");
        }
        catch
        {
            epoll?.Close();
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

        _epoll?.Close();
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

        _epoll?.Close();
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

        _epoll?.Close();
        await Input.CompleteAsync();
        Socket.Dispose();
    }
}
