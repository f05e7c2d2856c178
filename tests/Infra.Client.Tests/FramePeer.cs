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
    public async Task<List<(long Id, string Op)>?> ReadRequestsAsync()
    {
        var read = await socket.ReceiveAsync(_buffer);
        if (read == 0)
        {
            return null;
        }

        _received.Write(_buffer.AsSpan(0, read));
        var pending = new ReadOnlySequence<byte>(_received.WrittenMemory);
        var ids = new List<(long, string)>();
        while (Frames.TryRead(ref pending, 1 << 20, out var body, out _) == FrameStatus.Complete)
        {
            var reader = new MessagePackReader(body);
            reader.ReadArrayHeader();
            ids.Add((reader.ReadInt64(), reader.ReadString() ?? ""));
        }

        var rest = pending.ToArray();
        _received.ResetWrittenCount();
        _received.Write(rest);
        return ids;
    }

    /// <summary>The whole requests one receive completed, with their arguments as plain objects; null once the client closed.</summary>
    public async Task<List<(long Id, string Op, Dictionary<string, object?> Args)>?> ReadRequestArgsAsync()
    {
        var read = await socket.ReceiveAsync(_buffer);
        if (read == 0)
        {
            return null;
        }

        _received.Write(_buffer.AsSpan(0, read));
        var pending = new ReadOnlySequence<byte>(_received.WrittenMemory);
        var requests = new List<(long, string, Dictionary<string, object?>)>();
        while (Frames.TryRead(ref pending, 1 << 20, out var body, out _) == FrameStatus.Complete)
        {
            var parts = (List<object?>)MessagePackValues.ReadWhole(body)!;
            requests.Add(((long)parts[0]!, (string)parts[1]!, parts.Count > 2 && parts[2] is Dictionary<string, object?> args ? args : []));
        }

        var rest = pending.ToArray();
        _received.ResetWrittenCount();
        _received.Write(rest);
        return requests;
    }

    /// <summary>Any frame: <c>[id, status, body]</c>.</summary>
    public async Task SendAsync(long id, string status, MessagePackBody body) => await socket.SendAsync(Frames.Build(id, status, body));

    /// <summary>An "ok" answer with <paramref name="result"/>.</summary>
    public async Task AnswerAsync(long id, MessagePackBody result) => await socket.SendAsync(Frames.Build(id, "ok", result));

    /// <summary>An "ok" answer with an empty map for each id, in one send.</summary>
    public async Task AnswerAsync(IEnumerable<long> ids) =>
        await socket.SendAsync(ids.SelectMany(id => Frames.Build(id, "ok", (ref MessagePackWriter w) => w.WriteMapHeader(0))).ToArray());
}
