using System.Globalization;

namespace Infra.Cli;

/// <summary>Reads one figure out of a Prometheus text page.</summary>
internal static class Metrics
{
    /// <summary>The sum of every series of <paramref name="name"/> (or <c>name_total</c>) over its labels; null when absent.</summary>
    public static double? Sum(string page, string name)
    {
        double? sum = null;
        foreach (var raw in page.AsSpan().EnumerateLines())
        {
            var line = raw.Trim();
            if (line.IsEmpty || line[0] == '#')
            {
                continue;
            }

            var end = line.IndexOfAny('{', ' ');
            if (end <= 0)
            {
                continue;
            }

            var series = line[..end];
            if (!series.SequenceEqual(name) && !(series.StartsWith(name) && series[name.Length..].SequenceEqual("_total")))
            {
                continue;
            }

            var rest = line[end..];
            if (rest[0] == '{')
            {
                var close = rest.LastIndexOf('}');
                if (close < 0)
                {
                    continue;
                }

                rest = rest[(close + 1)..];
            }

            rest = rest.Trim();
            var space = rest.IndexOf(' ');
            if (double.TryParse(space < 0 ? rest : rest[..space], NumberStyles.Float, CultureInfo.InvariantCulture, out var value))
            {
                sum = (sum ?? 0) + value;
            }
        }

        return sum;
    }
}
