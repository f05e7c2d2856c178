using Infra.Client.Data;

namespace Infra.WebNode.Backends;

/// <summary>A shard is down or failing over, or the router cannot be reached: 503, try again.</summary>
internal sealed class DataUnavailableException : Exception
{
    public DataUnavailableException()
    {
    }

    public DataUnavailableException(string message)
        : base(message)
    {
    }

    public DataUnavailableException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>
/// The web tier's way to the shards: one multiplexed connection to the shard router, made again
/// when lost, every call bounded by the request timeout. Failures a retry may cure (router or shard
/// unreachable, failover in progress, a write not yet confirmed by a replica) become
/// <see cref="DataUnavailableException"/>; the request's own mistakes stay <see cref="DataException"/>.
/// </summary>
internal sealed class Database(WebOptions options, TimeProvider time) : IAsyncDisposable
{
    private readonly Reconnecting<ShardRouterClient> _router = new(
        "the shard router",
        cancel => ShardRouterClient.ConnectAsync(options.Router, cancel),
        client => client.IsConnected,
        TimeSpan.FromSeconds(1),
        TimeSpan.FromMilliseconds(250),
        time);

    public bool IsConnected => _router.IsConnected;

    public Task<RoutedWrite> ExecuteAsync(object key, IReadOnlyList<object?[]> statements) =>
        CallAsync(client => client.ExecuteAsync(key, statements));

    public Task<RoutedRows> QueryAsync(string sql, IReadOnlyList<object?> parameters, QueryOptions options) =>
        CallAsync(client => client.QueryAsync(sql, parameters, options));

    public Task<IReadOnlyList<Dictionary<string, object?>>> SchemaAsync(IReadOnlyList<string> statements, IReadOnlyList<(string, string)> tables) =>
        CallAsync(client => client.SchemaAsync(statements, tables));

    public Task PingAsync() => CallAsync(async client =>
    {
        await client.PingAsync();
        return true;
    });

    private async Task<T> CallAsync<T>(Func<ShardRouterClient, Task<T>> call)
    {
        try
        {
            var client = await _router.GetAsync();
            return await call(client).WaitAsync(options.RequestTimeout, time);
        }
        catch (BackendDownException ex)
        {
            throw new DataUnavailableException(ex.Message, ex);
        }
        catch (TimeoutException ex)
        {
            throw new DataUnavailableException($"the shard router did not answer within {options.RequestTimeout.TotalMilliseconds:0} ms", ex);
        }
        catch (DataException ex) when (ex.IsRetriable || ex.Code is "ShardsFailed" or "NotReplicated" or "Internal")
        {
            throw new DataUnavailableException(ex.Message, ex);
        }
    }

    public ValueTask DisposeAsync() => _router.DisposeAsync();
}
