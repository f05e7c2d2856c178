using System.Buffers.Text;

namespace Infra.CacheServer.Resp;

/// <summary>Limits on what a client may send (Redis's defaults unless noted).</summary>
/// <param name="MaxBulkLength">Largest argument (proto-max-bulk-len, 512 MB).</param>
/// <param name="MaxMultibulkLength">Most arguments in one command.</param>
/// <param name="MaxInlineLength">Longest inline command line, and longest header line (64 KB).</param>
internal readonly record struct RespLimits(long MaxBulkLength, int MaxMultibulkLength, int MaxInlineLength)
{
    public static readonly RespLimits Default = new(512L * 1024 * 1024, 1024 * 1024, 64 * 1024);
}

internal enum ParseStatus : byte
{
    Complete,
    Incomplete,
    Error,
}

/// <summary>
/// A parsed command: its arguments as slices of the frame they came in (or, for inline commands
/// with quotes, of a private buffer). Reused for every command of a connection; a frame that
/// arrives in pieces is parsed once, resuming where the last attempt stopped.
/// </summary>
internal sealed class RespRequest
{
    private int[] _starts = new int[8];
    private int[] _lengths = new int[8];
    private byte[] _unquoted = [];
    private bool _usesUnquoted;

    public int Count { get; private set; }

    // Progress through a multibulk frame that has not fully arrived.
    internal int ExpectedCount { get; set; }

    internal int ResumeAt { get; set; }

    public ReadOnlySpan<byte> Arg(ReadOnlySpan<byte> frame, int index) =>
        (_usesUnquoted ? _unquoted : frame).Slice(_starts[index], _lengths[index]);

    internal void Reset()
    {
        Count = 0;
        ExpectedCount = 0;
        ResumeAt = 0;
        _usesUnquoted = false;
    }

    internal void Add(int start, int length)
    {
        if (Count == _starts.Length)
        {
            Array.Resize(ref _starts, Count * 2);
            Array.Resize(ref _lengths, Count * 2);
        }

        _starts[Count] = start;
        _lengths[Count] = length;
        Count++;
    }

    /// <summary>Space for unescaped inline arguments; slices handed to <see cref="Add"/> point into it.</summary>
    internal byte[] UnquotedBuffer(int size)
    {
        _usesUnquoted = true;
        if (_unquoted.Length < size)
        {
            _unquoted = new byte[Math.Max(size, 256)];
        }

        return _unquoted;
    }
}

/// <summary>
/// Parses client commands: RESP multibulk arrays (<c>*2\r\n$3\r\nGET\r\n$1\r\nk\r\n</c>), and inline
/// commands (<c>GET k\r\n</c>, as telnet and redis-cli send them, with Redis's quoting rules). Works
/// on one contiguous span; returns how many bytes a complete command used. Malformed input yields
/// Redis's protocol error text, after which the connection must close. Nothing is allocated for a
/// declared but unsent argument count, so "*1000000" costs nothing until the arguments arrive.
/// </summary>
internal static class RespParser
{
    public static ParseStatus TryParse(ReadOnlySpan<byte> buffer, RespRequest request, in RespLimits limits, out int consumed, out string? error)
    {
        consumed = 0;
        error = null;
        if (buffer.IsEmpty)
        {
            return ParseStatus.Incomplete;
        }

        return buffer[0] == (byte)'*'
            ? ParseMultibulk(buffer, request, limits, out consumed, out error)
            : ParseInline(buffer, request, limits, out consumed, out error);
    }

    private static ParseStatus ParseMultibulk(ReadOnlySpan<byte> buffer, RespRequest request, in RespLimits limits, out int consumed, out string? error)
    {
        consumed = 0;
        error = null;
        var position = request.ResumeAt;
        if (position == 0)
        {
            request.Reset();
            var status = ReadNumberLine(buffer, 1, limits.MaxInlineLength, "too big mbulk count string", out var count, out var next, out error);
            if (status != ParseStatus.Complete)
            {
                return status;
            }

            if (count > limits.MaxMultibulkLength || count > int.MaxValue)
            {
                error = "Protocol error: invalid multibulk length";
                return ParseStatus.Error;
            }

            if (count <= 0)
            {
                // "*0" and "*-1" are empty commands: nothing to run.
                consumed = next;
                return ParseStatus.Complete;
            }

            request.ExpectedCount = (int)count;
            position = next;
        }

        while (request.Count < request.ExpectedCount)
        {
            if (position >= buffer.Length)
            {
                request.ResumeAt = position;
                return ParseStatus.Incomplete;
            }

            if (buffer[position] != (byte)'$')
            {
                error = $"Protocol error: expected '$', got '{Printable(buffer[position])}'";
                return ParseStatus.Error;
            }

            var status = ReadNumberLine(buffer, position + 1, limits.MaxInlineLength, "too big bulk count string", out var length, out var dataStart, out error);
            if (status == ParseStatus.Error)
            {
                return status;
            }

            if (status == ParseStatus.Incomplete)
            {
                request.ResumeAt = position;
                return status;
            }

            if (length < 0 || length > limits.MaxBulkLength)
            {
                error = "Protocol error: invalid bulk length";
                return ParseStatus.Error;
            }

            if ((long)buffer.Length - dataStart < length + 2)
            {
                request.ResumeAt = position;
                return ParseStatus.Incomplete;
            }

            var end = dataStart + (int)length;
            if (buffer[end] != (byte)'\r' || buffer[end + 1] != (byte)'\n')
            {
                error = "Protocol error: bulk data is not followed by CRLF";
                return ParseStatus.Error;
            }

            request.Add(dataStart, (int)length);
            position = end + 2;
        }

        request.ResumeAt = 0;
        consumed = position;
        return ParseStatus.Complete;
    }

    /// <summary>Reads "&lt;digits&gt;\r\n" starting at <paramref name="start"/>.</summary>
    private static ParseStatus ReadNumberLine(ReadOnlySpan<byte> buffer, int start, int maxLine, string tooBig, out long value, out int next, out string? error)
    {
        value = 0;
        next = 0;
        error = null;
        var newline = buffer[start..].IndexOf((byte)'\n');
        if (newline < 0)
        {
            if (buffer.Length - start > maxLine)
            {
                error = "Protocol error: " + tooBig;
                return ParseStatus.Error;
            }

            return ParseStatus.Incomplete;
        }

        var line = buffer.Slice(start, newline);
        if (line.IsEmpty || line[^1] != (byte)'\r' || !Utf8Parser.TryParse(line[..^1], out value, out var used) || used != line.Length - 1)
        {
            error = tooBig.Contains("mbulk", StringComparison.Ordinal) ? "Protocol error: invalid multibulk length" : "Protocol error: invalid bulk length";
            return ParseStatus.Error;
        }

        next = start + newline + 1;
        return ParseStatus.Complete;
    }

    /// <summary>An inline command: words split on spaces, with "double" (escapes) and 'single' quotes.</summary>
    private static ParseStatus ParseInline(ReadOnlySpan<byte> buffer, RespRequest request, in RespLimits limits, out int consumed, out string? error)
    {
        consumed = 0;
        error = null;
        request.Reset();
        var newline = buffer.IndexOf((byte)'\n');
        if (newline < 0)
        {
            if (buffer.Length > limits.MaxInlineLength)
            {
                error = "Protocol error: too big inline request";
                return ParseStatus.Error;
            }

            return ParseStatus.Incomplete;
        }

        if (newline > limits.MaxInlineLength)
        {
            error = "Protocol error: too big inline request";
            return ParseStatus.Error;
        }

        var line = buffer[..newline];
        if (!line.IsEmpty && line[^1] == (byte)'\r')
        {
            line = line[..^1];
        }

        consumed = newline + 1;
        if (line.IndexOfAny((byte)'"', (byte)'\'', (byte)'\\') < 0)
        {
            // No quoting: arguments are plain slices of the frame.
            var position = 0;
            while (position < line.Length)
            {
                while (position < line.Length && IsSpace(line[position]))
                {
                    position++;
                }

                var start = position;
                while (position < line.Length && !IsSpace(line[position]))
                {
                    position++;
                }

                if (position > start)
                {
                    request.Add(start, position - start);
                }
            }

            return ParseStatus.Complete;
        }

        if (!SplitQuoted(line, request))
        {
            request.Reset();
            error = "Protocol error: unbalanced quotes in request";
            return ParseStatus.Error;
        }

        return ParseStatus.Complete;
    }

    /// <summary>Redis's sdssplitargs: quoted words, \x41-style and \n-style escapes in double quotes.</summary>
    private static bool SplitQuoted(ReadOnlySpan<byte> line, RespRequest request)
    {
        var output = request.UnquotedBuffer(line.Length);
        var written = 0;
        var position = 0;
        while (true)
        {
            while (position < line.Length && IsSpace(line[position]))
            {
                position++;
            }

            if (position >= line.Length)
            {
                return true;
            }

            var start = written;
            var inDouble = false;
            var inSingle = false;
            var done = false;
            while (!done)
            {
                if (inDouble)
                {
                    if (position >= line.Length)
                    {
                        return false;
                    }

                    var c = line[position];
                    if (c == (byte)'\\' && position + 3 < line.Length && line[position + 1] == (byte)'x'
                        && IsHex(line[position + 2]) && IsHex(line[position + 3]))
                    {
                        output[written++] = (byte)((HexValue(line[position + 2]) << 4) | HexValue(line[position + 3]));
                        position += 3;
                    }
                    else if (c == (byte)'\\' && position + 1 < line.Length)
                    {
                        position++;
                        output[written++] = line[position] switch
                        {
                            (byte)'n' => (byte)'\n',
                            (byte)'r' => (byte)'\r',
                            (byte)'t' => (byte)'\t',
                            (byte)'b' => (byte)'\b',
                            (byte)'a' => (byte)'\a',
                            var other => other,
                        };
                    }
                    else if (c == (byte)'"')
                    {
                        // The closing quote must end the word.
                        if (position + 1 < line.Length && !IsSpace(line[position + 1]))
                        {
                            return false;
                        }

                        done = true;
                    }
                    else
                    {
                        output[written++] = c;
                    }
                }
                else if (inSingle)
                {
                    if (position >= line.Length)
                    {
                        return false;
                    }

                    var c = line[position];
                    if (c == (byte)'\\' && position + 1 < line.Length && line[position + 1] == (byte)'\'')
                    {
                        position++;
                        output[written++] = (byte)'\'';
                    }
                    else if (c == (byte)'\'')
                    {
                        if (position + 1 < line.Length && !IsSpace(line[position + 1]))
                        {
                            return false;
                        }

                        done = true;
                    }
                    else
                    {
                        output[written++] = c;
                    }
                }
                else if (position >= line.Length || IsSpace(line[position]))
                {
                    done = true;
                }
                else if (line[position] == (byte)'"')
                {
                    inDouble = true;
                }
                else if (line[position] == (byte)'\'')
                {
                    inSingle = true;
                }
                else
                {
                    output[written++] = line[position];
                }

                if (position < line.Length)
                {
                    position++;
                }
            }

            request.Add(start, written - start);
        }
    }

    private static bool IsSpace(byte b) => b is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n' or (byte)'\v' or (byte)'\f';

    private static bool IsHex(byte b) => char.IsAsciiHexDigit((char)b);

    private static int HexValue(byte b) => b <= '9' ? b - '0' : (b | 0x20) - 'a' + 10;

    private static char Printable(byte b) => b is >= 0x20 and < 0x7F ? (char)b : '?';
}
