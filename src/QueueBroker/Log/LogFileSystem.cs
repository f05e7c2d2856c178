using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Infra.QueueBroker.Log;

/// <summary>
/// The file operations the log needs, and nothing else, so tests can put a fault-injecting layer
/// underneath (torn writes, lost unsynced data, failing fsync) and production uses the real disk.
/// </summary>
internal interface ILogFileSystem
{
    /// <summary>Opens for reading and writing, creating an empty file when <paramref name="create"/>.</summary>
    ILogFile Open(string path, bool create);

    bool Exists(string path);

    void Delete(string path);

    /// <summary>Names (not paths) of the files in <paramref name="directory"/> ending with <paramref name="suffix"/>.</summary>
    IReadOnlyList<string> List(string directory, string suffix);

    IReadOnlyList<string> ListDirectories(string directory);

    void CreateDirectory(string path);

    /// <summary>fsync of the directory itself: makes file creations, renames and deletions in it durable.</summary>
    void SyncDirectory(string path);

    /// <summary>Replaces <paramref name="path"/> with <paramref name="data"/> durably: temp file, fsync, rename, directory fsync.</summary>
    void WriteAtomically(string path, ReadOnlySpan<byte> data);

    /// <summary>The whole file, or null when it does not exist.</summary>
    byte[]? ReadAll(string path);

    DateTimeOffset LastWriteTime(string path);
}

/// <summary>One open file: positional reads and writes, fsync, truncate.</summary>
internal interface ILogFile : IDisposable
{
    long Length { get; }

    void Write(long position, ReadOnlySpan<byte> data);

    /// <summary>Reads up to <c>buffer.Length</c> bytes; fewer only at the end of the file.</summary>
    int Read(long position, Span<byte> buffer);

    /// <summary>
    /// fdatasync: everything written so far, and the file size, are on stable storage when this returns
    /// (metadata not needed to read the data back, such as the modification time, may lag).
    /// </summary>
    void Sync();

    void Truncate(long length);

    /// <summary>
    /// Reserves space so the file is <paramref name="length"/> bytes, zero-filled past its data
    /// (fallocate). Appends into reserved space do not change the file size, so each fdatasync has
    /// less to write. False when the file system cannot reserve (the log works without).
    /// </summary>
    bool Allocate(long length);
}

/// <summary>The real disk: positional I/O on <see cref="SafeFileHandle"/>, fsync via <see cref="RandomAccess.FlushToDisk"/>.</summary>
internal sealed partial class DiskFileSystem : ILogFileSystem
{
    public static readonly DiskFileSystem Instance = new();

    public ILogFile Open(string path, bool create) =>
        new DiskFile(File.OpenHandle(path, create ? FileMode.OpenOrCreate : FileMode.Open, FileAccess.ReadWrite, FileShare.Read | FileShare.Delete));

    public bool Exists(string path) => File.Exists(path);

    public void Delete(string path) => File.Delete(path);

    public IReadOnlyList<string> List(string directory, string suffix) =>
        [.. Directory.EnumerateFiles(directory, "*" + suffix).Select(Path.GetFileName).OfType<string>().Where(n => n.EndsWith(suffix, StringComparison.Ordinal))];

    public IReadOnlyList<string> ListDirectories(string directory) =>
        Directory.Exists(directory) ? [.. Directory.EnumerateDirectories(directory).Select(Path.GetFileName).OfType<string>()] : [];

    public void CreateDirectory(string path)
    {
        if (Directory.Exists(path))
        {
            return;
        }

        var parent = Path.GetDirectoryName(Path.GetFullPath(path));
        if (parent is not null && !Directory.Exists(parent))
        {
            CreateDirectory(parent);
        }

        Directory.CreateDirectory(path);
        if (parent is not null)
        {
            SyncDirectory(parent);
        }
    }

    public void SyncDirectory(string path) => Infra.Core.Storage.DirectorySync.Sync(path);

    public void WriteAtomically(string path, ReadOnlySpan<byte> data) => Infra.Core.Storage.DirectorySync.WriteFileAtomically(path, data);

    public byte[]? ReadAll(string path) => File.Exists(path) ? File.ReadAllBytes(path) : null;

    public DateTimeOffset LastWriteTime(string path) => File.GetLastWriteTimeUtc(path);

    /// <summary>Returns 0 or an errno (it does not set errno).</summary>
    [LibraryImport("libc", EntryPoint = "posix_fallocate64")]
    private static partial int PosixFallocate(int fd, long offset, long length);

    private sealed class DiskFile(SafeFileHandle handle) : ILogFile
    {
        public long Length => RandomAccess.GetLength(handle);

        public void Write(long position, ReadOnlySpan<byte> data) => RandomAccess.Write(handle, data, position);

        public int Read(long position, Span<byte> buffer)
        {
            var total = 0;
            while (total < buffer.Length)
            {
                var read = RandomAccess.Read(handle, buffer[total..], position + total);
                if (read == 0)
                {
                    break;
                }

                total += read;
            }

            return total;
        }

        public void Sync() => Infra.Core.Storage.FileSync.DataSync(handle);

        public void Truncate(long length) => RandomAccess.SetLength(handle, length);

        public bool Allocate(long length)
        {
            if (RandomAccess.GetLength(handle) >= length)
            {
                return true;
            }

            var added = false;
            try
            {
                handle.DangerousAddRef(ref added);
                return PosixFallocate((int)handle.DangerousGetHandle(), 0, length) == 0;
            }
            finally
            {
                if (added)
                {
                    handle.DangerousRelease();
                }
            }
        }

        public void Dispose() => handle.Dispose();
    }
}
