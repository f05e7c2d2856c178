using System.Collections.Concurrent;
using System.Net.Sockets;
using Infra.Client.Data;

namespace Infra.ShardRouter.Routing;

/// <summary>
/// A few multiplexed connections to one data node, opened on first use and reopened after a loss;
/// calls are spread over them. Counts the router's requests in flight to the node (least-in-flight
/// replica choice) and bounds each call by a timeout. The connections are inline
/// (<see cref="DataNodeClient.ConnectAsync(string, bool, CancellationToken)"/>): on the router's epoll
/// engine the answer of a read or write completes on the thread that read it (other operations'
/// answers complete on the thread pool), so a call made <c>inline</c> goes on there with no thread hop;
/// every other call goes on on the thread pool.
/// </summary>
internal sealed class NodeConnections(string address, int connections, TimeSpan connectTimeout) : IAsyncDisposable
{
    private readonly DataNodeClient?[] _clients = new DataNodeClient?[connections];
    private readonly SemaphoreSlim _connecting = new(1, 1);
    private int _next;
    private int _inFlight;
    private bool _disposed;

    public string Address { get; } = address;

    public int InFlight => Volatile.Read(ref _inFlight);

    /// <summary>A call whose caller goes on on the thread pool.</summary>
    public Task<T> CallAsync<T>(Func<DataNodeClient, Task<T>> call, TimeSpan timeout, CancellationToken cancellationToken = default) =>
        CallAsync(call, timeout, inline: false, cancellationToken);

    /// <param name="inline">
    /// True for the request path (a keyed read or write): the caller goes on on the thread that read the
    /// answer and does nothing there that blocks. False (resharding, failover, DDL): the caller goes on
    /// on the thread pool.
    /// </param>
    public async Task<T> CallAsync<T>(Func<DataNodeClient, Task<T>> call, TimeSpan timeout, bool inline, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _inFlight);
        try
        {
            var client = await GetAsync(cancellationToken);
            try
            {
                var answer = call(client).WaitAsync(timeout, cancellationToken);
                await ((Task)answer).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
                if (!inline)
                {
                    await Task.Yield();
                }

                return await answer;
            }
            catch (TimeoutException)
            {
                throw new DataException("Timeout", $"{Address} did not answer within {timeout.TotalMilliseconds:0} ms");
            }
        }
        finally
        {
            Interlocked.Decrement(ref _inFlight);
        }
    }

    private async ValueTask<DataNodeClient> GetAsync(CancellationToken cancellationToken)
    {
        var at = (int)((uint)Interlocked.Increment(ref _next) % (uint)_clients.Length);
        if (Volatile.Read(ref _clients[at]) is { IsConnected: true } ready)
        {
            return ready;
        }

        await _connecting.WaitAsync(cancellationToken);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_clients[at] is { IsConnected: true } other)
            {
                return other;
            }

            if (_clients[at] is { } dead)
            {
                await dead.DisposeAsync();
            }

            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(connectTimeout);
            try
            {
                var client = await DataNodeClient.ConnectAsync(Address, inline: true, timeout.Token);
                Volatile.Write(ref _clients[at], client);
                return client;
            }
            catch (Exception ex) when (ex is SocketException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
            {
                _clients[at] = null;
                throw new DataException("Unreachable", $"cannot connect to {Address}: {ex.Message}");
            }
        }
        finally
        {
            _connecting.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _connecting.WaitAsync();
        try
        {
            _disposed = true;
            foreach (var client in _clients)
            {
                if (client is not null)
                {
                    await client.DisposeAsync();
                }
            }
        }
        finally
        {
            _connecting.Release();
        }
    }
}

/// <summary>Connections to every data node the router talks to, by address.</summary>
internal sealed class NodePool(int connectionsPerNode, TimeSpan connectTimeout) : IAsyncDisposable
{
    private readonly ConcurrentDictionary<string, NodeConnections> _nodes = new(StringComparer.OrdinalIgnoreCase);

    public NodeConnections this[string address] =>
        _nodes.TryGetValue(address, out var node) ? node : _nodes.GetOrAdd(address, a => new NodeConnections(a, connectionsPerNode, connectTimeout));

    public async ValueTask DisposeAsync()
    {
        foreach (var node in _nodes.Values)
        {
            await node.DisposeAsync();
        }
    }
}
