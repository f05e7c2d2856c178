namespace Infra.ShardRouter.Routing;

/// <summary>
/// Lets requests through until it is closed; closing waits for those inside to leave, and requests
/// arriving meanwhile wait until it opens again. Used to block one slot's traffic (or fan-outs) for
/// the moment a slot changes owner.
/// </summary>
internal sealed class Gate
{
    private readonly Lock _lock = new();
    private int _inside;
    private TaskCompletionSource? _closed;
    private TaskCompletionSource? _drained;

    public bool IsClosed
    {
        get
        {
            lock (_lock)
            {
                return _closed is not null;
            }
        }
    }

    public async ValueTask<Pass> EnterAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            Task wait;
            lock (_lock)
            {
                if (_closed is null)
                {
                    _inside++;
                    return new Pass(this);
                }

                wait = _closed.Task;
            }

            await wait.WaitAsync(cancellationToken);
        }
    }

    /// <summary>
    /// Closes the gate and returns once nobody is inside. Cancelled while waiting, it opens the gate
    /// again: the caller got no gate to open, and requests must not wait forever.
    /// </summary>
    public async Task CloseAsync(CancellationToken cancellationToken)
    {
        Task drained;
        lock (_lock)
        {
            _closed ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            if (_inside == 0)
            {
                return;
            }

            _drained ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            drained = _drained.Task;
        }

        try
        {
            await drained.WaitAsync(cancellationToken);
        }
        catch (OperationCanceledException)
        {
            Open();
            throw;
        }
    }

    public void Open()
    {
        TaskCompletionSource? closed;
        lock (_lock)
        {
            closed = _closed;
            _closed = null;
            _drained = null;
        }

        closed?.TrySetResult();
    }

    private void Leave()
    {
        lock (_lock)
        {
            if (--_inside == 0)
            {
                _drained?.TrySetResult();
            }
        }
    }

    public readonly struct Pass(Gate gate) : IDisposable
    {
        public void Dispose() => gate?.Leave();
    }
}
