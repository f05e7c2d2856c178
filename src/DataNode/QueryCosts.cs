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
/// At most <see cref="MaxTexts"/> texts are remembered (queries are parameterised, so an application has
/// few); when a new one finds the table full, the table starts over. Texts longer than
/// <see cref="MaxTextLength"/> are never counted, so never cheap.
/// </summary>
internal sealed class QueryCosts
{
    public const int MaxTexts = 4096;
    public const int MaxTextLength = 1024;
    public const int MinSamples = 8;
    public static readonly TimeSpan CheapLimit = TimeSpan.FromMicroseconds(100);

    private static readonly long CheapTicks = (long)(CheapLimit.TotalSeconds * Stopwatch.Frequency);
    private readonly ConcurrentDictionary<string, Cost> _costs = new(StringComparer.Ordinal);
    private int _count;

    public int Count => Volatile.Read(ref _count);

    public bool IsCheap(string sql) =>
        _costs.TryGetValue(sql, out var cost) && Volatile.Read(ref cost.Samples) >= MinSamples && Volatile.Read(ref cost.AverageTicks) <= CheapTicks;

    /// <summary>Adds one run of <paramref name="sql"/> that took <paramref name="ticks"/> (Stopwatch ticks).</summary>
    public void Record(string sql, long ticks)
    {
        if (!_costs.TryGetValue(sql, out var cost))
        {
            if (sql.Length > MaxTextLength)
            {
                return;
            }

            if (Interlocked.Increment(ref _count) > MaxTexts)
            {
                // Full: forget everything (racing adds may be lost with it; they are relearned).
                _costs.Clear();
                Volatile.Write(ref _count, 1);
            }

            cost = new Cost();
            if (!_costs.TryAdd(sql, cost))
            {
                Interlocked.Decrement(ref _count);
                cost = _costs.GetValueOrDefault(sql) ?? cost;
            }
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
