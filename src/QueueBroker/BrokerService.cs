using Infra.Core.Admin;
using Infra.Core.Configuration;
using Infra.Core.Hosting;
using Infra.Core.Networking;
using Infra.QueueBroker.Http;
using Infra.QueueBroker.Log;
using Infra.QueueBroker.Protocol;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Infra.QueueBroker;

/// <summary>
/// The native-protocol listener. On SIGTERM it stops accepting, lets requests in flight finish (up to
/// the shutdown timeout), then closes every log: pending appends written and fsync'd, recovery points stored.
/// </summary>
internal sealed partial class BrokerService : IHostedService, IReadinessCheck, IAsyncDisposable
{
    private readonly Broker _broker;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private TcpConnectionListener? _listener;

    public BrokerService(Broker broker, ILoggerFactory loggerFactory)
    {
        _broker = broker;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger<BrokerService>();
    }

    public string? NotReadyReason => _listener is null ? "not listening yet" : null;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var options = _broker.Options;
        var listener = new TcpConnectionListener(options.Listen,
            new BrokerConnectionHandler(_broker, _loggerFactory.CreateLogger<BrokerConnection>()),
            new ListenerOptions { MaxConnections = options.MaxConnections }, _loggerFactory.CreateLogger<TcpConnectionListener>());
        listener.Start();
        _listener = listener;
        ListeningLog.Listening(_logger, OptionValues.ToUrl("tcp", listener.BoundEndPoint));
        var partitions = _broker.Topics.All.Sum(t => t.Partitions.Count);
        var failed = _broker.Topics.All.Sum(t => t.Partitions.Count(p => !p.IsAvailable));
        LogStarted(_logger, Path.GetFullPath(options.DataDir), _broker.Topics.All.Count(), partitions, failed, options.Fsync switch
        {
            FsyncMode.Always => "always",
            FsyncMode.Interval => $"interval:{options.FsyncInterval.TotalMilliseconds}ms",
            _ => "never (unsafe)",
        });
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_listener is not null)
        {
            await _listener.StopAsync(_broker.Options.ShutdownTimeout, cancellationToken);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_listener is not null)
        {
            await _listener.DisposeAsync();
        }

        await _broker.DisposeAsync();
    }

    [LoggerMessage(EventId = 460, Level = LogLevel.Information, Message = "Data in {DataDir}: {Topics} topics, {Partitions} partitions ({Failed} stopped); fsync {Fsync}")]
    private static partial void LogStarted(ILogger logger, string dataDir, int topics, int partitions, int failed, string fsync);
}

internal static class BrokerServiceCollectionExtensions
{
    public static IServiceCollection AddQueueBroker(this IServiceCollection services)
    {
        services.AddServiceOptions<BrokerOptions>();
        services.AddSingleton(sp => sp.GetRequiredService<IOptions<BrokerOptions>>().Value);
        services.AddOptions<HostOptions>().Configure<IOptions<BrokerOptions>>(
            (host, options) => host.ShutdownTimeout = options.Value.ShutdownTimeout + TimeSpan.FromSeconds(10));
        services.AddSingleton<ILogFileSystem>(DiskFileSystem.Instance);
        services.AddSingleton<Broker>();
        services.AddSingleton<BrokerService>();
        services.AddHostedService(sp => sp.GetRequiredService<BrokerService>());
        services.AddSingleton<IReadinessCheck>(sp => sp.GetRequiredService<BrokerService>());
        services.AddSingleton<IAdminRoutes, HttpApi>();
        services.AddAdminEndpoint(sp =>
        {
            var options = sp.GetRequiredService<BrokerOptions>();
            // A message travels over HTTP as the whole body: allow the message size (and JSON bodies of 1 MiB).
            return new AdminEndpointOptions(options.Http, options.AdminToken, Math.Max(options.MaxMessageBytes, 1 << 20));
        });
        return services;
    }
}
