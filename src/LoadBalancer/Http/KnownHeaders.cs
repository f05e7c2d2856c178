using System.Text;

namespace Infra.LoadBalancer.Http;

internal static class KnownHeaders
{
    public static KnownHeader Classify(ReadOnlySpan<byte> name) => name.Length switch
    {
        2 when Ascii.EqualsIgnoreCase(name, "TE"u8) => KnownHeader.TE,
        3 when Ascii.EqualsIgnoreCase(name, "Via"u8) => KnownHeader.Via,
        4 when Ascii.EqualsIgnoreCase(name, "Host"u8) => KnownHeader.Host,
        6 when Ascii.EqualsIgnoreCase(name, "Expect"u8) => KnownHeader.Expect,
        7 when Ascii.EqualsIgnoreCase(name, "Upgrade"u8) => KnownHeader.Upgrade,
        10 when Ascii.EqualsIgnoreCase(name, "Connection"u8) => KnownHeader.Connection,
        10 when Ascii.EqualsIgnoreCase(name, "Keep-Alive"u8) => KnownHeader.KeepAlive,
        14 when Ascii.EqualsIgnoreCase(name, "Content-Length"u8) => KnownHeader.ContentLength,
        15 when Ascii.EqualsIgnoreCase(name, "X-Forwarded-For"u8) => KnownHeader.XForwardedFor,
        16 when Ascii.EqualsIgnoreCase(name, "Proxy-Connection"u8) => KnownHeader.ProxyConnection,
        16 when Ascii.EqualsIgnoreCase(name, "X-Forwarded-Host"u8) => KnownHeader.XForwardedHost,
        17 when Ascii.EqualsIgnoreCase(name, "Transfer-Encoding"u8) => KnownHeader.TransferEncoding,
        17 when Ascii.EqualsIgnoreCase(name, "X-Forwarded-Proto"u8) => KnownHeader.XForwardedProto,
        _ => KnownHeader.Other,
    };

    /// <summary>
    /// Hop-by-hop fields of RFC 9110 §7.6.1: they describe one connection and are never forwarded
    /// (framing is re-stated by the proxy; Upgrade is re-added for a tunnel).
    /// </summary>
    public static bool IsHopByHop(KnownHeader kind) => kind is KnownHeader.Connection or KnownHeader.KeepAlive
        or KnownHeader.ProxyConnection or KnownHeader.TE or KnownHeader.TransferEncoding or KnownHeader.Upgrade;
}
