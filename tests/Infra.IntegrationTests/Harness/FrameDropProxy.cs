using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using MessagePack;

namespace Infra.IntegrationTests.Harness;

/// <summary>
/// A TCP proxy in front of a node's MessagePack port (length-prefixed frames of <c>[id, op, args]</c>)
/// that forwards every request except those the test's rule drops: a dropped request never reaches
/// the node and is never answered, as with a node that hangs for that one call. Answers pass through
/// untouched, unless <see cref="PauseAnswers"/> holds them (in front of a master's replication port: its
/// replica falls behind while it stays connected). Counts the requests it saw by op.
/// </summary>
internal sealed class FrameDropProxy : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly IPEndPoint _upstream;
    private readonly Func<string, bool> _drop;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentDictionary<string, int> _seen = new();
    private readonly ConcurrentDictionary<string, int> _dropped = new();
    private readonly ConcurrentBag<TcpClient> _sockets = [];
    private readonly Task _loop;
    private volatile TaskCompletionSource _answersFlow = NewFlow(open: true);

    /// <param name="upstream">host:port of the node.</param>
    /// <param name="drop">Called with each request's op; true drops it.</param>
    public FrameDropProxy(string upstream, Func<string, bool> drop)
    {
        _upstream = IPEndPoint.Parse(upstream);
        _drop = drop;
        _listener.Start();
        _loop = Task.Run(() => AcceptLoop.RunAsync(_listener, ServeAsync, _stop.Token));
    }

    public string Address => $"127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";

    /// <summary>Requests with this op that arrived (dropped or not).</summary>
    public int Seen(string op) => _seen.GetValueOrDefault(op);

    /// <summary>Requests with this op that were dropped.</summary>
    public int Dropped(string op) => _dropped.GetValueOrDefault(op);

    /// <summary>Holds the node's bytes (on every connection, new ones too) until <see cref="ResumeAnswers"/>.</summary>
    public void PauseAnswers()
    {
        if (_answersFlow.Task.IsCompleted)
        {
            _answersFlow = NewFlow(open: false);
        }
    }

    public void ResumeAnswers() => _answersFlow.TrySetResult();

    private static TaskCompletionSource NewFlow(bool open)
    {
        var flow = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (open)
        {
            flow.SetResult();
        }

        return flow;
    }

    private async Task PumpAnswersAsync(NetworkStream fromNode, NetworkStream toClient)
    {
        var buffer = new byte[64 * 1024];
        int read;
        while ((read = await fromNode.ReadAsync(buffer, _stop.Token)) > 0)
        {
            await _answersFlow.Task.WaitAsync(_stop.Token);
            await toClient.WriteAsync(buffer.AsMemory(0, read), _stop.Token);
        }
    }

    private async Task ServeAsync(TcpClient client)
    {
        using var upstream = new TcpClient { NoDelay = true };
        _sockets.Add(client);
        _sockets.Add(upstream);
        try
        {
            client.NoDelay = true;
            await upstream.ConnectAsync(_upstream, _stop.Token);
            var fromClient = client.GetStream();
            var toNode = upstream.GetStream();
            var answers = PumpAnswersAsync(toNode, fromClient);
            var header = new byte[4];
            while (true)
            {
                await fromClient.ReadExactlyAsync(header, _stop.Token);
                var body = new byte[BinaryPrimitives.ReadInt32BigEndian(header)];
                await fromClient.ReadExactlyAsync(body, _stop.Token);
                var op = OpOf(body);
                _seen.AddOrUpdate(op, 1, (_, n) => n + 1);
                if (_drop(op))
                {
                    _dropped.AddOrUpdate(op, 1, (_, n) => n + 1);
                    continue;
                }

                await toNode.WriteAsync(header, _stop.Token);
                await toNode.WriteAsync(body, _stop.Token);
                if (answers.IsCompleted)
                {
                    break;
                }
            }
        }
        catch (Exception ex) when (ex is IOException or SocketException or OperationCanceledException or ObjectDisposedException or EndOfStreamException)
        {
            // Either side went away: the other is closed below.
        }
        finally
        {
            client.Dispose();
        }
    }

    private static string OpOf(byte[] body)
    {
        try
        {
            var reader = new MessagePackReader(new ReadOnlySequence<byte>(body));
            reader.ReadArrayHeader();
            reader.Skip();
            return reader.ReadString() ?? "";
        }
        catch (MessagePackSerializationException)
        {
            return "";
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        foreach (var socket in _sockets)
        {
            socket.Dispose();
        }

        try
        {
            await _loop;
        }
        catch (OperationCanceledException)
        {
        }

        _stop.Dispose();
    }
}
