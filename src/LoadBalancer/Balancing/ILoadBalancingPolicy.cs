namespace Infra.LoadBalancer.Balancing;

/// <summary>
/// Picks the backend for a request among those available now. The excluded backend (the one
/// a retry is moving away from) is skipped. Returns null when none is available.
/// </summary>
internal interface ILoadBalancingPolicy
{
    Backend? Pick(ReadOnlySpan<Backend> backends, Backend? exclude, long now);
}

/// <summary>Plain rotation; weights only matter as 0 (no traffic) or not.</summary>
internal sealed class RoundRobinPolicy : ILoadBalancingPolicy
{
    private uint _next;

    public Backend? Pick(ReadOnlySpan<Backend> backends, Backend? exclude, long now)
    {
        if (backends.IsEmpty)
        {
            return null;
        }

        var start = Interlocked.Increment(ref _next) - 1;
        for (var i = 0; i < backends.Length; i++)
        {
            var candidate = backends[(int)((start + (uint)i) % (uint)backends.Length)];
            if (candidate != exclude && candidate.IsAvailable(now))
            {
                return candidate;
            }
        }

        return null;
    }
}

/// <summary>
/// nginx's smooth weighted round robin: each pick adds every backend's weight to its running total,
/// takes the largest and subtracts the sum of weights from it. Weights 5,1,1 give a a b a c a a
/// rather than a a a a a b c.
/// </summary>
internal sealed class SmoothWeightedRoundRobinPolicy : ILoadBalancingPolicy
{
    private readonly Lock _lock = new();

    public Backend? Pick(ReadOnlySpan<Backend> backends, Backend? exclude, long now)
    {
        lock (_lock)
        {
            Backend? best = null;
            long total = 0;
            foreach (var backend in backends)
            {
                if (backend == exclude || !backend.IsAvailable(now))
                {
                    continue;
                }

                var weight = backend.Weight;
                backend.SmoothCurrentWeight += weight;
                total += weight;
                if (best is null || backend.SmoothCurrentWeight > best.SmoothCurrentWeight)
                {
                    best = backend;
                }
            }

            if (best is not null)
            {
                best.SmoothCurrentWeight -= total;
            }

            return best;
        }
    }
}

/// <summary>
/// Fewest requests in flight relative to weight (HAProxy's leastconn): a backend of weight 2 is
/// as loaded with 4 requests as one of weight 1 with 2. Ties rotate so equal backends share evenly.
/// </summary>
internal sealed class LeastConnectionsPolicy : ILoadBalancingPolicy
{
    private uint _next;

    public Backend? Pick(ReadOnlySpan<Backend> backends, Backend? exclude, long now)
    {
        if (backends.IsEmpty)
        {
            return null;
        }

        var start = Interlocked.Increment(ref _next) - 1;
        Backend? best = null;
        for (var i = 0; i < backends.Length; i++)
        {
            var candidate = backends[(int)((start + (uint)i) % (uint)backends.Length)];
            if (candidate == exclude || !candidate.IsAvailable(now))
            {
                continue;
            }

            if (best is null || LoadBalancing.LessLoaded(candidate, best))
            {
                best = candidate;
            }
        }

        return best;
    }
}

/// <summary>
/// Power of two choices: two distinct available backends at random, the less loaded (relative to
/// weight) wins. Nearly as even as least-connections without every request looking at every backend.
/// </summary>
internal sealed class PowerOfTwoChoicesPolicy : ILoadBalancingPolicy
{
    private const int StackLimit = 256;
    private readonly Random _random;

    public PowerOfTwoChoicesPolicy(Random random) => _random = random;

    public Backend? Pick(ReadOnlySpan<Backend> backends, Backend? exclude, long now)
    {
        Span<int> available = backends.Length <= StackLimit ? stackalloc int[backends.Length] : new int[backends.Length];
        var count = 0;
        for (var i = 0; i < backends.Length; i++)
        {
            if (backends[i] != exclude && backends[i].IsAvailable(now))
            {
                available[count++] = i;
            }
        }

        switch (count)
        {
            case 0:
                return null;
            case 1:
                return backends[available[0]];
        }

        var first = _random.Next(count);
        var second = _random.Next(count - 1);
        if (second >= first)
        {
            second++;
        }

        var a = backends[available[first]];
        var b = backends[available[second]];
        return LoadBalancing.LessLoaded(b, a) ? b : a;
    }
}

internal static class LoadBalancing
{
    /// <summary>inFlight(a)/weight(a) &lt; inFlight(b)/weight(b), without division.</summary>
    public static bool LessLoaded(Backend a, Backend b) =>
        (long)a.InFlight * Math.Max(b.Weight, 1) < (long)b.InFlight * Math.Max(a.Weight, 1);
}
