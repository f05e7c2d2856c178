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
    private readonly Socket _socket;
    private readonly SendBuffer _buffer = new();

    public SocketPipeWriter(Socket socket)
    {
        _socket = socket;
    }

    public override bool CanGetUnflushedBytes => true;

    public override long UnflushedBytes => _buffer.Written;

    public override void Advance(int bytes) => _buffer.Advance(bytes);

    public override Memory<byte> GetMemory(int sizeHint = 0) => _buffer.GetMemory(sizeHint);

    public override Span<byte> GetSpan(int sizeHint = 0) => _buffer.GetSpan(sizeHint);

    public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
    {
        if (_buffer.Written == 0)
        {
            return new ValueTask<FlushResult>(new FlushResult(isCanceled: false, isCompleted: false));
        }

        ValueTask<int> send;
        try
        {
            send = _socket.SendAsync(_buffer.Unsent(0), SocketFlags.None, cancellationToken);
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
        if (sent == _buffer.Written)
        {
            _buffer.Sent();
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
            while (sent < _buffer.Written)
            {
                sent += await _socket.SendAsync(_buffer.Unsent(sent), SocketFlags.None, cancellationToken);
            }
        }
        catch (SocketException ex)
        {
            throw new IOException(ex.Message, ex);
        }

        _buffer.Sent();
        return new FlushResult(isCanceled: false, isCompleted: false);
    }

    /// <summary>Not supported: a stuck send is ended by closing the connection (write deadlines do that).</summary>
    public override void CancelPendingFlush()
    {
    }

    public override void Complete(Exception? exception = null) => _buffer.Release();
}
