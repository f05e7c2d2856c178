using System.Net;
using Infra.CacheServer.Eviction;
using Infra.CacheServer.Storage;
using Infra.Core.Networking;
using Infra.Core.Timing;
using Infra.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;

namespace Infra.CacheServer.Tests;

/// <summary>
/// The cache server's listener, sessions and store in this process on port 0, with the store's
/// clock (TTLs, active expiry) in the test's hands through <see cref="ManualTimeProvider"/>.
/// </summary>
internal sealed class InProcessCacheServer : IAsyncDisposable
{
    private readonly ServiceProvider _services;
    private readonly Heartbeat _heartbeat;
    private readonly TcpConnectionListener _listener;

    private InProcessCacheServer(ServiceProvider services, Heartbeat heartbeat, TcpConnectionListener listener, CacheServerState state, ManualTimeProvider clock)
    {
        _services = services;
        _heartbeat = heartbeat;
        _listener = listener;
        State = state;
        Clock = clock;
    }

    public CacheServerState State { get; }

    public CacheStore Store => State.Store;

    public ManualTimeProvider Clock { get; }

    public int Port => _listener.BoundEndPoint.Port;

    public static InProcessCacheServer Start(long maxMemory = 0, EvictionPolicyKind policy = EvictionPolicyKind.AllKeysLru, int shards = 8)
    {
        var clock = new ManualTimeProvider();
        var services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        var options = new CacheOptions
        {
            Listen = new IPEndPoint(IPAddress.Loopback, 0),
            MaxMemory = maxMemory,
            MaxMemoryPolicy = policy,
            Shards = shards,
        };
        var store = new CacheStore(shards, maxMemory, policy, clock);
        var state = new CacheServerState(store, options, new CacheMetrics(services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>()));
        var heartbeat = new Heartbeat(TimeProvider.System, Heartbeat.DefaultInterval);
        var listener = new TcpConnectionListener(options.Listen,
            new CacheConnectionHandler(state, heartbeat, NullLogger.Instance), new ListenerOptions(), NullLogger.Instance);
        listener.Start();
        state.Port = listener.BoundEndPoint.Port;
        return new InProcessCacheServer(services, heartbeat, listener, state, clock);
    }

    public Task<RespConnection> ConnectAsync() => RespConnection.ConnectAsync(Port);

    public async ValueTask DisposeAsync()
    {
        await _listener.DisposeAsync();
        _heartbeat.Dispose();
        Store.Dispose();
        await _services.DisposeAsync();
    }
}
