using Infra.Client.Data;
using Infra.ShardRouter.Routing;

namespace Infra.ShardRouter.Tests;

/// <summary>How a data node's error becomes the router's answer.</summary>
public sealed class RouterExceptionTests
{
    [Theory]
    [InlineData("SqlError", false, "SqlError", 400)]
    [InlineData("SqlError", true, "SqlError", 400)]
    [InlineData("StaleEpoch", true, "FailingOver", 503)]
    [InlineData("Unreachable", false, "Unavailable", 503)]
    [InlineData("ConnectionLost", true, "Unavailable", 503)]
    [InlineData("BadAnswer", false, "BadAnswer", 503)]
    [InlineData("BadAnswer", true, "Unavailable", 503)]
    public void A_node_error_maps_to_a_code_and_status(string nodeCode, bool write, string code, int status)
    {
        var error = RouterException.From(new DataException(nodeCode, "reason"), "s0", "127.0.0.1:1", write);
        Assert.Equal((code, status), (error.Code, error.Status));
        Assert.Contains("reason", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("ConnectionLost")]
    [InlineData("Timeout")]
    [InlineData("BadAnswer")]
    public void A_write_whose_answer_was_lost_or_unreadable_says_it_may_have_been_applied(string nodeCode)
    {
        var error = RouterException.From(new DataException(nodeCode, "reason"), "s0", "127.0.0.1:1", write: true);
        Assert.Contains("may or may not have been applied", error.Message, StringComparison.Ordinal);
        Assert.True(error.Retriable);
    }
}
