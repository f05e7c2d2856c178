using Infra.Core.Storage;

namespace Infra.ShardRouter.Placement;

/// <summary>
/// Keeps the shard map in <c>shard-map.json</c> under the data directory, replaced atomically (temp
/// file, fsync, rename, directory fsync). The stored map wins over the seed file: it carries
/// failovers and slot moves the seed does not know.
/// </summary>
internal sealed class MapStore(string dataDir, Action<string>? syncDirectory = null)
{
    public const string FileName = "shard-map.json";

    public string Path { get; } = System.IO.Path.Combine(dataDir, FileName);

    /// <summary>
    /// This router's id, kept in <c>router-id</c> beside the map (made at the first start): the data nodes
    /// record it with the slots a move closes, so that the router, restarted too, tells its own closes
    /// from another router's (<see cref="Resharder"/>). The file also names the machine and the directory
    /// it was made for; found anywhere else (the directory was copied to start another router), a new id
    /// is made, so two routers never share one. A router whose directory moved only stops recognising
    /// closes it made before.
    /// </summary>
    public string RouterId { get; private set; } = "";

    /// <summary>The stored map, else the seed file's, else an error.</summary>
    public ShardMap Load(string? seedFile)
    {
        Directory.CreateDirectory(dataDir);
        var idFile = System.IO.Path.Combine(dataDir, "router-id");
        var home = $"{Environment.MachineName} {System.IO.Path.GetFullPath(dataDir)}";
        var stored = File.Exists(idFile) ? File.ReadAllLines(idFile) : [];
        if (stored is [var id, var madeFor, ..] && id.Length is > 0 and <= 100 && madeFor == home)
        {
            RouterId = id;
        }
        else
        {
            RouterId = "router-" + Guid.NewGuid().ToString("N")[..12];
            DirectorySync.WriteFileAtomically(idFile, System.Text.Encoding.UTF8.GetBytes($"{RouterId}\n{home}\n"));
        }

        if (File.Exists(Path))
        {
            return Parse(Path);
        }

        if (seedFile is null)
        {
            throw new FormatException($"no stored map at {Path} and no --shards file");
        }

        var map = Parse(seedFile);
        if (Save(map) is { } unsynced)
        {
            throw unsynced; // at start-up a failed save is simply an error
        }

        return map;
    }

    /// <summary>
    /// Replaces the stored map. An exception means the file still holds the old map. A failure of the
    /// directory fsync after the new file was renamed in place is returned: a restart reads the new map,
    /// so the caller must go on with it (only a machine crash might bring the old one back).
    /// </summary>
    public IOException? Save(ShardMap map) => DirectorySync.ReplaceFile(Path, map.ToJson(), syncDirectory);

    private static ShardMap Parse(string file)
    {
        try
        {
            return ShardMap.Parse(File.ReadAllBytes(file));
        }
        catch (FormatException ex)
        {
            throw new FormatException($"{file}: {ex.Message}", ex);
        }
    }
}
