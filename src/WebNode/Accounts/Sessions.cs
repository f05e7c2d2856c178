using System.Buffers.Text;
using System.Globalization;
using System.Security.Cryptography;
using Infra.Client.Data;
using Infra.WebNode.Backends;

namespace Infra.WebNode.Accounts;

/// <summary>A signed-in user, and the newest write position of theirs on each shard (read-your-writes).</summary>
internal sealed record Session(string Id, string User, IReadOnlyList<SessionToken> Tokens);

/// <summary>
/// Sessions live only in the cache tier: <c>session:&lt;id&gt;</c> is a hash (<c>user</c>,
/// <c>created</c>, and <c>lsn:&lt;lsn&gt;:&lt;shard&gt;</c> for the user's writes on each shard) with the
/// session TTL. The cookie carries just the id (32 random bytes, base64url), so every web node can
/// serve every request.
/// <para>
/// A write's position is a field of its own, named by its LSN, and a reader takes the highest per shard:
/// one field per shard overwritten by each write went backwards when two writes of one session finished
/// in the other order (the later HSET carrying the lower LSN), and the user's next read could miss their
/// newest write. Each write removes the lower positions the session showed it (never a higher one), so a
/// session keeps few fields. (<c>lsn:&lt;shard&gt;</c> fields with the LSN as value, the old form, are read too.)
/// </para>
/// </summary>
internal sealed class Sessions(Cache cache, WebOptions options, TimeProvider time)
{
    public const string Cookie = "sid";
    private const string TokenPrefix = "lsn:";

    public async Task<Session?> CreateAsync(string user)
    {
        var id = Base64Url.EncodeToString(RandomNumberGenerator.GetBytes(32));
        var ok = await cache.HashSetAsync(Key(id),
            [new("user", user), new("created", time.GetUtcNow().ToUnixTimeMilliseconds())],
            options.SessionTtl);
        return ok ? new Session(id, user, []) : null;
    }

    public async Task<Session?> GetAsync(string? id)
    {
        if (id is null || !IsWellFormed(id))
        {
            return null;
        }

        return await cache.HashGetAllAnywhereAsync(Key(id), "user") is { } fields
            ? Read(id, fields)
            : throw new DataUnavailableException("the session could not be looked up: a cache server that may hold it did not answer; try again");
    }

    /// <summary>The session a hash holds (null without a user): the highest position per shard.</summary>
    internal static Session? Read(string id, IEnumerable<StackExchange.Redis.HashEntry> fields)
    {
        string? user = null;
        var newest = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var field in fields)
        {
            var name = field.Name.ToString();
            if (name == "user")
            {
                user = field.Value.ToString();
            }
            else if (TryParseToken(name, field.Value.ToString()) is { } token && token.Lsn > newest.GetValueOrDefault(token.Shard, -1))
            {
                newest[token.Shard] = token.Lsn;
            }
        }

        return user is null ? null : new Session(id, user, [.. newest.Select(t => new SessionToken(t.Key, t.Value))]);
    }

    /// <summary>
    /// Remembers a write of the user's on a shard, so their next reads see it; drops the lower positions
    /// on that shard the session showed (a concurrent write's higher one is not among them).
    /// </summary>
    public Task RememberWriteAsync(Session session, SessionToken token) =>
        token.Shard.Length == 0 ? Task.CompletedTask : cache.HashSetIfLiveAsync(Key(session.Id), "user", FieldOf(token), token.Lsn, Superseded(session, token));

    /// <summary>The fields a write's position makes useless: the session's lower ones on its shard (and the old form).</summary>
    internal static StackExchange.Redis.RedisValue[] Superseded(Session session, SessionToken token)
    {
        var older = session.Tokens.Where(t => t.Shard == token.Shard && t.Lsn < token.Lsn).Select(t => (StackExchange.Redis.RedisValue)FieldOf(t)).ToList();
        var oldForm = TokenPrefix + token.Shard;
        if (TryParseToken(oldForm, "") is null)
        {
            older.Add(oldForm); // (unless a shard id like "12:x" makes it a name of the new form)
        }

        return [.. older];
    }

    internal static string FieldOf(SessionToken token) => string.Create(CultureInfo.InvariantCulture, $"{TokenPrefix}{token.Lsn}:{token.Shard}");

    /// <summary><c>lsn:&lt;lsn&gt;:&lt;shard&gt;</c>, or the old <c>lsn:&lt;shard&gt;</c> with the LSN as value; null for anything else.</summary>
    internal static SessionToken? TryParseToken(string name, string value)
    {
        if (!name.StartsWith(TokenPrefix, StringComparison.Ordinal))
        {
            return null;
        }

        var rest = name.AsSpan(TokenPrefix.Length);
        var colon = rest.IndexOf(':');
        if (colon > 0 && colon + 1 < rest.Length && long.TryParse(rest[..colon], NumberStyles.None, CultureInfo.InvariantCulture, out var lsn))
        {
            return new SessionToken(rest[(colon + 1)..].ToString(), lsn);
        }

        return rest.Length > 0 && long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var old) ? new SessionToken(rest.ToString(), old) : null;
    }

    /// <summary>Ends a session; false when a cache server that may hold it could not be reached.</summary>
    public Task<bool> DeleteAsync(string id) => IsWellFormed(id) ? cache.DeleteAnywhereAsync(Key(id)) : Task.FromResult(true);

    private static bool IsWellFormed(string id) => id.Length == 43 && Base64Url.IsValid(id);

    private static string Key(string id) => "session:" + id;
}
