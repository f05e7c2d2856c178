using System.Buffers;
using System.Buffers.Binary;

namespace Infra.Core.Framing;

public enum FrameStatus
{
    /// <summary>A whole frame was taken off the buffer.</summary>
    Complete,

    /// <summary>More bytes are needed.</summary>
    Incomplete,

    /// <summary>The length prefix is over the limit: the stream cannot be trusted any more.</summary>
    TooLarge,

    /// <summary>The length prefix is zero or negative: the stream cannot be trusted any more.</summary>
    Invalid,
}

/// <summary>
/// Length-prefixed frames: a 4-byte big-endian body length, then the body (MessagePack). The framing
/// of every binary Infra protocol.
/// </summary>
public static class Frames
{
    public const int HeaderSize = 4;

    /// <summary>Takes one frame off the front of <paramref name="buffer"/> when it is all there.</summary>
    public static FrameStatus TryRead(ref ReadOnlySequence<byte> buffer, int maxBodyBytes, out ReadOnlySequence<byte> body, out long declared)
    {
        body = default;
        declared = 0;
        if (buffer.Length < HeaderSize)
        {
            return FrameStatus.Incomplete;
        }

        Span<byte> header = stackalloc byte[HeaderSize];
        buffer.Slice(0, HeaderSize).CopyTo(header);
        declared = BinaryPrimitives.ReadInt32BigEndian(header);
        if (declared <= 0)
        {
            return FrameStatus.Invalid;
        }

        if (declared > maxBodyBytes)
        {
            return FrameStatus.TooLarge;
        }

        if (buffer.Length < HeaderSize + declared)
        {
            return FrameStatus.Incomplete;
        }

        body = buffer.Slice(HeaderSize, declared);
        buffer = buffer.Slice(HeaderSize + declared);
        return FrameStatus.Complete;
    }

    /// <summary>Writes the length prefix and <paramref name="body"/>.</summary>
    public static void Write(IBufferWriter<byte> output, ReadOnlySpan<byte> body)
    {
        ArgumentNullException.ThrowIfNull(output);
        var span = output.GetSpan(HeaderSize + body.Length);
        BinaryPrimitives.WriteInt32BigEndian(span, body.Length);
        body.CopyTo(span[HeaderSize..]);
        output.Advance(HeaderSize + body.Length);
    }
}
