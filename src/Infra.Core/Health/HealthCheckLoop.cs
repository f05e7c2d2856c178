namespace Infra.Core.Health;

/// <summary>
/// Runs a probe every interval, bounds each run by a timeout and feeds the results to a
/// <see cref="RiseFallHealth"/>. Time comes from the injected <see cref="TimeProvider"/>.
/// </summary>
public static class HealthCheckLoop
{
    /// <summary>
    /// Probes until <paramref name="cancellationToken"/> fires. A probe that throws or outlives
    /// <paramref name="timeout"/> counts as a failure. <paramref name="onResult"/> sees every result and
    /// whether it changed the state.
    /// </summary>
    public static async Task RunAsync(
        Func<CancellationToken, ValueTask<bool>> probe,
        RiseFallHealth health,
        TimeSpan interval,
        TimeSpan timeout,
        TimeProvider timeProvider,
        Action<bool, bool> onResult,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(probe);
        ArgumentNullException.ThrowIfNull(health);
        ArgumentNullException.ThrowIfNull(onResult);
        while (!cancellationToken.IsCancellationRequested)
        {
            bool success;
            using (var timeoutSource = new CancellationTokenSource(timeout, timeProvider))
            using (var linked = CancellationTokenSource.CreateLinkedTokenSource(timeoutSource.Token, cancellationToken))
            {
                try
                {
                    success = await probe(linked.Token);
                }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    return;
                }
#pragma warning disable CA1031 // Any failure of the probe is a failed check, whatever its type.
                catch (Exception)
#pragma warning restore CA1031
                {
                    success = false;
                }
            }

            var changed = health.Report(success);
            onResult(success, changed);
            try
            {
                await Task.Delay(interval, timeProvider, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }
}
