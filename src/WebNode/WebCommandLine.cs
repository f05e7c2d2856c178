using Infra.Core.Hosting;

namespace Infra.WebNode;

internal static class WebCommandLine
{
    public static readonly CommandLine Definition = new()
    {
        ServiceName = "webnode",
        Switches = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
        {
            ["--listen"] = "Listen",
            ["--role"] = "Role",
            ["--node-id"] = "NodeId",
            ["--router"] = "Router",
            ["--queue"] = "Queue",
            ["--public-url"] = "PublicUrl",
            ["--click-topic"] = "ClickTopic",
            ["--click-partitions"] = "ClickPartitions",
            ["--click-buffer"] = "ClickBuffer",
            ["--link-ttl"] = "LinkCacheTtl",
            ["--session-ttl"] = "SessionTtl",
            ["--kdf-iterations"] = "KdfIterations",
            ["--max-url-length"] = "MaxUrlLength",
            ["--worker-batch"] = "WorkerBatch",
            ["--worker-group"] = "WorkerGroup",
            ["--request-timeout"] = "RequestTimeout",
            ["--cache-timeout"] = "CacheTimeout",
            ["--shutdown-timeout"] = "ShutdownTimeout",
        },
        ListSwitches = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
        {
            ["--cache"] = "Caches",
        },
        Usage = """
            Infra web node: a stateless link shortener (ASP.NET Core). Sessions and links are cached in
            the cache servers, links live on shards behind the shard router, redirects publish click
            events to the queue broker; --role worker counts them.

            Usage: webnode --listen 127.0.0.1:8000 --router 127.0.0.1:7700 --queue 127.0.0.1:7400 \
                           --cache 127.0.0.1:6379 [--cache HOST:PORT ...] --node-id 1
                   webnode --role worker --router ... --queue ...

              --listen HOST:PORT        the site, /healthz, /metrics (default 127.0.0.1:8000; port 0 picks one)
              --role web|worker         web (default) serves the site; worker counts click events
              --node-id N               0..1023, unique per web node: prefixes the link codes it makes (default 0)
              --router HOST:PORT        the shard router's MessagePack address (default 127.0.0.1:7700)
              --cache HOST:PORT         a cache server (repeat for several; keys placed by rendezvous hashing)
              --queue HOST:PORT         the queue broker's native address (default 127.0.0.1:7400)
              --public-url URL          base of short URLs (default: the request's X-Forwarded-Host or Host)
              --config FILE             JSON file with the same keys

            Tuning
              --link-ttl DURATION       how long a link stays cached (1h)
              --session-ttl DURATION    sessions expire this long after login (24h)
              --kdf-iterations N        PBKDF2-SHA256 iterations for passwords (100000)
              --max-url-length N        longest URL accepted (2048)
              --click-topic NAME        (clicks), --click-partitions N (4)
              --click-buffer N          click events held while the queue is slow or down, then dropped (10000)
              --worker-batch N          click events the worker takes per fetch (500)
              --worker-group NAME       the worker's queue-mode consumer group (click-counter)
              --request-timeout D       per call to the router or the queue (6s: above a data node's 5s semi-sync wait)
              --cache-timeout D         per cache call; slower counts as a miss (250ms)
              --shutdown-timeout D      (10s)
              --log-level LEVEL         Trace, Debug, Information (default), Warning, Error
            """,
    };
}
