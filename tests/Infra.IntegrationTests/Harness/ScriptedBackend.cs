using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Infra.IntegrationTests.Harness;

/// <summary>
/// An in-process TCP backend whose behaviour a test writes by hand, for what a real server would
/// never do: malformed responses, closing before answering, counting exactly what arrived.
/// </summary>
internal sealed class ScriptedBackend : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly Func<NetworkStream, ScriptedRequest, Task> _onRequest;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private int _requests;

    /// <param name="onRequest">Called with the connection and each whole request received on it.</param>
    public ScriptedBackend(Func<NetworkStream, ScriptedRequest, Task> onRequest)
    {
        _onRequest = onRequest;
        _listener.Start();
        _loop = Task.Run(() => AcceptLoop.RunAsync(_listener, ServeAsync, _stop.Token));
    }

    public string Url => $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";

    /// <summary>Request heads received (health checks to /healthz excluded).</summary>
    public int Requests => Volatile.Read(ref _requests);

    /// <summary>Answers health checks with 200 and hands every other request to the script.</summary>
    public static ScriptedBackend Create(Func<NetworkStream, ScriptedRequest, Task> onRequest) => new(onRequest);

    private async Task ServeAsync(TcpClient client)
    {
        using (client)
        {
            var stream = client.GetStream();
            var reader = new Reader(stream, _stop.Token);
            try
            {
                while (true)
                {
                    var head = await reader.ReadUntilAsync("\r\n\r\n");
                    if (head is null)
                    {
                        return;
                    }

                    if (head.StartsWith("GET /healthz ", StringComparison.Ordinal))
                    {
                        await stream.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"u8.ToArray(), _stop.Token);
                        continue;
                    }

                    var (body, raw) = await ReadBodyAsync(reader, head);
                    Interlocked.Increment(ref _requests);
                    await _onRequest(stream, new ScriptedRequest(head, body, raw));
                    if (!stream.Socket.Connected)
                    {
                        return;
                    }
                }
            }
            catch (Exception ex) when (ex is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
            {
                // The script or the proxy closed the connection.
            }
        }
    }

    private static async Task<(string Body, string Raw)> ReadBodyAsync(Reader reader, string head)
    {
        var lines = head.Split("\r\n");
        var length = lines.FirstOrDefault(l => l.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase));
        if (length is not null)
        {
            var body = await reader.ReadCountAsync(int.Parse(length["Content-Length:".Length..].Trim(), System.Globalization.CultureInfo.InvariantCulture));
            return (body, body);
        }

        if (!lines.Any(l => l.StartsWith("Transfer-Encoding: chunked", StringComparison.OrdinalIgnoreCase)))
        {
            return (string.Empty, string.Empty);
        }

        var data = new StringBuilder();
        var raw = new StringBuilder();
        while (true)
        {
            var sizeLine = await reader.ReadUntilAsync("\r\n") ?? throw new IOException("closed in chunked body");
            raw.Append(sizeLine);
            var size = Convert.ToInt32(sizeLine.TrimEnd().Split(';')[0], 16);
            if (size == 0)
            {
                string? trailer;
                while ((trailer = await reader.ReadUntilAsync("\r\n")) is not null && trailer != "\r\n")
                {
                    raw.Append(trailer);
                }

                raw.Append("\r\n");
                return (data.ToString(), raw.ToString());
            }

            var chunk = await reader.ReadCountAsync(size + 2);
            raw.Append(chunk);
            data.Append(chunk, 0, size);
        }
    }

    /// <summary>Buffered reads of text (Latin-1) from the connection.</summary>
    private sealed class Reader(NetworkStream stream, CancellationToken cancellationToken)
    {
        private readonly StringBuilder _pending = new();
        private readonly byte[] _buffer = new byte[64 * 1024];

        /// <summary>Text up to and including <paramref name="delimiter"/>, or null at end of stream.</summary>
        public async Task<string?> ReadUntilAsync(string delimiter)
        {
            while (true)
            {
                var text = _pending.ToString();
                var end = text.IndexOf(delimiter, StringComparison.Ordinal);
                if (end >= 0)
                {
                    _pending.Remove(0, end + delimiter.Length);
                    return text[..(end + delimiter.Length)];
                }

                if (!await FillAsync())
                {
                    return null;
                }
            }
        }

        public async Task<string> ReadCountAsync(int count)
        {
            while (_pending.Length < count)
            {
                if (!await FillAsync())
                {
                    throw new IOException("closed inside a body");
                }
            }

            var text = _pending.ToString(0, count);
            _pending.Remove(0, count);
            return text;
        }

        private async Task<bool> FillAsync()
        {
            var read = await stream.ReadAsync(_buffer, cancellationToken);
            _pending.Append(Encoding.Latin1.GetString(_buffer, 0, read));
            return read > 0;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
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

/// <summary>A request as a scripted backend received it: head, decoded body, body as sent.</summary>
internal sealed record ScriptedRequest(string Head, string Body, string RawBody);
