namespace Infra.Core.Networking;

/// <summary>A pipe reader that knows which thread its reads complete on.</summary>
public interface ICompletionThread
{
    /// <summary>
    /// The managed thread on which reads that had to wait complete (0 before any is known). With
    /// inline completions that is the epoll thread serving the socket: callers use it to keep work
    /// for one client on one thread.
    /// </summary>
    int CompletionThread { get; }
}
