using Infra.Core.Hosting;

namespace Infra.ShardRouter;

internal static class RouterCommandLine
{
    public static readonly CommandLine Definition = new()
    {
        ServiceName = "shardrouter",
        Switches = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
        {
            ["--listen"] = "Listen",
            ["--http"] = "Http",
            ["--shards"] = "ShardsFile",
            ["--data-dir"] = "DataDir",
            ["--probe-interval"] = "ProbeInterval",
            ["--probe-timeout"] = "ProbeTimeout",
            ["--fail-after"] = "FailAfter",
            ["--max-replica-lag"] = "MaxReplicaLag",
            ["--request-timeout"] = "RequestTimeout",
            ["--connect-timeout"] = "ConnectTimeout",
            ["--connections-per-node"] = "ConnectionsPerNode",
            ["--max-request-size"] = "MaxRequestBytes",
            ["--max-statements"] = "MaxStatements",
            ["--max-connections"] = "MaxConnections",
            ["--copy-batch"] = "CopyBatchRows",
            ["--admin-token"] = "AdminToken",
            ["--node-token"] = "NodeToken",
            ["--shutdown-timeout"] = "ShutdownTimeout",
        },
        Usage = """
            Infra shard router: keyed SQL over sharded data nodes; slots by rendezvous hashing,
            read/write split, session tokens, fan-out reads, automatic failover, online resharding.

            Usage: shardrouter --listen 127.0.0.1:7700 --http 127.0.0.1:7701 --shards shards.json
              shards.json: {"shards":[{"id":"s0","master":"127.0.0.1:7600","replicas":["127.0.0.1:7610"]}, ...]}
                           (data nodes' --listen addresses; "weight" optional)

              --listen HOST:PORT          MessagePack protocol (Infra.Client) (default 127.0.0.1:7700; port 0 picks one)
              --http HOST:PORT            HTTP/JSON API (/db/execute /db/query /db/schema /shards), /healthz, /metrics (127.0.0.1:7701)
              --shards FILE               the seed map; once the router has stored its own (in --data-dir) that one wins
              --data-dir DIR              where shard-map.json is kept (default ./data/router)
              --admin-token T             POST/DELETE on the HTTP API need "Authorization: Bearer T"
              --node-token T              the data nodes' admin token (sent with promote/follow/claim)
              --config FILE               JSON file with the same keys

            Health and failover
              --probe-interval DURATION   every node's status is read this often (500ms)
              --probe-timeout DURATION    a probe slower than this failed (500ms)
              --fail-after K              failed probes in a row before a master is replaced (3)
              --max-replica-lag DURATION  replicas further behind leave the read rotation (5s)

            Limits
              --request-timeout DURATION  per request to a data node (10s)
              --connect-timeout DURATION  (1s)
              --connections-per-node N    multiplexed connections to each data node (2)
              --max-request-size SIZE     (16mb)
              --max-statements N          per request (1000)
              --max-connections N         MessagePack client connections (10000)
              --copy-batch N              rows per write when a slot moves (500)
              --shutdown-timeout DURATION
              --log-level LEVEL           Trace, Debug, Information (default), Warning, Error
            """,
    };
}
