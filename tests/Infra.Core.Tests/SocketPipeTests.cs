using System.Net;
using System.Net.Sockets;
using System.Text;
using Infra.Core.Networking;

namespace Infra.Core.Tests;

public sealed class SocketPipeTests : IAsyncLifetime
{
    private Socket _left = null!;
    private Socket _right = null!;

    public async Task InitializeAsync()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        _left = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var accept = listener.AcceptAsync();
        await _left.ConnectAsync(listener.LocalEndPoint!);
        _right = await accept;
    }

    public Task DisposeAsync()
    {
        _left.Dispose();
        _right.Dispose();
        return Task.CompletedTask;
    }

    [Fact]
    public async Task Reads_what_was_sent_and_keeps_unconsumed_bytes()
    {
        var reader = new SocketPipeReader(_right);
        await _left.SendAsync("hello world"u8.ToArray());

        var result = await ReadAtLeastAsync(reader, 11);
        Assert.Equal("hello world", Text(result.Buffer));
        Assert.True(result.Buffer.IsSingleSegment);

        // Consume "hello ", leave "world" unexamined: the next read returns it at once.
        reader.AdvanceTo(result.Buffer.GetPosition(6));
        Assert.True(reader.TryRead(out var again));
        Assert.Equal("world", Text(again.Buffer));
        reader.AdvanceTo(again.Buffer.Start, again.Buffer.End);

        // All examined: nothing until more arrives.
        Assert.False(reader.TryRead(out _));
        await _left.SendAsync("!"u8.ToArray());
        var more = await reader.ReadAsync();
        Assert.Equal("world!", Text(more.Buffer));
        reader.AdvanceTo(more.Buffer.End);
        reader.Complete();
    }

    [Fact]
    public async Task A_message_larger_than_the_buffer_accumulates_in_one_segment()
    {
        var reader = new SocketPipeReader(_right);
        var big = new byte[100_000];
        new Random(1).NextBytes(big);
        var send = _left.SendAsync(big);

        var result = await ReadAtLeastAsync(reader, big.Length);
        await send;
        Assert.True(result.Buffer.IsSingleSegment);
        Assert.True(result.Buffer.FirstSpan.SequenceEqual(big));
        reader.AdvanceTo(result.Buffer.End);
        reader.Complete();
    }

    [Fact]
    public async Task Reports_end_of_stream()
    {
        var reader = new SocketPipeReader(_right);
        await _left.SendAsync("bye"u8.ToArray());
        _left.Shutdown(SocketShutdown.Send);

        var result = await ReadAtLeastAsync(reader, 3);
        while (!result.IsCompleted)
        {
            reader.AdvanceTo(result.Buffer.Start, result.Buffer.End);
            result = await reader.ReadAsync();
        }

        Assert.Equal("bye", Text(result.Buffer));
        reader.AdvanceTo(result.Buffer.End);
        Assert.True((await reader.ReadAsync()).IsCompleted);
        reader.Complete();
    }

    [Fact]
    public async Task Cancel_pending_read_wakes_a_waiting_reader_once()
    {
        var reader = new SocketPipeReader(_right);
        var pending = reader.ReadAsync().AsTask();
        await Task.Delay(50);
        Assert.False(pending.IsCompleted);

        reader.CancelPendingRead();
        var canceled = await pending.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(canceled.IsCanceled);
        reader.AdvanceTo(canceled.Buffer.Start);

        // The reader still works afterwards, and a cancel before the read is seen by that read.
        await _left.SendAsync("x"u8.ToArray());
        var data = await ReadAtLeastAsync(reader, 1);
        Assert.Equal("x", Text(data.Buffer));
        reader.AdvanceTo(data.Buffer.End);
        reader.CancelPendingRead();
        Assert.True((await reader.ReadAsync()).IsCanceled);
        reader.Complete();
    }

    [Fact]
    public async Task Rejects_positions_from_outside_the_buffer()
    {
        var reader = new SocketPipeReader(_right);
        await _left.SendAsync("abc"u8.ToArray());
        var result = await ReadAtLeastAsync(reader, 3);

        Assert.Throws<InvalidOperationException>(() => reader.AdvanceTo(result.Buffer.GetPosition(2), result.Buffer.GetPosition(1)));
        reader.AdvanceTo(result.Buffer.End);
        reader.Complete();
        Assert.Throws<InvalidOperationException>(() => reader.TryRead(out _));
    }

    [Fact]
    public async Task Writer_sends_everything_written_even_when_the_kernel_takes_it_in_parts()
    {
        var writer = new SocketPipeWriter(_left);
        var payload = new byte[8 << 20];
        new Random(2).NextBytes(payload);

        // 8 MiB cannot fit in the socket buffers: the flush completes only as the peer reads.
        payload.CopyTo(writer.GetSpan(payload.Length));
        writer.Advance(payload.Length);
        Assert.Equal(payload.Length, writer.UnflushedBytes);
        var flush = writer.FlushAsync().AsTask();

        var received = new byte[payload.Length];
        var total = 0;
        while (total < received.Length)
        {
            total += await _right.ReceiveAsync(received.AsMemory(total));
        }

        await flush;
        Assert.Equal(0, writer.UnflushedBytes);
        Assert.True(received.AsSpan().SequenceEqual(payload));

        // Small writes after a large one reuse a small buffer.
        "tail"u8.CopyTo(writer.GetSpan(4));
        writer.Advance(4);
        await writer.FlushAsync();
        var tail = new byte[4];
        Assert.Equal(4, await _right.ReceiveAsync(tail));
        Assert.Equal("tail", Encoding.ASCII.GetString(tail));
        writer.Complete();
        Assert.Throws<InvalidOperationException>(() => writer.GetSpan());
    }

    [Fact]
    public async Task Writer_fails_with_io_exception_when_the_peer_is_gone()
    {
        var writer = new SocketPipeWriter(_left);
        _right.LingerState = new LingerOption(true, 0);
        _right.Dispose();
        await Task.Delay(50);

        await Assert.ThrowsAsync<IOException>(async () =>
        {
            for (var i = 0; i < 100; i++)
            {
                writer.GetSpan(1024)[..1024].Fill(1);
                writer.Advance(1024);
                await writer.FlushAsync();
            }
        });
    }

    private static async Task<System.IO.Pipelines.ReadResult> ReadAtLeastAsync(SocketPipeReader reader, int length)
    {
        var result = await reader.ReadAsync();
        while (result.Buffer.Length < length && !result.IsCompleted)
        {
            reader.AdvanceTo(result.Buffer.Start, result.Buffer.End);
            result = await reader.ReadAsync();
        }

        return result;
    }

    private static string Text(System.Buffers.ReadOnlySequence<byte> buffer) => Encoding.ASCII.GetString(buffer);
}
