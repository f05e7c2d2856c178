using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using Infra.WebNode.Clicks;
using Microsoft.Extensions.Logging;

namespace Infra.WebNode.Tests;

public sealed class ClickPublisherTests
{
    private sealed class TestMeterFactory : IMeterFactory
    {
        private readonly List<Meter> _meters = [];

        public Meter Create(MeterOptions options)
        {
            var meter = new Meter(options);
            _meters.Add(meter);
            return meter;
        }

        public void Dispose()
        {
            foreach (var meter in _meters)
            {
                meter.Dispose();
            }
        }
    }

    private sealed class RecordingLogger<T> : ILogger<T>
    {
        private int _count;

        public int Count => Volatile.Read(ref _count);

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Interlocked.Increment(ref _count);
    }

    [Fact]
    public async Task Clicks_still_buffered_when_the_node_stops_with_the_queue_away_are_counted_as_dropped()
    {
        // They were thrown away with the process, neither published nor counted.
        using var closed = new TcpListener(IPAddress.Loopback, 0);
        closed.Start();
        var port = ((IPEndPoint)closed.LocalEndpoint).Port;
        closed.Stop(); // nothing listens there now

        using var factory = new TestMeterFactory();
        var metrics = new WebMetrics(factory);
        var dropped = new Dictionary<string, long>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter == metrics.Meter && instrument.Name == "infra.web.clicks_dropped")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            var reason = tags.ToArray().Single(t => t.Key == "reason").Value as string ?? "";
            lock (dropped)
            {
                dropped[reason] = dropped.GetValueOrDefault(reason) + value;
            }
        });
        listener.Start();

        var logger = new RecordingLogger<ClickPublisher>();
        var publisher = new ClickPublisher(new WebOptions { Queue = $"127.0.0.1:{port}" }, metrics, TimeProvider.System, logger);
        for (var i = 0; i < 50; i++)
        {
            publisher.TryPublish("Ab3");
        }

        await publisher.StartAsync(default);
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (logger.Count == 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(10); // until it has tried the broker
        }

        Assert.Equal(50, publisher.Buffered);
        await publisher.StopAsync(default);
        listener.RecordObservableInstruments();
        lock (dropped)
        {
            Assert.Equal(50, dropped.GetValueOrDefault("shutdown"));
            Assert.Equal(["shutdown"], dropped.Keys);
        }

        Assert.Equal(0, publisher.Buffered);
        publisher.Dispose();
    }
}
