using System.Diagnostics.Metrics;

namespace Infra.WebNode;

/// <summary>The web node's business and dependency instruments.</summary>
internal sealed class WebMetrics
{
    public const string MeterName = "Infra.WebNode";
    private long _hits;
    private long _misses;

    public WebMetrics(IMeterFactory meterFactory)
    {
        var meter = meterFactory.Create(MeterName);
        LinksCreated = meter.CreateCounter<long>("infra.web.links_created", description: "Short links created");
        Redirects = meter.CreateCounter<long>("infra.web.redirects", description: "GET /{code}, by outcome (found, not_found, unavailable)");
        Signups = meter.CreateCounter<long>("infra.web.signups", description: "Accounts created");
        Logins = meter.CreateCounter<long>("infra.web.logins", description: "Log-in attempts, by outcome");
        ClicksPublished = meter.CreateCounter<long>("infra.web.clicks_published", description: "Click events the queue acknowledged");
        ClicksDropped = meter.CreateCounter<long>("infra.web.clicks_dropped", description: "Click events dropped, by reason (buffer_full: the queue was slow or down so long that the buffer filled; shutdown: still unpublished when the node stopped)");
        ClicksCounted = meter.CreateCounter<long>("infra.web.clicks_counted", description: "Worker: click events applied to a link's count (a redelivered event is not counted again)");
        ClickEventsHandled = meter.CreateCounter<long>("infra.web.click_events", description: "Worker: click events taken from the queue, by outcome (acked, retried, malformed)");
        CacheErrors = meter.CreateCounter<long>("infra.web.cache_errors", description: "Cache calls that failed or timed out (served as misses)");
        meter.CreateObservableCounter("infra.web.cache_hits", () => Interlocked.Read(ref _hits), description: "Link lookups answered by the cache");
        meter.CreateObservableCounter("infra.web.cache_misses", () => Interlocked.Read(ref _misses), description: "Link lookups that went to the database");
        meter.CreateObservableGauge("infra.web.cache_hit_ratio", HitRatio, description: "cache_hits / (cache_hits + cache_misses) since start");
        Meter = meter;
    }

    public Meter Meter { get; }

    public Counter<long> LinksCreated { get; }

    public Counter<long> Redirects { get; }

    public Counter<long> Signups { get; }

    public Counter<long> Logins { get; }

    public Counter<long> ClicksPublished { get; }

    public Counter<long> ClicksDropped { get; }

    public Counter<long> ClicksCounted { get; }

    public Counter<long> ClickEventsHandled { get; }

    public Counter<long> CacheErrors { get; }

    public void CacheHit() => Interlocked.Increment(ref _hits);

    public void CacheMiss() => Interlocked.Increment(ref _misses);

    public double HitRatio()
    {
        var hits = Interlocked.Read(ref _hits);
        var total = hits + Interlocked.Read(ref _misses);
        return total == 0 ? 0 : (double)hits / total;
    }
}
