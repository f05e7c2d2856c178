using Infra.Core.Hosting;
using Infra.LoadBalancer;

// Run socket completions on the epoll threads instead of handing each one to the thread pool: about
// a quarter less CPU per proxied request (bench/RESULTS.md). Safe because nothing on the proxy's
// path blocks. Must be set before the first socket exists; an explicit setting wins.
if (Environment.GetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS") is null)
{
    Environment.SetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS", "1");
}

return await ServiceHost.RunAsync(args, LoadBalancerCommandLine.Definition, builder => builder.Services.AddLoadBalancer());
