using System.Buffers;
using System.Buffers.Binary;
using MessagePack;

namespace Infra.Core.Framing;

/// <summary>Writes the last element of a message (a request's args, an answer's result).</summary>
public delegate void MessagePackBody(ref MessagePackWriter writer);

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

    /// <summary>
    /// The whole frame of <c>[id, tag, body]</c> — a request (tag = op) or an answer (tag = status) —
    /// length prefix included, ready to send.
    /// </summary>
    public static byte[] Build(long id, string tag, MessagePackBody body)
    {
        ArgumentNullException.ThrowIfNull(body);
        var buffer = new ArrayBufferWriter<byte>(256);
        var writer = new MessagePackWriter(buffer);
        writer.WriteArrayHeader(3);
        writer.Write(id);
        writer.Write(tag);
        body(ref writer);
        writer.Flush();
        var frame = new byte[HeaderSize + buffer.WrittenCount];
        BinaryPrimitives.WriteInt32BigEndian(frame, buffer.WrittenCount);
        buffer.WrittenSpan.CopyTo(frame.AsSpan(HeaderSize));
        return frame;
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
