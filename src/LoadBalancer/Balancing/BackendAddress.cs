using System.Globalization;
using System.Net;

namespace Infra.LoadBalancer.Balancing;

/// <summary>
/// A backend's location: <c>http://host:port</c>. The canonical <see cref="Url"/> identifies the
/// backend in the admin API and metrics.
/// </summary>
internal sealed record BackendAddress(string Url, string Host, int Port, EndPoint EndPoint)
{
    /// <summary><c>host:port</c>, the Host header for requests that arrived without one (HTTP/1.0).</summary>
    public byte[] HostHeader { get; } = System.Text.Encoding.ASCII.GetBytes($"{Host}:{Port.ToString(CultureInfo.InvariantCulture)}");

    /// <summary>
    /// Parses <c>http://host[:port][/]</c>, optionally followed by <c>,weight=N</c> (flags) or with the
    /// weight given apart (<paramref name="weightText"/>, from a JSON object).
    /// </summary>
    public static bool TryParseWithWeight(string? text, string? weightText, out BackendAddress address, out int weight, out string error)
    {
        address = null!;
        weight = 1;
        if (string.IsNullOrWhiteSpace(text))
        {
            error = "a backend needs an address like http://127.0.0.1:9001";
            return false;
        }

        var urlPart = text.Trim();
        var comma = urlPart.IndexOf(',', StringComparison.Ordinal);
        if (comma >= 0)
        {
            var option = urlPart[(comma + 1)..].Trim();
            urlPart = urlPart[..comma].Trim();
            if (!option.StartsWith("weight=", StringComparison.OrdinalIgnoreCase))
            {
                error = $"'{text}': unknown backend option '{option}' (only weight=N)";
                return false;
            }

            weightText = option["weight=".Length..];
        }

        if (weightText is not null && !TryParseWeight(weightText, out weight, out error))
        {
            error = $"'{text}': {error}";
            return false;
        }

        return TryParse(urlPart, out address, out error);
    }

    public static bool TryParseWeight(string text, out int weight, out string error)
    {
        if (!int.TryParse(text.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out weight)
            || weight > LoadBalancerOptions.MaxWeight)
        {
            error = $"weight '{text}' is not a whole number in 0..{LoadBalancerOptions.MaxWeight}";
            weight = 1;
            return false;
        }

        error = string.Empty;
        return true;
    }

    public static bool TryParse(string? text, out BackendAddress address, out string error)
    {
        address = null!;
        if (string.IsNullOrWhiteSpace(text) || !Uri.TryCreate(text.Trim(), UriKind.Absolute, out var uri))
        {
            error = $"'{text}' is not a URL like http://127.0.0.1:9001";
            return false;
        }

        if (!string.Equals(uri.Scheme, "http", StringComparison.OrdinalIgnoreCase))
        {
            error = $"'{text}': only http:// backends are supported";
            return false;
        }

        if (uri.AbsolutePath != "/" || uri.Query.Length > 0 || uri.Fragment.Length > 0 || uri.UserInfo.Length > 0)
        {
            error = $"'{text}': a backend address is scheme, host and port only (no path, query or user)";
            return false;
        }

        var host = uri.IdnHost;
        EndPoint endPoint = IPAddress.TryParse(host, out var ip)
            ? new IPEndPoint(ip, uri.Port)
            : new DnsEndPoint(host, uri.Port);
        var hostText = uri.HostNameType == UriHostNameType.IPv6 ? $"[{ip}]" : host;
        address = new BackendAddress(
            string.Create(CultureInfo.InvariantCulture, $"http://{hostText}:{uri.Port}"),
            hostText,
            uri.Port,
            endPoint);
        error = string.Empty;
        return true;
    }

    public override string ToString() => Url;
}
