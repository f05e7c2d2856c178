using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Infra.Client.Data;
using Infra.Core.Framing;
using MessagePack;

namespace Infra.Client.Tests;

/// <summary>
/// The inline mode of the RPC connection (the shard router's connections to its data nodes): requests
/// written by the caller's thread, answers completed on the thread that read them. It must keep the
/// protocol's guarantees: every answer reaches its own request, many in flight, and a lost peer fails
/// all of them.
/// </summary>
public sealed class InlineRpcTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task An_inline_client_matches_every_answer_to_its_request_with_many_in_flight()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var server = EchoLsnAsync(listener);
        await using var client = await DataNodeClient.ConnectAsync("127.0.0.1:" + ((IPEndPoint)listener.LocalEndpoint).Port, inline: true);

        // Each query asks for minLsn = i; the server answers with lsn = that minLsn, out of order.
        var reads = Enumerable.Range(1, 500).Select(i => client.QueryAsync("SELECT 1", minLsn: i)).ToList();
        var rows = await Task.WhenAll(reads).WaitAsync(Bound);
        for (var i = 0; i < rows.Length; i++)
        {
            Assert.Equal(i + 1, rows[i].Lsn);
        }

        // Code after an await goes on on the reading thread; calling the client again from there works.
        var first = await client.QueryAsync("SELECT 1", minLsn: 7).WaitAsync(Bound);
        var second = await client.QueryAsync("SELECT 1", minLsn: first.Lsn + 1).WaitAsync(Bound);
        Assert.Equal(8, second.Lsn);

        listener.Stop();
        await client.DisposeAsync();
        await server.WaitAsync(Bound);
    }

    [Fact]
    public async Task A_lost_peer_fails_every_request_in_flight_on_an_inline_client()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var accepted = listener.AcceptSocketAsync();
        await using var client = await DataNodeClient.ConnectAsync("127.0.0.1:" + ((IPEndPoint)listener.LocalEndpoint).Port, inline: true);
        var peer = await accepted.WaitAsync(Bound);
        var reads = Enumerable.Range(1, 50).Select(_ => client.QueryAsync("SELECT 1")).ToList();

        peer.Close(); // answers nothing, then goes away
        foreach (var read in reads)
        {
            var error = await Assert.ThrowsAsync<DataException>(() => read.WaitAsync(Bound));
            Assert.Equal("ConnectionLost", error.Code);
        }

        Assert.False(client.IsConnected);
    }

    /// <summary>Answers each query with {columns: [], rows: [], lsn: its minLsn}, the answers of one read in reverse order.</summary>
    private static async Task EchoLsnAsync(TcpListener listener)
    {
        using var socket = await listener.AcceptSocketAsync();
        var received = new ArrayBufferWriter<byte>();
        var buffer = new byte[64 * 1024];
        while (true)
        {
            int read;
            try
            {
                read = await socket.ReceiveAsync(buffer);
            }
            catch (SocketException)
            {
                return;
            }

            if (read == 0)
            {
                return;
            }

            received.Write(buffer.AsSpan(0, read));
            var pending = new ReadOnlySequence<byte>(received.WrittenMemory);
            var answers = new List<byte[]>();
            while (Frames.TryRead(ref pending, 1 << 20, out var body, out _) == FrameStatus.Complete)
            {
                var reader = new MessagePackReader(body);
                reader.ReadArrayHeader();
                var id = reader.ReadInt64();
                reader.ReadString();
                long lsn = 0;
                for (var fields = reader.ReadMapHeader(); fields > 0; fields--)
                {
                    if (reader.ReadString() == "minLsn")
                    {
                        lsn = reader.ReadInt64();
                    }
                    else
                    {
                        reader.Skip();
                    }
                }

                answers.Add(Frames.Build(id, "ok", (ref MessagePackWriter w) =>
                {
                    w.WriteMapHeader(3);
                    w.Write("columns");
                    w.WriteArrayHeader(0);
                    w.Write("rows");
                    w.WriteArrayHeader(0);
                    w.Write("lsn");
                    w.Write(lsn);
                }));
            }

            var rest = pending.ToArray();
            received.ResetWrittenCount();
            received.Write(rest);
            answers.Reverse();
            try
            {
                await socket.SendAsync(answers.SelectMany(a => a).ToArray());
            }
            catch (SocketException)
            {
                return;
            }
        }
    }
}
