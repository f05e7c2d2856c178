using Infra.Client.Data;
using Infra.WebNode.Backends;

namespace Infra.WebNode.Accounts;

/// <summary>Users, sharded by name: sign-up stores a slow hash of the password; log-in reads it from the master.</summary>
internal sealed class Accounts(Database db, WebOptions options, TimeProvider time) : IDisposable
{
    /// <summary>
    /// Key derivations run at most one per core at a time, a caller waiting at most this long for one; past it
    /// the request is 503. Each costs tens of ms of CPU and a bad password is free to send: without a bound,
    /// a few dozen log-ins a second took both cores from the redirects.
    /// </summary>
    public static readonly TimeSpan KdfWait = TimeSpan.FromSeconds(2);

    private readonly KdfGate _kdf = new(Environment.ProcessorCount, KdfWait);

    /// <summary>A hash with the configured cost, made once, that unknown names are checked against.</summary>
    private readonly Lazy<string> _decoy = new(() => Passwords.Hash(Convert.ToBase64String(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16)), options.KdfIterations));

    public const int MinPassword = 8;
    public const int MaxPassword = 256;

    /// <summary>Why a user name is refused, or null: 3 to 64 of a-z A-Z 0-9 . _ -</summary>
    public static string? CheckName(string? name)
    {
        if (name is null || name.Length is < 3 or > 64)
        {
            return "username must be 3 to 64 characters";
        }

        foreach (var c in name)
        {
            if (!char.IsAsciiLetterOrDigit(c) && c is not '.' and not '_' and not '-')
            {
                return "username may hold only letters, digits, '.', '_' and '-'";
            }
        }

        return null;
    }

    public static string? CheckPassword(string? password) =>
        password is null || password.Length is < MinPassword or > MaxPassword ? $"password must be {MinPassword} to {MaxPassword} characters" : null;

    /// <summary>False when the name is taken.</summary>
    public async Task<bool> SignUpAsync(string name, string password)
    {
        var hash = await _kdf.RunAsync(() => Passwords.Hash(password, options.KdfIterations));
        try
        {
            await db.ExecuteAsync(name, [["INSERT INTO users(name, password, created_at) VALUES (?, ?, ?)", name, hash, time.GetUtcNow().ToUnixTimeMilliseconds()]]);
            return true;
        }
        catch (DataException ex) when (ex.Message.Contains("UNIQUE", StringComparison.Ordinal))
        {
            return false;
        }
    }

    /// <summary>True when the user exists and the password is theirs. Read from the master: a sign-up a moment ago counts.</summary>
    public async Task<bool> VerifyAsync(string name, string password)
    {
        var rows = await db.QueryAsync("SELECT password FROM users WHERE name = ?", [name], new QueryOptions { Key = name, Consistency = ReadConsistency.Strong });
        if (rows.Rows.Count == 0 || rows.Rows[0][0] is not string stored)
        {
            // Same work as a real check — one key derivation, against a hash made once — so timing does
            // not tell which names exist (it made a hash and then checked it: twice the work, found by fuzzing).
            await _kdf.RunAsync(() => Passwords.Verify(password, _decoy.Value));
            return false;
        }

        return await _kdf.RunAsync(() => Passwords.Verify(password, stored));
    }

    public void Dispose() => _kdf.Dispose();
}

/// <summary>Runs CPU-bound work on the pool, at most <paramref name="concurrency"/> at a time; a caller that waited <paramref name="wait"/> gets 503.</summary>
internal sealed class KdfGate(int concurrency, TimeSpan wait) : IDisposable
{
    private readonly SemaphoreSlim _slots = new(Math.Max(1, concurrency));

    public async Task<T> RunAsync<T>(Func<T> work)
    {
        if (!await _slots.WaitAsync(wait))
        {
            throw new DataUnavailableException("too many log-ins and sign-ups are being checked; try again");
        }

        try
        {
            return await Task.Run(work);
        }
        finally
        {
            _slots.Release();
        }
    }

    public void Dispose() => _slots.Dispose();
}
