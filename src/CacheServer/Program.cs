using Infra.CacheServer;
using Infra.Core.Hosting;

// Socket completions run on the epoll threads (commands are short and never block): less CPU per
// command than a hop to the thread pool. Must be set before the first socket; an explicit setting wins.
// .NET then runs one socket engine (epoll) thread per core. Measured on 2 cores (bench/RESULTS.md):
// DOTNET_SYSTEM_NET_SOCKETS_THREAD_COUNT=1 costs less CPU per command at redis-benchmark -P 1 (6.3 vs
// 7.3 µs, fewer context switches) but loses 40% at -P 16, and handing big batches from one engine
// thread to the thread pool spent 40% of the time switching threads; so the default stays.
if (Environment.GetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS") is null)
{
    Environment.SetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS", "1");
}

return await ServiceHost.RunAsync(args, CacheCommandLine.Definition, builder => builder.Services.AddCacheServer());
