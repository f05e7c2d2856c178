namespace Infra.IntegrationTests.Harness;

/// <summary>Where the built services are: same configuration as this test assembly.</summary>
internal static class Artifacts
{
    private static readonly Lazy<string> Root = new(() =>
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Infra.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("Infra.sln not found above " + AppContext.BaseDirectory);
    });

    public static string RepositoryRoot => Root.Value;

    /// <summary>Debug or Release: the folder after bin/ in this assembly's path.</summary>
    public static string Configuration
    {
        get
        {
            var parts = AppContext.BaseDirectory.Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries);
            var bin = Array.LastIndexOf(parts, "bin");
            return bin >= 0 && bin + 1 < parts.Length ? parts[bin + 1] : "Debug";
        }
    }

    public static string LoadBalancer => Built("src/LoadBalancer", "Infra.LoadBalancer.dll");

    public static string CacheServer => Built("src/CacheServer", "Infra.CacheServer.dll");

    public static string QueueBroker => Built("src/QueueBroker", "Infra.QueueBroker.dll");

    public static string DataNode => Built("src/DataNode", "Infra.DataNode.dll");

    public static string ShardRouter => Built("src/ShardRouter", "Infra.ShardRouter.dll");

    public static string WebNode => Built("src/WebNode", "Infra.WebNode.dll");

    public static string Cli => Built("src/Infra.Cli", "Infra.Cli.dll");

    public static string TestBackend => Built("tests/Infra.TestBackend", "Infra.TestBackend.dll");

    private static string Built(string project, string assembly)
    {
        var path = Path.Combine(RepositoryRoot, project, "bin", Configuration, "net10.0", assembly);
        return File.Exists(path) ? path : throw new FileNotFoundException($"{assembly} is not built; run dotnet build first", path);
    }
}
