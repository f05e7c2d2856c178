using Infra.LoadBalancer.Balancing;
using Microsoft.Extensions.Configuration;

namespace Infra.LoadBalancer.Tests.Configuration;

public class OptionsTests
{
    [Fact]
    public void Flags_map_onto_options()
    {
        var options = Bind(
            "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:9999", "--backend", "http://127.0.0.1:9001",
            "--backend", "http://localhost:9002,weight=3", "--algorithm", "least-connections", "--health-interval", "250ms",
            "--health-timeout", "100ms", "--max-body-size", "10m", "--header-timeout", "1.5s", "--admin-token", "s3cret");

        Assert.Empty(options.Validate());
        Assert.Equal(0, options.Listen.Port);
        Assert.Equal(9999, options.Admin.Port);
        Assert.Equal(BalancingAlgorithm.LeastConnections, options.Algorithm);
        Assert.Equal(["http://127.0.0.1:9001", "http://localhost:9002"], options.Backends.Select(b => b.Address.Url));
        Assert.Equal([1, 3], options.Backends.Select(b => b.Weight));
        Assert.Equal(TimeSpan.FromMilliseconds(250), options.HealthInterval);
        Assert.Equal(10L << 20, options.MaxRequestBodySize);
        Assert.Equal(TimeSpan.FromSeconds(1.5), options.HeaderTimeout);
        Assert.Equal("s3cret", options.AdminToken);
    }

    [Fact]
    public void A_json_config_can_give_backends_as_objects()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Backends:0:Address"] = "http://127.0.0.1:9001",
            ["Backends:0:Weight"] = "5",
            ["Backends:1"] = "http://127.0.0.1:9002",
        }).Build();
        var options = new LoadBalancerOptions();
        options.BindFrom(configuration);

        Assert.Equal([5, 1], options.Backends.Select(b => b.Weight));
    }

    [Fact]
    public void Every_bad_value_is_reported_on_its_own_line()
    {
        var options = Bind(
            "--listen", "nowhere", "--backend", "ftp://127.0.0.1:21", "--backend", "http://127.0.0.1:9001/path",
            "--backend", "http://127.0.0.1:9003,weight=999", "--algorithm", "random", "--health-interval", "soon",
            "--max-headers", "-5", "--health-rise", "0");

        var problems = options.Validate();

        Assert.Equal(8, problems.Count);
        Assert.Contains(problems, p => p.StartsWith("Listen:", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.Contains("only http://", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.Contains("no path", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.Contains("weight", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.StartsWith("Algorithm:", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.StartsWith("HealthInterval:", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.StartsWith("MaxRequestHeaderCount:", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.StartsWith("HealthRise:", StringComparison.Ordinal));
    }

    [Fact]
    public void Inconsistent_settings_are_reported()
    {
        var options = Bind("--health-interval", "1s", "--health-timeout", "2s", "--health-path", "healthz",
            "--backend", "http://127.0.0.1:1", "--backend", "http://127.0.0.1:1/");

        var problems = options.Validate();

        Assert.Contains(problems, p => p.StartsWith("HealthTimeout:", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.StartsWith("HealthPath:", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.Contains("listed twice", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("http://127.0.0.1:9001", "http://127.0.0.1:9001")]
    [InlineData("http://127.0.0.1:9001/", "http://127.0.0.1:9001")]
    [InlineData("HTTP://LocalHost:80", "http://localhost:80")]
    [InlineData("http://example.com", "http://example.com:80")]
    [InlineData("http://[::1]:8080", "http://[::1]:8080")]
    public void Backend_addresses_are_canonical(string text, string canonical)
    {
        Assert.True(BackendAddress.TryParse(text, out var address, out var error), error);
        Assert.Equal(canonical, address.Url);
    }

    [Theory]
    [InlineData("")]
    [InlineData("127.0.0.1:9001")]
    [InlineData("https://127.0.0.1:9001")]
    [InlineData("http://user@127.0.0.1:9001")]
    [InlineData("http://127.0.0.1:9001/x")]
    [InlineData("http://127.0.0.1:9001?q")]
    public void Bad_backend_addresses_are_refused(string text)
    {
        Assert.False(BackendAddress.TryParse(text, out _, out var error));
        Assert.NotEmpty(error);
    }

    private static LoadBalancerOptions Bind(params string[] args)
    {
        var parsed = LoadBalancerCommandLine.Definition.Parse(args);
        Assert.Empty(parsed.Problems);
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(parsed.Values).Build();
        var options = new LoadBalancerOptions();
        options.BindFrom(configuration);
        return options;
    }
}
