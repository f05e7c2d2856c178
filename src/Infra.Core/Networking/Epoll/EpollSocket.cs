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

    public EpollSocket(EpollEngine engine, EpollEngine.EpollLoop loop, Socket socket, int slot, ulong tag)
    {
        _engine = engine;
        _loop = loop;
        Socket = socket;
        _handle = socket.SafeHandle;
        Descriptor = (int)_handle.DangerousGetHandle();
        Slot = slot;
        Tag = tag;
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
    public int Receive(Span<byte> buffer, out int error) => Transfer(buffer, send: false, out error);

    /// <summary>send(2) without SIGPIPE: bytes the kernel took, or -1 with <paramref name="error"/> set (EAGAIN: no room).</summary>
    public int Send(ReadOnlySpan<byte> buffer, out int error) =>
        Transfer(MemoryMarshal.CreateSpan(ref MemoryMarshal.GetReference(buffer), buffer.Length), send: true, out error);

    private unsafe int Transfer(Span<byte> buffer, bool send, out int error)
    {
        var added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            fixed (byte* pointer = buffer)
            {
                while (true)
                {
                    var done = send
                        ? EpollNative.Send(Descriptor, pointer, buffer.Length, EpollNative.MSG_NOSIGNAL)
                        : EpollNative.Recv(Descriptor, pointer, buffer.Length, 0);
                    error = done < 0 ? Marshal.GetLastPInvokeError() : 0;
                    if (done >= 0 || error != EpollNative.EINTR)
                    {
                        return (int)done;
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

    /// <summary>
    /// Starts a non-blocking connect(2) on a socket not yet registered (registering a fresh socket
    /// would report a hang-up). 0 when connected at once, EINPROGRESS when <see cref="FinishConnectAsync"/>
    /// must wait; any other failure throws.
    /// </summary>
    public static unsafe int StartConnect(Socket socket, EndPoint endPoint)
    {
        var address = endPoint.Serialize();
        socket.Blocking = false;
        var handle = socket.SafeHandle;
        var added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            fixed (byte* pointer = address.Buffer.Span)
            {
                while (true)
                {
                    if (EpollNative.Connect((int)handle.DangerousGetHandle(), pointer, address.Size) == 0)
                    {
                        return 0;
                    }

                    var error = Marshal.GetLastPInvokeError();
                    if (error == EpollNative.EINPROGRESS)
                    {
                        return error;
                    }

                    if (error != EpollNative.EINTR)
                    {
                        throw new SocketException(ToSocketError(error));
                    }
                }
            }
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    /// <summary>Waits until a connect started with <see cref="StartConnect"/> is done: SO_ERROR says how it went.</summary>
    public async Task FinishConnectAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            // Observe first, then look at the socket: an event before the look is seen by it, one
            // after makes the park below fail and the loop look again.
            var observed = Write.Observe();
            if (Readiness.StateOf(observed) == Readiness.Closed)
            {
                throw new SocketException((int)SocketError.OperationAborted);
            }

            var error = (int)Socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Error)!;
            if (error != 0)
            {
                throw new SocketException(ToSocketError(error));
            }

            if (Socket.Poll(0, SelectMode.SelectWrite))
            {
                return;
            }

            var connecting = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            Volatile.Write(ref _connecting, connecting);
            if (!Write.TryWait(observed))
            {
                // Writable meanwhile: looked at again. Left set, the connect's completion source would take
                // every later writable event (OnWritable completes it and returns), and parked writes on this
                // connection never woke.
                Volatile.Write(ref _connecting, null);
                continue;
            }

            try
            {
                using (cancellationToken.UnsafeRegister(static state => ((TaskCompletionSource)state!).TrySetCanceled(), connecting))
                {
                    await connecting.Task.ConfigureAwait(false);
                }
            }
            finally
            {
                Volatile.Write(ref _connecting, null);
            }
        }
    }

    private static int ToSocketError(int errno) => errno switch
    {
        32 => (int)SocketError.Shutdown, // EPIPE
        99 => (int)SocketError.AddressNotAvailable,
        103 => (int)SocketError.ConnectionAborted,
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

    /// <summary>Runs a completion off the epoll threads; a failure there is a bug, reported instead of taking the process down.</summary>
    public static void RunGuarded(Action callback)
    {
        try
        {
            callback();
        }
        catch (Exception ex)
        {
            Console.Error.WriteLine($"epoll engine: unexpected {ex}");
        }
    }

    /// <summary>
    /// Leaves the engine: parked operations fail (on the thread pool), the registration goes. The caller closes the socket.
    /// As with .NET's sockets, the pipes' owner completes them only after its own reads and flushes
    /// have returned: an operation the epoll thread is finishing at that moment still uses the buffers.
    /// </summary>
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
            ThreadPool.UnsafeQueueUserWorkItem(RunGuarded, readClosed, preferLocal: false);
        }

        if (writeParked && WriteClosedCallback is { } writeClosed)
        {
            ThreadPool.UnsafeQueueUserWorkItem(RunGuarded, writeClosed, preferLocal: false);
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
