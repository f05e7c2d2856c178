using Microsoft.Extensions.Logging;

namespace Infra.CacheServer;

/// <summary>The cache server's log events (ids 2000–2999). Bad client input is Debug, never Warning.</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 2001, Level = LogLevel.Debug, Message = "Client {ClientId}: protocol error, closing: {Error}")]
    public static partial void ProtocolError(ILogger logger, long clientId, string error);

    [LoggerMessage(EventId = 2010, Level = LogLevel.Information, Message = "Cache of {Shards} shards, maxmemory {MaxMemory} bytes, policy {Policy}")]
    public static partial void Started(ILogger logger, int shards, long maxMemory, string policy);

    [LoggerMessage(EventId = 2011, Level = LogLevel.Information, Message = "CONFIG SET {Parameter} {Value}")]
    public static partial void ConfigChanged(ILogger logger, string parameter, string value);

    [LoggerMessage(EventId = 2012, Level = LogLevel.Information, Message = "Shutting down: waiting up to {Seconds} s for {Connections} connections")]
    public static partial void ShuttingDown(ILogger logger, double seconds, int connections);
}
