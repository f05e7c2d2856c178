using System.IO.Pipelines;

namespace Infra.Core.Networking;

/// <summary>
/// What the socket pipe writers (<see cref="SocketPipeWriter"/> on .NET's engine, the epoll one)
/// share: writes gather in one contiguous pooled <see cref="SendBuffer"/>; engines differ only in
/// how a flush sends it.
/// </summary>
public abstract class ContiguousSocketWriter : PipeWriter
{
    private protected ContiguousSocketWriter()
    {
    }

    private protected SendBuffer Buffer { get; } = new();

    public override bool CanGetUnflushedBytes => true;

    public override long UnflushedBytes => Buffer.Written;

    public override void Advance(int bytes) => Buffer.Advance(bytes);

    public override Memory<byte> GetMemory(int sizeHint = 0) => Buffer.GetMemory(sizeHint);

    public override Span<byte> GetSpan(int sizeHint = 0) => Buffer.GetSpan(sizeHint);

    /// <summary>Not supported: a stuck send is ended by closing the connection (write deadlines do that).</summary>
    public override void CancelPendingFlush()
    {
    }

    public override void Complete(Exception? exception = null) => Buffer.Release();
}
