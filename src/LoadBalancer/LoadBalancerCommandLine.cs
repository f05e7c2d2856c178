using Infra.Core.Hosting;

namespace Infra.LoadBalancer;

internal static class LoadBalancerCommandLine
{
    public static readonly CommandLine Definition = new()
    {
        ServiceName = "loadbalancer",
        Switches = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
        {
            ["--listen"] = "Listen",
            ["--admin"] = "Admin",
            ["--admin-token"] = "AdminToken",
            ["--algorithm"] = "Algorithm",
            ["--health-path"] = "HealthPath",
            ["--health-interval"] = "HealthInterval",
            ["--health-timeout"] = "HealthTimeout",
            ["--health-rise"] = "HealthRise",
            ["--health-fall"] = "HealthFall",
            ["--eject-after"] = "EjectAfter",
            ["--eject-for"] = "EjectFor",
            ["--retries"] = "Retries",
            ["--connect-timeout"] = "ConnectTimeout",
            ["--backend-timeout"] = "BackendTimeout",
            ["--header-timeout"] = "HeaderTimeout",
            ["--client-timeout"] = "ClientTimeout",
            ["--keep-alive-timeout"] = "KeepAliveTimeout",
            ["--tunnel-timeout"] = "TunnelTimeout",
            ["--drain-timeout"] = "DrainTimeout",
            ["--shutdown-timeout"] = "ShutdownTimeout",
            ["--max-connections"] = "MaxConnections",
            ["--max-request-line"] = "MaxRequestLineSize",
            ["--max-header-size"] = "MaxRequestHeadersSize",
            ["--max-headers"] = "MaxRequestHeaderCount",
            ["--max-body-size"] = "MaxRequestBodySize",
            ["--max-response-header-size"] = "MaxResponseHeadersSize",
            ["--max-idle-backend-connections"] = "MaxIdleBackendConnections",
            ["--backend-idle-timeout"] = "BackendIdleTimeout",
            ["--access-log"] = "AccessLog",
        },
        ListSwitches = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
        {
            ["--backend"] = "Backends",
        },
        Usage = """
            Infra load balancer: an HTTP/1.1 reverse proxy with health checks, retries and live backend changes.

            Usage: loadbalancer --listen 127.0.0.1:8080 --admin 127.0.0.1:8081 --backend http://127.0.0.1:9001 [--backend URL ...] [options]

              --listen HOST:PORT             proxy endpoint (default 127.0.0.1:8080; port 0 picks one)
              --admin HOST:PORT              admin endpoint: /backends, /healthz, /metrics (default 127.0.0.1:8081)
              --backend URL[,weight=N]       a backend, repeatable (http://host:port; weight 0..256, default 1)
              --algorithm NAME               round-robin (default) | weighted-round-robin | least-connections | power-of-two
              --admin-token T                require "Authorization: Bearer T" on admin changes (POST/PUT/DELETE)
              --config FILE                  JSON file with the same keys (Listen, Backends, HealthInterval, ...)

            Health
              --health-path PATH             active check path (default /healthz)
              --health-interval DURATION     between checks (default 2s; 0 turns active checks off)
              --health-timeout DURATION      per check (default 1s)
              --health-rise N / --health-fall N   successes to come back / failures to go down (default 2 / 3)
              --eject-after N                connection failures in a row that eject a backend (default 3; 0 = off)
              --eject-for DURATION           first ejection period, doubling on repeat (default 5s)
              --retries N                    extra attempts on another backend when safe (default 1)

            Timeouts (e.g. 500ms, 10s, 2m)
              --connect-timeout (5s)  --backend-timeout (60s, then 504)  --header-timeout (10s, then 408)
              --client-timeout (60s)  --keep-alive-timeout (60s)  --tunnel-timeout (1h)
              --drain-timeout (30s)   --shutdown-timeout (30s)  --backend-idle-timeout (30s)

            Limits (sizes like 8k, 1m, 1g)
              --max-connections (10000)  --max-request-line (8k, then 414)  --max-header-size (32k, then 431)
              --max-headers (100, then 431)  --max-body-size (1g, then 413; 0 = none)
              --max-response-header-size (64k, then 502)  --max-idle-backend-connections (256 per backend)

            Other
              --access-log stdout|FILE       one JSON line per request
              --log-level LEVEL              Trace, Debug, Information (default), Warning, Error
            """,
    };
}
