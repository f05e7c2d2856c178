// Load generator for bench/compare/queue.sh. The same workload against our broker (Infra.Client) or
// NATS JetStream (NATS.Net): N concurrent producers, each with one acknowledged 100-byte produce in
// flight at a time, for S seconds; then end-to-end latency (a consumer reading while producers write)
// and consume throughput (read back everything written). Prints one line "key=value ..." per phase.
// --target ours-batch: the same producers send through Infra.Client's batching producer (QueueProducer,
// one per connection; queue.sh uses one), which puts every message queued while its last batch is in
// flight into the next produce request, as a Kafka producer shared by threads does; each message is
// still acknowledged to its producer only after the broker's fsync.
using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using Infra.Client.Queue;
using NATS.Client.Core;
using NATS.Client.JetStream;
using NATS.Client.JetStream.Models;

var options = args.Select((a, i) => (a, i)).Where(p => p.a.StartsWith("--", StringComparison.Ordinal))
    .ToDictionary(p => p.a[2..], p => p.i + 1 < args.Length && !args[p.i + 1].StartsWith("--", StringComparison.Ordinal) ? args[p.i + 1] : "true");
var target = options.GetValueOrDefault("target", "ours");
var host = options.GetValueOrDefault("host", "127.0.0.1");
var port = int.Parse(options.GetValueOrDefault("port", target == "nats" ? "4222" : "7400"), CultureInfo.InvariantCulture);
var producers = int.Parse(options.GetValueOrDefault("producers", "64"), CultureInfo.InvariantCulture);
var seconds = double.Parse(options.GetValueOrDefault("seconds", "10"), CultureInfo.InvariantCulture);
var size = int.Parse(options.GetValueOrDefault("size", "100"), CultureInfo.InvariantCulture);
var phase = options.GetValueOrDefault("phase", "produce");
var topic = options.GetValueOrDefault("topic", "bench");
var fetchMax = int.Parse(options.GetValueOrDefault("fetch-max", "5000"), CultureInfo.InvariantCulture);
OurBroker.FetchWaitMs = int.Parse(options.GetValueOrDefault("fetch-wait-ms", "200"), CultureInfo.InvariantCulture);
OurBroker.Push = options.GetValueOrDefault("consumer", "push") == "push"; // --consumer fetch: long-poll fetches instead
var connections = Math.Max(1, Math.Min(producers, int.Parse(options.GetValueOrDefault("connections", "16"), CultureInfo.InvariantCulture)));

IBroker broker = target switch
{
    "nats" => await NatsBroker.ConnectAsync(host, port, topic, connections),
    "ours-batch" => await OurBroker.ConnectAsync(host, port, topic, connections, fetchMax, batching: true),
    "ours" => await OurBroker.ConnectAsync(host, port, topic, connections, fetchMax),
    _ => throw new ArgumentException($"unknown target {target}: ours, ours-batch or nats"),
};
await using (broker)
{
    switch (phase)
    {
        case "produce":
            {
                var stamp = options.ContainsKey("stamp");
                var (count, latencies, elapsed) = await ProduceAsync(broker, producers, TimeSpan.FromSeconds(seconds), size, stampTime: stamp);
                Console.WriteLine(Line(stamp ? "produce-stamped" : "produce", target, producers, count / elapsed.TotalSeconds, latencies));
                break;
            }

        case "tail":
            {
                // The consumer side of end-to-end latency, in its own process (as a consumer would be):
                // reads new messages for the given seconds while another process produces stamped ones.
                using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(seconds));
                var latencies = await broker.ConsumeLatenciesAsync(stop.Token);
                Console.WriteLine(Line("e2e", target, producers, latencies.Count / seconds, latencies));
                break;
            }

        case "e2e":
            {
                // Producers write stamped messages while one consumer reads from the current end.
                using var stop = new CancellationTokenSource();
                var consumer = broker.ConsumeLatenciesAsync(stop.Token);
                var (count, _, elapsed) = await ProduceAsync(broker, producers, TimeSpan.FromSeconds(seconds), size, stampTime: true);
                await Task.Delay(500);
                await stop.CancelAsync();
                var latencies = await consumer;
                Console.WriteLine(Line("e2e", target, producers, count / elapsed.TotalSeconds, latencies));
                break;
            }

        case "consume":
            {
                var started = Stopwatch.GetTimestamp();
                var read = await broker.ConsumeAllAsync();
                var elapsed = Stopwatch.GetElapsedTime(started);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"phase=consume target={target} messages={read} rate={read / elapsed.TotalSeconds:F0}"));
                break;
            }

        default:
            throw new ArgumentException($"unknown phase {phase}");
    }
}

static async Task<(long Count, List<double> LatenciesMs, TimeSpan Elapsed)> ProduceAsync(IBroker broker, int producers, TimeSpan duration, int size, bool stampTime)
{
    var deadline = Stopwatch.GetTimestamp() + (long)(duration.TotalSeconds * Stopwatch.Frequency);
    var started = Stopwatch.GetTimestamp();
    var perProducer = await Task.WhenAll(Enumerable.Range(0, producers).Select(p => Task.Run(async () =>
    {
        var latencies = new List<double>(100_000);
        var payload = new byte[size];
        Random.Shared.NextBytes(payload);
        while (Stopwatch.GetTimestamp() < deadline)
        {
            var sent = Stopwatch.GetTimestamp();
            if (stampTime)
            {
                BinaryPrimitives.WriteInt64LittleEndian(payload, DateTime.UtcNow.Ticks);
            }

            await broker.ProduceAsync(p, payload);
            latencies.Add(Stopwatch.GetElapsedTime(sent).TotalMilliseconds);
        }

        return latencies;
    })));
    var elapsed = Stopwatch.GetElapsedTime(started);
    var all = perProducer.SelectMany(l => l).ToList();
    return (all.Count, all, elapsed);
}

static string Line(string phase, string target, int producers, double rate, List<double> latencies)
{
    latencies.Sort();
    double At(double q) => latencies.Count == 0 ? double.NaN : latencies[Math.Min(latencies.Count - 1, (int)(q * latencies.Count))];
    return string.Create(CultureInfo.InvariantCulture,
        $"phase={phase} target={target} producers={producers} rate={rate:F0} samples={latencies.Count} p50_ms={At(0.5):F3} p99_ms={At(0.99):F3} max_ms={(latencies.Count == 0 ? double.NaN : latencies[^1]):F3}");
}

internal interface IBroker : IAsyncDisposable
{
    Task ProduceAsync(int producer, byte[] payload);

    /// <summary>Reads new messages until cancelled; returns now − stamped time of each, in ms.</summary>
    Task<List<double>> ConsumeLatenciesAsync(CancellationToken stop);

    /// <summary>Reads everything in the topic/stream from the start; returns how many.</summary>
    Task<long> ConsumeAllAsync();
}

internal sealed class OurBroker(QueueClient[] clients, QueueProducer[] batchers, QueueClient reader, string topic, int fetchMax) : IBroker
{
    public static int FetchWaitMs { get; set; } = 200;

    /// <summary>The tail reads through a push subscription (as JetStream's consumer is pushed to), not fetches.</summary>
    public static bool Push { get; set; } = true;

    public static async Task<IBroker> ConnectAsync(string host, int port, string topic, int connections, int fetchMax, bool batching = false)
    {
        var clients = await Task.WhenAll(Enumerable.Range(0, connections).Select(_ => QueueClient.ConnectAsync(host, port)));
        await clients[0].CreateTopicAsync(topic, 1);
        if (batching)
        {
            await Task.WhenAll(clients.Select(c => c.DisposeAsync().AsTask()));
            var batchers = await Task.WhenAll(Enumerable.Range(0, connections).Select(_ => QueueProducer.CreateAsync(host, port, topic)));
            return new OurBroker([], batchers, await QueueClient.ConnectAsync(host, port), topic, fetchMax);
        }

        return new OurBroker(clients, [], await QueueClient.ConnectAsync(host, port), topic, fetchMax);
    }

    public Task ProduceAsync(int producer, byte[] payload) => batchers.Length > 0
        ? batchers[producer % batchers.Length].SendAsync(payload)
        : clients[producer % clients.Length].ProduceAsync(topic, payload, partition: 0);

    public async Task<List<double>> ConsumeLatenciesAsync(CancellationToken stop)
    {
        var latencies = new List<double>();
        if (Push)
        {
            await using var subscription = await reader.SubscribeAsync(topic, 0, offset: -1, window: fetchMax);
            try
            {
                while (true)
                {
                    var m = await subscription.ReadAsync(stop);
                    latencies.Add((DateTime.UtcNow.Ticks - BinaryPrimitives.ReadInt64LittleEndian(m.Payload)) / (double)TimeSpan.TicksPerMillisecond);
                }
            }
            catch (OperationCanceledException)
            {
                return latencies;
            }
        }

        var (_, ends) = await reader.MetadataAsync(topic);
        var offset = ends[0];
        while (!stop.IsCancellationRequested)
        {
            var batch = await reader.FetchAsync(topic, 0, offset, max: fetchMax, wait: TimeSpan.FromMilliseconds(FetchWaitMs), maxBytes: 4 << 20);
            var now = DateTime.UtcNow.Ticks;
            foreach (var m in batch)
            {
                latencies.Add((now - BinaryPrimitives.ReadInt64LittleEndian(m.Payload)) / (double)TimeSpan.TicksPerMillisecond);
                offset = m.Offset + 1;
            }
        }

        return latencies;
    }

    public async Task<long> ConsumeAllAsync()
    {
        var (_, ends) = await reader.MetadataAsync(topic);
        long offset = 0, read = 0;
        while (offset < ends[0])
        {
            var batch = await reader.FetchAsync(topic, 0, offset, max: 10_000, maxBytes: 4 << 20);
            read += batch.Count;
            offset = batch[^1].Offset + 1;
        }

        return read;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var client in clients)
        {
            await client.DisposeAsync();
        }

        foreach (var batcher in batchers)
        {
            await batcher.DisposeAsync();
        }

        await reader.DisposeAsync();
    }
}

internal sealed class NatsBroker(NatsConnection[] connections, NatsJSContext[] contexts, string stream) : IBroker
{
    public static async Task<IBroker> ConnectAsync(string host, int port, string stream, int count)
    {
        var connections = new NatsConnection[count];
        var contexts = new NatsJSContext[count];
        for (var i = 0; i < count; i++)
        {
            connections[i] = new NatsConnection(new NatsOpts { Url = $"nats://{host}:{port}" });
            await connections[i].ConnectAsync();
            contexts[i] = new NatsJSContext(connections[i]);
        }

        await contexts[0].CreateStreamAsync(new StreamConfig(stream, [stream + ".>"]) { Storage = StreamConfigStorage.File });
        return new NatsBroker(connections, contexts, stream);
    }

    public async Task ProduceAsync(int producer, byte[] payload)
    {
        var ack = await contexts[producer % contexts.Length].PublishAsync(stream + ".m", payload);
        ack.EnsureSuccess();
    }

    public async Task<List<double>> ConsumeLatenciesAsync(CancellationToken stop)
    {
        var latencies = new List<double>();
        var consumer = await contexts[0].CreateOrUpdateConsumerAsync(stream, new ConsumerConfig("e2e") { AckPolicy = ConsumerConfigAckPolicy.None, DeliverPolicy = ConsumerConfigDeliverPolicy.New }, CancellationToken.None);
        try
        {
            await foreach (var message in consumer.ConsumeAsync<byte[]>(cancellationToken: stop))
            {
                latencies.Add((DateTime.UtcNow.Ticks - BinaryPrimitives.ReadInt64LittleEndian(message.Data)) / (double)TimeSpan.TicksPerMillisecond);
            }
        }
        catch (OperationCanceledException)
        {
            // Done.
        }

        return latencies;
    }

    public async Task<long> ConsumeAllAsync()
    {
        var info = await contexts[0].GetStreamAsync(stream);
        var total = (long)info.Info.State.Messages;
        var consumer = await contexts[0].CreateOrUpdateConsumerAsync(stream, new ConsumerConfig("all-" + Guid.NewGuid().ToString("N")[..8]) { AckPolicy = ConsumerConfigAckPolicy.None, DeliverPolicy = ConsumerConfigDeliverPolicy.All });
        long read = 0;
        using var stop = new CancellationTokenSource();
        await foreach (var _ in consumer.ConsumeAsync<byte[]>(opts: new NatsJSConsumeOpts { MaxMsgs = 10_000 }, cancellationToken: stop.Token))
        {
            if (++read >= total)
            {
                break;
            }
        }

        return read;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var connection in connections)
        {
            await connection.DisposeAsync();
        }
    }
}
