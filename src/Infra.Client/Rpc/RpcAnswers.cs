using Infra.Core.Framing;
using MessagePack;

namespace Infra.Client.Rpc;

/// <summary>Reads one field layout of an "ok" answer's result.</summary>
internal delegate T AnswerReader<T>(ref MessagePackReader reader);

/// <summary>Reading answers the clients parse by hand (their hot paths: no generic value tree).</summary>
internal static class RpcAnswers
{
    /// <summary>
    /// The answer to <paramref name="op"/> read with <paramref name="read"/>; one that is not laid out as
    /// expected (a bug on the other side, a peer that is not ours) is the client's own error
    /// (<paramref name="unreadable"/>, given the message) — never a MessagePack exception its callers'
    /// error handling does not expect. Callers pass static lambdas: nothing is allocated per answer.
    /// </summary>
    public static T Read<T>(string op, byte[] body, AnswerReader<T> read, Func<string, Exception> unreadable)
    {
        try
        {
            var reader = new MessagePackReader(body);
            return read(ref reader);
        }
        catch (Exception ex) when (MessagePackValues.IsMalformed(ex) || ex is InvalidDataException or InvalidCastException)
        {
            throw unreadable($"the answer to {op} is unreadable: {ex.Message}");
        }
    }
}
