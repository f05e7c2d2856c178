using System.Buffers;
using System.Net.Sockets;
using Infra.Core.Framing;
using MessagePack;

namespace Infra.Client.Tests;

/// <summary>The server side of a fake peer: reads request frames off a socket and answers them by id.</summary>
internal sealed class FramePeer(Socket socket)
{
    private readonly ArrayBufferWriter<byte> _received = new();
    private readonly byte[] _buffer = new byte[4096];

    /// <summary>The ids of the whole requests one receive completed (maybe none), or null once the client closed.</summary>
    public async Task<List<long>?> ReadIdsAsync() => (await ReadRequestsAsync())?.Select(r => r.Id).ToList();

    /// <summary>The (id, op) of the whole requests one receive completed (maybe none), or null once the client closed.</summary>
    public Task<List<(long Id, string Op)>?> ReadRequestsAsync() => ReadFramesAsync(static body =>
    {
        var reader = new MessagePackReader(body);
        reader.ReadArrayHeader();
        return (reader.ReadInt64(), reader.ReadString() ?? "");
    });

    /// <summary>The whole requests one receive completed, with their arguments as plain objects; null once the client closed.</summary>
    public Task<List<(long Id, string Op, Dictionary<string, object?> Args)>?> ReadRequestArgsAsync() => ReadFramesAsync(static body =>
    {
        var parts = (List<object?>)MessagePackValues.ReadWhole(body)!;
        return ((long)parts[0]!, (string)parts[1]!, parts.Count > 2 && parts[2] is Dictionary<string, object?> args ? args : []);
    });

    /// <summary>One receive; every frame it completed, read by <paramref name="read"/> (the rest waits for the next receive).</summary>
    private async Task<List<T>?> ReadFramesAsync<T>(Func<ReadOnlySequence<byte>, T> read)
    {
        var received = await socket.ReceiveAsync(_buffer);
        if (received == 0)
        {
            return null;
        }

        _received.Write(_buffer.AsSpan(0, received));
        var pending = new ReadOnlySequence<byte>(_received.WrittenMemory);
        var frames = new List<T>();
        while (Frames.TryRead(ref pending, 1 << 20, out var body, out _) == FrameStatus.Complete)
        {
            frames.Add(read(body));
        }

        var rest = pending.ToArray();
        _received.ResetWrittenCount();
        _received.Write(rest);
        return frames;
    }

    /// <summary>Any frame: <c>[id, status, body]</c>.</summary>
    public async Task SendAsync(long id, string status, MessagePackBody body) => await socket.SendAsync(Frames.Build(id, status, body));

    /// <summary>An "ok" answer with <paramref name="result"/>.</summary>
    public async Task AnswerAsync(long id, MessagePackBody result) => await socket.SendAsync(Frames.Build(id, "ok", result));

    /// <summary>An "ok" answer with an empty map for each id, in one send.</summary>
    public async Task AnswerAsync(IEnumerable<long> ids) =>
        await socket.SendAsync(ids.SelectMany(id => Frames.Build(id, "ok", (ref MessagePackWriter w) => w.WriteMapHeader(0))).ToArray());
}
