using System.Buffers;

namespace Infra.Core.Networking;

/// <summary>
/// The contiguous pooled buffer behind the socket pipe writers: writes gather in it until a flush
/// sends them with one send(2). A buffer grown by a large write goes back to the pool after the flush.
/// </summary>
internal sealed class SendBuffer
{
    private const int InitialSize = 4096;
    private const int KeepUpTo = 64 * 1024;

    private byte[] _buffer = ArrayPool<byte>.Shared.Rent(InitialSize);
    private bool _released;

    /// <summary>Bytes written and not sent yet.</summary>
    public int Written { get; private set; }

    public ReadOnlyMemory<byte> Unsent(int from) => _buffer.AsMemory(from, Written - from);

    public void Advance(int bytes)
    {
        if ((uint)bytes > (uint)(_buffer.Length - Written))
        {
            throw new ArgumentOutOfRangeException(nameof(bytes), "advanced past the memory handed out");
        }

        Written += bytes;
    }

    public Memory<byte> GetMemory(int sizeHint)
    {
        Reserve(sizeHint);
        return _buffer.AsMemory(Written);
    }

    public Span<byte> GetSpan(int sizeHint)
    {
        Reserve(sizeHint);
        return _buffer.AsSpan(Written);
    }

    private void Reserve(int sizeHint)
    {
        if (_released)
        {
            throw new InvalidOperationException("the writer is completed");
        }

        var needed = Math.Max(sizeHint, 1);
        if (_buffer.Length - Written >= needed)
        {
            return;
        }

        var bigger = ArrayPool<byte>.Shared.Rent(Math.Max(_buffer.Length * 2, Written + needed));
        Buffer.BlockCopy(_buffer, 0, bigger, 0, Written);
        ArrayPool<byte>.Shared.Return(_buffer);
        _buffer = bigger;
    }

    /// <summary>Everything written went out: start over, with a small buffer again after a large write.</summary>
    public void Sent()
    {
        Written = 0;
        if (_buffer.Length > KeepUpTo)
        {
            ArrayPool<byte>.Shared.Return(_buffer);
            _buffer = ArrayPool<byte>.Shared.Rent(InitialSize);
        }
    }

    /// <summary>Gives the memory back to the pool (once); later writes throw.</summary>
    public void Release()
    {
        if (_released)
        {
            return;
        }

        _released = true;
        ArrayPool<byte>.Shared.Return(_buffer);
        _buffer = [];
        Written = 0;
    }
}
