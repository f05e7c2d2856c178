using Infra.Client.Data;
using Infra.Client.Queue;
using Infra.WebNode.Backends;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Infra.WebNode.Clicks;

/// <summary>
/// <c>--role worker</c>: takes click events from the queue (queue mode, one consumer group shared by
/// every worker), groups them by link, and applies each link's events in one transaction on the
/// link's shard: per event, the link's count goes up only if the event's id is not yet in
/// <c>clicks</c>, and the id is recorded. Events are acked only after that transaction committed,
/// so a worker killed mid-batch leaves its events to be delivered again, and counting them again
/// changes nothing.
/// </summary>
internal sealed partial class ClickWorker(WebOptions options, Database db, WebMetrics metrics, TimeProvider time, ILogger<ClickWorker> logger) : BackgroundService
{
    /// <summary>Events per write: two statements each, under the router's 1000-statement limit.</summary>
    public const int EventsPerWrite = 400;

    private readonly Reconnecting<QueueClient> _queue = new(
        "the queue broker",
        cancel =>
        {
            var (host, port) = options.QueueHostPort;
            return QueueClient.ConnectAsync(host, port, cancel);
        },
        client => client.IsConnected,
        TimeSpan.FromSeconds(1),
        TimeSpan.FromMilliseconds(500),
        time);

    public bool IsConnected => _queue.IsConnected;

    /// <summary>The statements that count <paramref name="events"/> (all of one link) exactly once each.</summary>
    public static List<object?[]> CountStatements(IEnumerable<ClickEvent> events)
    {
        var statements = new List<object?[]>();
        foreach (var click in events)
        {
            statements.Add(["UPDATE links SET clicks = clicks + 1 WHERE code = ? AND NOT EXISTS (SELECT 1 FROM clicks WHERE id = ?)", click.Code, click.Id]);
            statements.Add(["INSERT OR IGNORE INTO clicks(id, code, at) VALUES (?, ?, ?)", click.Id, click.Code, click.At]);
        }

        return statements;
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        await Task.Yield();
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                var queue = await _queue.GetAsync(stoppingToken);
                var deliveries = await queue.QueueFetchAsync(options.ClickTopic, options.WorkerGroup, options.WorkerBatch, TimeSpan.FromSeconds(1));
                if (deliveries.Count > 0 && await HandleAsync(queue, deliveries))
                {
                    await UntilRouterAnswersAsync(stoppingToken);
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (ex is BackendDownException or QueueException or IOException or ObjectDisposedException)
            {
                LogQueueFailed(logger, ex.Message);
                await Task.Delay(TimeSpan.FromMilliseconds(500), time, stoppingToken).ContinueWith(_ => { }, TaskScheduler.Default);
            }
        }
    }

    /// <summary>
    /// While the shard router does not answer at all, fetching more would only spend the events' deliveries
    /// (each fetch is one; the last moves them to the dead-letter topic): with the router down for longer
    /// than the nack back-off, every click of the outage was dead-lettered and never counted. The worker
    /// waits here instead, with back-off, until a ping gets through.
    /// </summary>
    private async Task UntilRouterAnswersAsync(CancellationToken stoppingToken)
    {
        var delay = TimeSpan.FromMilliseconds(250);
        while (true)
        {
            try
            {
                await db.PingAsync();
                return;
            }
            catch (DataUnavailableException ex)
            {
                LogRouterDown(logger, ex.Message, delay.TotalMilliseconds);
            }

            await Task.Delay(delay, time, stoppingToken);
            delay = TimeSpan.FromMilliseconds(Math.Min(delay.TotalMilliseconds * 2, 5000));
        }
    }

    /// <summary>Counts and acks what it can, nacks the rest; true when the router could not be reached.</summary>
    private async Task<bool> HandleAsync(QueueClient queue, List<QueueDelivery> deliveries)
    {
        var routerDown = false;
        var done = new List<string>();
        var byLink = new Dictionary<string, List<(QueueDelivery Delivery, ClickEvent Click)>>(StringComparer.Ordinal);
        foreach (var delivery in deliveries)
        {
            if (ClickEvent.TryParse(delivery.Message.Payload, out var problem) is { } click)
            {
                if (!byLink.TryGetValue(click.Code, out var list))
                {
                    byLink[click.Code] = list = [];
                }

                list.Add((delivery, click));
            }
            else
            {
                // Not an event this code made: retrying cannot help; ack it and count it.
                LogMalformed(logger, delivery.DeliveryId, problem ?? "");
                metrics.ClickEventsHandled.Add(1, new KeyValuePair<string, object?>("outcome", "malformed"));
                done.Add(delivery.DeliveryId);
            }
        }

        var failed = new List<QueueDelivery>();
        await Parallel.ForEachAsync(byLink, new ParallelOptions { MaxDegreeOfParallelism = 16 }, async (link, _) =>
        {
            foreach (var chunk in link.Value.Chunk(EventsPerWrite))
            {
                try
                {
                    var write = await db.ExecuteAsync(link.Key, CountStatements(chunk.Select(c => c.Click)));
                    var counted = write.Results.Where((r, i) => i % 2 == 0 && r.RowsAffected > 0).Count();
                    metrics.ClicksCounted.Add(counted);
                    lock (done)
                    {
                        done.AddRange(chunk.Select(c => c.Delivery.DeliveryId));
                    }
                }
                catch (Exception ex) when (ex is DataUnavailableException or DataException)
                {
                    LogWriteFailed(logger, link.Key, ex.Message);
                    if (ex.InnerException is BackendDownException or TimeoutException || ex.InnerException is DataException { Code: "ConnectionLost" })
                    {
                        Volatile.Write(ref routerDown, true);
                    }

                    lock (failed)
                    {
                        failed.AddRange(chunk.Select(c => c.Delivery));
                    }
                }
            }
        });

        if (done.Count > 0)
        {
            await queue.AckAsync(options.ClickTopic, options.WorkerGroup, done);
            metrics.ClickEventsHandled.Add(done.Count, new KeyValuePair<string, object?>("outcome", "acked"));
        }

        if (failed.Count > 0)
        {
            // Back to the queue after a pause that doubles with each delivery (2, 4, 8, 16… s, at most
            // 30 s), so a shard that is failing over or waiting for a replica has half a minute before the
            // broker's default --max-deliveries (5) moves the events to the dead-letter topic. (A router that
            // does not answer at all stops the fetching instead, see UntilRouterAnswersAsync.)
            await queue.NackAsync(options.ClickTopic, options.WorkerGroup, failed.Select(d => d.DeliveryId), NackDelay(failed.Max(d => d.DeliveryCount)));
            metrics.ClickEventsHandled.Add(failed.Count, new KeyValuePair<string, object?>("outcome", "retried"));
        }

        return routerDown;
    }

    public static TimeSpan NackDelay(int deliveryCount) => TimeSpan.FromSeconds(Math.Min(30, Math.Pow(2, Math.Clamp(deliveryCount, 1, 16))));

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);
        await _queue.DisposeAsync();
    }

    [LoggerMessage(EventId = 720, Level = LogLevel.Warning, Message = "Click worker: the queue failed: {Reason}")]
    private static partial void LogQueueFailed(ILogger logger, string reason);

    [LoggerMessage(EventId = 721, Level = LogLevel.Warning, Message = "Click worker: delivery {DeliveryId} is not a click event ({Problem}); acked and dropped")]
    private static partial void LogMalformed(ILogger logger, string deliveryId, string problem);

    [LoggerMessage(EventId = 723, Level = LogLevel.Warning, Message = "Click worker: the shard router does not answer ({Reason}); no more events are taken until it does (next try in {DelayMs} ms)")]
    private static partial void LogRouterDown(ILogger logger, string reason, double delayMs);

    [LoggerMessage(EventId = 722, Level = LogLevel.Warning, Message = "Click worker: counting clicks of {Code} failed; they come back: {Reason}")]
    private static partial void LogWriteFailed(ILogger logger, string code, string reason);
}
