namespace Infra.Client.Rpc;

/// <summary>
/// Completes many tasks at once on the thread pool: their <see cref="TaskCompletionSource{T}"/>s are made
/// without <see cref="TaskCreationOptions.RunContinuationsAsynchronously"/>, and instead of one work item
/// per task (which is what that option costs: a queue operation and often a thread wake-up each) the
/// whole batch is one work item whose thread runs the continuations one after another.
/// <para>
/// The hazard of running continuations synchronously — one that blocks or runs long holds up the
/// others — is kept away by helpers: before a thread runs a continuation while others remain, it makes
/// sure a helper work item is queued, and a helper carries on with the rest. So a blocked continuation
/// delays no other one (given a free pool thread), as separately queued continuations would not; and
/// the thread that starts a batch (a connection's reader, a producer's pump) never runs user code.
/// </para>
/// </summary>
internal sealed class CompletionBatch<T> : IThreadPoolWorkItem
{
    private readonly List<Item> _items = [];
    private int _next;
    private int _helperQueued;

    public int Count => _items.Count;

    public void Add(TaskCompletionSource<T> source, T result) => _items.Add(new Item(source, result, null));

    public void Add(TaskCompletionSource<T> source, Exception error) => _items.Add(new Item(source, default, error));

    /// <summary>Hands the batch to the thread pool; nothing may be added after.</summary>
    public void Start()
    {
        if (_items.Count == 0)
        {
            return;
        }

        _helperQueued = 1;
        ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: true);
    }

    public void Execute()
    {
        Volatile.Write(ref _helperQueued, 0);
        while (true)
        {
            var i = Interlocked.Increment(ref _next) - 1;
            if (i >= _items.Count)
            {
                return;
            }

            if (i + 1 < _items.Count && Interlocked.Exchange(ref _helperQueued, 1) == 0)
            {
                ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
            }

            var (source, result, error) = _items[i];
            if (error is null)
            {
                source.TrySetResult(result!);
            }
            else
            {
                source.TrySetException(error);
            }
        }
    }

    private readonly record struct Item(TaskCompletionSource<T> Source, T? Result, Exception? Error);
}
