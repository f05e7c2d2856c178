using Infra.Core.Placement;
using Infra.DataNode.Storage;

namespace Infra.DataNode.Tests;

/// <summary>Epoch claims (one vote per epoch, durable) and the infra_slot SQL function used by resharding.</summary>
public sealed class EpochVoteTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "infra-dn-" + Guid.NewGuid().ToString("N")[..10]);
    private NodeDatabase _db;

    public EpochVoteTests()
    {
        _db = NodeDatabase.Open(_root, new DatabaseSettings(), TimeProvider.System);
        _db.SetEpochAndRole(1, "replica");
    }

    public void Dispose()
    {
        _db.Dispose();
        Directory.Delete(_root, recursive: true);
    }

    [Fact]
    public void A_node_votes_once_per_epoch_and_the_vote_survives_a_reopen()
    {
        Assert.True(_db.Claim(2, "node-a"));
        Assert.Equal(2, _db.Epoch);
        Assert.Equal("replica", _db.StoredRole);
        Assert.Equal((2L, "node-a"), _db.Vote);

        // The same leader again is fine (a router retrying); another leader of the same epoch is refused.
        Assert.True(_db.Claim(2, "node-a"));
        Assert.False(_db.Claim(2, "node-b"));

        _db.Dispose();
        _db = NodeDatabase.Open(_root, new DatabaseSettings(), TimeProvider.System);
        Assert.Equal((2L, "node-a"), _db.Vote);
        Assert.False(_db.Claim(2, "node-b"));
        Assert.True(_db.Claim(3, "node-b"));
        Assert.Equal((3L, "node-b"), _db.Vote);
    }

    [Fact]
    public void Older_epochs_and_the_current_unclaimed_epoch_cannot_be_claimed()
    {
        _db.SetEpochAndRole(5, "replica");
        Assert.False(_db.Claim(4, "node-a"));

        // Epoch 5 already has a master (the node follows it) and was never claimed here.
        Assert.False(_db.Claim(5, "node-a"));
        Assert.Equal(5, _db.Epoch);
        Assert.Equal((0L, ""), _db.Vote);
    }

    [Fact]
    public void A_claim_moves_a_master_to_the_replica_role()
    {
        _db.SetEpochAndRole(1, "master");
        Assert.True(_db.Claim(2, "someone-else"));
        Assert.Equal("replica", _db.StoredRole);
    }

    [Fact]
    public void Writes_queued_behind_a_claim_are_refused_not_tagged_with_the_new_epoch()
    {
        // From an audit: the node's in-memory role changed after the claim (on the pool), so a write queued
        // to the writer meanwhile (one without an epoch) committed as an entry of epoch 2 — an epoch this
        // node joined as a replica — and its old master's divergence went unnoticed.
        _db.SetEpochAndRole(1, "master");
        Assert.Null(_db.ExecuteGroup([new WriteCommand([new SqlStatement("CREATE TABLE t(k TEXT PRIMARY KEY)", [])])])[0].Error);
        var lsn = _db.Lsn;
        Assert.True(_db.Claim(2, "someone-else"));
        var outcome = _db.ExecuteGroup([new WriteCommand([new SqlStatement("INSERT INTO t VALUES('a')", [])])])[0];
        Assert.Equal(NodeErrorCode.NotMaster, outcome.Error?.Code);
        Assert.Equal(lsn, _db.Lsn);
    }

    [Theory]
    [InlineData("user:42")]
    [InlineData("")]
    [InlineData("ünïcødé 🚀")]
    public void Infra_slot_of_text_matches_the_router(string key)
    {
        var result = _db.Query("SELECT infra_slot(?, 4096), infra_slot(?, 16)", [key, key]);
        Assert.Equal((long)ShardKey.Slot(key), result.Rows[0][0]);
        Assert.Equal((long)ShardKey.Slot(key, 16), result.Rows[0][1]);
    }

    [Fact]
    public void Infra_slot_treats_integers_as_their_decimal_text_blobs_as_bytes_and_null_as_no_slot()
    {
        var result = _db.Query("SELECT infra_slot(42, 4096), infra_slot(-7, 4096), infra_slot(x'0102', 4096), infra_slot(NULL, 4096), infra_slot(2.0, 4096)", []);
        Assert.Equal((long)ShardKey.Slot("42"), result.Rows[0][0]);
        Assert.Equal((long)ShardKey.Slot("-7"), result.Rows[0][1]);
        Assert.Equal((long)SlotTable.SlotOf(new byte[] { 1, 2 }), result.Rows[0][2]);
        Assert.Null(result.Rows[0][3]);
        Assert.Equal((long)ShardKey.Slot("2"), result.Rows[0][4]);
    }

    [Theory]
    [InlineData("SELECT infra_slot('a', 0)")]
    [InlineData("SELECT infra_slot('a', -1)")]
    [InlineData("SELECT infra_slot('a', 99999999)")]
    public void Infra_slot_refuses_a_bad_slot_count(string sql)
    {
        var error = Assert.Throws<NodeException>(() => _db.Query(sql, []));
        Assert.Equal(NodeErrorCode.SqlError, error.Code);
    }

    [Fact]
    public void Infra_slot_selects_and_deletes_one_slot_of_rows()
    {
        _db.SetEpochAndRole(2, "master");
        var keys = Enumerable.Range(0, 200).Select(i => $"k{i}").ToList();
        var outcome = _db.ExecuteGroup([new WriteCommand([new SqlStatement("CREATE TABLE kv(k TEXT PRIMARY KEY, v)", []), .. keys.Select(k => new SqlStatement("INSERT INTO kv VALUES(?, 1)", [k]))])])[0];
        Assert.Null(outcome.Error);
        var slot = ShardKey.Slot("k17", 8);
        var expected = keys.Where(k => ShardKey.Slot(k, 8) == slot).Order(StringComparer.Ordinal).ToList();
        var selected = _db.Query("SELECT k FROM kv WHERE infra_slot(k, 8) = ? ORDER BY k", [(long)slot]);
        Assert.Equal(expected, selected.Rows.Select(r => (string)r[0]!));
        var deleted = _db.ExecuteGroup([new WriteCommand([new SqlStatement("DELETE FROM kv WHERE infra_slot(k, 8) = ?", [(long)slot])])])[0];
        Assert.Null(deleted.Error);
        Assert.Equal(expected.Count, deleted.Results![0].RowsAffected);
        Assert.Equal((long)(200 - expected.Count), _db.Query("SELECT count(*) FROM kv", []).Rows[0][0]);
    }
}
