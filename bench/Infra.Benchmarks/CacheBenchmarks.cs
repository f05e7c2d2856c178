using System.Text;
using BenchmarkDotNet.Attributes;
using Infra.CacheServer.Commands;
using Infra.CacheServer.Eviction;
using Infra.CacheServer.Resp;
using Infra.CacheServer.Storage;

namespace Infra.Benchmarks;

/// <summary>
/// The cache server's per-command work without sockets: parsing what redis-benchmark sends, and the
/// store's GET and SET paths exactly as the command handlers run them (hash, shard, lock, find,
/// reserve, store). None of it may allocate.
/// </summary>
[MemoryDiagnoser]
public class RespParserBenchmarks
{
    private readonly RespRequest _request = new();
    private byte[] _get = [];
    private byte[] _set = [];
    private byte[] _pipeline = [];
    private byte[] _inline = [];

    [GlobalSetup]
    public void Setup()
    {
        _get = Encoding.ASCII.GetBytes("*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000042\r\n");
        _set = Encoding.ASCII.GetBytes("*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000042\r\n$32\r\n" + new string('v', 32) + "\r\n");
        _pipeline = [.. Enumerable.Range(0, 16).SelectMany(_ => _set)];
        _inline = Encoding.ASCII.GetBytes("SET key:000000000042 " + new string('v', 32) + "\r\n");
    }

    [Benchmark(Baseline = true)]
    public int ParseGet() => Parse(_get);

    [Benchmark]
    public int ParseSet() => Parse(_set);

    [Benchmark(OperationsPerInvoke = 16)]
    public int ParsePipelineOf16Sets() => Parse(_pipeline);

    [Benchmark]
    public int ParseInlineSet() => Parse(_inline);

    private int Parse(ReadOnlySpan<byte> buffer)
    {
        var consumed = 0;
        var args = 0;
        while (consumed < buffer.Length)
        {
            if (RespParser.TryParse(buffer[consumed..], _request, RespLimits.Default, out var used, out _) != ParseStatus.Complete)
            {
                throw new InvalidOperationException("benchmark frame did not parse");
            }

            args += _request.Count;
            consumed += used;
        }

        return args;
    }
}

/// <summary>The store's GET and SET paths on a warm store of 100,000 keys (16-byte keys, 32-byte values).</summary>
[MemoryDiagnoser]
public class CacheStoreBenchmarks
{
    private const int Keys = 100_000;
    private readonly byte[] _value = Encoding.ASCII.GetBytes(new string('v', 32));
    private byte[][] _keys = [];
    private byte[][] _absent = [];
    private CacheStore _store = null!;
    private CacheStore _full = null!;
    private int _next;

    [Params("allkeys-lru", "allkeys-lfu", "allkeys-adaptive")]
    public string Policy { get; set; } = "allkeys-lru";

    [GlobalSetup]
    public void Setup()
    {
        _keys = [.. Enumerable.Range(0, Keys).Select(i => Encoding.ASCII.GetBytes($"key:{i:D12}"))];
        _absent = [.. Enumerable.Range(0, Keys).Select(i => Encoding.ASCII.GetBytes($"nok:{i:D12}"))];
        if (!EvictionPolicies.TryParse(Policy, out var policy))
        {
            throw new InvalidOperationException($"unknown policy {Policy}");
        }

        _store = new CacheStore(16, 0, policy, TimeProvider.System, activeExpiry: false);
        foreach (var key in _keys)
        {
            Set(_store, key);
        }

        // A store a quarter the size of the key set: every SET of a new key evicts one.
        _full = new CacheStore(16, Keys / 4 * 112, policy, TimeProvider.System, activeExpiry: false);
        foreach (var key in _keys)
        {
            Set(_full, key);
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _store.Dispose();
        _full.Dispose();
    }

    [Benchmark(Baseline = true)]
    public int GetHit() => Get(_store, NextKey(_keys));

    [Benchmark]
    public int GetMiss() => Get(_store, NextKey(_absent));

    [Benchmark]
    public int SetOverwrite() => Set(_store, NextKey(_keys));

    [Benchmark]
    public int SetWithEviction() => Set(_full, NextKey(_keys));

    private byte[] NextKey(byte[][] keys)
    {
        var next = _next + 7919;
        _next = next >= Keys ? next - Keys : next;
        return keys[_next];
    }

    // As StringCommands.Get does it, minus the reply.
    private static int Get(CacheStore store, ReadOnlySpan<byte> key)
    {
        var hash = store.HashOf(key);
        var shard = store.ShardFor(hash);
        lock (shard.Lock)
        {
            var index = shard.Find(key, hash, store.NowMs, Lookup.Read);
            return index < 0 ? -1 : shard.StringOf(index).Length;
        }
    }

    // As StringCommands.SetString does it for a plain SET, minus the reply.
    private int Set(CacheStore store, ReadOnlySpan<byte> key)
    {
        var hash = store.HashOf(key);
        var shard = store.ShardFor(hash);
        var now = store.NowMs;
        lock (shard.Lock)
        {
            var index = shard.Find(key, hash, now, Lookup.Write);
            if (!shard.Reserve(StringCommands.ExtraCost(shard, index, key.Length, _value.Length), index))
            {
                return -1;
            }

            return StringCommands.Store(shard, index, key, hash, _value, 0, keepTtl: false, now);
        }
    }
}
