using System.Text.Json;
using Infra.WebNode.Links;

namespace Infra.WebNode.Clicks;

/// <summary>
/// One redirect, as published to the queue: <c>{"id":"…","code":"…","at":ms}</c>. The id (unique
/// per event) is what the worker counts by, so an event delivered twice is counted once.
/// </summary>
internal readonly record struct ClickEvent(string Id, string Code, long At)
{
    public const int MaxIdLength = 64;

    public byte[] ToJson()
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(96);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("id", Id);
            writer.WriteString("code", Code);
            writer.WriteNumber("at", At);
            writer.WriteEndObject();
        }

        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>The event, or null (with the reason) for anything that is not one.</summary>
    public static ClickEvent? TryParse(ReadOnlySpan<byte> json, out string? problem)
    {
        string? id = null, code = null;
        long? at = null;
        try
        {
            var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = 4 });
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                problem = "not a JSON object";
                return null;
            }

            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var name = reader.GetString();
                reader.Read();
                switch (name)
                {
                    case "id" when reader.TokenType == JsonTokenType.String:
                        id = reader.GetString();
                        break;
                    case "code" when reader.TokenType == JsonTokenType.String:
                        code = reader.GetString();
                        break;
                    case "at" when reader.TokenType == JsonTokenType.Number && reader.TryGetInt64(out var ms):
                        at = ms;
                        break;
                    default:
                        reader.Skip();
                        break;
                }
            }

            if (reader.TokenType != JsonTokenType.EndObject || reader.Read())
            {
                problem = "trailing or truncated JSON";
                return null;
            }
        }
        catch (JsonException ex)
        {
            problem = "malformed JSON: " + ex.Message;
            return null;
        }

        if (id is not { Length: > 0 and <= MaxIdLength })
        {
            problem = "id missing or longer than 64 characters";
            return null;
        }

        if (code is null || !LinkCodes.IsCode(code))
        {
            problem = "code missing or not a link code";
            return null;
        }

        if (at is null)
        {
            problem = "at missing or not an integer";
            return null;
        }

        problem = null;
        return new ClickEvent(id, code, at.Value);
    }
}
