namespace Infra.WebNode.Links;

/// <summary>
/// Makes link codes without asking anyone: a 59-bit id of (milliseconds since 2026-01-01 : 41 bits,
/// node id : 10 bits, sequence within the millisecond : 8 bits), written in base62 (about nine
/// characters today). Two nodes never make the same id because their node ids differ; one node never
/// makes the same id twice because time only moves forward here (a clock stepping back borrows from
/// the last millisecond used, as does a sequence running over). A restart in the same millisecond
/// as the last id is the one gap, and the database's primary key turns it into a retry, not a
/// lost link.
/// </summary>
internal sealed class LinkCodes(int nodeId, TimeProvider time)
{
    public const int NodeBits = 10;
    public const int SequenceBits = 8;
    private const string Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    private static readonly DateTimeOffset Epoch = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private readonly Lock _lock = new();
    private long _lastMs = -1;
    private int _sequence;

    public int NodeId { get; } = nodeId is >= 0 and < (1 << NodeBits) ? nodeId : throw new ArgumentOutOfRangeException(nameof(nodeId));

    public string Next() => Encode(NextId());

    public long NextId()
    {
        var now = Math.Max(0, (long)(time.GetUtcNow() - Epoch).TotalMilliseconds);
        lock (_lock)
        {
            if (now > _lastMs)
            {
                _lastMs = now;
                _sequence = 0;
            }
            else if (++_sequence >= 1 << SequenceBits)
            {
                _lastMs++;
                _sequence = 0;
            }

            return (_lastMs << (NodeBits + SequenceBits)) | ((long)NodeId << SequenceBits) | (long)_sequence;
        }
    }

    public static string Encode(long id)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(id);
        Span<char> buffer = stackalloc char[11];
        var at = buffer.Length;
        do
        {
            buffer[--at] = Alphabet[(int)(id % 62)];
            id /= 62;
        }
        while (id > 0);
        return new string(buffer[at..]);
    }

    /// <summary>True for what <see cref="Encode"/> can make: 1..11 base62 characters. Anything else is not a code.</summary>
    public static bool IsCode(ReadOnlySpan<char> text)
    {
        if (text.Length is 0 or > 11)
        {
            return false;
        }

        foreach (var c in text)
        {
            if (!char.IsAsciiLetterOrDigit(c))
            {
                return false;
            }
        }

        return true;
    }
}
