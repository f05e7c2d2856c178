using Infra.Core.Hosting;
using Infra.DataNode;

return await ServiceHost.RunAsync(args, NodeCommandLine.Definition, builder => builder.Services.AddDataNode());
