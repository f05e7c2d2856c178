using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace Infra.Core.Configuration;

/// <summary>
/// Base of every service's options: bound by hand from configuration through a
/// <see cref="ConfigReader"/> (so <c>1s</c> and <c>64k</c> work and every bad value is reported), then
/// checked as a whole. Invalid options stop the process at start with one line per problem.
/// </summary>
public abstract class ServiceOptions
{
    internal List<string> BindProblems { get; } = [];

    /// <summary>Reads every setting; values it cannot use go to <see cref="ConfigReader.Problems"/>.</summary>
    public abstract void Bind(ConfigReader reader);

    /// <summary>Binds from <paramref name="configuration"/>, keeping the problems for <see cref="Validate"/>.</summary>
    public void BindFrom(IConfiguration configuration) => Bind(new ConfigReader(configuration, BindProblems));

    /// <summary>Checks that hold across settings (e.g. a timeout shorter than an interval).</summary>
    protected virtual IEnumerable<string> CheckConsistency() => [];

    public IReadOnlyList<string> Validate() => [.. BindProblems, .. CheckConsistency()];
}

public static class ServiceOptionsExtensions
{
    /// <summary>Binds <typeparamref name="T"/> from the root configuration and validates it at start.</summary>
    public static IServiceCollection AddServiceOptions<T>(this IServiceCollection services)
        where T : ServiceOptions, new()
    {
        services.AddOptions<T>()
            .Configure<IConfiguration>(static (options, configuration) => options.BindFrom(configuration))
            .ValidateOnStart();
        services.AddSingleton<IValidateOptions<T>, ServiceOptionsValidator<T>>();
        return services;
    }

    private sealed class ServiceOptionsValidator<T> : IValidateOptions<T>
        where T : ServiceOptions
    {
        public ValidateOptionsResult Validate(string? name, T options)
        {
            var problems = options.Validate();
            return problems.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(problems);
        }
    }
}
