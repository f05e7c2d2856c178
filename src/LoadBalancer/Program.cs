using Infra.Core.Hosting;
using Infra.LoadBalancer;

return await ServiceHost.RunAsync(args, LoadBalancerCommandLine.Definition, builder => builder.Services.AddLoadBalancer());
