using Infra.Core.Hosting;
using Infra.QueueBroker;

// Socket completions run on the epoll threads: a produce is parsed and appended right where its bytes
// arrive, without a hop to the thread pool (the append only copies into the partition's buffer; the
// wait for the fsync is asynchronous). An explicit setting wins.
if (Environment.GetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS") is null)
{
    Environment.SetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS", "1");
}

return await ServiceHost.RunAsync(args, BrokerCommandLine.Definition, builder => builder.Services.AddQueueBroker());
