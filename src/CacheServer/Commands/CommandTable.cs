using static Infra.CacheServer.Commands.CommandFlags;

namespace Infra.CacheServer.Commands;

/// <summary>Every command the server knows, found by name in any case without allocating.</summary>
internal static class CommandTable
{
    private const int MaxNameLength = 32;

    private static readonly CommandSpec[] Specs =
    [
        // Connection
        new("PING", -1, Fast | PubSubContext, 0, 0, 0, "connection", "Returns the server's liveliness response.", ConnectionCommands.Ping),
        new("ECHO", 2, Fast, 0, 0, 0, "connection", "Returns the given string.", ConnectionCommands.Echo),
        new("QUIT", -1, Fast | NoAuth | PubSubContext, 0, 0, 0, "connection", "Closes the connection.", ConnectionCommands.Quit),
        new("SELECT", 2, Fast, 0, 0, 0, "connection", "Changes the selected database (only 0 exists).", ConnectionCommands.Select),
        new("AUTH", -2, Fast | NoAuth, 0, 0, 0, "connection", "Authenticates the connection.", ConnectionCommands.Auth),
        new("HELLO", -1, Fast | NoAuth, 0, 0, 0, "connection", "Handshakes with the server (RESP2 or RESP3).", ConnectionCommands.Hello),
        new("CLIENT", -2, Admin, 0, 0, 0, "connection", "A container for client connection commands.", ConnectionCommands.Client),
        new("RESET", 1, Fast | NoAuth | PubSubContext, 0, 0, 0, "connection", "Resets the connection.", ConnectionCommands.Reset),

        // Server
        new("COMMAND", -1, None, 0, 0, 0, "server", "Returns detailed information about all commands.", ServerCommands.Command),
        new("INFO", -1, None, 0, 0, 0, "server", "Returns information and statistics about the server.", ServerCommands.Info),
        new("CONFIG", -2, Admin, 0, 0, 0, "server", "A container for server configuration commands.", ServerCommands.Config),
        new("DBSIZE", 1, ReadOnly | Fast, 0, 0, 0, "server", "Returns the number of keys in the database.", ServerCommands.DbSize),
        new("FLUSHDB", -1, Write, 0, 0, 0, "server", "Removes all keys from the current database.", ServerCommands.Flush),
        new("FLUSHALL", -1, Write, 0, 0, 0, "server", "Removes all keys from all databases.", ServerCommands.Flush),
        new("FUNCTION", -2, None, 0, 0, 0, "scripting", "A container for function commands (FLUSH is a no-op).", ServerCommands.Function),
        new("TIME", 1, Fast, 0, 0, 0, "server", "Returns the server time.", ServerCommands.Time),
        new("CLUSTER", -2, None, 0, 0, 0, "cluster", "Cluster support is disabled.", ServerCommands.Cluster),
        new("ROLE", 1, Fast, 0, 0, 0, "server", "Returns the replication role.", ServerCommands.Role),

        // Keys
        new("DEL", -2, Write, 1, -1, 1, "keyspace", "Deletes one or more keys.", KeyCommands.Del),
        new("UNLINK", -2, Write | Fast, 1, -1, 1, "keyspace", "Deletes one or more keys.", KeyCommands.Del),
        new("EXISTS", -2, ReadOnly | Fast, 1, -1, 1, "keyspace", "Determines whether one or more keys exist.", KeyCommands.Exists),
        new("TYPE", 2, ReadOnly | Fast, 1, 1, 1, "keyspace", "Determines the type of value stored at a key.", KeyCommands.Type),
        new("EXPIRE", -3, Write | Fast, 1, 1, 1, "keyspace", "Sets the expiration time of a key in seconds.", KeyCommands.Expire),
        new("PEXPIRE", -3, Write | Fast, 1, 1, 1, "keyspace", "Sets the expiration time of a key in milliseconds.", KeyCommands.PExpire),
        new("EXPIREAT", -3, Write | Fast, 1, 1, 1, "keyspace", "Sets the expiration time of a key to a Unix timestamp.", KeyCommands.ExpireAt),
        new("PEXPIREAT", -3, Write | Fast, 1, 1, 1, "keyspace", "Sets the expiration time of a key to a Unix milliseconds timestamp.", KeyCommands.PExpireAt),
        new("EXPIRETIME", 2, ReadOnly | Fast, 1, 1, 1, "keyspace", "Returns the expiration time of a key as a Unix timestamp.", KeyCommands.ExpireTime),
        new("PEXPIRETIME", 2, ReadOnly | Fast, 1, 1, 1, "keyspace", "Returns the expiration time of a key as a Unix milliseconds timestamp.", KeyCommands.PExpireTime),
        new("TTL", 2, ReadOnly | Fast, 1, 1, 1, "keyspace", "Returns the expiration time in seconds of a key.", KeyCommands.Ttl),
        new("PTTL", 2, ReadOnly | Fast, 1, 1, 1, "keyspace", "Returns the expiration time in milliseconds of a key.", KeyCommands.PTtl),
        new("PERSIST", 2, Write | Fast, 1, 1, 1, "keyspace", "Removes the expiration time of a key.", KeyCommands.Persist),
        new("RENAME", 3, Write | StoresKey, 1, 2, 1, "keyspace", "Renames a key and overwrites the destination.", KeyCommands.Rename),
        new("RENAMENX", 3, Write | Fast | StoresKey, 1, 2, 1, "keyspace", "Renames a key only when the target key name doesn't exist.", KeyCommands.RenameNx),
        new("KEYS", 2, ReadOnly, 0, 0, 0, "keyspace", "Returns all key names that match a pattern.", KeyCommands.Keys),
        new("SCAN", -2, ReadOnly, 0, 0, 0, "keyspace", "Iterates over the key names in the database.", KeyCommands.Scan),
        new("RANDOMKEY", 1, ReadOnly, 0, 0, 0, "keyspace", "Returns a random key name from the database.", KeyCommands.RandomKey),
        new("OBJECT", -2, ReadOnly, 2, 2, 1, "keyspace", "A container for object introspection commands.", KeyCommands.Object),

        // Strings
        new("GET", 2, ReadOnly | Fast, 1, 1, 1, "string", "Returns the string value of a key.", StringCommands.Get),
        new("SET", -3, Write | DenyOom, 1, 1, 1, "string", "Sets the string value of a key.", StringCommands.Set),
        new("SETEX", 4, Write | DenyOom, 1, 1, 1, "string", "Sets the value and expiration time of a key in seconds.", StringCommands.SetEx),
        new("PSETEX", 4, Write | DenyOom, 1, 1, 1, "string", "Sets the value and expiration time of a key in milliseconds.", StringCommands.PSetEx),
        new("SETNX", 3, Write | DenyOom | Fast, 1, 1, 1, "string", "Set the string value of a key only when the key doesn't exist.", StringCommands.SetNx),
        new("GETSET", 3, Write | DenyOom | Fast, 1, 1, 1, "string", "Returns the previous value of a key after setting it.", StringCommands.GetSet),
        new("GETDEL", 2, Write | Fast, 1, 1, 1, "string", "Returns the string value of a key after deleting it.", StringCommands.GetDel),
        new("GETEX", -2, Write | Fast, 1, 1, 1, "string", "Returns the string value of a key after setting its expiration time.", StringCommands.GetEx),
        new("MGET", -2, ReadOnly | Fast, 1, -1, 1, "string", "Atomically returns the string values of one or more keys.", StringCommands.MGet),
        new("MSET", -3, Write | DenyOom, 1, -1, 2, "string", "Atomically creates or modifies the string values of one or more keys.", StringCommands.MSet),
        new("MSETNX", -3, Write | DenyOom, 1, -1, 2, "string", "Atomically sets several keys only when none of them exist.", StringCommands.MSetNx),
        new("INCR", 2, Write | DenyOom | Fast, 1, 1, 1, "string", "Increments the integer value of a key by one.", StringCommands.Incr),
        new("DECR", 2, Write | DenyOom | Fast, 1, 1, 1, "string", "Decrements the integer value of a key by one.", StringCommands.Decr),
        new("INCRBY", 3, Write | DenyOom | Fast, 1, 1, 1, "string", "Increments the integer value of a key by a number.", StringCommands.IncrByCommand),
        new("DECRBY", 3, Write | DenyOom | Fast, 1, 1, 1, "string", "Decrements a number from the integer value of a key.", StringCommands.DecrByCommand),
        new("INCRBYFLOAT", 3, Write | DenyOom | Fast, 1, 1, 1, "string", "Increment the floating point value of a key by a number.", StringCommands.IncrByFloat),
        new("APPEND", 3, Write | DenyOom | Fast, 1, 1, 1, "string", "Appends a string to the value of a key.", StringCommands.Append),
        new("STRLEN", 2, ReadOnly | Fast, 1, 1, 1, "string", "Returns the length of a string value.", StringCommands.StrLen),
        new("GETRANGE", 4, ReadOnly, 1, 1, 1, "string", "Returns a substring of the string stored at a key.", StringCommands.GetRange),
        new("SETRANGE", 4, Write | DenyOom, 1, 1, 1, "string", "Overwrites a part of a string value with another by an offset.", StringCommands.SetRange),

        // Hashes
        new("HSET", -4, Write | DenyOom | Fast, 1, 1, 1, "hash", "Creates or modifies the value of a field in a hash.", HashCommands.HSet),
        new("HMSET", -4, Write | DenyOom | Fast, 1, 1, 1, "hash", "Sets the values of multiple fields.", HashCommands.HMSet),
        new("HSETNX", 4, Write | DenyOom | Fast, 1, 1, 1, "hash", "Sets the value of a field in a hash only when the field doesn't exist.", HashCommands.HSetNx),
        new("HGET", 3, ReadOnly | Fast, 1, 1, 1, "hash", "Returns the value of a field in a hash.", HashCommands.HGet),
        new("HMGET", -3, ReadOnly | Fast, 1, 1, 1, "hash", "Returns the values of all fields in a hash.", HashCommands.HMGet),
        new("HGETALL", 2, ReadOnly, 1, 1, 1, "hash", "Returns all fields and values in a hash.", HashCommands.HGetAll),
        new("HDEL", -3, Write | Fast, 1, 1, 1, "hash", "Deletes one or more fields and their values from a hash.", HashCommands.HDel),
        new("HEXISTS", 3, ReadOnly | Fast, 1, 1, 1, "hash", "Determines whether a field exists in a hash.", HashCommands.HExists),
        new("HLEN", 2, ReadOnly | Fast, 1, 1, 1, "hash", "Returns the number of fields in a hash.", HashCommands.HLen),
        new("HSTRLEN", 3, ReadOnly | Fast, 1, 1, 1, "hash", "Returns the length of the value of a field.", HashCommands.HStrLen),
        new("HINCRBY", 4, Write | DenyOom | Fast, 1, 1, 1, "hash", "Increments the integer value of a field in a hash by a number.", HashCommands.HIncrBy),
        new("HINCRBYFLOAT", 4, Write | DenyOom | Fast, 1, 1, 1, "hash", "Increments the floating point value of a field by a number.", HashCommands.HIncrByFloat),
        new("HKEYS", 2, ReadOnly, 1, 1, 1, "hash", "Returns all fields in a hash.", HashCommands.HKeys),
        new("HVALS", 2, ReadOnly, 1, 1, 1, "hash", "Returns all values in a hash.", HashCommands.HVals),

        // Pub/sub
        new("SUBSCRIBE", -2, PubSub | PubSubContext, 0, 0, 0, "pubsub", "Listens for messages published to channels.", PubSubCommands.Subscribe),
        new("UNSUBSCRIBE", -1, PubSub | PubSubContext, 0, 0, 0, "pubsub", "Stops listening to messages posted to channels.", PubSubCommands.Unsubscribe),
        new("PSUBSCRIBE", -2, PubSub | PubSubContext, 0, 0, 0, "pubsub", "Listens for messages published to channels that match patterns.", PubSubCommands.PSubscribe),
        new("PUNSUBSCRIBE", -1, PubSub | PubSubContext, 0, 0, 0, "pubsub", "Stops listening to messages published to channels that match patterns.", PubSubCommands.PUnsubscribe),
        new("PUBLISH", 3, PubSub | Fast, 0, 0, 0, "pubsub", "Posts a message to a channel.", PubSubCommands.Publish),
    ];

    private static readonly Dictionary<string, CommandSpec>.AlternateLookup<ReadOnlySpan<char>> ByName = BuildIndex();

    public static IReadOnlyList<CommandSpec> All => Specs;

    public static CommandSpec? Find(ReadOnlySpan<byte> name)
    {
        if (name.Length is 0 or > MaxNameLength)
        {
            return null;
        }

        Span<char> chars = stackalloc char[name.Length];
        for (var i = 0; i < name.Length; i++)
        {
            chars[i] = (char)name[i];
        }

        return ByName.TryGetValue(chars, out var spec) ? spec : null;
    }

    private static Dictionary<string, CommandSpec>.AlternateLookup<ReadOnlySpan<char>> BuildIndex()
    {
        var map = new Dictionary<string, CommandSpec>(StringComparer.OrdinalIgnoreCase);
        for (var i = 0; i < Specs.Length; i++)
        {
            Specs[i].Id = i;
            map.Add(Specs[i].Name, Specs[i]);
        }

        return map.GetAlternateLookup<ReadOnlySpan<char>>();
    }
}
