using Infra.IntegrationTests.Harness;

namespace Infra.IntegrationTests;

/// <summary><c>infra up</c> itself: a smaller topology from a file, the "always" restart policy, and no orphans.</summary>
public sealed class StackLifecycleTests
{
    private const string SmallTopology = """{"webNodes": 1, "workers": 0, "caches": 1, "shards": 1, "replicasPerShard": 1}""";

    [Fact]
    public async Task Restart_policy_always_brings_a_killed_node_back_and_no_child_outlives_a_killed_supervisor()
    {
        await using var stack = await Stack.StartAsync(SmallTopology, "--restart-policy", "always");
        var nodes = await stack.StatusAsync();
        Assert.Equal(["cache-1", "queue", "s0-master", "s0-replica", "router", "web-1", "lb"], nodes.Select(n => n.Name).ToArray());
        var web = nodes.Single(n => n.Name == "web-1");

        await stack.KillAsync("web-1");
        await Eventually.HoldsAsync(async () => await stack.NodeAsync("web-1") is { Health: "up", Restarts: 1 } again && again.Pid != web.Pid,
            "web-1 restarted by the policy", TimeSpan.FromSeconds(60));

        // SIGKILL to infra up: the kernel's parent-death signal stops every child.
        var pids = (await stack.StatusAsync()).Select(n => n.Pid!.Value).ToList();
        stack.KillSupervisor();
        await Eventually.HoldsAsync(() => pids.All(pid => !Directory.Exists($"/proc/{pid}") || IsZombie(pid)),
            () => $"every child exits; alive: {string.Join(", ", pids.Where(pid => Directory.Exists($"/proc/{pid}") && !IsZombie(pid)))}", TimeSpan.FromSeconds(30));
    }

    private static bool IsZombie(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/stat").Split(") ")[1].StartsWith('Z');
        }
        catch (IOException)
        {
            return true;
        }
    }
}
