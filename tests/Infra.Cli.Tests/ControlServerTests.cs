using Microsoft.AspNetCore.Http;

namespace Infra.Cli.Tests;

public sealed class ControlServerTests
{
    [Theory]
    [InlineData("127.0.0.1:40123", null, null, true)] // the infra command, curl
    [InlineData("localhost:40123", null, "none", true)]
    [InlineData("127.0.0.1:40123", "http://evil.example", null, false)] // a page's fetch (no preflight for a bodiless POST)
    [InlineData("127.0.0.1:40123", null, "cross-site", false)]
    [InlineData("evil.example:40123", null, null, false)] // a DNS name rebound to 127.0.0.1
    public void Only_tools_on_this_machine_may_use_the_control_endpoint(string host, string? origin, string? site, bool allowed)
    {
        var context = new DefaultHttpContext();
        context.Request.Host = new HostString(host);
        if (origin is not null)
        {
            context.Request.Headers.Origin = origin;
        }

        if (site is not null)
        {
            context.Request.Headers["Sec-Fetch-Site"] = site;
        }

        Assert.Equal(allowed, ControlServer.IsFromThisMachinesTools(context.Request));
    }
}
