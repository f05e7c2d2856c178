using System.Collections.Concurrent;
using System.Net;
using Infra.CacheServer.Storage;

namespace Infra.CacheServer;

/// <summary>One connected client as CLIENT LIST and CLIENT INFO show it.</summary>
internal sealed class ClientInfo
{
    public required long Id { get; init; }

    public required EndPoint? Address { get; init; }

    public required EndPoint? LocalAddress { get; init; }

    public required long CreatedMs { get; init; }

    public string Name { get; set; } = string.Empty;

    public string LibraryName { get; set; } = string.Empty;

    public string LibraryVersion { get; set; } = string.Empty;

    public long LastInteractionMs { get; set; }

    public string LastCommand { get; set; } = "NULL";

    public int Protocol { get; set; } = 2;

    public int Channels { get; set; }

    public int Patterns { get; set; }

    public string Describe(long nowMs)
    {
        var flags = Channels + Patterns > 0 ? "P" : "N";
        return FormattableString.Invariant(
            $"id={Id} addr={Address} laddr={LocalAddress} fd=-1 name={Name} age={(nowMs - CreatedMs) / 1000} idle={(nowMs - LastInteractionMs) / 1000} flags={flags} db=0 sub={Channels} psub={Patterns} ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={LastCommand.ToLowerInvariant()} user=default redir=-1 resp={Protocol} lib-name={LibraryName} lib-ver={LibraryVersion}");
    }
}

/// <summary>Mutable settings CONFIG SET can change at run time.</summary>
internal sealed class RuntimeConfig
{
    private volatile string? _requirePass;

    public string? RequirePass
    {
        get => _requirePass;
        set => _requirePass = string.IsNullOrEmpty(value) ? null : value;
    }
}

/// <summary>The state every connection shares: keyspace, clients, pub/sub, settings, statistics.</summary>
internal sealed class CacheServerState
{
    private long _nextClientId;
    private long _totalConnections;
    private long _totalCommands;
    private long _rejectedConnections;

    public CacheServerState(CacheStore store, CacheOptions options, CacheMetrics metrics)
    {
        Store = store;
        Options = options;
        Metrics = metrics;
        Config.RequirePass = options.RequirePass;
        StartedMs = store.NowMs;
        RunId = Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(20)).ToLowerInvariant();
    }

    public CacheStore Store { get; }

    public CacheOptions Options { get; }

    public CacheMetrics Metrics { get; }

    public RuntimeConfig Config { get; } = new();

    public PubSubHub PubSub { get; } = new();

    public ConcurrentDictionary<long, CacheSession> Sessions { get; } = new();

    public long StartedMs { get; }

    public string RunId { get; }

    /// <summary>The port clients connect to (known once listening).</summary>
    public int Port { get; set; }

    public long TotalConnections => Interlocked.Read(ref _totalConnections);

    public long TotalCommands => Interlocked.Read(ref _totalCommands);

    public long RejectedConnections => Interlocked.Read(ref _rejectedConnections);

    public long NextClientId() => Interlocked.Increment(ref _nextClientId);

    public void ConnectionOpened() => Interlocked.Increment(ref _totalConnections);

    public void ConnectionRejected() => Interlocked.Increment(ref _rejectedConnections);

    public void CommandsProcessed(long count) => Interlocked.Add(ref _totalCommands, count);
}

/// <summary>
/// Pub/sub channels and patterns. Delivery queues a message on each subscriber's session, which
/// writes it when its connection is free: a slow subscriber never holds up PUBLISH.
/// </summary>
internal sealed class PubSubHub
{
    private readonly ConcurrentDictionary<string, ConcurrentDictionary<long, CacheSession>> _channels = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, ConcurrentDictionary<long, CacheSession>> _patterns = new(StringComparer.Ordinal);

    public int ChannelCount => _channels.Count;

    public int PatternCount => _patterns.Count;

    public void Subscribe(string channel, CacheSession session) =>
        _channels.GetOrAdd(channel, static _ => new ConcurrentDictionary<long, CacheSession>())[session.Client.Id] = session;

    public void Unsubscribe(string channel, CacheSession session) => Remove(_channels, channel, session);

    public void PSubscribe(string pattern, CacheSession session) =>
        _patterns.GetOrAdd(pattern, static _ => new ConcurrentDictionary<long, CacheSession>())[session.Client.Id] = session;

    public void PUnsubscribe(string pattern, CacheSession session) => Remove(_patterns, pattern, session);

    /// <summary>Delivers to every subscriber; returns how many received it.</summary>
    public int Publish(string channel, byte[] message)
    {
        var receivers = 0;
        if (_channels.TryGetValue(channel, out var subscribers))
        {
            foreach (var session in subscribers.Values)
            {
                session.EnqueueMessage(channel, null, message);
                receivers++;
            }
        }

        foreach (var (pattern, sessions) in _patterns)
        {
            if (!GlobMatcher.IsMatch(System.Text.Encoding.UTF8.GetBytes(pattern), System.Text.Encoding.UTF8.GetBytes(channel), ignoreCase: false))
            {
                continue;
            }

            foreach (var session in sessions.Values)
            {
                session.EnqueueMessage(channel, pattern, message);
                receivers++;
            }
        }

        return receivers;
    }

    private static void Remove(ConcurrentDictionary<string, ConcurrentDictionary<long, CacheSession>> map, string name, CacheSession session)
    {
        if (map.TryGetValue(name, out var sessions))
        {
            sessions.TryRemove(session.Client.Id, out _);
            if (sessions.IsEmpty)
            {
                map.TryRemove(KeyValuePair.Create(name, sessions));
            }
        }
    }
}

/// <summary>Redis's glob matching (KEYS, SCAN MATCH, PSUBSCRIBE, CONFIG GET): * ? [abc] [^a] [a-z] and \ escapes.</summary>
internal static class GlobMatcher
{
    public static bool IsMatch(ReadOnlySpan<byte> pattern, ReadOnlySpan<byte> text, bool ignoreCase)
    {
        // Iterative with backtracking to the last star: linear for patterns with one star, never
        // exponential (Redis guards its recursive matcher with a nesting limit instead).
        int p = 0, t = 0, starP = -1, starT = -1;
        while (t < text.Length)
        {
            if (p < pattern.Length)
            {
                var c = pattern[p];
                if (c == (byte)'*')
                {
                    while (p < pattern.Length && pattern[p] == (byte)'*')
                    {
                        p++;
                    }

                    if (p == pattern.Length)
                    {
                        return true;
                    }

                    starP = p;
                    starT = t;
                    continue;
                }

                if (c == (byte)'?')
                {
                    p++;
                    t++;
                    continue;
                }

                if (c == (byte)'[')
                {
                    if (MatchClass(pattern, ref p, text[t], ignoreCase))
                    {
                        t++;
                        continue;
                    }
                }
                else
                {
                    if (c == (byte)'\\' && p + 1 < pattern.Length)
                    {
                        p++;
                        c = pattern[p];
                    }

                    if (Same(c, text[t], ignoreCase))
                    {
                        p++;
                        t++;
                        continue;
                    }
                }
            }

            if (starP < 0)
            {
                return false;
            }

            p = starP;
            t = ++starT;
        }

        while (p < pattern.Length && pattern[p] == (byte)'*')
        {
            p++;
        }

        return p == pattern.Length;
    }

    /// <summary>Matches one character against a [class] starting at <paramref name="p"/>; moves p past it.</summary>
    private static bool MatchClass(ReadOnlySpan<byte> pattern, ref int p, byte c, bool ignoreCase)
    {
        var i = p + 1;
        var negate = i < pattern.Length && pattern[i] == (byte)'^';
        if (negate)
        {
            i++;
        }

        var matched = false;
        while (i < pattern.Length && pattern[i] != (byte)']')
        {
            if (pattern[i] == (byte)'\\' && i + 1 < pattern.Length)
            {
                i++;
                matched |= Same(pattern[i], c, ignoreCase);
            }
            else if (i + 2 < pattern.Length && pattern[i + 1] == (byte)'-' && pattern[i + 2] != (byte)']')
            {
                var low = pattern[i];
                var high = pattern[i + 2];
                if (low > high)
                {
                    (low, high) = (high, low);
                }

                var value = ignoreCase ? (byte)char.ToLowerInvariant((char)c) : c;
                matched |= (c >= low && c <= high) || (ignoreCase && value >= char.ToLowerInvariant((char)low) && value <= char.ToLowerInvariant((char)high));
                i += 2;
            }
            else
            {
                matched |= Same(pattern[i], c, ignoreCase);
            }

            i++;
        }

        p = Math.Min(i + 1, pattern.Length);
        return matched != negate;
    }

    private static bool Same(byte a, byte b, bool ignoreCase) =>
        a == b || (ignoreCase && char.ToLowerInvariant((char)a) == char.ToLowerInvariant((char)b));
}
