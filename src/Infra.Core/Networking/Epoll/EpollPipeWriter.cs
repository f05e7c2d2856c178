using System.IO.Pipelines;
using System.Threading.Tasks.Sources;

namespace Infra.Core.Networking.Epoll;

/// <summary>
/// <see cref="SocketPipeWriter"/>'s contract (one contiguous pooled buffer, one send(2) per flush)
/// on an <see cref="EpollSocket"/>: a flush the kernel cannot take at once parks until epoll says
/// there is room, and the epoll thread sends the rest.
/// </summary>
internal sealed class EpollPipeWriter : ContiguousSocketWriter, IValueTaskSource<FlushResult>
{
    private readonly EpollSocket _socket;
    private ManualResetValueTaskSourceCore<FlushResult> _parked;
    private int _sent;

    public EpollPipeWriter(EpollSocket socket)
    {
        _socket = socket;
        _parked.RunContinuationsAsynchronously = false;
        socket.WritableCallback = OnWritable;
        socket.WriteClosedCallback = OnClosed;
    }

    public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
    {
        if (Buffer.Written == 0)
        {
            return new ValueTask<FlushResult>(new FlushResult(isCanceled: false, isCompleted: false));
        }

        _sent = 0;
        while (true)
        {
            var observed = _socket.Write.Observe();
            if (Readiness.StateOf(observed) == Readiness.Closed)
            {
                throw new IOException("the connection is closed", new ObjectDisposedException(nameof(EpollSocket)));
            }

            if (Readiness.StateOf(observed) == Readiness.Waiting)
            {
                throw new InvalidOperationException("a flush is already pending");
            }

            if (TrySendAll(out var error))
            {
                return new ValueTask<FlushResult>(new FlushResult(isCanceled: false, isCompleted: false));
            }

            if (error != EpollNative.EAGAIN)
            {
                throw EpollSocket.Failure(error, "send");
            }

            _parked.Reset();
            if (_socket.Write.TryWait(observed))
            {
                return new ValueTask<FlushResult>(this, _parked.Version);
            }
        }
    }

    /// <summary>Sends what is left; true when all of it went, false with EAGAIN or an error in <paramref name="error"/>.</summary>
    private bool TrySendAll(out int error)
    {
        while (_sent < Buffer.Written)
        {
            var sent = _socket.Send(Buffer.Unsent(_sent).Span, out error);
            if (sent < 0)
            {
                return false;
            }

            _sent += sent;
        }

        error = 0;
        _sent = 0;
        Buffer.Sent();
        return true;
    }

    /// <summary>On the epoll thread, owning the parked flush: send the rest, then complete (or park again).</summary>
    private void OnWritable()
    {
        while (true)
        {
            var observed = _socket.Write.Observe();
            if (Readiness.StateOf(observed) == Readiness.Closed)
            {
                OnClosed();
                return;
            }

            if (TrySendAll(out var error))
            {
                _parked.SetResult(new FlushResult(isCanceled: false, isCompleted: false));
                return;
            }

            if (error != EpollNative.EAGAIN)
            {
                _parked.SetException(EpollSocket.Failure(error, "send"));
                return;
            }

            if (_socket.Write.TryWait(observed))
            {
                return;
            }
        }
    }

    private void OnClosed() => _parked.SetException(new IOException("the connection is closed", new ObjectDisposedException(nameof(EpollSocket))));

    FlushResult IValueTaskSource<FlushResult>.GetResult(short token) => _parked.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource<FlushResult>.GetStatus(short token) => _parked.GetStatus(token);

    void IValueTaskSource<FlushResult>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _parked.OnCompleted(continuation, state, token, flags);
}
