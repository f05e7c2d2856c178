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
/// <c>created</c>, and <c>lsn:&lt;shard&gt;</c> for the user's last write on each shard) with the
/// session TTL. The cookie carries just the id (32 random bytes, base64url), so every web node can
/// serve every request.
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
        if (id is null || id.Length != 43 || !Base64Url.IsValid(id))
        {
            return null;
        }

        var fields = await cache.HashGetAllAnywhereAsync(Key(id), "user");
        string? user = null;
        var tokens = new List<SessionToken>();
        foreach (var field in fields)
        {
            var name = field.Name.ToString();
            if (name == "user")
            {
                user = field.Value.ToString();
            }
            else if (name.StartsWith(TokenPrefix, StringComparison.Ordinal) && long.TryParse(field.Value.ToString(), NumberStyles.None, CultureInfo.InvariantCulture, out var lsn))
            {
                tokens.Add(new SessionToken(name[TokenPrefix.Length..], lsn));
            }
        }

        return user is null ? null : new Session(id, user, tokens);
    }

    /// <summary>Remembers the user's newest write on a shard, so their next reads see it.</summary>
    public Task RememberWriteAsync(Session session, SessionToken token) =>
        token.Shard.Length == 0 ? Task.CompletedTask : cache.HashSetIfLiveAsync(Key(session.Id), "user", TokenPrefix + token.Shard, token.Lsn);

    public Task DeleteAsync(string id) => cache.DeleteAnywhereAsync(Key(id));

    private static string Key(string id) => "session:" + id;
}
