using System.Threading.Channels;
using Infra.Client.Queue;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Infra.WebNode.Clicks;

/// <summary>
/// Hands click events to the queue without ever holding up a redirect: <see cref="TryPublish"/>
/// puts the event in a bounded local buffer (or drops it, counted, when the buffer is full) and
/// returns; a background loop sends what is buffered through an idempotent batching producer.
/// While the broker is down, events wait in the buffer; what does not fit, or what the producer
/// could not deliver within its retry window, is dropped and counted in
/// <c>infra_web_clicks_dropped</c>. Redirects never wait on the queue.
/// </summary>
internal sealed partial class ClickPublisher(WebOptions options, WebMetrics metrics, TimeProvider time, ILogger<ClickPublisher> logger) : BackgroundService
{
    private const int MaxInFlight = 2048;
    private readonly Channel<ClickEvent> _buffer = Channel.CreateBounded<ClickEvent>(new BoundedChannelOptions(options.ClickBuffer)
    {
        FullMode = BoundedChannelFullMode.Wait,
        SingleReader = true,
    });

    private volatile QueueProducer? _producer;

    public bool IsConnected => _producer is not null;

    public int Buffered => _buffer.Reader.Count;

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
        var inFlight = new List<Task>(MaxInFlight);
        try
        {
            while (await _buffer.Reader.WaitToReadAsync(stoppingToken))
            {
                var producer = _producer ??= await ConnectAsync(host, port, stoppingToken);
                inFlight.Clear();
                while (inFlight.Count < MaxInFlight && _buffer.Reader.TryRead(out var click))
                {
                    inFlight.Add(SendAsync(producer, click));
                }

                await Task.WhenAll(inFlight);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Stopping: events still buffered are dropped with the process, as the buffer promises nothing more.
        }
        finally
        {
            if (_producer is { } producer)
            {
                await producer.DisposeAsync();
            }
        }
    }

    private async Task SendAsync(QueueProducer producer, ClickEvent click)
    {
        try
        {
            await producer.SendAsync(click.ToJson(), System.Text.Encoding.UTF8.GetBytes(click.Code));
            metrics.ClicksPublished.Add(1);
        }
        catch (Exception ex) when (ex is QueueException or IOException or System.Net.Sockets.SocketException or ObjectDisposedException)
        {
            metrics.ClicksDropped.Add(1, new KeyValuePair<string, object?>("reason", "publish_failed"));
            LogPublishFailed(logger, ex.Message);
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

    [LoggerMessage(EventId = 710, Level = LogLevel.Debug, Message = "A click event could not be published and is dropped: {Reason}")]
    private static partial void LogPublishFailed(ILogger logger, string reason);

    [LoggerMessage(EventId = 711, Level = LogLevel.Warning, Message = "The queue broker at {Queue} cannot be reached; clicks wait in the buffer: {Reason}")]
    private static partial void LogConnectFailed(ILogger logger, string queue, string reason);
}
