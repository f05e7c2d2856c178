using Infra.Client.Cache;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace Infra.WebNode.Backends;

/// <summary>
/// The cache tier as the web node uses it: keys placed over the cache servers by
/// <see cref="CacheCluster"/> (with failed nodes ejected, so their keys move to the runners-up until
/// they are back). Every call is best effort: a slow or failed cache is a miss, never an error the
/// user sees, and is counted.
/// </summary>
internal sealed partial class Cache(CacheCluster cluster, WebMetrics metrics, ILogger<Cache> logger) : IAsyncDisposable
{
    public static async Task<Cache> ConnectAsync(WebOptions options, WebMetrics metrics, ILoggerFactory loggers)
    {
        var settings = new CacheClusterOptions
        {
            EjectFailedNodes = true,
            Configure = config =>
            {
                config.ConnectTimeout = 1000;
                config.SyncTimeout = (int)options.CacheTimeout.TotalMilliseconds;
                config.AsyncTimeout = (int)options.CacheTimeout.TotalMilliseconds;
                config.ConnectRetry = 1;
                config.ReconnectRetryPolicy = new LinearRetry(500);
                config.ClientName = "infra-webnode";
            },
        };
        for (var i = 0; i < options.Caches.Count; i++)
        {
            settings.Nodes.Add(new CacheNode($"cache-{i + 1}", options.Caches[i]));
        }

        var cache = new Cache(await CacheCluster.ConnectAsync(settings), metrics, loggers.CreateLogger<Cache>());
        metrics.Meter.CreateObservableGauge("infra.web.cache_nodes_up", () => cache.NodesUp, description: "Cache servers this node is connected to now");
        return cache;
    }

    /// <summary>A cache server whose connection has failed for this long is taken as gone, with the keys it held.</summary>
    public static readonly TimeSpan GoneAfter = TimeSpan.FromSeconds(10);

    /// <summary>Down for <see cref="GoneAfter"/> or longer: taken as gone, with the keys it held.</summary>
    private bool IsGone(int node) => cluster.DownFor(node) >= GoneAfter;

    /// <summary>Cache servers connected now.</summary>
    public int NodesUp => Enumerable.Range(0, cluster.Nodes.Count).Count(i => cluster.GetConnection(i).IsConnected);

    public int Nodes => cluster.Nodes.Count;

    /// <summary>The value, or null on a miss or when the cache cannot answer.</summary>
    public Task<RedisValue> GetAsync(string key) => TryAsync(key, db => db.StringGetAsync(key), RedisValue.Null);

    public Task SetAsync(string key, string value, TimeSpan ttl) => TryAsync(key, db => db.StringSetAsync(key, value, ttl), false);

    /// <summary>
    /// A hash that must not be missed (a session): from the node placement picks now, else from the
    /// key's home or runner-up, where a web node whose view of failed cache servers differed from
    /// ours may have written it. An extra round trip only on a miss. A hash without
    /// <paramref name="requiredField"/> is a miss: <see cref="HashSetIfLiveAsync"/> may have made one
    /// for a moment on a node that does not hold the session.
    /// </summary>
    /// <returns>
    /// The fields; empty when no candidate holds it (or only nodes down for longer than
    /// <see cref="GoneAfter"/> might: a dead cache server's sessions are gone, their users log in again);
    /// null when a node that failed or timed out just now may hold it — "absent" would tell a signed-in
    /// user to log in while their session sits on a server that is only slow or restarting.
    /// </returns>
    public async Task<HashEntry[]?> HashGetAllAnywhereAsync(string key, string requiredField)
    {
        var unknown = false;
        foreach (var (node, db) in cluster.GetCandidates(key))
        {
            var fields = await TryAsync<HashEntry[]?>(db, key, async d => await d.HashGetAllAsync(key), null);
            if (fields is null)
            {
                unknown |= !IsGone(node);
            }
            else if (fields.Any(f => f.Name == requiredField))
            {
                return fields;
            }
        }

        return unknown ? null : [];
    }

    /// <summary>
    /// Deletes a key wherever <see cref="HashGetAllAnywhereAsync"/> could find it; false when a node that may
    /// hold it could not be asked (it may still hold the key, and serve it again once it is reachable) —
    /// unless that node has been down longer than <see cref="GoneAfter"/>: taken as gone with its keys, as
    /// for reads (else its users could not log out until it is back). A cache server cut off that long
    /// and back with its memory could serve a session ended meanwhile; one that restarted comes back empty.
    /// </summary>
    public async Task<bool> DeleteAnywhereAsync(string key)
    {
        var everywhere = true;
        foreach (var (node, db) in cluster.GetCandidates(key))
        {
            var deleted = await TryAsync(db, key, async d =>
            {
                await d.KeyDeleteAsync(key);
                return true;
            }, false);
            everywhere &= deleted || IsGone(node);
        }

        return everywhere;
    }

    /// <summary>HSET then PEXPIRE in one round trip.</summary>
    public Task<bool> HashSetAsync(string key, HashEntry[] fields, TimeSpan? ttl) => TryAsync(key, async db =>
    {
        var batch = db.CreateBatch();
        var set = batch.HashSetAsync(key, fields);
        var expire = ttl is { } t ? batch.KeyExpireAsync(key, t) : Task.FromResult(true);
        batch.Execute();
        await Task.WhenAll(set, expire);
        return true;
    }, false);

    /// <summary>
    /// Sets one field of a hash that holds <paramref name="requiredField"/> (a live session), on the
    /// node that holds it: the one placement picks now, else its home or runner-up (where
    /// <see cref="HashGetAllAnywhereAsync"/> finds it). Where the hash is missing or expired meanwhile,
    /// HSET made a new one without that field and without a TTL: it is removed again, so nothing
    /// outlives its session (readers skip it meanwhile).
    /// </summary>
    /// <param name="remove">Fields removed from the hash once the field is set in it.</param>
    public async Task<bool> HashSetIfLiveAsync(string key, string requiredField, string field, RedisValue value, RedisValue[]? remove = null)
    {
        foreach (var db in cluster.GetCandidateDatabases(key))
        {
            var set = await TryAsync(db, key, async d =>
            {
                await d.HashSetAsync(key, field, value);
                if (await d.HashExistsAsync(key, requiredField))
                {
                    if (remove is { Length: > 0 })
                    {
                        await d.HashDeleteAsync(key, remove);
                    }

                    return true;
                }

                await d.KeyDeleteAsync(key);
                return false;
            }, false);
            if (set)
            {
                return true;
            }
        }

        return false;
    }

    private Task<T> TryAsync<T>(string key, Func<IDatabase, Task<T>> call, T fallback) => TryAsync(null, key, call, fallback);

    /// <param name="db">The node to ask; null: the one placement picks for <paramref name="key"/> now.</param>
    internal async Task<T> TryAsync<T>(IDatabase? db, string key, Func<IDatabase, Task<T>> call, T fallback)
    {
        try
        {
            return await call(db ?? cluster.GetDatabase(key));
        }
        catch (Exception ex) when (ex is RedisException or TimeoutException or ObjectDisposedException)
        {
            metrics.CacheErrors.Add(1);
            LogCacheFailed(logger, key, ex.Message);
            return fallback;
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // Not a failure the client documents, but still the cache's: a miss for the user as well
            // (a request must not fail because a cache server died in an unexpected way), logged loudly.
            metrics.CacheErrors.Add(1);
            LogCacheFailedUnexpectedly(logger, ex, key, ex.GetType().Name);
            return fallback;
        }
    }

    public ValueTask DisposeAsync() => cluster.DisposeAsync();

    [LoggerMessage(EventId = 700, Level = LogLevel.Debug, Message = "Cache call for {Key} failed; treated as a miss: {Reason}")]
    private static partial void LogCacheFailed(ILogger logger, string key, string reason);

    [LoggerMessage(EventId = 701, Level = LogLevel.Warning, Message = "Cache call for {Key} failed with an unexpected {Type}; treated as a miss")]
    private static partial void LogCacheFailedUnexpectedly(ILogger logger, Exception exception, string key, string type);
}
