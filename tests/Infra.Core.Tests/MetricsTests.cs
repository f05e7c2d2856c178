using System.Diagnostics.Metrics;
using Infra.Core.Metrics;
using Microsoft.Extensions.DependencyInjection;

namespace Infra.Core.Tests;

public sealed class MetricsTests : IDisposable
{
    private readonly ServiceProvider _services = new ServiceCollection().AddMetrics().BuildServiceProvider();

    private IMeterFactory Factory => _services.GetRequiredService<IMeterFactory>();

    [Fact]
    public void Renders_counters_gauges_and_histograms_in_prometheus_text()
    {
        using var metrics = new PrometheusMetrics(Factory);
        var meter = Factory.Create("Infra.Test");
        var counter = meter.CreateCounter<long>("infra.test.requests", description: "Requests seen");
        var upDown = meter.CreateUpDownCounter<int>("infra.test.in_flight");
        var histogram = meter.CreateHistogram<double>("infra.test.latency", "s");
        var observed = 41;
        meter.CreateObservableGauge("infra.test.keys", () => observed);

        counter.Add(2, new KeyValuePair<string, object?>("status", "2xx"), new KeyValuePair<string, object?>("backend", "a"));
        counter.Add(3, new KeyValuePair<string, object?>("backend", "a"), new KeyValuePair<string, object?>("status", "2xx"));
        counter.Add(1, new KeyValuePair<string, object?>("backend", "b\"q"), new KeyValuePair<string, object?>("status", "5xx"));
        upDown.Add(3);
        upDown.Add(-1);
        histogram.Record(0.0002);
        histogram.Record(0.003);
        histogram.Record(100);
        observed++;

        var text = metrics.Scrape();

        Assert.Contains("# HELP infra_test_requests_total Requests seen\n", text);
        Assert.Contains("# TYPE infra_test_requests_total counter\n", text);
        Assert.Contains("infra_test_requests_total{backend=\"a\",status=\"2xx\"} 5\n", text);
        Assert.Contains("infra_test_requests_total{backend=\"b\\\"q\",status=\"5xx\"} 1\n", text);
        Assert.Contains("# TYPE infra_test_in_flight gauge\ninfra_test_in_flight 2\n", text);
        Assert.Contains("infra_test_keys 42\n", text);
        Assert.Contains("# TYPE infra_test_latency_seconds histogram\n", text);
        Assert.Contains("infra_test_latency_seconds_bucket{le=\"0.00025\"} 1\n", text);
        Assert.Contains("infra_test_latency_seconds_bucket{le=\"0.005\"} 2\n", text);
        Assert.Contains("infra_test_latency_seconds_bucket{le=\"30\"} 2\n", text);
        Assert.Contains("infra_test_latency_seconds_bucket{le=\"+Inf\"} 3\n", text);
        Assert.Contains("infra_test_latency_seconds_count 3\n", text);
        Assert.Contains("infra_test_latency_seconds_sum 100.0032", text);
    }

    [Fact]
    public void Observable_series_that_stop_reporting_disappear()
    {
        using var metrics = new PrometheusMetrics(Factory);
        var meter = Factory.Create("Infra.Test2");
        var backends = new List<string> { "a", "b" };
        meter.CreateObservableGauge("infra.test.state", () => backends.Select(b => new Measurement<int>(1, new KeyValuePair<string, object?>("backend", b))).ToList());

        Assert.Contains("backend=\"b\"", metrics.Scrape());
        backends.Remove("b");
        var text = metrics.Scrape();
        Assert.Contains("backend=\"a\"", text);
        Assert.DoesNotContain("backend=\"b\"", text);
    }

    [Fact]
    public void Ignores_meters_of_other_hosts()
    {
        using var metrics = new PrometheusMetrics(Factory);
        using var stranger = new Meter("Infra.Stranger");
        stranger.CreateCounter<long>("infra.stranger.count").Add(1);

        Assert.DoesNotContain("stranger", metrics.Scrape());
    }

    [Fact]
    public void Concurrent_recording_loses_nothing()
    {
        using var metrics = new PrometheusMetrics(Factory);
        var meter = Factory.Create("Infra.Test3");
        var counter = meter.CreateCounter<long>("infra.test.hits");
        var histogram = meter.CreateHistogram<double>("infra.test.size");

        Parallel.For(0, 100_000, i =>
        {
            counter.Add(1, new KeyValuePair<string, object?>("shard", i % 4 == 0 ? "x" : "y"));
            histogram.Record(1);
        });

        var text = metrics.Scrape();
        Assert.Contains("infra_test_hits_total{shard=\"x\"} 25000\n", text);
        Assert.Contains("infra_test_hits_total{shard=\"y\"} 75000\n", text);
        Assert.Contains("infra_test_size_count 100000\n", text);
        Assert.Contains("infra_test_size_sum 100000\n", text);
    }

    public void Dispose() => _services.Dispose();
}
