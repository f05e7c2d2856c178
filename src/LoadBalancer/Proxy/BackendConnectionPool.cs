using System.Net;
using Infra.Core.Networking;
using Infra.Core.Timing;

namespace Infra.LoadBalancer.Proxy;

/// <summary>A keep-alive connection to a backend, with its deadlines.</summary>
internal sealed class BackendConnection
{
    public BackendConnection(SocketConnection transport, Heartbeat heartbeat)
    {
        Transport = transport;
        Deadlines = new ConnectionDeadlines(transport, heartbeat);
        Deadlines.Start();
    }

    public SocketConnection Transport { get; }

    public ConnectionDeadlines Deadlines { get; }

    /// <summary>When it went back to the pool (heartbeat timestamp).</summary>
    public long IdleSince { get; set; }

    /// <summary>The epoll thread this connection's reads complete on (0 until known).</summary>
    public int Thread => Transport.CompletionThread;

    /// <summary>Set when its last response had no body by rule (HEAD, 204, 304): poll before reuse.</summary>
    public bool CheckBeforeReuse { get; set; }

    /// <summary>Requests this connection has carried, the current one included.</summary>
    public int Uses { get; set; }

    /// <summary>Releases the connection: only its owner (the exchange using it, or the pool) calls this.</summary>
    public void Close()
    {
        Deadlines.Stop();
        Transport.Close();
    }

    /// <summary>
    /// Resets the socket, failing pending reads and writes at once. Safe from any thread; the pipes
    /// stay intact until the owner calls <see cref="Close"/>.
    /// </summary>
    public void Abort() => Transport.Abort();
}

/// <summary>
/// Idle keep-alive connections to one backend, most recently used first (warm connections stay warm,
/// the tail ages out). Like HAProxy's per-thread idle lists, a rent prefers a connection served by
/// the calling thread, so a request and its backend exchange stay on one epoll thread instead of
/// waking the other. A connection idle over a second, or whose last response was bodiless by rule,
/// is polled before reuse, so one the backend closed (or wrote stray bytes to) meanwhile is dropped
/// instead of failing or confusing a request.
/// </summary>
internal sealed class BackendConnectionPool : IHeartbeatTarget
{
    // How far down the idle list a rent looks for a connection of its own thread.
    private const int AffinityScan = 16;

    private readonly List<BackendConnection> _idle = [];
    private readonly Lock _lock = new();
    private readonly EndPoint _endPoint;
    private readonly Heartbeat _heartbeat;
    private readonly TimeSpan _connectTimeout;
    private readonly long _idleTimeout;
    private readonly long _staleCheckAfter;
    private readonly int _maxIdle;
    private bool _closed;

    public BackendConnectionPool(EndPoint endPoint, Heartbeat heartbeat, TimeSpan connectTimeout, TimeSpan idleTimeout, int maxIdle)
    {
        _endPoint = endPoint;
        _heartbeat = heartbeat;
        _connectTimeout = connectTimeout;
        _idleTimeout = heartbeat.ToTimestampDelta(idleTimeout);
        _staleCheckAfter = heartbeat.ToTimestampDelta(TimeSpan.FromSeconds(1));
        _maxIdle = maxIdle;
        heartbeat.Register(this);
    }

    /// <summary>Raised after a new connection is opened.</summary>
    public event Action? ConnectionOpened;

    public int IdleCount
    {
        get
        {
            lock (_lock)
            {
                return _idle.Count;
            }
        }
    }

    /// <summary>
    /// An idle connection, or a new one. Throws <see cref="System.Net.Sockets.SocketException"/> or
    /// <see cref="TimeoutException"/> when a new connection cannot be made.
    /// </summary>
    public async ValueTask<(BackendConnection Connection, bool Reused)> RentAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            BackendConnection? candidate = null;
            var thread = Environment.CurrentManagedThreadId;
            lock (_lock)
            {
                if (_idle.Count > 0)
                {
                    var index = _idle.Count - 1;
                    for (var i = index; i >= 0 && i >= _idle.Count - AffinityScan; i--)
                    {
                        if (_idle[i].Thread == thread)
                        {
                            index = i;
                            break;
                        }
                    }

                    candidate = _idle[index];
                    _idle.RemoveAt(index);
                }
            }

            if (candidate is null)
            {
                break;
            }

            var idleFor = _heartbeat.CoarseNow - candidate.IdleSince;
            // A poll (one syscall) catches a backend that closed the connection while it sat idle,
            // and stray bytes after a bodiless response (a HEAD handler that wrote a body anyway),
            // which must never be read as the next client's response. Hot connections that ended
            // with a framed body skip it.
            if (idleFor > _idleTimeout
                || ((idleFor > _staleCheckAfter || candidate.CheckBeforeReuse) && candidate.Transport.HasPendingInputOrClosed()))
            {
                candidate.Close();
                continue;
            }

            candidate.Uses++;
            return (candidate, true);
        }

        if (Volatile.Read(ref _closed))
        {
            throw new IOException("the backend was removed");
        }

        var transport = await SocketConnection.ConnectAsync(_endPoint, _connectTimeout, _heartbeat.TimeProvider, cancellationToken);
        ConnectionOpened?.Invoke();
        return (new BackendConnection(transport, _heartbeat) { Uses = 1 }, false);
    }

    /// <summary>Makes every idle connection be polled before its next use (one of them was found closed).</summary>
    public void CheckIdleBeforeReuse()
    {
        lock (_lock)
        {
            foreach (var connection in _idle)
            {
                connection.CheckBeforeReuse = true;
            }
        }
    }

    /// <summary>Takes back a connection whose last exchange ended cleanly.</summary>
    public void Return(BackendConnection connection)
    {
        connection.Deadlines.DisarmRead();
        connection.Deadlines.DisarmWrite();
        connection.IdleSince = _heartbeat.CoarseNow;
        lock (_lock)
        {
            if (!_closed && _idle.Count < _maxIdle)
            {
                _idle.Add(connection);
                return;
            }
        }

        connection.Close();
    }

    /// <summary>Closes idle connections and refuses new ones (the backend was removed).</summary>
    public void CloseAll()
    {
        _heartbeat.Unregister(this);
        BackendConnection[] idle;
        lock (_lock)
        {
            _closed = true;
            idle = [.. _idle];
            _idle.Clear();
        }

        foreach (var connection in idle)
        {
            connection.Close();
        }
    }

    /// <summary>Closes connections idle past the timeout, oldest first.</summary>
    public void OnHeartbeat(long nowTimestamp)
    {
        List<BackendConnection>? expired = null;
        lock (_lock)
        {
            while (_idle.Count > 0 && nowTimestamp - _idle[0].IdleSince > _idleTimeout)
            {
                (expired ??= []).Add(_idle[0]);
                _idle.RemoveAt(0);
            }
        }

        if (expired is not null)
        {
            foreach (var connection in expired)
            {
                connection.Close();
            }
        }
    }
}
