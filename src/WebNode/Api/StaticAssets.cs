using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.Net.Http.Headers;

namespace Infra.WebNode.Api;

/// <summary>
/// The UI, embedded in the assembly. Each file under /static is served under a versioned name
/// (<c>app.3f9a1c2e.js</c>: the first 8 hex digits of its SHA-256) with a year-long immutable
/// Cache-Control and an ETag; the page at / is revalidated each time (no-cache + ETag) and names the
/// current versions, so a new build is picked up at once and an unchanged file is never fetched twice.
/// </summary>
internal sealed class StaticAssets
{
    private readonly Dictionary<string, Asset> _byVersionedName = new(StringComparer.Ordinal);
    private readonly Asset _index;

    public StaticAssets()
    {
        var assembly = typeof(StaticAssets).Assembly;
        var versions = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var name in assembly.GetManifestResourceNames().Where(n => n.StartsWith("wwwroot/static/", StringComparison.Ordinal)))
        {
            var file = name["wwwroot/static/".Length..];
            var bytes = Read(assembly, name);
            var hash = Convert.ToHexStringLower(SHA256.HashData(bytes))[..8];
            var dot = file.LastIndexOf('.');
            var versioned = dot < 0 ? $"{file}.{hash}" : $"{file[..dot]}.{hash}{file[dot..]}";
            versions[file] = versioned;
            _byVersionedName[versioned] = new Asset(bytes, ContentType(file), $"\"{hash}\"", "public, max-age=31536000, immutable");
        }

        // The page names each asset by its versioned name: {{app.js}} becomes /static/app.<hash>.js.
        var page = Encoding.UTF8.GetString(Read(assembly, "wwwroot/index.html"));
        foreach (var (file, versioned) in versions)
        {
            page = page.Replace("{{" + file + "}}", "/static/" + versioned, StringComparison.Ordinal);
        }

        var pageBytes = Encoding.UTF8.GetBytes(page);
        _index = new Asset(pageBytes, "text/html; charset=utf-8", $"\"{Convert.ToHexStringLower(SHA256.HashData(pageBytes))[..16]}\"", "no-cache");
    }

    /// <summary>Versioned names of the static files (for tests).</summary>
    public IReadOnlyCollection<string> Files => _byVersionedName.Keys;

    public Task ServeIndexAsync(HttpContext context) => WriteAsync(context, _index);

    public Task ServeAsync(HttpContext context)
    {
        var file = context.Request.RouteValues["file"] as string ?? "";
        if (!_byVersionedName.TryGetValue(file, out var asset))
        {
            context.Response.StatusCode = StatusCodes.Status404NotFound;
            return Task.CompletedTask;
        }

        return WriteAsync(context, asset);
    }

    private static Task WriteAsync(HttpContext context, Asset asset)
    {
        var headers = context.Response.Headers;
        headers.ETag = asset.ETag;
        headers.CacheControl = asset.CacheControl;
        headers.XContentTypeOptions = "nosniff";
        var ifNoneMatch = context.Request.Headers.IfNoneMatch;
        if (ifNoneMatch.Count > 0 && EntityTagHeaderValue.TryParseList(ifNoneMatch, out var tags)
            && tags.Any(t => t.Tag == asset.ETag || t.Equals(EntityTagHeaderValue.Any)))
        {
            context.Response.StatusCode = StatusCodes.Status304NotModified;
            return Task.CompletedTask;
        }

        context.Response.ContentType = asset.ContentType;
        context.Response.ContentLength = asset.Bytes.Length;
        return HttpMethods.IsHead(context.Request.Method) ? Task.CompletedTask : context.Response.Body.WriteAsync(asset.Bytes).AsTask();
    }

    private static byte[] Read(Assembly assembly, string name)
    {
        using var stream = assembly.GetManifestResourceStream(name) ?? throw new InvalidOperationException($"embedded resource {name} is missing");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    }

    private static string ContentType(string file) => Path.GetExtension(file) switch
    {
        ".js" => "text/javascript; charset=utf-8",
        ".css" => "text/css; charset=utf-8",
        ".svg" => "image/svg+xml",
        _ => "application/octet-stream",
    };

    private sealed record Asset(byte[] Bytes, string ContentType, string ETag, string CacheControl);
}
