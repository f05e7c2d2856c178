using Infra.Client.Data;
using Infra.ShardRouter.Placement;
using Infra.ShardRouter.Routing;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Infra.ShardRouter.Failover;

/// <summary>
/// Probes every data node each interval (<c>status</c>, with a timeout). Replicas that fail, diverge,
/// cannot sync their WAL or lag beyond the bound leave the read rotation until they recover. A master
/// that fails K probes in a row (unreachable, or unfit: not master, fenced, its WAL fsync failed) is
/// replaced: the reachable replica with the most recent history (the epoch of its last entry, then its
/// applied LSN: <see cref="ChooseCandidate"/>) is
/// chosen, epoch + 1 is claimed for it on the shard's replicas (each node votes once per epoch, so two
/// routers cannot both win it), it is promoted, the others are repointed to it, and the map is updated.
/// Nodes that come back on the wrong side (an old master, a replica following someone else) are told to
/// follow the shard's master; a newer master found on a shard's node (another router's failover) is adopted.
/// </summary>
internal sealed partial class FailoverMonitor(Router router, TimeProvider time, ILogger<FailoverMonitor> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var interval = router.Options.ProbeInterval;
        while (!stoppingToken.IsCancellationRequested)
        {
            var started = time.GetTimestamp();
            try
            {
                await ProbeOnceAsync(stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception ex) when (ex is DataException or RouterException or IOException or InvalidOperationException)
            {
                LogProbeRoundFailed(logger, ex);
            }

            var left = interval - time.GetElapsedTime(started);
            if (left > TimeSpan.Zero)
            {
                try
                {
                    await Task.Delay(left, time, stoppingToken);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }
        }
    }

    /// <summary>One round: probe every node, then act per shard.</summary>
    public async Task ProbeOnceAsync(CancellationToken cancellationToken)
    {
        var map = router.Map;
        var addresses = map.Shards.SelectMany(s => s.Nodes).Distinct(StringComparer.OrdinalIgnoreCase).ToList();
        await Task.WhenAll(addresses.Select(a => ProbeAsync(a, cancellationToken)));
        foreach (var shard in map.Shards)
        {
            await CheckShardAsync(shard, cancellationToken);
        }
    }

    private async Task ProbeAsync(string address, CancellationToken cancellationToken)
    {
        var health = router.Health.Node(address);
        try
        {
            var status = await router.Pool[address].CallAsync(c => c.StatusAsync(), router.Options.ProbeTimeout, cancellationToken);
            health.Status = status;
            health.Up = true;
            health.Failures = 0;
            health.LastError = null;
            health.LastOkMs = time.GetUtcNow().ToUnixTimeMilliseconds();
        }
        catch (DataException ex)
        {
            health.Up = false;
            health.Failures++;
            health.LastError = ex.Message;
        }
    }

    private async Task CheckShardAsync(ShardInfo shard, CancellationToken cancellationToken)
    {
        var state = router.Health.Shard(shard.Id);
        if (state.FailingOver)
        {
            return;
        }

        var now = time.GetUtcNow().ToUnixTimeMilliseconds();
        var master = router.Health.Node(shard.Master);

        // Another router (or an operator) may have moved the shard on: adopt a newer master.
        if (shard.Nodes.Select(a => router.Health.Node(a)).FirstOrDefault(h => h.Up && h.Status is { IsMaster: true, FencedBy: 0 } s && s.Epoch > shard.Epoch) is { } newer)
        {
            await AdoptAsync(shard, newer.Address, newer.Status!.Epoch);
            return;
        }

        // A master whose WAL fsync failed refuses every write until restarted: as good as failed.
        var masterOk = master.Up && master.Status is { IsMaster: true, WalSyncFailed: null } ms && ms.Epoch == shard.Epoch && ms.FencedBy == 0;
        if (masterOk)
        {
            master.NotMaster = 0;
            state.SampleMaster(now, master.Status!.Lsn, (long)router.Options.MaxReplicaLag.TotalMilliseconds * 4);
        }
        else if (master.Up)
        {
            // It answers but is not this epoch's master (stepped down, fenced), or cannot write: as good as failed.
            master.NotMaster++;
        }

        foreach (var address in shard.Replicas)
        {
            var replica = router.Health.Node(address);
            if (replica.Status is { } status && replica.Up)
            {
                replica.LagMs = state.LagMs(now, status.Lsn);
                if (masterOk && NeedsRepointing(status, shard))
                {
                    StartRepoint(shard.Id, address, shard.Master, shard.Epoch, cancellationToken);
                }
            }
        }

        if (!masterOk && Math.Max(master.Failures, master.NotMaster) >= router.Options.FailAfter)
        {
            StartFailover(shard, cancellationToken);
        }
    }

    /// <summary>
    /// Fails the shard over in the background: its calls to the replicas (claims, the promotion) may each
    /// take up to the request timeout, and the probe rounds must go on detecting failures of the other
    /// shards meanwhile. The shard is skipped by the rounds while it fails over (its lock and flag).
    /// </summary>
    private void StartFailover(ShardInfo shard, CancellationToken cancellationToken) =>
        _ = Task.Run(
            async () =>
            {
                try
                {
                    await FailoverAsync(shard, cancellationToken);
                }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    // The router is stopping.
                }
                catch (Exception ex) when (ex is RouterException or IOException or InvalidOperationException)
                {
                    LogFailoverFailed(logger, shard.Id, ex.Message);
                }
            },
            CancellationToken.None);

    /// <summary>
    /// An old master back at an older epoch, or a replica that is not streaming and points at another
    /// node (a connected one is left alone: its master may just be spelled differently).
    /// </summary>
    private static bool NeedsRepointing(DataNodeStatus status, ShardInfo shard) =>
        status.Epoch <= shard.Epoch && status.WalSyncFailed is null && (status.IsMaster || (!status.Connected && !string.Equals(status.Master, shard.Master, StringComparison.OrdinalIgnoreCase)));

    /// <summary>
    /// Tells a node to follow the shard's master, in the background: a node that hangs on the call (up to
    /// the request timeout) must hold up neither the probe rounds, which detect failed masters of every
    /// shard, nor a failover's return to service. One call per node at a time; a node still on the wrong
    /// side after it is told again by a later round.
    /// </summary>
    private void StartRepoint(string shardId, string address, string master, long epoch, CancellationToken cancellationToken)
    {
        var health = router.Health.Node(address);
        if (Interlocked.Exchange(ref health.Repointing, 1) != 0)
        {
            return;
        }

        _ = Task.Run(
            async () =>
            {
                try
                {
                    await router.Pool[address].CallAsync(c => c.FollowAsync(master, epoch, token: router.Options.NodeToken), router.Options.RequestTimeout, cancellationToken);
                    LogRepointed(logger, shardId, address, master, epoch);
                }
                catch (DataException ex)
                {
                    LogRepointFailed(logger, shardId, address, ex.Message);
                }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    // The router is stopping.
                }
                finally
                {
                    Volatile.Write(ref health.Repointing, 0);
                }
            },
            CancellationToken.None);
    }

    private async Task AdoptAsync(ShardInfo shard, string address, long epoch)
    {
        await router.UpdateMapAsync(map => map.Find(shard.Id) is { } current && current.Epoch < epoch
            ? map.WithShard(current with { Master = address, Replicas = [.. current.Nodes.Where(n => !string.Equals(n, address, StringComparison.OrdinalIgnoreCase))], Epoch = epoch })
            : map);
        router.Health.Shard(shard.Id).ResetSamples();
        LogAdopted(logger, shard.Id, address, epoch);
    }

    /// <summary>Replaces the master of <paramref name="shard"/>; writes to it fail fast meanwhile.</summary>
    public async Task<bool> FailoverAsync(ShardInfo shard, CancellationToken cancellationToken)
    {
        var state = router.Health.Shard(shard.Id);
        if (!await state.FailoverLock.WaitAsync(0, cancellationToken))
        {
            return false;
        }

        state.FailingOver = true;
        var started = time.GetTimestamp();
        try
        {
            var current = router.Map.Find(shard.Id);
            if (current is null || current.Epoch != shard.Epoch || current.Master != shard.Master)
            {
                return false;
            }

            // Where is every replica now?
            var statuses = new List<(string Address, DataNodeStatus Status)>();
            foreach (var address in shard.Replicas)
            {
                try
                {
                    var status = await router.Pool[address].CallAsync(c => c.StatusAsync(), router.Options.ProbeTimeout, cancellationToken);
                    statuses.Add((address, status));
                }
                catch (DataException)
                {
                    // Unreachable: it cannot be promoted, nor vote.
                }
            }

            if (ChooseCandidate(statuses, out var why) is not var (chosen, chosenStatus))
            {
                if (state.LastFailover?.StartsWith("no candidate", StringComparison.Ordinal) != true)
                {
                    LogNoCandidate(logger, shard.Id, shard.Master, why);
                }

                state.LastFailover = $"no candidate since {time.GetUtcNow():O}: {why}";
                router.Metrics.Failovers.Add(1, new("shard", shard.Id), new("outcome", "no_candidate"));
                return false;
            }

            var oldMaster = router.Health.Node(shard.Master).Status?.Epoch ?? 0;
            var epoch = Math.Max(Math.Max(shard.Epoch, oldMaster), statuses.Max(s => s.Status.Epoch)) + 1;

            // Claim the epoch for the chosen node on the replicas: a majority must agree.
            var votes = 0;
            var positions = new List<(string Address, DataNodeStatus Status)>();
            foreach (var (address, _) in statuses)
            {
                try
                {
                    positions.Add((address, await router.Pool[address].CallAsync(c => c.ClaimAsync(epoch, chosenStatus.NodeId, router.Options.NodeToken), router.Options.RequestTimeout, cancellationToken)));
                    votes++;
                }
                catch (DataException ex)
                {
                    LogClaimRefused(logger, shard.Id, address, epoch, ex.Message);
                }
            }

            var needed = VotesNeeded(shard.Replicas.Count, router.Health.Node(shard.Master).Status?.SyncReplicas ?? 1);
            if (votes < needed)
            {
                LogNoMajority(logger, shard.Id, epoch, votes, needed);
                router.Metrics.Failovers.Add(1, new("shard", shard.Id), new("outcome", "no_majority"));
                return false;
            }

            // A voter stops taking the old master's entries when it votes, so the claims' answers are where the
            // voters stay. The statuses the choice was made from were read before: a replica may have applied
            // (and acknowledged) more since. If the chosen node is not still the furthest, this round ends; the
            // next one reads the positions the claims froze and claims a newer epoch.
            if (OvertakenBy(positions, chosen, chosenStatus) is { } furthest)
            {
                LogCandidateOvertaken(logger, shard.Id, chosen, furthest, epoch);
                router.Metrics.Failovers.Add(1, new("shard", shard.Id), new("outcome", "overtaken"));
                return false;
            }

            var promoted = await router.Pool[chosen].CallAsync(c => c.PromoteAsync(epoch, router.Options.NodeToken), router.Options.RequestTimeout, cancellationToken);
            var others = shard.Replicas.Where(r => r != chosen).ToList();
            await router.UpdateMapAsync(map => map.Find(shard.Id) is { } now
                ? map.WithShard(now with { Master = chosen, Replicas = [.. others, shard.Master], Epoch = epoch })
                : map);
            state.ResetSamples();
            router.Health.Node(chosen).Status = promoted;
            state.FailingOver = false; // the map names the new master: its writes go there from now on
            state.Failovers++;
            state.LastFailover = $"{time.GetUtcNow():O}: {shard.Master} -> {chosen} (epoch {epoch}, LSN {promoted.Lsn}) in {time.GetElapsedTime(started).TotalMilliseconds:0} ms";
            router.Metrics.Failovers.Add(1, new("shard", shard.Id), new("outcome", "promoted"));
            LogFailedOver(logger, shard.Id, shard.Master, chosen, epoch, promoted.Lsn, time.GetElapsedTime(started).TotalMilliseconds);

            // The rest follow the new master (the old one is told when it comes back), in the background;
            // not one whose WAL fsync failed (it cannot follow until restarted; the probes tell it then).
            foreach (var address in others.Where(a => !statuses.Any(s => s.Address == a && s.Status.WalSyncFailed is not null)))
            {
                StartRepoint(shard.Id, address, chosen, epoch, cancellationToken);
            }

            return true;
        }
        catch (DataException ex)
        {
            LogFailoverFailed(logger, shard.Id, ex.Message);
            router.Metrics.Failovers.Add(1, new("shard", shard.Id), new("outcome", "failed"));
            return false;
        }
        finally
        {
            state.FailingOver = false;
            state.FailoverLock.Release();
        }
    }

    /// <summary>
    /// The replica to promote: the one with the most recent history (then the lowest address) among
    /// those that have not diverged and whose WAL fsync has not failed. Histories rank as Raft's logs do:
    /// by the epoch of their last entry, then by LSN. LSN alone is wrong once a failover has happened: an
    /// old master that came back and has not yet been told to follow can hold a longer log of the old
    /// epoch (entries no replica confirmed) than a replica holding the newer master's acknowledged
    /// writes. None, with the reason, when no replica qualifies — or when one left out for a failed fsync
    /// may hold on its disk what the best candidate lacks (a newer epoch, or more of the same one): it may
    /// be the only replica that acknowledged those writes (a replica acknowledges only what its fsync
    /// covered), so promoting past it could lose them; restarted, it can follow again.
    /// </summary>
    /// <summary>
    /// The voter whose position (from its claim's answer) ranks above the chosen node's — the chosen one's own
    /// answer, or its status from before the claims when it did not answer — or null when none does.
    /// </summary>
    internal static string? OvertakenBy(IReadOnlyList<(string Address, DataNodeStatus Status)> positions, string chosen, DataNodeStatus chosenBefore)
    {
        var mine = positions.FirstOrDefault(p => p.Address == chosen).Status ?? chosenBefore;
        return ChooseCandidate(positions, out _) is var (address, best)
            && (best.LastEntryEpoch, best.Lsn).CompareTo((mine.LastEntryEpoch, mine.Lsn)) > 0 ? address : null;
    }

    /// <summary>
    /// Votes a failover needs among <paramref name="replicas"/> replicas: a majority (two routers cannot both
    /// win), and under semi-sync with <paramref name="syncReplicas"/> confirmations per write, enough that the
    /// voters include one of any write's confirmers (replicas − K + 1): with fewer, the voters could all be
    /// replicas that never had an acknowledged write, and the new master would not have it either. (3 replicas
    /// at K = 1 need all 3; at K = 2, 2.) Asynchronous masters (K = 0) promise no such thing: a majority.
    /// </summary>
    internal static int VotesNeeded(int replicas, int syncReplicas) =>
        syncReplicas <= 0 ? (replicas / 2) + 1 : Math.Max((replicas / 2) + 1, replicas - syncReplicas + 1);

    internal static (string Address, DataNodeStatus Status)? ChooseCandidate(IReadOnlyList<(string Address, DataNodeStatus Status)> statuses, out string why)
    {
        var best = statuses.Where(s => s.Status is { Diverged: null, WalSyncFailed: null })
            .OrderByDescending(s => s.Status.LastEntryEpoch).ThenByDescending(s => s.Status.Lsn)
            .ThenBy(s => s.Address, StringComparer.Ordinal).FirstOrDefault();
        if (best.Address is null)
        {
            why = statuses.Count == 0 ? "no replica answered" : "every replica that answered has diverged or its WAL fsync failed";
            return null;
        }

        // Only a replica acknowledges (what its fsync covered); an old master whose fsync failed holds its
        // own unacknowledged tail past what its replicas confirmed, which its fork point will discard.
        // (Its last entry's epoch may be past what its disk holds; counting it anyway errs toward waiting.)
        var failed = statuses.Where(s => s.Status is { WalSyncFailed: not null, Role: "replica" })
            .OrderByDescending(s => s.Status.LastEntryEpoch).ThenByDescending(s => s.Status.DurableLsn).FirstOrDefault();
        if (failed.Address is not null
            && (failed.Status.LastEntryEpoch > best.Status.LastEntryEpoch
                || (failed.Status.LastEntryEpoch == best.Status.LastEntryEpoch && failed.Status.DurableLsn > best.Status.Lsn)))
        {
            why = $"{failed.Address}'s WAL fsync failed with LSN {failed.Status.DurableLsn} (epoch {failed.Status.LastEntryEpoch}) on its disk, past the best candidate {best.Address} at {best.Status.Lsn} (epoch {best.Status.LastEntryEpoch}): restart it";
            return null;
        }

        why = "";
        return best;
    }

    [LoggerMessage(EventId = 700, Level = LogLevel.Warning, Message = "A probe round failed")]
    private static partial void LogProbeRoundFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 701, Level = LogLevel.Warning, Message = "Shard {Shard}: failed over from {Old} to {New} (epoch {Epoch}, LSN {Lsn}) in {Ms:0} ms")]
    private static partial void LogFailedOver(ILogger logger, string shard, string old, string @new, long epoch, long lsn, double ms);

    [LoggerMessage(EventId = 702, Level = LogLevel.Error, Message = "Shard {Shard}: master {Master} is down and no replica can replace it: {Reason}")]
    private static partial void LogNoCandidate(ILogger logger, string shard, string master, string reason);

    [LoggerMessage(EventId = 703, Level = LogLevel.Warning, Message = "Shard {Shard}: {Node} refused the claim of epoch {Epoch}: {Reason}")]
    private static partial void LogClaimRefused(ILogger logger, string shard, string node, long epoch, string reason);

    [LoggerMessage(EventId = 732, Level = LogLevel.Warning, Message = "Shard {Shard}: after the claims of epoch {Epoch}, {Furthest} is further than the chosen {Chosen}; choosing again")]
    private static partial void LogCandidateOvertaken(ILogger logger, string shard, string chosen, string furthest, long epoch);

    [LoggerMessage(EventId = 704, Level = LogLevel.Error, Message = "Shard {Shard}: epoch {Epoch} got {Votes} of the {Needed} votes needed; not promoting")]
    private static partial void LogNoMajority(ILogger logger, string shard, long epoch, int votes, int needed);

    [LoggerMessage(EventId = 705, Level = LogLevel.Error, Message = "Shard {Shard}: failover failed: {Reason}")]
    private static partial void LogFailoverFailed(ILogger logger, string shard, string reason);

    [LoggerMessage(EventId = 706, Level = LogLevel.Information, Message = "Shard {Shard}: {Node} told to follow {Master} (epoch {Epoch})")]
    private static partial void LogRepointed(ILogger logger, string shard, string node, string master, long epoch);

    [LoggerMessage(EventId = 707, Level = LogLevel.Warning, Message = "Shard {Shard}: could not repoint {Node}: {Reason}")]
    private static partial void LogRepointFailed(ILogger logger, string shard, string node, string reason);

    [LoggerMessage(EventId = 708, Level = LogLevel.Warning, Message = "Shard {Shard}: adopted {Master} as master of epoch {Epoch} (found on the node)")]
    private static partial void LogAdopted(ILogger logger, string shard, string master, long epoch);
}
