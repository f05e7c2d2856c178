using System.Globalization;
using System.Net.Sockets;
using System.Text;

namespace Infra.Testing;

/// <summary>
/// A bare RESP client: sends commands as multibulk arrays and reads replies into a compact text form
/// (<c>+OK</c>, <c>:1</c>, <c>$value</c>, <c>$-1</c>, <c>*2[$a,$b]</c>, <c>%1{$k:$v}</c>, <c>-ERR ...</c>)
/// so tests compare exact protocol replies.
/// </summary>
internal sealed class RespConnection : IDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly BufferedStream _reader;

    private RespConnection(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
        _reader = new BufferedStream(_stream);
    }

    public static async Task<RespConnection> ConnectAsync(int port)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync("127.0.0.1", port);
        return new RespConnection(socket);
    }

    public async Task<string> CallAsync(params string[] args)
    {
        await _stream.WriteAsync(Encode(args));
        return await ReadAsync();
    }

    /// <summary>Writes raw bytes (a pipelined batch, a command split anywhere) without reading a reply.</summary>
    public async Task SendRawAsync(ReadOnlyMemory<byte> bytes) => await _stream.WriteAsync(bytes);

    /// <summary>A command as the multibulk array <see cref="CallAsync"/> sends.</summary>
    public static byte[] Encode(params string[] args)
    {
        var command = new StringBuilder().Append('*').Append(args.Length).Append("\r\n");
        foreach (var arg in args)
        {
            command.Append('$').Append(Encoding.UTF8.GetByteCount(arg)).Append("\r\n").Append(arg).Append("\r\n");
        }

        return Encoding.UTF8.GetBytes(command.ToString());
    }

    public async Task<string> ReadAsync()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        return await Task.Run(ReadReply, timeout.Token).WaitAsync(timeout.Token);
    }

    private string ReadReply()
    {
        var line = ReadLine();
        var type = line[0];
        var rest = line[1..];
        switch (type)
        {
            case '+' or '-' or ':' or ',' or '#' or '(':
                return line;
            case '_':
                return "_";
            case '$' or '=' or '!':
                var length = int.Parse(rest, CultureInfo.InvariantCulture);
                if (length < 0)
                {
                    return "$-1";
                }

                var data = new byte[length + 2];
                var read = 0;
                while (read < data.Length)
                {
                    read += _reader.Read(data, read, data.Length - read);
                }

                return "$" + Encoding.UTF8.GetString(data, 0, length);
            case '*' or '~' or '>':
                var count = int.Parse(rest, CultureInfo.InvariantCulture);
                if (count < 0)
                {
                    return "*-1";
                }

                var items = Enumerable.Range(0, count).Select(_ => ReadReply()).ToList();
                return $"{type}{count}[{string.Join(",", items)}]";
            case '%':
                var pairs = int.Parse(rest, CultureInfo.InvariantCulture);
                var entries = Enumerable.Range(0, pairs).Select(_ => ReadReply() + ":" + ReadReply()).ToList();
                return $"%{pairs}{{{string.Join(",", entries)}}}";
            default:
                throw new InvalidDataException($"unexpected reply line '{line}'");
        }
    }

    private string ReadLine()
    {
        var bytes = new List<byte>();
        while (true)
        {
            var b = _reader.ReadByte();
            if (b < 0)
            {
                throw new EndOfStreamException("connection closed");
            }

            if (b == '\n' && bytes.Count > 0 && bytes[^1] == '\r')
            {
                return Encoding.UTF8.GetString(bytes.ToArray(), 0, bytes.Count - 1);
            }

            bytes.Add((byte)b);
        }
    }

    public void Dispose()
    {
        _reader.Dispose();
        _stream.Dispose();
    }
}
