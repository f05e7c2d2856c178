using System.Globalization;
using System.Net;
using Microsoft.Extensions.Configuration;

namespace Infra.Core.Configuration;

/// <summary>
/// Reads typed settings from configuration and records every value it cannot use as one line in
/// <see cref="Problems"/>, so a bad configuration is reported whole instead of one error per restart.
/// Durations and sizes take the human forms of <see cref="OptionValues"/> (<c>1s</c>, <c>64k</c>).
/// </summary>
public sealed class ConfigReader
{
    private readonly IConfiguration _configuration;

    public ConfigReader(IConfiguration configuration, List<string> problems)
    {
        _configuration = configuration;
        Problems = problems;
    }

    public List<string> Problems { get; }

    public IConfiguration Configuration => _configuration;

    public string? Text(string key, string? defaultValue)
    {
        var value = _configuration[key];
        return value is null ? defaultValue : value.Trim();
    }

    public int Number(string key, int defaultValue, int min, int max)
    {
        var value = _configuration[key];
        if (value is null)
        {
            return defaultValue;
        }

        if (!int.TryParse(value.Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var parsed))
        {
            Problems.Add($"{key}: '{value}' is not a whole number");
            return defaultValue;
        }

        if (parsed < min || parsed > max)
        {
            Problems.Add($"{key}: {parsed} is outside {min}..{max}");
            return defaultValue;
        }

        return parsed;
    }

    public bool Flag(string key, bool defaultValue)
    {
        var value = _configuration[key];
        if (value is null)
        {
            return defaultValue;
        }

        switch (value.Trim().ToUpperInvariant())
        {
            case "TRUE" or "1" or "YES" or "ON":
                return true;
            case "FALSE" or "0" or "NO" or "OFF":
                return false;
            default:
                Problems.Add($"{key}: '{value}' is not true or false");
                return defaultValue;
        }
    }

    public TimeSpan Duration(string key, TimeSpan defaultValue, TimeSpan min, TimeSpan max)
    {
        var value = _configuration[key];
        if (value is null)
        {
            return defaultValue;
        }

        if (!OptionValues.TryParseDuration(value, out var parsed))
        {
            Problems.Add($"{key}: '{value}' is not a duration (use e.g. 500ms, 2s, 1m)");
            return defaultValue;
        }

        if (parsed < min || parsed > max)
        {
            Problems.Add($"{key}: {value} is outside {Format(min)}..{Format(max)}");
            return defaultValue;
        }

        return parsed;
    }

    public long Size(string key, long defaultValue, long min, long max)
    {
        var value = _configuration[key];
        if (value is null)
        {
            return defaultValue;
        }

        if (!OptionValues.TryParseSize(value, out var parsed))
        {
            Problems.Add($"{key}: '{value}' is not a size (use e.g. 8192, 64k, 1m)");
            return defaultValue;
        }

        if (parsed < min || parsed > max)
        {
            Problems.Add($"{key}: {value} is outside {min}..{max} bytes");
            return defaultValue;
        }

        return parsed;
    }

    public IPEndPoint ListenEndPoint(string key, string defaultValue)
    {
        var value = _configuration[key] ?? defaultValue;
        if (!OptionValues.TryParseListenEndPoint(value, out var endPoint))
        {
            Problems.Add($"{key}: '{value}' is not host:port (e.g. 127.0.0.1:8080, [::1]:8080, *:8080)");
            endPoint = OptionValues.TryParseListenEndPoint(defaultValue, out var fallback) ? fallback : new IPEndPoint(IPAddress.Loopback, 0);
        }

        return endPoint;
    }

    /// <summary>
    /// Reads a list: the children of <paramref name="key"/> (<c>Key:0</c>, <c>Key:1</c>, … as JSON arrays
    /// and repeated flags produce) in index order.
    /// </summary>
    public IReadOnlyList<IConfigurationSection> List(string key)
    {
        return _configuration.GetSection(key).GetChildren()
            .OrderBy(c => int.TryParse(c.Key, NumberStyles.None, CultureInfo.InvariantCulture, out var i) ? i : int.MaxValue)
            .ToList();
    }

    private static string Format(TimeSpan value) => value.TotalSeconds >= 1
        ? string.Create(CultureInfo.InvariantCulture, $"{value.TotalSeconds:0.###}s")
        : string.Create(CultureInfo.InvariantCulture, $"{value.TotalMilliseconds:0.###}ms");
}
