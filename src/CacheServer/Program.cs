using Infra.CacheServer;
using Infra.Core.Hosting;
using Infra.Core.Networking;

// Client connections run on Infra.Core's own epoll engine: a wait costs no recv(2) that says EAGAIN
// and completions run inline on the epoll threads. Measured side by side (bench/RESULTS.md): about
// 5% more at redis-benchmark -P 16, the same at -P 1. INFRA_SOCKET_ENGINE=dotnet goes back to .NET's
// engine. Completions of .NET's engine (accepts, the admin port, INFRA_SOCKET_ENGINE=dotnet) run
// inline on its epoll threads too: commands are short and never block. On 2 cores,
// DOTNET_SYSTEM_NET_SOCKETS_THREAD_COUNT=1 cost less CPU per command at -P 1 but lost 40% at -P 16.
// Both must be set before the first socket exists; an explicit setting wins.
if (Environment.GetEnvironmentVariable(SocketConnection.EngineVariable) is null)
{
    Environment.SetEnvironmentVariable(SocketConnection.EngineVariable, "epoll");
}

if (Environment.GetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS") is null)
{
    Environment.SetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS", "1");
}

return await ServiceHost.RunAsync(args, CacheCommandLine.Definition, builder => builder.Services.AddCacheServer());
