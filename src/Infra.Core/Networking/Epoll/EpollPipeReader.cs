using System.IO.Pipelines;
using System.Threading.Tasks.Sources;

namespace Infra.Core.Networking.Epoll;

/// <summary>
/// <see cref="SocketPipeReader"/>'s contract (one contiguous pooled buffer, inline completions) on an
/// <see cref="EpollSocket"/>: a read that came back short marks the socket not ready, so the next
/// read waits for epoll's edge instead of paying a recv(2) that would say EAGAIN; a parked read is
/// finished (recv and all) by the epoll thread, which then runs the awaiting code inline.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "A PipeReader's end of life is Complete(), which disposes it.")]
internal sealed class EpollPipeReader : ContiguousSocketReader, IValueTaskSource<ReadResult>, ICompletionThread
{
    private readonly EpollSocket _socket;
    private ManualResetValueTaskSourceCore<ReadResult> _parked;

    public EpollPipeReader(EpollSocket socket)
    {
        _socket = socket;
        _parked.RunContinuationsAsynchronously = false;
        socket.ReadableCallback = OnReadable;
        socket.ReadClosedCallback = OnClosed;
    }

    public int CompletionThread => _socket.ThreadId;

    public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        if (TryRead(out var ready))
        {
            return new ValueTask<ReadResult>(ready);
        }

        Buffer.PrepareForReceive();
        while (true)
        {
            var observed = _socket.Read.Observe();
            var state = Readiness.StateOf(observed);
            if (state == Readiness.Closed)
            {
                throw new IOException("the connection is closed", new ObjectDisposedException(nameof(EpollSocket)));
            }

            if (state == Readiness.Waiting)
            {
                throw new InvalidOperationException("a read is already pending");
            }

            if (state == Readiness.Ready)
            {
                var received = _socket.Receive(Buffer.Free.Span, out var error);
                if (received >= 0)
                {
                    return new ValueTask<ReadResult>(Received(received, observed));
                }

                if (error != EpollNative.EAGAIN)
                {
                    throw EpollSocket.Failure(error, "recv");
                }
            }

            _parked.Reset();
            if (!_socket.Read.TryWait(observed))
            {
                continue; // an event came meanwhile: try again
            }

            if (CancelRequested && _socket.Read.TryTakeWaiter())
            {
                return new ValueTask<ReadResult>(ConsumeCancellation());
            }

            return new ValueTask<ReadResult>(this, _parked.Version);
        }
    }

    /// <summary>On the epoll thread, owning the parked read: receive, then complete (or park again).</summary>
    private void OnReadable()
    {
        while (true)
        {
            var observed = _socket.Read.Observe();
            if (Readiness.StateOf(observed) == Readiness.Closed)
            {
                OnClosed();
                return;
            }

            var received = _socket.Receive(Buffer.Free.Span, out var error);
            if (received >= 0)
            {
                _parked.SetResult(Received(received, observed));
                return;
            }

            if (error != EpollNative.EAGAIN)
            {
                _parked.SetException(EpollSocket.Failure(error, "recv"));
                return;
            }

            if (_socket.Read.TryWait(observed))
            {
                if (CancelRequested && _socket.Read.TryTakeWaiter())
                {
                    _parked.SetResult(ConsumeCancellation());
                }

                return;
            }
        }
    }

    private void OnClosed() => _parked.SetException(new IOException("the connection is closed", new ObjectDisposedException(nameof(EpollSocket))));

    private ReadResult Received(int count, long observed)
    {
        var result = Received(count, out var filled);
        if (count > 0 && !filled && !_socket.PeerDone)
        {
            _socket.Read.MarkNotReady(observed); // a short read: the kernel queue is drained, the next read waits for an edge
        }

        return result;
    }

    /// <summary>Ends a parked read with a canceled result (on the thread pool); otherwise the next read returns one.</summary>
    private protected override void WakeForCancel()
    {
        if (_socket.Read.TryTakeWaiter())
        {
            ThreadPool.UnsafeQueueUserWorkItem(static reader => EpollSocket.RunGuarded(reader.CompleteCanceled), this, preferLocal: false);
        }
    }

    private void CompleteCanceled() => _parked.SetResult(ConsumeCancellation());

    ReadResult IValueTaskSource<ReadResult>.GetResult(short token) => _parked.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource<ReadResult>.GetStatus(short token) => _parked.GetStatus(token);

    void IValueTaskSource<ReadResult>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _parked.OnCompleted(continuation, state, token, flags);
}
