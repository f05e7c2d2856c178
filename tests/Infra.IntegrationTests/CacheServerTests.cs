using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Infra.IntegrationTests.Harness;
using Infra.Testing;
using StackExchange.Redis;

namespace Infra.IntegrationTests;

/// <summary>The cache server as a process: redis-cli, redis-benchmark, hostile input, limits, expiry, metrics.</summary>
public class CacheServerTests
{
    [Fact]
    public async Task Redis_cli_works_with_resp_and_inline_commands()
    {
        await using var server = await CacheServerProcess.StartAsync();

        Assert.Equal("OK", await RedisCliAsync(server, "set", "name", "infra cache"));
        Assert.Equal("infra cache", await RedisCliAsync(server, "get", "name"));
        Assert.Equal("3", await RedisCliAsync(server, "hset", "h", "a", "1", "b", "2", "c", "3"));
        Assert.Equal("1", await RedisCliAsync(server, "exists", "h"));
        Assert.Contains("redis_version:", await RedisCliAsync(server, "info", "server"), StringComparison.Ordinal);

        // RESP3 from redis-cli: HELLO 3 first, maps come back as maps.
        var hello = await RedisCliAsync(server, "-3", "hgetall", "h");
        Assert.Contains("a", hello, StringComparison.Ordinal);

        // Inline commands as telnet sends them, quotes included.
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync("127.0.0.1", server.Port);
        await socket.SendAsync(Encoding.ASCII.GetBytes("SET quoted \"hello world\\n\"\r\nGET quoted\r\nPING\r\n"));
        var reply = await ReadAtLeastAsync(socket, "+OK\r\n$12\r\nhello world\n\r\n+PONG\r\n".Length);
        Assert.Equal("+OK\r\n$12\r\nhello world\n\r\n+PONG\r\n", reply);
    }

    [Fact]
    public async Task Redis_benchmark_runs_every_issue_command_without_errors()
    {
        await using var server = await CacheServerProcess.StartAsync();
        foreach (var pipeline in new[] { "1", "16" })
        {
            var output = await RunAsync("redis-benchmark", "-p", server.Port.ToString(System.Globalization.CultureInfo.InvariantCulture),
                "-c", "10", "-n", "2000", "-r", "1000", "-P", pipeline, "-t", "set,get,incr,mset,hset", "-q");
            foreach (var command in new[] { "SET", "GET", "INCR", "MSET", "HSET" })
            {
                Assert.Contains($"{command}", output, StringComparison.Ordinal);
            }

            Assert.DoesNotContain("ERR", output, StringComparison.Ordinal);
        }
    }

    public static TheoryData<string, string> HostileInput() => new()
    {
        { "*1\r\n$-5\r\n", "invalid bulk length" },
        { "*1\r\n$9999999999999\r\n", "invalid bulk length" },
        { "*-\r\n", "invalid multibulk length" },
        { "*99999999999999\r\n", "invalid multibulk length" },
        { "*1\r\n!3\r\nfoo\r\n", "expected '$', got '!'" },
        { "*1\r\n$3\r\nfooXX", "bulk data is not followed by CRLF" },
        { "SET \"unbalanced\r\n", "unbalanced quotes" },
        { "*2\r\n$3\r\nGET\r\n$x\r\n", "invalid bulk length" },
    };

    [Theory]
    [MemberData(nameof(HostileInput))]
    public async Task Hostile_input_gets_a_protocol_error_and_closes_only_that_connection(string input, string expected)
    {
        await using var server = await CacheServerProcess.StartAsync();
        await using var bystander = await server.ConnectAsync();
        await bystander.GetDatabase().StringSetAsync("safe", "still here");

        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync("127.0.0.1", server.Port);
        await socket.SendAsync(Encoding.ASCII.GetBytes(input));
        var reply = await ReadUntilClosedAsync(socket);

        Assert.StartsWith("-ERR Protocol error: ", reply, StringComparison.Ordinal);
        Assert.Contains(expected, reply, StringComparison.Ordinal);
        Assert.Equal("still here", await bystander.GetDatabase().StringGetAsync("safe"));
        Assert.Contains("infra_cache_protocol_errors_total{reason=\"malformed\"} 1", await server.MetricsAsync(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_declared_million_element_command_costs_nothing_until_it_arrives()
    {
        await using var server = await CacheServerProcess.StartAsync();
        var before = server.Process.ResidentBytes();
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync("127.0.0.1", server.Port);
        await socket.SendAsync(Encoding.ASCII.GetBytes("*1000000\r\n$4\r\nPING\r\n"));
        await Task.Delay(200);
        Assert.True(server.Process.ResidentBytes() - before < 16L * 1024 * 1024);

        await using var other = await server.ConnectAsync();
        Assert.True(await other.GetDatabase().PingAsync() < TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task An_inline_line_over_64k_is_refused()
    {
        await using var server = await CacheServerProcess.StartAsync();
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync("127.0.0.1", server.Port);
        await socket.SendAsync(Encoding.ASCII.GetBytes("SET k " + new string('x', 70_000)));
        Assert.Contains("too big inline request", await ReadUntilClosedAsync(socket), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_write_flood_keeps_used_memory_within_maxmemory()
    {
        await using var server = await CacheServerProcess.StartAsync("--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru");
        await using var muxer = await server.ConnectAsync();
        var db = muxer.GetDatabase();
        var value = new string('v', 1000);
        var writes = Enumerable.Range(0, 20_000).Select(i => db.StringSetAsync($"flood:{i}", value, flags: CommandFlags.FireAndForget)).ToList();
        await Task.WhenAll(writes);
        await db.PingAsync();

        var info = Parse(await db.ExecuteAsync("INFO", "memory", "stats"));
        Assert.True(long.Parse(info["used_memory"], System.Globalization.CultureInfo.InvariantCulture) <= 4L * 1024 * 1024 * 101 / 100,
            $"used_memory {info["used_memory"]} over maxmemory");
        Assert.True(long.Parse(info["evicted_keys"], System.Globalization.CultureInfo.InvariantCulture) > 10_000);
        Assert.True((await db.StringGetAsync("flood:19999")).HasValue, "the newest key survives LRU");
    }

    [Fact]
    public async Task Noeviction_refuses_writes_with_redis_oom_error_but_allows_reads_and_deletes()
    {
        await using var server = await CacheServerProcess.StartAsync("--maxmemory", "1mb", "--maxmemory-policy", "noeviction", "--shards", "4");
        await using var muxer = await server.ConnectAsync();
        var db = muxer.GetDatabase();
        var value = new string('v', 1000);
        RedisServerException? oom = null;
        for (var i = 0; i < 5000 && oom is null; i++)
        {
            try
            {
                await db.StringSetAsync($"k{i}", value);
            }
            catch (RedisServerException ex)
            {
                oom = ex;
            }
        }

        Assert.NotNull(oom);
        Assert.StartsWith("OOM command not allowed when used memory > 'maxmemory'", oom.Message, StringComparison.Ordinal);
        Assert.True((await db.StringGetAsync("k0")).HasValue);
        Assert.True(await db.KeyDeleteAsync("k0"));
    }

    [Fact]
    public async Task Expired_keys_are_removed_without_being_touched()
    {
        await using var server = await CacheServerProcess.StartAsync();
        await using var muxer = await server.ConnectAsync();
        var db = muxer.GetDatabase();
        await Task.WhenAll(Enumerable.Range(0, 2000).Select(i => db.StringSetAsync($"temp:{i}", "x", TimeSpan.FromMilliseconds(200))));
        await db.StringSetAsync("keeper", "stays");
        Assert.Equal(2001, (int)await db.ExecuteAsync("DBSIZE"));

        // DBSIZE and INFO look at no key: only active expiry can bring the count down.
        await Eventually.HoldsAsync(async () => (int)await db.ExecuteAsync("DBSIZE") == 1, "active expiry removed every expired key", TimeSpan.FromSeconds(20));
        var info = Parse(await db.ExecuteAsync("INFO", "stats"));
        Assert.Equal("2000", info["expired_keys"]);
        Assert.Equal("stays", await db.StringGetAsync("keeper"));
    }

    [Fact]
    public async Task Metrics_report_commands_hits_misses_memory_keys_and_connections()
    {
        // redis-cli sends exactly these commands (StackExchange.Redis adds its own handshake reads).
        await using var server = await CacheServerProcess.StartAsync();
        await RedisCliAsync(server, "set", "a", "1");
        await RedisCliAsync(server, "get", "a");
        await RedisCliAsync(server, "get", "b");

        var metrics = await server.MetricsAsync();
        Assert.Contains("infra_cache_commands_total{command=\"set\"} 1", metrics, StringComparison.Ordinal);
        Assert.Contains("infra_cache_commands_total{command=\"get\"} 2", metrics, StringComparison.Ordinal);
        Assert.Contains("infra_cache_keyspace_hits_total 1", metrics, StringComparison.Ordinal);
        Assert.Contains("infra_cache_keyspace_misses_total 1", metrics, StringComparison.Ordinal);
        Assert.Contains("infra_cache_keys 1", metrics, StringComparison.Ordinal);
        Assert.Contains("infra_cache_memory_used_bytes ", metrics, StringComparison.Ordinal);
        Assert.Contains("infra_cache_evictions_total 0", metrics, StringComparison.Ordinal);
        Assert.Contains("infra_cache_expirations_total 0", metrics, StringComparison.Ordinal);
        Assert.Contains("infra_cache_connections 0", metrics, StringComparison.Ordinal);
        await using var muxer = await server.ConnectAsync();
        Assert.Matches(@"infra_cache_connections [1-9]", await server.MetricsAsync());
        Assert.Equal(System.Net.HttpStatusCode.OK, (await server.AdminClient.GetAsync("/healthz")).StatusCode);
    }

    [Fact]
    public async Task Config_set_changes_maxmemory_and_policy_at_run_time()
    {
        await using var server = await CacheServerProcess.StartAsync();
        await using var muxer = await server.ConnectAsync();
        var db = muxer.GetDatabase();
        for (var i = 0; i < 3000; i++)
        {
            await db.StringSetAsync($"c{i}", new string('z', 500), flags: CommandFlags.FireAndForget);
        }

        await db.PingAsync();
        Assert.Equal("OK", (string?)await db.ExecuteAsync("CONFIG", "SET", "maxmemory", "512kb", "maxmemory-policy", "allkeys-adaptive"));
        var config = (RedisResult[])(await db.ExecuteAsync("CONFIG", "GET", "maxmemory*"))!;
        var values = Enumerable.Range(0, config.Length / 2).ToDictionary(i => (string)config[2 * i]!, i => (string)config[(2 * i) + 1]!);
        Assert.Equal("524288", values["maxmemory"]);
        Assert.Equal("allkeys-adaptive", values["maxmemory-policy"]);
        var info = Parse(await db.ExecuteAsync("INFO", "memory"));
        Assert.True(long.Parse(info["used_memory"], System.Globalization.CultureInfo.InvariantCulture) <= 512 * 1024);
    }

    [Fact]
    public async Task Maxclients_refuses_with_redis_error_and_serves_the_rest()
    {
        await using var server = await CacheServerProcess.StartAsync("--maxclients", "1");
        using var first = await RespConnection.ConnectAsync(server.Port);
        Assert.Equal("+PONG", await first.CallAsync("PING"));

        using var second = await RespConnection.ConnectAsync(server.Port);
        Assert.Equal("-ERR max number of clients reached", await second.ReadAsync());

        Assert.Equal("+OK", await first.CallAsync("SET", "k", "v"));
        var metrics = await server.AdminClient.GetStringAsync("/metrics");
        Assert.Contains("infra_cache_connections_rejected_total 1", metrics, StringComparison.Ordinal);
    }

    internal static Dictionary<string, string> Parse(RedisResult info) =>
        ((string)info!).Split("\r\n").Where(l => l.Contains(':', StringComparison.Ordinal) && !l.StartsWith('#'))
            .Select(l => l.Split(':', 2)).ToDictionary(p => p[0], p => p[1]);

    private static Task<string> RedisCliAsync(CacheServerProcess server, params string[] args) =>
        RunAsync("redis-cli", ["-p", server.Port.ToString(System.Globalization.CultureInfo.InvariantCulture), .. args]);

    private static async Task<string> RunAsync(string file, params string[] args)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        using var process = Process.Start(info)!;
        var output = await process.StandardOutput.ReadToEndAsync();
        var error = await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(120));
        Assert.True(process.ExitCode == 0, $"{file} failed: {error}");
        return output.Replace("\r", string.Empty, StringComparison.Ordinal).Trim();
    }

    private static async Task<string> ReadAtLeastAsync(Socket socket, int length)
    {
        var received = new MemoryStream();
        var buffer = new byte[4096];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (received.Length < length)
        {
            var n = await socket.ReceiveAsync(buffer, timeout.Token);
            if (n == 0)
            {
                break;
            }

            received.Write(buffer, 0, n);
        }

        return Encoding.ASCII.GetString(received.ToArray());
    }

    private static async Task<string> ReadUntilClosedAsync(Socket socket)
    {
        var received = new MemoryStream();
        var buffer = new byte[4096];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        try
        {
            int n;
            while ((n = await socket.ReceiveAsync(buffer, timeout.Token)) > 0)
            {
                received.Write(buffer, 0, n);
            }
        }
        catch (SocketException)
        {
            // A reset after the reply is also a close.
        }

        return Encoding.ASCII.GetString(received.ToArray());
    }
}
