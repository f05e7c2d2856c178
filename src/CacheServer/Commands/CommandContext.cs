using System.Buffers.Text;
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

    /// <summary>
    /// Whether a subcommand has its number of arguments (all of them, the command's name included); if not,
    /// Redis 7's arity error for it (<c>'client|setname'</c>) is sent.
    /// </summary>
    public bool SubcommandArity(string name, int count, bool orMore = false)
    {
        if (Count == count || (orMore && Count > count))
        {
            return true;
        }

        Reply.Error(Errors.Arity(name));
        return false;
    }

    public bool TryLong(int index, out long value) => RespNumbers.TryParseLong(Arg(index), out value);

}

/// <summary>Integer parsing with Redis's strictness (string2ll); floats are <see cref="LongDouble"/>.</summary>
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
        if (digits.IsEmpty || !char.IsAsciiDigit((char)digits[0]) || (digits[0] == (byte)'0' && text.Length > 1))
        {
            return false; // Utf8Parser would take a '+' sign
        }

        return Utf8Parser.TryParse(text, out value, out var used) && used == text.Length;
    }

    /// <summary>Formats a long as ASCII digits into <paramref name="destination"/>; returns the length.</summary>
    public static int Format(long value, Span<byte> destination)
    {
        Utf8Formatter.TryFormat(value, destination, out var written);
        return written;
    }
}
