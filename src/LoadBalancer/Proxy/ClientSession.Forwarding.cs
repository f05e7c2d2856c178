using System.Buffers;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Infra.Core.Networking;
using Infra.Core.Timing;
using Infra.LoadBalancer.Balancing;
using Infra.LoadBalancer.Http;

namespace Infra.LoadBalancer.Proxy;

/// <summary>How one attempt to forward a request to one backend ended.</summary>
internal enum AttemptOutcome : byte
{
    /// <summary>A response was relayed (perhaps cut short once started: nothing more can be done then).</summary>
    Done,

    /// <summary>No connection: refused, reset, unreachable or timed out. Nothing was sent.</summary>
    ConnectFailed,

    /// <summary>Writing the request head failed: the backend did not take it.</summary>
    SendFailed,

    /// <summary>The backend closed or reset before the first byte of a response.</summary>
    NoResponse,

    /// <summary>The backend went silent past the backend timeout before its response head.</summary>
    Timeout,

    /// <summary>The backend's response head was malformed, too large, or cut short.</summary>
    BadResponse,

    /// <summary>The client failed (closed, timed out or sent a malformed body) while its body was relayed.</summary>
    ClientFailed,
}

internal enum BodyOutcome : byte
{
    Completed,
    ClientClosed,
    ClientFailed,
    BackendFailed,
    Aborted,
}

internal sealed partial class ClientSession
{
    // Per-request state, reset by ForwardAsync.
    private int _status;
    private bool _keepAlive;
    private bool _responseStarted;
    private volatile bool _requestBodyDone;
    private volatile bool _abortRequestBody;
    private bool _continueSent;
    private bool _reused;
    private long _responseBytes;
    private RejectionReason? _clientFailure;
    private string? _error;

    /// <summary>
    /// Forwards the request just read: picks a backend, retries once elsewhere when that is safe,
    /// relays the response. Returns whether the client connection stays open.
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<bool> ForwardAsync()
    {
        var startedAt = _proxy.Heartbeat.Now;
        _proxy.Metrics.RequestStarted();
        _status = 0;
        _keepAlive = _request.IsHttp11 ? !_request.ConnectionClose : _request.ConnectionKeepAlive && !_request.ConnectionClose;
        _responseStarted = false;
        _requestBodyDone = !_request.HasBody;
        _abortRequestBody = false;
        _continueSent = false;
        _responseBytes = 0;
        _clientFailure = null;
        _error = null;
        // Only WebSocket is tunnelled. Another protocol (h2c above all) would open a tunnel in which further
        // requests pass the proxy unseen — no limits, no X-Forwarded-For, no access log: such a request goes
        // on as a plain one, its Upgrade dropped with the other hop-by-hop fields.
        var upgrade = _request.ConnectionUpgrade && _request.UpgradeField >= 0 && _request.IsHttp11
            && IsWebSocket(_request.Value(_request.Field(_request.UpgradeField)));

        Backend? used = null;
        var outcome = AttemptOutcome.Done;
        var retries = 0;
        try
        {
            while (true)
            {
                var backend = _proxy.Pool.Select(used);
                if (backend is null)
                {
                    if (used is null)
                    {
                        await RespondUnavailableAsync();
                    }
                    else
                    {
                        await FailAsync(outcome, used);
                    }

                    used = null;
                    break;
                }

                backend.BeginRequest();
                if (backend.IsDraining)
                {
                    // A drain began between the pick and the start: the drain may already have
                    // seen this backend idle, so the request goes elsewhere.
                    backend.CancelRequest();
                    continue;
                }

                var retry = false;
                var status = 0;
                try
                {
                    outcome = await AttemptAsync(backend, upgrade);
                    ReportToHealth(backend, outcome);
                    if (_reused && outcome is AttemptOutcome.NoResponse or AttemptOutcome.SendFailed)
                    {
                        // A pooled connection the backend had closed (a restart, its keep-alive timeout): its
                        // other idle ones likely are too, and a retry on the same backend would take the next.
                        backend.Connections.CheckIdleBeforeReuse();
                    }

                    retry = outcome != AttemptOutcome.Done && retries < _options.Retries && CanRetry(outcome);
                    if (!retry && outcome != AttemptOutcome.Done)
                    {
                        await FailAsync(outcome, backend);
                    }

                    status = retry ? 0 : _status;
                }
                finally
                {
                    backend.EndRequest(status);
                }

                used = backend;
                if (!retry)
                {
                    break;
                }

                retries++;
                _proxy.Metrics.Retried(_error ?? "unknown");
                Log.Retrying(_proxy.Logger, _connection.Id, backend.Url, _error ?? "unknown");
            }
        }
        finally
        {
            _proxy.Metrics.RequestFinished(used, _status, ElapsedSeconds(startedAt));
        }

        _proxy.AccessLog?.Write(new AccessLogEntry(DateTimeOffset.UtcNow, _clientAddressText, _request.MethodString,
            _request.TargetString, _status, used?.Url, ElapsedSeconds(startedAt) * 1000, retries, _responseBytes, _error));
        return _keepAlive;
    }

    /// <summary>Whether an Upgrade field's protocols (comma-separated, with optional versions) include websocket.</summary>
    internal static bool IsWebSocket(ReadOnlySpan<byte> upgrade)
    {
        foreach (var range in upgrade.Split((byte)','))
        {
            var protocol = upgrade[range].Trim((byte)' ').Trim((byte)'\t');
            var slash = protocol.IndexOf((byte)'/');
            if (System.Text.Ascii.EqualsIgnoreCase(slash < 0 ? protocol : protocol[..slash], "websocket"u8))
            {
                return true;
            }
        }

        return false;
    }

    private double ElapsedSeconds(long startedAt) =>
        (_proxy.Heartbeat.Now - startedAt) / (double)_proxy.Heartbeat.TimeProvider.TimestampFrequency;

    /// <summary>
    /// Whether a failed attempt may be repeated on another backend: always when nothing was sent;
    /// when the backend died before answering, only for idempotent requests whose body (if any) was
    /// not consumed. A POST is never sent twice.
    /// </summary>
    private bool CanRetry(AttemptOutcome outcome) => outcome switch
    {
        AttemptOutcome.ConnectFailed or AttemptOutcome.SendFailed => true,
        AttemptOutcome.NoResponse => _request.IsIdempotent && !_request.HasBody,
        _ => false,
    };

    private void ReportToHealth(Backend backend, AttemptOutcome outcome)
    {
        var now = _proxy.Heartbeat.CoarseNow;
        switch (outcome)
        {
            case AttemptOutcome.Done:
                backend.Passive.RecordSuccess();
                return;
            case AttemptOutcome.ClientFailed:
                return;
            case AttemptOutcome.ConnectFailed or AttemptOutcome.Timeout:
            case AttemptOutcome.NoResponse when !_reused:
                if (backend.Passive.RecordFailure(now))
                {
                    _proxy.Metrics.Ejected(backend);
                    Log.Ejected(_proxy.Logger, backend.Url);
                }

                break;
        }

        _proxy.Metrics.BackendError(backend, _error ?? "unknown");
    }

    private async ValueTask RespondUnavailableAsync()
    {
        _error = "no_backend";
        _proxy.Metrics.Rejected(_error, 503);
        Log.RequestRejected(_proxy.Logger, _connection.Id, 503, _error);

        // The body, if any, was never read: the connection cannot carry another request.
        await WriteErrorAsync(503, "no backend available", keepAlive: _keepAlive && _requestBodyDone,
            retryAfter: _options.HealthInterval > TimeSpan.Zero ? _options.HealthInterval : TimeSpan.FromSeconds(1));
    }

    /// <summary>Answers a failed forward: 502/504 (or the client's own 4xx) if no response has started.</summary>
    private async ValueTask FailAsync(AttemptOutcome outcome, Backend backend)
    {
        if (_responseStarted)
        {
            _keepAlive = false;
            return;
        }

        if (outcome == AttemptOutcome.ClientFailed)
        {
            if (_clientFailure is { } reason)
            {
                var clientStatus = RejectionReasons.StatusCode(reason);
                _proxy.Metrics.Rejected(RejectionReasons.Label(reason), clientStatus);
                Log.RequestRejected(_proxy.Logger, _connection.Id, clientStatus, RejectionReasons.Label(reason));
                await WriteErrorAsync(clientStatus, RejectionReasons.Label(reason), keepAlive: false, retryAfter: null);
            }
            else
            {
                _status = 499; // The client went away: nobody to answer (nginx's "client closed request").
                _keepAlive = false;
            }

            return;
        }

        var status = outcome == AttemptOutcome.Timeout ? 504 : 502;
        var label = _error ?? "bad_gateway";
        _proxy.Metrics.Rejected(label, status);
        Log.ForwardFailed(_proxy.Logger, _connection.Id, backend.Url, label, status);
        await WriteErrorAsync(status, label, keepAlive: _keepAlive && _requestBodyDone, retryAfter: null);
    }

    /// <summary>One attempt on one backend: send the request, relay the response.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<AttemptOutcome> AttemptAsync(Backend backend, bool upgrade)
    {
        BackendConnection connection;
        try
        {
            (connection, _reused) = await backend.Connections.RentAsync(CancellationToken.None);
        }
        catch (Exception ex) when (ex is SocketException or TimeoutException or IOException)
        {
            _error = ex is TimeoutException ? "connect_timeout" : "connect_failed";
            return AttemptOutcome.ConnectFailed;
        }

        Task<BodyOutcome>? body = null;
        var reusable = false;
        var clean = false;
        try
        {
            HeadWriter.WriteRequest(connection.Transport.Output, _request, _clientAddress, backend.Address.HostHeader, upgrade);
            if (!await FlushBackendAsync(connection))
            {
                _error = "send_failed";
                return AttemptOutcome.SendFailed;
            }

            if (_request.HasBody)
            {
                if (_request.ExpectContinue && _request.IsHttp11 && !_continueSent)
                {
                    // The proxy streams the body as soon as it has a backend, so it says so itself.
                    _continueSent = true;
                    HeadWriter.WriteContinue(_output);
                    if (!await FlushClientAsync())
                    {
                        _error = "client_closed";
                        return AttemptOutcome.ClientFailed;
                    }
                }

                body = CopyRequestBodyAsync(connection);
            }

            var head = await ReadResponseHeadAsync(connection);
            if (head != AttemptOutcome.Done)
            {
                if (body is not null)
                {
                    var bodyOutcome = await StopRequestBodyAsync(body, connection);
                    if (bodyOutcome is BodyOutcome.ClientClosed or BodyOutcome.ClientFailed)
                    {
                        _error = bodyOutcome == BodyOutcome.ClientClosed ? "client_closed" : "client_body";
                        return AttemptOutcome.ClientFailed;
                    }
                }

                return head;
            }

            if (_response.StatusCode == 101)
            {
                if (!upgrade || (body is not null && await body != BodyOutcome.Completed))
                {
                    _error = "unexpected_101";
                    return AttemptOutcome.BadResponse;
                }

                await TunnelAsync(connection);
                clean = true;
                return AttemptOutcome.Done;
            }

            _status = _response.StatusCode;
            var framing = _response.Framing;
            var chunkedToClient = framing == BodyFraming.Chunked && _request.IsHttp11;
            if (framing == BodyFraming.UntilClose || (framing == BodyFraming.Chunked && !_request.IsHttp11)
                || _connection.ClosingRequested.IsCancellationRequested
                || (body is not null && !(body.IsCompletedSuccessfully && body.Result == BodyOutcome.Completed)))
            {
                _keepAlive = false;
            }

            HeadWriter.WriteResponse(_output, _response, _request.IsHttp11, _keepAlive, chunkedToClient, upgrade: false);
            _responseStarted = true;
            if (!await CopyResponseBodyAsync(connection, framing, chunkedToClient))
            {
                _keepAlive = false;
                Log.ResponseTruncated(_proxy.Logger, _connection.Id, backend.Url, _error ?? "unknown");
                return AttemptOutcome.Done;
            }

            if (body is not null && await StopRequestBodyAsync(body, connection) != BodyOutcome.Completed)
            {
                // The backend answered without reading the whole body; the rest of it is unread. Closed with it
                // unread, the socket would send a reset that can destroy the answer before the client reads it:
                // linger, as after the proxy's own error responses.
                _keepAlive = false;
                _lingerOnClose = true;
                return AttemptOutcome.Done;
            }

            clean = true;
            connection.CheckBeforeReuse = framing == BodyFraming.None && _response.ContentLength != 0;
            reusable = framing != BodyFraming.UntilClose && !_response.ConnectionClose
                && (_response.IsHttp11 || _response.ConnectionKeepAlive) && !backend.IsRemoved && IsDrained(connection);
            return AttemptOutcome.Done;
        }
        finally
        {
            try
            {
                if (body is not null && !body.IsCompleted)
                {
                    await StopRequestBodyAsync(body, connection);
                }
            }
            finally
            {
                if (reusable)
                {
                    backend.Connections.Return(connection);
                }
                else
                {
                    if (!clean)
                    {
                        connection.Abort();
                    }

                    connection.Close();
                }
            }
        }
    }

    /// <summary>Reads the backend's response head, relaying interim (1xx) responses on the way.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<AttemptOutcome> ReadResponseHeadAsync(BackendConnection connection)
    {
        _response.Reset();
        var input = connection.Transport.Input;

        // The backend's silence counts only once it has the whole request: a client uploading
        // slowly is the client timeout's business, not the backend's. The body copy arms the
        // deadline when it finishes; the re-check closes the race with it.
        if (_requestBodyDone)
        {
            connection.Deadlines.ArmRead(_options.BackendTimeout);
        }
        else
        {
            connection.Deadlines.DisarmRead();
            if (_requestBodyDone)
            {
                connection.Deadlines.ArmRead(_options.BackendTimeout);
            }
        }

        var received = false;
        while (true)
        {
            ReadResult result;
            try
            {
                result = await input.ReadAsync();
            }
            catch (Exception ex) when (IsConnectionError(ex))
            {
                _error = received ? "bad_response" : "no_response";
                return received ? AttemptOutcome.BadResponse : AttemptOutcome.NoResponse;
            }

            var buffer = result.Buffer;
            received |= !buffer.IsEmpty;
            var step = ParseResponseHead(buffer, out var consumed);
            if (step == ParseStep.Invalid)
            {
                input.AdvanceTo(buffer.End);
                _error = "bad_response";
                return AttemptOutcome.BadResponse;
            }

            if (step == ParseStep.Complete)
            {
                input.AdvanceTo(consumed);
                var status = _response.StatusCode;
                if (status is >= 100 and < 200 && status != 101)
                {
                    if (_request.IsHttp11 && !(status == 100 && _continueSent))
                    {
                        HeadWriter.WriteInterim(_output, _response);
                        if (!await FlushClientAsync())
                        {
                            _error = "client_closed";
                            return AttemptOutcome.ClientFailed;
                        }
                    }

                    _response.Reset();
                    continue;
                }

                try
                {
                    HeadAnalyzer.AnalyzeResponse(_response, _request.Method);
                }
                catch (HttpRejectionException)
                {
                    _error = "bad_response";
                    return AttemptOutcome.BadResponse;
                }

                connection.Deadlines.DisarmRead();
                return AttemptOutcome.Done;
            }

            input.AdvanceTo(consumed, buffer.End);
            if (result.IsCompleted)
            {
                _error = received ? "bad_response" : "no_response";
                return received ? AttemptOutcome.BadResponse : AttemptOutcome.NoResponse;
            }

            if (result.IsCanceled && connection.Deadlines.ReadExpired())
            {
                _error = "backend_timeout";
                return AttemptOutcome.Timeout;
            }
        }
    }

    /// <summary>
    /// Streams the request body to the backend as it arrives (Content-Length or chunked, validated and
    /// normalised on the way). Runs beside the response read, so a backend that answers early or
    /// echoes as it reads never deadlocks against the upload.
    /// </summary>
    private async Task<BodyOutcome> CopyRequestBodyAsync(BackendConnection connection)
    {
        var output = connection.Transport.Output;
        var chunked = _request.Framing == BodyFraming.Chunked;
        var remaining = _request.ContentLength;
        var decoder = new ChunkedDecoder(_options.MaxRequestBodySize, _proxy.MaxTrailerBytes);
        while (true)
        {
            _deadlines.ArmRead(_options.ClientTimeout);
            ReadResult result;
            try
            {
                result = await _input.ReadAsync();
            }
            catch (Exception ex) when (IsConnectionError(ex))
            {
                connection.Abort();
                return BodyOutcome.ClientClosed;
            }

            var buffer = result.Buffer;
            if (_abortRequestBody)
            {
                _input.AdvanceTo(buffer.Start);
                return BodyOutcome.Aborted;
            }

            bool done;
            SequencePosition consumed;
            if (chunked)
            {
                var step = DecodeChunks(ref decoder, buffer, output, out consumed, out var rejection);
                if (step == ParseStep.Invalid)
                {
                    _input.AdvanceTo(buffer.End);
                    _clientFailure = rejection;
                    connection.Abort();
                    return BodyOutcome.ClientFailed;
                }

                done = step == ParseStep.Complete;
            }
            else
            {
                var slice = buffer.Slice(0, Math.Min(remaining, buffer.Length));
                Write(output, slice);
                remaining -= slice.Length;
                consumed = slice.End;
                done = remaining == 0;
            }

            // Once the body is whole, what follows is the next pipelined request: leave it unexamined.
            _input.AdvanceTo(consumed, done ? consumed : buffer.End);
            if (!await FlushBackendAsync(connection))
            {
                return BodyOutcome.BackendFailed;
            }

            if (done)
            {
                _deadlines.DisarmRead();
                _requestBodyDone = true;
                connection.Deadlines.ArmRead(_options.BackendTimeout);
                return BodyOutcome.Completed;
            }

            if (result.IsCompleted)
            {
                connection.Abort();
                return BodyOutcome.ClientClosed;
            }

            if (result.IsCanceled && _deadlines.ReadExpired())
            {
                _clientFailure = RejectionReason.BodyTimeout;
                connection.Abort();
                return BodyOutcome.ClientFailed;
            }
        }
    }

    private static ParseStep DecodeChunks(ref ChunkedDecoder decoder, in ReadOnlySequence<byte> buffer, IBufferWriter<byte> output,
        out SequencePosition consumed, out RejectionReason rejection)
    {
        var reader = new SequenceReader<byte>(buffer);
        rejection = default;
        try
        {
            var done = decoder.Decode(ref reader, output, reencode: true);
            consumed = reader.Position;
            return done ? ParseStep.Complete : ParseStep.Incomplete;
        }
        catch (HttpRejectionException ex)
        {
            consumed = buffer.End;
            rejection = ex.Reason;
            return ParseStep.Invalid;
        }
    }

    /// <summary>Waits for the request body copy, first stopping it if it is still running.</summary>
    private async ValueTask<BodyOutcome> StopRequestBodyAsync(Task<BodyOutcome> body, BackendConnection connection)
    {
        if (!body.IsCompleted)
        {
            _abortRequestBody = true;
            try
            {
                _input.CancelPendingRead();
            }
            catch (Exception ex) when (ex is InvalidOperationException or ObjectDisposedException)
            {
                // The client side is already finished; the copy ends on its own.
            }

            connection.Abort();
        }

        return await body;
    }

    /// <summary>Relays the response body; false when it was cut short (the client connection must close).</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<bool> CopyResponseBodyAsync(BackendConnection connection, BodyFraming framing, bool chunkedToClient)
    {
        if (framing == BodyFraming.None)
        {
            if (await FlushClientAsync())
            {
                return true;
            }

            _error = "client_closed";
            return false;
        }

        var input = connection.Transport.Input;
        var remaining = _response.ContentLength;
        var decoder = new ChunkedDecoder(0, _options.MaxResponseHeadersSize);
        while (true)
        {
            connection.Deadlines.ArmRead(_options.BackendTimeout);
            ReadResult result;
            try
            {
                result = await input.ReadAsync();
            }
            catch (Exception ex) when (IsConnectionError(ex))
            {
                _error = "backend_reset";
                return false;
            }

            var buffer = result.Buffer;
            SequencePosition consumed;
            bool done;
            switch (framing)
            {
                case BodyFraming.ContentLength:
                    var slice = buffer.Slice(0, Math.Min(remaining, buffer.Length));
                    Write(_output, slice);
                    remaining -= slice.Length;
                    _responseBytes += slice.Length;
                    consumed = slice.End;
                    done = remaining == 0;
                    break;
                case BodyFraming.Chunked:
                    var before = decoder.DataBytes;
                    var step = DecodeResponseChunks(ref decoder, buffer, chunkedToClient, out consumed);
                    _responseBytes += decoder.DataBytes - before;
                    if (step == ParseStep.Invalid)
                    {
                        input.AdvanceTo(buffer.End);
                        _error = "bad_response_body";
                        await FlushClientAsync();
                        return false;
                    }

                    done = step == ParseStep.Complete;
                    break;
                default:
                    Write(_output, buffer);
                    _responseBytes += buffer.Length;
                    consumed = buffer.End;
                    done = result.IsCompleted;
                    break;
            }

            input.AdvanceTo(consumed, done ? consumed : buffer.End);
            if (!await FlushClientAsync())
            {
                _error = "client_closed";
                return false;
            }

            if (done)
            {
                connection.Deadlines.DisarmRead();
                return true;
            }

            if (result.IsCompleted)
            {
                _error = "backend_closed_early";
                return false;
            }

            if (result.IsCanceled && connection.Deadlines.ReadExpired())
            {
                _error = "backend_timeout";
                return false;
            }
        }
    }

    private ParseStep DecodeResponseChunks(ref ChunkedDecoder decoder, in ReadOnlySequence<byte> buffer, bool reencode, out SequencePosition consumed)
    {
        var reader = new SequenceReader<byte>(buffer);
        try
        {
            var done = decoder.Decode(ref reader, _output, reencode);
            consumed = reader.Position;
            return done ? ParseStep.Complete : ParseStep.Incomplete;
        }
        catch (HttpRejectionException)
        {
            consumed = buffer.End;
            return ParseStep.Invalid;
        }
    }

    /// <summary>True when nothing beyond the response arrived and the backend has not closed: safe to reuse.</summary>
    private static bool IsDrained(BackendConnection connection)
    {
        if (connection.Transport.IsClosed)
        {
            return false; // Aborted while the request body was being stopped.
        }

        var input = connection.Transport.Input;
        if (!input.TryRead(out var result))
        {
            return true;
        }

        var clean = result.Buffer.IsEmpty && !result.IsCompleted && !result.IsCanceled;
        input.AdvanceTo(result.Buffer.Start);
        return clean;
    }

    /// <summary>
    /// After a 101: relays bytes both ways until either side closes (its peer then sees end of stream)
    /// or a direction stays silent past the tunnel timeout.
    /// </summary>
    private async Task TunnelAsync(BackendConnection connection)
    {
        _status = 101;
        _keepAlive = false;
        HeadWriter.WriteResponse(_output, _response, clientHttp11: true, keepAlive: false, chunked: false, upgrade: true);
        _responseStarted = true;
        if (!await FlushClientAsync())
        {
            _error = "client_closed";
            return;
        }

        _deadlines.ArmRead(_options.TunnelTimeout);
        connection.Deadlines.ArmRead(_options.TunnelTimeout);
        var upstream = PumpAsync(_input, _deadlines, connection.Transport.Output, connection.Deadlines, connection.Transport, _options.TunnelTimeout, _options.BackendTimeout);
        var downstream = PumpAsync(connection.Transport.Input, connection.Deadlines, _output, _deadlines, _connection.Transport, _options.TunnelTimeout, _options.ClientTimeout);
        var first = await Task.WhenAny(upstream, downstream);
        var other = first == upstream ? downstream : upstream;

        // The side still open gets a moment to finish its half (e.g. a close frame), then both go.
        if (await Task.WhenAny(other, Task.Delay(TimeSpan.FromSeconds(5), _proxy.Heartbeat.TimeProvider)) != other)
        {
            connection.Abort();
            _connection.Transport.Abort();
        }

        await Task.WhenAll(upstream, downstream);
    }

    /// <summary>
    /// One direction of a tunnel. The tunnel timeout is for the tunnel as a whole: traffic either way
    /// re-arms both directions' read deadlines, so a one-way stream is not cut for the quiet side.
    /// </summary>
    private static async Task PumpAsync(PipeReader from, ConnectionDeadlines fromDeadlines, PipeWriter to, ConnectionDeadlines toDeadlines,
        SocketConnection toTransport, TimeSpan tunnelTimeout, TimeSpan writeTimeout)
    {
        while (true)
        {
            ReadResult result;
            try
            {
                result = await from.ReadAsync();
            }
            catch (Exception ex) when (IsConnectionError(ex))
            {
                toTransport.ShutdownSend();
                return;
            }

            var buffer = result.Buffer;
            if (result.IsCanceled && fromDeadlines.ReadExpired())
            {
                from.AdvanceTo(buffer.Start);
                toTransport.ShutdownSend();
                return;
            }

            Write(to, buffer);
            from.AdvanceTo(buffer.End);
            fromDeadlines.ArmRead(tunnelTimeout);
            toDeadlines.ArmRead(tunnelTimeout);
            toDeadlines.ArmWrite(writeTimeout);
            try
            {
                await to.FlushAsync();
            }
            catch (Exception ex) when (IsConnectionError(ex))
            {
                return;
            }
            finally
            {
                toDeadlines.DisarmWrite();
            }

            if (result.IsCompleted)
            {
                toTransport.ShutdownSend();
                return;
            }
        }
    }
}
