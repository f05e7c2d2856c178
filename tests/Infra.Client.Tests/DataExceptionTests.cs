using Infra.Client.Data;

namespace Infra.Client.Tests;

public sealed class DataExceptionTests
{
    [Theory]
    [InlineData("SlotClosed", true)] // a slot closed for a move: the write was not applied (the web node answered 500)
    [InlineData("FailingOver", true)]
    [InlineData("Busy", true)]
    [InlineData("StaleEpoch", true)]
    [InlineData("SqlError", false)]
    [InlineData("BadRequest", false)]
    [InlineData("Conflict", false)]
    public void Retriable_codes_are_those_a_retry_can_fix(string code, bool retriable) =>
        Assert.Equal(retriable, new DataException(code, "x").IsRetriable);
}
