namespace Infra.WebNode.Backends;

/// <summary>A dependency that does not answer now: the request degrades or fails with 503.</summary>
internal sealed class BackendDownException : Exception
{
    public BackendDownException()
        : base("a backend is unavailable")
    {
    }

    public BackendDownException(string message)
        : base(message)
    {
    }

    public BackendDownException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public static BackendDownException For(string backend, Exception? cause = null) =>
        cause is null ? new($"{backend} is unavailable") : new($"{backend} is unavailable: {cause.Message}", cause);
}

/// <summary>
/// One client connection to a dependency, made again when it is lost. After a failed connect,
/// callers fail fast for <c>retryAfter</c> instead of each waiting for its own connect timeout, so
/// a dead dependency costs requests nothing but an exception.
/// </summary>
internal sealed class Reconnecting<T>(
    string name,
    Func<CancellationToken, Task<T>> connect,
    Func<T, bool> isConnected,
    TimeSpan connectTimeout,
    TimeSpan retryAfter,
    TimeProvider time) : IAsyncDisposable
    where T : class, IAsyncDisposable
{
    private readonly SemaphoreSlim _gate = new(1, 1);
    private volatile T? _current;
    private long _failedUntil;
    private bool _disposed;

    public string Name { get; } = name;

    /// <summary>True while a connection is open (it may still fail on its next request).</summary>
    public bool IsConnected => _current is { } client && isConnected(client);

    public async ValueTask<T> GetAsync(CancellationToken cancellationToken = default)
    {
        if (_current is { } client && isConnected(client))
        {
            return client;
        }

        if (time.GetTimestamp() < Interlocked.Read(ref _failedUntil))
        {
            throw BackendDownException.For(Name);
        }

        await _gate.WaitAsync(cancellationToken);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_current is { } again && isConnected(again))
            {
                return again;
            }

            if (time.GetTimestamp() < Interlocked.Read(ref _failedUntil))
            {
                throw BackendDownException.For(Name);
            }

            if (_current is { } lost)
            {
                _current = null;
                await lost.DisposeAsync();
            }

            try
            {
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                timeout.CancelAfter(connectTimeout);
                var fresh = await connect(timeout.Token);
                _current = fresh;
                return fresh;
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
            {
                Interlocked.Exchange(ref _failedUntil, time.GetTimestamp() + (long)(retryAfter.TotalSeconds * time.TimestampFrequency));
                throw BackendDownException.For(Name, ex);
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _gate.WaitAsync();
        try
        {
            _disposed = true;
            if (_current is { } client)
            {
                _current = null;
                await client.DisposeAsync();
            }
        }
        finally
        {
            _gate.Release();
        }
    }
}
