using Infra.Core.Hosting;

namespace Infra.DataNode;

internal static class NodeCommandLine
{
    public static readonly CommandLine Definition = new()
    {
        ServiceName = "datanode",
        Switches = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
        {
            ["--listen"] = "Listen",
            ["--http"] = "Http",
            ["--data-dir"] = "DataDir",
            ["--role"] = "Role",
            ["--master"] = "Master",
            ["--sync"] = "Sync",
            ["--sync-replicas"] = "SyncReplicas",
            ["--sync-timeout"] = "SyncTimeout",
            ["--read-wait"] = "ReadWaitTimeout",
            ["--synchronous"] = "Synchronous",
            ["--log-retention"] = "LogRetention",
            ["--replication-timeout"] = "ReplicationTimeout",
            ["--max-statements"] = "MaxStatements",
            ["--max-sql-size"] = "MaxSqlBytes",
            ["--max-request-size"] = "MaxRequestBytes",
            ["--max-result-rows"] = "MaxResultRows",
            ["--max-result-size"] = "MaxResultBytes",
            ["--max-query-time"] = "MaxQueryTime",
            ["--max-write-time"] = "MaxWriteTime",
            ["--read-mmap"] = "ReadMmap",
            ["--max-pending-writes"] = "MaxPendingWrites",
            ["--max-group"] = "MaxGroupSize",
            ["--admin-token"] = "AdminToken",
            ["--max-connections"] = "MaxConnections",
            ["--shutdown-timeout"] = "ShutdownTimeout",
        },
        Usage = """
            Infra data node: one SQLite database, master or replica; changeset replication, semi-sync,
            promotion with epoch fencing.

            Usage: datanode --listen 127.0.0.1:7600 --http 127.0.0.1:7601 --data-dir ./data/a --role master
                   datanode --listen 127.0.0.1:7610 --http 127.0.0.1:7611 --data-dir ./data/b --role replica --master 127.0.0.1:7600

              --listen HOST:PORT         replication (replicas connect here) (default 127.0.0.1:7600; port 0 picks one)
              --http HOST:PORT           HTTP/JSON API (/execute /query /status /checksum /promote /follow), /healthz, /metrics (127.0.0.1:7601)
              --data-dir DIR             where node.db lives (default ./data/node)
              --role master|replica      (default master; the command line wins over the stored role)
              --master HOST:PORT         the master's --listen address (replica)
              --admin-token T            POST/DELETE need "Authorization: Bearer T"
              --config FILE              JSON file with the same keys (DataDir, Role, Sync, ...)

            Durability
              --sync semi-sync|async     semi-sync (default): a write is acknowledged once --sync-replicas replicas
                                         have it durably (as soon as any replica has registered); async: after the
                                         master's commit
              --sync-replicas K          (1)
              --sync-timeout DURATION    then the write fails "not replicated" (5s)
              --synchronous full|normal  SQLite's fsync discipline (full: fsync every commit; default)
              --log-retention N          entries kept for replicas; further behind re-clones (100000)
              --replication-timeout DURATION  a replica waits this long for its master's answer or the next
                                         snapshot chunk, then reconnects (30s; the master heartbeats meanwhile)

            Reads
              --read-wait DURATION       a read with minLsn waits this long, then answers "behind" (2s)
              --max-result-rows N        (100000)
              --max-result-size SIZE     bytes of values in one result (64mb)
              --max-query-time DURATION  a read running longer is interrupted: SqlError (10s; 0: no limit)
              --read-mmap SIZE           of the database file mapped by each read connection (256mb; 0: none)

            Limits
              --max-write-time DURATION  a write's row-changing statements running longer are interrupted:
                                         SqlError, nothing of it applied (10s; 0: no limit; DDL not limited)
              --max-request-size SIZE    HTTP body (16mb)
              --max-statements N         per write request (1000)
              --max-sql-size SIZE        per statement (1mb)
              --max-pending-writes N     writes waiting before Busy (10000)
              --max-group N              writes committed together (256)
              --max-connections N        replication connections (1000)
              --shutdown-timeout DURATION
              --log-level LEVEL          Trace, Debug, Information (default), Warning, Error
            """,
    };
}
