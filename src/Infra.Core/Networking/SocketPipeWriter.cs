using System.Buffers;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Runtime.CompilerServices;

namespace Infra.Core.Networking;

/// <summary>
/// A <see cref="PipeWriter"/> that gathers writes in one contiguous pooled buffer and sends them with
/// one send(2) per flush, completing inline when the kernel takes everything at once (the usual case).
/// A buffer grown by a large write goes back to the pool after the flush.
/// </summary>
public sealed class SocketPipeWriter : PipeWriter
{
    private const int InitialSize = 4096;
    private const int KeepUpTo = 64 * 1024;

    private readonly Socket _socket;
    private byte[] _buffer;
    private int _written;
    private bool _completed;

    public SocketPipeWriter(Socket socket)
    {
        _socket = socket;
        _buffer = ArrayPool<byte>.Shared.Rent(InitialSize);
    }

    public override bool CanGetUnflushedBytes => true;

    public override long UnflushedBytes => _written;

    public override void Advance(int bytes)
    {
        if ((uint)bytes > (uint)(_buffer.Length - _written))
        {
            throw new ArgumentOutOfRangeException(nameof(bytes), "advanced past the memory handed out");
        }

        _written += bytes;
    }

    public override Memory<byte> GetMemory(int sizeHint = 0)
    {
        Reserve(sizeHint);
        return _buffer.AsMemory(_written);
    }

    public override Span<byte> GetSpan(int sizeHint = 0)
    {
        Reserve(sizeHint);
        return _buffer.AsSpan(_written);
    }

    private void Reserve(int sizeHint)
    {
        if (_completed)
        {
            throw new InvalidOperationException("the writer is completed");
        }

        var needed = Math.Max(sizeHint, 1);
        if (_buffer.Length - _written >= needed)
        {
            return;
        }

        var bigger = ArrayPool<byte>.Shared.Rent(Math.Max(_buffer.Length * 2, _written + needed));
        Buffer.BlockCopy(_buffer, 0, bigger, 0, _written);
        ArrayPool<byte>.Shared.Return(_buffer);
        _buffer = bigger;
    }

    public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
    {
        if (_written == 0)
        {
            return new ValueTask<FlushResult>(new FlushResult(isCanceled: false, isCompleted: false));
        }

        ValueTask<int> send;
        try
        {
            send = _socket.SendAsync(_buffer.AsMemory(0, _written), SocketFlags.None, cancellationToken);
        }
        catch (SocketException ex)
        {
            throw new IOException(ex.Message, ex);
        }

        if (!send.IsCompletedSuccessfully)
        {
            return AwaitSendAsync(send, cancellationToken);
        }

        var sent = send.Result;
        if (sent == _written)
        {
            Sent();
            return new ValueTask<FlushResult>(new FlushResult(isCanceled: false, isCompleted: false));
        }

        return SendRestAsync(sent, cancellationToken);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<FlushResult> AwaitSendAsync(ValueTask<int> send, CancellationToken cancellationToken)
    {
        int sent;
        try
        {
            sent = await send;
        }
        catch (SocketException ex)
        {
            throw new IOException(ex.Message, ex);
        }

        return await SendRestAsync(sent, cancellationToken);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<FlushResult> SendRestAsync(int sent, CancellationToken cancellationToken)
    {
        try
        {
            while (sent < _written)
            {
                sent += await _socket.SendAsync(_buffer.AsMemory(sent, _written - sent), SocketFlags.None, cancellationToken);
            }
        }
        catch (SocketException ex)
        {
            throw new IOException(ex.Message, ex);
        }

        Sent();
        return new FlushResult(isCanceled: false, isCompleted: false);
    }

    private void Sent()
    {
        _written = 0;
        if (_buffer.Length > KeepUpTo)
        {
            ArrayPool<byte>.Shared.Return(_buffer);
            _buffer = ArrayPool<byte>.Shared.Rent(InitialSize);
        }
    }

    /// <summary>Not supported: a stuck send is ended by closing the connection (write deadlines do that).</summary>
    public override void CancelPendingFlush()
    {
    }

    public override void Complete(Exception? exception = null)
    {
        if (_completed)
        {
            return;
        }

        _completed = true;
        ArrayPool<byte>.Shared.Return(_buffer);
        _buffer = [];
        _written = 0;
    }
}
