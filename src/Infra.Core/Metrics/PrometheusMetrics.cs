using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;

namespace Infra.Core.Metrics;

/// <summary>
/// Collects every instrument created through this host's <see cref="IMeterFactory"/> (and the runtime's
/// <c>System.Runtime</c> meter) and renders them
/// in the Prometheus text exposition format (version 0.0.4). Recording is lock-free once a tag
/// combination has been seen; observable instruments are read at scrape time.
/// </summary>
public sealed class PrometheusMetrics : IDisposable
{
    // Latency buckets in seconds, from 100 µs (a proxied request on loopback) to 30 s (a timeout).
    private static readonly double[] DefaultSecondsBuckets =
        [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

    private static readonly double[] DefaultBuckets =
        [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

    private readonly MeterListener _listener;
    private readonly List<InstrumentAggregator> _aggregators = [];
    private readonly Lock _scrapeLock = new();

    public PrometheusMetrics(IMeterFactory meterFactory)
    {
        _listener = new MeterListener
        {
            InstrumentPublished = (instrument, listener) =>
            {
                // This host's own meters, plus the runtime's (GC, thread pool, memory; .NET 9+).
                if (!ReferenceEquals(instrument.Meter.Scope, meterFactory) && instrument.Meter.Name != "System.Runtime")
                {
                    return;
                }

                var aggregator = InstrumentAggregator.Create(instrument);
                if (aggregator is null)
                {
                    return;
                }

                lock (_aggregators)
                {
                    _aggregators.Add(aggregator);
                }

                listener.EnableMeasurementEvents(instrument, aggregator);
            },
            MeasurementsCompleted = (instrument, state) =>
            {
                lock (_aggregators)
                {
                    _aggregators.Remove((InstrumentAggregator)state!);
                }
            },
        };
        _listener.SetMeasurementEventCallback<long>(static (_, value, tags, state) => ((InstrumentAggregator)state!).Record(value, tags));
        _listener.SetMeasurementEventCallback<int>(static (_, value, tags, state) => ((InstrumentAggregator)state!).Record(value, tags));
        _listener.SetMeasurementEventCallback<short>(static (_, value, tags, state) => ((InstrumentAggregator)state!).Record(value, tags));
        _listener.SetMeasurementEventCallback<byte>(static (_, value, tags, state) => ((InstrumentAggregator)state!).Record(value, tags));
        _listener.SetMeasurementEventCallback<double>(static (_, value, tags, state) => ((InstrumentAggregator)state!).Record(value, tags));
        _listener.SetMeasurementEventCallback<float>(static (_, value, tags, state) => ((InstrumentAggregator)state!).Record(value, tags));
        _listener.SetMeasurementEventCallback<decimal>(static (_, value, tags, state) => ((InstrumentAggregator)state!).Record((double)value, tags));
        _listener.Start();
    }

    /// <summary>Reads the observable instruments and renders everything in the text format.</summary>
    public string Scrape()
    {
        lock (_scrapeLock)
        {
            InstrumentAggregator[] aggregators;
            lock (_aggregators)
            {
                aggregators = [.. _aggregators];
            }

            foreach (var aggregator in aggregators)
            {
                aggregator.BeginObservation();
            }

            _listener.RecordObservableInstruments();
            var text = new StringBuilder(4096);
            foreach (var group in aggregators.GroupBy(a => a.MetricName).OrderBy(g => g.Key, StringComparer.Ordinal))
            {
                var first = group.First();
                if (!string.IsNullOrEmpty(first.Description))
                {
                    text.Append("# HELP ").Append(group.Key).Append(' ').Append(EscapeHelp(first.Description)).Append('\n');
                }

                text.Append("# TYPE ").Append(group.Key).Append(' ').Append(first.PrometheusType).Append('\n');
                foreach (var aggregator in group)
                {
                    aggregator.WriteSeries(text);
                }
            }

            return text.ToString();
        }
    }

    public void Dispose() => _listener.Dispose();

    internal static string MetricName(Instrument instrument, out string prometheusType)
    {
        var name = new StringBuilder(instrument.Name.Length + 8);
        foreach (var c in instrument.Name)
        {
            name.Append(char.IsAsciiLetterOrDigit(c) ? char.ToLowerInvariant(c) : '_');
        }

        var unitSuffix = instrument.Unit switch
        {
            "s" => "_seconds",
            "ms" => "_milliseconds",
            "By" => "_bytes",
            _ => null,
        };
        if (unitSuffix is not null && !name.ToString().EndsWith(unitSuffix, StringComparison.Ordinal))
        {
            name.Append(unitSuffix);
        }

        var type = instrument.GetType();
        var generic = type.IsGenericType ? type.GetGenericTypeDefinition() : type;
        prometheusType = generic == typeof(Counter<>) || generic == typeof(ObservableCounter<>) ? "counter"
            : generic == typeof(Histogram<>) ? "histogram"
            : "gauge";
        if (prometheusType == "counter" && !name.ToString().EndsWith("_total", StringComparison.Ordinal))
        {
            name.Append("_total");
        }

        return name.ToString();
    }

    private static string EscapeHelp(string text) => text.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);

    internal static void AppendLabels(StringBuilder text, KeyValuePair<string, object?>[] tags, string? extraName = null, string? extraValue = null)
    {
        if (tags.Length == 0 && extraName is null)
        {
            return;
        }

        text.Append('{');
        var first = true;
        foreach (var tag in tags)
        {
            if (!first)
            {
                text.Append(',');
            }

            first = false;
            AppendLabelName(text, tag.Key);
            text.Append("=\"");
            AppendLabelValue(text, Convert.ToString(tag.Value, CultureInfo.InvariantCulture) ?? string.Empty);
            text.Append('"');
        }

        if (extraName is not null)
        {
            if (!first)
            {
                text.Append(',');
            }

            text.Append(extraName).Append("=\"").Append(extraValue).Append('"');
        }

        text.Append('}');
    }

    private static void AppendLabelName(StringBuilder text, string name)
    {
        for (var i = 0; i < name.Length; i++)
        {
            var c = name[i];
            text.Append(char.IsAsciiLetter(c) || c == '_' || (i > 0 && char.IsAsciiDigit(c)) ? c : '_');
        }
    }

    private static void AppendLabelValue(StringBuilder text, string value)
    {
        foreach (var c in value)
        {
            switch (c)
            {
                case '\\': text.Append("\\\\"); break;
                case '"': text.Append("\\\""); break;
                case '\n': text.Append("\\n"); break;
                default: text.Append(c); break;
            }
        }
    }

    internal static string FormatValue(double value) => value switch
    {
        double.PositiveInfinity => "+Inf",
        double.NegativeInfinity => "-Inf",
        double.NaN => "NaN",
        _ => value.ToString("R", CultureInfo.InvariantCulture),
    };

    internal static double[] BucketsFor(Instrument instrument)
    {
        var advised = instrument switch
        {
            Histogram<double> h => h.Advice?.HistogramBucketBoundaries?.ToArray(),
            Histogram<long> h => h.Advice?.HistogramBucketBoundaries?.Select(b => (double)b).ToArray(),
            Histogram<int> h => h.Advice?.HistogramBucketBoundaries?.Select(b => (double)b).ToArray(),
            _ => null,
        };
        return advised ?? (instrument.Unit == "s" ? DefaultSecondsBuckets : DefaultBuckets);
    }
}
