using Infra.CacheServer;
using Infra.Core.Hosting;

// Socket completions run on the epoll threads (commands are short and never block): less CPU per
// command than a hop to the thread pool. Must be set before the first socket; an explicit setting wins.
if (Environment.GetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS") is null)
{
    Environment.SetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS", "1");
}

return await ServiceHost.RunAsync(args, CacheCommandLine.Definition, builder => builder.Services.AddCacheServer());
