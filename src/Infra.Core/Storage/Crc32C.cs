using System.Buffers.Binary;
using System.Numerics;

namespace Infra.Core.Storage;

/// <summary>
/// CRC-32C (Castagnoli), the checksum every stored record carries. Uses the CPU's CRC32 instruction
/// through <see cref="BitOperations.Crc32C(uint, ulong)"/> (software fallback elsewhere), 8 bytes a step.
/// </summary>
public static class Crc32C
{
    /// <summary>The checksum of <paramref name="data"/> (initial value and final xor 0xFFFFFFFF, as iSCSI/ext4).</summary>
    public static uint Compute(ReadOnlySpan<byte> data) => ~Append(uint.MaxValue, data);

    /// <summary>Continues a running (not yet inverted) CRC state over more bytes.</summary>
    public static uint Append(uint state, ReadOnlySpan<byte> data)
    {
        while (data.Length >= 8)
        {
            state = BitOperations.Crc32C(state, BinaryPrimitives.ReadUInt64LittleEndian(data));
            data = data[8..];
        }

        foreach (var b in data)
        {
            state = BitOperations.Crc32C(state, b);
        }

        return state;
    }
}
