using System.Globalization;
using System.Text.Json;

namespace Infra.Core.Framing;

/// <summary>
/// SQL values in the HTTP/JSON APIs (data node, shard router): null, numbers (integers stay
/// integers), strings, booleans (1/0) and blobs as <c>{"base64": "…"}</c>. Anything else is refused:
/// values are bound as parameters, never spliced into SQL.
/// </summary>
public static class SqlJson
{
    /// <summary>The SQL value of a JSON value, or <see cref="FormatException"/> naming <paramref name="where"/>.</summary>
    public static object? ToSqlValue(JsonElement value, string where) => value.ValueKind switch
    {
        JsonValueKind.Null => null,
        JsonValueKind.Number => value.TryGetInt64(out var l) ? (object)l : value.GetDouble(),
        JsonValueKind.String => value.GetString(),
        JsonValueKind.True => 1L,
        JsonValueKind.False => 0L,
        JsonValueKind.Object when value.TryGetProperty("base64", out var b64) && b64.ValueKind == JsonValueKind.String && value.EnumerateObject().Count() == 1 =>
            TryBase64(b64.GetString()!) ?? throw new FormatException($"{where}: \"base64\" is not valid base64"),
        _ => throw new FormatException($"{where} is not a SQL value: use null, a number, a string, true/false or {{\"base64\": \"...\"}} (values are bound as parameters, never spliced into SQL)"),
    };

    /// <summary>Writes <c>"columns": [...], "rows": [[...], ...]</c> into the current object.</summary>
    public static void WriteRows(Utf8JsonWriter w, IEnumerable<string> columns, IEnumerable<object?[]> rows)
    {
        ArgumentNullException.ThrowIfNull(w);
        ArgumentNullException.ThrowIfNull(columns);
        ArgumentNullException.ThrowIfNull(rows);
        w.WriteStartArray("columns");
        foreach (var column in columns)
        {
            w.WriteStringValue(column);
        }

        w.WriteEndArray();
        w.WriteStartArray("rows");
        foreach (var row in rows)
        {
            w.WriteStartArray();
            foreach (var value in row)
            {
                WriteValue(w, value);
            }

            w.WriteEndArray();
        }

        w.WriteEndArray();
    }

    public static void WriteValue(Utf8JsonWriter w, object? value)
    {
        ArgumentNullException.ThrowIfNull(w);
        switch (value)
        {
            case null:
                w.WriteNullValue();
                break;
            case long l:
                w.WriteNumberValue(l);
                break;
            case double d when double.IsFinite(d):
                w.WriteNumberValue(d);
                break;
            case double d:
                w.WriteStringValue(d.ToString(CultureInfo.InvariantCulture));
                break;
            case string s:
                w.WriteStringValue(s);
                break;
            case byte[] b:
                w.WriteStartObject();
                w.WriteBase64String("base64", b);
                w.WriteEndObject();
                break;
            default:
                w.WriteStringValue(Convert.ToString(value, CultureInfo.InvariantCulture));
                break;
        }
    }

    /// <summary>The bytes of base64 text, or null when it is not valid base64.</summary>
    public static byte[]? TryBase64(string text)
    {
        var buffer = new byte[text.Length * 3 / 4 + 3];
        return Convert.TryFromBase64String(text, buffer, out var written) ? buffer[..written] : null;
    }
}
