namespace Infra.WebNode.Links;

/// <summary>
/// The tables, on every shard: users by name, links by code, and each counted click by the link's
/// code (its id is what makes counting idempotent). Applied by every node at start (IF NOT EXISTS).
/// </summary>
internal static class Schema
{
    public static readonly string[] Statements =
    [
        "CREATE TABLE IF NOT EXISTS users(name TEXT PRIMARY KEY, password TEXT NOT NULL, created_at INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS links(code TEXT PRIMARY KEY, url TEXT NOT NULL, owner TEXT NOT NULL, created_at INTEGER NOT NULL, clicks INTEGER NOT NULL DEFAULT 0)",
        "CREATE INDEX IF NOT EXISTS links_by_owner ON links(owner, created_at, code)",
        "CREATE TABLE IF NOT EXISTS clicks(id TEXT PRIMARY KEY, code TEXT NOT NULL, at INTEGER NOT NULL)",
    ];

    public static readonly (string Table, string ShardKey)[] Tables = [("users", "name"), ("links", "code"), ("clicks", "code")];
}
