using Infra.Client.Cache;
using Infra.WebNode.Backends;
using Microsoft.Extensions.DependencyInjection;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging.Abstractions;

namespace Infra.WebNode.Tests;

public sealed class CacheTests
{
    [Fact]
    public async Task Any_failure_of_a_cache_call_is_a_miss_never_an_exception_for_the_request()
    {
        // A stack test once saw a bare 500 from a web node while a cache server was killed: an exception
        // type outside the ones the cache wrapper caught escaped the request.
        using var services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        var metrics = new WebMetrics(services.GetRequiredService<IMeterFactory>());
        long errors = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument == metrics.CacheErrors)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, _, _) => Interlocked.Add(ref errors, value));
        listener.Start();
        var options = new CacheClusterOptions { Configure = c => c.ConnectTimeout = 200 };
        options.Nodes.Add(new CacheNode("cache-1", "127.0.0.1:1")); // nothing listens: no server is needed
        await using var cache = new Cache(await CacheCluster.ConnectAsync(options), metrics, NullLogger<Cache>.Instance);

        Assert.Equal(7, await cache.TryAsync<int>(null, "k", _ => throw new InvalidOperationException("unexpected"), 7));
        Assert.Equal(8, await cache.TryAsync<int>(null, "k", _ => Task.FromException<int>(new TaskCanceledException()), 8));
        Assert.Equal(9, await cache.TryAsync<int>(null, "k", _ => throw new TimeoutException(), 9));

        // A cache server that cannot be reached is a miss, through the real client.
        Assert.True((await cache.GetAsync("k")).IsNull);
        Assert.Equal(4, Interlocked.Read(ref errors));

        // But a delete that could not reach a node that may hold the key says so (a logout must not claim
        // to have ended a session the node would serve again once it is back).
        Assert.False(await cache.DeleteAnywhereAsync("session:x"));
    }
}
