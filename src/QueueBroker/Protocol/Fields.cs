using System.Text;
using Infra.QueueBroker.Log;

namespace Infra.QueueBroker.Protocol;

/// <summary>Typed access to a request's argument map; every wrong or missing field is a BadRequest naming it.</summary>
internal sealed class Fields(Dictionary<string, object?> map)
{
    public static readonly Fields Empty = new([]);

    public string Text(string name) => Get(name) switch
    {
        string s => s,
        null => throw Missing(name),
        _ => throw Wrong(name, "a string"),
    };

    public string? OptionalText(string name) => Get(name) switch
    {
        null => null,
        string s => s,
        _ => throw Wrong(name, "a string"),
    };

    public long Number(string name) => OptionalNumber(name) ?? throw Missing(name);

    public long? OptionalNumber(string name) => Get(name) switch
    {
        null => null,
        long l => l,
        ulong u when u <= long.MaxValue => (long)u,
        _ => throw Wrong(name, "an integer"),
    };

    public int Int(string name, int min, int max) => OptionalInt(name, min, max) ?? throw Missing(name);

    public int? OptionalInt(string name, int min, int max)
    {
        var value = OptionalNumber(name);
        if (value is null)
        {
            return null;
        }

        return value < min || value > max ? throw new BrokerException(ErrorCode.BadRequest, $"field '{name}' must be {min}..{max}, not {value}") : (int)value;
    }

    public List<string> TextList(string name)
    {
        var list = Get(name) as List<object?> ?? throw Wrong(name, "an array of strings");
        return [.. list.Select(item => item as string ?? throw Wrong(name, "an array of strings"))];
    }

    public List<object?> List(string name) => Get(name) as List<object?> ?? throw Wrong(name, "an array");

    private object? Get(string name) => map.GetValueOrDefault(name);

    /// <summary>A message as [key (bin or nil), headers (map of string to bin/string, or nil), payload (bin)].</summary>
    public static LogMessage Message(object? item)
    {
        if (item is not List<object?> { Count: 3 } parts)
        {
            throw new BrokerException(ErrorCode.BadRequest, "each message must be [key, headers, payload]");
        }

        var key = parts[0] switch
        {
            null => null,
            byte[] b => b,
            string s => Encoding.UTF8.GetBytes(s),
            _ => throw new BrokerException(ErrorCode.BadRequest, "message key must be bytes, a string or nil"),
        };
        var headers = parts[1] switch
        {
            null => [],
            Dictionary<string, object?> map => map.Select(kv => new MessageHeader(kv.Key, kv.Value switch
            {
                byte[] b => b,
                string s => Encoding.UTF8.GetBytes(s),
                _ => throw new BrokerException(ErrorCode.BadRequest, $"header '{kv.Key}' must be bytes or a string"),
            })).ToList(),
            _ => throw new BrokerException(ErrorCode.BadRequest, "message headers must be a map or nil"),
        };
        var payload = parts[2] switch
        {
            byte[] b => b,
            string s => Encoding.UTF8.GetBytes(s),
            _ => throw new BrokerException(ErrorCode.BadRequest, "message payload must be bytes"),
        };
        return new LogMessage(key, headers, payload);
    }

    private static BrokerException Missing(string name) => new(ErrorCode.BadRequest, $"field '{name}' is required");

    private static BrokerException Wrong(string name, string what) => new(ErrorCode.BadRequest, $"field '{name}' must be {what}");
}
