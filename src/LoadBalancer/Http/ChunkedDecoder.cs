using System.Buffers;
using System.Globalization;

namespace Infra.LoadBalancer.Http;

/// <summary>
/// Streaming reader of the chunked transfer coding (RFC 9112 §7.1). It validates every size line,
/// chunk terminator and trailer line as it goes and writes to an output either the same chunked
/// stream in normal form (chunk extensions dropped, trailers kept) or the bare data. Chunk data is
/// passed on as it arrives: nothing is buffered beyond one line.
/// </summary>
internal struct ChunkedDecoder
{
    // A size line is hex digits plus optional extensions; 4 KiB is generous and bounds the wait.
    private const int MaxSizeLine = 4096;

    // Chunk sizes beyond 2^60 are no body anyone sends; the bound keeps the arithmetic exact.
    private const int MaxSizeDigits = 15;

    private State _state;
    private long _chunkRemaining;
    private int _trailerBytes;

    public ChunkedDecoder(long maxDataBytes, int maxTrailerBytes)
    {
        MaxDataBytes = maxDataBytes;
        MaxTrailerBytes = maxTrailerBytes;
    }

    private enum State : byte
    {
        SizeLine,
        Data,
        DataEnd,
        Trailer,
        Done,
    }

    /// <summary>Data bytes seen so far (chunk payloads only).</summary>
    public long DataBytes { get; private set; }

    /// <summary>Most data bytes accepted; 0 for no limit.</summary>
    public long MaxDataBytes { get; }

    public int MaxTrailerBytes { get; }

    public readonly bool IsComplete => _state == State.Done;

    /// <summary>True while inside a chunk's data, i.e. at a point where bytes pass straight through.</summary>
    public readonly bool InData => _state == State.Data;

    /// <summary>
    /// Consumes what it can from <paramref name="reader"/>, writing to <paramref name="output"/>
    /// (re-encoded when <paramref name="reencode"/>, else data only). Returns true when the body's
    /// final CRLF has been consumed. Throws <see cref="HttpRejectionException"/> on malformed input.
    /// </summary>
    public bool Decode(ref SequenceReader<byte> reader, IBufferWriter<byte> output, bool reencode)
    {
        while (true)
        {
            switch (_state)
            {
                case State.SizeLine:
                    if (!TryReadLine(ref reader, MaxSizeLine, RejectionReason.InvalidChunkSize, out var sizeLine))
                    {
                        return false;
                    }

                    var size = ParseSizeLine(sizeLine);
                    if (size == 0)
                    {
                        if (reencode)
                        {
                            output.Write("0\r\n"u8);
                        }

                        _state = State.Trailer;
                        break;
                    }

                    DataBytes += size;
                    if (MaxDataBytes > 0 && DataBytes > MaxDataBytes)
                    {
                        throw new HttpRejectionException(RejectionReason.BodyTooLarge);
                    }

                    if (reencode)
                    {
                        WriteSizeLine(output, size);
                    }

                    _chunkRemaining = size;
                    _state = State.Data;
                    break;

                case State.Data:
                    if (reader.End)
                    {
                        return false;
                    }

                    var take = Math.Min(_chunkRemaining, reader.Remaining);
                    foreach (var segment in reader.UnreadSequence.Slice(0, take))
                    {
                        output.Write(segment.Span);
                    }

                    reader.Advance(take);
                    _chunkRemaining -= take;
                    if (_chunkRemaining == 0)
                    {
                        _state = State.DataEnd;
                    }

                    break;

                case State.DataEnd:
                    if (reader.Remaining < 2)
                    {
                        if (reader.Remaining == 1 && !reader.IsNext((byte)'\r'))
                        {
                            throw new HttpRejectionException(RejectionReason.InvalidChunkTerminator);
                        }

                        return false;
                    }

                    if (!reader.IsNext("\r\n"u8, advancePast: true))
                    {
                        throw new HttpRejectionException(RejectionReason.InvalidChunkTerminator);
                    }

                    if (reencode)
                    {
                        output.Write("\r\n"u8);
                    }

                    _state = State.SizeLine;
                    break;

                case State.Trailer:
                    var room = MaxTrailerBytes - _trailerBytes;
                    if (!TryReadLine(ref reader, Math.Max(room, 2), RejectionReason.InvalidTrailer, out var trailer))
                    {
                        return false;
                    }

                    _trailerBytes += trailer.Length + 2;
                    if (_trailerBytes > MaxTrailerBytes)
                    {
                        throw new HttpRejectionException(RejectionReason.InvalidTrailer);
                    }

                    if (trailer.IsEmpty)
                    {
                        if (reencode)
                        {
                            output.Write("\r\n"u8);
                        }

                        _state = State.Done;
                        return true;
                    }

                    ValidateTrailer(trailer);
                    if (reencode)
                    {
                        output.Write(trailer);
                        output.Write("\r\n"u8);
                    }

                    break;

                case State.Done:
                    return true;
            }
        }
    }

    /// <summary>Reads one CRLF-terminated line (without the CRLF) of at most <paramref name="max"/> bytes.</summary>
    private static bool TryReadLine(ref SequenceReader<byte> reader, int max, RejectionReason reason, out ReadOnlySpan<byte> line)
    {
        if (!reader.TryReadTo(out ReadOnlySpan<byte> raw, (byte)'\n', advancePastDelimiter: true))
        {
            if (reader.Remaining > max)
            {
                throw new HttpRejectionException(reason);
            }

            line = default;
            return false;
        }

        if (raw.Length + 1 > max || raw.Length == 0 || raw[^1] != (byte)'\r')
        {
            throw new HttpRejectionException(reason);
        }

        line = raw[..^1];
        if (line.Contains((byte)'\r'))
        {
            throw new HttpRejectionException(reason);
        }

        return true;
    }

    /// <summary>chunk-size [ chunk-ext ]: 1*HEXDIG, then optional BWS ";" extensions of visible characters.</summary>
    internal static long ParseSizeLine(ReadOnlySpan<byte> line)
    {
        var digits = line.IndexOfAnyExcept(HttpChars.Hex);
        if (digits < 0)
        {
            digits = line.Length;
        }

        if (digits == 0)
        {
            throw new HttpRejectionException(RejectionReason.InvalidChunkSize);
        }

        var hex = line[..digits];
        var significant = hex.TrimStart((byte)'0');
        if (significant.Length > MaxSizeDigits)
        {
            throw new HttpRejectionException(RejectionReason.InvalidChunkSize);
        }

        var size = significant.IsEmpty ? 0 : long.Parse(significant, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
        var rest = line[digits..];
        if (rest.IsEmpty)
        {
            return size;
        }

        var afterWhitespace = rest.TrimStart(" \t"u8);
        if (afterWhitespace.IsEmpty || afterWhitespace[0] != (byte)';' || afterWhitespace.IndexOfAnyExcept(HttpChars.FieldValue) >= 0)
        {
            throw new HttpRejectionException(RejectionReason.InvalidChunkSize);
        }

        return size;
    }

    private static void WriteSizeLine(IBufferWriter<byte> output, long size)
    {
        var span = output.GetSpan(20);
        size.TryFormat(span, out var written, "x", CultureInfo.InvariantCulture);
        span[written++] = (byte)'\r';
        span[written++] = (byte)'\n';
        output.Advance(written);
    }

    private static void ValidateTrailer(ReadOnlySpan<byte> line)
    {
        var colon = line.IndexOf((byte)':');
        if (colon <= 0 || HttpChars.IsOws(line[0]) || line[..colon].IndexOfAnyExcept(HttpChars.Token) >= 0
            || line[(colon + 1)..].IndexOfAnyExcept(HttpChars.FieldValue) >= 0)
        {
            throw new HttpRejectionException(RejectionReason.InvalidTrailer);
        }
    }
}
