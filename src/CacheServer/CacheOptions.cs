using System.Net;
using System.Numerics;
using Infra.CacheServer.Eviction;
using Infra.CacheServer.Resp;
using Infra.Core.Configuration;

namespace Infra.CacheServer;

/// <summary>Settings of the cache server. Names follow redis.conf where Redis has one.</summary>
internal sealed class CacheOptions : ServiceOptions
{
    public IPEndPoint Listen { get; set; } = new(IPAddress.Loopback, 6379);

    public IPEndPoint Admin { get; set; } = new(IPAddress.Loopback, 6380);

    public string? AdminToken { get; set; }

    /// <summary>Bytes of data the server may hold (0 = no limit), all shards together (each is sized for an equal share).</summary>
    public long MaxMemory { get; set; }

    public EvictionPolicyKind MaxMemoryPolicy { get; set; } = EvictionPolicyKind.AllKeysLru;

    /// <summary>Lock-independent parts of the keyspace: a power of two, by default ≥ 4 × cores.</summary>
    public int Shards { get; set; } = DefaultShards();

    public string? RequirePass { get; set; }

    public int MaxClients { get; set; } = 10_000;

    public long MaxBulkLength { get; set; } = RespLimits.Default.MaxBulkLength;

    public int MaxMultibulkLength { get; set; } = RespLimits.Default.MaxMultibulkLength;

    public int MaxInlineLength { get; set; } = RespLimits.Default.MaxInlineLength;

    /// <summary>Most unparsed bytes a client may have buffered (Redis's client-query-buffer-limit).</summary>
    public long MaxQueryBuffer { get; set; } = 1L << 30;

    /// <summary>Close a client idle this long (0 = never, as Redis's default).</summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.Zero;

    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(10);

    public RespLimits Limits => new(MaxBulkLength, MaxMultibulkLength, MaxInlineLength);

    public static int DefaultShards() => (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(4, 4 * Environment.ProcessorCount));

    public override void Bind(ConfigReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        Listen = reader.ListenEndPoint("Listen", "127.0.0.1:6379");
        Admin = reader.ListenEndPoint("Admin", "127.0.0.1:6380");
        AdminToken = reader.Text("AdminToken", null) is { Length: > 0 } token ? token : null;
        MaxMemory = reader.Size("MaxMemory", 0, 0, long.MaxValue / 4);
        if (reader.Text("MaxMemoryPolicy", null) is { } policy)
        {
            if (EvictionPolicies.TryParse(policy, out var parsed))
            {
                MaxMemoryPolicy = parsed;
            }
            else
            {
                reader.Problems.Add($"MaxMemoryPolicy: '{policy}' is not one of {string.Join(", ", EvictionPolicies.All)}");
            }
        }

        Shards = reader.Number("Shards", Shards, 1, 1 << 16);
        RequirePass = reader.Text("RequirePass", null) is { Length: > 0 } pass ? pass : null;
        MaxClients = reader.Number("MaxClients", MaxClients, 1, 1_000_000);
        MaxBulkLength = reader.Size("MaxBulkLength", MaxBulkLength, 1, int.MaxValue - 64);
        MaxMultibulkLength = reader.Number("MaxMultibulkLength", MaxMultibulkLength, 1, int.MaxValue);
        MaxInlineLength = (int)reader.Size("MaxInlineLength", MaxInlineLength, 64, 1 << 30);
        MaxQueryBuffer = reader.Size("MaxQueryBuffer", MaxQueryBuffer, 1024, 1L << 40);
        Timeout = reader.Duration("Timeout", Timeout, TimeSpan.Zero, TimeSpan.FromDays(365));
        ShutdownTimeout = reader.Duration("ShutdownTimeout", ShutdownTimeout, TimeSpan.Zero, TimeSpan.FromHours(1));
    }

    protected override IEnumerable<string> CheckConsistency()
    {
        if (!BitOperations.IsPow2(Shards))
        {
            yield return $"Shards: {Shards} is not a power of two";
        }

        if (MaxMemory > 0 && MaxMemory < Shards * 1024L)
        {
            yield return $"MaxMemory: {MaxMemory} bytes is under 1 KiB per shard ({Shards} shards)";
        }

        if (Listen.Port != 0 && Listen.Equals(Admin))
        {
            yield return $"Admin: {Admin} is the same endpoint as Listen";
        }
    }
}
