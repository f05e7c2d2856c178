using System.Globalization;
using Infra.Client.Data;
using Infra.WebNode.Backends;

namespace Infra.WebNode.Links;

internal sealed record LinkInfo(string Code, string Url, string Owner, long Clicks, long CreatedAt);

internal sealed record CreatedLink(string Code, SessionToken Token);

internal sealed record LinkPage(IReadOnlyList<LinkInfo> Links, string? Next);

/// <summary>
/// Links, sharded by code through the router, read through the cache: <c>link:&lt;code&gt;</c> holds
/// the URL (or "" for a code that does not exist, briefly) with a TTL; a create fills it at once.
/// </summary>
internal sealed class LinkStore(Database db, Cache cache, LinkCodes codes, WebOptions options, WebMetrics metrics, TimeProvider time)
{
    private static readonly TimeSpan MissingTtl = TimeSpan.FromSeconds(30);

    public async Task<CreatedLink> CreateAsync(string owner, string url)
    {
        for (var attempt = 0; ; attempt++)
        {
            var code = codes.Next();
            try
            {
                var write = await db.ExecuteAsync(code,
                    [["INSERT INTO links(code, url, owner, created_at) VALUES (?, ?, ?, ?)", code, url, owner, time.GetUtcNow().ToUnixTimeMilliseconds()]]);
                metrics.LinksCreated.Add(1);
                await cache.SetAsync(CacheKey(code), url, options.LinkCacheTtl);
                return new CreatedLink(code, write.Token);
            }
            catch (DataException ex) when (attempt < 3 && ex.Message.Contains("UNIQUE", StringComparison.Ordinal))
            {
                // A code made twice (a restart within the millisecond of the last code): make another.
            }
        }
    }

    /// <summary>The URL a code points to, or null when there is no such link. Cache first, then a replica, then the master.</summary>
    public async Task<string?> ResolveAsync(string code)
    {
        var cached = await cache.GetAsync(CacheKey(code));
        if (!cached.IsNull)
        {
            metrics.CacheHit();
            var text = cached.ToString();
            return text.Length == 0 ? null : text;
        }

        metrics.CacheMiss();
        var link = await GetAsync(code);
        await cache.SetAsync(CacheKey(code), link?.Url ?? "", link is null ? MissingTtl : options.LinkCacheTtl);
        return link?.Url;
    }

    /// <summary>The link from the database (a replica; the master when the replica has not got it yet).</summary>
    public async Task<LinkInfo?> GetAsync(string code, IReadOnlyList<SessionToken>? tokens = null)
    {
        const string Sql = "SELECT code, url, owner, clicks, created_at FROM links WHERE code = ?";
        var rows = await db.QueryAsync(Sql, [code], new QueryOptions
        {
            Key = code,
            Consistency = tokens is { Count: > 0 } ? ReadConsistency.Session : ReadConsistency.Replica,
            Tokens = tokens ?? [],
        });
        if (rows.Rows.Count == 0)
        {
            rows = await db.QueryAsync(Sql, [code], new QueryOptions { Key = code, Consistency = ReadConsistency.Strong });
        }

        return rows.Rows.Count == 0 ? null : ToLink(rows.Rows[0]);
    }

    /// <summary>
    /// One page of a user's links, newest first, from every shard (merged by the router). The cursor is
    /// the last link's "createdAt.code"; a shard that is down leaves its links out of the page (Partial
    /// true) instead of failing the page.
    /// </summary>
    public async Task<(LinkPage Page, bool Partial)> ListAsync(string owner, string? cursor, int limit, IReadOnlyList<SessionToken> tokens)
    {
        var sql = "SELECT code, url, owner, clicks, created_at FROM links WHERE owner = ?";
        var parameters = new List<object?> { owner };
        if (ParseCursor(cursor) is var (at, after))
        {
            sql += " AND (created_at < ? OR (created_at = ? AND code < ?))";
            parameters.AddRange([at, at, after]);
        }

        sql += " ORDER BY created_at DESC, code DESC LIMIT ?";
        parameters.Add(limit + 1);
        var rows = await db.QueryAsync(sql, parameters, new QueryOptions
        {
            Consistency = tokens.Count > 0 ? ReadConsistency.Session : ReadConsistency.Replica,
            Tokens = tokens,
            OrderBy = ["created_at DESC", "code DESC"],
            Limit = limit + 1,
            AllowPartial = true,
        });
        var links = rows.Rows.Take(limit).Select(ToLink).ToList();
        var next = rows.Rows.Count > limit ? $"{links[^1].CreatedAt.ToString(CultureInfo.InvariantCulture)}.{links[^1].Code}" : null;
        return (new LinkPage(links, next), rows.FailedShards.Count > 0);
    }

    public static (long At, string Code)? ParseCursor(string? cursor)
    {
        if (cursor is null)
        {
            return null;
        }

        var dot = cursor.IndexOf('.', StringComparison.Ordinal);
        return dot > 0 && long.TryParse(cursor.AsSpan(0, dot), NumberStyles.None, CultureInfo.InvariantCulture, out var at) && LinkCodes.IsCode(cursor.AsSpan(dot + 1))
            ? (at, cursor[(dot + 1)..])
            : throw new FormatException("cursor is not one this API returned");
    }

    private static string CacheKey(string code) => "link:" + code;

    private static LinkInfo ToLink(object?[] row) =>
        new((string)row[0]!, (string)row[1]!, (string)row[2]!, Convert.ToInt64(row[3], CultureInfo.InvariantCulture), Convert.ToInt64(row[4], CultureInfo.InvariantCulture));
}
