using Infra.DataNode.Storage;
using MessagePack;

namespace Infra.DataNode.Tests;

public sealed class EntryCodecTests
{
    [Fact]
    public void Parts_round_trip()
    {
        EntryPart[] parts = [new ChangesetPart([1, 2, 3]), new StatementPart("CREATE TABLE x(id INTEGER PRIMARY KEY)", [null, 1L, 2.5, "s", new byte[] { 9 }])];
        var decoded = EntryCodec.Decode(EntryCodec.Encode(parts));
        Assert.Equal([1, 2, 3], ((ChangesetPart)decoded[0]).Changeset);
        var statement = (StatementPart)decoded[1];
        Assert.Equal("CREATE TABLE x(id INTEGER PRIMARY KEY)", statement.Sql);
        Assert.Equal([null, 1L, 2.5, "s", new byte[] { 9 }], statement.Parameters);
    }

    [Fact]
    public void Every_truncation_of_an_entry_is_refused()
    {
        var body = EntryCodec.Encode([new ChangesetPart([1, 2, 3]), new StatementPart("CREATE TABLE x(id INTEGER PRIMARY KEY)", [1L])]);
        for (var i = 0; i < body.Length; i++)
        {
            Assert.Throws<InvalidDataException>(() => EntryCodec.Decode(body.AsMemory(0, i)));
        }
    }

    [Theory]
    [InlineData(new byte[] { 0x91, 0x92, 0x07, 0xc0 })] // [[7, nil]]: unknown kind
    [InlineData(new byte[] { 0x91, 0x93, 0x01, 0xc0, 0x90 })] // a statement without SQL
    [InlineData(new byte[] { 0x91, 0x93, 0x01, 0xa1, 0x78, 0x91, 0x80 })] // a map as a parameter
    [InlineData(new byte[] { 0xc1 })] // never used
    public void Hostile_entries_are_refused(byte[] body) => Assert.Throws<InvalidDataException>(() => EntryCodec.Decode(body));

    [Fact]
    public void Checksums_cover_lsn_epoch_and_body()
    {
        var entry = LogRecord.Create(5, 2, [1, 2, 3], 0);
        Assert.True(entry.IsIntact);
        Assert.False((entry with { Lsn = 6 }).IsIntact);
        Assert.False((entry with { Epoch = 3 }).IsIntact);
        Assert.False((entry with { Body = [1, 2, 4] }).IsIntact);
        _ = MessagePackSerializer.DefaultOptions;
    }
}
