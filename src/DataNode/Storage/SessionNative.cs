using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Infra.DataNode.Storage;

/// <summary>
/// SQLite's session extension (compiled into the bundled <c>e_sqlite3</c>), reached through P/Invoke on
/// the connection handle Microsoft.Data.Sqlite opened: change capture on the master, apply and invert
/// on replicas.
/// </summary>
internal static unsafe partial class SessionNative
{
    private const string Library = "e_sqlite3";

    public const int SqliteOk = 0;
    public const int SqliteAbort = 4;

    /// <summary>Conflict handler answer: stop, roll the whole apply back.</summary>
    private const int ChangesetAbort = 2;

    [LibraryImport(Library, EntryPoint = "sqlite3session_create", StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Create(IntPtr db, string dbName, out IntPtr session);

    [LibraryImport(Library, EntryPoint = "sqlite3session_attach")]
    public static partial int Attach(IntPtr session, IntPtr tableOrNullForAll);

    [LibraryImport(Library, EntryPoint = "sqlite3session_changeset")]
    public static partial int Changeset(IntPtr session, out int size, out IntPtr changeset);

    [LibraryImport(Library, EntryPoint = "sqlite3session_delete")]
    public static partial void Delete(IntPtr session);

    [LibraryImport(Library, EntryPoint = "sqlite3_free")]
    public static partial void Free(IntPtr memory);

    [LibraryImport(Library, EntryPoint = "sqlite3changeset_invert")]
    private static partial int Invert(int size, byte* changeset, out int outSize, out IntPtr output);

    [LibraryImport(Library, EntryPoint = "sqlite3changeset_apply")]
    private static partial int Apply(
        IntPtr db, int size, byte* changeset, IntPtr filter, delegate* unmanaged[Cdecl]<IntPtr, int, IntPtr, int> conflict, IntPtr context);

    [LibraryImport(Library, EntryPoint = "sqlite3changeset_start")]
    private static partial int Start(out IntPtr iterator, int size, byte* changeset);

    [LibraryImport(Library, EntryPoint = "sqlite3changeset_next")]
    private static partial int Next(IntPtr iterator);

    [LibraryImport(Library, EntryPoint = "sqlite3changeset_op")]
    private static partial int Op(IntPtr iterator, out IntPtr table, out int columns, out int op, out int indirect);

    [LibraryImport(Library, EntryPoint = "sqlite3changeset_pk")]
    private static partial int PrimaryKey(IntPtr iterator, out byte* flags, out int columns);

    [LibraryImport(Library, EntryPoint = "sqlite3changeset_old")]
    private static partial int OldValue(IntPtr iterator, int column, out IntPtr value);

    [LibraryImport(Library, EntryPoint = "sqlite3changeset_new")]
    private static partial int NewValue(IntPtr iterator, int column, out IntPtr value);

    [LibraryImport(Library, EntryPoint = "sqlite3changeset_finalize")]
    private static partial int Finalize(IntPtr iterator);

    [LibraryImport(Library, EntryPoint = "sqlite3_value_type")]
    private static partial int ValueType(IntPtr value);

    [LibraryImport(Library, EntryPoint = "sqlite3_value_int64")]
    private static partial long ValueInt64(IntPtr value);

    [LibraryImport(Library, EntryPoint = "sqlite3_value_double")]
    private static partial double ValueDouble(IntPtr value);

    [LibraryImport(Library, EntryPoint = "sqlite3_value_bytes")]
    private static partial int ValueBytes(IntPtr value);

    [LibraryImport(Library, EntryPoint = "sqlite3_value_blob")]
    private static partial byte* ValueBlob(IntPtr value);

    [LibraryImport(Library, EntryPoint = "sqlite3_value_text")]
    private static partial byte* ValueText(IntPtr value);

    private const int SqliteRow = 100;
    private const int SqliteDone = 101;
    private const int SqliteInsert = 18;

    /// <summary>
    /// Calls <paramref name="onRow"/> for every row <paramref name="changeset"/> inserts, updates or
    /// deletes: its table, the key's column positions and values (an insert's new key, else the old one;
    /// a changed key is a delete and an insert), and the old value of the column
    /// <paramref name="watchColumn"/> names for its table (-1: none) when the change records one (a
    /// delete always does, an update only when that column changed).
    /// </summary>
    public static void ForEachChangedKey(ReadOnlySpan<byte> changeset, Func<string, int> watchColumn, Action<ChangedKey> onRow)
    {
        if (changeset.IsEmpty)
        {
            return;
        }

        fixed (byte* bytes = changeset)
        {
            var rc = Start(out var iterator, changeset.Length, bytes);
            if (rc != SqliteOk)
            {
                throw new InvalidOperationException($"sqlite3changeset_start failed with code {rc}");
            }

            try
            {
                while ((rc = Next(iterator)) == SqliteRow)
                {
                    Check(Op(iterator, out var tablePtr, out _, out var op, out _), "sqlite3changeset_op");
                    Check(PrimaryKey(iterator, out var flags, out var columns), "sqlite3changeset_pk");
                    var keyColumns = new List<int>(1);
                    for (var i = 0; i < columns; i++)
                    {
                        if (flags[i] != 0)
                        {
                            keyColumns.Add(i);
                        }
                    }

                    var values = new object?[keyColumns.Count];
                    for (var k = 0; k < values.Length; k++)
                    {
                        IntPtr value;
                        Check(op == SqliteInsert ? NewValue(iterator, keyColumns[k], out value) : OldValue(iterator, keyColumns[k], out value), "sqlite3changeset_old/new");
                        values[k] = ToObject(value);
                    }

                    var table = Marshal.PtrToStringUTF8(tablePtr) ?? "";
                    var watched = watchColumn(table);
                    var hasOld = false;
                    object? old = null;
                    if (op != SqliteInsert && watched >= 0 && watched < columns && OldValue(iterator, watched, out var oldValue) == SqliteOk && oldValue != IntPtr.Zero)
                    {
                        hasOld = true;
                        old = ToObject(oldValue);
                    }

                    onRow(new ChangedKey(table, op == SqliteInsert, [.. keyColumns], values, hasOld, old));
                }

                if (rc != SqliteDone)
                {
                    throw new InvalidOperationException($"sqlite3changeset_next failed with code {rc}: the changeset is corrupt");
                }
            }
            finally
            {
                _ = Finalize(iterator); // its code repeats the last error, already reported
            }
        }
    }

    private static void Check(int rc, string what)
    {
        if (rc != SqliteOk)
        {
            throw new InvalidOperationException($"{what} failed with code {rc}");
        }
    }

    private static object? ToObject(IntPtr value)
    {
        if (value == IntPtr.Zero)
        {
            return null;
        }

        switch (ValueType(value))
        {
            case 1:
                return ValueInt64(value);
            case 2:
                return ValueDouble(value);
            case 3:
                {
                    var text = ValueText(value);
                    return new string((sbyte*)text, 0, ValueBytes(value), System.Text.Encoding.UTF8);
                }

            case 4:
                {
                    var blob = ValueBlob(value);
                    var length = ValueBytes(value);
                    return length == 0 ? Array.Empty<byte>() : new ReadOnlySpan<byte>(blob, length).ToArray();
                }

            default:
                return null;
        }
    }

    /// <summary>The conflict seen by the last apply on this thread (SQLITE_CHANGESET_DATA = 1 … FOREIGN_KEY = 5).</summary>
    [ThreadStatic]
    private static int _lastConflict;

    /// <summary>
    /// Applies <paramref name="changeset"/> on <paramref name="db"/> inside the caller's transaction. Any
    /// conflict (a row missing, different, or in the way) aborts the whole changeset: on a replica it
    /// means the copies have diverged, and skipping would hide it.
    /// </summary>
    public static void ApplyOrThrow(IntPtr db, ReadOnlySpan<byte> changeset)
    {
        _lastConflict = 0;
        int rc;
        fixed (byte* bytes = changeset)
        {
            rc = Apply(db, changeset.Length, bytes, IntPtr.Zero, &OnConflict, IntPtr.Zero);
        }

        if (rc == SqliteOk)
        {
            return;
        }

        if (rc == SqliteAbort && _lastConflict != 0)
        {
            throw new ChangesetConflictException(_lastConflict switch
            {
                1 => "a row to change has different values than the master had (SQLITE_CHANGESET_DATA)",
                2 => "a row to change or delete does not exist (SQLITE_CHANGESET_NOTFOUND)",
                3 => "a row to insert already exists (SQLITE_CHANGESET_CONFLICT)",
                4 => "a change violates a constraint (SQLITE_CHANGESET_CONSTRAINT)",
                _ => "a change violates a foreign key (SQLITE_CHANGESET_FOREIGN_KEY)",
            });
        }

        if (IsStorageFailure(rc))
        {
            throw StorageFailure(rc, "sqlite3changeset_apply");
        }

        throw new ChangesetConflictException($"sqlite3changeset_apply failed with code {rc}");
    }

    /// <summary>
    /// True for SQLite result codes that say the database cannot be written now — a full disk, an I/O
    /// error, a busy or read-only file, no memory — not that the change is wrong. Applying a replicated
    /// entry that fails so is not divergence: the entry is fine and the copy may be too, so the replica
    /// tries again. A corrupt file (SQLITE_CORRUPT, SQLITE_NOTADB) is not in the list: that copy cannot be
    /// trusted any more, and it stops as a diverged one does (reported; re-cloned, never promoted).
    /// </summary>
    public static bool IsStorageFailure(int code) => (code & 0xFF) is 5 or 6 or 7 or 8 or 9 or 10 or 13 or 14;

    /// <summary>The error for a storage failure of <paramref name="what"/>: the node is unavailable, nothing diverged.</summary>
    public static NodeException StorageFailure(int code, string what) =>
        new(NodeErrorCode.Unavailable, $"{what} failed: the database cannot be written ({ResultName(code)}, code {code})");

    private static string ResultName(int code) => (code & 0xFF) switch
    {
        5 => "SQLITE_BUSY",
        6 => "SQLITE_LOCKED",
        7 => "SQLITE_NOMEM",
        8 => "SQLITE_READONLY",
        9 => "SQLITE_INTERRUPT",
        10 => "SQLITE_IOERR",
        13 => "SQLITE_FULL",
        14 => "SQLITE_CANTOPEN",
        _ => "SQLITE_ERROR",
    };

    /// <summary>The changeset that undoes <paramref name="changeset"/>.</summary>
    public static byte[] InvertOrThrow(ReadOnlySpan<byte> changeset)
    {
        int rc;
        int size;
        IntPtr output;
        fixed (byte* bytes = changeset)
        {
            rc = Invert(changeset.Length, bytes, out size, out output);
        }

        if (rc != SqliteOk)
        {
            throw new ChangesetConflictException($"sqlite3changeset_invert failed with code {rc}");
        }

        try
        {
            return new ReadOnlySpan<byte>((void*)output, size).ToArray();
        }
        finally
        {
            Free(output);
        }
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int OnConflict(IntPtr context, int conflictType, IntPtr iterator)
    {
        _lastConflict = conflictType;
        return ChangesetAbort;
    }
}

/// <summary>A row a changeset touches: see <see cref="SessionNative.ForEachChangedKey"/>.</summary>
internal readonly record struct ChangedKey(string Table, bool Inserted, int[] KeyColumns, object?[] KeyValues, bool HasOld, object? Old);

/// <summary>A changeset did not apply cleanly: the replica's data differs from the master's.</summary>
internal sealed class ChangesetConflictException(string message) : Exception(message);

/// <summary>
/// Records every row change on one connection from creation until <see cref="TakeChangeset"/>: the
/// net effect per primary key, with the values as they are in the database, so <c>random()</c> or
/// <c>datetime('now')</c> replay as the same rows.
/// </summary>
internal sealed unsafe class ChangeCapture : IDisposable
{
    private IntPtr _session;

    public ChangeCapture(IntPtr db)
    {
        var rc = SessionNative.Create(db, "main", out _session);
        if (rc != SessionNative.SqliteOk)
        {
            throw new InvalidOperationException($"sqlite3session_create failed with code {rc}");
        }

        rc = SessionNative.Attach(_session, IntPtr.Zero);
        if (rc != SessionNative.SqliteOk)
        {
            Dispose();
            throw new InvalidOperationException($"sqlite3session_attach failed with code {rc}");
        }
    }

    /// <summary>The changes so far (empty when nothing changed).</summary>
    public byte[] TakeChangeset()
    {
        var rc = SessionNative.Changeset(_session, out var size, out var changeset);
        if (rc != SessionNative.SqliteOk)
        {
            throw new InvalidOperationException($"sqlite3session_changeset failed with code {rc}");
        }

        try
        {
            return size == 0 ? [] : new ReadOnlySpan<byte>((void*)changeset, size).ToArray();
        }
        finally
        {
            SessionNative.Free(changeset);
        }
    }

    public void Dispose()
    {
        if (_session != IntPtr.Zero)
        {
            SessionNative.Delete(_session);
            _session = IntPtr.Zero;
        }
    }
}
