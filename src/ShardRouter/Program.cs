using Infra.Core.Hosting;
using Infra.Core.Networking;
using Infra.ShardRouter;

// A keyed request goes from the client's socket to the node's and back with no hop to the thread pool
// (bench/RESULTS.md): the MessagePack API and the connections to the data nodes on Infra.Core's epoll
// engine (NativeApi, NodeConnections), the HTTP API on .NET's socket engine with its completions inline
// (HttpApi.InlinePaths). INFRA_SOCKET_ENGINE=dotnet and DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=0
// go back. Both must be set before the first socket exists; an explicit setting wins.
SocketConnection.PreferInlineCompletions();

return await ServiceHost.RunAsync(args, RouterCommandLine.Definition, builder => builder.Services.AddShardRouter());
