using Infra.DataNode.Storage;

namespace Infra.DataNode.Tests;

/// <summary>The in-memory tail of recent log entries that replication streams read first.</summary>
public sealed class LogTailTests
{
    private static LogRecord Entry(long lsn, int bodyBytes = 8) => LogRecord.Create(lsn, 1, new byte[bodyBytes], 0);

    [Fact]
    public void Reads_consecutive_entries_up_to_the_limit_and_the_last_committed()
    {
        var tail = new LogTail();
        for (var lsn = 1; lsn <= 10; lsn++)
        {
            tail.Add(Entry(lsn));
        }

        Assert.Equal([3L, 4, 5], tail.TryRead(3, 3, last: 10)!.Select(e => e.Lsn));
        Assert.Equal([8L, 9], tail.TryRead(8, 100, last: 9)!.Select(e => e.Lsn));
        Assert.Null(tail.TryRead(11, 10, last: 20));
        Assert.Null(tail.TryRead(5, 10, last: 4));
    }

    [Fact]
    public void A_slot_reused_by_a_later_lsn_a_gap_or_a_large_body_is_a_miss()
    {
        var tail = new LogTail();
        tail.Add(Entry(1));
        tail.Add(Entry(1 + LogTail.Capacity));
        Assert.Null(tail.TryRead(1, 10, last: 2 * LogTail.Capacity));
        Assert.Single(tail.TryRead(1 + LogTail.Capacity, 10, last: 2 * LogTail.Capacity)!);

        tail.Add(Entry(5));
        tail.Add(Entry(7));
        Assert.Equal([5L], tail.TryRead(5, 10, last: 7)!.Select(e => e.Lsn)); // 6 is missing: stops there

        tail.Add(Entry(6, LogTail.MaxBodyBytes + 1));
        Assert.Null(tail.TryRead(6, 10, last: 7));
        Assert.Equal([5L], tail.TryRead(5, 10, last: 7)!.Select(e => e.Lsn));

        tail.Clear();
        Assert.Null(tail.TryRead(5, 10, last: 7));
    }
}
