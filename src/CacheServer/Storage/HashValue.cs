using System.Diagnostics.CodeAnalysis;
using Infra.Core.Placement;

namespace Infra.CacheServer.Storage;

/// <summary>Compares byte arrays by content, and looks them up by span without allocating.</summary>
internal sealed class ByteArrayComparer : IEqualityComparer<byte[]>, IAlternateEqualityComparer<ReadOnlySpan<byte>, byte[]>
{
    public static readonly ByteArrayComparer Instance = new();

    public bool Equals(byte[]? x, byte[]? y) => x is null ? y is null : y is not null && x.AsSpan().SequenceEqual(y);

    public int GetHashCode([DisallowNull] byte[] obj) => GetHashCode((ReadOnlySpan<byte>)obj);

    public bool Equals(ReadOnlySpan<byte> alternate, byte[] other) => alternate.SequenceEqual(other);

    public int GetHashCode(ReadOnlySpan<byte> alternate) => (int)XxHash64.Hash(alternate);

    public byte[] Create(ReadOnlySpan<byte> alternate) => alternate.ToArray();
}

/// <summary>
/// A hash value (field → value). Insertion order is kept while no field is deleted, as Redis's
/// small hashes do. Its memory cost is tracked as fields change.
/// </summary>
internal sealed class HashValue
{
    // A field costs its bytes plus two array headers and a dictionary slot (measured: ~88 bytes).
    public const int FieldOverhead = 88;
    private const int BaseOverhead = 128;

    public HashValue()
    {
        Fields = new Dictionary<byte[], byte[]>(ByteArrayComparer.Instance);
        Lookup = Fields.GetAlternateLookup<ReadOnlySpan<byte>>();
    }

    public Dictionary<byte[], byte[]> Fields { get; }

    public Dictionary<byte[], byte[]>.AlternateLookup<ReadOnlySpan<byte>> Lookup { get; }

    public long MemoryCost { get; private set; } = BaseOverhead;

    public int Count => Fields.Count;

    public bool TryGet(ReadOnlySpan<byte> field, [MaybeNullWhen(false)] out byte[] value) => Lookup.TryGetValue(field, out value);

    /// <summary>Sets a field; true when it was new.</summary>
    public bool Set(ReadOnlySpan<byte> field, ReadOnlySpan<byte> value)
    {
        if (Lookup.TryGetValue(field, out var key, out var old))
        {
            Fields[key] = value.ToArray();
            MemoryCost += value.Length - old.Length;
            return false;
        }

        Fields[field.ToArray()] = value.ToArray();
        MemoryCost += FieldOverhead + field.Length + value.Length;
        return true;
    }

    public bool Remove(ReadOnlySpan<byte> field)
    {
        if (!Lookup.Remove(field, out var key, out var value))
        {
            return false;
        }

        MemoryCost -= FieldOverhead + key.Length + value.Length;
        return true;
    }

    /// <summary>Redis's encoding name: small hashes are "listpack", the rest "hashtable".</summary>
    public string Encoding => Count <= 128 && Fields.All(f => f.Key.Length <= 64 && f.Value.Length <= 64) ? "listpack" : "hashtable";
}
