using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Text;
using Infra.Core.Networking;
using Infra.Core.Timing;
using Infra.LoadBalancer.Http;

namespace Infra.LoadBalancer.Proxy;

/// <summary>Runs each accepted client connection as a <see cref="ClientSession"/>.</summary>
internal sealed class ProxyConnectionHandler : IConnectionHandler
{
    private readonly ProxyContext _proxy;

    public ProxyConnectionHandler(ProxyContext proxy) => _proxy = proxy;

    public async Task OnConnectedAsync(ConnectionContext connection)
    {
        _proxy.Metrics.ConnectionOpened();
        try
        {
            using var session = new ClientSession(connection, _proxy);
            await session.RunAsync();
        }
        finally
        {
            _proxy.Metrics.ConnectionClosed();
        }
    }
}

/// <summary>
/// One client connection: reads request heads one after another (keep-alive; pipelined requests wait
/// in the pipe and are answered in order), forwards each to a backend and relays the response.
/// Requests are handled strictly one at a time per connection, which is what keeps pipelined
/// responses in order.
/// </summary>
internal sealed partial class ClientSession : IDisposable
{
    private readonly ConnectionContext _connection;
    private readonly ProxyContext _proxy;
    private readonly LoadBalancerOptions _options;
    private readonly PipeReader _input;
    private readonly PipeWriter _output;
    private readonly ConnectionDeadlines _deadlines;
    private readonly HttpHead _request = new();
    private readonly HttpHead _response = new();
    private readonly byte[] _clientAddress;
    private readonly string _clientAddressText;
    private volatile bool _idle;
    private bool _lingerOnClose;

    // Lingering close: long enough for a client to read an error response, short enough not to
    // hold sockets for clients that keep sending.
    private static readonly TimeSpan LingerTime = TimeSpan.FromSeconds(2);
    private const long LingerBytes = 1 << 20;

    public ClientSession(ConnectionContext connection, ProxyContext proxy)
    {
        _connection = connection;
        _proxy = proxy;
        _options = proxy.Options;
        _input = connection.Input;
        _output = connection.Output;
        _deadlines = new ConnectionDeadlines(connection.Transport, proxy.Heartbeat);
        _clientAddressText = ClientAddress(connection.RemoteEndPoint);
        _clientAddress = Encoding.ASCII.GetBytes(_clientAddressText);
    }

    public async Task RunAsync()
    {
        _deadlines.Start();
        using var closing = _connection.ClosingRequested.UnsafeRegister(static state => ((ClientSession)state!).OnClosingRequested(), this);
        try
        {
            var first = true;
            while (await ReadRequestHeadAsync(first))
            {
                first = false;
                if (!await ForwardAsync() || _connection.ClosingRequested.IsCancellationRequested)
                {
                    break;
                }
            }

            if (_lingerOnClose)
            {
                await LingerAsync();
            }
        }
        finally
        {
            Dispose();
        }
    }

    public void Dispose()
    {
        _deadlines.Stop();
        _request.Dispose();
        _response.Dispose();
    }

    /// <summary>
    /// After an error response on a connection about to close: send FIN, then read and drop what the
    /// client is still sending for a short while. Closing with unread input makes the kernel send a
    /// reset, which can destroy the response before the client reads it (nginx's lingering close).
    /// </summary>
    private async Task LingerAsync()
    {
        _connection.Transport.ShutdownSend();
        _deadlines.ArmRead(LingerTime);
        long discarded = 0;
        while (discarded < LingerBytes)
        {
            ReadResult result;
            try
            {
                result = await _input.ReadAsync();
            }
            catch (Exception ex) when (IsConnectionError(ex))
            {
                return;
            }

            discarded += result.Buffer.Length;
            _input.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted || (result.IsCanceled && _deadlines.ReadExpired()))
            {
                return;
            }
        }
    }

    /// <summary>Shutdown: a connection waiting for its next request stops waiting; a busy one finishes first.</summary>
    private void OnClosingRequested()
    {
        if (_idle)
        {
            try
            {
                _input.CancelPendingRead();
            }
            catch (Exception ex) when (ex is InvalidOperationException or ObjectDisposedException)
            {
                // The connection is already finishing.
            }
        }
    }

    /// <summary>
    /// Reads the next request head. False when the connection should close: the client closed, timed
    /// out idle, sent something malformed (already answered), or the server is shutting down.
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<bool> ReadRequestHeadAsync(bool first)
    {
        _request.Reset();

        // The first request of a connection must arrive within the header timeout; later ones may be
        // preceded by a keep-alive pause, and the header timeout starts at their first byte.
        _deadlines.ArmRead(first ? _options.HeaderTimeout : _options.KeepAliveTimeout);
        var started = false;
        _idle = true;
        if (_connection.ClosingRequested.IsCancellationRequested)
        {
            return false;
        }

        while (true)
        {
            ReadResult result;
            try
            {
                result = await _input.ReadAsync();
            }
            catch (Exception ex) when (IsConnectionError(ex))
            {
                return false;
            }

            var buffer = result.Buffer;
            if (!started && !buffer.IsEmpty)
            {
                started = true;
                _idle = false;
                if (!first)
                {
                    _deadlines.ArmRead(_options.HeaderTimeout);
                }
            }

            var step = ParseRequestHead(buffer, out var consumed, out var rejection);
            if (step == ParseStep.Invalid)
            {
                _input.AdvanceTo(buffer.End);
                await RejectHeadAsync(rejection);
                return false;
            }

            if (step == ParseStep.Complete)
            {
                _input.AdvanceTo(consumed);
                _deadlines.DisarmRead();
                _idle = false;
                try
                {
                    HeadAnalyzer.AnalyzeRequest(_request, _options.MaxRequestBodySize);
                }
                catch (HttpRejectionException ex)
                {
                    await RejectHeadAsync(ex.Reason);
                    return false;
                }

                return true;
            }

            _input.AdvanceTo(consumed, buffer.End);
            if (result.IsCompleted)
            {
                return false;
            }

            if (result.IsCanceled)
            {
                if (_deadlines.ReadExpired())
                {
                    if (started)
                    {
                        await RejectHeadAsync(RejectionReason.HeaderTimeout);
                    }

                    return false;
                }

                if (!started && _connection.ClosingRequested.IsCancellationRequested)
                {
                    return false;
                }
            }
        }
    }

    private enum ParseStep : byte
    {
        Incomplete,
        Complete,
        Invalid,
    }

    private ParseStep ParseRequestHead(in ReadOnlySequence<byte> buffer, out SequencePosition consumed, out RejectionReason rejection)
    {
        var reader = new SequenceReader<byte>(buffer);
        rejection = default;
        try
        {
            var complete = HttpHeadParser.TryParseRequest(ref reader, _request, _proxy.RequestLimits);
            consumed = reader.Position;
            return complete ? ParseStep.Complete : ParseStep.Incomplete;
        }
        catch (HttpRejectionException ex)
        {
            consumed = buffer.End;
            rejection = ex.Reason;
            return ParseStep.Invalid;
        }
    }

    private ParseStep ParseResponseHead(in ReadOnlySequence<byte> buffer, out SequencePosition consumed)
    {
        var reader = new SequenceReader<byte>(buffer);
        try
        {
            var complete = HttpHeadParser.TryParseResponse(ref reader, _response, _proxy.ResponseLimits);
            consumed = reader.Position;
            return complete ? ParseStep.Complete : ParseStep.Incomplete;
        }
        catch (HttpRejectionException)
        {
            consumed = buffer.End;
            return ParseStep.Invalid;
        }
    }

    /// <summary>Answers a request refused while reading its head, and closes.</summary>
    private async ValueTask RejectHeadAsync(RejectionReason reason)
    {
        var status = RejectionReasons.StatusCode(reason);
        var label = RejectionReasons.Label(reason);
        _proxy.Metrics.HeadRejected(reason, status);
        Log.RequestRejected(_proxy.Logger, _connection.Id, status, label);
        await WriteErrorAsync(status, label, keepAlive: false, retryAfter: null);
        _proxy.AccessLog?.Write(new AccessLogEntry(DateTimeOffset.UtcNow, _clientAddressText,
            _request.StartLineDone ? _request.MethodString : "-", _request.StartLineDone ? _request.TargetString : "-",
            status, null, 0, 0, 0, label));
    }

    /// <summary>Sends a response made by the proxy. The connection stays open only if <paramref name="keepAlive"/>.</summary>
    private async ValueTask WriteErrorAsync(int status, string detail, bool keepAlive, TimeSpan? retryAfter)
    {
        _status = status;
        _keepAlive = keepAlive;
        _lingerOnClose |= !keepAlive;
        HeadWriter.WriteError(_output, status, detail, keepAlive, _request.IsHttp11 || !_request.StartLineDone, retryAfter,
            headOnly: _request.Method == Http.HttpMethod.Head);
        await FlushClientAsync();
    }

    /// <summary>Flushes to the client; false when the client is gone or stopped reading past the client timeout.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<bool> FlushClientAsync()
    {
        _deadlines.ArmWrite(_options.ClientTimeout);
        try
        {
            var result = await _output.FlushAsync();
            return !result.IsCanceled;
        }
        catch (Exception ex) when (IsConnectionError(ex))
        {
            return false;
        }
        finally
        {
            _deadlines.DisarmWrite();
        }
    }

    /// <summary>Flushes to a backend; false when it is gone or stopped reading past the backend timeout.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<bool> FlushBackendAsync(BackendConnection connection)
    {
        connection.Deadlines.ArmWrite(_options.BackendTimeout);
        try
        {
            var result = await connection.Transport.Output.FlushAsync();
            return !result.IsCanceled;
        }
        catch (Exception ex) when (IsConnectionError(ex))
        {
            return false;
        }
        finally
        {
            connection.Deadlines.DisarmWrite();
        }
    }

    private static bool IsConnectionError(Exception ex) =>
        ex is IOException or SocketException or ObjectDisposedException or OperationCanceledException or InvalidOperationException;

    private static string ClientAddress(EndPoint? endPoint) => endPoint switch
    {
        IPEndPoint ip when ip.Address.IsIPv4MappedToIPv6 => ip.Address.MapToIPv4().ToString(),
        IPEndPoint ip => ip.Address.ToString(),
        _ => "unknown",
    };

    private static void Write(PipeWriter output, in ReadOnlySequence<byte> data)
    {
        foreach (var segment in data)
        {
            output.Write(segment.Span);
        }
    }
}
