using Infra.IntegrationTests.Harness;
using StackExchange.Redis;

namespace Infra.IntegrationTests;

/// <summary>The cache server through StackExchange.Redis, a real Redis client, over RESP2 and RESP3.</summary>
public class CacheClientTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task StackExchange_Redis_connects_and_runs_strings_hashes_and_ttls(bool resp3)
    {
        await using var server = await CacheServerProcess.StartAsync();
        await using var muxer = await server.ConnectAsync(resp3);
        var db = muxer.GetDatabase();
        Assert.True(muxer.IsConnected);
        Assert.Equal(resp3 ? RedisProtocol.Resp3 : RedisProtocol.Resp2, muxer.GetServer(server.EndPoint).Protocol);

        Assert.True(await db.StringSetAsync("greeting", "hello"));
        Assert.Equal("hello", await db.StringGetAsync("greeting"));
        Assert.True((await db.StringGetAsync("missing")).IsNull);
        Assert.Equal(5, await db.StringIncrementAsync("counter", 5));
        Assert.Equal(2.5, await db.StringIncrementAsync("float", 2.5));
        Assert.False(await db.StringSetAsync("greeting", "again", when: When.NotExists));

        await db.HashSetAsync("session:1", [new HashEntry("user", "ada"), new HashEntry("visits", 1)]);
        Assert.Equal(2, await db.HashIncrementAsync("session:1", "visits"));
        var session = (await db.HashGetAllAsync("session:1")).ToDictionary(e => e.Name.ToString(), e => e.Value.ToString());
        Assert.Equal("ada", session["user"]);
        Assert.Equal("2", session["visits"]);
        Assert.Equal("ada", await db.HashGetAsync("session:1", "user"));

        Assert.True(await db.KeyExpireAsync("greeting", TimeSpan.FromSeconds(100)));
        var ttl = await db.KeyTimeToLiveAsync("greeting");
        Assert.InRange(ttl!.Value.TotalSeconds, 98, 100);
        Assert.Equal(RedisType.Hash, await db.KeyTypeAsync("session:1"));
        await Assert.ThrowsAsync<RedisServerException>(() => db.StringGetAsync("session:1"));

        Assert.True(await db.KeyDeleteAsync("greeting"));
        Assert.False(await db.KeyExistsAsync("greeting"));
        var values = await db.StringGetAsync(["counter", "nothing"]);
        Assert.Equal("5", values[0]);
        Assert.True(values[1].IsNull);
        Assert.Equal(3, (int)await db.ExecuteAsync("DBSIZE"));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Pub_sub_delivers_to_subscribers(bool resp3)
    {
        await using var server = await CacheServerProcess.StartAsync();
        await using var muxer = await server.ConnectAsync(resp3);
        var received = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var subscriber = muxer.GetSubscriber();
        await subscriber.SubscribeAsync(RedisChannel.Literal("news"), (_, message) => received.TrySetResult(message!));

        var receivers = await subscriber.PublishAsync(RedisChannel.Literal("news"), "hello subscribers");

        Assert.Equal(1, receivers);
        Assert.Equal("hello subscribers", await received.Task.WaitAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task Requirepass_refuses_clients_without_the_password()
    {
        await using var server = await CacheServerProcess.StartAsync("--requirepass", "s3cret");
        await using (var muxer = await server.ConnectAsync(password: "s3cret"))
        {
            Assert.True(await muxer.GetDatabase().StringSetAsync("k", "v"));
        }

        await using (var muxer = await server.ConnectAsync(resp3: true, password: "s3cret"))
        {
            Assert.Equal("v", await muxer.GetDatabase().StringGetAsync("k"));
        }

        await Assert.ThrowsAnyAsync<RedisException>(async () =>
        {
            await using var anonymous = await server.ConnectAsync();
            await anonymous.GetDatabase().StringGetAsync("k");
        });
    }
}
