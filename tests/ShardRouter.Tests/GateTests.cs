using Infra.ShardRouter.Routing;

namespace Infra.ShardRouter.Tests;

/// <summary>
/// The gate a slot's traffic (or fan-outs) passes while the slot changes owner. Waits are bounded by
/// a deadline so a broken gate fails the test instead of hanging it; nothing relies on timing.
/// </summary>
public sealed class GateTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task An_open_gate_lets_requests_through_at_once()
    {
        var gate = new Gate();
        Assert.False(gate.IsClosed);
        var first = gate.EnterAsync(CancellationToken.None);
        var second = gate.EnterAsync(CancellationToken.None);
        Assert.True(first.IsCompletedSuccessfully);
        Assert.True(second.IsCompletedSuccessfully);
        (await first).Dispose();
        (await second).Dispose();

        // Nobody is inside, so closing is immediate.
        var close = gate.CloseAsync(CancellationToken.None);
        Assert.True(close.IsCompletedSuccessfully);
        Assert.True(gate.IsClosed);
        gate.Open();
        Assert.False(gate.IsClosed);
    }

    [Fact]
    public async Task Closing_waits_until_everyone_inside_has_left()
    {
        var gate = new Gate();
        var a = await gate.EnterAsync(CancellationToken.None);
        var b = await gate.EnterAsync(CancellationToken.None);

        var close = gate.CloseAsync(CancellationToken.None);
        Assert.True(gate.IsClosed);
        Assert.False(close.IsCompleted);

        a.Dispose();
        Assert.False(close.IsCompleted);

        // A second closer waits for the same moment.
        var again = gate.CloseAsync(CancellationToken.None);
        Assert.False(again.IsCompleted);

        b.Dispose();
        await close.WaitAsync(Deadline);
        await again.WaitAsync(Deadline);
        Assert.True(gate.IsClosed);
    }

    [Fact]
    public async Task Entering_a_closed_gate_waits_until_it_opens()
    {
        var gate = new Gate();
        await gate.CloseAsync(CancellationToken.None);
        var waiting = Enumerable.Range(0, 5).Select(_ => gate.EnterAsync(CancellationToken.None).AsTask()).ToArray();
        Assert.All(waiting, w => Assert.False(w.IsCompleted));

        gate.Open();
        var passes = await Task.WhenAll(waiting).WaitAsync(Deadline);
        Assert.False(gate.IsClosed);

        // They are inside now: the next close waits for all of them.
        var close = gate.CloseAsync(CancellationToken.None);
        for (var i = 0; i < passes.Length; i++)
        {
            Assert.False(close.IsCompleted);
            passes[i].Dispose();
        }

        await close.WaitAsync(Deadline);
    }

    [Fact]
    public async Task The_gate_can_close_and_open_many_times()
    {
        var gate = new Gate();
        for (var round = 0; round < 3; round++)
        {
            var pass = await gate.EnterAsync(CancellationToken.None);
            var close = gate.CloseAsync(CancellationToken.None);
            Assert.False(close.IsCompleted);
            var late = gate.EnterAsync(CancellationToken.None).AsTask();
            pass.Dispose();
            await close.WaitAsync(Deadline);
            Assert.False(late.IsCompleted);
            gate.Open();
            (await late.WaitAsync(Deadline)).Dispose();
        }

        Assert.True(gate.CloseAsync(CancellationToken.None).IsCompletedSuccessfully);
    }

    [Fact]
    public async Task A_waiting_enter_can_be_cancelled_and_does_not_count_as_inside()
    {
        var gate = new Gate();
        await gate.CloseAsync(CancellationToken.None);
        using var cts = new CancellationTokenSource();
        var waiting = gate.EnterAsync(cts.Token).AsTask();
        var other = gate.EnterAsync(CancellationToken.None).AsTask();
        Assert.False(waiting.IsCompleted);

        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting.WaitAsync(Deadline));

        // The other waiter is unaffected, and the cancelled one never got in.
        Assert.False(other.IsCompleted);
        gate.Open();
        var pass = await other.WaitAsync(Deadline);
        var close = gate.CloseAsync(CancellationToken.None);
        Assert.False(close.IsCompleted);
        pass.Dispose();
        await close.WaitAsync(Deadline);

        // Already cancelled: refused at once when closed, let in when open.
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => gate.EnterAsync(cancelled.Token).AsTask());
        gate.Open();
        (await gate.EnterAsync(cancelled.Token)).Dispose();
    }

    [Fact]
    public async Task A_cancelled_close_opens_the_gate_again()
    {
        var gate = new Gate();
        var inside = await gate.EnterAsync(CancellationToken.None);
        using var cts = new CancellationTokenSource();
        var close = gate.CloseAsync(cts.Token);
        var waiting = gate.EnterAsync(CancellationToken.None).AsTask();
        Assert.False(close.IsCompleted);
        Assert.False(waiting.IsCompleted);

        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => close.WaitAsync(Deadline));

        // Nobody is left holding a closed gate: the waiter gets in.
        Assert.False(gate.IsClosed);
        var pass = await waiting.WaitAsync(Deadline);
        inside.Dispose();
        pass.Dispose();
        Assert.True(gate.CloseAsync(CancellationToken.None).IsCompletedSuccessfully);
    }

    [Fact]
    public void A_default_pass_releases_nothing()
    {
        var gate = new Gate();
        default(Gate.Pass).Dispose();
        Assert.True(gate.CloseAsync(CancellationToken.None).IsCompletedSuccessfully);
    }

    [Fact]
    public async Task Nobody_is_inside_while_the_gate_is_closed()
    {
        var gate = new Gate();
        var inside = 0;
        using var stop = new CancellationTokenSource();
        var workers = Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
        {
            var entered = 0;
            while (!stop.IsCancellationRequested)
            {
                Gate.Pass pass;
                try
                {
                    pass = await gate.EnterAsync(stop.Token);
                }
                catch (OperationCanceledException)
                {
                    break;
                }

                Interlocked.Increment(ref inside);
                await Task.Yield();
                Interlocked.Decrement(ref inside);
                pass.Dispose();
                entered++;
            }

            return entered;
        })).ToArray();

        for (var round = 0; round < 200; round++)
        {
            await gate.CloseAsync(CancellationToken.None).WaitAsync(Deadline);
            Assert.Equal(0, Volatile.Read(ref inside));
            await Task.Yield();
            Assert.Equal(0, Volatile.Read(ref inside));
            gate.Open();
            await Task.Yield();
        }

        await stop.CancelAsync();
        var counts = await Task.WhenAll(workers).WaitAsync(Deadline);
        Assert.True(counts.Sum() > 0);
    }
}
