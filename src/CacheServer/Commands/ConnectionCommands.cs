using System.Security.Cryptography;
using System.Text;

namespace Infra.CacheServer.Commands;

/// <summary>Connection commands: PING, ECHO, QUIT, SELECT, AUTH, HELLO, CLIENT, RESET.</summary>
internal static class ConnectionCommands
{
    /// <summary>The version clients see; StackExchange.Redis and redis-cli pick features by it.</summary>
    public const string ServerVersion = "7.2.0";

    public static void Ping(ref CommandContext c)
    {
        if (c.Count > 2)
        {
            c.Reply.Error(Errors.Arity("ping"));
        }
        else if (c.Session.InSubscribeMode && !c.Reply.IsResp3)
        {
            c.Reply.ArrayHeader(2);
            c.Reply.Bulk("pong"u8);
            c.Reply.Bulk(c.Count > 1 ? c.Arg(1) : []);
        }
        else if (c.Count > 1)
        {
            c.Reply.Bulk(c.Arg(1));
        }
        else
        {
            c.Reply.Pong();
        }
    }

    public static void Echo(ref CommandContext c) => c.Reply.Bulk(c.Arg(1));

    public static void Quit(ref CommandContext c)
    {
        c.Reply.Ok();
        c.Session.CloseRequested = true;
    }

    public static void Select(ref CommandContext c)
    {
        if (!c.TryLong(1, out var db))
        {
            c.Reply.Error("ERR value is not an integer or out of range");
            return;
        }

        if (db != 0)
        {
            c.Reply.Error(Errors.DbIndex);
            return;
        }

        c.Reply.Ok();
    }

    /// <summary>AUTH [username] password (the only user is "default").</summary>
    public static void Auth(ref CommandContext c)
    {
        if (c.Count > 3)
        {
            c.Reply.Error(Errors.Syntax);
            return;
        }

        var password = c.Server.Config.RequirePass;
        if (password is null && c.Count == 2)
        {
            c.Reply.Error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
            return;
        }

        var user = c.Count == 3 ? c.Arg(1) : "default"u8;
        if (TryAuthenticate(ref c, user, c.Arg(c.Count - 1)))
        {
            c.Reply.Ok();
        }
        else
        {
            c.Reply.Error(Errors.WrongPass);
        }
    }

    /// <summary>HELLO [protover [AUTH username password] [SETNAME clientname]]: switches protocol, describes the server.</summary>
    public static void Hello(ref CommandContext c)
    {
        var protocol = c.Reply.Protocol;
        var next = 1;
        if (c.Count > 1)
        {
            if (!c.TryLong(1, out var requested))
            {
                c.Reply.Error("ERR Protocol version is not an integer or out of range");
                return;
            }

            if (requested is < 2 or > 3)
            {
                c.Reply.Error("NOPROTO unsupported protocol version");
                return;
            }

            protocol = (int)requested;
            next = 2;
        }

        string? name = null;
        for (var i = next; i < c.Count; i++)
        {
            if (c.Is(i, "AUTH"u8) && i + 2 < c.Count)
            {
                if (!TryAuthenticate(ref c, c.Arg(i + 1), c.Arg(i + 2)))
                {
                    c.Reply.Error(Errors.WrongPass);
                    return;
                }

                i += 2;
            }
            else if (c.Is(i, "SETNAME"u8) && i + 1 < c.Count)
            {
                name = c.Text(++i);
                if (!ValidName(name))
                {
                    c.Reply.Error("ERR Client names cannot contain spaces, newlines or special characters.");
                    return;
                }
            }
            else
            {
                c.Reply.Error($"ERR Syntax error in HELLO option '{Errors.Truncate(c.Text(i))}'");
                return;
            }
        }

        if (!c.Session.Authenticated)
        {
            c.Reply.Error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
            return;
        }

        if (name is not null)
        {
            c.Session.Client.Name = name;
        }

        c.Reply.Protocol = protocol;
        c.Session.Client.Protocol = protocol;
        c.Reply.MapHeader(7);
        c.Reply.Bulk("server"u8);
        c.Reply.Bulk("redis"u8);
        c.Reply.Bulk("version"u8);
        c.Reply.Bulk(ServerVersion);
        c.Reply.Bulk("proto"u8);
        c.Reply.Integer(protocol);
        c.Reply.Bulk("id"u8);
        c.Reply.Integer(c.Session.Client.Id);
        c.Reply.Bulk("mode"u8);
        c.Reply.Bulk("standalone"u8);
        c.Reply.Bulk("role"u8);
        c.Reply.Bulk("master"u8);
        c.Reply.Bulk("modules"u8);
        c.Reply.ArrayHeader(0);
    }

    /// <summary>RESET: back to a fresh connection (RESP2, no name, no subscriptions, logged out if a password is set).</summary>
    public static void Reset(ref CommandContext c)
    {
        PubSubCommands.UnsubscribeAll(c.Session);
        c.Reply.Protocol = 2;
        c.Session.Client.Protocol = 2;
        c.Session.Client.Name = string.Empty;
        c.Session.Authenticated = c.Server.Config.RequirePass is null;
        c.Reply.SimpleString("RESET");
    }

    /// <summary>CLIENT SETNAME|GETNAME|ID|LIST|INFO|SETINFO|KILL|HELP.</summary>
    public static void Client(ref CommandContext c)
    {
        var client = c.Session.Client;
        if (c.Is(1, "SETNAME"u8))
        {
            if (!c.SubcommandArity("client|setname", 3))
            {
                return;
            }

            var name = c.Text(2);
            if (!ValidName(name))
            {
                c.Reply.Error("ERR Client names cannot contain spaces, newlines or special characters.");
                return;
            }

            client.Name = name;
            c.Reply.Ok();
        }
        else if (c.Is(1, "GETNAME"u8))
        {
            if (!c.SubcommandArity("client|getname", 2))
            {
                return;
            }

            if (client.Name.Length == 0)
            {
                c.Reply.Null();
            }
            else
            {
                c.Reply.Bulk(client.Name);
            }
        }
        else if (c.Is(1, "ID"u8))
        {
            if (c.SubcommandArity("client|id", 2))
            {
                c.Reply.Integer(client.Id);
            }
        }
        else if (c.Is(1, "INFO"u8))
        {
            if (c.SubcommandArity("client|info", 2))
            {
                client.Protocol = c.Reply.Protocol;
                c.Reply.Verbatim(client.Describe(c.Now) + "\n");
            }
        }
        else if (c.Is(1, "LIST"u8))
        {
            if (c.Count > 2)
            {
                c.Reply.Error(Errors.Syntax); // the TYPE and ID filters are not supported
                return;
            }

            var text = new StringBuilder();
            foreach (var session in c.Server.Sessions.Values.OrderBy(s => s.Client.Id))
            {
                text.Append(session.Client.Describe(c.Now)).Append('\n');
            }

            c.Reply.Verbatim(text.ToString());
        }
        else if (c.Is(1, "SETINFO"u8))
        {
            if (!c.SubcommandArity("client|setinfo", 4))
            {
                return;
            }

            if (c.Is(2, "LIB-NAME"u8))
            {
                client.LibraryName = c.Text(3);
            }
            else if (c.Is(2, "LIB-VER"u8))
            {
                client.LibraryVersion = c.Text(3);
            }
            else
            {
                c.Reply.Error($"ERR Unrecognized option '{Errors.Truncate(c.Text(2))}'");
                return;
            }

            c.Reply.Ok();
        }
        else if (c.Is(1, "KILL"u8))
        {
            if (!c.SubcommandArity("client|kill", 3, orMore: true))
            {
                return;
            }

            if (c.Count == 3)
            {
                // The old form, CLIENT KILL addr:port: OK or an error.
                var address = c.Text(2);
                var found = c.Server.Sessions.Values.FirstOrDefault(s => s.Client.Address?.ToString() == address);
                found?.Kill();
                if (found is null)
                {
                    c.Reply.Error("ERR No such client");
                }
                else
                {
                    c.Reply.Ok();
                }

                return;
            }

            if (c.Count != 4 || !c.Is(2, "ID"u8))
            {
                c.Reply.Error(Errors.Syntax); // of the filters, only ID is supported
                return;
            }

            if (!c.TryLong(3, out var id) || id <= 0)
            {
                c.Reply.Error("ERR client-id should be greater than 0");
                return;
            }

            // The filter form answers how many clients it killed.
            var killed = c.Server.Sessions.TryGetValue(id, out var target);
            target?.Kill();
            c.Reply.Integer(killed ? 1 : 0);
        }
        else if (c.Is(1, "HELP"u8))
        {
            string[] help = ["CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:", "GETNAME", "ID", "INFO", "KILL ID <id>", "LIST", "SETINFO <LIB-NAME|LIB-VER> <value>", "SETNAME <name>", "HELP"];
            c.Reply.ArrayHeader(help.Length);
            foreach (var line in help)
            {
                c.Reply.SimpleString(line);
            }
        }
        else
        {
            c.Reply.Error(Errors.UnknownSubcommand("client", c.Text(1)));
        }
    }

    private static bool TryAuthenticate(ref CommandContext c, ReadOnlySpan<byte> user, ReadOnlySpan<byte> password)
    {
        var expected = c.Server.Config.RequirePass;
        var ok = user.SequenceEqual("default"u8) && (expected is null
            || CryptographicOperations.FixedTimeEquals(password, Encoding.UTF8.GetBytes(expected)));
        if (ok)
        {
            c.Session.Authenticated = true;
        }

        return ok;
    }

    private static bool ValidName(string name) => name.All(ch => ch is > ' ' and <= '~');
}
