using System.Runtime.InteropServices;

namespace Infra.Core.Storage;

/// <summary>
/// fsync of a directory, so a file created, renamed or deleted in it survives a machine crash (the
/// name lives in the directory, not the file). .NET has no API for it; this goes to libc.
/// </summary>
public static partial class DirectorySync
{
    public static void Sync(string path)
    {
        var fd = Open(path, 0 /* O_RDONLY */);
        if (fd < 0)
        {
            throw new IOException($"open({path}) for fsync failed: errno {Marshal.GetLastPInvokeError()}");
        }

        try
        {
            if (Fsync(fd) != 0)
            {
                throw new IOException($"fsync({path}) failed: errno {Marshal.GetLastPInvokeError()}");
            }
        }
        finally
        {
            _ = Close(fd);
        }
    }

    /// <summary>
    /// Replaces <paramref name="path"/> with <paramref name="data"/> so that a crash leaves either the
    /// old file or the new one, whole: write a temporary file, fsync it, rename it over, fsync the directory.
    /// </summary>
    public static void WriteFileAtomically(string path, ReadOnlySpan<byte> data)
    {
        if (ReplaceFile(path, data) is { } unsynced)
        {
            throw unsynced;
        }
    }

    /// <summary>
    /// <see cref="WriteFileAtomically"/>, telling its failures apart. An exception means the file is still
    /// the old one. A failure of the directory fsync after the rename is returned instead: the new file is
    /// in place (a restarted process reads it) though a machine crash may still bring the old one back.
    /// </summary>
    public static IOException? ReplaceFile(string path, ReadOnlySpan<byte> data, Action<string>? syncDirectory = null)
    {
        var temp = path + ".tmp";
        using (var handle = File.OpenHandle(temp, FileMode.Create, FileAccess.Write))
        {
            RandomAccess.Write(handle, data, 0);
            RandomAccess.FlushToDisk(handle);
        }

        File.Move(temp, path, overwrite: true);
        try
        {
            (syncDirectory ?? Sync)(Path.GetDirectoryName(Path.GetFullPath(path)) ?? ".");
            return null;
        }
        catch (IOException ex)
        {
            return ex;
        }
    }

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);
}
