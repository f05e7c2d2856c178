using System.Text;
using Infra.ShardRouter.Placement;

namespace Infra.ShardRouter.Tests;

/// <summary>
/// Saving the map tells "still the old file" (an exception) from "the new file is in place but its
/// directory was not fsync'd" (returned), because a router that undid a change the file already holds
/// would act on a map a restart does not read.
/// </summary>
public sealed class MapStoreTests : IDisposable
{
    private const string First = """{"shards":[{"id":"a","master":"127.0.0.1:7001","replicas":[]}]}""";
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "mapstore-" + Guid.NewGuid().ToString("N"));

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private ShardMap Seeded(MapStore store)
    {
        Directory.CreateDirectory(_dir);
        var seed = Path.Combine(_dir, "seed.json");
        File.WriteAllText(seed, First);
        return store.Load(seed);
    }

    [Fact]
    public void A_failed_directory_fsync_after_the_rename_is_returned_and_the_new_map_is_in_place()
    {
        var failing = false;
        var store = new MapStore(_dir, dir => { if (failing) { throw new IOException($"fsync({dir}): Input/output error (injected)"); } });
        var map = Seeded(store);
        var next = map.WithShard(new ShardInfo("b", "127.0.0.1:7003", [], 1, 1));

        failing = true;
        var unsynced = store.Save(next);

        Assert.NotNull(unsynced);
        Assert.Contains("injected", unsynced.Message, StringComparison.Ordinal);
        Assert.Equal(Encoding.UTF8.GetString(next.ToJson()), File.ReadAllText(store.Path));
        Assert.NotNull(new MapStore(_dir).Load(null).Find("b"));
    }

    [Fact]
    public void A_save_that_fails_before_the_rename_throws_and_leaves_the_old_map()
    {
        var store = new MapStore(_dir);
        var map = Seeded(store);
        var before = File.ReadAllText(store.Path);
        Directory.CreateDirectory(store.Path + ".tmp"); // the temporary file cannot be created

        Assert.ThrowsAny<Exception>(() => store.Save(map.WithShard(new ShardInfo("b", "127.0.0.1:7003", [], 1, 1))));
        Assert.Equal(before, File.ReadAllText(store.Path));
        Assert.Null(new MapStore(_dir).Load(null).Find("b"));
    }

    [Fact]
    public void The_router_id_is_made_once_and_kept()
    {
        var store = new MapStore(_dir);
        Seeded(store);
        var again = new MapStore(_dir);
        again.Load(null);

        var other = new MapStore(Path.Combine(_dir, "other"));
        other.Load(Path.Combine(_dir, "seed.json"));

        Assert.StartsWith("router-", store.RouterId, StringComparison.Ordinal);
        Assert.Equal(store.RouterId, again.RouterId);
        Assert.NotEqual(store.RouterId, other.RouterId);
    }

    [Fact]
    public void A_copied_data_directory_gets_its_own_router_id()
    {
        var store = new MapStore(_dir);
        Seeded(store);
        var copy = Path.Combine(_dir, "copy");
        Directory.CreateDirectory(copy);
        foreach (var file in Directory.GetFiles(_dir))
        {
            File.Copy(file, Path.Combine(copy, Path.GetFileName(file)));
        }

        var copied = new MapStore(copy);
        copied.Load(null);
        var original = new MapStore(_dir);
        original.Load(null);

        Assert.NotEqual(store.RouterId, copied.RouterId);
        Assert.Equal(store.RouterId, original.RouterId);
        Assert.NotNull(copied.Load(null).Find("a")); // the map itself came along
    }

    [Fact]
    public void A_damaged_router_id_file_is_replaced()
    {
        var store = new MapStore(_dir);
        Seeded(store);
        File.WriteAllText(Path.Combine(_dir, "router-id"), new string('x', 5000));
        var again = new MapStore(_dir);
        again.Load(null);

        Assert.StartsWith("router-", again.RouterId, StringComparison.Ordinal);
        Assert.NotEqual(store.RouterId, again.RouterId);
    }
}
