using Infra.Core.Configuration;
using Infra.Core.Hosting;
using Microsoft.Extensions.Configuration;

namespace Infra.Core.Tests;

public class OptionValuesTests
{
    [Theory]
    [InlineData("250ms", 250)]
    [InlineData("1s", 1000)]
    [InlineData("1.5s", 1500)]
    [InlineData("2m", 120_000)]
    [InlineData("1h", 3_600_000)]
    [InlineData("3", 3000)]
    [InlineData("500us", 0.5)]
    [InlineData("00:00:02", 2000)]
    [InlineData(" 10S ", 10_000)]
    public void Parses_durations(string text, double milliseconds)
    {
        Assert.True(OptionValues.TryParseDuration(text, out var value));
        Assert.Equal(milliseconds, value.TotalMilliseconds, 3);
    }

    [Theory]
    [InlineData("")]
    [InlineData("soon")]
    [InlineData("-1s")]
    [InlineData("1d")]
    [InlineData("1e3s")]
    [InlineData("s")]
    [InlineData("NaNs")]
    [InlineData("99999999999999999h")]
    public void Rejects_bad_durations(string text)
    {
        Assert.False(OptionValues.TryParseDuration(text, out _));
    }

    [Theory]
    [InlineData("512", 512)]
    [InlineData("64k", 65536)]
    [InlineData("64KB", 65536)]
    [InlineData("16KiB", 16384)]
    [InlineData("1m", 1 << 20)]
    [InlineData("2G", 2L << 30)]
    [InlineData("100B", 100)]
    public void Parses_sizes(string text, long bytes)
    {
        Assert.True(OptionValues.TryParseSize(text, out var value));
        Assert.Equal(bytes, value);
    }

    [Theory]
    [InlineData("")]
    [InlineData("-1")]
    [InlineData("1x")]
    [InlineData("k")]
    [InlineData("1.5m")]
    [InlineData("99999999999T")]
    public void Rejects_bad_sizes(string text)
    {
        Assert.False(OptionValues.TryParseSize(text, out _));
    }

    [Theory]
    [InlineData("127.0.0.1:8080", "127.0.0.1", 8080)]
    [InlineData("localhost:0", "127.0.0.1", 0)]
    [InlineData("*:80", "0.0.0.0", 80)]
    [InlineData("[::1]:9000", "::1", 9000)]
    [InlineData("http://127.0.0.1:81/", "127.0.0.1", 81)]
    public void Parses_listen_endpoints(string text, string address, int port)
    {
        Assert.True(OptionValues.TryParseListenEndPoint(text, out var endPoint));
        Assert.Equal(address, endPoint.Address.ToString());
        Assert.Equal(port, endPoint.Port);
    }

    [Theory]
    [InlineData("")]
    [InlineData("8080")]
    [InlineData("127.0.0.1")]
    [InlineData("127.0.0.1:")]
    [InlineData("127.0.0.1:70000")]
    [InlineData("example.com:80")]
    [InlineData("::1:80")]
    public void Rejects_bad_listen_endpoints(string text)
    {
        Assert.False(OptionValues.TryParseListenEndPoint(text, out _));
    }

    [Fact]
    public void Config_reader_collects_every_problem_and_keeps_defaults()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["A"] = "many",
            ["B"] = "500",
            ["C"] = "forever",
            ["D"] = "huge",
            ["E"] = "maybe",
            ["F"] = "12",
        }).Build();
        var problems = new List<string>();
        var reader = new ConfigReader(configuration, problems);

        Assert.Equal(1, reader.Number("A", 1, 0, 10));
        Assert.Equal(2, reader.Number("B", 2, 0, 10));
        Assert.Equal(TimeSpan.FromSeconds(3), reader.Duration("C", TimeSpan.FromSeconds(3), TimeSpan.Zero, TimeSpan.FromHours(1)));
        Assert.Equal(4, reader.Size("D", 4, 0, 100));
        Assert.True(reader.Flag("E", true));
        Assert.Equal(12, reader.Number("F", 0, 0, 100));
        Assert.Equal(7, reader.Number("Missing", 7, 0, 10));

        Assert.Equal(5, problems.Count);
        Assert.Contains(problems, p => p.StartsWith("B: 500 is outside 0..10", StringComparison.Ordinal));
    }

    private static readonly CommandLine Flags = new()
    {
        ServiceName = "test",
        Usage = "usage",
        Switches = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase) { ["--listen"] = "Listen", ["--mode"] = "Mode" },
        ListSwitches = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase) { ["--backend"] = "Backends" },
    };

    [Fact]
    public void Command_line_maps_flags_lists_and_config_keys()
    {
        var parsed = Flags.Parse(["--listen", "127.0.0.1:1", "--backend", "a", "--backend=b", "--mode=x=y", "--Section:Key", "v",
            "--config", "one.json", "--log-level", "Debug"]);

        Assert.Empty(parsed.Problems);
        Assert.Equal("127.0.0.1:1", parsed.Values["Listen"]);
        Assert.Equal("a", parsed.Values["Backends:0"]);
        Assert.Equal("b", parsed.Values["Backends:1"]);
        Assert.Equal("x=y", parsed.Values["Mode"]);
        Assert.Equal("v", parsed.Values["Section:Key"]);
        Assert.Equal("Debug", parsed.Values["LogLevel"]);
        Assert.Equal(["one.json"], parsed.ConfigFiles);
        Assert.False(parsed.HelpRequested);
    }

    [Fact]
    public void Command_line_reports_unknown_flags_and_missing_values()
    {
        var parsed = Flags.Parse(["--lisen", "x", "stray", "--listen"]);

        Assert.Equal(3, parsed.Problems.Count);
        Assert.Contains(parsed.Problems, p => p.Contains("--lisen", StringComparison.Ordinal));
        Assert.Contains(parsed.Problems, p => p.Contains("unexpected argument 'stray'", StringComparison.Ordinal));
        Assert.Contains(parsed.Problems, p => p.Contains("--listen needs a value", StringComparison.Ordinal));
        Assert.True(Flags.Parse(["--help"]).HelpRequested);
    }

    [Theory]
    [InlineData("127.0.0.1:7600", "127.0.0.1", 7600)]
    [InlineData(" db-a.internal:1 ", "db-a.internal", 1)]
    [InlineData("[::1]:65535", "::1", 65535)]
    public void Host_and_port_for_connecting_parse(string text, string host, int port)
    {
        Assert.True(OptionValues.TryParseHostPort(text, out var h, out var p));
        Assert.Equal((host, port), (h, p));
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("nowhere")]
    [InlineData(":7600")]
    [InlineData("host:")]
    [InlineData("host:0")]
    [InlineData("host:65536")]
    [InlineData("host:-1")]
    [InlineData("host:76x")]
    [InlineData("[]:80")]
    public void Malformed_host_and_port_is_refused(string? text) => Assert.False(OptionValues.TryParseHostPort(text, out _, out _));
}
