using Infra.Core.Hosting;
using Infra.Core.Networking;
using Infra.LoadBalancer;

// Proxied connections run on Infra.Core's own epoll engine: a wait costs no recv(2) that says
// EAGAIN and completions run inline on the epoll threads (bench/RESULTS.md). INFRA_SOCKET_ENGINE=dotnet
// goes back to .NET's engine. Run socket completions of .NET's engine (accepts, the admin port, and
// everything with INFRA_SOCKET_ENGINE=dotnet) inline on its epoll threads too. Both must be set
// before the first socket exists; an explicit setting wins.
SocketConnection.PreferInlineCompletions();

return await ServiceHost.RunAsync(args, LoadBalancerCommandLine.Definition, builder => builder.Services.AddLoadBalancer());
