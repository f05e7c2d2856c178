using System.Text;
using System.Text.Json;
using Infra.Core.Configuration;
using Infra.Core.Placement;

namespace Infra.ShardRouter.Placement;

/// <summary>One shard: its master and replicas (data-node <c>--listen</c> addresses), its epoch and weight.</summary>
/// <param name="Draining">Being removed: it wins no slots, and goes once it owns none.</param>
/// <param name="FanOutFloor">
/// The LSN of the last delete that cleared rows of a slot this shard does not own (left by a slot that
/// moved away, or copied by a move that failed): a fan-out reads the shard only on a node that has applied
/// it (a replica behind it would still return those rows next to their owner's). Kept in the map so that a
/// restarted router still knows it.
/// </param>
internal sealed record ShardInfo(string Id, string Master, IReadOnlyList<string> Replicas, long Epoch = 1, double Weight = 1.0, bool Draining = false,
    long FanOutFloor = 0)
{
    public IEnumerable<string> Nodes => [Master, .. Replicas];
}

/// <summary>A sharded table and the column its rows are placed by.</summary>
internal sealed record TableInfo(string Name, string ShardKey);

/// <summary>
/// Rows of <paramref name="Slot"/> left on <paramref name="Shard"/> after the slot moved away: they must be
/// deleted there. Recorded in the same map write that flips the slot, dropped once the delete is done, so
/// a router that dies (or a delete that fails) in between finishes the job later instead of leaving the
/// rows on two shards.
/// </summary>
internal sealed record SlotCleanup(int Slot, string Shard);

/// <summary>
/// The shard map: shards, the versioned slot table (which shard owns each of the fixed slots keys hash
/// to) and the registered sharded tables. Immutable; every change makes the next version. Slots are
/// placed by weighted rendezvous hashing with quotas over the shards that are not draining
/// (<see cref="TargetOwners"/>); the recorded owners differ from that target only while slots are moving.
/// </summary>
internal sealed class ShardMap
{
    public const int MaxShards = 256;
    public const int MaxTables = 1024;

    private static readonly JsonDocumentOptions DocumentOptions = new() { MaxDepth = 8 };
    private readonly Dictionary<string, int> _index;

    private ShardMap(long version, int slots, ShardInfo[] shards, int[] owners, TableInfo[] tables, SlotCleanup[]? cleanups = null)
    {
        Version = version;
        Slots = slots;
        Shards = shards;
        Owners = owners;
        Tables = tables;
        Cleanups = cleanups ?? [];
        _index = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < shards.Length; i++)
        {
            _index[shards[i].Id] = i;
        }
    }

    public long Version { get; }

    public int Slots { get; }

    public IReadOnlyList<ShardInfo> Shards { get; }

    /// <summary>Index into <see cref="Shards"/> of each slot's owner.</summary>
    public IReadOnlyList<int> Owners { get; }

    public IReadOnlyList<TableInfo> Tables { get; }

    /// <summary>Slots whose rows are still to be deleted from a shard they moved away from.</summary>
    public IReadOnlyList<SlotCleanup> Cleanups { get; }

    public int SlotOf(object? key) => ShardKey.Slot(key, Slots);

    public ShardInfo OwnerOf(int slot) => Shards[Owners[slot]];

    public ShardInfo? Find(string id) => _index.TryGetValue(id, out var i) ? Shards[i] : null;

    public int IndexOf(string id) => _index.TryGetValue(id, out var i) ? i : -1;

    /// <summary>Slots each shard owns now.</summary>
    public int[] SlotCounts()
    {
        var counts = new int[Shards.Count];
        foreach (var owner in Owners)
        {
            counts[owner]++;
        }

        return counts;
    }

    /// <summary>A first map: every slot placed by rendezvous hashing.</summary>
    public static ShardMap Seed(IReadOnlyList<ShardInfo> shards, int slots = SlotTable.DefaultSlots)
    {
        var map = new ShardMap(1, slots, [.. shards], new int[slots], []);
        Check(map);
        return new ShardMap(1, slots, [.. shards], map.Place(null), []);
    }

    /// <summary>
    /// Where each slot should be (indices into <see cref="Shards"/>): every shard that is not draining
    /// gets its quota (its share of the total weight, to the slot), and slots stay where they are as far
    /// as the quotas allow. Adding a shard therefore moves slots to it only, and draining one moves only
    /// its own. Moving one slot to its target leaves the targets of the others as they were.
    /// </summary>
    public int[] TargetOwners() => Place([.. Owners]);

    /// <summary>
    /// Weighted rendezvous hashing with quotas: starting from <paramref name="current"/> (null: every
    /// slot on its highest-scoring shard), the slots of draining shards and the lowest-scoring slots of
    /// shards above their quota are freed, then freed slots go to shards below their quota, highest
    /// score first. Plain rendezvous over 4096 slots leaves shards several percent off their share.
    /// </summary>
    private int[] Place(int[]? current)
    {
        var live = Enumerable.Range(0, Shards.Count).Where(i => !Shards[i].Draining).ToArray();
        if (live.Length == 0)
        {
            throw new InvalidOperationException("every shard is draining; at least one must take the slots");
        }

        var idHashes = Shards.Select(s => XxHash64.Hash(Encoding.UTF8.GetBytes(s.Id))).ToArray();
        double Score(int slot, int shard)
        {
            // As SlotTable scores a node: -weight / ln(u), u = hash(node, slot) in (0, 1).
            Span<byte> input = stackalloc byte[12];
            BitConverter.TryWriteBytes(input, idHashes[shard]);
            BitConverter.TryWriteBytes(input[8..], slot);
            var unit = ((XxHash64.Hash(input) >> 11) + 0.5) / (1UL << 53);
            return -Shards[shard].Weight / Math.Log(unit);
        }

        // Quotas: floor of each share, the remaining slots to the largest remainders (ties by id).
        var quota = new int[Shards.Count];
        var totalWeight = live.Sum(i => Shards[i].Weight);
        var remainders = new List<(double Fraction, string Id, int Shard)>(live.Length);
        foreach (var i in live)
        {
            var ideal = Slots * Shards[i].Weight / totalWeight;
            quota[i] = (int)Math.Floor(ideal);
            remainders.Add((ideal - quota[i], Shards[i].Id, i));
        }

        var extra = Slots - quota.Sum();
        foreach (var (_, _, i) in remainders.OrderByDescending(r => r.Fraction).ThenBy(r => r.Id, StringComparer.Ordinal).Take(extra))
        {
            quota[i]++;
        }

        var owners = new int[Slots];
        var held = Enumerable.Range(0, Shards.Count).Select(_ => new List<int>()).ToArray();
        for (var slot = 0; slot < Slots; slot++)
        {
            var owner = current?[slot] ?? live.MaxBy(i => Score(slot, i));
            owners[slot] = owner >= 0 && owner < Shards.Count && !Shards[owner].Draining ? owner : -1;
            if (owners[slot] >= 0)
            {
                held[owner].Add(slot);
            }
        }

        var count = new int[Shards.Count];
        foreach (var i in live)
        {
            foreach (var slot in held[i].OrderBy(s => Score(s, i)).ThenBy(s => s).Take(Math.Max(0, held[i].Count - quota[i])))
            {
                owners[slot] = -1;
            }

            count[i] = Math.Min(held[i].Count, quota[i]);
        }

        var free = Enumerable.Range(0, Slots).Where(s => owners[s] < 0).ToArray();
        var open = live.Where(i => count[i] < quota[i]).ToArray();
        var pairs = new List<(double Score, int Slot, int Shard)>(free.Length * open.Length);
        foreach (var slot in free)
        {
            foreach (var i in open)
            {
                pairs.Add((Score(slot, i), slot, i));
            }
        }

        pairs.Sort((a, b) => a.Score != b.Score ? b.Score.CompareTo(a.Score)
            : a.Slot != b.Slot ? a.Slot.CompareTo(b.Slot)
            : string.CompareOrdinal(Shards[a.Shard].Id, Shards[b.Shard].Id));
        foreach (var (_, slot, i) in pairs)
        {
            if (owners[slot] < 0 && count[i] < quota[i])
            {
                owners[slot] = i;
                count[i]++;
            }
        }

        return owners;
    }

    public ShardMap WithShard(ShardInfo shard)
    {
        var shards = Shards.ToList();
        var at = IndexOf(shard.Id);
        if (at >= 0)
        {
            shards[at] = shard;
        }
        else
        {
            shards.Add(shard);
        }

        var map = new ShardMap(Version + 1, Slots, [.. shards], [.. Owners], [.. Tables], [.. Cleanups]);
        Check(map);
        return map;
    }

    /// <summary>Raises a shard's <see cref="ShardInfo.FanOutFloor"/> (never lowers it); the same map when nothing changes.</summary>
    public ShardMap WithFanOutFloor(string shardId, long lsn) =>
        Find(shardId) is { } shard && lsn > shard.FanOutFloor ? WithShard(shard with { FanOutFloor = lsn }) : this;

    /// <summary>Gives a slot to a shard, and records that the rows it leaves on its old owner are to be deleted.</summary>
    public ShardMap WithOwner(int slot, string shardId)
    {
        var owners = Owners.ToArray();
        var previous = Shards[owners[slot]].Id;
        owners[slot] = IndexOf(shardId) is >= 0 and var i ? i : throw new ArgumentException($"no shard {shardId}", nameof(shardId));
        if (Cleanups.Contains(new SlotCleanup(slot, shardId)))
        {
            // Stale rows of the slot are still on that shard; moving the slot back first would revive them.
            throw new InvalidOperationException($"slot {slot} still has rows to delete on {shardId}");
        }

        var cleanups = Cleanups.ToList();
        if (previous != shardId && !cleanups.Contains(new SlotCleanup(slot, previous)))
        {
            cleanups.Add(new SlotCleanup(slot, previous));
        }

        return new ShardMap(Version + 1, Slots, [.. Shards], owners, [.. Tables], [.. cleanups]);
    }

    /// <summary>Records that a shard holds rows of a slot it does not own, to be deleted.</summary>
    public ShardMap WithCleanup(SlotCleanup cleanup) =>
        Cleanups.Contains(cleanup) ? this : new ShardMap(Version + 1, Slots, [.. Shards], [.. Owners], [.. Tables], [.. Cleanups, cleanup]);

    /// <summary>The slot's rows are gone from that shard.</summary>
    public ShardMap WithoutCleanup(SlotCleanup cleanup) =>
        Cleanups.Contains(cleanup) ? new ShardMap(Version + 1, Slots, [.. Shards], [.. Owners], [.. Tables], [.. Cleanups.Where(c => c != cleanup)]) : this;

    /// <summary>Drops a shard that owns no slot.</summary>
    public ShardMap Without(string shardId)
    {
        var at = IndexOf(shardId);
        if (at < 0)
        {
            return this;
        }

        if (Owners.Contains(at))
        {
            throw new InvalidOperationException($"shard {shardId} still owns slots");
        }

        // Whatever the shard still holds leaves with it: its pending cleanups go too.
        var owners = Owners.Select(o => o > at ? o - 1 : o).ToArray();
        return new ShardMap(Version + 1, Slots, [.. Shards.Where((_, i) => i != at)], owners, [.. Tables], [.. Cleanups.Where(c => c.Shard != shardId)]);
    }

    public ShardMap WithTables(IEnumerable<TableInfo> tables)
    {
        var merged = Tables.ToDictionary(t => t.Name, StringComparer.OrdinalIgnoreCase);
        foreach (var table in tables)
        {
            merged[table.Name] = table;
        }

        if (merged.Count > MaxTables)
        {
            throw new ArgumentException($"more than {MaxTables} sharded tables");
        }

        return new ShardMap(Version + 1, Slots, [.. Shards], [.. Owners], [.. merged.Values.OrderBy(t => t.Name, StringComparer.Ordinal)], [.. Cleanups]);
    }

    // ---------------------------------------------------------------- JSON

    public byte[] ToJson()
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteNumber("version", Version);
            w.WriteNumber("slots", Slots);
            w.WriteStartArray("shards");
            foreach (var shard in Shards)
            {
                w.WriteStartObject();
                WriteShardFields(w, shard);
                w.WriteEndObject();
            }

            w.WriteEndArray();
            WriteTablesAndOwners(w);
            w.WriteStartArray("cleanups");
            foreach (var cleanup in Cleanups)
            {
                w.WriteStartArray();
                w.WriteNumberValue(cleanup.Slot);
                w.WriteStringValue(cleanup.Shard);
                w.WriteEndArray();
            }

            w.WriteEndArray();
            w.WriteEndObject();
        }

        return buffer.ToArray();
    }

    /// <summary>A shard's own fields (id, master, replicas, epoch, weight, draining) into the current object.</summary>
    public static void WriteShardFields(Utf8JsonWriter w, ShardInfo shard)
    {
        ArgumentNullException.ThrowIfNull(w);
        ArgumentNullException.ThrowIfNull(shard);
        w.WriteString("id", shard.Id);
        w.WriteString("master", shard.Master);
        w.WriteStartArray("replicas");
        foreach (var replica in shard.Replicas)
        {
            w.WriteStringValue(replica);
        }

        w.WriteEndArray();
        w.WriteNumber("epoch", shard.Epoch);
        w.WriteNumber("weight", shard.Weight);
        w.WriteBoolean("draining", shard.Draining);
        if (shard.FanOutFloor > 0)
        {
            w.WriteNumber("fanOutFloor", shard.FanOutFloor);
        }
    }

    /// <summary><c>"tables"</c> and <c>"owners"</c> (runs of consecutive slots: [shard, first, last]) into the current object.</summary>
    public void WriteTablesAndOwners(Utf8JsonWriter w)
    {
        ArgumentNullException.ThrowIfNull(w);
        w.WriteStartArray("tables");
        foreach (var table in Tables)
        {
            w.WriteStartObject();
            w.WriteString("name", table.Name);
            w.WriteString("shardKey", table.ShardKey);
            w.WriteEndObject();
        }

        w.WriteEndArray();
        w.WriteStartArray("owners");
        foreach (var (owner, first, last) in Runs())
        {
            w.WriteStartArray();
            w.WriteStringValue(Shards[owner].Id);
            w.WriteNumberValue(first);
            w.WriteNumberValue(last);
            w.WriteEndArray();
        }

        w.WriteEndArray();
    }

    public IEnumerable<(int Owner, int First, int Last)> Runs()
    {
        var start = 0;
        for (var slot = 1; slot <= Slots; slot++)
        {
            if (slot == Slots || Owners[slot] != Owners[start])
            {
                yield return (Owners[start], start, slot - 1);
                start = slot;
            }
        }
    }

    /// <summary>
    /// Reads a map: either a stored one (with owners) or a seed file <c>{"shards":[{"id","master","replicas","weight"?}]}</c>,
    /// whose slots are then placed by rendezvous hashing. Every problem is an <see cref="FormatException"/>.
    /// </summary>
    public static ShardMap Parse(ReadOnlySpan<byte> json)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json.ToArray(), DocumentOptions);
        }
        catch (JsonException ex)
        {
            throw new FormatException("not valid JSON: " + ex.Message, ex);
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("shards", out var shardsElement) || shardsElement.ValueKind != JsonValueKind.Array)
            {
                throw new FormatException("expected {\"shards\": [{\"id\", \"master\", \"replicas\"}, ...]}");
            }

            var slots = root.TryGetProperty("slots", out var s) ? (s.ValueKind == JsonValueKind.Number && s.TryGetInt32(out var n) && n is >= 1 and <= 1 << 20 ? n : throw new FormatException("\"slots\" must be 1..1048576")) : SlotTable.DefaultSlots;
            var version = OptionalInteger(root, "version", min: 1, fallback: 1, where: "");
            var shards = new List<ShardInfo>();
            foreach (var element in shardsElement.EnumerateArray())
            {
                shards.Add(ParseShard(element, $"shard {shards.Count + 1}"));
            }

            var tables = new List<TableInfo>();
            if (root.TryGetProperty("tables", out var tablesElement))
            {
                if (tablesElement.ValueKind != JsonValueKind.Array)
                {
                    throw new FormatException("\"tables\" must be an array");
                }

                foreach (var t in tablesElement.EnumerateArray())
                {
                    var table = ParseTable(t);
                    if (tables.Count >= MaxTables || tables.Any(x => string.Equals(x.Name, table.Name, StringComparison.OrdinalIgnoreCase)))
                    {
                        throw new FormatException(tables.Count >= MaxTables ? $"more than {MaxTables} tables" : $"table {table.Name} appears twice");
                    }

                    tables.Add(table);
                }
            }

            ShardMap map;
            if (root.TryGetProperty("owners", out var ownersElement))
            {
                var probe = new ShardMap(version, slots, [.. shards], new int[slots], [.. tables]);
                Check(probe);
                var owners = Enumerable.Repeat(-1, slots).ToArray();
                if (ownersElement.ValueKind != JsonValueKind.Array)
                {
                    throw new FormatException("\"owners\" must be an array of [shard, firstSlot, lastSlot]");
                }

                foreach (var run in ownersElement.EnumerateArray())
                {
                    if (run.ValueKind != JsonValueKind.Array || run.GetArrayLength() != 3 || run[0].ValueKind != JsonValueKind.String
                        || run[1].ValueKind != JsonValueKind.Number || run[2].ValueKind != JsonValueKind.Number
                        || !run[1].TryGetInt32(out var first) || !run[2].TryGetInt32(out var last) || first < 0 || last >= slots || first > last)
                    {
                        throw new FormatException("\"owners\" must be an array of [shard, firstSlot, lastSlot] within the slots");
                    }

                    var name = Text(run[0], "a shard in \"owners\"");
                    var owner = probe.IndexOf(name);
                    if (owner < 0)
                    {
                        throw new FormatException($"\"owners\" names shard '{name}', which is not in \"shards\"");
                    }

                    for (var slot = first; slot <= last; slot++)
                    {
                        owners[slot] = owners[slot] < 0 ? owner : throw new FormatException($"slot {slot} has two owners");
                    }
                }

                if (Array.IndexOf(owners, -1) is >= 0 and var missing)
                {
                    throw new FormatException($"slot {missing} has no owner");
                }

                map = new ShardMap(version, slots, [.. shards], owners, [.. tables], ParseCleanups(root, probe));
            }
            else
            {
                var seed = Seed(shards, slots);
                map = new ShardMap(version, slots, [.. shards], [.. seed.Owners], [.. tables]);
            }

            return map;
        }
    }

    /// <summary>"cleanups": [[slot, "shard"], ...] — each slot within the map, each shard in it, no repeats.</summary>
    private static SlotCleanup[] ParseCleanups(JsonElement root, ShardMap map)
    {
        if (!root.TryGetProperty("cleanups", out var element))
        {
            return [];
        }

        if (element.ValueKind != JsonValueKind.Array || element.GetArrayLength() > map.Slots * Math.Max(1, map.Shards.Count))
        {
            throw new FormatException("\"cleanups\" must be an array of [slot, shard]");
        }

        var cleanups = new List<SlotCleanup>();
        foreach (var item in element.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Array || item.GetArrayLength() != 2 || item[0].ValueKind != JsonValueKind.Number
                || !item[0].TryGetInt32(out var slot) || slot < 0 || slot >= map.Slots || item[1].ValueKind != JsonValueKind.String)
            {
                throw new FormatException("\"cleanups\" must be an array of [slot, shard] within the slots");
            }

            var cleanup = new SlotCleanup(slot, Text(item[1], "a shard in \"cleanups\""));
            if (map.IndexOf(cleanup.Shard) < 0)
            {
                throw new FormatException($"\"cleanups\" names shard '{cleanup.Shard}', which is not in \"shards\"");
            }

            if (!cleanups.Contains(cleanup))
            {
                cleanups.Add(cleanup);
            }
        }

        return [.. cleanups];
    }

    public static ShardInfo ParseShard(JsonElement element, string where)
    {
        if (element.ValueKind != JsonValueKind.Object)
        {
            throw new FormatException($"{where} is not an object");
        }

        var id = element.TryGetProperty("id", out var idElement) && idElement.ValueKind == JsonValueKind.String ? Text(idElement, $"{where}: \"id\"") : throw new FormatException($"{where} has no \"id\"");
        if (id.Length is 0 or > 64 || id.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')))
        {
            throw new FormatException($"{where}: id '{id}' must be 1-64 letters, digits, '-', '_' or '.'");
        }

        var master = element.TryGetProperty("master", out var m) && m.ValueKind == JsonValueKind.String ? Text(m, $"shard {id}: \"master\"") : throw new FormatException($"shard {id} has no \"master\"");
        CheckAddress(master, $"shard {id} master");
        var replicas = new List<string>();
        if (element.TryGetProperty("replicas", out var r) && r.ValueKind != JsonValueKind.Null)
        {
            if (r.ValueKind != JsonValueKind.Array)
            {
                throw new FormatException($"shard {id}: \"replicas\" must be an array of host:port");
            }

            foreach (var replica in r.EnumerateArray())
            {
                var address = replica.ValueKind == JsonValueKind.String ? Text(replica, $"shard {id}: a replica") : throw new FormatException($"shard {id}: a replica is not a string");
                CheckAddress(address, $"shard {id} replica");
                replicas.Add(address);
            }
        }

        var epoch = OptionalInteger(element, "epoch", min: 0, fallback: 1, where: $"shard {id}: ");
        var weight = element.TryGetProperty("weight", out var w) ? (w.ValueKind == JsonValueKind.Number && w.GetDouble() is var wt && wt > 0 && wt <= 1e6 ? wt : throw new FormatException($"shard {id}: \"weight\" must be a number in (0, 1e6]")) : 1.0;
        var draining = element.TryGetProperty("draining", out var d) && (d.ValueKind is JsonValueKind.True or JsonValueKind.False ? d.GetBoolean() : throw new FormatException($"shard {id}: \"draining\" must be true or false"));
        var floor = OptionalInteger(element, "fanOutFloor", min: 0, fallback: 0, where: $"shard {id}: ");
        return new ShardInfo(id, master, replicas, epoch, weight, draining, floor);
    }

    /// <summary>An optional integer property, at least <paramref name="min"/> (0 or 1); <paramref name="fallback"/> when absent.</summary>
    private static long OptionalInteger(JsonElement element, string name, long min, long fallback, string where) =>
        !element.TryGetProperty(name, out var value) ? fallback
        : value.ValueKind == JsonValueKind.Number && value.TryGetInt64(out var number) && number >= min ? number
        : throw new FormatException($"{where}\"{name}\" must be a {(min >= 1 ? "positive" : "non-negative")} integer");

    private static TableInfo ParseTable(JsonElement t)
    {
        if (t.ValueKind != JsonValueKind.Object || !t.TryGetProperty("name", out var n) || n.ValueKind != JsonValueKind.String
            || !t.TryGetProperty("shardKey", out var k) || k.ValueKind != JsonValueKind.String)
        {
            throw new FormatException("a table is {\"name\", \"shardKey\"}");
        }

        var table = new TableInfo(Text(n, "a table name"), Text(k, "a table's shard key"));
        CheckIdentifier(table.Name, "table name");
        CheckIdentifier(table.ShardKey, $"table {table.Name}: shard key");
        return table;
    }

    /// <summary>SQL identifiers the router splices into its own statements (slot copies): plain ones only.</summary>
    public static void CheckIdentifier(string name, string what)
    {
        if (name.Length is 0 or > 128 || !(char.IsAsciiLetter(name[0]) || name[0] == '_') || name.Any(c => !(char.IsAsciiLetterOrDigit(c) || c == '_')))
        {
            throw new FormatException($"{what} '{name}' must be a plain identifier (letters, digits, '_'; up to 128)");
        }

        if (name.StartsWith("_infra", StringComparison.OrdinalIgnoreCase) || name.StartsWith("sqlite_", StringComparison.OrdinalIgnoreCase))
        {
            throw new FormatException($"{what} '{name}' is reserved");
        }
    }

    /// <summary>A JSON string's text; JsonDocument leaves invalid UTF-8 to be found here.</summary>
    private static string Text(JsonElement element, string what)
    {
        try
        {
            return element.GetString()!;
        }
        catch (InvalidOperationException ex)
        {
            throw new FormatException($"{what} is not valid UTF-8", ex);
        }
    }

    private static void CheckAddress(string address, string what)
    {
        if (!OptionValues.TryParseHostPort(address, out _, out var port) || port == 0)
        {
            throw new FormatException($"{what} '{address}' is not host:port");
        }
    }

    private static void Check(ShardMap map)
    {
        if (map.Shards.Count == 0)
        {
            throw new FormatException("a shard map needs at least one shard");
        }

        if (map.Shards.Count > MaxShards)
        {
            throw new FormatException($"{map.Shards.Count} shards; the limit is {MaxShards}");
        }

        var ids = new HashSet<string>(StringComparer.Ordinal);
        var nodes = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var shard in map.Shards)
        {
            if (!ids.Add(shard.Id))
            {
                throw new FormatException($"shard id {shard.Id} appears twice");
            }

            foreach (var node in shard.Nodes)
            {
                if (!nodes.Add(node))
                {
                    throw new FormatException($"node {node} appears twice in the map");
                }
            }
        }

        if (map.Shards.All(s => s.Draining))
        {
            throw new FormatException("every shard is draining; at least one must take the slots");
        }
    }

    public override string ToString() => Encoding.UTF8.GetString(ToJson());
}
