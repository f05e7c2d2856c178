using Infra.Core.Hosting;
using Infra.QueueBroker;

return await ServiceHost.RunAsync(args, BrokerCommandLine.Definition, builder => builder.Services.AddQueueBroker());
