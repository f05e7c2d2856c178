using System.Diagnostics.Metrics;
using Infra.CacheServer.Commands;

namespace Infra.CacheServer;

/// <summary>
/// The cache server's instruments (meter <c>Infra.CacheServer</c>). Per-command counts are plain
/// counters striped by processor, read at scrape time; keyspace figures come from the store.
/// </summary>
internal sealed class CacheMetrics
{
    public const string MeterName = "Infra.CacheServer";

    // 8 longs = one cache line per stripe, so two cores counting the same command do not collide.
    private const int Stride = 8;
    private readonly int _stripes = Math.Max(1, Environment.ProcessorCount);
    private readonly long[] _commands;
    private readonly Counter<long> _protocolErrors;
    private readonly Counter<long> _rejected;
    private CacheServerState? _server;
    private long _connections;

    public CacheMetrics(IMeterFactory meterFactory)
    {
        ArgumentNullException.ThrowIfNull(meterFactory);
        _commands = new long[CommandTable.All.Count * _stripes * Stride];
        var meter = meterFactory.Create(MeterName);
        _protocolErrors = meter.CreateCounter<long>("infra.cache.protocol_errors", description: "Connections closed for malformed or oversized input, by reason");
        _rejected = meter.CreateCounter<long>("infra.cache.connections.rejected", description: "Connections refused at maxclients");
        meter.CreateObservableCounter("infra.cache.commands", ObserveCommands, description: "Commands executed, by name");
        meter.CreateObservableCounter("infra.cache.keyspace.hits", () => Stats().Hits, description: "Reads that found their key");
        meter.CreateObservableCounter("infra.cache.keyspace.misses", () => Stats().Misses, description: "Reads that did not");
        meter.CreateObservableCounter("infra.cache.evictions", () => Stats().Evicted, description: "Keys evicted for maxmemory");
        meter.CreateObservableCounter("infra.cache.expirations", () => Stats().Expired, description: "Keys removed because their TTL passed");
        meter.CreateObservableGauge("infra.cache.memory.used", () => Stats().UsedMemory, "By", "Bytes of data held, as maxmemory counts them");
        meter.CreateObservableGauge("infra.cache.memory.max", () => _server?.Store.MaxMemory ?? 0, "By", "maxmemory (0 = unlimited)");
        meter.CreateObservableGauge("infra.cache.keys", () => Stats().Keys, description: "Keys held");
        meter.CreateObservableGauge("infra.cache.keys.volatile", () => Stats().Expires, description: "Keys with a TTL");
        meter.CreateObservableUpDownCounter("infra.cache.connections", () => Volatile.Read(ref _connections), description: "Open client connections");
    }

    public void Attach(CacheServerState server) => _server = server;

    public void CommandExecuted(int commandId)
    {
        var stripe = Thread.GetCurrentProcessorId() % _stripes;
        Interlocked.Increment(ref _commands[((commandId * _stripes) + stripe) * Stride]);
    }

    public long CommandCount(int commandId)
    {
        long total = 0;
        for (var stripe = 0; stripe < _stripes; stripe++)
        {
            total += Volatile.Read(ref _commands[((commandId * _stripes) + stripe) * Stride]);
        }

        return total;
    }

    public void ProtocolError(string reason) => _protocolErrors.Add(1, new KeyValuePair<string, object?>("reason", reason));

    public void ConnectionRejected() => _rejected.Add(1);

    public void ConnectionOpened() => Interlocked.Increment(ref _connections);

    public void ConnectionClosed() => Interlocked.Decrement(ref _connections);

    private Storage.StoreStats Stats() => _server?.Store.Stats() ?? default;

    private IEnumerable<Measurement<long>> ObserveCommands()
    {
        foreach (var spec in CommandTable.All)
        {
            var count = CommandCount(spec.Id);
            if (count > 0)
            {
                yield return new Measurement<long>(count, new KeyValuePair<string, object?>("command", spec.LowerName));
            }
        }
    }
}
