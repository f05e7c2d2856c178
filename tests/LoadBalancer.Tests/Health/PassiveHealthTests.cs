using Infra.LoadBalancer.Health;

namespace Infra.LoadBalancer.Tests.Health;

public class PassiveHealthTests
{
    private const long Backoff = 1000;

    [Fact]
    public void Ejects_after_the_threshold_of_consecutive_failures()
    {
        var health = new PassiveHealth(threshold: 3, baseBackoff: Backoff);

        Assert.False(health.RecordFailure(0));
        Assert.False(health.RecordFailure(0));
        Assert.False(health.IsEjected(0));
        Assert.True(health.RecordFailure(0));
        Assert.True(health.IsEjected(0));
        Assert.True(health.IsEjected(Backoff - 1));
        Assert.False(health.IsEjected(Backoff));
    }

    [Fact]
    public void A_success_resets_the_count()
    {
        var health = new PassiveHealth(3, Backoff);
        health.RecordFailure(0);
        health.RecordFailure(0);
        health.RecordSuccess();

        Assert.False(health.RecordFailure(0));
        Assert.False(health.RecordFailure(0));
        Assert.Equal(2, health.ConsecutiveFailures);
    }

    [Fact]
    public void After_an_ejection_one_failure_ejects_again_for_twice_as_long()
    {
        var health = new PassiveHealth(3, Backoff);
        for (var i = 0; i < 3; i++)
        {
            health.RecordFailure(0);
        }

        // Back in service after the first period; the first failure sends it out for 2x.
        Assert.True(health.RecordFailure(Backoff));
        Assert.True(health.IsEjected(Backoff + (2 * Backoff) - 1));
        Assert.False(health.IsEjected(Backoff + (2 * Backoff)));

        // Doubling stops at 16x.
        var now = 3 * Backoff;
        for (var i = 0; i < 10; i++)
        {
            Assert.True(health.RecordFailure(now));
            var until = now;
            while (health.IsEjected(until))
            {
                until += Backoff;
            }

            Assert.True(until - now <= 16 * Backoff);
            now = until;
        }
    }

    [Fact]
    public void Failures_of_requests_already_in_flight_do_not_extend_an_ejection()
    {
        var health = new PassiveHealth(1, Backoff);
        Assert.True(health.RecordFailure(0));
        Assert.False(health.RecordFailure(10));
        Assert.False(health.IsEjected(Backoff));
    }

    [Fact]
    public void A_success_after_an_ejection_restores_the_full_threshold()
    {
        var health = new PassiveHealth(2, Backoff);
        health.RecordFailure(0);
        health.RecordFailure(0);
        health.RecordSuccess();

        Assert.False(health.RecordFailure(Backoff));
        Assert.True(health.RecordFailure(Backoff));
    }

    [Fact]
    public void Threshold_zero_never_ejects()
    {
        var health = new PassiveHealth(0, Backoff);
        for (var i = 0; i < 100; i++)
        {
            Assert.False(health.RecordFailure(i));
        }

        Assert.False(health.IsEjected(0));
    }
}
