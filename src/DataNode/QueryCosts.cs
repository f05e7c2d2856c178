using System.Collections.Concurrent;
using System.Diagnostics;

namespace Infra.DataNode;

/// <summary>
/// What each query text has cost lately (a moving average of its run time), so the APIs can run
/// the cheap ones — a point read by key takes a few microseconds — on the connection's reading thread
/// instead of paying a thread hop that costs more than the query. A text is cheap after
/// <see cref="MinSamples"/> runs averaging at most <see cref="CheapLimit"/> (each run weighs 1/8); one run of
/// a millisecond or more lifts the average over the limit at once, and the text goes back to the thread
/// pool until it has been fast for a while.
/// Texts are counted up to <see cref="MaxTexts"/>; later ones are never cheap (queries are parameterised,
/// so an application has few texts).
/// </summary>
internal sealed class QueryCosts
{
    public const int MaxTexts = 4096;
    public const int MinSamples = 8;
    public static readonly TimeSpan CheapLimit = TimeSpan.FromMicroseconds(100);

    private static readonly long CheapTicks = (long)(CheapLimit.TotalSeconds * Stopwatch.Frequency);
    private readonly ConcurrentDictionary<string, Cost> _costs = new(StringComparer.Ordinal);

    public int Count => _costs.Count;

    public bool IsCheap(string sql) =>
        _costs.TryGetValue(sql, out var cost) && Volatile.Read(ref cost.Samples) >= MinSamples && Volatile.Read(ref cost.AverageTicks) <= CheapTicks;

    /// <summary>Adds one run of <paramref name="sql"/> that took <paramref name="ticks"/> (Stopwatch ticks).</summary>
    public void Record(string sql, long ticks)
    {
        if (!_costs.TryGetValue(sql, out var cost))
        {
            if (_costs.Count >= MaxTexts)
            {
                return;
            }

            cost = _costs.GetOrAdd(sql, static _ => new Cost());
        }

        // Racing runs may lose a sample; the average stays an average of real runs.
        var samples = Volatile.Read(ref cost.Samples);
        var average = Volatile.Read(ref cost.AverageTicks);
        Volatile.Write(ref cost.AverageTicks, samples == 0 ? ticks : average + ((ticks - average) / 8));
        if (samples < MinSamples)
        {
            Volatile.Write(ref cost.Samples, samples + 1);
        }
    }

    private sealed class Cost
    {
        public long AverageTicks;
        public int Samples;
    }
}
