using System.Diagnostics;

namespace Infra.Cli.Tests;

public sealed class NodeLogTests
{
    [Fact]
    public async Task A_log_write_that_fails_loses_the_line_and_nothing_else()
    {
        // The write threw on the runtime's output-reader thread: a full disk ended `infra up`, and every node.
        using var node = new Node(new NodeSpec("web-1", NodeKind.Web, 3), 1, 1, "/dev/full");
        var info = new ProcessStartInfo("/bin/sh", ["-c", "echo hi; echo there"]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        using var process = Process.Start(info)!;
        node.Attach(process);
        await process.WaitForExitAsync();
        process.WaitForExit(); // and its output is read to the end
        Assert.Equal(2, node.LostLogLines);
        Assert.Equal("hi\nthere", node.Tail());
        node.CloseLog();
    }

    [Theory]
    [InlineData(0, 1)] // ran a while: restarted after a second, as before
    [InlineData(1, 1)]
    [InlineData(2, 2)]
    [InlineData(3, 4)]
    [InlineData(6, 32)]
    [InlineData(7, 60)]
    [InlineData(100, 60)]
    public void A_node_that_keeps_exiting_at_once_is_restarted_less_and_less_often(int quickExits, int seconds) =>
        Assert.Equal(TimeSpan.FromSeconds(seconds), Supervisor.RestartDelay(quickExits));
}
