using Infra.Client.Queue;
using Infra.Core.Admin;
using Infra.WebNode.Links;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Infra.WebNode.Backends;

/// <summary>
/// Brings the node's dependencies up and watches them. At start it applies the schema through the
/// router (IF NOT EXISTS, so every node may) and makes sure the click topic exists, retrying until
/// both worked; only then is the node ready. Afterwards it probes the router once a second.
/// Readiness then follows the choice that the site should degrade rather than vanish: a web node
/// stays ready while it can serve redirects at all (the router answers, or a cache server does),
/// because one missing dependency taking every web node out of the load balancer would turn a
/// partial outage into a total one. A worker is ready while the router answers.
/// </summary>
internal sealed partial class Dependencies(WebOptions options, Database db, Cache? cache, TimeProvider time, ILogger<Dependencies> logger)
    : BackgroundService, IReadinessCheck
{
    private volatile bool _initialized;
    private volatile bool _routerUp;

    public bool RouterUp => _routerUp;

    public string? NotReadyReason
    {
        get
        {
            if (!_initialized)
            {
                return "waiting for the shard router (schema) and the queue broker (click topic)";
            }

            if (options.Role == WebRole.Worker)
            {
                return _routerUp ? null : "the shard router does not answer";
            }

            return _routerUp || (cache?.NodesUp ?? 0) > 0 ? null : "neither the shard router nor any cache server answers";
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var delay = TimeSpan.FromMilliseconds(100);
        while (!_initialized)
        {
            try
            {
                var shards = await InitializeAsync();
                _initialized = true;
                _routerUp = true;
                LogReady(logger, options.Role.ToString().ToLowerInvariant(), shards);
            }
            catch (Exception ex) when (ex is DataUnavailableException or Client.Data.DataException or QueueException or IOException or System.Net.Sockets.SocketException or TimeoutException)
            {
                LogWaiting(logger, ex.Message);
                await Task.Delay(delay, time, stoppingToken);
                delay = TimeSpan.FromMilliseconds(Math.Min(delay.TotalMilliseconds * 2, 2000));
            }
        }

        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1), time);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try
            {
                await db.PingAsync();
                _routerUp = true;
            }
            catch (DataUnavailableException)
            {
                _routerUp = false;
            }
        }
    }

    /// <summary>Applies the schema and creates the click topic; the number of shards.</summary>
    private async Task<int> InitializeAsync()
    {
        var outcomes = await db.SchemaAsync(Schema.Statements, Schema.Tables);
        var failed = outcomes.Where(o => o.TryGetValue("error", out var error) && error is not null).ToList();
        if (failed.Count > 0 || outcomes.Count == 0)
        {
            throw new DataUnavailableException($"the schema did not apply on every shard ({failed.Count} of {outcomes.Count} failed)");
        }

        var (host, port) = options.QueueHostPort;
        await using var queue = await QueueClient.ConnectAsync(host, port).WaitAsync(options.RequestTimeout, time);
        await queue.CreateTopicAsync(options.ClickTopic, options.ClickPartitions).WaitAsync(options.RequestTimeout, time);
        return outcomes.Count;
    }

    [LoggerMessage(EventId = 740, Level = LogLevel.Information, Message = "Ready as {Role}: schema applied on {Shards} shards, click topic in place")]
    private static partial void LogReady(ILogger logger, string role, int shards);

    [LoggerMessage(EventId = 741, Level = LogLevel.Warning, Message = "Waiting for dependencies: {Reason}")]
    private static partial void LogWaiting(ILogger logger, string reason);
}
