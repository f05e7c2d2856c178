namespace Infra.Cli.Tests;

public sealed class CliTests
{
    private const string Page = """
        # HELP infra_web_redirects_total GET /{code}
        # TYPE infra_web_redirects_total counter
        infra_web_redirects_total{outcome="found"} 12
        infra_web_redirects_total{outcome="not_found",x="a} b"} 3
        infra_web_redirects_other 100
        infra_cache_keys 7.5
        infra_datanode_lsn{node="a"} 42 1700000000000
        broken_line{
        infra_cache_keys_total nonsense
        """;

    [Theory]
    [InlineData("infra_web_redirects", 15.0)]
    [InlineData("infra_cache_keys", 7.5)]
    [InlineData("infra_datanode_lsn", 42.0)]
    public void A_metric_is_summed_over_its_labels(string name, double expected) => Assert.Equal(expected, Metrics.Sum(Page, name));

    [Fact]
    public void A_missing_metric_is_null() => Assert.Null(Metrics.Sum(Page, "infra_lb_requests"));

    [Fact]
    public void The_default_topology_is_the_architecture_picture()
    {
        var nodes = new Topology().Nodes();
        Assert.Equal(
            ["cache-1", "cache-2", "cache-3", "queue", "s0-master", "s0-replica", "s1-master", "s1-replica", "router", "web-1", "web-2", "web-3", "worker-1", "lb"],
            nodes.Select(n => n.Name).ToArray());
        Assert.All(nodes.Where(n => n.Kind == NodeKind.DataReplica), n => Assert.True(n.Stage > 0, "replicas start after masters"));
    }

    [Theory]
    [InlineData("""{"webNodes": 0}""", "webNodes")]
    [InlineData("""{"shards": 65}""", "shards")]
    [InlineData("""{"args": {"db": ["--x"]}}""", "args")]
    [InlineData("""{"webNodes": "three"}""", "not valid JSON")]
    [InlineData("""{"webNodes": """, "not valid JSON")]
    [InlineData("""{"args": null}""", "args must be")] // a NullReferenceException, not a reason
    [InlineData("""{"args": {"lb": null}}""", "args.lb")] // passed, then failed after 13 nodes had started
    [InlineData("""{"args": {"lb": ["--x", null]}}""", "args.lb")]
    [InlineData("""{"replicas": 2}""", "not valid JSON")] // a misspelled setting silently kept its default
    public void Bad_topology_files_are_refused_with_a_reason(string json, string reason)
    {
        var path = Path.GetTempFileName();
        try
        {
            File.WriteAllText(path, json);
            var ex = Assert.Throws<InvalidDataException>(() => Topology.Load(path));
            Assert.Contains(reason, ex.Message, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void A_data_directory_keeps_the_shards_and_replicas_it_was_made_with()
    {
        var dir = Path.Combine(Path.GetTempPath(), "infra-shape-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        try
        {
            Assert.Null(new Topology().CheckDataShape(dir));
            Assert.Null(new Topology { WebNodes = 5, Caches = 1 }.CheckDataShape(dir)); // stateless tiers may change
            Assert.Contains("do not change", new Topology { Shards = 3 }.CheckDataShape(dir), StringComparison.Ordinal);
            Assert.Contains("do not change", new Topology { ReplicasPerShard = 2 }.CheckDataShape(dir), StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void A_topology_file_sets_only_what_it_names()
    {
        var path = Path.GetTempFileName();
        try
        {
            File.WriteAllText(path, """{"webNodes": 2, "replicasPerShard": 2, "args": {"lb": ["--algorithm", "least-connections"]}}""");
            var topology = Topology.Load(path);
            Assert.Equal(2, topology.WebNodes);
            Assert.Equal(3, topology.Caches);
            var names = topology.Nodes().Select(n => n.Name).ToList();
            Assert.Contains("s1-replica-2", names);
            Assert.DoesNotContain("web-3", names);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Ports_are_kept_per_data_directory()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        try
        {
            var nodes = new Topology().Nodes();
            var first = Ports.LoadOrAssign(dir, nodes, lbPort: 0);
            var second = Ports.LoadOrAssign(dir, nodes, lbPort: 0);
            Assert.Equal(first.ToDictionary(p => p.Key, p => string.Join(',', p.Value)), second.ToDictionary(p => p.Key, p => string.Join(',', p.Value)));
            Assert.Equal(first.Values.Sum(p => p.Length), first.Values.SelectMany(p => p).Distinct().Count());
            Assert.Single(first["web-1"]);
            Assert.Equal(2, first["s0-master"].Length);
            if (Ports.UnsharedRange() is var (low, high))
            {
                Assert.All(first.Values.SelectMany(p => p), port => Assert.InRange(port, low, high - 1));
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void The_load_balancers_port_is_free_or_refused_and_never_another_nodes()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        try
        {
            var nodes = new Topology().Nodes();
            var first = Ports.LoadOrAssign(dir, nodes, lbPort: 0);

            // --lb-port 0 on a directory whose load balancer port is taken now: a fresh one.
            using (var holder = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, first["lb"][0]))
            {
                holder.Start();
                var again = Ports.LoadOrAssign(dir, nodes, lbPort: 0);
                Assert.NotEqual(first["lb"][0], again["lb"][0]);
                Assert.Equal(first["s0-master"], again["s0-master"]);
            }

            // An explicit port that another node of this directory has is refused.
            var ex = Assert.Throws<InvalidDataException>(() => Ports.LoadOrAssign(dir, nodes, lbPort: first["cache-1"][0]));
            Assert.Contains("cache-1", ex.Message, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
