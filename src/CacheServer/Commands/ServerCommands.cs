using System.Diagnostics;
using System.Globalization;
using System.Text;
using Infra.CacheServer.Eviction;
using Infra.Core.Configuration;

namespace Infra.CacheServer.Commands;

/// <summary>Server commands: COMMAND, INFO, CONFIG, DBSIZE, FLUSHDB/FLUSHALL, FUNCTION FLUSH, TIME, CLUSTER, ROLE.</summary>
internal static class ServerCommands
{
    public static void DbSize(ref CommandContext c) => c.Reply.Integer(c.Store.Stats().Keys);

    /// <summary>FLUSHDB / FLUSHALL [ASYNC|SYNC]: there is one database, so both empty it.</summary>
    public static void Flush(ref CommandContext c)
    {
        if (c.Count > 2 || (c.Count == 2 && !c.Is(1, "ASYNC"u8) && !c.Is(1, "SYNC"u8)))
        {
            c.Reply.Error(Errors.Syntax);
            return;
        }

        c.Store.FlushAll();
        c.Reply.Ok();
    }

    /// <summary>FUNCTION FLUSH [ASYNC|SYNC] is accepted (there are no functions to flush); others are refused.</summary>
    public static void Function(ref CommandContext c)
    {
        if (c.Is(1, "FLUSH"u8) && (c.Count == 2 || (c.Count == 3 && (c.Is(2, "ASYNC"u8) || c.Is(2, "SYNC"u8)))))
        {
            c.Reply.Ok();
        }
        else if (c.Is(1, "LIST"u8))
        {
            c.Reply.ArrayHeader(0);
        }
        else
        {
            c.Reply.Error(Errors.UnknownSubcommand("function", c.Text(1)));
        }
    }

    public static void Time(ref CommandContext c)
    {
        var now = c.Store.Time.GetUtcNow();
        var micros = (now.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks) / 10;
        c.Reply.ArrayHeader(2);
        c.Reply.BulkNumber(micros / 1_000_000);
        c.Reply.BulkNumber(micros % 1_000_000);
    }

    public static void Cluster(ref CommandContext c) => c.Reply.Error(Errors.ClusterDisabled);

    public static void Role(ref CommandContext c)
    {
        c.Reply.ArrayHeader(3);
        c.Reply.Bulk("master"u8);
        c.Reply.Integer(0);
        c.Reply.ArrayHeader(0);
    }

    // ---- COMMAND ------------------------------------------------------------------------------------

    /// <summary>COMMAND, COMMAND COUNT|INFO|DOCS|LIST: enough for redis-cli's hints and for clients.</summary>
    public static void Command(ref CommandContext c)
    {
        if (c.Count == 1)
        {
            c.Reply.ArrayHeader(CommandTable.All.Count);
            foreach (var spec in CommandTable.All)
            {
                WriteInfo(ref c, spec);
            }
        }
        else if (c.Is(1, "COUNT"u8))
        {
            if (c.SubcommandArity("command|count", 2))
            {
                c.Reply.Integer(CommandTable.All.Count);
            }
        }
        else if (c.Is(1, "LIST"u8))
        {
            c.Reply.ArrayHeader(CommandTable.All.Count);
            foreach (var spec in CommandTable.All)
            {
                c.Reply.Bulk(spec.LowerName);
            }
        }
        else if (c.Is(1, "INFO"u8))
        {
            var specs = Requested(ref c);
            c.Reply.ArrayHeader(specs.Count);
            foreach (var spec in specs)
            {
                if (spec is null)
                {
                    c.Reply.NullArray();
                }
                else
                {
                    WriteInfo(ref c, spec);
                }
            }
        }
        else if (c.Is(1, "DOCS"u8))
        {
            var specs = Requested(ref c).OfType<CommandSpec>().ToList();
            c.Reply.MapHeader(specs.Count);
            foreach (var spec in specs)
            {
                c.Reply.Bulk(spec.LowerName);
                c.Reply.MapHeader(3);
                c.Reply.Bulk("summary"u8);
                c.Reply.Bulk(spec.Summary);
                c.Reply.Bulk("since"u8);
                c.Reply.Bulk("1.0.0"u8);
                c.Reply.Bulk("group"u8);
                c.Reply.Bulk(spec.Group);
            }
        }
        else
        {
            c.Reply.Error(Errors.UnknownSubcommand("command", c.Text(1)));
        }
    }

    /// <summary>The commands named from argument 2 on (all of them when none is named); null for unknown names.</summary>
    private static List<CommandSpec?> Requested(ref CommandContext c)
    {
        if (c.Count == 2)
        {
            return [.. CommandTable.All];
        }

        var specs = new List<CommandSpec?>();
        for (var i = 2; i < c.Count; i++)
        {
            specs.Add(CommandTable.Find(c.Arg(i)));
        }

        return specs;
    }

    private static void WriteInfo(ref CommandContext c, CommandSpec spec)
    {
        c.Reply.ArrayHeader(10);
        c.Reply.Bulk(spec.LowerName);
        c.Reply.Integer(spec.Arity);
        var flags = FlagNames(spec.Flags);
        c.Reply.SetHeader(flags.Count);
        foreach (var flag in flags)
        {
            c.Reply.SimpleString(flag);
        }

        c.Reply.Integer(spec.FirstKey);
        c.Reply.Integer(spec.LastKey);
        c.Reply.Integer(spec.Step);
        c.Reply.SetHeader(1);
        c.Reply.SimpleString("@" + spec.Group);
        c.Reply.ArrayHeader(0);
        c.Reply.ArrayHeader(0);
        c.Reply.ArrayHeader(0);
    }

    private static List<string> FlagNames(CommandFlags flags)
    {
        var names = new List<string>();
        if ((flags & CommandFlags.Write) != 0)
        {
            names.Add("write");
        }

        if ((flags & CommandFlags.ReadOnly) != 0)
        {
            names.Add("readonly");
        }

        if ((flags & CommandFlags.DenyOom) != 0)
        {
            names.Add("denyoom");
        }

        if ((flags & CommandFlags.Admin) != 0)
        {
            names.Add("admin");
        }

        if ((flags & CommandFlags.PubSub) != 0)
        {
            names.Add("pubsub");
        }

        if ((flags & CommandFlags.NoAuth) != 0)
        {
            names.Add("no_auth");
        }

        if ((flags & CommandFlags.Fast) != 0)
        {
            names.Add("fast");
        }

        return names;
    }

    // ---- INFO ---------------------------------------------------------------------------------------

    private static readonly string[] DefaultSections = ["server", "clients", "memory", "persistence", "stats", "replication", "cpu", "keyspace"];

    /// <summary>INFO [section ...]: Redis's sections and field names, as clients parse them.</summary>
    public static void Info(ref CommandContext c)
    {
        var sections = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        for (var i = 1; i < c.Count; i++)
        {
            sections.Add(c.Text(i));
        }

        if (sections.Count == 0 || sections.Contains("default") || sections.Contains("all") || sections.Contains("everything"))
        {
            sections.UnionWith(DefaultSections);
        }

        if (sections.Contains("all") || sections.Contains("everything"))
        {
            sections.Add("commandstats"); // not in the default sections (as Redis)
        }

        var text = new StringBuilder();
        var stats = c.Store.Stats();
        var server = c.Server;
        var uptime = (c.Now - server.StartedMs) / 1000;
        using var process = Process.GetCurrentProcess();
        void Section(string name, params (string Key, object Value)[] fields)
        {
            if (!sections.Contains(name))
            {
                return;
            }

            if (text.Length > 0)
            {
                text.Append("\r\n");
            }

            text.Append("# ").Append(char.ToUpperInvariant(name[0])).Append(name.AsSpan(1)).Append("\r\n");
            foreach (var (key, value) in fields)
            {
                text.Append(key).Append(':').Append(Convert.ToString(value, CultureInfo.InvariantCulture)).Append("\r\n");
            }
        }

        Section("server",
            ("redis_version", ConnectionCommands.ServerVersion),
            ("redis_mode", "standalone"),
            ("server_name", "infra-cache"),
            ("os", Environment.OSVersion.VersionString),
            ("arch_bits", Environment.Is64BitProcess ? 64 : 32),
            ("process_id", Environment.ProcessId),
            ("run_id", server.RunId),
            ("tcp_port", server.Port),
            ("uptime_in_seconds", uptime),
            ("uptime_in_days", uptime / 86400),
            ("executable", Environment.ProcessPath ?? string.Empty),
            ("shards", c.Store.ShardCount));
        Section("clients",
            ("connected_clients", server.Sessions.Count),
            ("maxclients", server.Options.MaxClients),
            ("blocked_clients", 0),
            ("pubsub_clients", server.Sessions.Values.Count(s => s.InSubscribeMode)));
        Section("memory",
            ("used_memory", stats.UsedMemory),
            ("used_memory_human", Human(stats.UsedMemory)),
            ("used_memory_rss", process.WorkingSet64),
            ("used_memory_rss_human", Human(process.WorkingSet64)),
            ("used_memory_dataset_reserved", c.Store.ReservedBytes()),
            ("slab_pages_moved", c.Store.SlabPagesMoved()),
            ("maxmemory", c.Store.MaxMemory),
            ("maxmemory_human", Human(c.Store.MaxMemory)),
            ("maxmemory_policy", EvictionPolicies.Name(c.Store.Policy)),
            ("mem_allocator", "slab"));
        Section("persistence",
            ("loading", 0),
            ("rdb_changes_since_last_save", 0),
            ("aof_enabled", 0));
        Section("stats",
            ("total_connections_received", server.TotalConnections),
            ("total_commands_processed", server.TotalCommands),
            ("rejected_connections", server.RejectedConnections),
            ("expired_keys", stats.Expired),
            ("evicted_keys", stats.Evicted),
            ("keyspace_hits", stats.Hits),
            ("keyspace_misses", stats.Misses),
            ("pubsub_channels", server.PubSub.ChannelCount),
            ("pubsub_patterns", server.PubSub.PatternCount));
        Section("replication",
            ("role", "master"),
            ("connected_slaves", 0),
            ("master_failover_state", "no-failover"),
            ("master_replid", server.RunId),
            ("master_repl_offset", 0));
        Section("cpu",
            ("used_cpu_sys", process.PrivilegedProcessorTime.TotalSeconds.ToString("0.000000", CultureInfo.InvariantCulture)),
            ("used_cpu_user", process.UserProcessorTime.TotalSeconds.ToString("0.000000", CultureInfo.InvariantCulture)));
        if (sections.Contains("commandstats"))
        {
            var metrics = server.Metrics;
            Section("commandstats", [.. CommandTable.All
                .Select(spec => (spec, calls: metrics.CommandCount(spec.Id)))
                .Where(x => x.calls > 0)
                .Select(x => ($"cmdstat_{x.spec.LowerName}", (object)$"calls={x.calls}"))]);
        }

        if (sections.Contains("keyspace"))
        {
            Section("keyspace", stats.Keys > 0 ? [("db0", $"keys={stats.Keys},expires={stats.Expires},avg_ttl=0")] : []);
        }

        text.Append("\r\n");
        c.Reply.Verbatim(text.ToString());
    }

    private static string Human(long bytes) => bytes switch
    {
        < 1024 => $"{bytes}B",
        < 1024 * 1024 => string.Create(CultureInfo.InvariantCulture, $"{bytes / 1024.0:0.00}K"),
        < 1024L * 1024 * 1024 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (1024.0 * 1024):0.00}M"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{bytes / (1024.0 * 1024 * 1024):0.00}G"),
    };

    // ---- CONFIG ---------------------------------------------------------------------------------------

    /// <summary>CONFIG GET pattern [pattern ...] | SET name value [name value ...] | RESETSTAT | REWRITE.</summary>
    public static void Config(ref CommandContext c)
    {
        if (c.Is(1, "GET"u8) && c.Count >= 3)
        {
            var values = ConfigValues(c.Server);
            var matched = new SortedDictionary<string, string>(StringComparer.Ordinal);
            for (var i = 2; i < c.Count; i++)
            {
                var pattern = c.Arg(i).ToArray();
                foreach (var (name, value) in values)
                {
                    if (GlobMatcher.IsMatch(pattern, Encoding.ASCII.GetBytes(name), ignoreCase: true))
                    {
                        matched[name] = value;
                    }
                }
            }

            c.Reply.MapHeader(matched.Count);
            foreach (var (name, value) in matched)
            {
                c.Reply.Bulk(name);
                c.Reply.Bulk(value);
            }
        }
        else if (c.Is(1, "SET"u8) && c.Count >= 4 && c.Count % 2 == 0)
        {
            ConfigSet(ref c);
        }
        else if (c.Is(1, "RESETSTAT"u8))
        {
            if (!c.SubcommandArity("config|resetstat", 2))
            {
                return;
            }

            foreach (var shard in c.Store.Shards)
            {
                lock (shard.Lock)
                {
                    shard.ResetStats();
                }
            }

            c.Reply.Ok();
        }
        else if (c.Is(1, "REWRITE"u8))
        {
            c.Reply.Error("ERR The server is running without a config file");
        }
        else if (c.Is(1, "GET"u8) || c.Is(1, "SET"u8))
        {
            c.Reply.Error(Errors.Arity("config|" + c.Text(1).ToLowerInvariant()));
        }
        else
        {
            c.Reply.Error(Errors.UnknownSubcommand("config", c.Text(1)));
        }
    }

    private static void ConfigSet(ref CommandContext c)
    {
        var store = c.Store;
        var maxMemory = store.MaxMemory;
        var policy = store.Policy;
        string? password = c.Server.Config.RequirePass;
        var passwordChanged = false;
        for (var i = 2; i < c.Count; i += 2)
        {
            var name = c.Text(i).ToLowerInvariant();
            var value = c.Text(i + 1);
            switch (name)
            {
                case "maxmemory":
                    if (!OptionValues.TryParseSize(value, out maxMemory) || (maxMemory > 0 && maxMemory < store.ShardCount * 1024L))
                    {
                        c.Reply.Error($"ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument couldn't be parsed into an integer");
                        return;
                    }

                    break;
                case "maxmemory-policy":
                    if (!EvictionPolicies.TryParse(value, out policy))
                    {
                        c.Reply.Error($"ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy') - argument(s) must be one of the following: {string.Join(", ", EvictionPolicies.All)}");
                        return;
                    }

                    break;
                case "requirepass":
                    password = value;
                    passwordChanged = true;
                    break;
                default:
                    c.Reply.Error($"ERR Unknown option or number of arguments for CONFIG SET - '{Errors.Truncate(name)}'");
                    return;
            }
        }

        store.Configure(maxMemory, policy);
        if (passwordChanged)
        {
            c.Server.Config.RequirePass = password;
        }

        c.Reply.Ok();
    }

    private static List<(string Name, string Value)> ConfigValues(CacheServerState server) =>
    [
        ("maxmemory", server.Store.MaxMemory.ToString(CultureInfo.InvariantCulture)),
        ("maxmemory-policy", EvictionPolicies.Name(server.Store.Policy)),
        ("maxmemory-samples", "5"),
        ("requirepass", server.Config.RequirePass ?? string.Empty),
        ("maxclients", server.Options.MaxClients.ToString(CultureInfo.InvariantCulture)),
        ("timeout", ((long)server.Options.Timeout.TotalSeconds).ToString(CultureInfo.InvariantCulture)),
        ("proto-max-bulk-len", server.Options.MaxBulkLength.ToString(CultureInfo.InvariantCulture)),
        ("client-query-buffer-limit", server.Options.MaxQueryBuffer.ToString(CultureInfo.InvariantCulture)),
        ("databases", "1"),
        ("save", string.Empty),
        ("appendonly", "no"),
        ("port", server.Port.ToString(CultureInfo.InvariantCulture)),
        ("bind", server.Options.Listen.Address.ToString()),
        ("cluster-enabled", "no"),
        ("replica-read-only", "yes"),
        ("slave-read-only", "yes"),
        ("lfu-log-factor", "10"),
        ("lfu-decay-time", "1"),
        ("hz", "10"),
    ];
}
