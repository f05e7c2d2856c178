using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Infra.Core.Networking.Epoll;

/// <summary>
/// A socket engine of our own on Linux epoll, for the services whose whole job is moving bytes
/// between sockets (the load balancer). .NET's engine tries every receive before it waits, so each
/// wait costs a recv(2) that says EAGAIN; this one remembers that a read came back short and waits
/// for the next edge instead, and runs completions inline on its epoll threads (one per core).
/// Sockets are registered once, edge-triggered, for both directions.
/// </summary>
public sealed class EpollEngine
{
    [ThreadStatic]
    private static EpollLoop? _currentLoop;

    private readonly EpollLoop[] _loops;
    private readonly Lock _registryLock = new();
    private EpollSocket?[] _slots = new EpollSocket?[256];
    private readonly Stack<int> _free = new();
    private int _used;
    private int _next;
    private long _registrations;

    private EpollEngine(int threads)
    {
        _loops = new EpollLoop[threads];
        for (var i = 0; i < threads; i++)
        {
            _loops[i] = new EpollLoop(this, i);
        }
    }

    /// <summary>True on one of an engine's epoll threads: work here holds up every socket of that thread.</summary>
    public static bool IsEngineThread => _currentLoop is not null;

    /// <summary>Linux on x86-64 (the epoll_event layout the engine is written for).</summary>
    public static bool IsSupported => OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture == Architecture.X64;

    /// <summary>Starts an engine with <paramref name="threads"/> epoll threads (default: one per core).</summary>
    public static EpollEngine Start(int threads = 0)
    {
        if (!IsSupported)
        {
            throw new PlatformNotSupportedException("the epoll engine needs Linux on x86-64");
        }

        var engine = new EpollEngine(threads > 0 ? threads : Environment.ProcessorCount);
        foreach (var loop in engine._loops)
        {
            loop.Start();
        }

        return engine;
    }

    /// <summary>Registers a socket on the caller's epoll thread when it is one (work for a client stays on one thread), else round robin.</summary>
    internal EpollSocket Register(Socket socket)
    {
        socket.Blocking = false;
        var loop = _currentLoop is { } current && current.Engine == this
            ? current
            : _loops[(int)((uint)Interlocked.Increment(ref _next) % (uint)_loops.Length)];
        EpollSocket registered;
        lock (_registryLock)
        {
            int slot;
            if (_free.Count > 0)
            {
                slot = _free.Pop();
            }
            else
            {
                if (_used == _slots.Length)
                {
                    var bigger = new EpollSocket?[_slots.Length * 2];
                    Array.Copy(_slots, bigger, _slots.Length);
                    Volatile.Write(ref _slots, bigger);
                }

                slot = _used++;
            }

            // One counter for the whole engine: a tag never repeats, so an event still queued for a
            // closed socket cannot reach the socket that took its slot (on this loop or another).
            var tag = ((ulong)(uint)++_registrations << 32) | (uint)slot;
            registered = new EpollSocket(this, loop, socket, slot, tag);
            Volatile.Write(ref _slots[slot], registered);
        }

        try
        {
            loop.Add(registered);
        }
        catch
        {
            Release(registered);
            throw;
        }

        return registered;
    }

    internal void Release(EpollSocket socket)
    {
        lock (_registryLock)
        {
            if (ReferenceEquals(_slots[socket.Slot], socket))
            {
                _slots[socket.Slot] = null;
                _free.Push(socket.Slot);
            }
        }
    }

    internal EpollSocket? Lookup(ulong data)
    {
        var slots = Volatile.Read(ref _slots);
        var slot = (int)(uint)data;
        if ((uint)slot >= (uint)slots.Length)
        {
            return null;
        }

        var socket = Volatile.Read(ref slots[slot]);
        return socket is not null && socket.Tag == data ? socket : null;
    }

    internal sealed class EpollLoop
    {
        private const int MaxEvents = 256;
        private readonly int _epoll;
        private readonly Thread _thread;

        public EpollLoop(EpollEngine engine, int index)
        {
            Engine = engine;
            _epoll = EpollNative.EpollCreate(EpollNative.EPOLL_CLOEXEC);
            if (_epoll < 0)
            {
                throw new SocketException(Marshal.GetLastPInvokeError());
            }

            _thread = new Thread(Run) { IsBackground = true, Name = $"infra-epoll-{index}" };
        }

        public EpollEngine Engine { get; }

        public int ThreadId => _thread.ManagedThreadId;

        public void Start() => _thread.Start();

        public unsafe void Add(EpollSocket socket)
        {
            var ev = new EpollNative.EpollEvent
            {
                Events = EpollNative.EPOLLIN | EpollNative.EPOLLOUT | EpollNative.EPOLLRDHUP | EpollNative.EPOLLET,
                Data = socket.Tag,
            };
            if (EpollNative.EpollCtl(_epoll, EpollNative.EPOLL_CTL_ADD, socket.Descriptor, &ev) != 0)
            {
                throw new SocketException(Marshal.GetLastPInvokeError());
            }
        }

        public unsafe void Remove(int descriptor)
        {
            var ev = default(EpollNative.EpollEvent);
            _ = EpollNative.EpollCtl(_epoll, EpollNative.EPOLL_CTL_DEL, descriptor, &ev);
        }

        private unsafe void Run()
        {
            _currentLoop = this;
            var events = stackalloc EpollNative.EpollEvent[MaxEvents];
            while (true)
            {
                var count = EpollNative.EpollWait(_epoll, events, MaxEvents, -1);
                if (count < 0)
                {
                    if (Marshal.GetLastPInvokeError() == EpollNative.EINTR)
                    {
                        continue;
                    }

                    Environment.FailFast($"epoll_wait failed: errno {Marshal.GetLastPInvokeError()}");
                }

                for (var i = 0; i < count; i++)
                {
                    var socket = Engine.Lookup(events[i].Data);
                    if (socket is null)
                    {
                        continue;
                    }

                    var flags = events[i].Events;
                    try
                    {
                        if ((flags & (EpollNative.EPOLLIN | EpollNative.EPOLLERR | EpollNative.EPOLLHUP | EpollNative.EPOLLRDHUP)) != 0)
                        {
                            socket.OnReadable((flags & (EpollNative.EPOLLERR | EpollNative.EPOLLHUP | EpollNative.EPOLLRDHUP)) != 0);
                        }

                        if ((flags & (EpollNative.EPOLLOUT | EpollNative.EPOLLERR | EpollNative.EPOLLHUP)) != 0)
                        {
                            socket.OnWritable();
                        }
                    }
                    catch (Exception ex)
                    {
                        // Completions run the awaiting code inline; its own failures belong to its task.
                        // Anything reaching here is a bug, and the loop must go on serving other sockets.
                        Console.Error.WriteLine($"epoll engine: unexpected {ex}");
                    }
                }
            }
        }
    }
}
