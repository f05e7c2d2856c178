using Infra.DataNode.Storage;

namespace Infra.DataNode.Tests;

/// <summary>
/// A slot closed on a master refuses the writes tagged with it from its place in the writer's queue on
/// (what keeps a write the router gave up on from committing behind a slot move's last copy), and
/// nothing else changes.
/// </summary>
public sealed class ClosedSlotTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "infra-closed-" + Guid.NewGuid().ToString("N")[..10]);
    private readonly NodeDatabase _db;

    public ClosedSlotTests()
    {
        _db = NodeDatabase.Open(_root, new DatabaseSettings(), TimeProvider.System);
        _db.SetEpochAndRole(1, "master");
        Assert.Null(_db.ExecuteGroup([new WriteCommand([new SqlStatement("CREATE TABLE t(k TEXT PRIMARY KEY, v INTEGER)", [])])])[0].Error);
    }

    public void Dispose()
    {
        _db.Dispose();
        Directory.Delete(_root, recursive: true);
    }

    private static WriteCommand Insert(string key, int? slot) => new([new SqlStatement("INSERT INTO t(k, v) VALUES(?, 1)", [key])], Slot: slot);

    private long Count(string key) => (long)_db.Query("SELECT count(*) FROM t WHERE k = ?", [key]).Rows.Single()[0]!;

    [Fact]
    public void Writes_queued_before_the_close_are_applied_and_tagged_ones_after_it_refused()
    {
        var lsn = _db.Lsn;
        var outcomes = _db.ExecuteGroup(
        [
            Insert("before", slot: 7),
            new WriteCommand([], SlotChange: new SlotChange(7, Closed: true)),
            Insert("late", slot: 7),
            Insert("other-slot", slot: 8),
            Insert("untagged", slot: null),
        ]);

        Assert.Null(outcomes[0].Error);
        Assert.Null(outcomes[1].Error);
        Assert.Null(outcomes[1].Entry); // closing a slot is not replicated and takes no LSN
        Assert.Equal(NodeErrorCode.SlotClosed, outcomes[2].Error?.Code);
        Assert.Null(outcomes[3].Error);
        Assert.Null(outcomes[4].Error);
        Assert.Equal(1, Count("before"));
        Assert.Equal(0, Count("late"));
        Assert.Equal(1, Count("other-slot"));
        Assert.Equal(lsn + 3, _db.Lsn);
        Assert.Equal([7], _db.ClosedSlots);
        Assert.Equal(409, NodeException.HttpStatus(NodeErrorCode.SlotClosed));
    }

    [Fact]
    public void A_reopened_slot_takes_tagged_writes_again()
    {
        _db.ExecuteGroup([new WriteCommand([], SlotChange: new SlotChange(3, Closed: true)), new WriteCommand([], SlotChange: new SlotChange(5, Closed: true))]);
        Assert.Equal([3, 5], _db.ClosedSlots);
        Assert.Equal(NodeErrorCode.SlotClosed, _db.ExecuteGroup([Insert("a", slot: 3)])[0].Error?.Code);

        var outcomes = _db.ExecuteGroup([new WriteCommand([], SlotChange: new SlotChange(3, Closed: false)), Insert("a", slot: 3)]);
        Assert.Null(outcomes[1].Error);
        Assert.Equal(1, Count("a"));
        Assert.Equal([5], _db.ClosedSlots);

        // Opening a slot that is not closed, or closing one twice, changes nothing.
        _db.ExecuteGroup([new WriteCommand([], SlotChange: new SlotChange(9, Closed: false)), new WriteCommand([], SlotChange: new SlotChange(5, Closed: true))]);
        Assert.Equal([5], _db.ClosedSlots);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_master_that_steps_down_forgets_its_closed_slots_and_takes_them_if_promoted_again(bool byClaim)
    {
        _db.ExecuteGroup([new WriteCommand([], SlotChange: new SlotChange(5, Closed: true))]);
        Assert.Equal([5], _db.ClosedSlots);
        if (byClaim)
        {
            Assert.True(_db.Claim(2, "other-node")); // votes for another leader: a replica now
        }
        else
        {
            _db.SetEpochAndRole(2, "replica"); // told to follow the new master
        }

        Assert.Empty(_db.ClosedSlots);
        _db.SetEpochAndRole(3, "master");
        Assert.Null(_db.ExecuteGroup([Insert("back", slot: 5)])[0].Error);
        Assert.Equal(1, Count("back"));
    }
}
