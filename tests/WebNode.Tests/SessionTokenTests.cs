using Infra.Client.Data;
using Infra.WebNode.Accounts;
using StackExchange.Redis;

namespace Infra.WebNode.Tests;

public sealed class SessionTokenTests
{
    [Fact]
    public void Two_writes_of_one_session_finishing_in_either_order_leave_the_higher_position()
    {
        // One field per shard, overwritten by each write: the write at LSN 10 finishing after the one at 11
        // left 10, and the user's next read could be served without their newest link.
        var before = new Session("id", "alice", [new SessionToken("s0", 7), new SessionToken("s1", 3)]);
        var at11 = new SessionToken("s0", 11);
        var at10 = new SessionToken("s0", 10);
        foreach (var order in new[] { new[] { at11, at10 }, [at10, at11] })
        {
            var hash = new Dictionary<string, string> { ["user"] = "alice", [Sessions.FieldOf(new SessionToken("s0", 7))] = "7", [Sessions.FieldOf(new SessionToken("s1", 3))] = "3" };
            foreach (var write in order)
            {
                hash[Sessions.FieldOf(write)] = write.Lsn.ToString(System.Globalization.CultureInfo.InvariantCulture);
                foreach (var field in Sessions.Superseded(before, write)) // both saw the session before either
                {
                    hash.Remove(field.ToString());
                }
            }

            var session = Sessions.Read("id", hash.Select(kv => new HashEntry(kv.Key, kv.Value)))!;
            Assert.Equal(11, session.Tokens.Single(t => t.Shard == "s0").Lsn);
            Assert.Equal(3, session.Tokens.Single(t => t.Shard == "s1").Lsn);
            Assert.DoesNotContain(Sessions.FieldOf(new SessionToken("s0", 7)), hash.Keys); // lower ones go
        }
    }

    [Fact]
    public void The_old_form_is_read_and_replaced_and_junk_fields_are_ignored()
    {
        var session = Sessions.Read("id", [new("user", "bob"), new("lsn:s0", "42"), new("lsn:", "1"), new("lsn:s1", "x"), new("lsn:9:s0", "9"), new("created", "1")])!;
        Assert.Equal([new SessionToken("s0", 42)], session.Tokens);
        Assert.Contains((RedisValue)"lsn:s0", Sessions.Superseded(session, new SessionToken("s0", 50)));
        Assert.Null(Sessions.Read("id", [new("lsn:1:s0", "1")])); // no user: no session
    }
}
