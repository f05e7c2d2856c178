using Infra.Client.Data;
using Infra.ShardRouter.Failover;

namespace Infra.ShardRouter.Tests;

/// <summary>Replica lag from master LSN samples, and which replicas take reads.</summary>
public sealed class HealthBookTests
{
    private const long Window = 10_000;

    private static DataNodeStatus Status(string role = "replica", long lsn = 10, string? diverged = null) =>
        new("node", role, Epoch: 1, Lsn: lsn, FencedBy: 0, Master: role == "replica" ? "m:1" : null, Connected: true, MasterLsn: lsn, Diverged: diverged);

    [Fact]
    public void Without_samples_there_is_no_lag()
    {
        var shard = new ShardHealth();
        Assert.Equal(0, shard.LagMs(5_000, 0));
        Assert.Equal(0, shard.LagMs(5_000, -1));
    }

    [Fact]
    public void A_caught_up_replica_has_no_lag()
    {
        var shard = new ShardHealth();
        shard.SampleMaster(1_000, 10, Window);
        shard.SampleMaster(2_000, 20, Window);
        Assert.Equal(0, shard.LagMs(2_500, 20));
        Assert.Equal(0, shard.LagMs(2_500, 25));
    }

    [Fact]
    public void Lag_is_the_age_of_the_first_master_sample_above_the_replica()
    {
        var shard = new ShardHealth();
        shard.SampleMaster(1_000, 10, Window);
        shard.SampleMaster(2_000, 20, Window);
        shard.SampleMaster(3_000, 30, Window);
        Assert.Equal(2_500, shard.LagMs(3_500, 9));
        Assert.Equal(1_500, shard.LagMs(3_500, 10));
        Assert.Equal(1_500, shard.LagMs(3_500, 19));
        Assert.Equal(500, shard.LagMs(3_500, 29));
        Assert.Equal(0, shard.LagMs(3_500, 30));

        // The lag grows with time while the replica stands still.
        Assert.Equal(2_500, shard.LagMs(4_500, 19));

        // A clock behind the samples never gives a negative lag.
        Assert.Equal(0, shard.LagMs(500, 9));
    }

    [Fact]
    public void An_unchanged_master_lsn_keeps_its_first_sample()
    {
        var shard = new ShardHealth();
        shard.SampleMaster(1_000, 10, Window);
        shard.SampleMaster(2_000, 10, Window);
        shard.SampleMaster(3_000, 10, Window);

        // The replica has lacked LSN 10 since the master first reported it.
        Assert.Equal(3_000, shard.LagMs(4_000, 9));
        Assert.Equal(0, shard.LagMs(4_000, 10));
    }

    [Fact]
    public void Old_samples_leave_the_window_but_two_always_stay()
    {
        var shard = new ShardHealth();
        for (long t = 0; t <= 1_000; t += 100)
        {
            shard.SampleMaster(t, t + 1, 250);
        }

        // Samples older than 750 ms are gone: the oldest left is (800, 801).
        Assert.Equal(200, shard.LagMs(1_000, 0));
        Assert.Equal(200, shard.LagMs(1_000, 800));
        Assert.Equal(100, shard.LagMs(1_000, 801));

        // With samples far apart, the last two stay however old they are.
        var sparse = new ShardHealth();
        sparse.SampleMaster(0, 1, 250);
        sparse.SampleMaster(10_000, 2, 250);
        Assert.Equal(10_000, sparse.LagMs(10_000, 0));
        Assert.Equal(0, sparse.LagMs(10_000, 1));
        sparse.SampleMaster(20_000, 3, 250);
        Assert.Equal(10_000, sparse.LagMs(20_000, 0));
    }

    [Fact]
    public void Reset_forgets_the_samples()
    {
        var shard = new ShardHealth();
        shard.SampleMaster(1_000, 10, Window);
        Assert.Equal(1_000, shard.LagMs(2_000, 0));
        shard.ResetSamples();
        Assert.Equal(0, shard.LagMs(2_000, 0));
        shard.SampleMaster(3_000, 5, Window);
        Assert.Equal(500, shard.LagMs(3_500, 4));
    }

    [Fact]
    public void A_healthy_caught_up_replica_is_in_rotation()
    {
        var book = new HealthBook();
        var node = book.Node("10.0.0.1:7000");
        node.Up = true;
        node.Status = Status(lsn: 10);
        node.LagMs = 0;
        Assert.True(book.InRotation("10.0.0.1:7000", 0, 1_000));
        Assert.True(book.InRotation("10.0.0.1:7000", 10, 1_000));
        Assert.False(book.InRotation("10.0.0.1:7000", 11, 1_000));

        // Addresses match case-insensitively; unknown ones are out.
        Assert.Same(node, book.Node("10.0.0.1:7000"));
        Assert.False(book.InRotation("10.0.0.2:7000", 0, 1_000));
        Assert.False(book.TryGetNode("10.0.0.2:7000", out _));
        var named = book.Node("Db1.Example:7000");
        named.Up = true;
        named.Status = Status();
        Assert.True(book.InRotation("db1.example:7000", 0, 1_000));
        Assert.True(book.TryGetNode("DB1.EXAMPLE:7000", out var found));
        Assert.Same(named, found);
    }

    [Fact]
    public void Lag_over_the_bound_takes_a_replica_out()
    {
        var book = new HealthBook();
        var node = book.Node("r:1");
        node.Up = true;
        node.Status = Status();
        node.LagMs = 1_000;
        Assert.True(book.InRotation("r:1", 0, 1_000));
        node.LagMs = 1_001;
        Assert.False(book.InRotation("r:1", 0, 1_000));
        Assert.True(book.InRotation("r:1", 0, 5_000));
    }

    [Fact]
    public void Down_diverged_masters_and_unprobed_nodes_are_out()
    {
        var book = new HealthBook();

        var unprobed = book.Node("a:1");
        unprobed.Up = true;
        Assert.False(book.InRotation("a:1", 0, 1_000));

        var down = book.Node("b:1");
        down.Status = Status();
        down.Up = false;
        Assert.False(book.InRotation("b:1", 0, 1_000));
        down.Up = true;
        Assert.True(book.InRotation("b:1", 0, 1_000));

        var diverged = book.Node("c:1");
        diverged.Up = true;
        diverged.Status = Status(diverged: "history differs at LSN 7");
        Assert.False(book.InRotation("c:1", 0, 1_000));

        var master = book.Node("d:1");
        master.Up = true;
        master.Status = Status(role: "master");
        Assert.False(book.InRotation("d:1", 0, 1_000));

        var other = book.Node("e:1");
        other.Up = true;
        other.Status = Status(role: "fenced");
        Assert.False(book.InRotation("e:1", 0, 1_000));

        var walFailed = book.Node("f:1");
        walFailed.Up = true;
        walFailed.Status = Status() with { WalSyncFailed = "fdatasync: EIO" };
        Assert.False(book.InRotation("f:1", 0, 1_000));
    }

    private static (string, DataNodeStatus) Replica(string address, long lsn, long durable = -1, string? diverged = null, string? walFailed = null, string role = "replica", long lastEpoch = 1) =>
        (address, Status(role: role, lsn: lsn, diverged: diverged) with { DurableLsn = durable < 0 ? lsn : durable, WalSyncFailed = walFailed, LastEntryEpoch = lastEpoch });

    [Fact]
    public void A_choice_overtaken_between_the_status_read_and_the_claims_is_noticed()
    {
        // Statuses are read before the claims; a replica can apply (and confirm) more in between, and the
        // claims' answers are the positions the voters keep from then on.
        var before = Replica("a:1", 50).Item2;
        Assert.Null(FailoverMonitor.OvertakenBy([Replica("a:1", 52), Replica("b:1", 52)], "a:1", before)); // a tie is no overtaking
        Assert.Equal("b:1", FailoverMonitor.OvertakenBy([Replica("a:1", 52), Replica("b:1", 53)], "a:1", before));
        Assert.Equal("b:1", FailoverMonitor.OvertakenBy([Replica("b:1", 40, lastEpoch: 2)], "a:1", before)); // a newer epoch outranks; a:1 did not answer
        Assert.Null(FailoverMonitor.OvertakenBy([Replica("b:1", 49)], "a:1", before));
        Assert.Null(FailoverMonitor.OvertakenBy([Replica("a:1", 60), Replica("b:1", 70, diverged: "history differs")], "a:1", before));
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(2, 1, 2)]
    [InlineData(3, 1, 3)] // was 2: two voters that never had a write one replica confirmed could elect one of them
    [InlineData(3, 2, 2)]
    [InlineData(5, 2, 4)]
    [InlineData(5, 3, 3)]
    [InlineData(3, 0, 2)] // asynchronous: a majority
    [InlineData(2, 5, 2)] // more confirmations than replicas (no write is acknowledged): still a majority
    public void A_failover_s_voters_include_a_confirmer_of_every_acknowledged_write(int replicas, int syncReplicas, int needed) =>
        Assert.Equal(needed, FailoverMonitor.VotesNeeded(replicas, syncReplicas));

    [Fact]
    public void Failover_promotes_the_most_applied_replica_that_can_write()
    {
        var chosen = FailoverMonitor.ChooseCandidate([Replica("b:1", 40), Replica("a:1", 50, durable: 45), Replica("c:1", 50)], out _);
        Assert.Equal("a:1", chosen?.Address);

        // Diverged, or with a failed WAL fsync below what the best has: left out.
        chosen = FailoverMonitor.ChooseCandidate([Replica("a:1", 60, diverged: "history differs"), Replica("b:1", 70, durable: 30, walFailed: "EIO"), Replica("c:1", 50)], out _);
        Assert.Equal("c:1", chosen?.Address);
    }

    [Fact]
    public void Failover_ranks_histories_by_their_last_entry_epoch_before_their_lsn()
    {
        // m:1, the master of epoch 1, came back after b:1 replaced it (epoch 2) and has not been told to
        // follow yet: its log is longer (60: its unconfirmed tail of epoch 1) but older than b:1's
        // replica c:1, which holds b:1's acknowledged writes of epoch 2. b:1 is down again.
        var chosen = FailoverMonitor.ChooseCandidate([Replica("m:1", 60, role: "master", lastEpoch: 1), Replica("c:1", 55, lastEpoch: 2)], out _);
        Assert.Equal("c:1", chosen?.Address);

        // Within one epoch the longer log wins, as before.
        chosen = FailoverMonitor.ChooseCandidate([Replica("c:1", 55, lastEpoch: 2), Replica("d:1", 57, lastEpoch: 2), Replica("m:1", 60, role: "master", lastEpoch: 1)], out _);
        Assert.Equal("d:1", chosen?.Address);

        // A failed replica whose history is newer than every candidate's blocks, however short its log.
        Assert.Null(FailoverMonitor.ChooseCandidate([Replica("f:1", 52, walFailed: "EIO", lastEpoch: 2), Replica("m:1", 60, role: "master", lastEpoch: 1)], out var why));
        Assert.Contains("f:1", why, StringComparison.Ordinal);

        // One with an older history does not, however long its log.
        Assert.Equal("c:1", FailoverMonitor.ChooseCandidate([Replica("f:1", 70, walFailed: "EIO", lastEpoch: 1), Replica("c:1", 55, lastEpoch: 2)], out _)?.Address);
    }

    [Fact]
    public void Failover_does_not_promote_past_a_failed_replica_holding_more_on_its_disk()
    {
        // b:1 acknowledged up to 55 before its fsync failed; c:1 has only 50: promoting c:1 could lose 51..55.
        var chosen = FailoverMonitor.ChooseCandidate([Replica("b:1", 60, durable: 55, walFailed: "EIO"), Replica("c:1", 50)], out var why);
        Assert.Null(chosen);
        Assert.Contains("b:1", why, StringComparison.Ordinal);
        Assert.Contains("restart", why, StringComparison.Ordinal);

        // An old master whose fsync failed (moved among the replicas by the failover that replaced it)
        // holds its own unacknowledged tail: it does not block the next promotion.
        Assert.Equal("c:1", FailoverMonitor.ChooseCandidate([Replica("m:1", 60, walFailed: "EIO", role: "master"), Replica("c:1", 50)], out _)?.Address);

        Assert.Null(FailoverMonitor.ChooseCandidate([Replica("b:1", 60, walFailed: "EIO")], out why));
        Assert.Contains("fsync failed", why, StringComparison.Ordinal);
        Assert.Null(FailoverMonitor.ChooseCandidate([], out why));
        Assert.Contains("no replica answered", why, StringComparison.Ordinal);
    }

    [Fact]
    public void Shards_are_tracked_by_exact_id()
    {
        var book = new HealthBook();
        var a = book.Shard("a");
        Assert.Same(a, book.Shard("a"));
        Assert.NotSame(a, book.Shard("A"));
        a.SampleMaster(0, 1, Window);
        Assert.Equal(0, book.Shard("A").LagMs(100, 0));
        Assert.Equal(100, book.Shard("a").LagMs(100, 0));
    }
}
