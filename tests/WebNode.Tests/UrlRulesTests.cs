using Infra.WebNode.Links;

namespace Infra.WebNode.Tests;

public sealed class UrlRulesTests
{
    [Theory]
    [InlineData("https://example.com", "https://example.com/")]
    [InlineData("  http://example.com/a?b=c#d  ", "http://example.com/a?b=c#d")]
    [InlineData("https://EXAMPLE.com:8443/x", "https://example.com:8443/x")]
    [InlineData("https://例え.jp/", "https://xn--r8jz45g.jp/")]
    [InlineData("https://example.com/ü?q=ß", "https://example.com/%C3%BC?q=%C3%9F")]
    public void Http_and_https_urls_are_accepted_and_normalised(string input, string expected)
    {
        var (url, problem) = UrlRules.Check(input, 2048);
        Assert.Null(problem);
        Assert.Equal(expected, url);
    }

    [Theory]
    [InlineData(null, "required")]
    [InlineData("", "required")]
    [InlineData("   ", "required")]
    [InlineData("example.com", "absolute")]
    [InlineData("/relative/path", "http or https")]
    [InlineData("javascript:alert(1)", "http or https")]
    [InlineData("data:text/html,<script>alert(1)</script>", "http or https")]
    [InlineData("file:///etc/passwd", "http or https")]
    [InlineData("ftp://example.com/", "http or https")]
    [InlineData("https://user:secret@example.com/", "user name")]
    [InlineData("https://exa mple.com/", "spaces")]
    [InlineData("https://example.com/\r\nSet-Cookie: x=y", "control")]
    [InlineData("https://example.com/\0", "control")]
    [InlineData("http://", "absolute")]
    public void Everything_else_is_refused_with_a_reason(string? input, string reason)
    {
        var (url, problem) = UrlRules.Check(input, 2048);
        Assert.Null(url);
        Assert.Contains(reason, problem, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("http://-ü.com/")]
    [InlineData("http://ü.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/")]
    [InlineData("http://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaü.com/")]
    public void A_unicode_host_with_no_valid_ascii_form_is_refused_not_stored_as_unicode(string input)
    {
        // Found by fuzzing the web node: IdnHost hands such a host back unchanged, the URL was stored
        // with it, and every redirect of the link failed (500) on its Location header.
        var (url, problem) = UrlRules.Check(input, 2048);
        Assert.Null(url);
        Assert.Contains("internationalized domain name", problem, StringComparison.Ordinal);
    }

    [Fact]
    public void Long_urls_are_refused()
    {
        var (url, problem) = UrlRules.Check("https://example.com/" + new string('a', 3000), 2048);
        Assert.Null(url);
        Assert.Contains("longer than 2048", problem, StringComparison.Ordinal);
    }
}

public sealed class ShortUrlHostTests
{
    [Theory]
    [InlineData("example.com")]
    [InlineData("example.com:8080")]
    [InlineData("127.0.0.1:31469")]
    [InlineData("[::1]:8080")]
    [InlineData("[::1]")]
    [InlineData("localhost")]
    public void A_well_formed_host_and_port_is_used(string host) => Assert.Equal(host, Api.WebRoutes.Authority(host));

    [Theory]
    [InlineData("\"><script>")]
    [InlineData(",,,")]
    [InlineData("evil.example:99999")]
    [InlineData("evil.example:0")]
    [InlineData("évil")]
    [InlineData("a b")]
    [InlineData("user@host")]
    [InlineData("host/path")]
    [InlineData("[::1")]
    [InlineData("[::1]x")]
    [InlineData("")]
    [InlineData(null)]
    public void Anything_else_from_the_request_is_not_put_in_a_short_url(string? host)
    {
        // Found by fuzzing the web node: X-Forwarded-Host and Host went into shortUrl as sent.
        Assert.Null(Api.WebRoutes.Authority(host));
    }
}
