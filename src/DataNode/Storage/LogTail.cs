namespace Infra.DataNode.Storage;

/// <summary>
/// The most recent log entries in memory, by LSN, so that a master's replication streams read what was
/// just committed without a SQLite read transaction per batch (one took ~90 µs for a batch of five).
/// Entries are added once their transaction has committed and the whole tail is forgotten whenever the
/// log's history is rewritten (a rollback to a fork point, a re-clone, a reopen); a miss, a gap or an
/// entry too large to keep falls back to the log table. Any thread.
/// </summary>
internal sealed class LogTail
{
    /// <summary>Bodies larger than this are not kept (the tail holds at most <see cref="Capacity"/> × this).</summary>
    public const int MaxBodyBytes = 16 << 10;

    public const int Capacity = 1024;

    private readonly LogRecord?[] _slots = new LogRecord?[Capacity];
    private readonly Lock _lock = new();

    /// <summary>Adds a committed batch (in LSN order), under one lock.</summary>
    public void Add(params IEnumerable<LogRecord> entries)
    {
        lock (_lock)
        {
            foreach (var entry in entries)
            {
                _slots[Slot(entry.Lsn)] = entry.Body.Length <= MaxBodyBytes ? entry : null;
            }
        }
    }

    public void Clear()
    {
        lock (_lock)
        {
            Array.Clear(_slots);
        }
    }

    /// <summary>Up to <paramref name="max"/> consecutive entries from <paramref name="from"/> (past the first, up to <paramref name="maxBytes"/> of bodies), none above <paramref name="last"/>; null when the first is not here.</summary>
    public List<LogRecord>? TryRead(long from, int max, long last, long maxBytes = long.MaxValue)
    {
        lock (_lock)
        {
            List<LogRecord>? found = null;
            var bytes = 0L;
            for (var lsn = from; lsn <= last && (found?.Count ?? 0) < max; lsn++)
            {
                if (_slots[Slot(lsn)] is not { } entry || entry.Lsn != lsn)
                {
                    break;
                }

                bytes += entry.Body.Length;
                if (bytes > maxBytes && found is not null)
                {
                    break;
                }

                (found ??= []).Add(entry);
            }

            return found;
        }
    }

    private static int Slot(long lsn) => (int)(lsn % Capacity);
}
