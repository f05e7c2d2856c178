using Infra.Core.Hosting;
using Infra.Core.Networking;
using Infra.ShardRouter;

// The MessagePack API and the connections to the data nodes run on Infra.Core's epoll engine, so a
// keyed request goes from the client's socket to the node's and back on one thread with no hop
// (NativeApi, NodeConnections; bench/RESULTS.md). INFRA_SOCKET_ENGINE=dotnet goes back to .NET's
// engine. It must be set before the first socket exists; an explicit setting wins.
if (Environment.GetEnvironmentVariable(SocketConnection.EngineVariable) is null)
{
    Environment.SetEnvironmentVariable(SocketConnection.EngineVariable, "epoll");
}

return await ServiceHost.RunAsync(args, RouterCommandLine.Definition, builder => builder.Services.AddShardRouter());
