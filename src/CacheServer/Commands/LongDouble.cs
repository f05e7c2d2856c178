using System.Globalization;
using System.Numerics;
using System.Text;

namespace Infra.CacheServer.Commands;

/// <summary>
/// The number INCRBYFLOAT and HINCRBYFLOAT add in: Redis parses both operands with <c>strtold</c> into C's
/// <c>long double</c> (on x86-64 Linux the x87 80-bit format: a 64-bit significand), adds them, and prints
/// the sum with <c>"%.17Lf"</c>, trailing zeros trimmed. With a double instead, 0.1 + 0.2 prints
/// 0.30000000000000004 where Redis prints 0.3, so this emulates that format exactly with big integers:
/// correctly rounded (to nearest, ties to even) when parsed and when added, subnormals and overflow as
/// the hardware has them, and printed from the exact binary value. Not fast; these commands are not hot.
/// Hexadecimal input (<c>0x1p3</c>, which <c>strtold</c> reads) is refused.
/// </summary>
internal readonly struct LongDouble
{
    private const int SignificandBits = 64;

    /// <summary>The exponent of the last significand bit of the smallest subnormal, 2^-16445.</summary>
    private const int MinExponent = -16445;

    /// <summary>Values of 2^16384 and more do not fit (the largest is (2^64 - 1) × 2^16320).</summary>
    private const int OverflowBits = 16384;

    /// <summary>Redis reads numbers of up to this many characters (MAX_LONG_DOUBLE_CHARS).</summary>
    private const int MaxTextLength = 5 * 1024;

    private static readonly BigInteger OneShl64 = BigInteger.One << SignificandBits;
    private static readonly BigInteger TenPow17 = BigInteger.Pow(10, 17);

    // value = ±Significand × 2^Exponent, Significand < 2^64 (zero for ±0).
    private readonly BigInteger _significand;
    private readonly int _exponent;
    private readonly bool _negative;

    private LongDouble(bool negative, BigInteger significand, int exponent, bool infinite = false)
    {
        _negative = negative;
        _significand = significand;
        _exponent = exponent;
        IsInfinity = infinite;
    }

    public bool IsInfinity { get; }

    /// <summary>
    /// Redis's <c>string2ld</c>: a decimal number (sign, digits, point, exponent) or inf/infinity; no spaces
    /// around it, nothing after it. NaN, and a number too large or too small to be anything but infinity or
    /// zero, are refused (strtold's ERANGE).
    /// </summary>
    public static bool TryParse(ReadOnlySpan<byte> text, out LongDouble value)
    {
        value = default;
        if (text.IsEmpty || text.Length >= MaxTextLength)
        {
            return false;
        }

        var at = 0;
        var negative = false;
        if (text[0] is (byte)'+' or (byte)'-')
        {
            negative = text[0] == (byte)'-';
            at = 1;
        }

        var rest = text[at..];
        if (Ascii.EqualsIgnoreCase(rest, "inf"u8) || Ascii.EqualsIgnoreCase(rest, "infinity"u8))
        {
            value = new LongDouble(negative, BigInteger.Zero, 0, infinite: true);
            return true;
        }

        // Digits (at most one point among them), then an optional exponent.
        var digits = new StringBuilder(rest.Length);
        var seenDigit = false;
        var seenPoint = false;
        var scale = 0L;
        while (at < text.Length && (char.IsAsciiDigit((char)text[at]) || (text[at] == (byte)'.' && !seenPoint)))
        {
            if (text[at] == (byte)'.')
            {
                seenPoint = true;
            }
            else
            {
                seenDigit = true;
                digits.Append((char)text[at]);
                if (seenPoint)
                {
                    scale--;
                }
            }

            at++;
        }

        if (!seenDigit)
        {
            return false;
        }

        if (at < text.Length && text[at] is (byte)'e' or (byte)'E')
        {
            at++;
            var exponentNegative = false;
            if (at < text.Length && text[at] is (byte)'+' or (byte)'-')
            {
                exponentNegative = text[at] == (byte)'-';
                at++;
            }

            var exponentStart = at;
            var exponent = 0L;
            while (at < text.Length && char.IsAsciiDigit((char)text[at]))
            {
                exponent = Math.Min(exponent * 10 + (text[at] - '0'), 1_000_000_000); // past any number's range
                at++;
            }

            if (at == exponentStart)
            {
                return false;
            }

            scale += exponentNegative ? -exponent : exponent;
        }

        if (at != text.Length)
        {
            return false;
        }

        var significant = digits.ToString().TrimStart('0');
        if (significant.Length == 0)
        {
            value = new LongDouble(negative, BigInteger.Zero, 0);
            return true;
        }

        // Decimal magnitude: mantissa × 10^scale lies in [10^(magnitude - 1), 10^magnitude).
        var mantissa = BigInteger.Parse(significant, NumberStyles.None, CultureInfo.InvariantCulture);
        var magnitude = scale + significant.Length;
        if (magnitude > 4934 || magnitude < -4952)
        {
            return false; // beyond 1.19e4932 (infinity) or below 3.65e-4951 (zero): ERANGE, refused as Redis does
        }

        value = scale >= 0
            ? Round(negative, mantissa * BigInteger.Pow(10, (int)scale), BigInteger.One, 0)
            : Round(negative, mantissa, BigInteger.Pow(10, (int)-scale), 0);
        return !value.IsInfinity && !value._significand.IsZero;
    }

    /// <summary>The sum, rounded to nearest (ties to even) as the hardware adds; infinite past the largest value.</summary>
    public static LongDouble operator +(LongDouble left, LongDouble right)
    {
        if (left.IsInfinity || right.IsInfinity)
        {
            return new LongDouble(false, BigInteger.Zero, 0, infinite: true); // inf, or NaN: refused alike by the callers
        }

        var exponent = Math.Min(left._exponent, right._exponent);
        var sum = left.Signed() << (left._exponent - exponent);
        sum += right.Signed() << (right._exponent - exponent);
        if (sum.IsZero)
        {
            return new LongDouble(left._negative && right._negative, BigInteger.Zero, 0); // -0 + -0 = -0, else +0
        }

        return Round(sum.Sign < 0, BigInteger.Abs(sum), BigInteger.One, exponent);
    }

    /// <summary>
    /// <c>printf("%.17Lf")</c> of the exact value, trailing zeros (and a trailing point) removed, and "-0" as
    /// "0": what Redis stores and answers.
    /// </summary>
    public override string ToString()
    {
        if (IsInfinity)
        {
            return _negative ? "-inf" : "inf";
        }

        BigInteger scaled; // round(|value| × 10^17), ties to even
        if (_exponent >= 0)
        {
            scaled = (_significand << _exponent) * TenPow17;
        }
        else
        {
            var numerator = _significand * TenPow17;
            var shift = -_exponent;
            scaled = numerator >> shift;
            var remainder = numerator - (scaled << shift);
            var half = BigInteger.One << (shift - 1);
            if (remainder > half || (remainder == half && !scaled.IsEven))
            {
                scaled += 1;
            }
        }

        var digits = scaled.ToString(CultureInfo.InvariantCulture).PadLeft(18, '0');
        var text = (digits[..^17] + "." + digits[^17..]).TrimEnd('0').TrimEnd('.');
        return _negative && text != "0" ? "-" + text : text;
    }

    private BigInteger Signed() => _negative ? -_significand : _significand;

    /// <summary>±(numerator / denominator) × 2^exponent, rounded to a 64-bit significand (ties to even).</summary>
    private static LongDouble Round(bool negative, BigInteger numerator, BigInteger denominator, int exponent)
    {
        // Pick e so that the quotient numerator / denominator × 2^-e has 64 bits, and no lower than the
        // subnormals' exponent allows.
        var e = (long)(numerator.GetBitLength() - denominator.GetBitLength()) - SignificandBits + 1;
        while (true)
        {
            var at = Math.Max(e, (long)MinExponent - exponent);
            var (n, d) = at >= 0 ? (numerator, denominator << (int)at) : (numerator << (int)-at, denominator);
            var quotient = BigInteger.DivRem(n, d, out var remainder);
            if (quotient >= OneShl64)
            {
                e++; // the estimate was one short
                continue;
            }

            if (quotient < (OneShl64 >> 1) && at == e && e > (long)MinExponent - exponent)
            {
                e--; // one long (unless it is a subnormal, which has fewer bits)
                continue;
            }

            var twice = remainder << 1;
            if (twice > d || (twice == d && !quotient.IsEven))
            {
                quotient += 1;
            }

            var finalExponent = at + exponent;
            if (quotient == OneShl64)
            {
                quotient >>= 1;
                finalExponent++;
            }

            if (quotient.IsZero)
            {
                return new LongDouble(negative, BigInteger.Zero, 0);
            }

            return quotient.GetBitLength() + finalExponent > OverflowBits
                ? new LongDouble(negative, BigInteger.Zero, 0, infinite: true)
                : new LongDouble(negative, quotient, (int)finalExponent);
        }
    }
}
