using Infra.Core.Hosting;
using Infra.Core.Networking;
using Infra.DataNode;

// Cheap requests run on the thread that read them, with no hop to the thread pool (bench/RESULTS.md):
// the MessagePack API on Infra.Core's epoll engine (NativeApi), the HTTP API on .NET's socket engine
// with its completions inline (HttpApi.InlinePaths). INFRA_SOCKET_ENGINE=dotnet and
// DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=0 go back. Both must be set before the first socket
// exists; an explicit setting wins.
SocketConnection.PreferInlineCompletions();

return await ServiceHost.RunAsync(args, NodeCommandLine.Definition, builder => builder.Services.AddDataNode());
