using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Infra.Core.Networking.Epoll;

/// <summary>
/// One socket registered with an <see cref="EpollEngine"/>: its readiness in each direction and the
/// raw recv/send/connect calls. Every call holds a reference on the socket's handle, so a concurrent
/// close cannot hand the descriptor number to another socket mid-call.
/// </summary>
internal sealed class EpollSocket
{
    private readonly EpollEngine _engine;
    private readonly EpollEngine.EpollLoop _loop;
    private readonly SafeSocketHandle _handle;
    private TaskCompletionSource? _connecting;
    private int _closed;
    private volatile bool _peerDone;

    public EpollSocket(EpollEngine engine, EpollEngine.EpollLoop loop, Socket socket, int slot)
    {
        _engine = engine;
        _loop = loop;
        Socket = socket;
        _handle = socket.SafeHandle;
        Descriptor = (int)_handle.DangerousGetHandle();
        Slot = slot;
        Tag = loop.NextTag(slot);
    }

    public Socket Socket { get; }

    public int Descriptor { get; }

    public int Slot { get; }

    public ulong Tag { get; }

    /// <summary>The managed id of the epoll thread this socket's completions run on.</summary>
    public int ThreadId => _loop.ThreadId;

    public Readiness Read { get; } = new();

    public Readiness Write { get; } = new();

    /// <summary>Called by the epoll thread when a parked read can go on (set by the reader).</summary>
    public Action? ReadableCallback { get; set; }

    /// <summary>Called by the epoll thread when a parked write can go on (set by the writer).</summary>
    public Action? WritableCallback { get; set; }

    /// <summary>Called once when the socket closes while an operation is parked: the owner fails it.</summary>
    public Action? ReadClosedCallback { get; set; }

    public Action? WriteClosedCallback { get; set; }

    public bool IsClosed => Volatile.Read(ref _closed) != 0;

    /// <summary>
    /// The peer closed its side or the socket failed (EPOLLRDHUP, EPOLLHUP, EPOLLERR): no further edge
    /// will come, so a short read must not make the next read wait for one.
    /// </summary>
    public bool PeerDone => _peerDone;

    public void OnReadable(bool hangUp)
    {
        if (hangUp)
        {
            _peerDone = true; // before the signal: a reader that sees the new event count sees this too
        }

        if (Read.Signal())
        {
            ReadableCallback?.Invoke();
        }
    }

    public void OnWritable()
    {
        if (Write.Signal())
        {
            if (Volatile.Read(ref _connecting) is { } connecting)
            {
                connecting.TrySetResult();
                return;
            }

            WritableCallback?.Invoke();
        }
    }

    /// <summary>recv(2): bytes received (0 = end of stream), or -1 with <paramref name="error"/> set (EAGAIN: nothing there).</summary>
    public unsafe int Receive(Span<byte> buffer, out int error)
    {
        var added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            fixed (byte* pointer = buffer)
            {
                while (true)
                {
                    var received = EpollNative.Recv(Descriptor, pointer, buffer.Length, 0);
                    error = received < 0 ? Marshal.GetLastPInvokeError() : 0;
                    if (received >= 0 || error != EpollNative.EINTR)
                    {
                        return (int)received;
                    }
                }
            }
        }
        catch (ObjectDisposedException)
        {
            error = (int)SocketError.OperationAborted;
            return -1;
        }
        finally
        {
            if (added)
            {
                _handle.DangerousRelease();
            }
        }
    }

    /// <summary>send(2) without SIGPIPE: bytes the kernel took, or -1 with <paramref name="error"/> set (EAGAIN: no room).</summary>
    public unsafe int Send(ReadOnlySpan<byte> buffer, out int error)
    {
        var added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            fixed (byte* pointer = buffer)
            {
                while (true)
                {
                    var sent = EpollNative.Send(Descriptor, pointer, buffer.Length, EpollNative.MSG_NOSIGNAL);
                    error = sent < 0 ? Marshal.GetLastPInvokeError() : 0;
                    if (sent >= 0 || error != EpollNative.EINTR)
                    {
                        return (int)sent;
                    }
                }
            }
        }
        catch (ObjectDisposedException)
        {
            error = (int)SocketError.OperationAborted;
            return -1;
        }
        finally
        {
            if (added)
            {
                _handle.DangerousRelease();
            }
        }
    }

    /// <summary>A non-blocking connect(2) completed by the epoll thread (writable, then SO_ERROR).</summary>
    public async Task ConnectAsync(EndPoint endPoint, CancellationToken cancellationToken)
    {
        var address = endPoint.Serialize();
        var connecting = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Volatile.Write(ref _connecting, connecting);
        var observed = Write.Observe();
        int error = 0;
        unsafe
        {
            var added = false;
            try
            {
                _handle.DangerousAddRef(ref added);
                fixed (byte* pointer = address.Buffer.Span)
                {
                    if (EpollNative.Connect(Descriptor, pointer, address.Size) != 0)
                    {
                        error = Marshal.GetLastPInvokeError();
                    }
                }
            }
            finally
            {
                if (added)
                {
                    _handle.DangerousRelease();
                }
            }
        }

        if (error == EpollNative.EINPROGRESS)
        {
            while (!Write.TryWait(observed))
            {
                observed = Write.Observe();
                if (Readiness.StateOf(observed) == Readiness.Closed)
                {
                    throw new SocketException((int)SocketError.OperationAborted);
                }

                if (Readiness.StateOf(observed) == Readiness.Ready && Socket.Poll(0, SelectMode.SelectWrite))
                {
                    connecting.TrySetResult();
                    break;
                }
            }

            using (cancellationToken.UnsafeRegister(static state => ((TaskCompletionSource)state!).TrySetCanceled(), connecting))
            {
                await connecting.Task.ConfigureAwait(false);
            }

            error = (int)Socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Error)!;
        }

        Volatile.Write(ref _connecting, null);
        if (error != 0)
        {
            throw new SocketException(ToSocketError(error));
        }
    }

    private static int ToSocketError(int errno) => errno switch
    {
        111 => (int)SocketError.ConnectionRefused,
        110 => (int)SocketError.TimedOut,
        113 => (int)SocketError.HostUnreachable,
        101 => (int)SocketError.NetworkUnreachable,
        104 => (int)SocketError.ConnectionReset,
        _ => errno,
    };

    /// <summary>Socket errors as .NET names them, for the IOExceptions the pipes throw.</summary>
    public static IOException Failure(int errno, string operation) =>
        new($"{operation} failed", new SocketException(ToSocketError(errno)));

    /// <summary>Leaves the engine: parked operations fail (on the thread pool), the registration goes. The caller closes the socket.</summary>
    public void Close()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
        {
            return;
        }

        var readParked = Read.Close();
        var writeParked = Write.Close();
        _connecting?.TrySetException(new SocketException((int)SocketError.OperationAborted));
        if (readParked && ReadClosedCallback is { } readClosed)
        {
            ThreadPool.UnsafeQueueUserWorkItem(static callback => callback(), readClosed, preferLocal: false);
        }

        if (writeParked && WriteClosedCallback is { } writeClosed)
        {
            ThreadPool.UnsafeQueueUserWorkItem(static callback => callback(), writeClosed, preferLocal: false);
        }

        var added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            _loop.Remove(Descriptor);
        }
        catch (ObjectDisposedException)
        {
            // Already closed: the kernel dropped the registration with the descriptor.
        }
        finally
        {
            if (added)
            {
                _handle.DangerousRelease();
            }
        }

        _engine.Release(this);
    }
}
