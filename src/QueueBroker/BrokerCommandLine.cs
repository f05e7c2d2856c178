using Infra.Core.Hosting;

namespace Infra.QueueBroker;

internal static class BrokerCommandLine
{
    public static readonly CommandLine Definition = new()
    {
        ServiceName = "queuebroker",
        Switches = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
        {
            ["--listen"] = "Listen",
            ["--http"] = "Http",
            ["--data-dir"] = "DataDir",
            ["--fsync"] = "Fsync",
            ["--admin-token"] = "AdminToken",
            ["--max-message-size"] = "MaxMessageBytes",
            ["--max-frame-size"] = "MaxFrameBytes",
            ["--max-inflight-bytes"] = "MaxInFlightBytesPerConnection",
            ["--max-inflight-requests"] = "MaxInFlightRequestsPerConnection",
            ["--max-partition-pending"] = "MaxPendingBytesPerPartition",
            ["--segment-bytes"] = "SegmentBytes",
            ["--segment-age"] = "SegmentAge",
            ["--retention-bytes"] = "RetentionBytes",
            ["--retention-age"] = "RetentionAge",
            ["--visibility-timeout"] = "VisibilityTimeout",
            ["--max-deliveries"] = "MaxDeliveries",
            ["--max-unacked"] = "MaxUnacked",
            ["--session-timeout"] = "SessionTimeout",
            ["--max-connections"] = "MaxConnections",
            ["--max-partitions"] = "MaxPartitions",
            ["--max-groups"] = "MaxGroups",
            ["--shutdown-timeout"] = "ShutdownTimeout",
        },
        Usage = """
            Infra queue broker: topics of partitioned, durable append logs; stream (consumer groups, offsets)
            and queue (per-message ack, redelivery, dead letters) consumption.

            Usage: queuebroker --listen 127.0.0.1:7400 --http 127.0.0.1:7401 --data-dir ./data/queue [options]

              --listen HOST:PORT             native protocol (MessagePack frames) (default 127.0.0.1:7400; port 0 picks one)
              --http HOST:PORT               HTTP/JSON API, /healthz, /metrics (default 127.0.0.1:7401)
              --data-dir DIR                 where the logs live (default ./data/queue)
              --fsync MODE                   always (default: acknowledge after fsync, group commit) |
                                             interval:<ms> (acknowledge after write, fsync every ms) |
                                             never (acknowledge after write, fsync on roll/shutdown; unsafe)
              --admin-token T                HTTP writes need "Authorization: Bearer T"
              --config FILE                  JSON file with the same keys (DataDir, Fsync, ...)

            Log
              --segment-bytes SIZE           roll segments at this size (64mb; reserved on disk when a segment is first written)
              --segment-age DURATION         roll a non-empty segment this old (1h; 0 = never)
              --retention-bytes SIZE         per partition, delete oldest segments beyond (-1 = no limit)
              --retention-age DURATION       delete segments last written longer ago (7d; 0 = keep)

            Queue and stream groups
              --visibility-timeout DURATION  unacked deliveries come back after (30s)
              --max-deliveries N             then go to <topic>.dlq (5)
              --max-unacked N                queue group: delivered, not yet acked; past it only redeliveries (100000)
              --session-timeout DURATION     stream members without a heartbeat this long leave (10s)

            Limits
              --max-message-size SIZE        key + headers + payload (1mb)
              --max-frame-size SIZE          native-protocol frame (16mb)
              --max-inflight-bytes SIZE      produce bytes awaiting ack, and fetch bytes in flight, per connection (64mb)
              --max-inflight-requests N      requests in flight per connection before reading pauses (1024)
              --max-partition-pending SIZE   bytes waiting for the disk per partition before Busy (32mb)
              --max-connections N            (10000)
              --max-partitions N             in all the topics clients create (1024; dead-letter topics not counted)
              --max-groups N                 consumer groups, queue and stream, over all topics (1024; those on disk always open)
              --shutdown-timeout DURATION    on SIGTERM, how long requests get to finish (10s)
              --log-level LEVEL              Trace, Debug, Information (default), Warning, Error
            """,
    };
}
