using BenchmarkDotNet.Running;

BenchmarkSwitcher.FromAssembly(typeof(Infra.Benchmarks.HttpParserBenchmarks).Assembly).Run(args);
