using Infra.WebNode.Accounts;
using Infra.WebNode.Links;

namespace Infra.WebNode.Tests;

public sealed class AccountTests
{
    [Fact]
    public void A_password_verifies_against_its_own_hash_only()
    {
        var hash = Passwords.Hash("correct horse", 1000);
        Assert.StartsWith("pbkdf2-sha256$1000$", hash, StringComparison.Ordinal);
        Assert.True(Passwords.Verify("correct horse", hash));
        Assert.False(Passwords.Verify("correct horse!", hash));
        Assert.NotEqual(hash, Passwords.Hash("correct horse", 1000)); // salted
    }

    [Theory]
    [InlineData("")]
    [InlineData("plain text")]
    [InlineData("pbkdf2-sha256$1000$c2FsdA==")]
    [InlineData("pbkdf2-sha256$x$c2FsdA==$aGFzaA==")]
    [InlineData("pbkdf2-sha256$999999999$c2FsdA==$aGFzaA==")]
    [InlineData("pbkdf2-sha256$1000$not base64$aGFzaA==")]
    [InlineData("pbkdf2-sha256$1000$c2FsdA==$aGFzaA==")]
    [InlineData("md5$1000$c2FsdA==$aGFzaA==")]
    public void A_stored_value_that_is_not_our_hash_never_verifies(string stored) => Assert.False(Passwords.Verify("anything", stored));

    [Theory]
    [InlineData("abc", null)]
    [InlineData("alice.b_c-d", null)]
    [InlineData("ab", "3 to 64")]
    [InlineData(null, "3 to 64")]
    [InlineData("a b", "letters")]
    [InlineData("al'ice", "letters")]
    [InlineData("alice\u0000", "letters")]
    [InlineData("ålice", "letters")]
    public void User_names(string? name, string? problem)
    {
        var actual = Accounts.Accounts.CheckName(name);
        if (problem is null)
        {
            Assert.Null(actual);
        }
        else
        {
            Assert.Contains(problem, actual, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Passwords_have_bounds()
    {
        Assert.NotNull(Accounts.Accounts.CheckPassword("short"));
        Assert.NotNull(Accounts.Accounts.CheckPassword(null));
        Assert.NotNull(Accounts.Accounts.CheckPassword(new string('x', 257)));
        Assert.Null(Accounts.Accounts.CheckPassword("long enough"));
    }

    [Theory]
    [InlineData("123.Ab3", 123L, "Ab3")]
    [InlineData(null, null, null)]
    public void Page_cursors(string? cursor, long? at, string? code)
    {
        var parsed = LinkStore.ParseCursor(cursor);
        Assert.Equal(at, parsed?.At);
        Assert.Equal(code, parsed?.Code);
    }

    [Theory]
    [InlineData("")]
    [InlineData("123")]
    [InlineData(".Ab3")]
    [InlineData("-1.Ab3")]
    [InlineData("1.Ab3' OR 1=1")]
    [InlineData("99999999999999999999999.Ab3")]
    public void Forged_cursors_are_refused(string cursor) => Assert.Throws<FormatException>(() => LinkStore.ParseCursor(cursor));

    [Fact]
    public async Task Key_derivations_run_one_per_slot_and_a_caller_that_waits_too_long_gets_503()
    {
        // Unbounded, a flood of bad-password log-ins (free to send, ~30 ms of CPU each) took every core.
        using var gate = new KdfGate(2, TimeSpan.FromSeconds(1));
        using var release = new ManualResetEventSlim(false);
        var running = 0;
        var most = 0;
        int Work()
        {
            var now = Interlocked.Increment(ref running);
            InterlockedMax(ref most, now);
            release.Wait(TimeSpan.FromSeconds(30));
            Interlocked.Decrement(ref running);
            return 1;
        }

        var first = gate.RunAsync(Work);
        var second = gate.RunAsync(Work);
        await Assert.ThrowsAsync<Infra.WebNode.Backends.DataUnavailableException>(() => gate.RunAsync(Work)); // both slots busy past the wait
        var waiting = gate.RunAsync(Work);
        release.Set();
        Assert.Equal(new[] { 1, 1, 1 }, await Task.WhenAll(first, second, waiting));
        Assert.Equal(2, most);
    }

    private static void InterlockedMax(ref int target, int value)
    {
        int seen;
        while ((seen = Volatile.Read(ref target)) < value && Interlocked.CompareExchange(ref target, value, seen) != seen)
        {
        }
    }
}
