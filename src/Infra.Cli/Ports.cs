using System.Net;
using System.Net.Sockets;
using System.Text.Json;

namespace Infra.Cli;

/// <summary>
/// The ports of every node, chosen once per data directory and kept in <c>ports.json</c>: the
/// shard router's stored map names data nodes by address, and a node restarted later must come
/// back where the others look for it. Fresh ports are free ones outside the kernel's ephemeral range
/// (see <see cref="FreePort"/>).
/// </summary>
internal static class Ports
{
    public const string FileName = "ports.json";
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    public static Dictionary<string, int[]> LoadOrAssign(string dataDir, IReadOnlyList<NodeSpec> nodes, int lbPort)
    {
        var path = Path.Combine(dataDir, FileName);
        var ports = File.Exists(path)
            ? JsonSerializer.Deserialize<Dictionary<string, int[]>>(File.ReadAllText(path)) ?? []
            : [];
        var taken = new HashSet<int>(ports.Values.SelectMany(p => p));
        if (lbPort != 0 && ports.FirstOrDefault(p => p.Key != "lb" && p.Value.Contains(lbPort)) is { Key: { } holder })
        {
            // Two nodes on one port: the second never listened. (The other node cannot move: data nodes are
            // known to the router's stored map by address.)
            throw new InvalidDataException($"--lb-port {lbPort} is {holder}'s port in {path}; choose another (or 0)");
        }

        foreach (var node in nodes)
        {
            var wanted = node.Kind is NodeKind.Web or NodeKind.Worker ? 1 : 2;
            if (ports.TryGetValue(node.Name, out var known) && known.Length == wanted
                && (node.Kind != NodeKind.LoadBalancer || (lbPort == 0 ? IsFree(known[0]) : known[0] == lbPort)))
            {
                // (--lb-port 0 keeps the load balancer's port while it is free: taken since, all the other
                // nodes started before the load balancer failed to listen, and the stack was torn down.)
                continue;
            }

            var fresh = new int[wanted];
            for (var i = 0; i < wanted; i++)
            {
                fresh[i] = i == 0 && node.Kind == NodeKind.LoadBalancer && lbPort != 0 ? lbPort : FreePort(taken);
                taken.Add(fresh[i]);
            }

            ports[node.Name] = fresh;
        }

        File.WriteAllText(path, JsonSerializer.Serialize(ports, Indented));
        return ports;
    }

    /// <summary>
    /// A port nothing listens on, drawn at random from below the kernel's ephemeral range
    /// (<c>ip_local_port_range</c>): ports from that range are what port 0 and every outgoing
    /// connection get, so between choosing one here and the node binding it, a test's client
    /// connection or another program's listener could take it. Falls back to port 0 where the
    /// range cannot be read or leaves no room below it.
    /// </summary>
    public static int FreePort(ISet<int>? avoid = null)
    {
        if (UnsharedRange() is var (low, high))
        {
            for (var attempt = 0; attempt < 1000; attempt++)
            {
                var port = Random.Shared.Next(low, high);
                if ((avoid is null || !avoid.Contains(port)) && IsFree(port))
                {
                    return port;
                }
            }
        }

        for (var attempt = 0; ; attempt++)
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            var port = ((IPEndPoint)socket.LocalEndPoint!).Port;
            if (avoid is null || !avoid.Contains(port) || attempt > 100)
            {
                return port;
            }
        }
    }

    /// <summary>Ports [low, high) that the kernel never hands out on its own, or null.</summary>
    internal static (int Low, int High)? UnsharedRange()
    {
        const int Floor = 10000; // below: well-known and registered services people run
        try
        {
            var fields = File.ReadAllText("/proc/sys/net/ipv4/ip_local_port_range").Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            return fields.Length == 2 && int.TryParse(fields[0], out var ephemeralLow) && ephemeralLow > Floor + 1000 ? (Floor, ephemeralLow) : null;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>True when nothing listens on the port now.</summary>
    public static bool IsFree(int port)
    {
        try
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            socket.Bind(new IPEndPoint(IPAddress.Loopback, port));
            socket.Listen();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
