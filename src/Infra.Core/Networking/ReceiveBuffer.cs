using System.Buffers;

namespace Infra.Core.Networking;

/// <summary>
/// The contiguous pooled buffer behind the socket pipe readers: received bytes sit between start and
/// end, everything before examined has been looked at. Every buffer handed out is a single segment
/// (parsers take their fast path). It grows while a message is larger than it (bounded by the
/// caller's limits) and for bulk transfers, where a read that fills it asks for more room next time
/// (up to 64 KiB).
/// </summary>
internal sealed class ReceiveBuffer
{
    private const int InitialSize = 4096;
    private const int MinimumRead = 2048;
    private const int BulkSize = 64 * 1024;

    private byte[] _buffer = ArrayPool<byte>.Shared.Rent(InitialSize);
    private int _start;
    private int _end;
    private int _examined;
    private int _preferredFree = MinimumRead;

    public ReadOnlySequence<byte> Buffered => new(_buffer, _start, _end - _start);

    /// <summary>Bytes arrived that the caller has not examined yet.</summary>
    public bool HasUnexamined => _end > _examined;

    /// <summary>Where the next receive writes (call <see cref="PrepareForReceive"/> first).</summary>
    public Memory<byte> Free => _buffer.AsMemory(_end);

    /// <summary>Makes room for the next receive: drops consumed bytes, grows if the message needs it.</summary>
    public void PrepareForReceive()
    {
        if (_start == _end)
        {
            _start = _end = _examined = 0;
        }

        if (_buffer.Length - _end >= _preferredFree)
        {
            return;
        }

        var unread = _end - _start;
        if (_start > 0 && _buffer.Length - unread >= _preferredFree)
        {
            Buffer.BlockCopy(_buffer, _start, _buffer, 0, unread);
        }
        else
        {
            var bigger = ArrayPool<byte>.Shared.Rent(Math.Max(_buffer.Length * 2, unread + _preferredFree));
            Buffer.BlockCopy(_buffer, _start, bigger, 0, unread);
            ArrayPool<byte>.Shared.Return(_buffer);
            _buffer = bigger;
        }

        _examined -= _start;
        _start = 0;
        _end = unread;
    }

    /// <summary>Takes <paramref name="count"/> received bytes; true when they filled all the room there was (more may be waiting).</summary>
    public bool Received(int count)
    {
        var filled = count > 0 && count == _buffer.Length - _end;
        if (filled && _preferredFree < BulkSize)
        {
            _preferredFree = Math.Min(_preferredFree * 4, BulkSize); // read more at a time next time
        }

        _end += count;
        return filled;
    }

    public void AdvanceTo(SequencePosition consumed, SequencePosition examined)
    {
        var buffered = Buffered;
        // Lengths of slices, not GetOffset: their meaning is defined for any sequence shape.
        var consumedOffset = (int)buffered.Slice(0, consumed).Length;
        var examinedOffset = (int)buffered.Slice(0, examined).Length;
        if (consumedOffset < 0 || examinedOffset < consumedOffset || examinedOffset > _end - _start)
        {
            throw new InvalidOperationException("AdvanceTo positions are outside the last buffer read");
        }

        _examined = Math.Max(_examined, _start + examinedOffset);
        _start += consumedOffset;
        if (_start == _end)
        {
            _start = _end = _examined = 0;
        }
    }

    /// <summary>Gives the memory back to the pool; the buffer is empty from then on.</summary>
    public void Release()
    {
        ArrayPool<byte>.Shared.Return(_buffer);
        _buffer = [];
        _start = _end = _examined = 0;
    }
}
