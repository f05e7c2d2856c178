using System.Text.Json;
using Infra.WebNode.Api;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging.Abstractions;

namespace Infra.WebNode.Tests;

public sealed class GuardTests
{
    [Fact]
    public async Task An_unexpected_exception_is_the_apis_json_500_without_the_headers_set_before_it()
    {
        var context = new DefaultHttpContext();
        context.Response.Body = new MemoryStream();
        await WebRoutes.Guard(context, c =>
        {
            c.Response.StatusCode = StatusCodes.Status302Found;
            c.Response.Headers.Location = "https://example.com/";
            throw new InvalidOperationException("a bug");
        }, NullLogger.Instance);

        Assert.Equal(500, context.Response.StatusCode);
        Assert.False(context.Response.Headers.ContainsKey("Location"));
        await context.Response.BodyWriter.FlushAsync(); // Kestrel flushes at the end of the response
        context.Response.Body.Position = 0;
        using var json = await JsonDocument.ParseAsync(context.Response.Body);
        Assert.Equal("internal", json.RootElement.GetProperty("error").GetString());
        Assert.DoesNotContain("a bug", json.RootElement.GetRawText(), StringComparison.Ordinal); // no internals to the client
    }

    [Fact]
    public async Task An_exception_after_the_response_started_or_from_an_aborted_request_is_left_to_the_server()
    {
        using var aborted = new CancellationTokenSource();
        var context = new DefaultHttpContext { RequestAborted = aborted.Token };
        aborted.Cancel();
        await Assert.ThrowsAsync<OperationCanceledException>(() => WebRoutes.Guard(context, _ => throw new OperationCanceledException(), NullLogger.Instance));
    }

    [Theory]
    [InlineData("POST", "cross-site", null, false)] // a form on another site (login CSRF)
    [InlineData("POST", "same-site", null, false)]
    [InlineData("POST", "same-origin", null, true)]
    [InlineData("POST", "none", null, true)] // typed in by the user
    [InlineData("POST", null, "https://evil.example", false)] // an older browser: Origin only
    [InlineData("POST", null, "http://app.example:8080", true)]
    [InlineData("POST", null, "null", false)]
    [InlineData("POST", null, null, true)] // curl, scripts
    [InlineData("GET", "cross-site", "https://evil.example", true)] // a link followed from elsewhere
    public async Task A_browsers_cross_origin_write_is_refused_before_the_handler_runs(string method, string? site, string? origin, bool allowed)
    {
        var context = new DefaultHttpContext();
        context.Response.Body = new MemoryStream();
        context.Request.Method = method;
        context.Request.Host = new HostString("app.example:8080");
        if (site is not null)
        {
            context.Request.Headers["Sec-Fetch-Site"] = site;
        }

        if (origin is not null)
        {
            context.Request.Headers.Origin = origin;
        }

        var ran = false;
        await WebRoutes.Guard(context, _ =>
        {
            ran = true;
            return Task.CompletedTask;
        }, NullLogger.Instance);
        Assert.Equal(allowed, ran);
        Assert.Equal(allowed ? 200 : 403, context.Response.StatusCode);
    }
}
