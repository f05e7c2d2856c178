using System.Diagnostics.Metrics;

namespace Infra.ShardRouter;

/// <summary>The router's instruments: per-shard request rate and latency, failovers, slot moves, fan-outs.</summary>
internal sealed class RouterMetrics
{
    public const string MeterName = "Infra.ShardRouter";

    private readonly Counter<long> _requests;
    private readonly Histogram<double> _duration;

    public RouterMetrics(IMeterFactory meterFactory)
    {
        var meter = meterFactory.Create(MeterName);
        _requests = meter.CreateCounter<long>("infra.router.requests", description: "Requests sent to shards, by shard, kind (write, read, ddl) and outcome");
        _duration = meter.CreateHistogram("infra.router.request.duration", "s", "Time a shard took to answer, by shard and kind",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5] });
        Failovers = meter.CreateCounter<long>("infra.router.failovers", description: "Masters replaced, by shard and outcome");
        SlotMoves = meter.CreateCounter<long>("infra.router.slot_moves", description: "Slots moved between shards");
        RowsMoved = meter.CreateCounter<long>("infra.router.rows_moved", description: "Rows copied to another shard by slot moves");
        FanOuts = meter.CreateCounter<long>("infra.router.fanouts", description: "Keyless reads sent to every shard, by outcome");
        Errors = meter.CreateCounter<long>("infra.router.errors", description: "Requests refused, by code");
        Meter = meter;
    }

    public Meter Meter { get; }

    public Counter<long> Failovers { get; }

    public Counter<long> SlotMoves { get; }

    public Counter<long> RowsMoved { get; }

    public Counter<long> FanOuts { get; }

    public Counter<long> Errors { get; }

    public void Request(string shard, string kind, bool ok, double seconds)
    {
        var shardTag = new KeyValuePair<string, object?>("shard", shard);
        var kindTag = new KeyValuePair<string, object?>("kind", kind);
        _requests.Add(1, shardTag, kindTag, new KeyValuePair<string, object?>("outcome", ok ? "ok" : "error"));
        _duration.Record(seconds, shardTag, kindTag);
    }
}
