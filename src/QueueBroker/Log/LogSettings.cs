namespace Infra.QueueBroker.Log;

/// <summary>When an append counts as done.</summary>
public enum FsyncMode
{
    /// <summary>Acknowledge after fsync (group commit: one fsync covers every append made meanwhile).</summary>
    Always,

    /// <summary>Acknowledge after write(2); fsync every interval. A machine crash loses up to one interval.</summary>
    Interval,

    /// <summary>Acknowledge after write(2); fsync only on segment roll and clean shutdown. Unsafe on power loss.</summary>
    Never,
}

/// <summary>Settings of one partition log.</summary>
internal sealed record LogSettings
{
    public FsyncMode Fsync { get; init; } = FsyncMode.Always;

    public TimeSpan FsyncInterval { get; init; } = TimeSpan.FromMilliseconds(10);

    /// <summary>Roll to a new segment when the active one would pass this many bytes.</summary>
    public long SegmentBytes { get; init; } = 64L << 20;

    /// <summary>Roll a non-empty active segment this old (zero = never by age).</summary>
    public TimeSpan SegmentAge { get; init; } = TimeSpan.FromHours(1);

    /// <summary>Delete the oldest whole segments while the log is bigger than this (-1 = no limit).</summary>
    public long RetentionBytes { get; init; } = -1;

    /// <summary>Delete whole segments last written longer ago than this (zero = keep forever).</summary>
    public TimeSpan RetentionAge { get; init; } = TimeSpan.FromDays(7);

    public int IndexIntervalBytes { get; init; } = 4096;

    /// <summary>
    /// Reserve each new segment's space up front (fallocate, zero-filled), so appends do not grow the
    /// file and each fdatasync writes the data only. A segment is cut to its data when it rolls.
    /// </summary>
    public bool Preallocate { get; init; } = true;

    /// <summary>Appended bytes not yet written and fsync'd beyond which appends answer Busy.</summary>
    public int MaxPendingBytes { get; init; } = 32 << 20;

    /// <summary>Largest batch recovery accepts as plausible (a bigger length field is corruption).</summary>
    public int MaxBatchBytes { get; init; } = 64 << 20;

    /// <summary>
    /// For a consumer group's own state log: the same durability, small segments (compaction drops
    /// whole ones) and no retention or age roll (its records are only dropped by compaction).
    /// </summary>
    public LogSettings ForGroupState() => this with { SegmentBytes = 4L << 20, RetentionBytes = -1, RetentionAge = TimeSpan.Zero, SegmentAge = TimeSpan.Zero };

    /// <summary>How often the recovery point (where a restart starts scanning) moves forward.</summary>
    public TimeSpan RecoveryPointInterval { get; init; } = TimeSpan.FromSeconds(5);
}
