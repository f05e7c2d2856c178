using System.IO.Pipelines;
using System.Net.Sockets;
using System.Runtime.CompilerServices;

namespace Infra.Core.Networking;

/// <summary>
/// A <see cref="PipeWriter"/> that gathers writes in one contiguous pooled buffer and sends them with
/// one send(2) per flush, completing inline when the kernel takes everything at once (the usual case).
/// A buffer grown by a large write goes back to the pool after the flush.
/// </summary>
public sealed class SocketPipeWriter : ContiguousSocketWriter
{
    private readonly Socket _socket;

    public SocketPipeWriter(Socket socket)
    {
        _socket = socket;
    }

    public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
    {
        if (Buffer.Written == 0)
        {
            return new ValueTask<FlushResult>(new FlushResult(isCanceled: false, isCompleted: false));
        }

        ValueTask<int> send;
        try
        {
            send = _socket.SendAsync(Buffer.Unsent(0), SocketFlags.None, cancellationToken);
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
        if (sent == Buffer.Written)
        {
            Buffer.Sent();
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
            while (sent < Buffer.Written)
            {
                sent += await _socket.SendAsync(Buffer.Unsent(sent), SocketFlags.None, cancellationToken);
            }
        }
        catch (SocketException ex)
        {
            throw new IOException(ex.Message, ex);
        }

        Buffer.Sent();
        return new FlushResult(isCanceled: false, isCompleted: false);
    }
}
