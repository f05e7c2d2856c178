using Infra.QueueBroker.Log;

namespace Infra.QueueBroker.Tests;

/// <summary>
/// An in-memory disk with the semantics that matter for durability: file contents become durable
/// only on fsync of the file, names (creations, renames, deletions) only on fsync of the directory.
/// <see cref="Crash"/> gives the disk as a restarted machine sees it — everything not made durable is
/// gone — or, for a process crash (SIGKILL), everything written. Faults can be injected: failing
/// fsync, blocked fsync, torn files, flipped bits.
/// </summary>
internal sealed class FaultyFileSystem : ILogFileSystem
{
    private readonly Lock _lock = new();
    private readonly TimeProvider _time;
    private Dictionary<string, MemFile> _names = new(StringComparer.Ordinal);
    private Dictionary<string, MemFile> _durableNames = new(StringComparer.Ordinal);
    private readonly HashSet<string> _directories = new(StringComparer.Ordinal);

    public FaultyFileSystem(TimeProvider? time = null)
    {
        _time = time ?? TimeProvider.System;
    }

    /// <summary>fsync calls so far (files only).</summary>
    public int Syncs { get; private set; }

    public int DirectorySyncs { get; private set; }

    /// <summary>Bytes read from files so far.</summary>
    public long BytesRead { get; private set; }

    /// <summary>When set and true for a path, fsync of that file throws an IOException (EIO).</summary>
    public Func<string, bool>? FailSync { get; set; }

    /// <summary>When set, deleting a file throws what it returns for that path (null: the delete goes ahead).</summary>
    public Func<string, Exception?>? FailDelete { get; set; }

    /// <summary>When set, every file fsync waits for it first (to hold appends in flight).</summary>
    public ManualResetEventSlim? SyncGate { get; set; }

    private int _syncsWaiting;

    /// <summary>fsyncs held at <see cref="SyncGate"/> right now.</summary>
    public int SyncsWaiting => Volatile.Read(ref _syncsWaiting);

    public ILogFile Open(string path, bool create)
    {
        lock (_lock)
        {
            if (!_names.TryGetValue(path, out var file))
            {
                if (!create)
                {
                    throw new FileNotFoundException(path);
                }

                file = new MemFile(this, path, _time.GetUtcNow());
                _names[path] = file;
            }

            return new Handle(this, file);
        }
    }

    public bool Exists(string path)
    {
        lock (_lock)
        {
            return _names.ContainsKey(path);
        }
    }

    public void Delete(string path)
    {
        if (FailDelete?.Invoke(path) is { } failure)
        {
            throw failure;
        }

        lock (_lock)
        {
            _names.Remove(path);
        }
    }

    public IReadOnlyList<string> List(string directory, string suffix)
    {
        lock (_lock)
        {
            return [.. _names.Keys.Where(p => Path.GetDirectoryName(p) == directory && p.EndsWith(suffix, StringComparison.Ordinal)).Select(p => Path.GetFileName(p)).Order(StringComparer.Ordinal)];
        }
    }

    public IReadOnlyList<string> ListDirectories(string directory)
    {
        lock (_lock)
        {
            return [.. _directories.Where(d => Path.GetDirectoryName(d) == directory).Select(d => Path.GetFileName(d)).Order(StringComparer.Ordinal)];
        }
    }

    public void CreateDirectory(string path)
    {
        lock (_lock)
        {
            for (var dir = path; !string.IsNullOrEmpty(dir); dir = Path.GetDirectoryName(dir))
            {
                _directories.Add(dir);
            }
        }
    }

    public void SyncDirectory(string path)
    {
        lock (_lock)
        {
            DirectorySyncs++;
            foreach (var name in _durableNames.Keys.Where(p => Path.GetDirectoryName(p) == path).ToList())
            {
                _durableNames.Remove(name);
            }

            foreach (var (name, file) in _names.Where(kv => Path.GetDirectoryName(kv.Key) == path))
            {
                _durableNames[name] = file;
            }
        }
    }

    public void WriteAtomically(string path, ReadOnlySpan<byte> data)
    {
        var temp = Open(path + ".tmp", create: true);
        temp.Truncate(0);
        temp.Write(0, data);
        temp.Sync();
        temp.Dispose();
        lock (_lock)
        {
            _names[path] = _names[path + ".tmp"];
            _names[path].Path = path;
            _names.Remove(path + ".tmp");
        }

        SyncDirectory(Path.GetDirectoryName(path)!);
    }

    public byte[]? ReadAll(string path)
    {
        lock (_lock)
        {
            return _names.TryGetValue(path, out var file) ? file.Snapshot() : null;
        }
    }

    public DateTimeOffset LastWriteTime(string path)
    {
        lock (_lock)
        {
            return _names[path].LastWrite;
        }
    }

    /// <summary>
    /// The disk after a crash. <paramref name="machine"/>: power loss — only fsync'd contents under
    /// directory-fsync'd names survive. Otherwise a process crash: everything written survives.
    /// </summary>
    public FaultyFileSystem Crash(bool machine)
    {
        lock (_lock)
        {
            var after = new FaultyFileSystem(_time);
            var source = machine ? _durableNames : _names;
            var copies = new Dictionary<MemFile, MemFile>();
            foreach (var (name, file) in source)
            {
                if (!copies.TryGetValue(file, out var copy))
                {
                    copy = file.CopyFor(after, machine);
                    copies[file] = copy;
                }

                after._names[name] = copy;
                after._durableNames[name] = copy;
            }

            foreach (var dir in _directories)
            {
                after._directories.Add(dir);
            }

            return after;
        }
    }

    /// <summary>Cuts a file to <paramref name="length"/> bytes (a torn write) in place, durably.</summary>
    public void Tear(string path, long length)
    {
        lock (_lock)
        {
            var file = _names[path];
            file.Data.RemoveRange((int)Math.Min(length, file.Data.Count), file.Data.Count - (int)Math.Min(length, file.Data.Count));
            file.Allocated = length;
            file.Synced = [.. file.Data];
        }
    }

    /// <summary>Flips one bit of a file in place, durably.</summary>
    public void FlipBit(string path, long position, int bit = 0)
    {
        lock (_lock)
        {
            var file = _names[path];
            file.Data[(int)position] ^= (byte)(1 << bit);
            file.Synced = [.. file.Data];
        }
    }

    /// <summary>Zeros <paramref name="count"/> bytes from <paramref name="position"/> (a write that reached the disk only in part).</summary>
    public void Zero(string path, long position, int count)
    {
        lock (_lock)
        {
            var file = _names[path];
            for (var i = position; i < Math.Min(position + count, file.Data.Count); i++)
            {
                file.Data[(int)i] = 0;
            }

            file.Synced = [.. file.Data];
        }
    }

    public long Length(string path)
    {
        lock (_lock)
        {
            return _names[path].Length;
        }
    }

    public IReadOnlyList<string> Files()
    {
        lock (_lock)
        {
            return [.. _names.Keys.Order(StringComparer.Ordinal)];
        }
    }

    private sealed class MemFile(FaultyFileSystem owner, string path, DateTimeOffset now)
    {
        public string Path { get; set; } = path;

        public List<byte> Data { get; } = [];

        /// <summary>Reserved length (fallocate): reads past the data up to here are zeros.</summary>
        public long Allocated { get; set; }

        public long Length => Math.Max(Data.Count, Allocated);

        public byte[] Synced { get; set; } = [];

        public DateTimeOffset LastWrite { get; set; } = now;

        public FaultyFileSystem Owner { get; } = owner;

        public byte[] Snapshot() => [.. Data];

        public MemFile CopyFor(FaultyFileSystem fs, bool durableOnly)
        {
            var copy = new MemFile(fs, Path, LastWrite) { Allocated = Allocated };
            copy.Data.AddRange(durableOnly ? Synced : Data);
            copy.Synced = [.. copy.Data];
            return copy;
        }
    }

    private sealed class Handle(FaultyFileSystem fs, MemFile file) : ILogFile
    {
        private bool _disposed;

        public long Length
        {
            get
            {
                lock (fs._lock)
                {
                    return file.Length;
                }
            }
        }

        public void Write(long position, ReadOnlySpan<byte> data)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            lock (fs._lock)
            {
                while (file.Data.Count < position)
                {
                    file.Data.Add(0);
                }

                for (var i = 0; i < data.Length; i++)
                {
                    if (position + i < file.Data.Count)
                    {
                        file.Data[(int)position + i] = data[i];
                    }
                    else
                    {
                        file.Data.Add(data[i]);
                    }
                }

                file.LastWrite = fs._time.GetUtcNow();
            }
        }

        public int Read(long position, Span<byte> buffer)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            lock (fs._lock)
            {
                var count = (int)Math.Max(0, Math.Min(buffer.Length, file.Length - position));
                fs.BytesRead += count;
                for (var i = 0; i < count; i++)
                {
                    buffer[i] = position + i < file.Data.Count ? file.Data[(int)position + i] : (byte)0;
                }

                return count;
            }
        }

        public void Sync()
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (fs.SyncGate is { } gate)
            {
                Interlocked.Increment(ref fs._syncsWaiting);
                gate.Wait(TimeSpan.FromSeconds(30));
                Interlocked.Decrement(ref fs._syncsWaiting);
            }
            lock (fs._lock)
            {
                fs.Syncs++;
                if (fs.FailSync?.Invoke(file.Path) == true)
                {
                    throw new IOException($"fsync({file.Path}): Input/output error (injected)");
                }

                file.Synced = [.. file.Data];
            }
        }

        public void Truncate(long length)
        {
            lock (fs._lock)
            {
                if (length < file.Data.Count)
                {
                    file.Data.RemoveRange((int)length, file.Data.Count - (int)length);
                }

                file.Allocated = length;
            }
        }

        public bool Allocate(long length)
        {
            lock (fs._lock)
            {
                file.Allocated = Math.Max(file.Allocated, length);
                return true;
            }
        }

        public void Dispose() => _disposed = true;
    }
}
