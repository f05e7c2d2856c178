using System.Globalization;
using System.Net;

namespace Infra.Core.Configuration;

/// <summary>Parsers for the value forms flags and configuration files use: durations, sizes, endpoints.</summary>
public static class OptionValues
{
    /// <summary>
    /// Parses a duration: <c>250ms</c>, <c>1s</c>, <c>1.5s</c>, <c>2m</c>, <c>1h</c>, a bare number of
    /// seconds, or a .NET <c>hh:mm:ss</c> time span.
    /// </summary>
    public static bool TryParseDuration(string? text, out TimeSpan value)
    {
        value = default;
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        var s = text.Trim();
        if (s.Contains(':', StringComparison.Ordinal))
        {
            return TimeSpan.TryParse(s, CultureInfo.InvariantCulture, out value) && value >= TimeSpan.Zero;
        }

        (string number, double scale) = s switch
        {
            _ when s.EndsWith("ms", StringComparison.OrdinalIgnoreCase) => (s[..^2], 1.0),
            _ when s.EndsWith("us", StringComparison.OrdinalIgnoreCase) => (s[..^2], 0.001),
            _ when s.EndsWith('s') || s.EndsWith('S') => (s[..^1], 1000.0),
            _ when s.EndsWith('m') || s.EndsWith('M') => (s[..^1], 60_000.0),
            _ when s.EndsWith('h') || s.EndsWith('H') => (s[..^1], 3_600_000.0),
            _ => (s, 1000.0),
        };

        if (!double.TryParse(number, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var amount)
            || double.IsNaN(amount) || amount < 0 || amount * scale > TimeSpan.MaxValue.TotalMilliseconds / 2)
        {
            return false;
        }

        value = TimeSpan.FromMilliseconds(amount * scale);
        return true;
    }

    /// <summary>Parses a byte size: <c>512</c>, <c>64k</c>, <c>16KiB</c>, <c>1m</c>, <c>2GB</c> (binary multiples).</summary>
    public static bool TryParseSize(string? text, out long value)
    {
        value = 0;
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        var s = text.Trim().ToUpperInvariant();
        if (s.EndsWith("IB", StringComparison.Ordinal))
        {
            s = s[..^2];
        }
        else if (s.EndsWith('B'))
        {
            s = s[..^1];
        }

        long multiplier = 1;
        if (s.Length > 0 && char.IsLetter(s[^1]))
        {
            multiplier = s[^1] switch
            {
                'K' => 1L << 10,
                'M' => 1L << 20,
                'G' => 1L << 30,
                'T' => 1L << 40,
                _ => 0,
            };
            if (multiplier == 0)
            {
                return false;
            }

            s = s[..^1];
        }

        if (!long.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out var amount))
        {
            return false;
        }

        try
        {
            value = checked(amount * multiplier);
            return true;
        }
        catch (OverflowException)
        {
            return false;
        }
    }

    /// <summary>
    /// Parses <c>host:port</c> for a listening socket: an IPv4 or bracketed IPv6 address, <c>localhost</c>,
    /// or <c>*</c> for every interface. Port 0 asks the kernel for a free port.
    /// </summary>
    public static bool TryParseListenEndPoint(string? text, out IPEndPoint endPoint)
    {
        endPoint = new IPEndPoint(IPAddress.Loopback, 0);
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        var s = text.Trim();
        if (s.StartsWith("http://", StringComparison.OrdinalIgnoreCase))
        {
            s = s["http://".Length..].TrimEnd('/');
        }

        var colon = s.LastIndexOf(':');
        if (colon <= 0 || colon == s.Length - 1)
        {
            return false;
        }

        var hostPart = s[..colon];
        if (!int.TryParse(s.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port > 65535)
        {
            return false;
        }

        IPAddress? address;
        if (hostPart is "*" or "0.0.0.0")
        {
            address = IPAddress.Any;
        }
        else if (hostPart.Equals("localhost", StringComparison.OrdinalIgnoreCase))
        {
            address = IPAddress.Loopback;
        }
        else if (hostPart.StartsWith('[') && hostPart.EndsWith(']'))
        {
            if (!IPAddress.TryParse(hostPart[1..^1], out address) || address.AddressFamily != System.Net.Sockets.AddressFamily.InterNetworkV6)
            {
                return false;
            }
        }
        else if (!IPAddress.TryParse(hostPart, out address) || address.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork)
        {
            return false;
        }

        endPoint = new IPEndPoint(address, port);
        return true;
    }

    /// <summary>
    /// Parses <c>host:port</c> for connecting: an IP address (IPv6 in brackets) or a host name, and a
    /// port 1..65535.
    /// </summary>
    public static bool TryParseHostPort(string? text, out string host, out int port)
    {
        host = "";
        port = 0;
        var s = text?.Trim() ?? "";
        var colon = s.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(s.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out port) || port is 0 or > 65535)
        {
            port = 0;
            return false;
        }

        host = s[..colon].Trim('[', ']');
        return host.Length > 0;
    }

    /// <summary>Formats an endpoint as the URL a client would use, e.g. <c>http://127.0.0.1:8080</c>.</summary>
    public static string ToUrl(string scheme, IPEndPoint endPoint)
    {
        ArgumentNullException.ThrowIfNull(endPoint);
        var host = endPoint.Address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6
            ? $"[{endPoint.Address}]"
            : endPoint.Address.ToString();
        return string.Create(CultureInfo.InvariantCulture, $"{scheme}://{host}:{endPoint.Port}");
    }
}
