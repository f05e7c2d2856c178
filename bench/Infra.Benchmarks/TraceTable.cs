using System.Globalization;
using Infra.CacheServer.Eviction;
using Infra.Testing;

namespace Infra.Benchmarks;

/// <summary>
/// <c>dotnet run -c Release --project bench/Infra.Benchmarks -- traces [key=value ...]</c>: replays the
/// shared traces against every eviction policy and prints miss ratios beside the reference table.
/// Adaptive-policy settings can be overridden (e.g. <c>StepShare=0.1</c>) to explore.
/// </summary>
internal static class TraceTable
{
    public static int Run(string[] args)
    {
        var settings = AdaptiveSettings.Default;
        var only = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var arg in args)
        {
            var parts = arg.Split('=', 2);
            if (parts.Length == 1)
            {
                only.Add(arg);
                continue;
            }

            var value = double.Parse(parts[1], CultureInfo.InvariantCulture);
            settings = parts[0] switch
            {
                "InitialWindowShare" => settings with { InitialWindowShare = value },
                "ProtectedShare" => settings with { ProtectedShare = value },
                "AdmitMargin" => settings with { AdmitMargin = (int)value },
                "ShadowEntries" => settings with { ShadowEntries = (int)value },
                "DecisionPeriodPerEntry" => settings with { DecisionPeriodPerEntry = value },
                "SwitchMargin" => settings with { SwitchMargin = value },
                "Fixed" => settings with { CandidateWindowShares = [], InitialWindowShare = value },
                _ => throw new ArgumentException($"unknown setting {parts[0]}"),
            };
        }

        Console.WriteLine($"{"trace",-12} {"size",7} {"LRU",7} {"FIFO",7} {"LFU",7} {"adapt",7} {"best",7} {"gap",7}");
        var fails = 0;
        var worst = 0.0;
        foreach (var (trace, size, reference) in CacheTraces.ReferenceTable())
        {
            if (only.Count > 0 && !only.Contains(trace))
            {
                continue;
            }

            var keys = CacheTraces.Load(trace);
            var lru = PolicySimulator.MissRatio(EvictionPolicyKind.AllKeysLru, keys, size);
            var fifo = PolicySimulator.MissRatio(EvictionPolicyKind.Fifo, keys, size);
            var lfu = PolicySimulator.MissRatio(EvictionPolicyKind.AllKeysLfu, keys, size);
            var adaptive = PolicySimulator.MissRatio(EvictionPolicyKind.AllKeysAdaptive, keys, size, settings);
            var best = reference.Values.Min();
            var gap = Math.Round(adaptive - best, 4) + 0.0; // + 0.0: no "-0.0000"
            worst = Math.Max(worst, gap);
            fails += gap > 0.02 ? 1 : 0;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{trace,-12} {size,7} {lru,7:0.0000} {fifo,7:0.0000} {lfu,7:0.0000} {adaptive,7:0.0000} {best,7:0.0000} {gap,7:+0.0000;-0.0000;+0.0000}{(gap > 0.02 ? "  <-- over 0.02" : "")}"));
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"rows over 0.02: {fails}; worst gap {worst:+0.0000}"));
        return 0;
    }
}
