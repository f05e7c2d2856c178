using Microsoft.Extensions.Logging;

namespace Infra.Core.Hosting;

/// <summary>
/// The one line every service prints when an endpoint is bound, with the real port. Tests and
/// <c>infra up</c> read it to learn where a service started with port 0 is listening.
/// </summary>
public static partial class ListeningLog
{
    [LoggerMessage(EventId = 111, Level = LogLevel.Information, Message = "Listening on {Url}")]
    public static partial void Listening(ILogger logger, string url);
}
