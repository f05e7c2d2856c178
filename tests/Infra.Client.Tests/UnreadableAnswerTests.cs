using System.Net;
using System.Net.Sockets;
using Infra.Client.Data;
using MessagePack;

namespace Infra.Client.Tests;

/// <summary>
/// Answers the clients read by hand that are not laid out as expected fail as the client's own error
/// (DataException / QueueException "BadAnswer"), never as a MessagePack exception a caller does not expect
/// (the shard router turned those into 500s; a producer's pump stopped on one for good).
/// </summary>
public sealed class UnreadableAnswerTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    public static TheoryData<byte[]> Unreadable => new()
    {
        { [0x2a] },                               // a number, not a map
        { [0x81] },                               // a map cut short
        { [0x81, 0xa7, .. "results"u8, 0x91] },   // results: an array whose item is missing
        { [0x81, 0xa3, .. "lsn"u8, 0xa1, 0x78] }, // lsn: a string
        { [0x81, 0xa4, .. "rows"u8, 0x91, 0x91, 0xc1] }, // a row value of the never-used type byte
        { [0x81, 0xc6, 0xff, 0xff, 0xff, 0xff] }, // a bin32 key of length 0xffffffff
    };

    [Theory]
    [MemberData(nameof(Unreadable))]
    public void A_data_node_answer_that_cannot_be_read_is_BadAnswer(byte[] body)
    {
        Assert.Equal("BadAnswer", Assert.Throws<DataException>(() => DataNodeClient.ReadExecute(body)).Code);
        Assert.Equal("BadAnswer", Assert.Throws<DataException>(() => DataNodeClient.ReadRows(body)).Code);
    }

    [Fact]
    public async Task A_router_answer_that_cannot_be_read_is_BadAnswer_and_the_connection_goes_on()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var peer = AnswerWithNumbersAsync(listener);
        await using var client = await ShardRouterClient.ConnectAsync($"127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}").WaitAsync(Bound);
        for (var i = 0; i < 2; i++)
        {
            var write = await Assert.ThrowsAsync<DataException>(() => client.ExecuteAsync("k", [["INSERT INTO t VALUES(1)"]]).WaitAsync(Bound));
            Assert.Equal("BadAnswer", write.Code);
            var read = await Assert.ThrowsAsync<DataException>(() => client.QueryAsync("SELECT 1").WaitAsync(Bound));
            Assert.Equal("BadAnswer", read.Code);
        }

        listener.Stop();
        await client.DisposeAsync();
        await peer.WaitAsync(Bound);
    }

    /// <summary>Answers every request "ok" with the number 42 for a result.</summary>
    private static async Task AnswerWithNumbersAsync(TcpListener listener)
    {
        using var socket = await listener.AcceptSocketAsync();
        var peer = new FramePeer(socket);
        while (await peer.ReadRequestsAsync() is { } requests)
        {
            foreach (var (id, _) in requests)
            {
                await peer.AnswerAsync(id, static (ref MessagePackWriter w) => w.Write(42));
            }
        }
    }
}
