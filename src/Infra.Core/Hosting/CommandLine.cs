namespace Infra.Core.Hosting;

/// <summary>
/// The flags a service accepts and the configuration keys they set. Flags take <c>--name value</c> or
/// <c>--name=value</c>; list flags may repeat and fill <c>Key:0</c>, <c>Key:1</c>, …; any
/// <c>--Section:Key=value</c> sets that configuration key directly.
/// </summary>
public sealed class CommandLine
{
    public required string ServiceName { get; init; }

    /// <summary>The text <c>--help</c> prints.</summary>
    public required string Usage { get; init; }

    /// <summary>Flag (with dashes) → configuration key.</summary>
    public IReadOnlyDictionary<string, string> Switches { get; init; } = new Dictionary<string, string>();

    /// <summary>Repeatable flag (with dashes) → configuration key of the list.</summary>
    public IReadOnlyDictionary<string, string> ListSwitches { get; init; } = new Dictionary<string, string>();

    /// <summary>Result of <see cref="Parse"/>.</summary>
    public sealed record Parsed(
        IReadOnlyDictionary<string, string?> Values,
        IReadOnlyList<string> ConfigFiles,
        bool HelpRequested,
        IReadOnlyList<string> Problems);

    public Parsed Parse(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var values = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
        var files = new List<string>();
        var problems = new List<string>();
        var listCounts = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
        var help = false;

        for (var i = 0; i < args.Count; i++)
        {
            var arg = args[i];
            if (arg is "-h" or "--help" or "-?")
            {
                help = true;
                continue;
            }

            if (!arg.StartsWith("--", StringComparison.Ordinal) || arg.Length == 2)
            {
                problems.Add($"unexpected argument '{arg}' (flags look like --name value)");
                continue;
            }

            string name;
            string? value;
            var equals = arg.IndexOf('=', StringComparison.Ordinal);
            if (equals > 0)
            {
                name = arg[..equals];
                value = arg[(equals + 1)..];
            }
            else
            {
                name = arg;
                value = i + 1 < args.Count && !args[i + 1].StartsWith("--", StringComparison.Ordinal) ? args[++i] : null;
            }

            if (value is null)
            {
                problems.Add($"{name} needs a value");
                continue;
            }

            if (name.Equals("--config", StringComparison.OrdinalIgnoreCase))
            {
                files.Add(value);
            }
            else if (name.Equals("--log-level", StringComparison.OrdinalIgnoreCase))
            {
                values["LogLevel"] = value;
            }
            else if (ListSwitches.TryGetValue(name, out var listKey))
            {
                listCounts.TryGetValue(listKey, out var index);
                values[$"{listKey}:{index}"] = value;
                listCounts[listKey] = index + 1;
            }
            else if (Switches.TryGetValue(name, out var key))
            {
                values[key] = value;
            }
            else if (name.Contains(':', StringComparison.Ordinal))
            {
                values[name[2..]] = value;
            }
            else
            {
                problems.Add($"unknown option {name} (see --help)");
            }
        }

        return new Parsed(values, files, help, problems);
    }
}
