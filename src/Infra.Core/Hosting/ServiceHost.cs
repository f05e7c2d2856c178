using System.Net.Sockets;
using Infra.Core.Metrics;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Infra.Core.Hosting;

/// <summary>
/// Builds and runs a service as a Generic Host with the conventions every Infra service shares:
/// configuration from appsettings.json, <c>--config</c> files, <c>INFRA_</c> environment variables and
/// flags (in rising precedence); one-line console logs; metrics; and a start that fails with one
/// clear line per problem and a non-zero exit code.
/// </summary>
public static class ServiceHost
{
    /// <summary>Exit code for invalid flags or configuration.</summary>
    public const int ConfigurationError = 2;

    /// <summary>Exit code for a failure to start (e.g. the port is taken).</summary>
    public const int StartError = 1;

    public static async Task<int> RunAsync(string[] args, CommandLine commandLine, Action<HostApplicationBuilder> configure)
    {
        ArgumentNullException.ThrowIfNull(commandLine);
        ArgumentNullException.ThrowIfNull(configure);
        var parsed = commandLine.Parse(args);
        if (parsed.HelpRequested)
        {
            await Console.Out.WriteLineAsync(commandLine.Usage);
            return 0;
        }

        if (parsed.Problems.Count > 0)
        {
            await WriteProblemsAsync(commandLine.ServiceName, parsed.Problems);
            return ConfigurationError;
        }

        IHost host;
        try
        {
            host = Build(parsed, configure);
        }
        catch (OptionsValidationException ex)
        {
            await WriteProblemsAsync(commandLine.ServiceName, ex.Failures);
            return ConfigurationError;
        }
        catch (Exception ex) when (ex is InvalidDataException or FileNotFoundException or FormatException or InvalidOperationException)
        {
            await WriteProblemsAsync(commandLine.ServiceName, [ex.InnerException is null ? ex.Message : $"{ex.Message} {ex.InnerException.Message}"]);
            return ConfigurationError;
        }

        try
        {
            await host.RunAsync();
            return 0;
        }
        catch (OptionsValidationException ex)
        {
            await WriteProblemsAsync(commandLine.ServiceName, ex.Failures);
            return ConfigurationError;
        }
        catch (SocketException ex)
        {
            await WriteProblemsAsync(commandLine.ServiceName, [$"cannot listen: {ex.Message}"]);
            return StartError;
        }
        catch (IOException ex) when (ex.InnerException is SocketException or Microsoft.AspNetCore.Connections.AddressInUseException)
        {
            await WriteProblemsAsync(commandLine.ServiceName, [$"cannot listen: {ex.Message}"]);
            return StartError;
        }
        finally
        {
            if (host is IAsyncDisposable asyncDisposable)
            {
                await asyncDisposable.DisposeAsync();
            }
            else
            {
                host.Dispose();
            }
        }
    }

    private static IHost Build(CommandLine.Parsed parsed, Action<HostApplicationBuilder> configure)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings
        {
            DisableDefaults = true,
            ContentRootPath = AppContext.BaseDirectory,
            EnvironmentName = Environment.GetEnvironmentVariable("INFRA_ENVIRONMENT") ?? Environments.Production,
        });

        builder.Configuration.AddJsonFile("appsettings.json", optional: true, reloadOnChange: false);
        foreach (var file in parsed.ConfigFiles)
        {
            var path = Path.GetFullPath(file);
            if (!File.Exists(path))
            {
                throw new FileNotFoundException($"--config: {file} does not exist");
            }

            builder.Configuration.AddJsonFile(path, optional: false, reloadOnChange: false);
        }

        builder.Configuration.AddEnvironmentVariables("INFRA_");
        builder.Configuration.AddInMemoryCollection(parsed.Values);

        builder.Logging.ClearProviders();
        builder.Logging.AddConfiguration(builder.Configuration.GetSection("Logging"));
        if (builder.Configuration["LogLevel"] is { } level)
        {
            if (!Enum.TryParse<LogLevel>(level, ignoreCase: true, out var parsedLevel))
            {
                throw new FormatException($"--log-level: '{level}' is not one of Trace, Debug, Information, Warning, Error, Critical, None");
            }

            builder.Logging.SetMinimumLevel(parsedLevel);
        }

        // Kestrel and the host narrate at Information; the admin endpoint is ours to announce.
        builder.Logging.AddFilter("Microsoft", LogLevel.Warning);
        builder.Logging.AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "HH:mm:ss.fff ";
            o.UseUtcTimestamp = false;
        });
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(30));
        builder.Services.AddMetrics();
        builder.Services.AddSingleton<PrometheusMetrics>();
        builder.Services.AddSingleton(TimeProvider.System);

        configure(builder);
        return builder.Build();
    }

    private static async Task WriteProblemsAsync(string serviceName, IEnumerable<string> problems)
    {
        foreach (var problem in problems)
        {
            await Console.Error.WriteLineAsync($"{serviceName}: error: {problem}");
        }
    }
}
