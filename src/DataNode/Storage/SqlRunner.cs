using System.Diagnostics;
using Infra.Core.Placement;
using Microsoft.Data.Sqlite;
using SQLitePCL;

namespace Infra.DataNode.Storage;

/// <summary>What a prepared user statement does, as the authorizer saw it.</summary>
internal sealed record PreparedStatement(sqlite3_stmt Handle, bool IsDdl, int ParameterCount);

/// <summary>
/// One connection's statement runner: prepares user SQL under an authorizer that refuses what would
/// break replication or the node's own transactions, caches prepared statements, binds positional
/// parameters and runs them. Used by one thread at a time.
/// </summary>
internal sealed class SqlRunner : IDisposable
{
    public const int MaxCachedStatements = 128;

    // sqlite3.h authorizer action codes.
    private const int CreateIndex = 1, CreateTable = 2, CreateView = 8, Delete = 9, DropIndex = 10, DropTable = 11, DropView = 17;
    private const int Insert = 18, Pragma = 19, Transaction = 22, Update = 23, Attach = 24, Detach = 25, AlterTable = 26, Reindex = 27;
    private const int Analyze = 28, Savepoint = 32;
    private const int SqliteOk = 0, SqliteDeny = 1, SqliteIgnore = 2;

    private static readonly HashSet<string> ReadPragmas = new(StringComparer.OrdinalIgnoreCase)
    {
        "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo", "foreign_key_list", "data_version",
    };

    private readonly Dictionary<string, PreparedStatement> _cache = new(StringComparer.Ordinal);
    private readonly Dictionary<string, sqlite3_stmt> _internal = new(StringComparer.Ordinal);
    private readonly bool _readOnly;
    private readonly delegate_progress _progress;
    private long _deadline = long.MaxValue;
    private bool _timedOut;
    private TimeSpan _limit;
    private string _limitWhat = "query";
    private string _limitFlag = "--max-query-time";
    private bool _userMode;
    private bool _sawDdl;
    private bool _sawCreateTable;
    private string? _denied;

    public SqlRunner(SqliteConnection connection, bool readOnly)
    {
        Connection = connection;
        Db = connection.Handle ?? throw new InvalidOperationException("the connection is not open");
        _readOnly = readOnly;
        raw.sqlite3_set_authorizer(Db, Authorize, null);
        _progress = OnProgress;

        // infra_slot(value, slots): the slot a shard-key value hashes to, as the router computes it,
        // so a slot's rows can be selected when it moves to another shard.
        connection.CreateFunction<object?, long, long?>("infra_slot", static (value, slots) =>
            slots is < 1 or > 1 << 20 ? throw new ArgumentOutOfRangeException(nameof(slots), "infra_slot: slots must be 1..1048576")
            : ShardKey.Slot(value, (int)slots) is var slot and >= 0 ? slot : null, isDeterministic: true);
    }

    public SqliteConnection Connection { get; }

    public sqlite3 Db { get; }

    public IntPtr NativeHandle => Db.DangerousGetHandle();

    /// <summary>Runs internal SQL (no parameters, no rows wanted), outside the user rules.</summary>
    public void Exec(string sql)
    {
        var rc = raw.sqlite3_exec(Db, sql, null, null, out var message);
        if (rc != raw.SQLITE_OK)
        {
            throw new SqliteException($"{sql}: {message ?? raw.sqlite3_errstr(rc).utf8_to_string()}", rc);
        }
    }

    /// <summary>
    /// One of the node's own statements (transaction control, the log, meta), prepared once per
    /// connection outside the user rules: they run for every request. Reset it after use
    /// (<see cref="Reset"/>); SQLite re-prepares it by itself after a schema change.
    /// </summary>
    public sqlite3_stmt Internal(string sql)
    {
        if (!_internal.TryGetValue(sql, out var stmt))
        {
            var rc = raw.sqlite3_prepare_v2(Db, sql, out stmt);
            if (rc != raw.SQLITE_OK)
            {
                stmt?.Dispose();
                throw new SqliteException($"{sql}: {Message()}", rc);
            }

            _internal[sql] = stmt;
        }

        return stmt;
    }

    public static void Reset(sqlite3_stmt stmt)
    {
        raw.sqlite3_reset(stmt);
        raw.sqlite3_clear_bindings(stmt);
    }

    /// <summary>Runs one of the node's own statements to its end.</summary>
    public void Run(string sql, params object?[] args)
    {
        var stmt = Internal(sql);
        try
        {
            BindAll(stmt, args);
            StepToEnd(stmt, sql);
        }
        finally
        {
            Reset(stmt);
        }
    }

    /// <summary>The first column of the first row of one of the node's own queries (0 when there is none).</summary>
    public long ScalarLong(string sql, params object?[] args)
    {
        var stmt = Internal(sql);
        try
        {
            BindAll(stmt, args);
            return raw.sqlite3_step(stmt) == raw.SQLITE_ROW ? raw.sqlite3_column_int64(stmt, 0) : 0;
        }
        finally
        {
            Reset(stmt);
        }
    }

    /// <summary>Steps a statement (rows are not kept) and throws on anything but SQLITE_DONE.</summary>
    public void StepToEnd(sqlite3_stmt stmt, string sql)
    {
        var rc = raw.sqlite3_step(stmt);
        while (rc == raw.SQLITE_ROW)
        {
            rc = raw.sqlite3_step(stmt);
        }

        if (rc != raw.SQLITE_DONE)
        {
            throw new SqliteException($"{sql}: {Message()}", rc);
        }
    }

    /// <summary>Binds node-internal values (they are always SQL values).</summary>
    public static void BindAll(sqlite3_stmt stmt, object?[] args)
    {
        for (var i = 0; i < args.Length; i++)
        {
            if (BindValue(stmt, i + 1, args[i]) is null)
            {
                throw new ArgumentException($"not a SQL value: {args[i]!.GetType().Name}", nameof(args));
            }
        }
    }

    /// <summary>Binds one value; null when it is not a SQL value (null, long, int, double, string, byte[]).</summary>
    public static int? BindValue(sqlite3_stmt stmt, int index, object? value) => value switch
    {
        null => raw.sqlite3_bind_null(stmt, index),
        long l => raw.sqlite3_bind_int64(stmt, index, l),
        int n => raw.sqlite3_bind_int64(stmt, index, n),
        double d => raw.sqlite3_bind_double(stmt, index, d),
        string s => raw.sqlite3_bind_text(stmt, index, s),
        byte[] b => raw.sqlite3_bind_blob(stmt, index, b),
        _ => null,
    };

    /// <summary>Prepares a user statement (cached), under the user rules.</summary>
    public PreparedStatement Prepare(string sql)
    {
        if (_cache.TryGetValue(sql, out var cached))
        {
            return cached;
        }

        _userMode = true;
        _sawDdl = false;
        _sawCreateTable = false;
        _denied = null;
        int rc;
        sqlite3_stmt stmt;
        string? tail;
        try
        {
            rc = raw.sqlite3_prepare_v2(Db, sql, out stmt, out tail);
        }
        finally
        {
            _userMode = false;
        }

        if (rc != raw.SQLITE_OK)
        {
            stmt?.Dispose();
            if (_denied is not null)
            {
                throw new NodeException(NodeErrorCode.NotAllowed, _denied);
            }

            throw new NodeException(NodeErrorCode.SqlError, Message());
        }

        if (stmt is null || stmt.IsInvalid)
        {
            throw new NodeException(NodeErrorCode.BadRequest, "the SQL holds no statement");
        }

        if (!string.IsNullOrWhiteSpace(tail) && HasStatement(tail))
        {
            stmt.Dispose();
            throw new NodeException(NodeErrorCode.BadRequest, "one statement per entry: put each statement in its own [sql, params...] entry");
        }

        var prepared = new PreparedStatement(stmt, _sawDdl, raw.sqlite3_bind_parameter_count(stmt));
        if (!prepared.IsDdl)
        {
            if (_cache.Count >= MaxCachedStatements)
            {
                ClearCache();
            }

            _cache[sql] = prepared;
        }

        return prepared;
    }

    private bool HasStatement(string tail)
    {
        _userMode = true;
        try
        {
            var rc = raw.sqlite3_prepare_v2(Db, tail, out var next, out _);
            using (next)
            {
                return rc != raw.SQLITE_OK || (next is not null && !next.IsInvalid);
            }
        }
        finally
        {
            _userMode = false;
        }
    }

    /// <summary>Releases a statement that is not cached (DDL); cached ones are reset for reuse.</summary>
    public static void Release(PreparedStatement statement)
    {
        if (statement.IsDdl)
        {
            statement.Handle.Dispose();
        }
        else
        {
            raw.sqlite3_reset(statement.Handle);
            raw.sqlite3_clear_bindings(statement.Handle);
        }
    }

    public void Bind(PreparedStatement statement, IReadOnlyList<object?> parameters)
    {
        if (parameters.Count != statement.ParameterCount)
        {
            throw new NodeException(NodeErrorCode.BadRequest, $"the statement has {statement.ParameterCount} parameters but {parameters.Count} values were given");
        }

        var stmt = statement.Handle;
        for (var i = 0; i < parameters.Count; i++)
        {
            var rc = BindValue(stmt, i + 1, parameters[i])
                ?? throw new NodeException(NodeErrorCode.BadRequest, $"parameter {i + 1} is not a SQL value ({parameters[i]!.GetType().Name})");
            if (rc != raw.SQLITE_OK)
            {
                throw new NodeException(NodeErrorCode.BadRequest, $"parameter {i + 1}: {Message()}");
            }
        }
    }

    // The rules apply when a statement is prepared. SQLite re-prepares a cached statement after a schema
    // change (the same SQL, so the same verdict), and the session extension runs its own PRAGMAs while
    // a statement steps: neither is user SQL, so stepping runs outside the rules.

    /// <summary>Steps a write statement to its end (rows it returns are not kept).</summary>
    public void RunToEnd(PreparedStatement statement)
    {
        _denied = null;
        int rc;
        while ((rc = raw.sqlite3_step(statement.Handle)) == raw.SQLITE_ROW)
        {
        }

        if (rc != raw.SQLITE_DONE)
        {
            throw StepError(rc);
        }
    }

    /// <summary>
    /// Lets <see cref="StartRunTimeLimit(TimeSpan)"/> interrupt what this connection runs: SQLite calls back every
    /// 10,000 VM instructions (a point read finishes before the first call). Installed once per
    /// connection; a limit is then only a field to set.
    /// </summary>
    public void InstallRunTimeLimit() => raw.sqlite3_progress_handler(Db, ProgressInstructions, _progress, null);

    /// <summary>
    /// Interrupts what this connection runs once <paramref name="limit"/> has passed (zero: never), until
    /// <see cref="EndRunTimeLimit"/>: the step under way fails with SqlError. Needs <see cref="InstallRunTimeLimit"/>.
    /// </summary>
    public void StartRunTimeLimit(TimeSpan limit)
    {
        if (limit <= TimeSpan.Zero)
        {
            return;
        }

        StartRunTimeLimit(Stopwatch.GetTimestamp() + (long)(limit.TotalSeconds * Stopwatch.Frequency), limit, "query", "--max-query-time");
    }

    /// <summary>
    /// As <see cref="StartRunTimeLimit(TimeSpan)"/>, to a <see cref="Stopwatch"/> timestamp (long.MaxValue:
    /// never); the error says "the <paramref name="what"/> ran longer than <paramref name="limit"/> (<paramref name="flag"/>)".
    /// </summary>
    public void StartRunTimeLimit(long deadline, TimeSpan limit, string what, string flag)
    {
        _limit = limit;
        _limitWhat = what;
        _limitFlag = flag;
        _timedOut = false;
        _deadline = deadline;
    }

    /// <summary>False when no transaction is open — also when SQLite has just rolled one back by itself.</summary>
    public bool InTransaction => raw.sqlite3_get_autocommit(Db) == 0;

    public void EndRunTimeLimit() => _deadline = long.MaxValue;

    private const int ProgressInstructions = 10_000;

    private int OnProgress(object userData)
    {
        if (Stopwatch.GetTimestamp() <= _deadline)
        {
            return 0;
        }

        _timedOut = true;
        return 1;
    }

    /// <summary>Steps to the next row; false at the end.</summary>
    public bool Step(PreparedStatement statement)
    {
        _denied = null;
        var rc = raw.sqlite3_step(statement.Handle);
        return rc == raw.SQLITE_ROW || (rc == raw.SQLITE_DONE ? false : throw StepError(rc));
    }

    public static object? Column(sqlite3_stmt stmt, int i) => raw.sqlite3_column_type(stmt, i) switch
    {
        raw.SQLITE_INTEGER => raw.sqlite3_column_int64(stmt, i),
        raw.SQLITE_FLOAT => raw.sqlite3_column_double(stmt, i),
        raw.SQLITE_TEXT => raw.sqlite3_column_text(stmt, i).utf8_to_string(),
        raw.SQLITE_BLOB => raw.sqlite3_column_blob(stmt, i).ToArray(),
        _ => null,
    };

    private NodeException StepError(int rc)
    {
        if (_denied is not null)
        {
            return new NodeException(NodeErrorCode.NotAllowed, _denied);
        }

        if (rc == raw.SQLITE_INTERRUPT && _timedOut)
        {
            return new NodeException(NodeErrorCode.SqlError, $"the {_limitWhat} ran longer than {_limit.TotalSeconds:0.###} s ({_limitFlag}) and was interrupted");
        }

        var extended = raw.sqlite3_extended_errcode(Db);
        return (rc & 0xff) is raw.SQLITE_IOERR or raw.SQLITE_FULL or raw.SQLITE_CORRUPT or raw.SQLITE_NOMEM
            ? new NodeException(NodeErrorCode.Unavailable, $"storage error: {Message()} (code {extended})")
            : new NodeException(NodeErrorCode.SqlError, Message());
    }

    public string Message() => raw.sqlite3_errmsg(Db).utf8_to_string() ?? "unknown SQLite error";

    public long TotalChanges => raw.sqlite3_total_changes(Db);

    public long LastInsertRowId => raw.sqlite3_last_insert_rowid(Db);

    private int Authorize(object userData, int action, string param0, string param1, string dbName, string trigger)
    {
        if (!_userMode)
        {
            return SqliteOk;
        }

        string? refusal = action switch
        {
            Transaction or Savepoint => "transaction control is not allowed: each request already runs in one transaction",
            Attach or Detach => "ATTACH and DETACH are not allowed",
            Pragma when _readOnly && ReadPragmas.Contains(param0) => null,
            Pragma => $"PRAGMA {param0} is not allowed",
            CreateIndex or CreateTable or CreateView or DropIndex or DropTable or DropView or AlterTable or Reindex or Analyze
                when _readOnly => "schema changes go to /execute on the master",
            CreateTable or DropTable when IsInternal(param0) => $"{param0} belongs to the node",
            AlterTable when IsInternal(param1) => $"{param1} belongs to the node", // (its first argument is the database's name)
            CreateIndex or DropIndex when IsInternal(param1) => $"{param1} belongs to the node",
            CreateTable => MarkCreateTable(),
            CreateIndex or CreateView or DropIndex or DropTable or DropView or AlterTable or Reindex or Analyze => MarkDdl(),
            Insert or Update or Delete when _readOnly && !IsSchema(param0) => "reads cannot change data: send writes to /execute on the master",
            Insert or Update or Delete when IsInternal(param0) => $"{param0} belongs to the node",
            Insert or Update or Delete => null,
            21 when _sawCreateTable => "CREATE TABLE … AS SELECT is not allowed: its table would have no PRIMARY KEY, which replication needs (and, being DDL, it would run with no time limit); create the table, then INSERT … SELECT",
            20 or 21 or 31 or 33 => null, // READ, SELECT, FUNCTION, RECURSIVE
            3 or 4 or 5 or 6 or 12 or 13 or 14 or 15 => "temporary tables, views and triggers are not allowed (they are not replicated)",
            7 or 16 => "triggers are not allowed: their effects are replicated as row changes and would apply twice",
            29 or 30 => "virtual tables are not allowed",
            _ => $"SQL action {action} is not allowed",
        };
        if (refusal is null)
        {
            // A DELETE with no WHERE is run by SQLite as a truncate when no pre-update hook was registered at
            // prepare time — which the change capture is not yet, for a request's first statement: its rows left
            // no change, and replicas kept them. IGNORE on a DELETE keeps the delete and turns the truncate off
            // (documented with sqlite3_set_authorizer): every row is deleted, and captured, one by one.
            // Only for a DELETE statement: DROP TABLE asks for SQLITE_DELETE too (on the schema table, then on
            // the table after SQLITE_DROP_TABLE), and IGNORE there silently skips the drop.
            return action == Delete && !_readOnly && !_sawDdl && !IsSchema(param0) ? SqliteIgnore : SqliteOk;
        }

        _denied ??= refusal;
        return SqliteDeny;
    }

    private string? MarkDdl()
    {
        _sawDdl = true;
        return null;
    }

    private string? MarkCreateTable()
    {
        _sawCreateTable = true;
        return MarkDdl();
    }

    private static bool IsInternal(string? table) => table is not null && table.StartsWith("_infra_", StringComparison.OrdinalIgnoreCase);

    private static bool IsSchema(string? table) => table is not null && table.StartsWith("sqlite_", StringComparison.OrdinalIgnoreCase);

    public void ClearCache()
    {
        foreach (var statement in _cache.Values)
        {
            statement.Handle.Dispose();
        }

        _cache.Clear();
    }

    public void Dispose()
    {
        ClearCache();
        foreach (var stmt in _internal.Values)
        {
            stmt.Dispose();
        }

        _internal.Clear();
        Connection.Dispose();
    }
}
