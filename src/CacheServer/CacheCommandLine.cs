using Infra.Core.Hosting;

namespace Infra.CacheServer;

internal static class CacheCommandLine
{
    public static readonly CommandLine Definition = new()
    {
        ServiceName = "cacheserver",
        Switches = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
        {
            ["--listen"] = "Listen",
            ["--admin"] = "Admin",
            ["--admin-token"] = "AdminToken",
            ["--maxmemory"] = "MaxMemory",
            ["--maxmemory-policy"] = "MaxMemoryPolicy",
            ["--shards"] = "Shards",
            ["--requirepass"] = "RequirePass",
            ["--maxclients"] = "MaxClients",
            ["--proto-max-bulk-len"] = "MaxBulkLength",
            ["--max-multibulk-length"] = "MaxMultibulkLength",
            ["--max-inline-length"] = "MaxInlineLength",
            ["--client-query-buffer-limit"] = "MaxQueryBuffer",
            ["--timeout"] = "Timeout",
            ["--shutdown-timeout"] = "ShutdownTimeout",
        },
        Usage = """
            Infra cache server: the Redis protocol (RESP2/RESP3) over a sharded in-memory store with eviction and TTLs.

            Usage: cacheserver --listen 127.0.0.1:6379 --admin 127.0.0.1:6380 [options]

              --listen HOST:PORT             client endpoint (default 127.0.0.1:6379; port 0 picks one)
              --admin HOST:PORT              admin endpoint: /healthz, /metrics (default 127.0.0.1:6380)
              --maxmemory SIZE               data limit, e.g. 256mb (default 0 = none), for the whole store
              --maxmemory-policy NAME        allkeys-lru (default) | allkeys-lfu | fifo | allkeys-adaptive |
                                             noeviction | volatile-lru | volatile-ttl
              --shards N                     power of two (default: ≥ 4 × cores)
              --requirepass P                clients must AUTH P (or HELLO … AUTH default P) first
              --admin-token T                admin changes need "Authorization: Bearer T"
              --config FILE                  JSON file with the same keys (MaxMemory, MaxMemoryPolicy, ...)

            Limits
              --maxclients N                 (10000)
              --proto-max-bulk-len SIZE      largest argument (512mb)
              --max-multibulk-length N       most arguments in one command (1048576)
              --max-inline-length SIZE       longest inline command (64k)
              --client-query-buffer-limit SIZE  unparsed bytes per client (1g)
              --timeout DURATION             close idle clients (0 = never)
              --shutdown-timeout DURATION    on SIGTERM, how long clients get to finish (10s)
              --log-level LEVEL              Trace, Debug, Information (default), Warning, Error
            """,
    };
}
