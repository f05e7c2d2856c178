using Infra.Core.Health;
using Infra.Testing;

namespace Infra.Core.Tests;

public class HealthTests
{
    [Fact]
    public void Goes_down_after_fall_failures_and_up_after_rise_successes()
    {
        var health = new RiseFallHealth(rise: 2, fall: 3);
        Assert.True(health.IsHealthy);

        Assert.False(health.Report(false));
        Assert.False(health.Report(false));
        Assert.True(health.IsHealthy);
        Assert.True(health.Report(false));
        Assert.False(health.IsHealthy);

        Assert.False(health.Report(true));
        Assert.False(health.IsHealthy);
        Assert.True(health.Report(true));
        Assert.True(health.IsHealthy);
    }

    [Fact]
    public void A_break_in_a_streak_starts_it_again()
    {
        var health = new RiseFallHealth(rise: 2, fall: 2);
        health.Report(false);
        health.Report(true);
        health.Report(false);
        Assert.True(health.IsHealthy);
        health.Report(false);
        Assert.False(health.IsHealthy);

        health.Report(true);
        health.Report(false);
        health.Report(true);
        Assert.False(health.IsHealthy);
        Assert.Equal(1, health.ConsecutiveSuccesses);
    }

    [Fact]
    public void Can_start_down()
    {
        var health = new RiseFallHealth(1, 1, initiallyHealthy: false);
        Assert.False(health.IsHealthy);
        Assert.True(health.Report(true));
    }

    [Fact]
    public async Task The_loop_probes_every_interval_on_the_injected_clock()
    {
        var clock = new ManualTimeProvider();
        var health = new RiseFallHealth(rise: 2, fall: 2);
        var results = new Queue<bool>([false, false, true, true]);
        var probes = 0;
        var changes = new List<bool>();
        using var stop = new CancellationTokenSource();

        var loop = HealthCheckLoop.RunAsync(
            _ =>
            {
                probes++;
                return ValueTask.FromResult(results.Count > 0 ? results.Dequeue() : true);
            },
            health, TimeSpan.FromSeconds(1), TimeSpan.FromMilliseconds(500), clock,
            (success, changed) =>
            {
                if (changed)
                {
                    changes.Add(success);
                }
            },
            stop.Token);

        // The first probe runs at once; each later one only when the clock moves a full interval.
        await WaitFor(() => probes == 1);
        clock.Advance(TimeSpan.FromMilliseconds(999));
        Assert.Equal(1, probes);
        clock.Advance(TimeSpan.FromMilliseconds(1));
        await WaitFor(() => probes == 2);
        Assert.False(health.IsHealthy);

        clock.Advance(TimeSpan.FromSeconds(1));
        await WaitFor(() => probes == 3);
        Assert.False(health.IsHealthy);
        clock.Advance(TimeSpan.FromSeconds(1));
        await WaitFor(() => probes == 4);
        Assert.True(health.IsHealthy);
        Assert.Equal([false, true], changes);

        await stop.CancelAsync();
        await loop;
    }

    [Fact]
    public async Task A_probe_that_outlives_its_timeout_is_a_failure()
    {
        var clock = new ManualTimeProvider();
        var health = new RiseFallHealth(rise: 1, fall: 1);
        var outcomes = new List<bool>();
        using var stop = new CancellationTokenSource();

        var loop = HealthCheckLoop.RunAsync(
            async token =>
            {
                await Task.Delay(Timeout.Infinite, token);
                return true;
            },
            health, TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(1), clock,
            (success, _) => outcomes.Add(success),
            stop.Token);

        await WaitFor(() => clock.ActiveTimers > 0);
        clock.Advance(TimeSpan.FromSeconds(1));
        await WaitFor(() => outcomes.Count == 1);
        Assert.False(outcomes[0]);
        Assert.False(health.IsHealthy);

        await stop.CancelAsync();
        await loop;
    }

    [Fact]
    public async Task A_probe_that_throws_is_a_failure()
    {
        var health = new RiseFallHealth(rise: 1, fall: 1);
        var outcomes = new List<bool>();
        using var stop = new CancellationTokenSource();
        var loop = HealthCheckLoop.RunAsync(
            _ => throw new InvalidOperationException("boom"),
            health, TimeSpan.FromHours(1), TimeSpan.FromSeconds(1), new ManualTimeProvider(),
            (success, _) => outcomes.Add(success),
            stop.Token);

        await WaitFor(() => outcomes.Count == 1);
        Assert.False(outcomes[0]);
        await stop.CancelAsync();
        await loop;
    }

    private static async Task WaitFor(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not met in time");
            await Task.Delay(5);
        }
    }
}
