using BenchmarkDotNet.Running;
using Infra.Benchmarks;

if (args.Length > 0 && args[0] == "placement")
{
    return PlacementTable.Run(args[1..]);
}

if (args.Length > 0 && args[0] == "traces")
{
    return TraceTable.Run(args[1..]);
}

BenchmarkSwitcher.FromAssembly(typeof(HttpParserBenchmarks).Assembly).Run(args);
return 0;
