using System.Collections.Concurrent;
using Infra.Core.Health;
using Infra.LoadBalancer.Balancing;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Infra.LoadBalancer.Health;

/// <summary>
/// Active health checks: <c>GET &lt;health-path&gt;</c> on every backend each interval, bounded by a
/// timeout; 2xx and 3xx pass (as in HAProxy). Results feed each backend's rise/fall state. Backends
/// added or removed at run time start or stop being checked at once.
/// </summary>
internal sealed class HealthProber : IHostedService, IDisposable
{
    private readonly BackendPool _pool;
    private readonly LoadBalancerOptions _options;
    private readonly LoadBalancerMetrics _metrics;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly HttpClient _client;
    private readonly ConcurrentDictionary<Backend, (CancellationTokenSource Stop, Task Loop)> _loops = new();
    private bool _stopped;

    public HealthProber(BackendPool pool, LoadBalancerOptions options, LoadBalancerMetrics metrics, TimeProvider timeProvider, ILogger<HealthProber> logger)
    {
        _pool = pool;
        _options = options;
        _metrics = metrics;
        _timeProvider = timeProvider;
        _logger = logger;
        _client = new HttpClient(new SocketsHttpHandler
        {
            UseProxy = false,
            AllowAutoRedirect = false,
            UseCookies = false,
            ConnectTimeout = options.HealthTimeout,
            PooledConnectionIdleTimeout = options.HealthInterval + options.HealthInterval,
        })
        {
            Timeout = Timeout.InfiniteTimeSpan,
        };
        _client.DefaultRequestHeaders.UserAgent.ParseAdd("infra-lb-health/1.0");
    }

    public bool Enabled => _options.HealthInterval > TimeSpan.Zero;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        if (!Enabled)
        {
            return Task.CompletedTask;
        }

        _pool.Added += StartChecking;
        _pool.Removed += StopChecking;
        foreach (var backend in _pool.Backends)
        {
            StartChecking(backend);
        }

        return Task.CompletedTask;
    }

    private void StartChecking(Backend backend)
    {
        lock (_loops)
        {
            if (_stopped || _loops.ContainsKey(backend))
            {
                return;
            }

            var stop = new CancellationTokenSource();
            var loop = Task.Run(() => HealthCheckLoop.RunAsync(
                token => ProbeAsync(backend, token),
                backend.Health,
                _options.HealthInterval,
                _options.HealthTimeout,
                _timeProvider,
                (success, changed) => OnResult(backend, success, changed),
                stop.Token));
            _loops[backend] = (stop, loop);
        }
    }

    private void StopChecking(Backend backend)
    {
        if (_loops.TryRemove(backend, out var entry))
        {
            entry.Stop.Cancel();
            entry.Stop.Dispose();
        }
    }

    internal async ValueTask<bool> ProbeAsync(Backend backend, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, backend.Url + _options.HealthPath);
        try
        {
            using var response = await _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
            var status = (int)response.StatusCode;
            if (status is >= 200 and < 400)
            {
                return true;
            }

            Log.HealthCheckFailed(_logger, backend.Url, $"status {status}");
            return false;
        }
        catch (Exception ex) when (ex is HttpRequestException or OperationCanceledException or IOException)
        {
            Log.HealthCheckFailed(_logger, backend.Url, ex.Message);
            return false;
        }
    }

    private void OnResult(Backend backend, bool success, bool changed)
    {
        _metrics.HealthChecked(backend, success);
        if (changed)
        {
            Log.HealthChanged(_logger, backend.Url, success ? "healthy" : "unhealthy");
        }
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        lock (_loops)
        {
            _stopped = true;
        }

        _pool.Added -= StartChecking;
        _pool.Removed -= StopChecking;
        var loops = _loops.Values.ToList();
        foreach (var (stop, _) in loops)
        {
            await stop.CancelAsync();
        }

        await Task.WhenAll(loops.Select(l => l.Loop)).WaitAsync(cancellationToken);
    }

    public void Dispose()
    {
        foreach (var (stop, _) in _loops.Values)
        {
            stop.Dispose();
        }

        _client.Dispose();
    }
}
