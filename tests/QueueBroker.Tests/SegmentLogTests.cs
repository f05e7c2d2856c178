using System.Text;
using Infra.QueueBroker.Log;
using Infra.Testing;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Infra.QueueBroker.Tests;

public sealed class SegmentLogTests
{
    private const string Dir = "/data/t/0";

    private static LogSettings Settings(long segmentBytes = 1 << 20) => new()
    {
        SegmentBytes = segmentBytes,
        IndexIntervalBytes = 256,
        RecoveryPointInterval = TimeSpan.FromDays(1),
        SegmentAge = TimeSpan.Zero,
        Preallocate = false, // byte positions in these tests are file lengths; see the preallocation test
    };

    private static SegmentLog Open(FaultyFileSystem fs, LogSettings? settings = null, ILogger? logger = null, TimeProvider? time = null) =>
        SegmentLog.Open(fs, Dir, settings ?? Settings(), time ?? TimeProvider.System, logger ?? NullLogger.Instance);

    private static LogMessage Message(string payload, string? key = null, params (string, string)[] headers) =>
        new(key is null ? null : Encoding.UTF8.GetBytes(key), [.. headers.Select(h => new MessageHeader(h.Item1, Encoding.UTF8.GetBytes(h.Item2)))], Encoding.UTF8.GetBytes(payload));

    private static async Task<long> AppendAsync(SegmentLog log, string payload)
    {
        var result = log.Append([Message(payload)]);
        await result.Durable;
        return result.BaseOffset;
    }

    private static List<string> ReadAll(SegmentLog log, long from = 0) =>
        [.. log.Read(from, int.MaxValue, int.MaxValue).Select(m => Encoding.UTF8.GetString(m.Payload))];

    private static string Last(FaultyFileSystem fs) => fs.Files().Last(f => f.EndsWith(".log", StringComparison.Ordinal));

    [Fact]
    public async Task Appends_read_back_with_keys_headers_and_offsets_across_segments()
    {
        var fs = new FaultyFileSystem();
        await using var log = Open(fs, Settings(segmentBytes: 600));
        for (var i = 0; i < 50; i++)
        {
            var result = log.Append([Message($"m{i}", key: $"k{i}", ("h", $"v{i}")), Message($"n{i}")]);
            await result.Durable;
            Assert.Equal(2 * i, result.BaseOffset);
        }

        Assert.True(log.SegmentCount > 5, $"{log.SegmentCount} segments");
        Assert.Equal(100, log.CommittedEnd);
        for (var from = 0; from < 100; from += 7)
        {
            var messages = log.Read(from, 3, int.MaxValue);
            Assert.Equal(Enumerable.Range(from, Math.Min(3, 100 - from)).Select(o => (long)o), messages.Select(m => m.Offset));
            var first = messages[0];
            Assert.Equal(from % 2 == 0 ? $"m{from / 2}" : $"n{from / 2}", Encoding.UTF8.GetString(first.Payload));
            if (from % 2 == 0)
            {
                Assert.Equal($"k{from / 2}", Encoding.UTF8.GetString(first.Key!));
                Assert.Equal($"v{from / 2}", first.HeaderText("h"));
            }
            else
            {
                Assert.Null(first.Key);
                Assert.Empty(first.Headers);
            }
        }

        Assert.Empty(log.Read(100, 10, int.MaxValue));
        Assert.Equal(ErrorCode.OffsetOutOfRange, Assert.Throws<BrokerException>(() => log.Read(101, 10, 100)).Code);
    }

    [Fact]
    public async Task Reads_stop_near_max_bytes_but_return_at_least_one_message()
    {
        var fs = new FaultyFileSystem();
        await using var log = Open(fs);
        for (var i = 0; i < 20; i++)
        {
            await AppendAsync(log, new string('x', 100));
        }

        Assert.Single(log.Read(0, 100, 1));
        Assert.InRange(log.Read(0, 100, 500).Count, 3, 5);
    }

    [Fact]
    public async Task Group_commit_covers_many_concurrent_appends_with_few_fsyncs()
    {
        var fs = new FaultyFileSystem();
        await using var log = Open(fs);
        var before = fs.Syncs;
        using var gate = new ManualResetEventSlim(false);
        fs.SyncGate = gate;
        var first = log.Append([Message("first")]);
        var results = Enumerable.Range(0, 200).Select(i => log.Append([Message($"m{i}")])).ToList();
        gate.Set();
        fs.SyncGate = null;
        await Task.WhenAll(results.Select(r => r.Durable).Append(first.Durable));
        Assert.InRange(fs.Syncs - before, 1, 3);
        Assert.Equal(Enumerable.Range(1, 200).Select(i => (long)i), results.Select(r => r.BaseOffset));
        Assert.Equal(201, log.CommittedEnd);
    }

    [Theory]
    [InlineData(FsyncMode.Always)]
    [InlineData(FsyncMode.Interval)]
    public async Task No_append_is_acknowledged_before_the_flusher_has_written_it(FsyncMode mode)
    {
        // A flusher woken with nothing to take (its signal was raised by an append it had already
        // taken) must not complete the cycle that new appends are joining meanwhile.
        var fs = new FaultyFileSystem();
        await using var log = Open(fs, Settings(segmentBytes: 64 << 20) with { Fsync = mode, FsyncInterval = TimeSpan.FromMilliseconds(1) });
        var early = 0;
        var appenders = Enumerable.Range(0, 8).Select(a => Task.Run(async () =>
        {
            for (var i = 0; i < 1500; i++)
            {
                var result = log.Append([Message($"a{a}-{i}")]);
                await result.Durable;
                if (log.CommittedEnd <= result.BaseOffset)
                {
                    Interlocked.Increment(ref early);
                }
            }
        }));
        await Task.WhenAll(appenders).WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(0, early);
    }

    [Fact]
    public async Task An_append_made_while_an_idle_pass_syncs_is_written_and_acknowledged()
    {
        // Under Interval a pass with no appends still fsyncs what earlier passes wrote. An append made
        // during that fsync belongs to the next pass: the idle pass must neither write it nor clear it
        // (it once read the live pending list, marked the append committed and dropped it unwritten,
        // and the append's acknowledgement never came).
        var time = new ManualTimeProvider();
        var fs = new FaultyFileSystem(time);
        await using var log = Open(fs, Settings() with { Fsync = FsyncMode.Interval, FsyncInterval = TimeSpan.FromMilliseconds(5) }, time: time);
        await log.Append([Message("first")]).Durable.WaitAsync(TimeSpan.FromSeconds(10)); // written, not yet synced

        using var gate = new ManualResetEventSlim(false);
        fs.SyncGate = gate;
        time.Advance(TimeSpan.FromSeconds(1)); // the next idle pass finds the fsync due and waits at the gate
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (fs.SyncsWaiting == 0)
        {
            Assert.True(DateTime.UtcNow < deadline, "no idle pass reached the fsync");
            await Task.Delay(5);
        }

        var second = log.Append([Message("second")]);
        gate.Set();
        fs.SyncGate = null;
        await second.Durable.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(2, log.CommittedEnd);
        Assert.Equal(["first", "second"], ReadAll(log));
    }

    [Fact]
    public async Task Appends_are_invisible_to_readers_until_acknowledged()
    {
        var fs = new FaultyFileSystem();
        await using var log = Open(fs);
        using var gate = new ManualResetEventSlim(false);
        fs.SyncGate = gate;
        var result = log.Append([Message("m")]);
        var waiting = log.WhenDataAfter(0);
        Assert.False(waiting.IsCompleted);
        Assert.Empty(log.Read(0, 10, 1000));
        gate.Set();
        fs.SyncGate = null;
        await result.Durable;
        await waiting.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Single(log.Read(0, 10, 1000));
    }

    [Fact]
    public async Task Reopening_after_a_clean_close_keeps_everything_and_continues_offsets()
    {
        var fs = new FaultyFileSystem();
        var log = Open(fs, Settings(segmentBytes: 400));
        for (var i = 0; i < 30; i++)
        {
            await AppendAsync(log, $"m{i}");
        }

        await log.DisposeAsync();
        await using var reopened = Open(fs.Crash(machine: true), Settings(segmentBytes: 400));
        Assert.Equal(Enumerable.Range(0, 30).Select(i => $"m{i}"), ReadAll(reopened));
        Assert.Equal(30, await AppendAsync(reopened, "next"));
    }

    [Fact]
    public async Task Every_acknowledged_append_survives_a_machine_crash()
    {
        var fs = new FaultyFileSystem();
        var log = Open(fs, Settings(segmentBytes: 500));
        var acked = new List<Task<long>>();
        for (var i = 0; i < 40; i++)
        {
            var result = log.Append([Message($"m{i}")]);
            acked.Add(result.Durable.ContinueWith(_ => result.BaseOffset, TaskScheduler.Default));
        }

        await Task.WhenAll(acked);

        // Crash while more appends are still on their way: those may or may not survive.
        using var gate = new ManualResetEventSlim(false);
        fs.SyncGate = gate;
        log.Append([Message("unacked")]);
        var after = fs.Crash(machine: true);
        gate.Set();
        fs.SyncGate = null;
        await using var reopened = Open(after, Settings(segmentBytes: 500));
        var survived = ReadAll(reopened);
        Assert.Equal(Enumerable.Range(0, 40).Select(i => $"m{i}"), survived.Take(40));
        Assert.InRange(survived.Count, 40, 41);
    }

    [Fact]
    public async Task A_torn_write_at_every_byte_of_the_last_batch_is_cut_back_to_the_batch_before()
    {
        var fs = new FaultyFileSystem();
        var log = Open(fs);
        for (var i = 0; i < 5; i++)
        {
            await AppendAsync(log, $"m{i}");
        }

        var lastStart = fs.Length(Last(fs));
        await log.Append([Message("last one", key: "k", ("h", "v")), Message("and its pair")]).Durable;
        var lastEnd = fs.Length(Last(fs));
        var crashed = fs.Crash(machine: false);

        for (var cut = lastStart; cut <= lastEnd; cut++)
        {
            var torn = crashed.Crash(machine: false);
            torn.Tear(Last(torn), cut);
            var logger = new ListLogger();
            await using var reopened = Open(torn, logger: logger);
            var expected = Enumerable.Range(0, 5).Select(i => $"m{i}").ToList();
            if (cut == lastEnd)
            {
                expected.AddRange(["last one", "and its pair"]);
                Assert.DoesNotContain(logger.Lines, l => l.Contains("dropped", StringComparison.Ordinal));
            }
            else
            {
                Assert.Equal(lastStart, torn.Length(Last(torn)));
                if (cut > lastStart)
                {
                    Assert.Contains(logger.Lines, l => l.Contains($"{cut - lastStart} bytes of torn tail dropped", StringComparison.Ordinal));
                }
            }

            Assert.Equal(expected, ReadAll(reopened));
            Assert.Equal(expected.Count, await AppendAsync(reopened, "after"));
        }
    }

    [Fact]
    public async Task A_flipped_bit_after_the_recovery_point_truncates_from_that_batch()
    {
        var fs = new FaultyFileSystem();
        var log = Open(fs);
        for (var i = 0; i < 10; i++)
        {
            await AppendAsync(log, $"m{i}");
        }

        var crashed = fs.Crash(machine: false); // no recovery point was written: everything is "after" it
        var segment = Last(crashed);
        var batchSize = crashed.Length(segment) / 10;
        crashed.FlipBit(segment, (batchSize * 6) + batchSize - 2, bit: 3);
        var logger = new ListLogger();
        await using var reopened = Open(crashed, logger: logger);
        Assert.Equal(Enumerable.Range(0, 6).Select(i => $"m{i}"), ReadAll(reopened));
        Assert.Contains(logger.Lines, l => l.Contains($"{batchSize * 4} bytes of corrupt tail dropped", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_flipped_bit_before_the_recovery_point_stops_the_partition_instead_of_dropping_data()
    {
        var fs = new FaultyFileSystem();
        var log = Open(fs);
        for (var i = 0; i < 10; i++)
        {
            await AppendAsync(log, $"m{i}");
        }

        await log.DisposeAsync(); // a clean close stores the recovery point at the end
        var after = fs.Crash(machine: true);
        var segment = Last(after);
        var length = after.Length(segment);
        after.FlipBit(segment, length / 3);
        var logger = new ListLogger();
        await using var reopened = Open(after, logger: logger);
        Assert.Equal(length, after.Length(segment)); // nothing cut at recovery
        var error = Assert.Throws<BrokerException>(() => reopened.Read(0, 100, int.MaxValue));
        Assert.Equal(ErrorCode.PartitionFailed, error.Code);
        Assert.Contains("corrupt", error.Message, StringComparison.Ordinal);
        Assert.Equal(ErrorCode.PartitionFailed, Assert.Throws<BrokerException>(() => reopened.Append([Message("x")])).Code);
        Assert.Contains(logger.Lines, l => l.StartsWith("Critical", StringComparison.Ordinal));
        Assert.Equal(length, after.Length(segment));
    }

    [Fact]
    public async Task A_recovery_point_past_the_end_of_the_data_stops_the_partition()
    {
        var fs = new FaultyFileSystem();
        var log = Open(fs);
        for (var i = 0; i < 10; i++)
        {
            await AppendAsync(log, $"m{i}");
        }

        await log.DisposeAsync();
        var after = fs.Crash(machine: true);
        after.Tear(Last(after), 10);
        var error = Assert.Throws<BrokerException>(() => Open(after));
        Assert.Equal(ErrorCode.PartitionFailed, error.Code);
        Assert.Contains("durable is gone", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_failed_fsync_stops_the_partition_and_is_never_retried()
    {
        var fs = new FaultyFileSystem();
        var logger = new ListLogger();
        await using var log = Open(fs, logger: logger);
        await AppendAsync(log, "ok");
        var before = fs.Syncs;
        fs.FailSync = _ => true;
        var failed = log.Append([Message("lost")]);
        var error = await Assert.ThrowsAsync<BrokerException>(() => failed.Durable);
        Assert.Equal(ErrorCode.PartitionFailed, error.Code);
        Assert.Equal(ErrorCode.PartitionFailed, Assert.Throws<BrokerException>(() => log.Append([Message("later")])).Code);
        Assert.NotNull(log.Failure);
        await Task.Delay(50);
        Assert.Equal(before + 1, fs.Syncs);
        Assert.Contains(logger.Lines, l => l.StartsWith("Critical", StringComparison.Ordinal));
        fs.FailSync = null;
        Assert.Equal(ErrorCode.PartitionFailed, Assert.Throws<BrokerException>(() => log.Append([Message("still")])).Code);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_crash_right_after_a_segment_roll_recovers_with_offsets_continuing(bool machine)
    {
        var fs = new FaultyFileSystem();
        var settings = Settings(segmentBytes: 300);
        var log = Open(fs, settings);
        var offsets = new List<long>();
        while (log.SegmentCount < 3)
        {
            offsets.Add(await AppendAsync(log, $"m{offsets.Count}"));
        }

        // The roll happened inside the last append: the newest segment holds exactly one batch. Drop it
        // to get the state "new segment created, nothing written to it yet".
        var after = fs.Crash(machine);
        after.Tear(Last(after), 0);
        await using var reopened = Open(after, settings);
        Assert.Equal(offsets.Count - 1, reopened.CommittedEnd);
        Assert.Equal(Enumerable.Range(0, offsets.Count - 1).Select(i => $"m{i}"), ReadAll(reopened));
        Assert.Equal(offsets.Count - 1, await AppendAsync(reopened, "again"));
        Assert.Equal("again", ReadAll(reopened)[^1]);
    }

    [Fact]
    public async Task Retention_deletes_whole_old_segments_by_size_and_age()
    {
        var time = new ManualTimeProvider();
        var fs = new FaultyFileSystem(time);
        var settings = Settings(segmentBytes: 300) with { RetentionBytes = 900, RetentionAge = TimeSpan.FromHours(1) };
        await using var log = Open(fs, settings, time: time);
        for (var i = 0; i < 40; i++)
        {
            await AppendAsync(log, $"m{i}");
        }

        var segments = log.SegmentCount;
        Assert.True(log.ApplyRetention() > 0);
        Assert.True(log.SizeBytes <= 900 + 300, $"{log.SizeBytes} bytes left");
        Assert.True(log.StartOffset > 0);
        Assert.Equal(ErrorCode.OffsetOutOfRange, Assert.Throws<BrokerException>(() => log.Read(0, 1, 100)).Code);
        Assert.Equal(log.StartOffset, log.Read(log.StartOffset, 1, 100)[0].Offset);
        Assert.True(log.SegmentCount < segments);
        Assert.Equal(log.SegmentCount * 2, fs.Files().Count(f => f.EndsWith(".log", StringComparison.Ordinal) || f.EndsWith(".index", StringComparison.Ordinal)));

        time.Advance(TimeSpan.FromHours(2));
        log.ApplyRetention();
        Assert.Equal(1, log.SegmentCount); // the active segment is never deleted
        Assert.Equal(40, await AppendAsync(log, "new"));
    }

    [Fact]
    public async Task Idempotent_retries_are_answered_with_the_original_offset_even_after_a_restart()
    {
        var fs = new FaultyFileSystem();
        var log = Open(fs);
        await AppendAsync(log, "other");
        var first = log.Append([Message("a"), Message("b")], producerId: 7, baseSequence: 0);
        await first.Durable;
        var retry = log.Append([Message("a"), Message("b")], producerId: 7, baseSequence: 0);
        Assert.True(retry.Duplicate);
        Assert.Equal(first.BaseOffset, retry.BaseOffset);
        Assert.Equal(ErrorCode.OutOfOrderSequence, Assert.Throws<BrokerException>(() => log.Append([Message("c")], 7, 5)).Code);
        await log.Append([Message("c")], 7, 2).Durable;

        // A process crash: the recovery point was never written, the tail scan rebuilds the table.
        await using var reopened = Open(fs.Crash(machine: false));
        var again = reopened.Append([Message("c")], producerId: 7, baseSequence: 2);
        Assert.True(again.Duplicate);
        Assert.Equal(3, again.BaseOffset);
        Assert.Equal(1, reopened.Append([Message("a"), Message("b")], 7, 0).BaseOffset);
        for (var seq = 3; seq < 3 + ProducerTable.Remembered; seq++)
        {
            await reopened.Append([Message($"d{seq}")], 7, seq).Durable;
        }

        // Older than the last five batches: known to be appended, its offset forgotten.
        Assert.Equal(ErrorCode.DuplicateSequence, Assert.Throws<BrokerException>(() => reopened.Append([Message("a"), Message("b")], 7, 0)).Code);
        Assert.Equal(["other", "a", "b", "c", "d3", "d4", "d5", "d6", "d7"], ReadAll(reopened));
    }

    [Fact]
    public async Task Producer_state_survives_a_restart_through_the_recovery_point()
    {
        var fs = new FaultyFileSystem();
        var log = Open(fs);
        await log.Append([Message("a")], 9, 0).Durable;
        await log.DisposeAsync(); // writes the recovery point with the producer table
        await using var reopened = Open(fs.Crash(machine: true));
        Assert.True(reopened.Append([Message("a")], 9, 0).Duplicate);
        Assert.Equal(ErrorCode.OutOfOrderSequence, Assert.Throws<BrokerException>(() => reopened.Append([Message("z")], 9, 3)).Code);
    }

    [Fact]
    public async Task All_five_remembered_batches_of_a_producer_survive_a_restart_through_the_recovery_point()
    {
        // The recovery point kept only each producer's last batch: after a restart a retry of the one
        // before it (a producer with several batches in flight) got DuplicateSequence instead of its offset.
        var fs = new FaultyFileSystem();
        var log = Open(fs);
        var offsets = new List<long>();
        for (var seq = 0; seq < ProducerTable.Remembered + 2; seq++)
        {
            var append = log.Append([Message($"m{seq}")], 9, seq);
            await append.Durable;
            offsets.Add(append.BaseOffset);
        }

        await log.DisposeAsync(); // writes the recovery point; the reopened log scans nothing
        await using var reopened = Open(fs.Crash(machine: true));
        for (var seq = 2; seq < ProducerTable.Remembered + 2; seq++)
        {
            var retry = reopened.Append([Message($"m{seq}")], 9, seq);
            Assert.True(retry.Duplicate, $"sequence {seq}");
            Assert.Equal(offsets[seq], retry.BaseOffset);
        }

        Assert.Equal(ErrorCode.DuplicateSequence, Assert.Throws<BrokerException>(() => reopened.Append([Message("m1")], 9, 1)).Code);
        var next = reopened.Append([Message("next")], 9, ProducerTable.Remembered + 2);
        await next.Durable;
        Assert.Equal(offsets[^1] + 1, next.BaseOffset);
    }

    [Fact]
    public async Task The_append_buffers_a_burst_grew_go_back_to_their_first_size_once_it_is_over()
    {
        // They kept the size of the largest burst for good: two per partition, up to 32 MB each.
        var fs = new FaultyFileSystem();
        await using var log = Open(fs);
        await log.Append([Message(new string('x', 3 << 20))]).Durable;
        await log.Append([Message(new string('y', 3 << 20))]).Durable;
        Assert.True(log.BufferSizes.Pending + log.BufferSizes.Spare > 6 << 20, log.BufferSizes.ToString());
        for (var i = 0; i < 200; i++)
        {
            await AppendAsync(log, "small");
        }

        Assert.Equal((64 * 1024, 64 * 1024), log.BufferSizes);
        Assert.Equal(202, ReadAll(log).Count);
    }

    [Fact]
    public async Task A_partition_with_too_much_waiting_for_the_disk_answers_busy()
    {
        var fs = new FaultyFileSystem();
        await using var log = Open(fs, Settings() with { MaxPendingBytes = 2000 });
        using var gate = new ManualResetEventSlim(false);
        fs.SyncGate = gate;
        var inFlight = new List<Task>();
        var busy = 0;
        for (var i = 0; i < 200; i++)
        {
            try
            {
                inFlight.Add(log.Append([Message(new string('x', 100))]).Durable);
            }
            catch (BrokerException ex) when (ex.Code == ErrorCode.Busy)
            {
                busy++;
            }
        }

        Assert.True(busy > 100, $"{busy} busy answers");
        gate.Set();
        fs.SyncGate = null;
        await Task.WhenAll(inFlight);
        await log.Append([Message("fine again")]).Durable;
    }

    [Fact]
    public async Task Interval_mode_acknowledges_before_fsync_and_syncs_soon_after()
    {
        var fs = new FaultyFileSystem();
        await using var log = Open(fs, Settings() with { Fsync = FsyncMode.Interval, FsyncInterval = TimeSpan.FromMilliseconds(20) });
        var syncs = fs.Syncs;
        await AppendAsync(log, "m");
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (fs.Syncs == syncs && DateTime.UtcNow < deadline)
        {
            await Task.Delay(5);
        }

        Assert.True(fs.Syncs > syncs);
        await using var reopened = Open(fs.Crash(machine: true));
        Assert.Equal(["m"], ReadAll(reopened));
    }

    [Fact]
    public async Task Preallocated_segments_recover_their_data_and_are_cut_when_they_roll()
    {
        var fs = new FaultyFileSystem();
        var settings = Settings(segmentBytes: 500) with { Preallocate = true };
        var log = Open(fs, settings);
        Assert.Equal(0, fs.Length(Last(fs))); // nothing reserved until the partition is first written (a topic of many idle partitions took gigabytes)
        for (var i = 0; i < 30; i++)
        {
            await AppendAsync(log, $"m{i}");
            if (i == 0)
            {
                Assert.Equal(500, fs.Length(Last(fs))); // reserved by the first write
            }
        }

        // Every segment but the active one was cut to its data when it rolled.
        var segments = fs.Files().Where(f => f.EndsWith(".log", StringComparison.Ordinal)).ToList();
        Assert.True(segments.Count > 2);
        Assert.All(segments.SkipLast(1), f => Assert.True(fs.Length(f) < 500));
        Assert.Equal(500, fs.Length(segments[^1]));

        // A machine crash: the zero reserve after the data is the end of the log, nothing is dropped.
        var logger = new ListLogger();
        var after = fs.Crash(machine: true);
        await using (var reopened = Open(after, settings, logger))
        {
            Assert.Equal(Enumerable.Range(0, 30).Select(i => $"m{i}"), ReadAll(reopened));
            Assert.DoesNotContain(logger.Lines, l => l.Contains("dropped", StringComparison.Ordinal));
            Assert.Equal(30, await AppendAsync(reopened, "m30"));
        }

        // The last batch reached the disk only in part (the rest of it still zeros): cut back to the one before.
        var torn = fs.Crash(machine: true); // the state before the reopen above wrote m30 and a recovery point
        var last = Last(torn);
        var batch = 34 + 8 + 4 + 2 + 4 + 3; // header + one record with a 3-byte payload
        var dataEnd = torn.ReadAll(last)!.AsSpan().LastIndexOfAnyExcept((byte)0) + 1;
        torn.Zero(last, dataEnd - (batch / 2), batch);
        var tornLogger = new ListLogger();
        await using var recovered = Open(torn, settings, tornLogger);
        Assert.Equal(Enumerable.Range(0, 29).Select(i => $"m{i}"), ReadAll(recovered));
        Assert.Contains(tornLogger.Lines, l => l.Contains("corrupt tail dropped", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Never_mode_acknowledges_without_fsync_and_syncs_at_a_clean_close()
    {
        var fs = new FaultyFileSystem();
        var log = Open(fs, Settings() with { Fsync = FsyncMode.Never });
        var syncs = fs.Syncs;
        for (var i = 0; i < 10; i++)
        {
            await AppendAsync(log, $"m{i}");
        }

        Assert.Equal(syncs, fs.Syncs); // acknowledged after write(2) only
        await using (var afterProcessCrash = Open(fs.Crash(machine: false)))
        {
            Assert.Equal(10, ReadAll(afterProcessCrash).Count); // the page cache survives a process crash
        }

        await using (var afterPowerLoss = Open(fs.Crash(machine: true)))
        {
            Assert.Empty(ReadAll(afterPowerLoss)); // a power loss takes what was never fsync'd
        }

        await log.DisposeAsync();
        Assert.True(fs.Syncs > syncs);
        await using var afterClose = Open(fs.Crash(machine: true));
        Assert.Equal(10, ReadAll(afterClose).Count);
    }

    [Fact]
    public async Task A_sync_append_is_fsync_d_before_it_is_acknowledged_whatever_the_mode()
    {
        // A group's snapshot: the segments before it are deleted once it is durable, so under never or
        // interval it must be on the disk by then (a power loss took the whole group state otherwise).
        var fs = new FaultyFileSystem();
        await using var log = Open(fs, Settings() with { Fsync = FsyncMode.Never });
        await AppendAsync(log, "plain");
        var snapshot = log.Append([Message("snapshot")], sync: true);
        await snapshot.Durable;
        await using var afterPowerLoss = Open(fs.Crash(machine: true));
        Assert.Equal(["plain", "snapshot"], ReadAll(afterPowerLoss)); // the sync covers what came before it too
    }

    [Fact]
    public async Task Retention_running_while_segments_roll_never_disturbs_the_segment_being_written()
    {
        // Retention changes the segment list under the log's lock; the flusher read the list's last element
        // without it — a count and an element of two moments: an exception that stopped the partition, or
        // acknowledged writes into the segment just deleted (lost, and a gap in the offsets after it).
        var fs = new FaultyFileSystem();
        await using var log = Open(fs, Settings(segmentBytes: 200) with { RetentionBytes = 400 });
        using var stop = new CancellationTokenSource();
        var retention = Task.Run(() =>
        {
            var passes = 0;
            while (!stop.IsCancellationRequested)
            {
                log.ApplyRetention();
                passes++;
            }

            return passes;
        });
        var appended = 0L;
        var deadline = DateTime.UtcNow.AddSeconds(2);
        while (DateTime.UtcNow < deadline && log.Failure is null)
        {
            var results = Enumerable.Range(0, 4).Select(i => log.Append([Message($"m{appended + i}")])).ToList();
            await Task.WhenAll(results.Select(r => r.Durable));
            appended += results.Count;
        }

        await stop.CancelAsync();
        Assert.True(await retention > 0);
        Assert.Null(log.Failure);
        Assert.Equal(appended, log.CommittedEnd);
        var kept = log.Read(log.StartOffset, int.MaxValue, int.MaxValue);
        Assert.Equal(appended, log.StartOffset + kept.Count);
        Assert.All(kept.Select((m, i) => (m, i)), x => Assert.Equal((x.m.Offset, $"m{x.m.Offset}"), (log.StartOffset + x.i, Encoding.UTF8.GetString(x.m.Payload))));
    }

    [Fact]
    public async Task A_read_at_the_head_starts_from_the_sparse_index_not_the_segment_start()
    {
        // The index of a new segment stayed empty (an overflow in its spacing check), so every read scanned
        // the active segment from its first byte: a consumer at the head paid for the whole segment.
        var fs = new FaultyFileSystem();
        var log = Open(fs);
        var appends = Enumerable.Range(0, 2000).Select(i => log.Append([Message($"message {i:D5} " + new string('x', 40))])).ToList();
        await Task.WhenAll(appends.Select(a => a.Durable));
        Assert.Equal(1, log.SegmentCount);

        long ReadCost(SegmentLog from, long offset)
        {
            var before = fs.BytesRead;
            Assert.Equal($"message {offset:D5} " + new string('x', 40), Encoding.UTF8.GetString(from.Read(offset, 1, 1000)[0].Payload));
            return fs.BytesRead - before;
        }

        // 256-byte index spacing: a read starts at most one interval (plus a batch) before its offset, and
        // reads on in chunks of 16 KB at least (the whole log is ~150 KB).
        Assert.InRange(ReadCost(log, 1999), 1, 2 * 256);
        Assert.InRange(ReadCost(log, 1000), 1, 16 * 1024);
        Assert.True(fs.ReadAll(Dir + "/" + "00000000000000000000.index")!.Length > 0, "the index file has no entry");

        // After a restart: the index is loaded from its file, or rebuilt by recovery's scan.
        await log.DisposeAsync();
        var reopened = Open(fs);
        Assert.InRange(ReadCost(reopened, 1999), 1, 2 * 256);
        await reopened.DisposeAsync();
        var rebuilt = fs.Crash(machine: true);
        foreach (var index in rebuilt.Files().Where(f => f.EndsWith(".index", StringComparison.Ordinal)))
        {
            rebuilt.Tear(index, 0);
        }

        fs = rebuilt;
        await using var recovered = Open(rebuilt);
        Assert.InRange(ReadCost(recovered, 1999), 1, 2 * 256);
    }

    private static string OldPayload(long i) => $"old {i:D4} " + new string('o', 30);

    private static string NewPayload(long i) => $"new {i:D4} " + new string('n', 7);

    /// <summary>
    /// 100 messages and a clean close (the recovery point), 300 more, then the process dies and the last
    /// writes are torn: the log loses a third of its tail while its index file still names batches there.
    /// Returns the crashed file system, the index file's path, and the index file as it was.
    /// </summary>
    private static async Task<(FaultyFileSystem After, string Index, byte[] IndexBefore)> TornAfterIndexingAsync()
    {
        var fs = new FaultyFileSystem();
        var log = Open(fs);
        for (var i = 0; i < 100; i++)
        {
            await AppendAsync(log, OldPayload(i));
        }

        await log.DisposeAsync();
        log = Open(fs);
        for (var i = 100; i < 400; i++)
        {
            await AppendAsync(log, OldPayload(i));
        }

        var after = fs.Crash(machine: false);
        var segment = Last(after);
        var index = segment.Replace(".log", ".index", StringComparison.Ordinal);
        var indexBefore = after.ReadAll(index)!;
        after.Tear(segment, after.Length(segment) * 2 / 3 + 17);
        return (after, index, indexBefore);
    }

    /// <summary>Appends 300 new messages after the cut (other sizes, so other positions) and returns the committed end before them.</summary>
    private static async Task<long> AppendAfterTheCutAsync(SegmentLog log)
    {
        var kept = log.CommittedEnd;
        Assert.InRange(kept, 100, 399);
        for (var i = kept; i < kept + 300; i++)
        {
            await AppendAsync(log, NewPayload(i));
        }

        return kept;
    }

    private static void AssertEveryOffsetReads(SegmentLog log, long kept)
    {
        for (var i = 0L; i < kept + 300; i++)
        {
            Assert.Equal(i < kept ? OldPayload(i) : NewPayload(i), Encoding.UTF8.GetString(log.Read(i, 1, 1000)[0].Payload));
        }
    }

    [Fact]
    public async Task Index_entries_past_a_torn_tail_are_dropped_and_new_appends_there_read_back_by_offset()
    {
        var (after, index, indexBefore) = await TornAfterIndexingAsync();
        await using var reopened = Open(after);
        Assert.True(after.Length(index) < indexBefore.Length, "the index file still holds entries past the cut");
        AssertEveryOffsetReads(reopened, await AppendAfterTheCutAsync(reopened));
    }

    [Fact]
    public async Task An_index_file_from_before_a_cut_the_disk_never_saw_is_rebuilt_instead_of_misdirecting_reads()
    {
        // Found by a review: recovery cuts the log and its index after a torn tail, new batches land
        // where the cut ones were, and a power loss may bring back the old index file (it is never
        // fsync'd); its entries past the cut point into the middle of the new batches.
        var (after, index, indexBefore) = await TornAfterIndexingAsync();
        var reopened = Open(after);
        var kept = await AppendAfterTheCutAsync(reopened);
        await reopened.DisposeAsync();
        after.WriteAtomically(index, indexBefore); // the old index is back, as if the cut never reached the disk
        await using var again = Open(after);
        AssertEveryOffsetReads(again, kept);
    }

    [Fact]
    public async Task A_lost_index_is_rebuilt_from_the_log()
    {
        var fs = new FaultyFileSystem();
        var log = Open(fs, Settings(segmentBytes: 2000));
        for (var i = 0; i < 100; i++)
        {
            await AppendAsync(log, $"m{i}");
        }

        await log.DisposeAsync();
        var after = fs.Crash(machine: true);
        foreach (var index in after.Files().Where(f => f.EndsWith(".index", StringComparison.Ordinal)))
        {
            after.Tear(index, Math.Min(3, after.Length(index)));
        }

        await using var reopened = Open(after, Settings(segmentBytes: 2000));
        for (var i = 0; i < 100; i += 9)
        {
            Assert.Equal($"m{i}", Encoding.UTF8.GetString(reopened.Read(i, 1, 10)[0].Payload));
        }
    }
}

/// <summary>Collects log lines as "Level message".</summary>
internal sealed class ListLogger : ILogger
{
    private readonly List<string> _lines = [];

    public IReadOnlyList<string> Lines
    {
        get
        {
            lock (_lines)
            {
                return [.. _lines];
            }
        }
    }

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        lock (_lines)
        {
            _lines.Add($"{logLevel} {formatter(state, exception)}");
        }
    }
}
