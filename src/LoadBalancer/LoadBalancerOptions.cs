using System.Globalization;
using System.Net;
using Infra.Core.Configuration;
using Infra.LoadBalancer.Balancing;

namespace Infra.LoadBalancer;

/// <summary>A backend as configured: its URL and weight.</summary>
internal sealed record BackendConfig(BackendAddress Address, int Weight);

/// <summary>
/// Settings of the load balancer. Keys are top-level configuration keys (flags, <c>INFRA_*</c>
/// variables and <c>--config</c> JSON all use the same names). Defaults follow what HAProxy and
/// nginx ship with unless a comment says why not.
/// </summary>
internal sealed class LoadBalancerOptions : ServiceOptions
{
    public const int MaxWeight = 256;

    public IPEndPoint Listen { get; set; } = new(IPAddress.Loopback, 8080);

    public IPEndPoint Admin { get; set; } = new(IPAddress.Loopback, 8081);

    public string? AdminToken { get; set; }

    public List<BackendConfig> Backends { get; } = [];

    public BalancingAlgorithm Algorithm { get; set; } = BalancingAlgorithm.RoundRobin;

    // Active health checks. An interval of 0 turns them off (passive health still applies).
    public string HealthPath { get; set; } = "/healthz";

    public TimeSpan HealthInterval { get; set; } = TimeSpan.FromSeconds(2);

    public TimeSpan HealthTimeout { get; set; } = TimeSpan.FromSeconds(1);

    public int HealthRise { get; set; } = 2;

    public int HealthFall { get; set; } = 3;

    // Passive health: this many connection failures or timeouts in a row eject a backend.
    public int EjectAfter { get; set; } = 3;

    /// <summary>First ejection period; it doubles for each ejection without a success between, up to 16×.</summary>
    public TimeSpan EjectFor { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Extra attempts, each on another backend, for requests that are safe to resend.</summary>
    public int Retries { get; set; } = 1;

    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>How long a backend may go silent (before its response head or within its body): then 504.</summary>
    public TimeSpan BackendTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>How long a client has to send a complete request head once it starts one: then 408.</summary>
    public TimeSpan HeaderTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How long a client may go silent within a request body, or stop reading a response.</summary>
    public TimeSpan ClientTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>How long an idle keep-alive client connection stays open waiting for its next request.</summary>
    public TimeSpan KeepAliveTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>How long an upgraded (WebSocket) tunnel may go without traffic either way.</summary>
    public TimeSpan TunnelTimeout { get; set; } = TimeSpan.FromHours(1);

    /// <summary>How long DELETE /backends waits for a backend's in-flight requests before removing it anyway.</summary>
    public TimeSpan DrainTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How long SIGTERM waits for in-flight requests before closing their connections.</summary>
    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(30);

    public int MaxConnections { get; set; } = 10_000;

    // Head limits: Kestrel's defaults, which real browsers and API clients stay well inside.
    public int MaxRequestLineSize { get; set; } = 8 * 1024;

    public int MaxRequestHeadersSize { get; set; } = 32 * 1024;

    public int MaxRequestHeaderCount { get; set; } = 100;

    /// <summary>Largest request body (0 = no limit). 1 GiB: uploads pass, a runaway client does not.</summary>
    public long MaxRequestBodySize { get; set; } = 1L << 30;

    public int MaxResponseHeadersSize { get; set; } = 64 * 1024;

    /// <summary>Idle keep-alive connections kept per backend.</summary>
    public int MaxIdleBackendConnections { get; set; } = 256;

    /// <summary>
    /// Idle backend connections are closed after this; shorter than the keep-alive timeout of common
    /// backends (nginx 75 s, Kestrel 130 s) so the proxy, not the backend, closes them.
    /// </summary>
    public TimeSpan BackendIdleTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Null for none, <c>stdout</c>, or a file path: one JSON line per request.</summary>
    public string? AccessLog { get; set; }

    public override void Bind(ConfigReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        Listen = reader.ListenEndPoint("Listen", "127.0.0.1:8080");
        Admin = reader.ListenEndPoint("Admin", "127.0.0.1:8081");
        AdminToken = reader.Text("AdminToken", null) is { Length: > 0 } token ? token : null;

        foreach (var entry in reader.List("Backends"))
        {
            var text = entry.Value ?? entry["Address"];
            var weightText = entry.Value is null ? entry["Weight"] : null;
            if (!BackendAddress.TryParseWithWeight(text, weightText, out var address, out var weight, out var error))
            {
                reader.Problems.Add($"Backends:{entry.Key}: {error}");
                continue;
            }

            Backends.Add(new BackendConfig(address, weight));
        }

        var algorithm = reader.Text("Algorithm", null);
        if (algorithm is not null)
        {
            if (BalancingAlgorithms.TryParse(algorithm, out var parsed))
            {
                Algorithm = parsed;
            }
            else
            {
                reader.Problems.Add($"Algorithm: '{algorithm}' is not one of {string.Join(", ", BalancingAlgorithms.Names)}");
            }
        }

        HealthPath = reader.Text("HealthPath", HealthPath) ?? HealthPath;
        HealthInterval = reader.Duration("HealthInterval", HealthInterval, TimeSpan.Zero, TimeSpan.FromHours(1));
        HealthTimeout = reader.Duration("HealthTimeout", HealthTimeout, TimeSpan.FromMilliseconds(10), TimeSpan.FromMinutes(5));
        HealthRise = reader.Number("HealthRise", HealthRise, 1, 100);
        HealthFall = reader.Number("HealthFall", HealthFall, 1, 100);
        EjectAfter = reader.Number("EjectAfter", EjectAfter, 0, 1000);
        EjectFor = reader.Duration("EjectFor", EjectFor, TimeSpan.FromMilliseconds(10), TimeSpan.FromHours(1));
        Retries = reader.Number("Retries", Retries, 0, 3);
        ConnectTimeout = reader.Duration("ConnectTimeout", ConnectTimeout, TimeSpan.FromMilliseconds(10), TimeSpan.FromMinutes(5));
        BackendTimeout = reader.Duration("BackendTimeout", BackendTimeout, TimeSpan.FromMilliseconds(10), TimeSpan.FromDays(1));
        HeaderTimeout = reader.Duration("HeaderTimeout", HeaderTimeout, TimeSpan.FromMilliseconds(10), TimeSpan.FromHours(1));
        ClientTimeout = reader.Duration("ClientTimeout", ClientTimeout, TimeSpan.FromMilliseconds(10), TimeSpan.FromDays(1));
        KeepAliveTimeout = reader.Duration("KeepAliveTimeout", KeepAliveTimeout, TimeSpan.FromMilliseconds(10), TimeSpan.FromDays(1));
        TunnelTimeout = reader.Duration("TunnelTimeout", TunnelTimeout, TimeSpan.FromMilliseconds(10), TimeSpan.FromDays(7));
        DrainTimeout = reader.Duration("DrainTimeout", DrainTimeout, TimeSpan.Zero, TimeSpan.FromHours(1));
        ShutdownTimeout = reader.Duration("ShutdownTimeout", ShutdownTimeout, TimeSpan.Zero, TimeSpan.FromHours(1));
        MaxConnections = reader.Number("MaxConnections", MaxConnections, 1, 1_000_000);
        MaxRequestLineSize = (int)reader.Size("MaxRequestLineSize", MaxRequestLineSize, 64, 1 << 20);
        MaxRequestHeadersSize = (int)reader.Size("MaxRequestHeadersSize", MaxRequestHeadersSize, 64, 1 << 20);
        MaxRequestHeaderCount = reader.Number("MaxRequestHeaderCount", MaxRequestHeaderCount, 1, 10_000);
        MaxRequestBodySize = reader.Size("MaxRequestBodySize", MaxRequestBodySize, 0, long.MaxValue);
        MaxResponseHeadersSize = (int)reader.Size("MaxResponseHeadersSize", MaxResponseHeadersSize, 256, 1 << 20);
        MaxIdleBackendConnections = reader.Number("MaxIdleBackendConnections", MaxIdleBackendConnections, 0, 100_000);
        BackendIdleTimeout = reader.Duration("BackendIdleTimeout", BackendIdleTimeout, TimeSpan.FromMilliseconds(100), TimeSpan.FromHours(1));
        AccessLog = reader.Text("AccessLog", null) is { Length: > 0 } log ? log : null;
    }

    protected override IEnumerable<string> CheckConsistency()
    {
        if (HealthInterval > TimeSpan.Zero && (HealthPath.Length == 0 || HealthPath[0] != '/'))
        {
            yield return $"HealthPath: '{HealthPath}' must start with /";
        }

        if (HealthInterval > TimeSpan.Zero && HealthTimeout > HealthInterval)
        {
            yield return string.Create(CultureInfo.InvariantCulture,
                $"HealthTimeout: {HealthTimeout.TotalMilliseconds:0} ms is longer than HealthInterval {HealthInterval.TotalMilliseconds:0} ms");
        }

        var seen = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var backend in Backends)
        {
            if (!seen.Add(backend.Address.Url))
            {
                yield return $"Backends: {backend.Address.Url} is listed twice";
            }
        }

        if (Listen.Port != 0 && Listen.Equals(Admin))
        {
            yield return $"Admin: {Admin} is the same endpoint as Listen";
        }
    }

    /// <summary>The limits of a request head.</summary>
    public Http.HeadLimits RequestHeadLimits => new(MaxRequestLineSize, MaxRequestHeadersSize, MaxRequestHeaderCount);

    /// <summary>The limits of a response head: the status line shares the header budget.</summary>
    public Http.HeadLimits ResponseHeadLimits => new(MaxResponseHeadersSize, MaxResponseHeadersSize, 1000);
}
