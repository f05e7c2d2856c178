namespace Infra.CacheServer.Commands;

[Flags]
internal enum CommandFlags
{
    None = 0,
    Write = 1,
    ReadOnly = 2,

    /// <summary>May need memory: refused with OOM when none can be freed.</summary>
    DenyOom = 4,
    Fast = 8,

    /// <summary>Allowed before AUTH.</summary>
    NoAuth = 16,

    /// <summary>Allowed on a RESP2 connection in subscribe mode.</summary>
    PubSubContext = 32,
    Admin = 64,
    PubSub = 128,

    /// <summary>
    /// Moves a value under a key argument that may not exist yet (RENAME, RENAMENX). Like every
    /// <see cref="DenyOom"/> command, its key arguments are checked against the longest key the store
    /// holds before it runs. Ours only; COMMAND INFO does not show it.
    /// </summary>
    StoresKey = 256,
}

internal delegate void CommandHandler(ref CommandContext context);

/// <summary>
/// One command as COMMAND INFO describes it. Arity follows Redis: positive is exact (name included),
/// negative is a minimum.
/// </summary>
internal sealed record CommandSpec(
    string Name,
    int Arity,
    CommandFlags Flags,
    int FirstKey,
    int LastKey,
    int Step,
    string Group,
    string Summary,
    CommandHandler Handler)
{
    /// <summary>Position in the command table; indexes per-command statistics.</summary>
    public int Id { get; set; }

    public string LowerName { get; } = Name.ToLowerInvariant();

    public bool ArityOk(int count) => Arity >= 0 ? count == Arity : count >= -Arity;
}

/// <summary>Redis 7's error replies, word for word: clients match on them.</summary>
internal static class Errors
{
    public const string WrongType = "WRONGTYPE Operation against a key holding the wrong kind of value";
    public const string NotInteger = "ERR value is not an integer or out of range";
    public const string NotFloat = "ERR value is not a valid float";
    public const string Overflow = "ERR increment or decrement would overflow";
    public const string NaNOrInfinity = "ERR increment would produce NaN or Infinity";
    public const string Syntax = "ERR syntax error";
    public const string NoSuchKey = "ERR no such key";
    public const string NoAuth = "NOAUTH Authentication required.";
    public const string WrongPass = "WRONGPASS invalid username-password pair or user is disabled.";
    public const string Oom = "OOM command not allowed when used memory > 'maxmemory'.";
    public const string HashNotInteger = "ERR hash value is not an integer";
    public const string HashNotFloat = "ERR hash value is not a float";
    public const string DbIndex = "ERR DB index is out of range";
    public const string OffsetRange = "ERR offset is out of range";
    public const string StringTooLarge = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";
    public const string ClusterDisabled = "ERR This instance has cluster support disabled";

    /// <summary>Ours, not Redis's (Redis takes keys up to 512 MB): a key lives in one slab chunk.</summary>
    public static readonly string KeyTooLong = $"ERR key is too long (keys are limited to {Storage.CacheShard.MaxKeyLength} bytes)";

    public static string Arity(string command) => $"ERR wrong number of arguments for '{command}' command";

    public static string InvalidExpire(string command) => $"ERR invalid expire time in '{command}' command";

    public static string UnknownSubcommand(string command, string subcommand) =>
        $"ERR unknown subcommand '{Truncate(subcommand)}'. Try {command.ToUpperInvariant()} HELP.";

    public static string Truncate(string text) => text.Length > 128 ? text[..128] : text;
}
