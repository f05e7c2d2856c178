using Infra.Core.Health;
using Infra.Core.Timing;
using Infra.LoadBalancer.Balancing;
using Infra.LoadBalancer.Health;
using Infra.LoadBalancer.Proxy;
using Infra.Testing;

namespace Infra.LoadBalancer.Tests.Balancing;

public sealed class PolicyTests : IDisposable
{
    private readonly Heartbeat _heartbeat = new(new ManualTimeProvider(), TimeSpan.FromSeconds(1));

    [Fact]
    public void Round_robin_rotates_evenly()
    {
        var backends = Create(1, 1, 1);
        var policy = new RoundRobinPolicy();

        var picks = Pick(policy, backends, 300);

        Assert.All(backends, b => Assert.Equal(100, picks[b]));
        var next = Enumerable.Range(0, 6).Select(_ => Array.IndexOf(backends, policy.Pick(backends, null, 0))).ToArray();
        Assert.Equal([0, 1, 2, 0, 1, 2], next);
    }

    [Fact]
    public void Round_robin_skips_unavailable_and_excluded_backends()
    {
        var backends = Create(1, 1, 1);
        backends[1].StartDrain();
        var policy = new RoundRobinPolicy();

        var picks = Pick(policy, backends, 100);
        Assert.Equal(0, picks[backends[1]]);
        Assert.Equal(100, picks[backends[0]] + picks[backends[2]]);

        for (var i = 0; i < 10; i++)
        {
            Assert.Same(backends[2], policy.Pick(backends, backends[0], 0));
        }
    }

    [Fact]
    public void Every_policy_returns_null_when_nothing_is_available()
    {
        var backends = Create(1, 0);
        backends[0].Health.Report(false);
        backends[0].Health.Report(false);
        backends[0].Health.Report(false);

        foreach (var policy in AllPolicies())
        {
            Assert.Null(policy.Pick(backends, null, 0));
            Assert.Null(policy.Pick([], null, 0));
        }
    }

    [Fact]
    public void Weight_zero_gets_no_traffic_under_any_policy()
    {
        var backends = Create(1, 0, 2);
        foreach (var policy in AllPolicies())
        {
            Assert.Equal(0, Pick(policy, backends, 200)[backends[1]]);
        }
    }

    [Fact]
    public void Smooth_weighted_round_robin_interleaves_by_weight()
    {
        var backends = Create(5, 1, 1);
        var policy = new SmoothWeightedRoundRobinPolicy();

        var sequence = Enumerable.Range(0, 7).Select(_ => Array.IndexOf(backends, policy.Pick(backends, null, 0))).ToArray();

        // nginx's example: a a b a c a a, not a a a a a b c.
        Assert.Equal([0, 0, 1, 0, 2, 0, 0], sequence);
        var picks = Pick(policy, backends, 700);
        Assert.Equal(500, picks[backends[0]]);
        Assert.Equal(100, picks[backends[1]]);
        Assert.Equal(100, picks[backends[2]]);
    }

    [Fact]
    public void Smooth_weighted_round_robin_follows_weight_changes()
    {
        var backends = Create(1, 1);
        var policy = new SmoothWeightedRoundRobinPolicy();
        Pick(policy, backends, 10);

        backends[1].Weight = 3;
        var picks = Pick(policy, backends, 400);

        Assert.InRange(picks[backends[1]], 295, 305);
    }

    [Fact]
    public void Least_connections_picks_the_least_loaded_relative_to_weight()
    {
        var backends = Create(1, 1, 2);
        Load(backends[0], 3);
        Load(backends[1], 1);
        Load(backends[2], 4);
        var policy = new LeastConnectionsPolicy();

        // In flight per weight: 3, 1, 2.
        Assert.Same(backends[1], policy.Pick(backends, null, 0));
        Assert.Same(backends[2], policy.Pick(backends, backends[1], 0));
    }

    [Fact]
    public void Least_connections_shares_ties_evenly()
    {
        var backends = Create(1, 1, 1);
        var picks = Pick(new LeastConnectionsPolicy(), backends, 300);

        Assert.All(backends, b => Assert.Equal(100, picks[b]));
    }

    [Fact]
    public void Least_connections_balances_in_flight_requests()
    {
        // Requests that never finish: each pick should go to the emptiest backend.
        var backends = Create(1, 1, 1, 1);
        var policy = new LeastConnectionsPolicy();
        for (var i = 0; i < 40; i++)
        {
            policy.Pick(backends, null, 0)!.BeginRequest();
        }

        Assert.All(backends, b => Assert.Equal(10, b.InFlight));
    }

    [Fact]
    public void Power_of_two_prefers_the_less_loaded_of_two_random_choices()
    {
        var backends = Create(1, 1);
        Load(backends[0], 5);
        var policy = new PowerOfTwoChoicesPolicy(new Random(1));

        // With two backends both are always compared: the idle one wins every time.
        Assert.All(Enumerable.Range(0, 50), _ => Assert.Same(backends[1], policy.Pick(backends, null, 0)));
    }

    [Fact]
    public void Power_of_two_spreads_load_and_never_picks_the_most_loaded_of_many()
    {
        var backends = Create(1, 1, 1, 1, 1);
        Load(backends[3], 100);
        var policy = new PowerOfTwoChoicesPolicy(new Random(42));

        var picks = Pick(policy, backends, 1000);

        Assert.Equal(0, picks[backends[3]]);
        Assert.All(backends.Where(b => b != backends[3]), b => Assert.InRange(picks[b], 150, 350));
    }

    [Fact]
    public void Power_of_two_with_one_candidate_returns_it()
    {
        var backends = Create(1, 1);
        var policy = new PowerOfTwoChoicesPolicy(new Random(3));
        Assert.Same(backends[1], policy.Pick(backends, backends[0], 0));
    }

    [Fact]
    public void Ejected_backends_are_skipped_until_their_period_ends()
    {
        var backends = Create(1, 1);
        var passive = backends[0].Passive;
        Assert.False(passive.RecordFailure(now: 0));
        Assert.False(passive.RecordFailure(now: 0));
        Assert.True(passive.RecordFailure(now: 0));

        var policy = new RoundRobinPolicy();
        var during = Enumerable.Range(0, 10).Select(_ => policy.Pick(backends, null, now: 10)).ToList();
        Assert.All(during, b => Assert.Same(backends[1], b));

        var after = _heartbeat.ToTimestampDelta(TimeSpan.FromSeconds(5)) + 1;
        Assert.Contains(backends[0], Enumerable.Range(0, 10).Select(_ => policy.Pick(backends, null, after)));
    }

    private static void Load(Backend backend, int requests)
    {
        for (var i = 0; i < requests; i++)
        {
            backend.BeginRequest();
        }
    }

    private static Dictionary<Backend, int> Pick(ILoadBalancingPolicy policy, Backend[] backends, int count)
    {
        var picks = backends.ToDictionary(b => b, _ => 0);
        for (var i = 0; i < count; i++)
        {
            var chosen = policy.Pick(backends, null, 0);
            Assert.NotNull(chosen);
            picks[chosen]++;
        }

        return picks;
    }

    private static IEnumerable<ILoadBalancingPolicy> AllPolicies() =>
        Enum.GetValues<BalancingAlgorithm>().Select(a => BalancingAlgorithms.Create(a, new Random(5)));

    private Backend[] Create(params int[] weights) => weights.Select((w, i) => CreateBackend(9000 + i, w)).ToArray();

    private Backend CreateBackend(int port, int weight)
    {
        Assert.True(BackendAddress.TryParse($"http://127.0.0.1:{port}", out var address, out _));
        return new Backend(address, weight, new RiseFallHealth(2, 3),
            new PassiveHealth(3, _heartbeat.ToTimestampDelta(TimeSpan.FromSeconds(5))),
            new BackendConnectionPool(address.EndPoint, _heartbeat, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(30), 8));
    }

    public void Dispose() => _heartbeat.Dispose();
}
