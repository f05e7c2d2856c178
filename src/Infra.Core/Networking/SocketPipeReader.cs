using System.IO.Pipelines;
using System.Net.Sockets;
using System.Runtime.CompilerServices;

namespace Infra.Core.Networking;

/// <summary>
/// A <see cref="PipeReader"/> reading straight from a socket into one contiguous pooled buffer. Every
/// buffer it hands out is a single segment (parsers take their fast path), reads need no extra copy
/// or segment bookkeeping, and a read that finds data already in the kernel completes inline. The
/// buffer grows while a message is larger than it (bounded by the caller's limits) and for bulk
/// transfers, where a read that fills it asks for a bigger one next time (up to 64 KiB).
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "A PipeReader's end of life is Complete(), which disposes it.")]
public sealed class SocketPipeReader : ContiguousSocketReader, ICompletionThread
{
    private readonly Socket _socket;
    private CancellationTokenSource _cancel = new();
    private int _completionThread;

    public SocketPipeReader(Socket socket)
    {
        _socket = socket;
    }

    /// <summary>The managed thread on which the last read that had to wait for data completed (0 before any).</summary>
    public int CompletionThread => Volatile.Read(ref _completionThread);

    public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        if (TryRead(out var ready))
        {
            return new ValueTask<ReadResult>(ready);
        }

        Buffer.PrepareForReceive();
        ValueTask<int> receive;
        try
        {
            receive = _socket.ReceiveAsync(Buffer.Free, SocketFlags.None, _cancel.Token);
        }
        catch (OperationCanceledException)
        {
            return new ValueTask<ReadResult>(ConsumeCancellation());
        }
        catch (SocketException ex)
        {
            throw new IOException(ex.Message, ex);
        }

        if (receive.IsCompletedSuccessfully)
        {
            return new ValueTask<ReadResult>(Received(receive.Result, out _));
        }

        return AwaitReceiveAsync(receive);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<ReadResult> AwaitReceiveAsync(ValueTask<int> receive)
    {
        int received;
        try
        {
            received = await receive;
        }
        catch (OperationCanceledException)
        {
            // Also a cancel that raced a previous read's reset and hit this one: callers treat any
            // canceled result as "check your deadlines, then read again".
            return ConsumeCancellation();
        }
        catch (SocketException ex)
        {
            throw new IOException(ex.Message, ex);
        }

        Volatile.Write(ref _completionThread, Environment.CurrentManagedThreadId);
        return Received(received, out _);
    }

    private protected override ReadResult ConsumeCancellation()
    {
        if (!_cancel.TryReset())
        {
            _cancel.Dispose();
            _cancel = new CancellationTokenSource();
        }

        return base.ConsumeCancellation();
    }

    private protected override void WakeForCancel()
    {
        try
        {
            _cancel.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // Completed meanwhile.
        }
    }

    private protected override void OnCompleted() => _cancel.Dispose();
}
