using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Infra.Client.Queue;
using Infra.IntegrationTests.Harness;

namespace Infra.IntegrationTests;

public sealed class QueueBrokerTests : IDisposable
{
    private readonly string _dataDir = QueueBrokerProcess.NewDataDir();

    public void Dispose()
    {
        if (Directory.Exists(_dataDir))
        {
            Directory.Delete(_dataDir, recursive: true);
        }
    }

    private static async Task<List<QueueMessage>> ReadPartitionAsync(QueueClient client, string topic, int partition)
    {
        var all = new List<QueueMessage>();
        while (true)
        {
            var batch = await client.FetchAsync(topic, partition, all.Count, max: 5000, maxBytes: 4 << 20);
            if (batch.Count == 0)
            {
                return all;
            }

            all.AddRange(batch);
        }
    }

    [Fact]
    public async Task Sigkill_under_concurrent_produce_twenty_times_loses_no_acknowledged_message()
    {
        const string topic = "orders";
        const int partitions = 3;
        var acked = new ConcurrentDictionary<(int Partition, long Offset), string>();
        for (var round = 0; round < 20; round++)
        {
            await using var broker = await QueueBrokerProcess.StartAsync(_dataDir);
            await using (var admin = await broker.ConnectAsync())
            {
                await admin.CreateTopicAsync(topic, partitions);
            }

            using var stop = new CancellationTokenSource();
            var ackedThisRound = 0;
            var clients = await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => broker.ConnectAsync())); // all connected before the kill
            var producers = Enumerable.Range(0, 16).Select(p => Task.Run(async () =>
            {
                await using var client = clients[p];
                for (var n = 0; !stop.IsCancellationRequested; n++)
                {
                    var payload = $"r{round}-p{p}-n{n}";
                    try
                    {
                        var ack = await client.ProduceAsync(topic, Encoding.UTF8.GetBytes(payload), key: Encoding.UTF8.GetBytes($"k{p}-{n % 7}"));
                        Assert.True(acked.TryAdd((ack.Partition, ack.Offset), payload),
                            $"offset {ack.Partition}/{ack.Offset} acknowledged twice: first for {acked.GetValueOrDefault((ack.Partition, ack.Offset))}, now for {payload} (duplicate flag {ack.Duplicate}, round {round})");
                        Interlocked.Increment(ref ackedThisRound);
                    }
                    catch (QueueException)
                    {
                        return; // the broker died under us: unacknowledged, may or may not be in the log
                    }
                }
            })).ToList();

            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (Volatile.Read(ref ackedThisRound) < 150 + (round * 37 % 200) && DateTime.UtcNow < deadline)
            {
                await Task.Delay(5);
            }

            broker.Process.Kill();
            await stop.CancelAsync();
            await Task.WhenAll(producers);
            Assert.True(ackedThisRound > 0, $"round {round}: nothing was acknowledged");
        }

        await using var final = await QueueBrokerProcess.StartAsync(_dataDir);
        await using var reader = await final.ConnectAsync();
        var seen = new HashSet<string>();
        for (var p = 0; p < partitions; p++)
        {
            var messages = await ReadPartitionAsync(reader, topic, p);
            for (var i = 0; i < messages.Count; i++)
            {
                Assert.Equal(i, messages[i].Offset); // no gaps, no duplicate offsets
                Assert.True(seen.Add(Encoding.UTF8.GetString(messages[i].Payload)), "a payload appears twice");
            }

            foreach (var ((partition, offset), payload) in acked.Where(a => a.Key.Partition == p))
            {
                Assert.True(offset < messages.Count, $"acknowledged {partition}/{offset} is gone (log has {messages.Count})");
                Assert.Equal(payload, Encoding.UTF8.GetString(messages[(int)offset].Payload));
            }
        }

        Assert.True(acked.Count >= 20 * 150);
    }

    [Fact]
    public async Task Idempotent_producer_retries_across_a_broker_kill_are_appended_once()
    {
        await using (var first = await QueueBrokerProcess.StartAsync(_dataDir))
        {
            await using var client = await first.ConnectAsync();
            await client.CreateTopicAsync("events", 1);
            var ack = await client.ProduceAsync("events", [(null, null, Encoding.UTF8.GetBytes("once"))], 0, producerId: 42, sequence: 0);
            Assert.False(ack.Duplicate);
            first.Process.Kill();
        }

        await using var second = await QueueBrokerProcess.StartAsync(_dataDir);
        await using var again = await second.ConnectAsync();
        var retry = await again.ProduceAsync("events", [(null, null, Encoding.UTF8.GetBytes("once"))], 0, producerId: 42, sequence: 0);
        Assert.True(retry.Duplicate);
        Assert.Equal(0, retry.Offset);
        await using var producer = await QueueProducer.CreateAsync("127.0.0.1", second.Port, "events");
        var sends = Enumerable.Range(0, 500).Select(i => producer.SendAsync(Encoding.UTF8.GetBytes($"b{i}"))).ToList();
        var acks = await Task.WhenAll(sends);
        Assert.Equal(Enumerable.Range(1, 500).Select(i => (long)i), acks.Select(a => a.Offset).Order());
        Assert.Equal(501, (await ReadPartitionAsync(again, "events", 0)).Count);
    }

    [Fact]
    public async Task A_sender_that_blocks_after_its_ack_holds_up_neither_its_batch_nor_the_producer()
    {
        // A batch's senders complete one after another on a pool thread (not one work item each): code
        // after an acknowledgement that blocks — here until its own next send and the other sender of
        // its batch are acknowledged — must not stall either.
        await using var broker = await QueueBrokerProcess.StartAsync(_dataDir);
        await using var reader = await broker.ConnectAsync();
        await reader.CreateTopicAsync("events", 1);
        await using var producer = await QueueProducer.CreateAsync("127.0.0.1", broker.Port, "events");
        for (var round = 0; round < 20; round++)
        {
            var first = producer.SendAsync(Encoding.UTF8.GetBytes($"a{round}"));
            var second = producer.SendAsync(Encoding.UTF8.GetBytes($"b{round}"));
            var blocked = first.ContinueWith(
                _ => ((IAsyncResult)producer.SendAsync(Encoding.UTF8.GetBytes($"c{round}"))).AsyncWaitHandle.WaitOne(TimeSpan.FromSeconds(10))
                    && ((IAsyncResult)second).AsyncWaitHandle.WaitOne(TimeSpan.FromSeconds(10)),
                CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            Assert.True(await blocked.WaitAsync(TimeSpan.FromSeconds(30)), $"round {round}: a blocked sender stalled the producer or its batch");
        }

        Assert.Equal(60, (await ReadPartitionAsync(reader, "events", 0)).Count);
    }

    [Fact]
    public async Task A_batch_that_failed_with_its_answer_lost_does_not_swallow_the_next_one()
    {
        await using var broker = await QueueBrokerProcess.StartAsync(_dataDir);
        await using var reader = await broker.ConnectAsync();
        await reader.CreateTopicAsync("events", 1);
        var options = new QueueProducerOptions { RequestTimeout = TimeSpan.FromMilliseconds(200), RetryFor = TimeSpan.FromMilliseconds(600) };
        await using var producer = await QueueProducer.CreateAsync("127.0.0.1", broker.Port, "events", options);
        Assert.Equal(0, (await producer.SendAsync(Encoding.UTF8.GetBytes("first"))).Offset);

        broker.Process.Pause(); // the request reaches the broker's socket buffer; no answer comes back in time
        try
        {
            await Assert.ThrowsAnyAsync<Exception>(() => producer.SendAsync(Encoding.UTF8.GetBytes("answer lost")));
        }
        finally
        {
            broker.Process.Resume();
        }

        var deadline = DateTime.UtcNow.AddSeconds(15);
        while ((await ReadPartitionAsync(reader, "events", 0)).Count < 2)
        {
            Assert.True(DateTime.UtcNow < deadline, "the broker never appended the batch it had received while stopped");
            await Task.Delay(20);
        }

        var ack = await producer.SendAsync(Encoding.UTF8.GetBytes("next"));
        var payloads = (await ReadPartitionAsync(reader, "events", 0)).Select(m => Encoding.UTF8.GetString(m.Payload)).ToList();
        Assert.Equal(["first", "answer lost", "next"], payloads);
        Assert.Equal((2L, false), (ack.Offset, ack.Duplicate));
    }

    [Fact]
    public async Task A_consumer_killed_mid_processing_gets_its_messages_redelivered()
    {
        await using var broker = await QueueBrokerProcess.StartAsync(_dataDir, "--visibility-timeout", "500ms");
        await using var producer = await broker.ConnectAsync();
        await producer.CreateTopicAsync("jobs", 2);
        for (var i = 0; i < 10; i++)
        {
            await producer.ProduceAsync("jobs", Encoding.UTF8.GetBytes($"job{i}"));
        }

        var doomed = await broker.ConnectAsync();
        var taken = await doomed.QueueFetchAsync("jobs", "workers", max: 4);
        Assert.Equal(4, taken.Count);
        await doomed.DisposeAsync(); // the worker dies without acking

        await using var survivor = await broker.ConnectAsync();
        var received = new Dictionary<string, QueueDelivery>();
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (received.Count < 10 && DateTime.UtcNow < deadline)
        {
            foreach (var delivery in await survivor.QueueFetchAsync("jobs", "workers", max: 10, wait: TimeSpan.FromSeconds(2)))
            {
                received[Encoding.UTF8.GetString(delivery.Message.Payload)] = delivery;
                Assert.Equal(1, await survivor.AckAsync("jobs", "workers", [delivery.DeliveryId]));
            }
        }

        Assert.Equal(10, received.Count);
        foreach (var lost in taken)
        {
            var again = received[Encoding.UTF8.GetString(lost.Message.Payload)];
            Assert.Equal(2, again.DeliveryCount);
        }

        Assert.Equal(0, await survivor.AckAsync("jobs", "workers", taken.Select(t => t.DeliveryId))); // stale ids
        var group = await broker.GetJsonAsync("/topics/jobs/groups/workers");
        Assert.Equal(0, group.GetProperty("lag").GetInt64());
        Assert.Equal(0, group.GetProperty("pending").GetInt64());
    }

    [Fact]
    public async Task Acks_survive_a_broker_kill_and_unacked_messages_come_back()
    {
        await using (var broker = await QueueBrokerProcess.StartAsync(_dataDir))
        {
            await using var client = await broker.ConnectAsync();
            await client.CreateTopicAsync("mail", 1);
            for (var i = 0; i < 6; i++)
            {
                await client.ProduceAsync("mail", Encoding.UTF8.GetBytes($"m{i}"));
            }

            var first = await client.QueueFetchAsync("mail", "senders", max: 6);
            Assert.Equal(3, await client.AckAsync("mail", "senders", first.Take(3).Select(d => d.DeliveryId)));
            broker.Process.Kill();
        }

        await using var restarted = await QueueBrokerProcess.StartAsync(_dataDir);
        await using var again = await restarted.ConnectAsync();
        var redelivered = await again.QueueFetchAsync("mail", "senders", max: 10, wait: TimeSpan.FromSeconds(5));
        Assert.Equal(["m3", "m4", "m5"], redelivered.Select(d => Encoding.UTF8.GetString(d.Message.Payload)));
        Assert.All(redelivered, d => Assert.Equal(2, d.DeliveryCount));
    }

    [Fact]
    public async Task After_max_deliveries_a_message_moves_to_the_dead_letter_topic_exactly_once()
    {
        string[] args = ["--visibility-timeout", "200ms", "--max-deliveries", "2"];
        await using (var broker = await QueueBrokerProcess.StartAsync(_dataDir, args))
        {
            Assert.Equal(201, (await broker.PostJsonAsync("/topics", new { name = "tasks", partitions = 2 })).Status);
            for (var i = 0; i < 3; i++)
            {
                using var content = new StringContent($"poison{i}");
                (await broker.Http.PostAsync($"/topics/tasks/messages?key=k{i}", content)).EnsureSuccessStatusCode();
            }

            await using var client = await broker.ConnectAsync();
            var deliveries = 0;
            var deadline = DateTime.UtcNow.AddSeconds(20);
            while (DateTime.UtcNow < deadline)
            {
                deliveries += (await client.QueueFetchAsync("tasks", "g", max: 10, wait: TimeSpan.FromMilliseconds(300))).Count; // never acked
                var dlq = await client.MetadataAsync("tasks.dlq").ContinueWith(t => t.IsCompletedSuccessfully ? t.Result.Ends.Sum() : 0, TaskScheduler.Default);
                if (dlq == 3)
                {
                    break;
                }
            }

            Assert.Equal(6, deliveries); // each delivered exactly max-deliveries times
            var metrics = await broker.Http.GetStringAsync("/metrics");
            Assert.Contains("infra_queue_fsync_duration_seconds_bucket", metrics, StringComparison.Ordinal);
            Assert.Contains("infra_queue_dead_lettered_total{group=\"g\",topic=\"tasks\"} 3", metrics, StringComparison.Ordinal);
            Assert.Contains("infra_queue_redeliveries_total{group=\"g\",topic=\"tasks\"} 3", metrics, StringComparison.Ordinal);
            broker.Process.Kill();
        }

        await using var restarted = await QueueBrokerProcess.StartAsync(_dataDir, args);
        await using var reader = await restarted.ConnectAsync();
        Assert.Empty(await reader.QueueFetchAsync("tasks", "g", max: 10, wait: TimeSpan.FromMilliseconds(600)));
        var dead = new List<QueueMessage>();
        for (var p = 0; p < 2; p++)
        {
            dead.AddRange(await ReadPartitionAsync(reader, "tasks.dlq", p));
        }

        Assert.Equal(["poison0", "poison1", "poison2"], dead.Select(m => Encoding.UTF8.GetString(m.Payload)).Order());
        Assert.All(dead, m =>
        {
            Assert.Equal("g", Encoding.UTF8.GetString(m.Headers["x-dlq-group"]));
            Assert.Equal("2", Encoding.UTF8.GetString(m.Headers["x-dlq-deliveries"]));
        });
    }

    [Fact]
    public async Task The_http_api_follows_its_contract()
    {
        await using var broker = await QueueBrokerProcess.StartAsync(_dataDir);
        Assert.Equal(201, (await broker.PostJsonAsync("/topics", new { name = "web", partitions = 2 })).Status);
        Assert.Equal(200, (await broker.PostJsonAsync("/topics", new { name = "web", partitions = 2 })).Status);
        var conflict = await broker.PostJsonAsync("/topics", new { name = "web", partitions = 3 });
        Assert.Equal(409, conflict.Status);
        Assert.Equal("TopicConflict", conflict.Body.GetProperty("code").GetString());
        Assert.Equal(400, (await broker.PostJsonAsync("/topics", new { name = "../etc", partitions = 1 })).Status);

        using (var content = new StringContent("hello"))
        {
            using var produced = await broker.Http.PostAsync("/topics/web/messages?key=user-1", content);
            var body = JsonDocument.Parse(await produced.Content.ReadAsStringAsync()).RootElement;
            Assert.Equal(200, (int)produced.StatusCode);
            Assert.Equal(0, body.GetProperty("offset").GetInt64());
        }

        var messages = await broker.GetJsonAsync("/topics/web/messages?group=g&max=5&waitMs=100");
        var message = Assert.Single(messages.EnumerateArray());
        Assert.Equal("hello", Encoding.UTF8.GetString(Convert.FromBase64String(message.GetProperty("payload").GetString()!)));
        Assert.Equal("user-1", message.GetProperty("key").GetString());
        Assert.Equal(1, message.GetProperty("deliveryCount").GetInt32());
        var id = message.GetProperty("deliveryId").GetString()!;

        var nack = await broker.PostJsonAsync("/topics/web/nack", new { group = "g", deliveryIds = new[] { id }, delayMs = 0 });
        Assert.Equal(1, nack.Body.GetProperty("nacked").GetInt32());
        var again = Assert.Single((await broker.GetJsonAsync("/topics/web/messages?group=g&max=5&waitMs=2000")).EnumerateArray());
        Assert.Equal(2, again.GetProperty("deliveryCount").GetInt32());
        var ack = await broker.PostJsonAsync("/topics/web/ack", new { group = "g", deliveryIds = new[] { again.GetProperty("deliveryId").GetString(), "0-99-1" } });
        Assert.Equal(1, ack.Body.GetProperty("acked").GetInt32());
        Assert.Equal("0-99-1", Assert.Single(ack.Body.GetProperty("unknown").EnumerateArray()).GetString());

        var group = await broker.GetJsonAsync("/topics/web/groups/g");
        Assert.Equal("queue", group.GetProperty("mode").GetString());
        Assert.Equal(0, group.GetProperty("lag").GetInt64());

        using var missing = await broker.Http.GetAsync("/topics/nope/messages?group=g");
        Assert.Equal(404, (int)missing.StatusCode);
        Assert.Equal("UnknownTopic", JsonDocument.Parse(await missing.Content.ReadAsStringAsync()).RootElement.GetProperty("code").GetString());
        using var badJson = new StringContent("{not json");
        using var bad = await broker.Http.PostAsync("/topics/web/ack", badJson);
        Assert.Equal(400, (int)bad.StatusCode);
        using var tooBig = await PostRefusedBodyAsync(broker, "/topics/web/messages", (1 << 20) + 1);
        Assert.Equal(413, (int)tooBig.StatusCode);
        Assert.Equal(400, (int)(await broker.Http.GetAsync("/topics/web/messages?group=g&max=abc")).StatusCode);

        // Wrong JSON types are 400s with an error, not 500s (found by a protocol fuzzer).
        Assert.Equal(400, (await broker.PostJsonAsync("/topics", new { name = "h1", partitions = "x" })).Status);
        Assert.Equal(400, (await broker.PostJsonAsync("/topics", new { name = "h1", partitions = (int?)null })).Status);
        var badDelay = await broker.PostJsonAsync("/topics/web/nack", new { group = "g", deliveryIds = new[] { "0-0-1" }, delayMs = "x" });
        Assert.Equal(400, badDelay.Status);
        Assert.Contains("delayMs", badDelay.Body.GetProperty("error").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Http_takes_messages_up_to_the_configured_size()
    {
        await using var broker = await QueueBrokerProcess.StartAsync(_dataDir, "--max-message-size", "2mb");
        Assert.Equal(201, (await broker.PostJsonAsync("/topics", new { name = "blobs", partitions = 1 })).Status);
        using (var big = new ByteArrayContent(new byte[(3 << 20) / 2]))
        {
            using var ok = await broker.Http.PostAsync("/topics/blobs/messages", big);
            Assert.Equal(200, (int)ok.StatusCode);
        }

        using var refused = await PostRefusedBodyAsync(broker, "/topics/blobs/messages", (2 << 20) + 1);
        Assert.Equal(413, (int)refused.StatusCode);
        await using var client = await broker.ConnectAsync();
        Assert.Equal(1, (await client.MetadataAsync("blobs")).Ends[0]);
    }

    [Fact]
    public async Task Topics_may_not_take_more_partitions_than_the_limit_and_idle_partitions_reserve_no_disk()
    {
        // Found by a protocol fuzzer: any client could create topics of 1,024 partitions without end — a
        // flusher thread each, and a 64 MB segment reserved on disk for each partition at once.
        await using var broker = await QueueBrokerProcess.StartAsync(_dataDir, "--max-partitions", "8", "--segment-bytes", "16mb");
        await using var client = await broker.ConnectAsync();
        await client.CreateTopicAsync("a", 6);
        var over = await Assert.ThrowsAsync<QueueException>(() => client.CreateTopicAsync("b", 3));
        Assert.Equal("BadRequest", over.Code);
        Assert.Contains("--max-partitions", over.Message, StringComparison.Ordinal);
        await client.CreateTopicAsync("a", 6); // the same topic again is not a new one
        await client.CreateTopicAsync("b", 2);
        await client.CreateTopicAsync("a.dlq", 6); // a dead-letter topic mirrors one the limit counted
        Assert.Equal("BadRequest", (await Assert.ThrowsAsync<QueueException>(() => client.CreateTopicAsync("c.dlq", 1))).Code); // no topic c: an ordinary topic

        // Nothing written, nothing reserved; the first write reserves its partition's segment.
        long Reserved() => Directory.EnumerateFiles(_dataDir, "*.log", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        Assert.Equal(0, Reserved());
        await client.ProduceAsync("a", new byte[100], partition: 0);
        Assert.Equal(16L << 20, Reserved());
        Assert.False(broker.Process.HasExited);
    }

    [Fact]
    public async Task Parked_fetches_hold_their_bytes_and_one_past_the_connection_s_share_gets_busy()
    {
        // From an audit: a thousand long polls of 64 MB each, woken by one produce, read and serialised
        // 64 GB at once. A connection's fetches now share --max-inflight-bytes.
        await using var broker = await QueueBrokerProcess.StartAsync(_dataDir, "--max-inflight-bytes", "2mb");
        await using var client = await broker.ConnectAsync();
        await client.CreateTopicAsync("t", 1);
        var parked = client.FetchAsync("t", 0, 0, max: 10, wait: TimeSpan.FromSeconds(30), maxBytes: 2 << 20);
        var deadline = DateTime.UtcNow.AddSeconds(10);
        QueueException? busy = null;
        while (busy is null && DateTime.UtcNow < deadline)
        {
            try
            {
                Assert.Empty(await client.FetchAsync("t", 0, 0, max: 1, maxBytes: 1024)); // the long poll is not parked yet
                await Task.Delay(10);
            }
            catch (QueueException ex)
            {
                busy = ex;
            }
        }

        Assert.Equal("Busy", busy?.Code);
        await client.ProduceAsync("t", new byte[100], partition: 0);
        Assert.Single(await parked);
        Assert.Single(await client.FetchAsync("t", 0, 0, max: 1, maxBytes: 1024)); // the share is back
        Assert.False(broker.Process.HasExited);
    }

    [Fact]
    public async Task Groups_may_not_pass_the_limit_but_those_on_disk_always_open()
    {
        // From an audit: every group name a fetch or join names opens a state log (a flusher thread, files),
        // and an HTTP GET of messages made one, without bound.
        await using (var broker = await QueueBrokerProcess.StartAsync(_dataDir, "--max-groups", "3"))
        {
            await using var client = await broker.ConnectAsync();
            await client.CreateTopicAsync("jobs", 1);
            for (var g = 1; g <= 2; g++)
            {
                using var ok = await broker.Http.GetAsync($"/topics/jobs/messages?group=g{g}&max=1&waitMs=0");
                Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
            }

            await client.JoinAsync("jobs", "s1");
            using var over = await broker.Http.GetAsync("/topics/jobs/messages?group=g4&max=1&waitMs=0");
            Assert.Equal(HttpStatusCode.BadRequest, over.StatusCode);
            Assert.Contains("--max-groups", await over.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            Assert.Equal("BadRequest", (await Assert.ThrowsAsync<QueueException>(() => client.JoinAsync("jobs", "s2"))).Code);
            using var again = await broker.Http.GetAsync("/topics/jobs/messages?group=g1&max=1&waitMs=0"); // not a new one
            Assert.Equal(HttpStatusCode.OK, again.StatusCode);
        }

        await using (var restarted = await QueueBrokerProcess.StartAsync(_dataDir, "--max-groups", "1"))
        {
            await using var client = await restarted.ConnectAsync();
            for (var g = 1; g <= 2; g++)
            {
                using var ok = await restarted.Http.GetAsync($"/topics/jobs/messages?group=g{g}&max=1&waitMs=0");
                Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
            }

            await client.JoinAsync("jobs", "s1");
            Assert.Equal("BadRequest", (await Assert.ThrowsAsync<QueueException>(() => client.JoinAsync("jobs", "s2"))).Code);
        }
    }

    [Fact]
    public async Task Malformed_oversized_and_truncated_frames_get_typed_errors_and_the_broker_stays_up()
    {
        await using var broker = await QueueBrokerProcess.StartAsync(_dataDir, "--max-frame-size", "64k", "--max-message-size", "32k");

        // Not MessagePack, and MessagePack that is not a request: BadRequest, the connection goes on.
        using (var raw = new TcpClient())
        {
            await raw.ConnectAsync("127.0.0.1", broker.Port);
            var stream = raw.GetStream();
            await SendFrameAsync(stream, [0xc1, 0xc1, 0xc1]);
            Assert.Contains("BadRequest", await ReadAnswerAsync(stream), StringComparison.Ordinal);
            await SendFrameAsync(stream, [0x93, 0x07, 0xa4, (byte)'n', (byte)'o', (byte)'p', (byte)'e', 0x80]); // [7, "nope", {}]
            Assert.Contains("unknown op", await ReadAnswerAsync(stream), StringComparison.Ordinal);
            await SendFrameAsync(stream, [0x93, 0x08, 0xa4, (byte)'p', (byte)'i', (byte)'n', (byte)'g', 0x80]);
            Assert.Contains("ok", await ReadAnswerAsync(stream), StringComparison.Ordinal);
            // A map claiming 2^31 entries in 6 bytes.
            await SendFrameAsync(stream, [0x93, 0x09, 0xa4, (byte)'p', (byte)'i', (byte)'n', (byte)'g', 0xdf, 0x7f, 0xff, 0xff, 0xff]);
            Assert.Contains("BadRequest", await ReadAnswerAsync(stream), StringComparison.Ordinal);

            // Found by a protocol fuzzer: a str32 or bin32 length of 0xffffffff threw out of the parsers
            // and the connection closed without an answer.
            await SendFrameAsync(stream, [0x93, 0x0a, 0xa4, (byte)'p', (byte)'i', (byte)'n', (byte)'g', 0x81, 0xa1, (byte)'a', 0xdb, 0xff, 0xff, 0xff, 0xff]);
            Assert.Contains("BadRequest", await ReadAnswerAsync(stream), StringComparison.Ordinal);
            await SendFrameAsync(stream, [0x93, 0x0b, 0xa7, .. "produce"u8, 0x82, 0xa5, .. "topic"u8, 0xa1, (byte)'t', 0xa8, .. "messages"u8, 0x91, 0x93, 0xc0, 0xc0, 0xc6, 0xff, 0xff, 0xff, 0xff]);
            Assert.Contains("BadRequest", await ReadAnswerAsync(stream), StringComparison.Ordinal);
            await SendFrameAsync(stream, [0x93, 0x0c, 0xa4, (byte)'p', (byte)'i', (byte)'n', (byte)'g', 0x80]);
            Assert.Contains("ok", await ReadAnswerAsync(stream), StringComparison.Ordinal);

            // Arguments nested too deep: the answer carries the request's id (it was 0).
            await SendFrameAsync(stream, [0x93, 0x0d, 0xa4, (byte)'p', (byte)'i', (byte)'n', (byte)'g', .. Enumerable.Repeat((byte)0x91, 40), 0x01]);
            var deep = await ReadAnswerBodyAsync(stream);
            var answer = new MessagePack.MessagePackReader(deep);
            answer.ReadArrayHeader();
            Assert.Equal((13L, "BadRequest"), (answer.ReadInt64(), answer.ReadString()));
        }

        // A length prefix over the limit: TooLarge with id 0, then the connection is closed.
        using (var raw = new TcpClient())
        {
            await raw.ConnectAsync("127.0.0.1", broker.Port);
            var stream = raw.GetStream();
            var header = new byte[4];
            BinaryPrimitives.WriteInt32BigEndian(header, 1 << 30);
            await stream.WriteAsync(header);
            Assert.Contains("TooLarge", await ReadAnswerAsync(stream), StringComparison.Ordinal);
            Assert.Equal(0, await stream.ReadAsync(new byte[1]).AsTask().WaitAsync(TimeSpan.FromSeconds(10)));
        }

        // A truncated frame and a hang-up.
        using (var raw = new TcpClient())
        {
            await raw.ConnectAsync("127.0.0.1", broker.Port);
            await raw.GetStream().WriteAsync(new byte[] { 0, 0, 1, 0, 0x93, 0x01 });
        }

        // Over-size messages get TooLarge on a healthy connection.
        await using var client = await broker.ConnectAsync();
        await client.CreateTopicAsync("t", 1);
        var error = await Assert.ThrowsAsync<QueueException>(() => client.ProduceAsync("t", new byte[40_000]));
        Assert.Equal("TooLarge", error.Code);
        Assert.Equal("UnknownTopic", (await Assert.ThrowsAsync<QueueException>(() => client.ProduceAsync("nope", new byte[1]))).Code);
        Assert.Equal("OffsetOutOfRange", (await Assert.ThrowsAsync<QueueException>(() => client.FetchAsync("t", 0, 5))).Code);
        Assert.Equal(0, (await client.ProduceAsync("t", new byte[100])).Offset);
        Assert.False(broker.Process.HasExited);
    }

    [Fact]
    public async Task Stream_groups_split_partitions_and_commits_survive_a_kill()
    {
        // 3 s, not 1: between two of a's heartbeats below the test makes a few calls in sequence, one an
        // fsync'd commit (a real consumer heartbeats on its own loop). Once, with the whole suite on 2 cores
        // and one disk, a's own session ran out there (UnknownMember in its heartbeat loop); the broker
        // handles heartbeats without waiting on any fsync, so a slow commit is the suspect.
        await using (var broker = await QueueBrokerProcess.StartAsync(_dataDir, "--session-timeout", "3s"))
        {
            await using var client = await broker.ConnectAsync();
            await client.CreateTopicAsync("clicks", 4);
            for (var i = 0; i < 40; i++)
            {
                await client.ProduceAsync("clicks", Encoding.UTF8.GetBytes($"c{i}"), key: Encoding.UTF8.GetBytes($"u{i}"));
            }

            var a = await client.JoinAsync("clicks", "analytics");
            Assert.Equal(4, a.Partitions.Count);
            var b = await client.JoinAsync("clicks", "analytics");
            a = await client.HeartbeatAsync("clicks", "analytics", a.MemberId, a.Generation);
            a = await client.HeartbeatAsync("clicks", "analytics", a.MemberId, a.Generation); // releases the revoked partitions
            b = await client.HeartbeatAsync("clicks", "analytics", b.MemberId, b.Generation);
            Assert.Equal(2, a.Partitions.Count);
            Assert.Equal(2, b.Partitions.Count);
            Assert.Empty(a.Partitions.Intersect(b.Partitions));

            var p = a.Partitions[0];
            var (_, ends) = await client.MetadataAsync("clicks");
            await client.CommitAsync("clicks", "analytics", a.MemberId, p, ends[p]);
            Assert.Equal("OffsetOutOfRange", (await Assert.ThrowsAsync<QueueException>(() => client.CommitAsync("clicks", "analytics", a.MemberId, p, ends[p] + 1))).Code);
            Assert.Equal("NotOwner", (await Assert.ThrowsAsync<QueueException>(() => client.CommitAsync("clicks", "analytics", b.MemberId, p, 0))).Code);

            // b stops heartbeating: after its session its partitions go to a.
            var deadline = DateTime.UtcNow.AddSeconds(15);
            while (a.Partitions.Count < 4 && DateTime.UtcNow < deadline)
            {
                await Task.Delay(100);
                a = await client.HeartbeatAsync("clicks", "analytics", a.MemberId, a.Generation);
            }

            Assert.Equal(4, a.Partitions.Count);
            Assert.Equal("UnknownMember", (await Assert.ThrowsAsync<QueueException>(() => client.HeartbeatAsync("clicks", "analytics", b.MemberId, b.Generation))).Code);
            broker.Process.Kill();
            await using var restarted = await QueueBrokerProcess.StartAsync(_dataDir);
            await using var again = await restarted.ConnectAsync();
            Assert.Equal(ends[p], await again.CommittedAsync("clicks", "analytics", p));
        }
    }

    [Fact]
    public async Task Sigterm_finishes_cleanly_and_a_restart_needs_no_recovery_scan()
    {
        await using (var broker = await QueueBrokerProcess.StartAsync(_dataDir, "--shutdown-timeout", "120s"))
        {
            await using var client = await broker.ConnectAsync();
            await client.CreateTopicAsync("t", 2);
            for (var i = 0; i < 50; i++)
            {
                await client.ProduceAsync("t", Encoding.UTF8.GetBytes($"m{i}"));
            }

            // A consumer long-polling an empty group must not hold the shutdown for its whole wait.
            await using var poller = await broker.ConnectAsync();
            await client.QueueFetchAsync("t", "g", max: 100);
            var longPoll = poller.QueueFetchAsync("t", "g", max: 10, wait: TimeSpan.FromSeconds(100));
            await Task.Delay(200);
            broker.Process.Terminate();
            Assert.Equal(0, await broker.Process.WaitForExitAsync(TimeSpan.FromSeconds(60)));
            var error = await Assert.ThrowsAsync<QueueException>(() => longPoll);
            Assert.True(error.Code is "ShuttingDown" or "ConnectionLost", error.Code);
            Assert.Contains("every partition log written, fsync'd and closed", broker.Process.Output, StringComparison.Ordinal);
        }

        Assert.True(File.Exists(Path.Combine(_dataDir, "t", "0", "recovery-point")));
        await using var restarted = await QueueBrokerProcess.StartAsync(_dataDir);
        await using var reader = await restarted.ConnectAsync();
        Assert.Equal(50, (await ReadPartitionAsync(reader, "t", 0)).Count + (await ReadPartitionAsync(reader, "t", 1)).Count);
        Assert.DoesNotContain("dropped", restarted.Process.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_connection_over_its_in_flight_bytes_gets_busy_and_recovers()
    {
        await using var broker = await QueueBrokerProcess.StartAsync(_dataDir, "--max-inflight-bytes", "8k");
        await using var client = await broker.ConnectAsync();
        await client.CreateTopicAsync("big", 1);
        var payload = new byte[3000];
        var results = await Task.WhenAll(Enumerable.Range(0, 64).Select(async _ =>
        {
            try
            {
                await client.ProduceAsync("big", payload);
                return "ok";
            }
            catch (QueueException ex)
            {
                return ex.Code;
            }
        }));
        Assert.Contains("Busy", results);
        Assert.Contains("ok", results);
        Assert.All(results, r => Assert.True(r is "ok" or "Busy", r));
        var last = await client.ProduceAsync("big", payload); // fine again once the others are answered
        Assert.Equal(results.Count(r => r == "ok"), last.Offset); // nothing refused was appended
    }

    [Fact]
    public async Task Stream_consumers_share_the_partitions_and_resume_from_their_commits()
    {
        await using var broker = await QueueBrokerProcess.StartAsync(_dataDir, "--session-timeout", "2s");
        await using (var admin = await broker.ConnectAsync())
        {
            await admin.CreateTopicAsync("events", 4);
            await using var producer = await QueueProducer.CreateAsync("127.0.0.1", broker.Port, "events");
            await Task.WhenAll(Enumerable.Range(0, 200).Select(i => producer.SendAsync(Encoding.UTF8.GetBytes($"e{i}"), key: Encoding.UTF8.GetBytes($"k{i}"))));
        }

        var options = new StreamConsumerOptions { SessionTimeout = TimeSpan.FromSeconds(2), HeartbeatInterval = TimeSpan.FromMilliseconds(100) };
        var seen = new ConcurrentDictionary<string, int>();
        await using (var first = await StreamConsumer.CreateAsync("127.0.0.1", broker.Port, "events", "readers", options))
        {
            await using var second = await StreamConsumer.CreateAsync("127.0.0.1", broker.Port, "events", "readers", options);
            var deadline = DateTime.UtcNow.AddSeconds(20);
            while ((first.Partitions.Count != 2 || second.Partitions.Count != 2) && DateTime.UtcNow < deadline)
            {
                await Task.Delay(50);
            }

            Assert.Equal(2, first.Partitions.Count);
            Assert.Empty(first.Partitions.Intersect(second.Partitions));
            foreach (var consumer in new[] { first, second })
            {
                var messages = await consumer.PollAsync(TimeSpan.FromMilliseconds(200));
                foreach (var message in messages)
                {
                    seen.AddOrUpdate(Encoding.UTF8.GetString(message.Payload), 1, (_, n) => n + 1);
                }

                await consumer.CommitAsync();
            }
        }

        Assert.Equal(200, seen.Count);
        await using var resumed = await StreamConsumer.CreateAsync("127.0.0.1", broker.Port, "events", "readers", options);
        Assert.Equal(4, resumed.Partitions.Count);
        Assert.Empty(await resumed.PollAsync(TimeSpan.FromMilliseconds(200))); // everything was committed
    }

    [Fact]
    public async Task A_stream_consumers_long_poll_does_not_hold_up_its_heartbeats()
    {
        // The poll held the consumer's lock through its wait and the heartbeats waited behind it: the broker
        // expired a member that was still reading (and handed its partitions to another).
        // (A session of 3 s against a 6 s poll: a loaded machine may delay a heartbeat by a second, not by three.)
        await using var broker = await QueueBrokerProcess.StartAsync(_dataDir, "--session-timeout", "3s");
        await using (var admin = await broker.ConnectAsync())
        {
            await admin.CreateTopicAsync("quiet", 2);
        }

        var options = new StreamConsumerOptions { SessionTimeout = TimeSpan.FromSeconds(3), HeartbeatInterval = TimeSpan.FromMilliseconds(100) };
        await using var consumer = await StreamConsumer.CreateAsync("127.0.0.1", broker.Port, "quiet", "g", options);
        var member = consumer.MemberId;
        Assert.Empty(await consumer.PollAsync(TimeSpan.FromSeconds(6)));
        await Task.Delay(500); // a few heartbeats: an expired member would have joined again under a new id by now
        Assert.Equal(member, consumer.MemberId);
    }

    [Fact]
    public async Task A_stream_consumer_joins_again_after_its_connection_to_the_broker_is_lost()
    {
        // The heartbeats kept failing on the dead connection and nothing reconnected: the consumer reported
        // partitions the broker had given away, and every poll failed.
        int port;
        using (var probe = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0))
        {
            probe.Start();
            port = ((System.Net.IPEndPoint)probe.LocalEndpoint).Port;
        }

        var listen = $"127.0.0.1:{port}";
        var options = new StreamConsumerOptions { SessionTimeout = TimeSpan.FromSeconds(2), HeartbeatInterval = TimeSpan.FromMilliseconds(100) };
        StreamConsumer consumer;
        string member;
        await using (var first = await QueueBrokerProcess.StartAsync(_dataDir, "--listen", listen))
        {
            await using (var admin = await first.ConnectAsync())
            {
                await admin.CreateTopicAsync("events", 1);
            }

            consumer = await StreamConsumer.CreateAsync("127.0.0.1", port, "events", "g", options);
            member = consumer.MemberId;
            first.Process.Kill();
        }

        await using (consumer)
        {
            await using var second = await QueueBrokerProcess.StartAsync(_dataDir, "--listen", listen);
            await using (var admin = await second.ConnectAsync())
            {
                await admin.ProduceAsync("events", Encoding.UTF8.GetBytes("after"), partition: 0);
            }

            await Eventually.HoldsAsync(() => consumer.MemberId != member && consumer.Partitions.Count == 1, () => "the consumer joins the restarted broker", TimeSpan.FromSeconds(30));
            List<QueueMessage> messages = [];
            await Eventually.HoldsAsync(async () =>
            {
                try
                {
                    messages = await consumer.PollAsync(TimeSpan.FromMilliseconds(200));
                    return messages.Count == 1;
                }
                catch (QueueException)
                {
                    return false; // a poll on the connection being replaced
                }
            }, "the consumer reads again", TimeSpan.FromSeconds(30));
            Assert.Equal("after", Encoding.UTF8.GetString(messages[0].Payload));
        }
    }

    [Fact]
    public async Task A_partition_taken_away_is_committed_only_up_to_what_the_member_has_processed()
    {
        // The revoked partition was committed at the polled position: messages the application had not
        // processed yet were skipped by the new owner, and lost if the first member then failed.
        await using var broker = await QueueBrokerProcess.StartAsync(_dataDir, "--session-timeout", "2s");
        await using (var admin = await broker.ConnectAsync())
        {
            await admin.CreateTopicAsync("work", 2);
            for (var i = 0; i < 10; i++)
            {
                await admin.ProduceAsync("work", Encoding.UTF8.GetBytes($"a{i}"), partition: 0);
                await admin.ProduceAsync("work", Encoding.UTF8.GetBytes($"b{i}"), partition: 1);
            }
        }

        var options = new StreamConsumerOptions { SessionTimeout = TimeSpan.FromSeconds(2), HeartbeatInterval = TimeSpan.FromMilliseconds(100) };
        await using var first = await StreamConsumer.CreateAsync("127.0.0.1", broker.Port, "work", "g", options);
        Assert.Equal(20, (await first.PollAsync(TimeSpan.FromSeconds(1))).Count); // in the works, not committed
        await using var second = await StreamConsumer.CreateAsync("127.0.0.1", broker.Port, "work", "g", options);
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (second.Partitions.Count != 1 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        var taken = Assert.Single(second.Partitions);
        var messages = await second.PollAsync(TimeSpan.FromSeconds(1));
        Assert.Equal(10, messages.Count(m => m.Partition == taken)); // delivered again, from the start
    }

    [Fact]
    public async Task A_push_subscription_streams_the_backlog_then_new_messages_in_order_through_a_small_window()
    {
        await using var broker = await QueueBrokerProcess.StartAsync(_dataDir);
        await using var client = await broker.ConnectAsync();
        await client.CreateTopicAsync("feed", 2);
        for (var i = 0; i < 50; i++)
        {
            await client.ProduceAsync("feed", Encoding.UTF8.GetBytes($"m{i}"), partition: 1);
        }

        // Windows of 8 messages and 300 bytes: the stream moves only as the reader credits it.
        await using var subscription = await client.SubscribeAsync("feed", 1, offset: 0, window: 8, windowBytes: 300);
        Assert.Equal(0, subscription.StartOffset);
        var producing = Task.Run(async () =>
        {
            await using var producer = await broker.ConnectAsync();
            for (var i = 50; i < 550; i++)
            {
                await producer.ProduceAsync("feed", Encoding.UTF8.GetBytes($"m{i}"), partition: 1);
            }
        });
        for (var i = 0; i < 550; i++)
        {
            var message = await subscription.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal((i, 1, $"m{i}"), (message.Offset, message.Partition, Encoding.UTF8.GetString(message.Payload)));
        }

        await producing;

        // Without an offset: only what is committed from now on.
        await using var tail = await client.SubscribeAsync("feed", 1);
        Assert.Equal(550, tail.StartOffset);
        await client.ProduceAsync("feed", "after"u8.ToArray(), partition: 1);
        var next = await tail.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal((550L, "after"), (next.Offset, Encoding.UTF8.GetString(next.Payload)));
        Assert.Equal(550, subscription.Position);
    }

    [Fact]
    public async Task A_push_subscription_whose_byte_window_binds_mid_push_keeps_going()
    {
        // Found by a review: the broker freed window bytes only for whole pushes, the client credits
        // after half a window wherever that falls; a mark inside a push, then less than half a window
        // read, and both sides waited on each other (here: stuck at offset 3).
        await using var broker = await QueueBrokerProcess.StartAsync(_dataDir);
        await using var client = await broker.ConnectAsync();
        await client.CreateTopicAsync("large", 1);
        var payload = new byte[400_000];
        for (var i = 0; i < 8; i++)
        {
            payload[0] = (byte)i;
            await client.ProduceAsync("large", payload, partition: 0);
        }

        await using var subscription = await client.SubscribeAsync("large", 0, offset: 0, windowBytes: 1_000_000);
        for (var i = 0; i < 8; i++)
        {
            var message = await subscription.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(20));
            Assert.Equal((i, (byte)i), (message.Offset, message.Payload[0]));
        }
    }

    [Fact]
    public async Task Push_subscription_requests_that_make_no_sense_get_typed_errors_and_a_stalled_reader_gets_no_more_than_its_window()
    {
        await using var broker = await QueueBrokerProcess.StartAsync(_dataDir);
        await using var client = await broker.ConnectAsync();
        await client.CreateTopicAsync("w", 1);
        for (var i = 0; i < 30; i++)
        {
            await client.ProduceAsync("w", Encoding.UTF8.GetBytes($"m{i}"), partition: 0);
        }

        async Task<string> Refused(string op, Dictionary<string, object?> args) =>
            (await Assert.ThrowsAsync<QueueException>(() => client.SendAsync(op, args))).Code;
        Assert.Equal("UnknownTopic", await Refused("subscribe", new() { ["topic"] = "nope", ["partition"] = 0 }));
        Assert.Equal("UnknownPartition", await Refused("subscribe", new() { ["topic"] = "w", ["partition"] = 3 }));
        Assert.Equal("OffsetOutOfRange", await Refused("subscribe", new() { ["topic"] = "w", ["partition"] = 0, ["offset"] = 31L }));
        Assert.Equal("BadRequest", await Refused("subscribe", new() { ["topic"] = "w", ["partition"] = 0, ["window"] = 0 }));
        Assert.Equal("BadRequest", await Refused("subscribe", new() { ["topic"] = "w", ["partition"] = 0, ["windowBytes"] = (64 << 20) + 1 }));
        Assert.Equal("BadRequest", await Refused("credit", new() { ["subscription"] = 12345L, ["upTo"] = 1L }));
        Assert.Equal("BadRequest", await Refused("unsubscribe", new() { ["subscription"] = 12345L }));

        // By hand on a raw connection: window 10 and no credit — 10 messages, then nothing.
        using var raw = new TcpClient();
        await raw.ConnectAsync("127.0.0.1", broker.Port);
        var stream = raw.GetStream();
        await SendRequestAsync(stream, 1, "subscribe", new() { ["topic"] = "w", ["partition"] = 0, ["offset"] = 0L, ["window"] = 10 });
        var offsets = new List<long>();
        var answered = new HashSet<long>();
        async Task ReadUntilAnswered(long id)
        {
            while (!answered.Contains(id))
            {
                var frame = await ReadFrameAsync(stream);
                var status = (string)frame[1]!;
                if (status == "push")
                {
                    Assert.Equal(1L, (long)frame[0]!);
                    offsets.AddRange(((List<object?>)((Dictionary<string, object?>)frame[2]!)["messages"]!).Select(m => (long)((List<object?>)m!)[0]!));
                }
                else
                {
                    Assert.True(status == "ok", $"request {frame[0]}: {status}: {frame[2]}");
                    answered.Add((long)frame[0]!);
                }
            }
        }

        async Task PingUntil(int count, long firstId)
        {
            var deadline = DateTime.UtcNow.AddSeconds(30);
            for (var id = firstId; offsets.Count < count; id++)
            {
                Assert.True(DateTime.UtcNow < deadline, $"pushed so far: {string.Join(",", offsets)}");
                await Task.Delay(5);
                await SendRequestAsync(stream, id, "ping", []);
                await ReadUntilAnswered(id);
            }
        }

        await ReadUntilAnswered(1);
        await PingUntil(10, 100);

        await Task.Delay(300); // a broker that ignored the window would have pushed the other 20 by now
        await SendRequestAsync(stream, 2, "ping", []);
        await ReadUntilAnswered(2);
        Assert.Equal(Enumerable.Range(0, 10).Select(i => (long)i), offsets);

        // A credit past what was sent is refused; one up to 10 lets exactly 10 more through.
        await SendRequestAsync(stream, 3, "credit", new() { ["subscription"] = 1L, ["upTo"] = 11L });
        Assert.Contains("BadRequest", await ReadAnswerAsync(stream), StringComparison.Ordinal);
        await SendRequestAsync(stream, 4, "credit", new() { ["subscription"] = 1L, ["upTo"] = 10L });
        await ReadUntilAnswered(4);
        await PingUntil(20, 100_000);

        await Task.Delay(300);
        await SendRequestAsync(stream, 5, "unsubscribe", new() { ["subscription"] = 1L });
        await ReadUntilAnswered(5);
        Assert.Equal(Enumerable.Range(0, 20).Select(i => (long)i), offsets);

        // After the unsubscribe's answer nothing more comes for it, even with room and new messages.
        await client.ProduceAsync("w", "late"u8.ToArray(), partition: 0);
        await Task.Delay(200);
        await SendRequestAsync(stream, 6, "ping", []);
        await ReadUntilAnswered(6);
        Assert.Equal(20, offsets.Count);

        // 256 subscriptions per connection; the next is Busy, and the connection and broker go on.
        await using var many = await broker.ConnectAsync();
        var subscriptions = new List<QueueSubscription>();
        for (var i = 0; i < 256; i++)
        {
            subscriptions.Add(await many.SubscribeAsync("w", 0));
        }

        Assert.Equal("Busy", (await Assert.ThrowsAsync<QueueException>(() => many.SubscribeAsync("w", 0))).Code);
        await subscriptions[0].DisposeAsync();
        await using var again = await many.SubscribeAsync("w", 0);
        await many.PingAsync();
        Assert.False(broker.Process.HasExited);
    }

    [Fact]
    public async Task A_subscription_whose_broker_is_killed_ends_with_ConnectionLost_and_a_new_one_resumes_where_it_read_to()
    {
        await using (var broker = await QueueBrokerProcess.StartAsync(_dataDir))
        {
            await using var client = await broker.ConnectAsync();
            await client.CreateTopicAsync("k", 1);
            for (var i = 0; i < 20; i++)
            {
                await client.ProduceAsync("k", Encoding.UTF8.GetBytes($"m{i}"), partition: 0);
            }

            await using var subscription = await client.SubscribeAsync("k", 0, offset: 0);
            for (var i = 0; i < 12; i++)
            {
                await subscription.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            }

            Assert.Equal(12, subscription.Position);
            broker.Process.Kill();
            var error = await Assert.ThrowsAsync<QueueException>(async () =>
            {
                while (true)
                {
                    await subscription.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
                }
            });
            Assert.Equal("ConnectionLost", error.Code);
        }

        await using var restarted = await QueueBrokerProcess.StartAsync(_dataDir);
        await using var reader = await restarted.ConnectAsync();
        await using var resumed = await reader.SubscribeAsync("k", 0, offset: 12);
        for (var i = 12; i < 20; i++)
        {
            Assert.Equal($"m{i}", Encoding.UTF8.GetString((await resumed.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30))).Payload));
        }
    }

    [Fact]
    public async Task A_client_that_sends_but_never_reads_cannot_make_the_broker_queue_answers_without_bound()
    {
        // Found by accident (a test that pinged without reading): the broker read every request and queued
        // every answer; 200 fetches of 1 MB each grew it by ~800 MB for a client that reads nothing (600
        // once: 2.5 GB; fewer now, so this test does not load the machine the other tests share).
        await using var broker = await QueueBrokerProcess.StartAsync(_dataDir);
        await using (var client = await broker.ConnectAsync())
        {
            await client.CreateTopicAsync("big", 1);
            var chunk = new byte[16 * 1024];
            for (var i = 0; i < 64; i++)
            {
                await client.ProduceAsync("big", chunk, partition: 0);
            }
        }

        var before = broker.Process.ResidentBytes();
        using var raw = new TcpClient();
        await raw.ConnectAsync("127.0.0.1", broker.Port);
        var stream = raw.GetStream();
        const int requests = 200;
        var sending = Task.Run(async () =>
        {
            for (var id = 1; id <= requests; id++)
            {
                await SendRequestAsync(stream, id, "fetch", new() { ["topic"] = "big", ["partition"] = 0, ["offset"] = 0L, ["max"] = 1000, ["maxBytes"] = 1 << 20 });
            }
        });

        // Watch the broker while nothing is read: it must stop reading once 8 MB of answers wait.
        var peak = before;
        var watchUntil = DateTime.UtcNow.AddSeconds(3);
        while (DateTime.UtcNow < watchUntil)
        {
            peak = Math.Max(peak, broker.Process.ResidentBytes());
            await Task.Delay(50);
        }

        Assert.True(peak - before < 200L << 20, $"the broker grew by {(peak - before) >> 20} MB for a client that reads nothing");

        // Reading now gets every answer, whole.
        var answered = new HashSet<long>();
        while (answered.Count < requests)
        {
            var frame = await ReadFrameAsync(stream);
            Assert.Equal("ok", frame[1]);
            Assert.Equal(64, ((List<object?>)((Dictionary<string, object?>)frame[2]!)["messages"]!).Count);
            Assert.True(answered.Add((long)frame[0]!));
        }

        await sending;
        Assert.False(broker.Process.HasExited);
    }

    /// <summary>One whole frame, <c>[id, status, body]</c>, as plain objects.</summary>
    private static async Task<List<object?>> ReadFrameAsync(NetworkStream stream) =>
        (List<object?>)Infra.Core.Framing.MessagePackValues.ReadWhole(new System.Buffers.ReadOnlySequence<byte>(await ReadAnswerBodyAsync(stream)))!;

    private static Task SendRequestAsync(NetworkStream stream, long id, string op, Dictionary<string, object?> args)
    {
        var frame = Infra.Core.Framing.Frames.Build(id, op, (ref MessagePack.MessagePackWriter w) =>
        {
            w.WriteMapHeader(args.Count);
            foreach (var (name, value) in args)
            {
                w.Write(name);
                switch (value)
                {
                    case long l:
                        w.Write(l);
                        break;
                    case int n:
                        w.Write(n);
                        break;
                    default:
                        w.Write((string)value!);
                        break;
                }
            }
        });
        return stream.WriteAsync(frame).AsTask();
    }

    /// <summary>
    /// POSTs a body the broker refuses by its Content-Length. With "Expect: 100-continue" (as curl sends
    /// for large bodies) the answer comes before the body is sent; without it the broker's early 413 and
    /// close can race the upload and the client sees a broken pipe instead of the answer.
    /// </summary>
    private static async Task<HttpResponseMessage> PostRefusedBodyAsync(QueueBrokerProcess broker, string path, int size)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new ByteArrayContent(new byte[size]) };
        request.Headers.ExpectContinue = true;
        return await broker.Http.SendAsync(request);
    }

    private static async Task SendFrameAsync(NetworkStream stream, byte[] body)
    {
        var frame = new byte[4 + body.Length];
        BinaryPrimitives.WriteInt32BigEndian(frame, body.Length);
        body.CopyTo(frame, 4);
        await stream.WriteAsync(frame);
    }

    private static async Task<string> ReadAnswerAsync(NetworkStream stream) => Encoding.UTF8.GetString(await ReadAnswerBodyAsync(stream));

    private static async Task<byte[]> ReadAnswerBodyAsync(NetworkStream stream)
    {
        var header = new byte[4];
        await stream.ReadExactlyAsync(header).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        var body = new byte[BinaryPrimitives.ReadInt32BigEndian(header)];
        await stream.ReadExactlyAsync(body).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        return body;
    }
}
