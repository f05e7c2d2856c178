using System.Diagnostics;
using StackExchange.Redis;

namespace Infra.Client.Cache;

/// <summary>Settings for <see cref="CacheCluster"/>.</summary>
public sealed class CacheClusterOptions
{
    /// <summary>The cache servers. Names must be unique; order does not matter to placement.</summary>
    public IList<CacheNode> Nodes { get; } = new List<CacheNode>();

    /// <summary>
    /// When a node's connection fails, send its keys to the runners-up until it is back (as
    /// twemproxy's auto_eject_hosts does). Off by default: a failed node's keys then fail fast with
    /// <see cref="RedisConnectionException"/>, which a read-through cache treats as a miss. On, they
    /// keep being cached elsewhere, at the price that a node coming back after a network blip may
    /// hold older values for keys that were rewritten meanwhile (TTLs bound how old).
    /// </summary>
    public bool EjectFailedNodes { get; set; }

    /// <summary>Slot count of the placement table (4096, as every Infra placement).</summary>
    public int Slots { get; set; } = Core.Placement.SlotTable.DefaultSlots;

    /// <summary>Applied to each node's <see cref="ConfigurationOptions"/> after the defaults (password, timeouts, RESP3...).</summary>
    public Action<ConfigurationOptions>? Configure { get; set; }
}

/// <summary>
/// A client-side picker over N cache servers: each key goes to one server chosen by
/// <see cref="CachePlacement"/>, reached through its own StackExchange.Redis multiplexer. Losing a
/// server loses only its keys; every other key stays on its server and keeps working.
/// </summary>
/// <example><code>
/// var options = new CacheClusterOptions();
/// options.Nodes.Add(new CacheNode("cache-a", "10.0.0.1:6379"));
/// options.Nodes.Add(new CacheNode("cache-b", "10.0.0.2:6379"));
/// await using var cache = await CacheCluster.ConnectAsync(options);
/// await cache.GetDatabase("session:42").StringSetAsync("session:42", "...", TimeSpan.FromMinutes(30));
/// </code></example>
public sealed class CacheCluster : IAsyncDisposable
{
    private readonly ConnectionMultiplexer[] _connections;
    private readonly bool _eject;

    /// <summary>Per node, when its connection failed (a Stopwatch timestamp), 0 while it is up.</summary>
    private readonly long[] _downSince;

    private CacheCluster(CachePlacement placement, ConnectionMultiplexer[] connections, bool eject)
    {
        Placement = placement;
        _connections = connections;
        _eject = eject;
        _downSince = new long[connections.Length];
        for (var i = 0; i < connections.Length; i++)
        {
            var node = i;
            if (!connections[i].IsConnected)
            {
                _downSince[i] = Stopwatch.GetTimestamp();
            }

            connections[i].ConnectionFailed += (_, e) => OnConnectionChanged(node, e);
            connections[i].ConnectionRestored += (_, e) => OnConnectionChanged(node, e);
            if (eject && !connections[i].IsConnected)
            {
                placement.MarkDown(i);
            }
        }
    }

    /// <summary>Raised when a node is taken out of or put back into placement (ejection on).</summary>
    public event EventHandler<CacheNodeEventArgs>? NodeChanged;

    /// <summary>Where keys go.</summary>
    public CachePlacement Placement { get; }

    /// <summary>Every node, in the order given.</summary>
    public IReadOnlyList<CacheNode> Nodes => Placement.Nodes;

    /// <summary>
    /// Connects to every node. A node that cannot be reached now does not fail the call: its
    /// multiplexer keeps retrying in the background, and its keys fail fast (or, with ejection, go
    /// to the runners-up) until it answers.
    /// </summary>
    public static async Task<CacheCluster> ConnectAsync(CacheClusterOptions options, TextWriter? log = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        var placement = new CachePlacement(options.Nodes, options.Slots);
        var connections = await Task.WhenAll(options.Nodes.Select(node =>
        {
            var config = new ConfigurationOptions
            {
                EndPoints = { node.EndPoint },
                AbortOnConnectFail = false,
                BacklogPolicy = BacklogPolicy.FailFast,
                ClientName = "infra-cache-cluster",
            };
            options.Configure?.Invoke(config);
            return ConnectionMultiplexer.ConnectAsync(config, log);
        }));
        return new CacheCluster(placement, connections, options.EjectFailedNodes);
    }

    /// <summary>Index into <see cref="Nodes"/> of the node that holds a key now.</summary>
    public int NodeFor(RedisKey key) => Placement.NodeFor((byte[]?)key ?? []);

    /// <summary>The database on the node that holds <paramref name="key"/>; use it for that key (and keys sharing its hash tag).</summary>
    public IDatabase GetDatabase(RedisKey key) => _connections[NodeFor(key)].GetDatabase();

    /// <summary>
    /// The databases that may hold <paramref name="key"/>: the node placement picks now first, then its
    /// home and runner-up if they differ (see <see cref="CachePlacement.Candidates"/>). For reads that
    /// must find a key written by another client whose view of which nodes are down differs.
    /// </summary>
    public IReadOnlyList<IDatabase> GetCandidateDatabases(RedisKey key)
    {
        var bytes = (byte[]?)key ?? [];
        var now = Placement.NodeFor(bytes);
        var (home, runnerUp) = Placement.Candidates(bytes);
        return [.. new[] { now, home, runnerUp }.Distinct().Select(i => _connections[i].GetDatabase())];
    }

    /// <summary>As <see cref="GetCandidateDatabases"/>, with each database's node index.</summary>
    public IReadOnlyList<(int Node, IDatabase Database)> GetCandidates(RedisKey key)
    {
        var bytes = (byte[]?)key ?? [];
        var now = Placement.NodeFor(bytes);
        var (home, runnerUp) = Placement.Candidates(bytes);
        return [.. new[] { now, home, runnerUp }.Distinct().Select(i => (i, _connections[i].GetDatabase()))];
    }

    /// <summary>How long a node's connection has been failed (zero while it is up): a node down for long is gone, one down a moment may be slow.</summary>
    public TimeSpan DownFor(int node) => Volatile.Read(ref _downSince[node]) is var since and not 0 ? Stopwatch.GetElapsedTime(since) : TimeSpan.Zero;

    /// <summary>The multiplexer of one node (server commands, pub/sub, pipelines of keys placed together).</summary>
    public IConnectionMultiplexer GetConnection(int node) => _connections[node];

    /// <summary>Keys grouped by the node that holds them, for batching (MGET per node).</summary>
    public ILookup<int, RedisKey> GroupByNode(IEnumerable<RedisKey> keys) => keys.ToLookup(NodeFor);

    public async ValueTask DisposeAsync()
    {
        foreach (var connection in _connections)
        {
            await connection.DisposeAsync();
        }
    }

    private void OnConnectionChanged(int node, ConnectionFailedEventArgs e)
    {
        if (e.ConnectionType != ConnectionType.Interactive)
        {
            return;
        }

        // StackExchange.Redis raises its failed and restored events on pool threads, in no guaranteed order:
        // after a blip the "failed" one could be handled last and leave a connected node ejected (and its
        // down time growing) until some later failure. What counts is the connection's state now.
        var up = _connections[node].IsConnected;

        if (up)
        {
            Volatile.Write(ref _downSince[node], 0);
        }
        else
        {
            Interlocked.CompareExchange(ref _downSince[node], Stopwatch.GetTimestamp(), 0); // the first failure counts
        }

        if (!_eject)
        {
            return;
        }

        var changed = up ? Placement.MarkUp(node) : Placement.MarkDown(node);
        if (changed)
        {
            NodeChanged?.Invoke(this, new CacheNodeEventArgs(node, Nodes[node], up));
        }
    }
}

/// <summary>A node was taken out of placement (<see cref="Up"/> false) or put back.</summary>
public sealed class CacheNodeEventArgs(int index, CacheNode node, bool up) : EventArgs
{
    public int Index { get; } = index;

    public CacheNode Node { get; } = node;

    public bool Up { get; } = up;
}
