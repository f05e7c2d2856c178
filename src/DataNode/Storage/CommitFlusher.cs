using Infra.Core.Threading;
using Infra.DataNode.Replication;
using Microsoft.Extensions.Logging;

namespace Infra.DataNode.Storage;

/// <summary>
/// Makes the writer's commits durable off the writer thread (pipelined group commit). The writer
/// commits a group — SQLite writes its WAL frames without syncing them (<see cref="NodeDatabase.SyncsWal"/>)
/// — hands it here and goes on with the next group while this thread fsyncs the WAL once for every
/// commit made meanwhile. A group's callback runs once an fsync that began after its commit has
/// returned; <see cref="Durable"/> is the LSN so covered, which is all a master ships to its replicas
/// (a replica never holds an entry its master could lose) and all a replica acknowledges.
/// <para>
/// Before, the writer fsynced inside each COMMIT and the next group waited for it: at 16 clients
/// under semi-sync the master's writer was busy in fsync while the group after it formed.
/// </para>
/// <para>
/// A failed fsync is never retried (the kernel may have dropped the pages it could not write):
/// <see cref="Failure"/> is set, every waiting and later callback gets it, <see cref="Durable"/>
/// stops, and the node refuses writes until it is restarted (recovery reads what is on disk).
/// </para>
/// </summary>
internal sealed partial class CommitFlusher : IDisposable
{
    private readonly NodeDatabase _db;
    private readonly ILogger _logger;
    private readonly Lock _lock = new(); // _pending, and _failure's hand-over to it
    private readonly Lock _syncLock = new(); // one fsync at a time
    private readonly Queue<(long Seq, Action<Exception?> Done)> _pending = new();
    private readonly WakeSignal _committed = new();
    private readonly Thread? _thread;
    private long _commits;
    private long _synced; // the commit count the last fsync covered
    private long _syncs;
    private volatile Exception? _failure;
    private volatile bool _closed;

    public CommitFlusher(NodeDatabase db, ILogger logger)
    {
        _db = db;
        _logger = logger;
        // A process killed after a commit and before its fsync leaves the commit in the page cache, and
        // SQLite's recovery reads it back without syncing it: sync once before anything counts as on disk.
        Durable = new ProgressWaiters(db.SyncWal());
        if (db.SyncsWal)
        {
            _thread = new Thread(Run) { IsBackground = true, Name = "datanode-flusher" };
            _thread.Start();
        }
    }

    /// <summary>The LSN known to be on disk (under <c>--synchronous normal</c>: committed, not synced).</summary>
    public ProgressWaiters Durable { get; }

    /// <summary>The fsync failure that stopped this node's writes, if one did.</summary>
    public Exception? Failure => _failure;

    /// <summary>
    /// True once <paramref name="lsn"/> is on disk; false after <paramref name="timeout"/>, or as soon as
    /// the WAL fsync has failed (then it never will be) — also when the failure landed just before this
    /// wait was queued, after <see cref="Fail"/> had woken the waiters it found.
    /// </summary>
    public async Task<bool> UntilDurableAsync(long lsn, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var wait = Durable.WaitAsync(lsn, timeout, cancellationToken); // queued before it returns
        if (!wait.IsCompleted && Failure is not null)
        {
            Durable.ReleaseAll();
        }

        return await wait;
    }

    /// <summary>WAL fsyncs so far (each covers every commit made before it began).</summary>
    public long Syncs => Interlocked.Read(ref _syncs);

    /// <summary>
    /// The writer calls this after each commit it does not sync itself; <paramref name="done"/> (may be
    /// null) runs on the flusher's thread once the commit is durable, with the failure if it cannot be.
    /// </summary>
    public void Committed(Action<Exception?>? done)
    {
        if (!_db.SyncsWal)
        {
            Durable.Advance(_db.Lsn);
            done?.Invoke(_failure);
            return;
        }

        lock (_lock)
        {
            var seq = Interlocked.Increment(ref _commits);
            if (done is not null)
            {
                if (_failure is { } failure)
                {
                    done(failure);
                }
                else if (_closed)
                {
                    done(new ObjectDisposedException(nameof(CommitFlusher), "the node is shutting down"));
                }
                else
                {
                    _pending.Enqueue((seq, done));
                }
            }
        }

        _committed.Set();
    }

    /// <summary>
    /// Syncs now, on the calling thread (the writer, after work that must be durable before it answers:
    /// an epoch, a role, a truncation, a re-clone), and sets <see cref="Durable"/> to the database's LSN
    /// even when that went down. Throws the fsync's failure.
    /// </summary>
    public void SyncNow()
    {
        if (!Sync(reset: true))
        {
            throw new IOException("a WAL fsync failed; this node takes no writes until it is restarted", _failure);
        }
    }

    private void Run()
    {
        while (!_closed)
        {
            _committed.Wait(Timeout.InfiniteTimeSpan);
            if (Interlocked.Read(ref _commits) > Volatile.Read(ref _synced))
            {
                Sync(reset: false);
            }
        }
    }

    // One fsync at a time (the flusher's, or the writer's), and none after one failed: the rule that a
    // failed fsync is never retried lives here. The commits counted before it starts were made before
    // it, so it covers them; their callbacks run after it. _lock is not held meanwhile: the writer goes
    // on committing and counting.
    private bool Sync(bool reset)
    {
        lock (_syncLock)
        {
            return SyncLocked(reset);
        }
    }

    private bool SyncLocked(bool reset)
    {
        if (_failure is not null)
        {
            return false;
        }

        var seq = Interlocked.Read(ref _commits);
        try
        {
            var lsn = _db.SyncWal();
            Interlocked.Increment(ref _syncs);
            if (reset)
            {
                Durable.Reset(lsn);
            }
            else
            {
                Durable.Advance(lsn);
            }
        }
        catch (Exception ex)
        {
            Fail(ex);
            return false;
        }

        Volatile.Write(ref _synced, seq);
        lock (_lock)
        {
            while (_pending.TryPeek(out var item) && item.Seq <= seq)
            {
                _pending.Dequeue();
                item.Done(null);
            }
        }

        return true;
    }

    private void Fail(Exception ex)
    {
        lock (_lock)
        {
            _failure = ex;
            while (_pending.TryDequeue(out var item))
            {
                item.Done(ex);
            }
        }

        LogSyncFailed(_logger, ex);
        Durable.ReleaseAll();
    }

    /// <summary>Stops the thread after a last sync of what was committed (call before the database is closed).</summary>
    public void Dispose()
    {
        _closed = true;
        _committed.Set();
        if (_thread is not null && !_thread.Join(TimeSpan.FromSeconds(30)))
        {
            // An fsync that does not return: leave the thread (and its signal) alone.
            return;
        }

        if (_db.SyncsWal && Interlocked.Read(ref _commits) > Volatile.Read(ref _synced))
        {
            Sync(reset: false);
        }

        lock (_lock)
        {
            while (_pending.TryDequeue(out var item))
            {
                item.Done(new ObjectDisposedException(nameof(CommitFlusher)));
            }
        }

        _committed.Dispose();
    }

    [LoggerMessage(EventId = 606, Level = LogLevel.Critical, Message = "A WAL fsync failed: this node takes no more writes and acknowledges nothing more until it is restarted (fsync is not retried)")]
    private static partial void LogSyncFailed(ILogger logger, Exception exception);
}
