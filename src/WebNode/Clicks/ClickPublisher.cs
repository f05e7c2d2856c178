using System.Threading.Channels;
using Infra.Client.Queue;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Infra.WebNode.Clicks;

/// <summary>
/// Hands click events to the queue without ever holding up a redirect: <see cref="TryPublish"/>
/// puts the event in a bounded local buffer (or drops it, counted, when the buffer is full) and
/// returns; a background loop sends what is buffered through an idempotent batching producer.
/// While the broker is down, events wait: a send that fails keeps its events and tries them again
/// (with back-off) before it takes more from the buffer, so the buffer fills and only what does not
/// fit is dropped (<c>infra_web_clicks_dropped{reason="buffer_full"}</c>). A retried event may reach
/// the queue twice (its first try's answer lost); the worker counts each event id once. On shutdown
/// what is held and buffered gets one last send; what that does not deliver is counted as
/// <c>reason="shutdown"</c>. Redirects never wait on the queue.
/// </summary>
internal sealed partial class ClickPublisher(WebOptions options, WebMetrics metrics, TimeProvider time, ILogger<ClickPublisher> logger) : BackgroundService
{
    private const int MaxInFlight = 2048;
    private static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(2);
    private readonly Channel<ClickEvent> _buffer = Channel.CreateBounded<ClickEvent>(new BoundedChannelOptions(options.ClickBuffer)
    {
        FullMode = BoundedChannelFullMode.Wait,
        SingleReader = true,
    });

    private volatile QueueProducer? _producer;
    private int _held;

    public bool IsConnected => _producer is not null;

    /// <summary>Events waiting: in the buffer, and held for another try after a failed send.</summary>
    public int Buffered => _buffer.Reader.Count + Volatile.Read(ref _held);

    public void TryPublish(string code)
    {
        var click = new ClickEvent(Guid.NewGuid().ToString("N"), code, time.GetUtcNow().ToUnixTimeMilliseconds());
        if (!_buffer.Writer.TryWrite(click))
        {
            metrics.ClicksDropped.Add(1, new KeyValuePair<string, object?>("reason", "buffer_full"));
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var (host, port) = options.QueueHostPort;
        var held = new List<ClickEvent>();
        var backoff = TimeSpan.FromMilliseconds(100);
        try
        {
            while (held.Count > 0 || await _buffer.Reader.WaitToReadAsync(stoppingToken))
            {
                var producer = _producer ??= await ConnectAsync(host, port, stoppingToken);
                Take(held);
                held = await SendAllAsync(producer, held);
                Volatile.Write(ref _held, held.Count);
                if (held.Count > 0)
                {
                    // Not "published" and not "dropped": they wait here while the broker is away.
                    LogPublishFailed(logger, held.Count, backoff.TotalMilliseconds);
                    await Task.Delay(backoff, time, stoppingToken);
                    backoff = TimeSpan.FromMilliseconds(Math.Min(backoff.TotalMilliseconds * 2, MaxBackoff.TotalMilliseconds));
                }
                else
                {
                    backoff = TimeSpan.FromMilliseconds(100);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Stopping: below, one last try for what is held and buffered.
        }
        finally
        {
            await FlushOnStopAsync(held);
        }
    }

    /// <summary>Adds buffered events to <paramref name="batch"/> up to <see cref="MaxInFlight"/>.</summary>
    private void Take(List<ClickEvent> batch)
    {
        while (batch.Count < MaxInFlight && _buffer.Reader.TryRead(out var click))
        {
            batch.Add(click);
        }
    }

    /// <summary>Sends every event (the producer batches them); returns those that failed, in order.</summary>
    private async Task<List<ClickEvent>> SendAllAsync(QueueProducer producer, List<ClickEvent> batch)
    {
        var sends = new Task<bool>[batch.Count];
        for (var i = 0; i < batch.Count; i++)
        {
            sends[i] = SendAsync(producer, batch[i]);
        }

        await Task.WhenAll(sends);
        var failed = new List<ClickEvent>();
        for (var i = 0; i < batch.Count; i++)
        {
            if (!sends[i].Result)
            {
                failed.Add(batch[i]);
            }
        }

        return failed;
    }

    private async Task<bool> SendAsync(QueueProducer producer, ClickEvent click)
    {
        try
        {
            await producer.SendAsync(click.ToJson(), System.Text.Encoding.UTF8.GetBytes(click.Code));
            metrics.ClicksPublished.Add(1);
            return true;
        }
        catch (Exception ex) when (ex is QueueException or IOException or System.Net.Sockets.SocketException or ObjectDisposedException)
        {
            return false;
        }
    }

    /// <summary>On shutdown: one more send (bounded by the producer's retry window) of what is left; the rest is counted.</summary>
    private async Task FlushOnStopAsync(List<ClickEvent> held)
    {
        Take(held);
        var dropped = 0;
        while (held.Count > 0)
        {
            var failed = _producer is { } producer ? await SendAllAsync(producer, held) : held;
            held = [];
            Take(held);
            if (failed.Count > 0)
            {
                // The broker is not taking them: the rest is not tried (each try can take the retry window).
                dropped += failed.Count + held.Count;
                while (_buffer.Reader.TryRead(out _))
                {
                    dropped++;
                }

                break;
            }
        }

        if (dropped > 0)
        {
            metrics.ClicksDropped.Add(dropped, new KeyValuePair<string, object?>("reason", "shutdown"));
            LogDroppedOnStop(logger, dropped);
        }

        Volatile.Write(ref _held, 0);
        if (_producer is { } open)
        {
            await open.DisposeAsync();
        }
    }

    private async Task<QueueProducer> ConnectAsync(string host, int port, CancellationToken cancellationToken)
    {
        var delay = TimeSpan.FromMilliseconds(100);
        while (true)
        {
            try
            {
                return await QueueProducer.CreateAsync(host, port, options.ClickTopic, new QueueProducerOptions { RetryFor = TimeSpan.FromSeconds(5) });
            }
            catch (Exception ex) when (ex is QueueException or IOException or System.Net.Sockets.SocketException)
            {
                LogConnectFailed(logger, options.Queue, ex.Message);
                await Task.Delay(delay, time, cancellationToken);
                delay = TimeSpan.FromMilliseconds(Math.Min(delay.TotalMilliseconds * 2, 2000));
            }
        }
    }

    [LoggerMessage(EventId = 710, Level = LogLevel.Warning, Message = "{Count} click events could not be published; they are held and tried again in {DelayMs} ms")]
    private static partial void LogPublishFailed(ILogger logger, int count, double delayMs);

    [LoggerMessage(EventId = 712, Level = LogLevel.Warning, Message = "Stopping: {Count} click events could not be published and are dropped")]
    private static partial void LogDroppedOnStop(ILogger logger, int count);

    [LoggerMessage(EventId = 711, Level = LogLevel.Warning, Message = "The queue broker at {Queue} cannot be reached; clicks wait in the buffer: {Reason}")]
    private static partial void LogConnectFailed(ILogger logger, string queue, string reason);
}
