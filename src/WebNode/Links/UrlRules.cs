using System.Text;

namespace Infra.WebNode.Links;

/// <summary>What a link may point to: an absolute http or https URL with a host, no credentials, no control characters, not too long; returned in ASCII.</summary>
internal static class UrlRules
{
    /// <summary>The normalised URL, or the reason it is refused.</summary>
    public static (string? Url, string? Problem) Check(string? text, int maxLength)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return (null, "url is required");
        }

        text = text.Trim();
        if (text.Length > maxLength)
        {
            return (null, $"url is longer than {maxLength} characters");
        }

        foreach (var c in text)
        {
            if (char.IsControl(c) || c == ' ')
            {
                return (null, "url contains spaces or control characters");
            }
        }

        if (!Uri.TryCreate(text, UriKind.Absolute, out var uri))
        {
            return (null, "url is not an absolute URL");
        }

        if (uri.Scheme is not ("http" or "https"))
        {
            return (null, "url must be http or https");
        }

        if (string.IsNullOrEmpty(uri.Host))
        {
            return (null, "url has no host");
        }

        if (uri.UserInfo.Length > 0)
        {
            return (null, "url must not carry a user name or password");
        }

        // ASCII only (the URL goes out in a Location header): the host in its IDN (punycode) form,
        // everything else percent-encoded.
        // A host whose IDN conversion fails (a label over 63 characters once converted, a leading
        // hyphen…) comes back from IdnHost unchanged, still Unicode: refused, or every redirect of the
        // link would fail on its Location header.
        var ascii = new UriBuilder(uri) { Host = uri.IdnHost }.Uri.AbsoluteUri;
        if (!Ascii.IsValid(ascii))
        {
            return (null, "url has a host that is not a valid internationalized domain name");
        }

        return ascii.Length <= maxLength ? (ascii, null) : (null, $"url is longer than {maxLength} characters once encoded");
    }
}
