using System.Text;
using Infra.QueueBroker.Groups;
using Infra.QueueBroker.Log;
using Infra.QueueBroker.Topics;
using Infra.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace Infra.QueueBroker.Tests;

/// <summary>Queue and stream groups over an in-memory disk, with a clock the test moves.</summary>
public sealed class GroupTests
{
    private readonly ManualTimeProvider _time = new();
    private readonly FaultyFileSystem _fs;

    public GroupTests()
    {
        _fs = new FaultyFileSystem(_time);
    }

    private TopicRegistry Registry(FaultyFileSystem? fs = null) =>
        new(fs ?? _fs, "/data", new LogSettings { RecoveryPointInterval = TimeSpan.FromDays(1), SegmentBytes = 64 << 10 }, _time, NullLogger.Instance);

    private static async Task ProduceAsync(Topic topic, int partition, params string[] payloads)
    {
        foreach (var payload in payloads)
        {
            await topic.Partition(partition).Log.Append([new LogMessage(null, [], Encoding.UTF8.GetBytes(payload))]).Durable;
        }
    }

    private Task<QueueGroup> QueueAsync(TopicRegistry registry, Topic topic, int maxDeliveries = 3) =>
        QueueGroup.OpenAsync("g", topic, registry, _fs, new QueueSettings { VisibilityTimeout = TimeSpan.FromSeconds(30), MaxDeliveries = maxDeliveries }, _time, NullLogger.Instance);

    private static string Text(Delivery d) => Encoding.UTF8.GetString(d.Message.Payload);

    [Fact]
    public async Task An_unacked_delivery_comes_back_after_the_visibility_timeout_with_its_count_raised()
    {
        await using var registry = Registry();
        var topic = registry.Create("jobs", 2).Topic;
        await ProduceAsync(topic, 0, "a", "b");
        await ProduceAsync(topic, 1, "c");
        await using var group = await QueueAsync(registry, topic);
        var first = await group.FetchAsync(10, TimeSpan.Zero, default);
        Assert.Equal(["a", "b", "c"], first.Select(Text).Order());
        Assert.Empty(await group.FetchAsync(10, TimeSpan.Zero, default));

        Assert.Equal(1, (await group.AckAsync([first.Single(d => Text(d) == "a").DeliveryId])).Acked);
        _time.Advance(TimeSpan.FromSeconds(29));
        Assert.Empty(await group.FetchAsync(10, TimeSpan.Zero, default));
        _time.Advance(TimeSpan.FromSeconds(2));
        var again = await group.FetchAsync(10, TimeSpan.Zero, default);
        Assert.Equal(["b", "c"], again.Select(Text).Order());
        Assert.All(again, d => Assert.Equal(2, d.DeliveryCount));

        // The first delivery's ids are stale now: acking with them does nothing.
        var (acked, unknown) = await group.AckAsync([.. first.Select(d => d.DeliveryId)]);
        Assert.Equal(0, acked);
        Assert.Equal(3, unknown.Count);
        Assert.Equal(2, group.Describe().Sum(p => p.InFlight));
    }

    [Fact]
    public async Task A_nack_with_delay_hides_the_message_until_the_delay_passes()
    {
        await using var registry = Registry();
        var topic = registry.Create("jobs", 1).Topic;
        await ProduceAsync(topic, 0, "a");
        await using var group = await QueueAsync(registry, topic);
        var d = Assert.Single(await group.FetchAsync(1, TimeSpan.Zero, default));
        Assert.Equal(1, (await group.NackAsync([d.DeliveryId], TimeSpan.FromSeconds(5))).Nacked);
        Assert.Empty(await group.FetchAsync(1, TimeSpan.Zero, default));
        _time.Advance(TimeSpan.FromSeconds(5));
        Assert.Equal(2, Assert.Single(await group.FetchAsync(1, TimeSpan.Zero, default)).DeliveryCount);
    }

    [Fact]
    public async Task A_long_poll_wakes_when_a_message_arrives()
    {
        await using var registry = Registry();
        var topic = registry.Create("jobs", 2).Topic;
        await using var group = await QueueAsync(registry, topic);
        var waiting = group.FetchAsync(5, TimeSpan.FromMinutes(1), default);
        Assert.False(waiting.IsCompleted);
        await ProduceAsync(topic, 1, "late");
        Assert.Equal("late", Text(Assert.Single(await waiting.WaitAsync(TimeSpan.FromSeconds(10)))));
    }

    [Fact]
    public async Task At_the_unacked_limit_a_fetch_gets_only_redeliveries_until_an_ack_makes_room()
    {
        // Without a limit a consumer that fetched millions and never acked grew the group's state (one entry
        // per unsettled message, in memory and in every snapshot) until a snapshot passed the batch limit.
        await using var registry = Registry();
        var topic = registry.Create("jobs", 2).Topic;
        await ProduceAsync(topic, 0, "a", "b", "c");
        await ProduceAsync(topic, 1, "d", "e", "f");
        await using var group = await QueueGroup.OpenAsync("g", topic, registry, _fs, new QueueSettings { MaxUnacked = 3 }, _time, NullLogger.Instance);
        var first = await group.FetchAsync(10, TimeSpan.Zero, default);
        Assert.Equal(3, first.Count);
        Assert.Empty(await group.FetchAsync(10, TimeSpan.Zero, default));

        // A nacked one still comes back at the limit (it is counted already).
        Assert.Equal(1, (await group.NackAsync([first[0].DeliveryId], TimeSpan.Zero)).Nacked);
        var again = Assert.Single(await group.FetchAsync(10, TimeSpan.Zero, default));
        Assert.Equal(2, again.DeliveryCount);

        // A long poll at the limit wakes when an ack makes room, and gets one new message.
        var waiting = group.FetchAsync(10, TimeSpan.FromMinutes(1), default);
        Assert.False(waiting.IsCompleted);
        Assert.Equal(1, (await group.AckAsync([first[1].DeliveryId])).Acked);
        var fresh = Assert.Single(await waiting.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(1, fresh.DeliveryCount);
        Assert.Equal(3, group.Describe().Sum(p => p.InFlight));
    }

    [Fact]
    public async Task A_caught_up_long_poll_sleeps_instead_of_spinning()
    {
        // Found by a chaos soak of the whole stack: with the click worker caught up, the broker used
        // 1.8 cores doing nothing — the wait was for data at Next - 1, always there, so it never slept.
        await using var registry = Registry();
        var topic = registry.Create("jobs", 2).Topic;
        await ProduceAsync(topic, 0, "first");
        await using var group = await QueueAsync(registry, topic);
        Assert.Single(await group.FetchAsync(5, TimeSpan.Zero, default));

        var waiting = group.FetchAsync(5, TimeSpan.FromMinutes(1), default); // the clock is manual: only a message ends it
        await Task.Delay(300);
        Assert.False(waiting.IsCompleted);
        Assert.True(group.Waits <= 2, $"the long poll woke {group.Waits} times in 300 ms with nothing to deliver");

        await ProduceAsync(topic, 1, "late");
        Assert.Equal("late", Text(Assert.Single(await waiting.WaitAsync(TimeSpan.FromSeconds(10)))));
    }

    [Fact]
    public async Task After_max_deliveries_the_message_is_dead_lettered_once_and_never_delivered_again_even_after_a_crash()
    {
        await using (var registry = Registry())
        {
            var topic = registry.Create("jobs", 1).Topic;
            await ProduceAsync(topic, 0, "poison", "fine");
            var group = await QueueAsync(registry, topic, maxDeliveries: 2);
            for (var attempt = 1; attempt <= 2; attempt++)
            {
                var deliveries = await group.FetchAsync(10, TimeSpan.Zero, default);
                Assert.Contains(deliveries, d => Text(d) == "poison" && d.DeliveryCount == attempt);
                await group.AckAsync([.. deliveries.Where(d => Text(d) == "fine").Select(d => d.DeliveryId)]);
                _time.Advance(TimeSpan.FromSeconds(31));
            }

            Assert.Empty(await group.FetchAsync(10, TimeSpan.Zero, default)); // moves it to the DLQ instead
            // The move runs on the fetch or on the expiry sweep the clock fired: poll for it.
            var deadline = DateTime.UtcNow.AddSeconds(10);
            while (group.DeadLettered == 0 && DateTime.UtcNow < deadline)
            {
                await Task.Delay(5);
            }

            var dlq = registry.Get("jobs.dlq").Partition(0).Log;
            var dead = Assert.Single(dlq.Read(0, 10, 1 << 20));
            Assert.Equal("poison", Encoding.UTF8.GetString(dead.Payload));
            Assert.Equal("0", dead.HeaderText(QueueGroup.Headers.Offset));
            Assert.Equal(1, group.DeadLettered);
            // No dispose: the broker "crashes" here.
        }

        var after = _fs.Crash(machine: true);
        await using var reopened = Registry(after);
        var sameTopic = reopened.Get("jobs");
        await using var again = await QueueGroup.OpenAsync("g", sameTopic, reopened, after, new QueueSettings { MaxDeliveries = 2 }, _time, NullLogger.Instance);
        _time.Advance(TimeSpan.FromMinutes(5));
        Assert.Empty(await again.FetchAsync(10, TimeSpan.Zero, default));
        Assert.Single(reopened.Get("jobs.dlq").Partition(0).Log.Read(0, 10, 1 << 20));
    }

    private static async Task DeadLetterAsync(QueueGroup group, int expected)
    {
        // The move runs on the fetch or on the expiry sweep the clock fired: poll for it.
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (group.DeadLettered < expected && DateTime.UtcNow < deadline)
        {
            Assert.Empty(await group.FetchAsync(10, TimeSpan.Zero, default));
            await Task.Delay(5);
        }

        Assert.Equal(expected, group.DeadLettered);
    }

    [Fact]
    public async Task A_topic_with_a_name_of_the_longest_length_dead_letters_too()
    {
        // "<200 characters>.dlq" was refused as a topic name: the move failed on every try, forever.
        await using var registry = Registry();
        var name = new string('t', TopicRegistry.MaxNameLength);
        var topic = registry.Create(name, 1).Topic;
        await ProduceAsync(topic, 0, "poison");
        await using var group = await QueueAsync(registry, topic, maxDeliveries: 1);
        Assert.Single(await group.FetchAsync(10, TimeSpan.Zero, default));
        _time.Advance(TimeSpan.FromSeconds(31));
        await DeadLetterAsync(group, 1);
        Assert.Equal("poison", Encoding.UTF8.GetString(Assert.Single(registry.Get(name + ".dlq").Partition(0).Log.Read(0, 10, 1 << 20)).Payload));
        Assert.Throws<BrokerException>(() => registry.Create(name + "x", 1)); // the limit for topics people make stays
    }

    [Fact]
    public async Task A_dead_letter_topic_made_beforehand_with_fewer_partitions_takes_the_dead_letters()
    {
        // Its partition count used to be a conflict on every move.
        await using (var registry = Registry())
        {
            registry.Create("jobs.dlq", 1);
            var topic = registry.Create("jobs", 3).Topic;
            await ProduceAsync(topic, 2, "poison");
            var group = await QueueAsync(registry, topic, maxDeliveries: 1);
            Assert.Single(await group.FetchAsync(10, TimeSpan.Zero, default));
            _time.Advance(TimeSpan.FromSeconds(31));
            await DeadLetterAsync(group, 1);
            var dead = Assert.Single(registry.Get("jobs.dlq").Partition(0).Log.Read(0, 10, 1 << 20));
            Assert.Equal("2", dead.HeaderText(QueueGroup.Headers.Partition));
        }

        // The move is found there after a restart too (not made twice).
        var after = _fs.Crash(machine: true);
        await using var reopened = Registry(after);
        await using var again = await QueueGroup.OpenAsync("g", reopened.Get("jobs"), reopened, after, new QueueSettings { MaxDeliveries = 1 }, _time, NullLogger.Instance);
        _time.Advance(TimeSpan.FromMinutes(5));
        Assert.Empty(await again.FetchAsync(10, TimeSpan.Zero, default));
        Assert.Single(reopened.Get("jobs.dlq").Partition(0).Log.Read(0, 10, 1 << 20));
    }

    [Fact]
    public async Task A_dead_letter_move_that_fails_leaves_the_fetch_its_deliveries_and_is_tried_again()
    {
        await using var registry = Registry();
        registry.Create("jobs.dlq", 1);
        var topic = registry.Create("jobs", 1).Topic;
        await ProduceAsync(topic, 0, "poison");
        await using var group = await QueueAsync(registry, topic, maxDeliveries: 1);
        var poison = Assert.Single(await group.FetchAsync(10, TimeSpan.Zero, default));
        _fs.FailSync = path => path.Contains("/jobs.dlq/", StringComparison.Ordinal); // the dead-letter partition stops at its first fsync
        // Out of deliveries: the nack moves it — and fails. The nack took effect all the same (it threw the move's error).
        Assert.Equal(1, (await group.NackAsync([poison.DeliveryId], TimeSpan.Zero)).Nacked);
        await ProduceAsync(topic, 0, "fresh");
        _time.Advance(TimeSpan.FromSeconds(2)); // the failed move is offered again: the next fetch tries it
        var deliveries = await group.FetchAsync(10, TimeSpan.Zero, default); // threw the move's error, with "fresh" leased and counted
        Assert.Equal(["fresh"], deliveries.Select(Text));
        Assert.Equal(0, group.DeadLettered);
        Assert.Equal(1, group.Describe()[0].WaitingRedelivery); // the poison, not lost: tried again later
    }

    [Fact]
    public async Task A_queue_group_whose_state_is_past_its_partition_s_end_goes_on_from_the_end()
    {
        // Under --fsync interval or never a power loss can take the log's last messages while the group's
        // state (which said they were settled) survives; the offsets come back as new messages.
        var registry = Registry();
        var topic = registry.Create("jobs", 1).Topic;
        await ProduceAsync(topic, 0, [.. Enumerable.Range(0, 10).Select(i => $"old{i}")]);
        var group = await QueueAsync(registry, topic);
        var deliveries = await group.FetchAsync(10, TimeSpan.Zero, default);
        await group.AckAsync([.. deliveries.Take(8).Select(d => d.DeliveryId)]);

        // No dispose: the broker "crashes" here (a clean close would move the recovery point to the end).
        var after = _fs.Crash(machine: true);
        var segment = after.Files().First(f => f.StartsWith("/data/jobs/0/", StringComparison.Ordinal) && f.EndsWith(".log", StringComparison.Ordinal));
        after.Tear(segment, 0); // the log's messages are gone, the group's state is not
        await using var reopened = Registry(after);
        var sameTopic = reopened.Get("jobs");
        Assert.Equal(0, sameTopic.Partition(0).Log.CommittedEnd);
        await using var again = await QueueGroup.OpenAsync("g", sameTopic, reopened, after, new QueueSettings(), _time, NullLogger.Instance);
        await ProduceAsync(sameTopic, 0, "new0", "new1", "new2");
        var back = await again.FetchAsync(10, TimeSpan.Zero, default);
        Assert.Equal(["new0", "new1", "new2"], back.Select(Text)); // nothing: offsets 0-9 were "settled" or "delivered"
        Assert.All(back, d => Assert.Equal(1, d.DeliveryCount));

        // The clamp was made durable: a second start agrees.
        var later = after.Crash(machine: true);
        await using var third = Registry(later);
        await using var group3 = await QueueGroup.OpenAsync("g", third.Get("jobs"), third, later, new QueueSettings(), _time, NullLogger.Instance);
        var info = group3.Describe()[0];
        Assert.Equal((3L, 3L, 0L, 3), (info.EndOffset, info.NextOffset, info.AckedBelow, info.WaitingRedelivery));
    }

    [Fact]
    public async Task A_stream_commit_past_its_partition_s_end_goes_back_to_the_end()
    {
        var registry = Registry();
        var topic = registry.Create("clicks", 1).Topic;
        await ProduceAsync(topic, 0, [.. Enumerable.Range(0, 10).Select(i => $"c{i}")]);
        var group = new StreamGroup("s", topic, _fs, registry.Settings, TimeSpan.FromSeconds(10), _time, NullLogger.Instance);
        var member = group.Join(null, null);
        await group.CommitAsync(member.MemberId, 0, 10);

        // No dispose: the broker "crashes" here.
        var after = _fs.Crash(machine: true);
        var segment = after.Files().First(f => f.StartsWith("/data/clicks/0/", StringComparison.Ordinal) && f.EndsWith(".log", StringComparison.Ordinal));
        after.Tear(segment, 0);
        await using var reopened = Registry(after);
        await using var again = new StreamGroup("s", reopened.Get("clicks"), after, reopened.Settings, TimeSpan.FromSeconds(10), _time, NullLogger.Instance);
        Assert.Equal(0, again.Committed(0)); // was 10: the next 10 messages produced would have been skipped
    }

    [Fact]
    public async Task Acks_past_a_message_held_back_for_long_do_not_grow_the_group_s_state()
    {
        // The group kept every acked offset above the oldest unsettled one: while one message waited (a nack
        // of a day), each ack added 8 bytes to every snapshot, until a snapshot was over the batch limit —
        // the ack that made it answered an error, and the group could not be opened again.
        var settings = new LogSettings { RecoveryPointInterval = TimeSpan.FromDays(1), SegmentBytes = 64 << 10, MaxBatchBytes = 4096 };
        var queue = new QueueSettings { CompactAfterBytes = 1024, MaxDeliveries = 10 };
        var registry = new TopicRegistry(_fs, "/data", settings, _time, NullLogger.Instance);
        var topic = registry.Create("jobs", 1).Topic;
        await ProduceAsync(topic, 0, [.. Enumerable.Range(0, 1000).Select(i => $"m{i}")]);
        var group = await QueueGroup.OpenAsync("g", topic, registry, _fs, queue, _time, NullLogger.Instance);
        for (var round = 0; round < 10; round++)
        {
            var deliveries = await group.FetchAsync(100, TimeSpan.Zero, default);
            Assert.Equal(100, deliveries.Count);
            if (round == 0)
            {
                await group.NackAsync([deliveries[0].DeliveryId], TimeSpan.FromDays(1));
            }

            await group.AckAsync([.. deliveries.Skip(round == 0 ? 1 : 0).Select(d => d.DeliveryId)]);
        }

        var info = group.Describe()[0];
        Assert.Equal((0L, 1000L, 1), (info.AckedBelow, info.NextOffset, info.WaitingRedelivery));

        // No dispose: the broker "crashes" here; the group opens again (compacting at once) with the same state.
        var after = _fs.Crash(machine: true);
        var reopened = new TopicRegistry(after, "/data", settings, _time, NullLogger.Instance);
        await using var again = await QueueGroup.OpenAsync("g", reopened.Get("jobs"), reopened, after, queue, _time, NullLogger.Instance);
        info = again.Describe()[0];
        Assert.Equal((0L, 1000L, 1), (info.AckedBelow, info.NextOffset, info.WaitingRedelivery));
        _time.Advance(TimeSpan.FromDays(1));
        var back = Assert.Single(await again.FetchAsync(100, TimeSpan.Zero, default));
        Assert.Equal(("m0", 2), (Text(back), back.DeliveryCount));
        await again.AckAsync([back.DeliveryId]);
        Assert.Equal(1000L, again.Describe()[0].AckedBelow);
        await reopened.DisposeAsync();
    }

    [Fact]
    public async Task Retention_that_may_not_delete_a_file_is_logged_not_thrown()
    {
        // It runs on a timer callback, where an exception ends the process; only IOException was caught.
        var registry = new TopicRegistry(_fs, "/data", new LogSettings { RecoveryPointInterval = TimeSpan.FromDays(1), SegmentBytes = 300, RetentionBytes = 300 }, _time, NullLogger.Instance);
        await using var _ = registry;
        var topic = registry.Create("jobs", 1).Topic;
        await ProduceAsync(topic, 0, [.. Enumerable.Range(0, 20).Select(i => $"m{i}")]);
        _fs.FailDelete = path => path.EndsWith(".log", StringComparison.Ordinal) ? new UnauthorizedAccessException($"{path}: permission denied") : null;
        registry.ApplyRetention();
        _fs.FailDelete = null;
        await ProduceAsync(topic, 0, "after");
        Assert.Equal("after", Encoding.UTF8.GetString(topic.Partition(0).Log.Read(topic.Partition(0).Log.CommittedEnd - 1, 1, 1 << 20)[0].Payload));
    }

    [Fact]
    public async Task Queue_state_is_rebuilt_from_its_log_and_compacted()
    {
        await using (var registry = Registry())
        {
            var topic = registry.Create("jobs", 1).Topic;
            await ProduceAsync(topic, 0, [.. Enumerable.Range(0, 50).Select(i => $"m{i}")]);
            var group = await QueueAsync(registry, topic);
            var deliveries = await group.FetchAsync(50, TimeSpan.Zero, default);
            await group.AckAsync([.. deliveries.Where(d => d.Message.Offset % 2 == 0).Select(d => d.DeliveryId)]);
        }

        var after = _fs.Crash(machine: true);
        await using var reopened = Registry(after);
        await using var group2 = await QueueGroup.OpenAsync("g", reopened.Get("jobs"), reopened, after, new QueueSettings(), _time, NullLogger.Instance);
        var back = await group2.FetchAsync(100, TimeSpan.Zero, default);
        Assert.Equal(Enumerable.Range(0, 25).Select(i => (long)((i * 2) + 1)), back.Select(d => d.Message.Offset));
        Assert.All(back, d => Assert.Equal(2, d.DeliveryCount));
        Assert.Equal(1, group2.Describe()[0].AckedBelow);
    }

    [Fact]
    public async Task A_partition_found_corrupt_stops_alone_and_the_group_goes_on_with_the_others()
    {
        await using (var registry = Registry())
        {
            var topic = registry.Create("jobs", 2).Topic;
            await ProduceAsync(topic, 0, "a0", "a1");
            await ProduceAsync(topic, 1, "b0", "b1");
        }

        var after = _fs.Crash(machine: true);
        var segment = after.Files().First(f => f.StartsWith("/data/jobs/0/", StringComparison.Ordinal) && f.EndsWith(".log", StringComparison.Ordinal));
        after.FlipBit(segment, 40); // before the recovery point: found only when read
        await using var reopened = Registry(after);
        await using var group = await QueueGroup.OpenAsync("g", reopened.Get("jobs"), reopened, after, new QueueSettings(), _time, NullLogger.Instance);
        var deliveries = await group.FetchAsync(10, TimeSpan.Zero, default);
        Assert.Equal(["b0", "b1"], deliveries.Select(Text));
        Assert.False(reopened.Get("jobs").Partitions[0].IsAvailable);
    }

    [Fact]
    public async Task Snapshots_taken_on_the_fetch_and_ack_paths_rebuild_the_same_state()
    {
        var settings = new QueueSettings { MaxDeliveries = 10, CompactAfterBytes = 64 };
        await using (var registry = Registry())
        {
            var topic = registry.Create("jobs", 1).Topic;
            await ProduceAsync(topic, 0, [.. Enumerable.Range(0, 20).Select(i => $"m{i}")]);
            var group = await QueueGroup.OpenAsync("g", topic, registry, _fs, settings, _time, NullLogger.Instance);
            List<Delivery> last = [];
            for (var round = 0; round < 3; round++)
            {
                last = await group.FetchAsync(20, TimeSpan.Zero, default); // a snapshot after each (64 bytes is soon passed)
                Assert.Equal(20, last.Count);
                _time.Advance(TimeSpan.FromSeconds(31));
            }

            last = await group.FetchAsync(20, TimeSpan.Zero, default);
            Assert.Equal(5, (await group.AckAsync([.. last.Take(5).Select(d => d.DeliveryId)])).Acked);
        }

        var after = _fs.Crash(machine: true);
        await using var reopened = Registry(after);
        await using var again = await QueueGroup.OpenAsync("g", reopened.Get("jobs"), reopened, after, settings, _time, NullLogger.Instance);
        var back = await again.FetchAsync(20, TimeSpan.Zero, default);
        Assert.Equal(Enumerable.Range(5, 15).Select(i => (long)i), back.Select(d => d.Message.Offset));
        Assert.All(back, d => Assert.Equal(5, d.DeliveryCount));
    }

    [Fact]
    public async Task Stream_group_rebalances_revoke_before_assign_and_expire_silent_members()
    {
        await using var registry = Registry();
        var topic = registry.Create("clicks", 4).Topic;
        await using var group = new StreamGroup("s", topic, _fs, registry.Settings, TimeSpan.FromSeconds(10), _time, NullLogger.Instance);
        var a = group.Join(null, null);
        Assert.Equal([0, 1, 2, 3], a.Partitions);

        var b = group.Join(null, null);
        Assert.True(b.Generation > a.Generation);
        var bTarget = string.CompareOrdinal(a.MemberId, b.MemberId) < 0 ? new[] { 1, 3 } : [0, 2];
        Assert.Empty(b.Partitions); // a still owns everything until it confirms the new generation

        a = group.Heartbeat(a.MemberId, a.Generation); // sees the new generation: its answer drops b's partitions
        Assert.Equal(2, a.Partitions.Length);
        Assert.Empty(group.Heartbeat(b.MemberId, b.Generation).Partitions);
        a = group.Heartbeat(a.MemberId, a.Generation); // acting on the new generation: the revoked ones are released
        b = group.Heartbeat(b.MemberId, b.Generation);
        Assert.Equal(bTarget, b.Partitions);
        Assert.Empty(a.Partitions.Intersect(b.Partitions));

        await ProduceAsync(topic, bTarget[0], "x", "y");
        await group.CommitAsync(b.MemberId, bTarget[0], 2);
        Assert.Equal(ErrorCode.OffsetOutOfRange, (await Assert.ThrowsAsync<BrokerException>(() => group.CommitAsync(b.MemberId, bTarget[0], 3))).Code);
        Assert.Equal(ErrorCode.NotOwner, (await Assert.ThrowsAsync<BrokerException>(() => group.CommitAsync(a.MemberId, bTarget[0], 1))).Code);

        // b goes silent: after its session it is removed and a gets everything.
        _time.Advance(TimeSpan.FromSeconds(6));
        a = group.Heartbeat(a.MemberId, a.Generation);
        _time.Advance(TimeSpan.FromSeconds(6));
        a = group.Heartbeat(a.MemberId, a.Generation);
        Assert.Equal([0, 1, 2, 3], a.Partitions);
        Assert.Equal(ErrorCode.UnknownMember, Assert.Throws<BrokerException>(() => group.Heartbeat(b.MemberId, b.Generation)).Code);
        Assert.Equal(2, group.Committed(bTarget[0]));
    }
}
