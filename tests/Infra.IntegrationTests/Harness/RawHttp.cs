using System.Net.Sockets;
using System.Text;

namespace Infra.IntegrationTests.Harness;

internal sealed record RawResponse(int Status, string Head, Dictionary<string, string> Headers, byte[] Body)
{
    public string BodyText => Encoding.Latin1.GetString(Body);

    public string? Header(string name) => Headers.TryGetValue(name, out var value) ? value : null;
}

/// <summary>
/// A bare-socket HTTP client: sends exactly the bytes a test gives (malformed ones included) and
/// reads responses one by one, so tests see precisely what the proxy put on the wire.
/// </summary>
internal sealed class RawHttp : IDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly byte[] _buffer = new byte[64 * 1024];
    private int _start;
    private int _end;

    private RawHttp(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
    }

    public static async Task<RawHttp> ConnectAsync(Uri endpoint)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(endpoint.Host, endpoint.Port);
        return new RawHttp(socket);
    }

    /// <summary>Sends a request and reads one response.</summary>
    public static async Task<RawResponse> ExchangeAsync(Uri endpoint, string request)
    {
        using var connection = await ConnectAsync(endpoint);
        await connection.SendAsync(request);
        return await connection.ReadResponseAsync();
    }

    public Task SendAsync(string text) => SendAsync(Encoding.Latin1.GetBytes(text));

    public async Task SendAsync(byte[] bytes) => await _stream.WriteAsync(bytes);

    /// <summary>Reads one response; <paramref name="headRequest"/> when it answers a HEAD.</summary>
    public async Task<RawResponse> ReadResponseAsync(bool headRequest = false, TimeSpan? timeout = null)
    {
        using var cancel = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(15));
        var headText = await ReadHeadAsync(cancel.Token);
        var lines = headText.Split("\r\n");
        var status = int.Parse(lines[0].Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var line in lines.Skip(1).Where(l => l.Length > 0))
        {
            var colon = line.IndexOf(':', StringComparison.Ordinal);
            var name = line[..colon];
            var value = line[(colon + 1)..].Trim();
            headers[name] = headers.TryGetValue(name, out var existing) ? existing + ", " + value : value;
        }

        byte[] body;
        if (headRequest || status is < 200 or 204 or 304)
        {
            body = [];
        }
        else if (headers.TryGetValue("Transfer-Encoding", out var te) && te.Contains("chunked", StringComparison.OrdinalIgnoreCase))
        {
            body = await ReadChunkedAsync(cancel.Token);
        }
        else if (headers.TryGetValue("Content-Length", out var length))
        {
            body = await ReadExactlyAsync(int.Parse(length, System.Globalization.CultureInfo.InvariantCulture), cancel.Token);
        }
        else
        {
            body = await ReadToEndAsync(cancel.Token);
        }

        return new RawResponse(status, headText, headers, body);
    }

    /// <summary>True when the peer has closed the connection (reads return end of stream).</summary>
    public async Task<bool> IsClosedAsync(TimeSpan timeout)
    {
        if (_start < _end)
        {
            return false;
        }

        using var cancel = new CancellationTokenSource(timeout);
        try
        {
            return await _stream.ReadAsync(_buffer, cancel.Token) == 0;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
        catch (IOException)
        {
            return true;
        }
    }

    private async Task<string> ReadHeadAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            var span = _buffer.AsSpan(_start, _end - _start);
            var end = span.IndexOf("\r\n\r\n"u8);
            if (end >= 0)
            {
                var head = Encoding.Latin1.GetString(span[..end]);
                _start += end + 4;
                return head;
            }

            var had = _end - _start;
            if (!await FillAsync(cancellationToken))
            {
                throw new IOException($"connection closed before a response head (had {had} bytes)");
            }
        }
    }

    private async Task<byte[]> ReadChunkedAsync(CancellationToken cancellationToken)
    {
        var body = new MemoryStream();
        while (true)
        {
            var sizeLine = await ReadLineAsync(cancellationToken);
            var size = Convert.ToInt32(sizeLine.Split(';')[0], 16);
            if (size == 0)
            {
                while ((await ReadLineAsync(cancellationToken)).Length > 0)
                {
                    // Trailers.
                }

                return body.ToArray();
            }

            body.Write(await ReadExactlyAsync(size, cancellationToken));
            await ReadLineAsync(cancellationToken);
        }
    }

    private async Task<string> ReadLineAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            var span = _buffer.AsSpan(_start, _end - _start);
            var end = span.IndexOf("\r\n"u8);
            if (end >= 0)
            {
                var line = Encoding.Latin1.GetString(span[..end]);
                _start += end + 2;
                return line;
            }

            if (!await FillAsync(cancellationToken))
            {
                throw new IOException("connection closed inside a chunked body");
            }
        }
    }

    private async Task<byte[]> ReadExactlyAsync(int length, CancellationToken cancellationToken)
    {
        var result = new byte[length];
        var copied = 0;
        while (copied < length)
        {
            if (_start == _end && !await FillAsync(cancellationToken))
            {
                throw new IOException($"connection closed after {copied} of {length} body bytes");
            }

            var take = Math.Min(length - copied, _end - _start);
            _buffer.AsSpan(_start, take).CopyTo(result.AsSpan(copied));
            _start += take;
            copied += take;
        }

        return result;
    }

    private async Task<byte[]> ReadToEndAsync(CancellationToken cancellationToken)
    {
        var body = new MemoryStream();
        while (true)
        {
            body.Write(_buffer, _start, _end - _start);
            _start = _end;
            if (!await FillAsync(cancellationToken))
            {
                return body.ToArray();
            }
        }
    }

    private async Task<bool> FillAsync(CancellationToken cancellationToken)
    {
        if (_start > 0)
        {
            Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
            _end -= _start;
            _start = 0;
        }

        int read;
        try
        {
            read = await _stream.ReadAsync(_buffer.AsMemory(_end), cancellationToken);
        }
        catch (IOException)
        {
            return false;
        }

        _end += read;
        return read > 0;
    }

    public void Dispose() => _stream.Dispose();
}
