using System.Buffers;
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
public sealed class SocketPipeReader : PipeReader, ICompletionThread
{
    private readonly Socket _socket;
    private readonly ReceiveBuffer _buffer = new();
    private bool _endOfStream;
    private bool _completed;
    private volatile bool _cancelRequested;
    private CancellationTokenSource _cancel = new();
    private int _completionThread;

    public SocketPipeReader(Socket socket)
    {
        _socket = socket;
    }

    private ReadOnlySequence<byte> Buffered => _buffer.Buffered;

    /// <summary>The managed thread on which the last read that had to wait for data completed (0 before any).</summary>
    public int CompletionThread => Volatile.Read(ref _completionThread);

    public override bool TryRead(out ReadResult result)
    {
        ThrowIfCompleted();
        if (_cancelRequested)
        {
            result = ConsumeCancellation();
            return true;
        }

        if (_buffer.HasUnexamined || _endOfStream)
        {
            result = new ReadResult(Buffered, isCanceled: false, isCompleted: _endOfStream);
            return true;
        }

        result = default;
        return false;
    }

    public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        if (TryRead(out var ready))
        {
            return new ValueTask<ReadResult>(ready);
        }

        _buffer.PrepareForReceive();
        ValueTask<int> receive;
        try
        {
            receive = _socket.ReceiveAsync(_buffer.Free, SocketFlags.None, _cancel.Token);
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
            return new ValueTask<ReadResult>(Received(receive.Result));
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
        return Received(received);
    }

    private ReadResult Received(int count)
    {
        if (count == 0)
        {
            _endOfStream = true;
        }

        _buffer.Received(count);
        return new ReadResult(Buffered, isCanceled: false, isCompleted: _endOfStream);
    }

    private ReadResult ConsumeCancellation()
    {
        _cancelRequested = false;
        if (!_cancel.TryReset())
        {
            _cancel.Dispose();
            _cancel = new CancellationTokenSource();
        }

        return new ReadResult(Buffered, isCanceled: true, isCompleted: _endOfStream);
    }

    public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
    {
        ThrowIfCompleted();
        _buffer.AdvanceTo(consumed, examined);
    }

    public override void CancelPendingRead()
    {
        _cancelRequested = true;
        try
        {
            _cancel.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // Completed meanwhile.
        }
    }

    public override void Complete(Exception? exception = null)
    {
        if (_completed)
        {
            return;
        }

        _completed = true;
        _cancel.Dispose();
        _buffer.Release();
    }

    private void ThrowIfCompleted()
    {
        if (_completed)
        {
            throw new InvalidOperationException("the reader is completed");
        }
    }
}
