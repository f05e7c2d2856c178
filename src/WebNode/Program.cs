using Infra.Core.Hosting;
using Infra.WebNode;

return await ServiceHost.RunAsync(args, WebCommandLine.Definition, builder => builder.Services.AddWebNode());
