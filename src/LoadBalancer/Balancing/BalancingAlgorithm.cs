namespace Infra.LoadBalancer.Balancing;

internal enum BalancingAlgorithm
{
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    PowerOfTwo,
}

internal static class BalancingAlgorithms
{
    public static readonly string[] Names = ["round-robin", "weighted-round-robin", "least-connections", "power-of-two"];

    public static bool TryParse(string text, out BalancingAlgorithm algorithm)
    {
        var index = Array.FindIndex(Names, n => n.Equals(text.Trim(), StringComparison.OrdinalIgnoreCase));
        algorithm = index < 0 ? default : (BalancingAlgorithm)index;
        return index >= 0;
    }

    public static string Name(BalancingAlgorithm algorithm) => Names[(int)algorithm];

    public static ILoadBalancingPolicy Create(BalancingAlgorithm algorithm, Random random) => algorithm switch
    {
        BalancingAlgorithm.RoundRobin => new RoundRobinPolicy(),
        BalancingAlgorithm.WeightedRoundRobin => new SmoothWeightedRoundRobinPolicy(),
        BalancingAlgorithm.LeastConnections => new LeastConnectionsPolicy(),
        BalancingAlgorithm.PowerOfTwo => new PowerOfTwoChoicesPolicy(random),
        _ => throw new ArgumentOutOfRangeException(nameof(algorithm)),
    };
}
