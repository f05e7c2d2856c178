using System.Buffers.Text;
using System.Globalization;
using System.Text;
using Infra.CacheServer.Resp;
using Infra.CacheServer.Storage;

namespace Infra.CacheServer.Commands;

/// <summary>Everything a command handler sees: its arguments, the connection, the server, the reply.</summary>
internal readonly ref struct CommandContext
{
    private readonly ReadOnlySpan<byte> _frame;
    private readonly RespRequest _request;

    public CommandContext(ReadOnlySpan<byte> frame, RespRequest request, CacheSession session, CommandSpec spec, long nowMs)
    {
        _frame = frame;
        _request = request;
        Session = session;
        Spec = spec;
        Now = nowMs;
    }

    public CacheSession Session { get; }

    public CommandSpec Spec { get; }

    /// <summary>Unix milliseconds when the command started.</summary>
    public long Now { get; }

    public CacheServerState Server => Session.Server;

    public CacheStore Store => Session.Server.Store;

    public RespWriter Reply => Session.Reply;

    public int Count => _request.Count;

    public ReadOnlySpan<byte> Arg(int index) => _request.Arg(_frame, index);

    public string Text(int index) => Encoding.UTF8.GetString(Arg(index));

    /// <summary>Whether argument <paramref name="index"/> is <paramref name="word"/> (ASCII, any case).</summary>
    public bool Is(int index, ReadOnlySpan<byte> word) => Ascii.EqualsIgnoreCase(Arg(index), word);

    public bool TryLong(int index, out long value) => RespNumbers.TryParseLong(Arg(index), out value);

    public bool TryDouble(int index, out double value) => RespNumbers.TryParseDouble(Arg(index), out value);
}

/// <summary>Number parsing with Redis's strictness (string2ll, strtold).</summary>
internal static class RespNumbers
{
    /// <summary>A 64-bit integer: optional '-', digits, no spaces, no '+', no leading zeros.</summary>
    public static bool TryParseLong(ReadOnlySpan<byte> text, out long value)
    {
        value = 0;
        if (text.IsEmpty || text.Length > 20)
        {
            return false;
        }

        var digits = text[0] == (byte)'-' ? text[1..] : text;
        if (digits.IsEmpty || (digits[0] == (byte)'0' && digits.Length > 1) || (digits[0] == (byte)'0' && text.Length > 1))
        {
            return false;
        }

        return Utf8Parser.TryParse(text, out value, out var used) && used == text.Length;
    }

    public static bool TryParseDouble(ReadOnlySpan<byte> text, out double value)
    {
        value = 0;
        if (text.IsEmpty || text.Length > 5000 || char.IsWhiteSpace((char)text[0]) || char.IsWhiteSpace((char)text[^1]))
        {
            return false;
        }

        if (Ascii.EqualsIgnoreCase(text, "inf"u8) || Ascii.EqualsIgnoreCase(text, "+inf"u8) || Ascii.EqualsIgnoreCase(text, "infinity"u8))
        {
            value = double.PositiveInfinity;
            return true;
        }

        if (Ascii.EqualsIgnoreCase(text, "-inf"u8) || Ascii.EqualsIgnoreCase(text, "-infinity"u8))
        {
            value = double.NegativeInfinity;
            return true;
        }

        return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out value) && !double.IsNaN(value);
    }

    /// <summary>Formats a long as ASCII digits into <paramref name="destination"/>; returns the length.</summary>
    public static int Format(long value, Span<byte> destination)
    {
        Utf8Formatter.TryFormat(value, destination, out var written);
        return written;
    }
}
