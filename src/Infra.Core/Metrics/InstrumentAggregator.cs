using System.Diagnostics.Metrics;
using System.Text;

namespace Infra.Core.Metrics;

/// <summary>Aggregates the measurements of one instrument, one series per distinct tag set.</summary>
internal abstract class InstrumentAggregator
{
    private readonly Lock _addLock = new();
    private Series[] _series = [];

    protected InstrumentAggregator(Instrument instrument)
    {
        MetricName = PrometheusMetrics.MetricName(instrument, out var type);
        PrometheusType = type;
        Description = instrument.Description;
    }

    public string MetricName { get; }

    public string PrometheusType { get; }

    public string? Description { get; }

    /// <summary>Observable instruments report afresh on every scrape; series not reported are dropped.</summary>
    protected int Generation { get; private set; }

    public static InstrumentAggregator? Create(Instrument instrument)
    {
        var type = instrument.GetType();
        if (!type.IsGenericType)
        {
            return null;
        }

        var generic = type.GetGenericTypeDefinition();
        if (generic == typeof(Counter<>) || generic == typeof(UpDownCounter<>))
        {
            return new SumAggregator(instrument);
        }

        if (generic == typeof(Histogram<>))
        {
            return new HistogramAggregator(instrument, PrometheusMetrics.BucketsFor(instrument));
        }

        if (generic == typeof(Gauge<>) || instrument.IsObservable)
        {
            return new LastValueAggregator(instrument, observable: instrument.IsObservable);
        }

        return null;
    }

    public void BeginObservation() => Generation++;

    public abstract void Record(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags);

    public void WriteSeries(StringBuilder text)
    {
        foreach (var series in Volatile.Read(ref _series))
        {
            Write(text, series);
        }
    }

    protected abstract Series NewSeries(KeyValuePair<string, object?>[] tags);

    protected abstract void Write(StringBuilder text, Series series);

    protected Series Find(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var all = Volatile.Read(ref _series);
        foreach (var series in all)
        {
            if (series.Matches(tags))
            {
                return series;
            }
        }

        lock (_addLock)
        {
            foreach (var series in _series)
            {
                if (series.Matches(tags))
                {
                    return series;
                }
            }

            var sorted = tags.ToArray();
            Array.Sort(sorted, static (a, b) => string.CompareOrdinal(a.Key, b.Key));
            var added = NewSeries(sorted);
            Volatile.Write(ref _series, [.. _series, added]);
            return added;
        }
    }

    internal abstract class Series(KeyValuePair<string, object?>[] tags)
    {
        public KeyValuePair<string, object?>[] Tags { get; } = tags;

        public bool Matches(ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            if (tags.Length != Tags.Length)
            {
                return false;
            }

            foreach (var tag in tags)
            {
                var found = false;
                foreach (var own in Tags)
                {
                    if (string.Equals(own.Key, tag.Key, StringComparison.Ordinal) && Equals(own.Value, tag.Value))
                    {
                        found = true;
                        break;
                    }
                }

                if (!found)
                {
                    return false;
                }
            }

            return true;
        }
    }

    internal static void AddDouble(ref double target, double value)
    {
        var current = Volatile.Read(ref target);
        while (true)
        {
            var seen = Interlocked.CompareExchange(ref target, current + value, current);
            if (seen.Equals(current))
            {
                return;
            }

            current = seen;
        }
    }

    private sealed class SumAggregator(Instrument instrument) : InstrumentAggregator(instrument)
    {
        public override void Record(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags) =>
            AddDouble(ref ((SumSeries)Find(tags)).Value, value);

        protected override Series NewSeries(KeyValuePair<string, object?>[] tags) => new SumSeries(tags);

        protected override void Write(StringBuilder text, Series series)
        {
            text.Append(MetricName);
            PrometheusMetrics.AppendLabels(text, series.Tags);
            text.Append(' ').Append(PrometheusMetrics.FormatValue(Volatile.Read(ref ((SumSeries)series).Value))).Append('\n');
        }

        private sealed class SumSeries(KeyValuePair<string, object?>[] tags) : Series(tags)
        {
            public double Value;
        }
    }

    private sealed class LastValueAggregator(Instrument instrument, bool observable) : InstrumentAggregator(instrument)
    {
        public override void Record(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            var series = (LastValueSeries)Find(tags);
            Volatile.Write(ref series.Value, value);
            series.Generation = Generation;
        }

        protected override Series NewSeries(KeyValuePair<string, object?>[] tags) => new LastValueSeries(tags);

        protected override void Write(StringBuilder text, Series series)
        {
            var last = (LastValueSeries)series;
            if (observable && last.Generation != Generation)
            {
                return;
            }

            text.Append(MetricName);
            PrometheusMetrics.AppendLabels(text, series.Tags);
            text.Append(' ').Append(PrometheusMetrics.FormatValue(Volatile.Read(ref last.Value))).Append('\n');
        }

        private sealed class LastValueSeries(KeyValuePair<string, object?>[] tags) : Series(tags)
        {
            public double Value;
            public int Generation;
        }
    }

    private sealed class HistogramAggregator(Instrument instrument, double[] bounds) : InstrumentAggregator(instrument)
    {
        public override void Record(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            var series = (HistogramSeries)Find(tags);
            var index = Array.BinarySearch(bounds, value);
            if (index < 0)
            {
                index = ~index;
            }

            Interlocked.Increment(ref series.Counts[index]);
            AddDouble(ref series.Sum, value);
        }

        protected override Series NewSeries(KeyValuePair<string, object?>[] tags) => new HistogramSeries(tags, bounds.Length + 1);

        protected override void Write(StringBuilder text, Series series)
        {
            var histogram = (HistogramSeries)series;
            long cumulative = 0;
            for (var i = 0; i <= bounds.Length; i++)
            {
                cumulative += Volatile.Read(ref histogram.Counts[i]);
                text.Append(MetricName).Append("_bucket");
                PrometheusMetrics.AppendLabels(text, series.Tags, "le", i < bounds.Length ? PrometheusMetrics.FormatValue(bounds[i]) : "+Inf");
                text.Append(' ').Append(cumulative).Append('\n');
            }

            text.Append(MetricName).Append("_sum");
            PrometheusMetrics.AppendLabels(text, series.Tags);
            text.Append(' ').Append(PrometheusMetrics.FormatValue(Volatile.Read(ref histogram.Sum))).Append('\n');
            text.Append(MetricName).Append("_count");
            PrometheusMetrics.AppendLabels(text, series.Tags);
            text.Append(' ').Append(cumulative).Append('\n');
        }

        private sealed class HistogramSeries(KeyValuePair<string, object?>[] tags, int buckets) : Series(tags)
        {
            public readonly long[] Counts = new long[buckets];
            public double Sum;
        }
    }
}
