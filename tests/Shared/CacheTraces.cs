using System.Diagnostics;
using System.Globalization;
using System.IO.Compression;

namespace Infra.Testing;

/// <summary>
/// The shared cache traces (../shared/traces) and their reference miss ratios, read in place: the
/// traces are never copied into the repository.
/// </summary>
internal static class CacheTraces
{
    private static readonly Dictionary<string, long[]> Loaded = [];

    public static string Directory
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            {
                var candidate = Path.Combine(dir.FullName, "..", "shared", "traces");
                if (File.Exists(Path.Combine(dir.FullName, "Infra.sln")) && System.IO.Directory.Exists(candidate))
                {
                    return Path.GetFullPath(candidate);
                }
            }

            throw new DirectoryNotFoundException("../shared/traces not found beside the repository");
        }
    }

    /// <summary>Reference rows: (trace, size, miss ratio per policy column).</summary>
    public static IReadOnlyList<(string Trace, int Size, Dictionary<string, double> MissRatios)> ReferenceTable()
    {
        var lines = File.ReadAllLines(Path.Combine(Directory, "README.md"));
        var header = lines.First(l => l.StartsWith("| trace | size |", StringComparison.Ordinal));
        var columns = header.Split('|', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var rows = new List<(string, int, Dictionary<string, double>)>();
        foreach (var line in lines.SkipWhile(l => l != header).Skip(2).TakeWhile(l => l.StartsWith('|')))
        {
            var cells = line.Split('|', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
            var ratios = new Dictionary<string, double>(StringComparer.OrdinalIgnoreCase);
            for (var i = 2; i < cells.Length; i++)
            {
                ratios[columns[i]] = double.Parse(cells[i], CultureInfo.InvariantCulture);
            }

            rows.Add((cells[0], int.Parse(cells[1], CultureInfo.InvariantCulture), ratios));
        }

        return rows;
    }

    public static long[] Load(string name)
    {
        lock (Loaded)
        {
            if (Loaded.TryGetValue(name, out var cached))
            {
                return cached;
            }

            var gz = Path.Combine(Directory, name + ".trace.gz");
            var keys = File.Exists(gz) ? ReadText(gz) : ReadBinaryXz(Path.Combine(Directory, name + ".trace.xz"));
            Loaded[name] = keys;
            return keys;
        }
    }

    private static long[] ReadText(string path)
    {
        using var file = File.OpenRead(path);
        using var gzip = new GZipStream(file, CompressionMode.Decompress);
        using var reader = new StreamReader(gzip);
        var keys = new List<long>();
        while (reader.ReadLine() is { } raw)
        {
            var line = raw.Trim();
            if (line.Length == 0)
            {
                continue;
            }

            // A few lines are not numbers (cs has "*"): they are keys like any other.
            keys.Add(long.TryParse(line, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var key)
                ? key
                : long.MinValue + line.GetHashCode(StringComparison.Ordinal));
        }

        return [.. keys];
    }

    /// <summary>xz has no decoder in .NET: the xz tool (Debian's xz-utils) streams it.</summary>
    private static long[] ReadBinaryXz(string path)
    {
        using var process = Process.Start(new ProcessStartInfo("xz", ["-dc", path]) { RedirectStandardOutput = true, UseShellExecute = false })
            ?? throw new InvalidOperationException("cannot start xz");
        using var output = new MemoryStream();
        process.StandardOutput.BaseStream.CopyTo(output);
        process.WaitForExit();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"xz -dc {path} failed with {process.ExitCode}");
        }

        var bytes = output.GetBuffer().AsSpan(0, (int)output.Length);
        var keys = new long[bytes.Length / 8];
        for (var i = 0; i < keys.Length; i++)
        {
            keys[i] = System.Buffers.Binary.BinaryPrimitives.ReadInt64BigEndian(bytes[(i * 8)..]);
        }

        return keys;
    }
}
