using System.Buffers;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;

namespace Infra.LoadBalancer.Proxy;

/// <summary>One request as the access log records it.</summary>
internal readonly record struct AccessLogEntry(
    DateTimeOffset Time,
    string Client,
    string Method,
    string Target,
    int Status,
    string? Backend,
    double DurationMs,
    int Retries,
    long ResponseBytes,
    string? Error);

/// <summary>
/// Structured access log: one JSON object per line, to stdout or a file. Requests hand entries to a
/// bounded channel and never wait on the disk; when the writer falls behind, entries are dropped and
/// counted rather than slowing traffic.
/// </summary>
internal sealed class AccessLog : IAsyncDisposable
{
    private const int Capacity = 16_384;
    private readonly Channel<AccessLogEntry> _channel = Channel.CreateBounded<AccessLogEntry>(
        new BoundedChannelOptions(Capacity) { SingleReader = true, FullMode = BoundedChannelFullMode.DropWrite });

    private readonly Stream _stream;
    private readonly Task _writer;
    private readonly ILogger _logger;
    private long _dropped;

    public AccessLog(string destination, ILogger logger)
    {
        _logger = logger;
        _stream = destination.Equals("stdout", StringComparison.OrdinalIgnoreCase) || destination == "-"
            ? Console.OpenStandardOutput()
            : new FileStream(destination, FileMode.Append, FileAccess.Write, FileShare.ReadWrite, 64 * 1024, useAsync: true);
        _writer = Task.Run(WriteLoopAsync);
    }

    public void Write(in AccessLogEntry entry)
    {
        if (!_channel.Writer.TryWrite(entry))
        {
            Interlocked.Increment(ref _dropped);
        }
    }

    private async Task WriteLoopAsync()
    {
        var buffer = new ArrayBufferWriter<byte>(64 * 1024);
        await using var json = new Utf8JsonWriter(buffer);
        var reader = _channel.Reader;
        while (await reader.WaitToReadAsync())
        {
            while (reader.TryRead(out var entry))
            {
                WriteEntry(json, entry);
                json.Flush();
                json.Reset();
                buffer.Write("\n"u8);
                if (buffer.WrittenCount > 48 * 1024)
                {
                    break;
                }
            }

            await _stream.WriteAsync(buffer.WrittenMemory);
            await _stream.FlushAsync();
            buffer.ResetWrittenCount();
            var dropped = Interlocked.Exchange(ref _dropped, 0);
            if (dropped > 0)
            {
                Log.AccessLogDropped(_logger, dropped);
            }
        }
    }

    private static void WriteEntry(Utf8JsonWriter json, in AccessLogEntry entry)
    {
        json.WriteStartObject();
        json.WriteString("time", entry.Time);
        json.WriteString("client", entry.Client);
        json.WriteString("method", entry.Method);
        json.WriteString("target", entry.Target);
        json.WriteNumber("status", entry.Status);
        if (entry.Backend is not null)
        {
            json.WriteString("backend", entry.Backend);
        }

        json.WriteNumber("durationMs", Math.Round(entry.DurationMs, 3));
        json.WriteNumber("retries", entry.Retries);
        json.WriteNumber("responseBytes", entry.ResponseBytes);
        if (entry.Error is not null)
        {
            json.WriteString("error", entry.Error);
        }

        json.WriteEndObject();
    }

    public async ValueTask DisposeAsync()
    {
        _channel.Writer.TryComplete();
        await _writer;
        await _stream.DisposeAsync();
    }
}
