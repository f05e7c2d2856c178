using System.Buffers.Binary;
using Infra.QueueBroker.Log;
using Infra.QueueBroker.Topics;
using Microsoft.Extensions.Logging;

namespace Infra.QueueBroker.Groups;

/// <summary>What a member may consume now.</summary>
internal sealed record StreamAssignment(string MemberId, int Generation, int[] Partitions);

internal sealed record StreamPartitionInfo(int Partition, long EndOffset, long Committed, long Lag, string? Owner);

internal sealed record StreamGroupInfo(int Generation, IReadOnlyList<string> Members, List<StreamPartitionInfo> Partitions);

/// <summary>
/// A Kafka-like consumer group over one topic: members join, heartbeat and leave; the broker assigns
/// partitions (round robin over members sorted by id) and bumps the generation on every change,
/// including a member that misses heartbeats for its session timeout.
/// <para>
/// A partition has at most one owner at a time. A partition moving from A to B is first revoked: A's
/// next heartbeat answer leaves it out, and only when A heartbeats with the new generation (so it has
/// seen the answer and stopped) — or A's session expires — is the partition released and handed to B.
/// Offset commits come from the owner only, never pass the committed end of the log, and are durable
/// (their own checksummed log) before they are answered.
/// </para>
/// </summary>
internal sealed partial class StreamGroup : IAsyncDisposable
{
    private const byte CommitRecord = 1;
    private const byte SnapshotRecord = 2;
    private readonly Topic _topic;
    private readonly SegmentLog _offsets;
    private readonly TimeSpan _defaultSession;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private readonly Dictionary<string, Member> _members = new(StringComparer.Ordinal);
    private readonly string?[] _owner;
    private readonly long[] _committed;
    private readonly ITimer _sweeper;
    private Dictionary<string, int[]> _target = new(StringComparer.Ordinal);
    private int _generation;
    private long _commitsSinceSnapshot;

    public StreamGroup(string name, Topic topic, ILogFileSystem fs, LogSettings settings, TimeSpan sessionTimeout, TimeProvider time, ILogger logger)
    {
        Name = name;
        _topic = topic;
        _defaultSession = sessionTimeout;
        _time = time;
        _logger = logger;
        _owner = new string?[topic.Partitions.Count];
        _committed = [.. Enumerable.Repeat(-1L, topic.Partitions.Count)];
        _offsets = SegmentLog.Open(fs, StateDirectory(topic, name),
            settings.ForGroupState(), time, logger);
        Replay();
        ClampToLogs();
        var sweep = TimeSpan.FromMilliseconds(Math.Clamp(sessionTimeout.TotalMilliseconds / 4, 10, 1000));
        _sweeper = time.CreateTimer(_ => Sweep(), null, sweep, sweep);
    }

    public string Name { get; }

    public static string StateDirectory(Topic topic, string group) => Path.Combine(topic.Directory, "groups", "stream-" + group);

    private void Replay()
    {
        for (var offset = _offsets.StartOffset; offset < _offsets.CommittedEnd;)
        {
            var records = _offsets.Read(offset, 4096, 4 << 20);
            foreach (var record in records)
            {
                var bytes = record.Payload;
                if (bytes.Length == 13 && bytes[0] == CommitRecord)
                {
                    var p = BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(1));
                    if (p >= 0 && p < _committed.Length)
                    {
                        _committed[p] = BinaryPrimitives.ReadInt64BigEndian(bytes.AsSpan(5));
                    }
                }
                else if (bytes.Length >= 1 && bytes[0] == SnapshotRecord && bytes.Length == 1 + (8 * _committed.Length))
                {
                    for (var p = 0; p < _committed.Length; p++)
                    {
                        _committed[p] = BinaryPrimitives.ReadInt64BigEndian(bytes.AsSpan(1 + (8 * p)));
                    }
                }
                else
                {
                    throw new BrokerException(ErrorCode.PartitionFailed, $"stream group {Name} of {_topic.Name}: unreadable offset record at {record.Offset}");
                }

                offset = record.Offset + 1;
            }
        }
    }

    private static LogMessage CommitOf(int partition, long offset)
    {
        var record = new byte[13];
        record[0] = CommitRecord;
        BinaryPrimitives.WriteInt32BigEndian(record.AsSpan(1), partition);
        BinaryPrimitives.WriteInt64BigEndian(record.AsSpan(5), offset);
        return new LogMessage(null, [], record);
    }

    /// <summary>
    /// Under --fsync interval or never a commit can be durable past its partition's log (a power loss took the
    /// log's last messages): the offsets past its end will be new messages, so the commit goes back to the end
    /// (fsync'd, whatever the mode; not awaited — a loss before it is durable clamps again at the next start).
    /// </summary>
    private void ClampToLogs()
    {
        for (var p = 0; p < _committed.Length; p++)
        {
            if (_topic.Partitions[p].LogOrNull is { } log && _committed[p] > log.CommittedEnd)
            {
                LogCommitAheadOfLog(_logger, Name, _topic.Name, p, _committed[p], log.CommittedEnd);
                _committed[p] = log.CommittedEnd;
                _ = _offsets.Append([CommitOf(p, log.CommittedEnd)], sync: true).Durable;
            }
        }
    }

    /// <summary>Adds a member (a new id when <paramref name="memberId"/> is null or unknown) and rebalances.</summary>
    public StreamAssignment Join(string? memberId, TimeSpan? sessionTimeout)
    {
        lock (_lock)
        {
            var session = sessionTimeout is { } s && s > TimeSpan.Zero ? s : _defaultSession;
            if (memberId is null || !_members.ContainsKey(memberId))
            {
                memberId = "m-" + Guid.NewGuid().ToString("N")[..12];
                _members[memberId] = new Member(memberId, session) { LastSeen = _time.GetTimestamp() };
                Rebalance();
                LogJoined(_logger, Name, _topic.Name, memberId, _generation);
            }

            return HeartbeatLocked(memberId, generation: -1);
        }
    }

    /// <summary>
    /// Keeps the member alive. <paramref name="generation"/> is the generation whose assignment the member
    /// is acting on: when it is the current one, partitions revoked from the member are released.
    /// </summary>
    public StreamAssignment Heartbeat(string memberId, int generation)
    {
        lock (_lock)
        {
            return HeartbeatLocked(memberId, generation);
        }
    }

    private StreamAssignment HeartbeatLocked(string memberId, int generation)
    {
        ExpireMembers();
        if (!_members.TryGetValue(memberId, out var member))
        {
            throw new BrokerException(ErrorCode.UnknownMember, $"member {memberId} is not in group {Name} (its session expired or it left): join again");
        }

        member.LastSeen = _time.GetTimestamp();
        var target = _target.GetValueOrDefault(memberId) ?? [];
        if (generation == _generation)
        {
            for (var p = 0; p < _owner.Length; p++)
            {
                if (_owner[p] == memberId && Array.IndexOf(target, p) < 0)
                {
                    _owner[p] = null;
                }
            }
        }

        var owned = new List<int>();
        foreach (var p in target)
        {
            if (_owner[p] is null)
            {
                _owner[p] = memberId;
            }

            if (_owner[p] == memberId)
            {
                owned.Add(p);
            }
        }

        return new StreamAssignment(memberId, _generation, [.. owned]);
    }

    public void Leave(string memberId)
    {
        lock (_lock)
        {
            if (_members.Remove(memberId))
            {
                Release(memberId);
                Rebalance();
                LogLeft(_logger, Name, _topic.Name, memberId, "left", _generation);
            }
        }
    }

    /// <summary>The committed offset (the next one to consume) of a partition, or -1 when none was committed.</summary>
    public long Committed(int partition)
    {
        _topic.Partition(partition);
        lock (_lock)
        {
            return _committed[partition];
        }
    }

    /// <summary>Commits <paramref name="offset"/> (the next offset to consume) for a partition the member owns; durable when this returns.</summary>
    public async Task CommitAsync(string memberId, int partition, long offset)
    {
        var log = _topic.Partition(partition).Log;
        Task durable;
        lock (_lock)
        {
            ExpireMembers();
            if (!_members.ContainsKey(memberId))
            {
                throw new BrokerException(ErrorCode.UnknownMember, $"member {memberId} is not in group {Name}: join again");
            }

            if (_owner[partition] != memberId)
            {
                throw new BrokerException(ErrorCode.NotOwner, $"member {memberId} does not own partition {partition} of {_topic.Name} (generation {_generation})");
            }

            if (offset < 0 || offset > log.CommittedEnd)
            {
                throw new BrokerException(ErrorCode.OffsetOutOfRange, $"cannot commit offset {offset}: the log's committed end is {log.CommittedEnd}");
            }

            durable = _offsets.Append([CommitOf(partition, offset)]).Durable;
            _committed[partition] = offset;
            _commitsSinceSnapshot++;
        }

        await durable;
        if (Interlocked.Read(ref _commitsSinceSnapshot) > 100_000)
        {
            await CompactAsync();
        }
    }

    private async Task CompactAsync()
    {
        AppendResult appended;
        lock (_lock)
        {
            _commitsSinceSnapshot = 0;
            var record = new byte[1 + (8 * _committed.Length)];
            record[0] = SnapshotRecord;
            for (var p = 0; p < _committed.Length; p++)
            {
                BinaryPrimitives.WriteInt64BigEndian(record.AsSpan(1 + (8 * p)), _committed[p]);
            }

            // Fsync'd whatever --fsync says: once it is durable the segments before it are deleted, and under
            // interval or never a power loss would otherwise take the whole state, not its last moments.
            appended = _offsets.Append([new LogMessage(null, [], record)], sync: true);
        }

        await appended.Durable;
        _offsets.DeleteBefore(appended.BaseOffset);
    }

    public StreamGroupInfo Describe()
    {
        lock (_lock)
        {
            var partitions = new List<StreamPartitionInfo>();
            for (var p = 0; p < _committed.Length; p++)
            {
                var log = _topic.Partitions[p].LogOrNull;
                var end = log?.CommittedEnd ?? 0;
                var from = _committed[p] >= 0 ? _committed[p] : log?.StartOffset ?? 0;
                partitions.Add(new StreamPartitionInfo(p, end, _committed[p], Math.Max(0, end - from), _owner[p]));
            }

            return new StreamGroupInfo(_generation, [.. _members.Keys.Order(StringComparer.Ordinal)], partitions);
        }
    }

    private void Sweep()
    {
        lock (_lock)
        {
            ExpireMembers();
        }
    }

    private void ExpireMembers()
    {
        List<Member>? expired = null;
        foreach (var member in _members.Values)
        {
            if (_time.GetElapsedTime(member.LastSeen) > member.SessionTimeout)
            {
                (expired ??= []).Add(member);
            }
        }

        if (expired is null)
        {
            return;
        }

        foreach (var member in expired)
        {
            _members.Remove(member.Id);
            Release(member.Id);
        }

        Rebalance();
        foreach (var member in expired)
        {
            LogLeft(_logger, Name, _topic.Name, member.Id, "missed heartbeats", _generation);
        }
    }

    private void Release(string memberId)
    {
        for (var p = 0; p < _owner.Length; p++)
        {
            if (_owner[p] == memberId)
            {
                _owner[p] = null;
            }
        }
    }

    private void Rebalance()
    {
        _generation++;
        var members = _members.Keys.Order(StringComparer.Ordinal).ToList();
        var target = new Dictionary<string, List<int>>(StringComparer.Ordinal);
        foreach (var member in members)
        {
            target[member] = [];
        }

        if (members.Count > 0)
        {
            for (var p = 0; p < _owner.Length; p++)
            {
                target[members[p % members.Count]].Add(p);
            }
        }

        _target = target.ToDictionary(kv => kv.Key, kv => kv.Value.ToArray(), StringComparer.Ordinal);
    }

    public async ValueTask DisposeAsync()
    {
        await _sweeper.DisposeAsync();
        await _offsets.DisposeAsync();
    }

    private sealed class Member(string id, TimeSpan sessionTimeout)
    {
        public string Id { get; } = id;

        public TimeSpan SessionTimeout { get; } = sessionTimeout;

        public long LastSeen { get; set; }
    }

    [LoggerMessage(EventId = 442, Level = LogLevel.Warning, Message = "Stream group {Group} of {Topic}: offset {Committed} committed for partition {Partition}, whose log ends at {End} (messages lost under --fsync interval or never); the commit goes back to the end")]
    private static partial void LogCommitAheadOfLog(ILogger logger, string group, string topic, int partition, long committed, long end);

    [LoggerMessage(EventId = 440, Level = LogLevel.Information, Message = "Stream group {Group} of {Topic}: {Member} joined (generation {Generation})")]
    private static partial void LogJoined(ILogger logger, string group, string topic, string member, int generation);

    [LoggerMessage(EventId = 441, Level = LogLevel.Information, Message = "Stream group {Group} of {Topic}: {Member} {How} (generation {Generation})")]
    private static partial void LogLeft(ILogger logger, string group, string topic, string member, string how, int generation);
}
