using Infra.WebNode.Api;

namespace Infra.WebNode.Tests;

public sealed class StaticAssetsTests
{
    [Fact]
    public void Static_files_carry_a_content_hash_in_their_names()
    {
        var assets = new StaticAssets();
        Assert.Contains(assets.Files, f => System.Text.RegularExpressions.Regex.IsMatch(f, @"^app\.[0-9a-f]{8}\.js$"));
        Assert.Contains(assets.Files, f => System.Text.RegularExpressions.Regex.IsMatch(f, @"^app\.[0-9a-f]{8}\.css$"));
    }
}
