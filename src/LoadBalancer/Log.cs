using Microsoft.Extensions.Logging;

namespace Infra.LoadBalancer;

/// <summary>The load balancer's log events (ids 1000–1999). Bad client input is Debug, never Warning.</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 1001, Level = LogLevel.Debug, Message = "Connection {ConnectionId}: request rejected with {Status} ({Reason})")]
    public static partial void RequestRejected(ILogger logger, long connectionId, int status, string reason);

    [LoggerMessage(EventId = 1002, Level = LogLevel.Debug, Message = "Connection {ConnectionId}: {Backend} failed: {Failure}; retrying on another backend")]
    public static partial void Retrying(ILogger logger, long connectionId, string backend, string failure);

    [LoggerMessage(EventId = 1003, Level = LogLevel.Debug, Message = "Connection {ConnectionId}: {Backend} failed: {Failure}; answering {Status}")]
    public static partial void ForwardFailed(ILogger logger, long connectionId, string backend, string failure, int status);

    [LoggerMessage(EventId = 1004, Level = LogLevel.Debug, Message = "Connection {ConnectionId}: response from {Backend} cut short: {Failure}")]
    public static partial void ResponseTruncated(ILogger logger, long connectionId, string backend, string failure);

    [LoggerMessage(EventId = 1010, Level = LogLevel.Warning, Message = "Backend {Backend} is now {State} (health check)")]
    public static partial void HealthChanged(ILogger logger, string backend, string state);

    [LoggerMessage(EventId = 1011, Level = LogLevel.Warning, Message = "Backend {Backend} ejected after connection failures")]
    public static partial void Ejected(ILogger logger, string backend);

    [LoggerMessage(EventId = 1012, Level = LogLevel.Debug, Message = "Health check of {Backend} failed: {Error}")]
    public static partial void HealthCheckFailed(ILogger logger, string backend, string error);

    [LoggerMessage(EventId = 1020, Level = LogLevel.Information, Message = "Backend {Backend} added with weight {Weight}")]
    public static partial void BackendAdded(ILogger logger, string backend, int weight);

    [LoggerMessage(EventId = 1021, Level = LogLevel.Information, Message = "Backend {Backend} weight set to {Weight}")]
    public static partial void BackendReweighted(ILogger logger, string backend, int weight);

    [LoggerMessage(EventId = 1022, Level = LogLevel.Information, Message = "Backend {Backend} draining")]
    public static partial void BackendDraining(ILogger logger, string backend);

    [LoggerMessage(EventId = 1023, Level = LogLevel.Information, Message = "Backend {Backend} removed (drained: {Drained})")]
    public static partial void BackendRemoved(ILogger logger, string backend, bool drained);

    [LoggerMessage(EventId = 1024, Level = LogLevel.Information, Message = "Backend {Backend} back in service")]
    public static partial void BackendUndrained(ILogger logger, string backend);

    [LoggerMessage(EventId = 1030, Level = LogLevel.Information, Message = "Balancing {Count} backends with {Algorithm}")]
    public static partial void Started(ILogger logger, int count, string algorithm);

    [LoggerMessage(EventId = 1031, Level = LogLevel.Information, Message = "Shutting down: waiting up to {Seconds} s for {Connections} connections")]
    public static partial void ShuttingDown(ILogger logger, double seconds, int connections);

    [LoggerMessage(EventId = 1040, Level = LogLevel.Warning, Message = "Access log dropped {Count} entries (writer behind)")]
    public static partial void AccessLogDropped(ILogger logger, long count);
}
