using Infra.Core.Hosting;
using Infra.ShardRouter;

return await ServiceHost.RunAsync(args, RouterCommandLine.Definition, builder => builder.Services.AddShardRouter());
