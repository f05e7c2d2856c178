using System.IO.Pipelines;

namespace Infra.Core.Networking;

/// <summary>
/// What the socket pipe readers (<see cref="SocketPipeReader"/> on .NET's engine, the epoll one)
/// share: one contiguous pooled <see cref="ReceiveBuffer"/>, end of stream, completion, and the
/// pending-cancel flag that the next read (or a parked one) reports as a canceled result. Engines
/// differ only in how they receive and how they wake a parked read for a cancel.
/// </summary>
public abstract class ContiguousSocketReader : PipeReader
{
    private bool _endOfStream;
    private bool _completed;
    private volatile bool _cancelRequested;

    private protected ContiguousSocketReader()
    {
    }

    private protected ReceiveBuffer Buffer { get; } = new();

    private protected bool CancelRequested => _cancelRequested;

    public override bool TryRead(out ReadResult result)
    {
        if (_completed)
        {
            throw new InvalidOperationException("the reader is completed");
        }

        if (_cancelRequested)
        {
            result = ConsumeCancellation();
            return true;
        }

        if (Buffer.HasUnexamined || _endOfStream)
        {
            result = new ReadResult(Buffer.Buffered, isCanceled: false, isCompleted: _endOfStream);
            return true;
        }

        result = default;
        return false;
    }

    /// <summary>Takes <paramref name="count"/> received bytes (0 = end of stream); <paramref name="filled"/> when they filled all the room there was.</summary>
    private protected ReadResult Received(int count, out bool filled)
    {
        if (count == 0)
        {
            _endOfStream = true;
        }

        filled = Buffer.Received(count);
        return new ReadResult(Buffer.Buffered, isCanceled: false, isCompleted: _endOfStream);
    }

    /// <summary>Clears the pending cancel and reports it as a canceled result.</summary>
    private protected virtual ReadResult ConsumeCancellation()
    {
        _cancelRequested = false;
        return new ReadResult(Buffer.Buffered, isCanceled: true, isCompleted: _endOfStream);
    }

    public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
    {
        if (_completed)
        {
            throw new InvalidOperationException("the reader is completed");
        }

        Buffer.AdvanceTo(consumed, examined);
    }

    public sealed override void CancelPendingRead()
    {
        _cancelRequested = true;
        Interlocked.MemoryBarrier(); // the flag, then the look at a parked read (a parking read does the reverse)
        WakeForCancel();
    }

    /// <summary>Ends a parked read, if there is one, with <see cref="ConsumeCancellation"/>'s result.</summary>
    private protected abstract void WakeForCancel();

    public sealed override void Complete(Exception? exception = null)
    {
        if (_completed)
        {
            return;
        }

        _completed = true;
        OnCompleted();
        Buffer.Release();
    }

    /// <summary>Releases what the engine holds beyond the buffer.</summary>
    private protected virtual void OnCompleted()
    {
    }
}
