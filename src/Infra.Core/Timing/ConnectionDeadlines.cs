using Infra.Core.Networking;

namespace Infra.Core.Timing;

/// <summary>
/// Read and write deadlines of one connection, enforced by a <see cref="Heartbeat"/>. A read past its
/// deadline is woken with <c>CancelPendingRead</c> (the reader sees <c>IsCanceled</c> and asks
/// <see cref="ReadExpired"/>); a write past its deadline aborts the socket, since a peer that stopped
/// reading cannot be unblocked any other way.
/// </summary>
public sealed class ConnectionDeadlines : IHeartbeatTarget
{
    private const long Never = long.MaxValue;
    private readonly SocketConnection _connection;
    private readonly Heartbeat _heartbeat;
    private long _readDeadline = Never;
    private long _writeDeadline = Never;
    private int _writeTimedOut;

    public ConnectionDeadlines(SocketConnection connection, Heartbeat heartbeat)
    {
        _connection = connection;
        _heartbeat = heartbeat;
    }

    public Heartbeat Heartbeat => _heartbeat;

    /// <summary>True once a write deadline has aborted the connection.</summary>
    public bool WriteTimedOut => Volatile.Read(ref _writeTimedOut) != 0;

    public void Start() => _heartbeat.Register(this);

    public void Stop() => _heartbeat.Unregister(this);

    public void ArmRead(TimeSpan timeout) => Volatile.Write(ref _readDeadline, _heartbeat.DeadlineAfter(timeout));

    public void DisarmRead() => Volatile.Write(ref _readDeadline, Never);

    /// <summary>
    /// Whether the armed read deadline has passed. A canceled read for which this is false was woken
    /// for another reason (shutdown, or a cancel left over from an earlier deadline) and may be retried.
    /// </summary>
    public bool ReadExpired() => _heartbeat.CoarseNow >= Volatile.Read(ref _readDeadline);

    public void ArmWrite(TimeSpan timeout) => Volatile.Write(ref _writeDeadline, _heartbeat.DeadlineAfter(timeout));

    public void DisarmWrite() => Volatile.Write(ref _writeDeadline, Never);

    public void OnHeartbeat(long nowTimestamp)
    {
        if (nowTimestamp >= Volatile.Read(ref _readDeadline))
        {
            try
            {
                _connection.Input.CancelPendingRead();
            }
            catch (Exception ex) when (ex is InvalidOperationException or ObjectDisposedException)
            {
                // The reader completed while the deadline fired: nothing left to wake.
            }
        }

        if (nowTimestamp >= Volatile.Read(ref _writeDeadline))
        {
            Volatile.Write(ref _writeTimedOut, 1);
            Volatile.Write(ref _writeDeadline, Never);
            _connection.Abort();
        }
    }
}
