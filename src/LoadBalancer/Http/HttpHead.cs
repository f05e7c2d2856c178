using System.Buffers;
using System.Text;

namespace Infra.LoadBalancer.Http;

/// <summary>Header fields whose meaning the proxy acts on; the rest pass through untouched.</summary>
internal enum KnownHeader : byte
{
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    TE,
    Upgrade,
    Expect,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    Via,
}

internal enum HttpMethod : byte
{
    Other,
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Trace,
    Connect,
}

/// <summary>How the length of a message body is known (RFC 9112 §6.3).</summary>
internal enum BodyFraming : byte
{
    None,
    ContentLength,
    Chunked,

    /// <summary>Response only: the body runs until the backend closes the connection.</summary>
    UntilClose,
}

/// <summary>One header line, as offsets into <see cref="HttpHead"/>'s buffer.</summary>
internal struct HeaderField
{
    public int NameStart;
    public int NameLength;
    public int ValueStart;
    public int ValueLength;
    public KnownHeader Kind;

    /// <summary>Named by the Connection header, so hop-by-hop: not forwarded.</summary>
    public bool Nominated;
}

/// <summary>
/// A parsed request or response head. The raw lines are copied into one buffer as they complete and
/// every element is an offset into it, so parsing allocates nothing and the head can be forwarded
/// field by field. One instance is reused for every message of a connection.
/// </summary>
internal sealed class HttpHead : IDisposable
{
    private const int InitialBufferSize = 1024;
    private const int InitialFieldCapacity = 16;

    private byte[] _buffer;
    private HeaderField[] _fields;

    public HttpHead()
    {
        _buffer = ArrayPool<byte>.Shared.Rent(InitialBufferSize);
        _fields = new HeaderField[InitialFieldCapacity];
    }

    /// <summary>Bytes of head lines stored so far (CRLFs included).</summary>
    public int Length { get; private set; }

    /// <summary>Bytes of header lines (excluding the start line), checked against the header limit.</summary>
    public int HeaderBytes { get; set; }

    public int FieldCount { get; private set; }

    public bool StartLineDone { get; set; }

    public int LeadingEmptyLines { get; set; }

    public bool IsEmpty => Length == 0 && LeadingEmptyLines == 0;

    // Start line.
    public bool IsHttp11 { get; set; }

    public HttpMethod Method { get; set; }

    public Range MethodRange { get; set; }

    public Range TargetRange { get; set; }

    public int StatusCode { get; set; }

    public Range ReasonRange { get; set; }

    // What the analysis of the fields found.
    public BodyFraming Framing { get; set; }

    public long ContentLength { get; set; } = -1;

    public bool ConnectionClose { get; set; }

    public bool ConnectionKeepAlive { get; set; }

    public bool ConnectionUpgrade { get; set; }

    public int UpgradeField { get; set; } = -1;

    public int HostField { get; set; } = -1;

    public bool ExpectContinue { get; set; }

    public bool HasNominatedFields { get; set; }

    public ReadOnlySpan<byte> Method8 => _buffer.AsSpan(MethodRange);

    public ReadOnlySpan<byte> Target => _buffer.AsSpan(TargetRange);

    public ReadOnlySpan<byte> Reason => _buffer.AsSpan(ReasonRange);

    public ReadOnlySpan<HeaderField> Fields => _fields.AsSpan(0, FieldCount);

    public ReadOnlySpan<byte> Name(in HeaderField field) => _buffer.AsSpan(field.NameStart, field.NameLength);

    public ReadOnlySpan<byte> Value(in HeaderField field) => _buffer.AsSpan(field.ValueStart, field.ValueLength);

    public ref HeaderField Field(int index) => ref _fields[index];

    /// <summary>Whether the request may be sent twice (RFC 9110 §9.2.2).</summary>
    public bool IsIdempotent => Method is HttpMethod.Get or HttpMethod.Head or HttpMethod.Options
        or HttpMethod.Put or HttpMethod.Delete or HttpMethod.Trace;

    public bool HasBody => Framing == BodyFraming.Chunked || (Framing == BodyFraming.ContentLength && ContentLength > 0);

    /// <summary>Reserves room for a line of <paramref name="length"/> bytes and returns where it goes.</summary>
    public Span<byte> AppendLine(int length, out int offset)
    {
        if (Length + length > _buffer.Length)
        {
            var bigger = ArrayPool<byte>.Shared.Rent(Math.Max(_buffer.Length * 2, Length + length));
            _buffer.AsSpan(0, Length).CopyTo(bigger);
            ArrayPool<byte>.Shared.Return(_buffer);
            _buffer = bigger;
        }

        offset = Length;
        var span = _buffer.AsSpan(Length, length);
        Length += length;
        return span;
    }

    /// <summary>Forgets the line just appended (a tolerated empty line before the request line).</summary>
    public void DropLastLine(int length) => Length -= length;

    public void AddField(int nameStart, int nameLength, int valueStart, int valueLength, KnownHeader kind)
    {
        if (FieldCount == _fields.Length)
        {
            Array.Resize(ref _fields, _fields.Length * 2);
        }

        _fields[FieldCount++] = new HeaderField
        {
            NameStart = nameStart,
            NameLength = nameLength,
            ValueStart = valueStart,
            ValueLength = valueLength,
            Kind = kind,
        };
    }

    public void Reset()
    {
        Length = 0;
        HeaderBytes = 0;
        FieldCount = 0;
        StartLineDone = false;
        LeadingEmptyLines = 0;
        IsHttp11 = false;
        Method = HttpMethod.Other;
        MethodRange = default;
        TargetRange = default;
        StatusCode = 0;
        ReasonRange = default;
        Framing = BodyFraming.None;
        ContentLength = -1;
        ConnectionClose = false;
        ConnectionKeepAlive = false;
        ConnectionUpgrade = false;
        UpgradeField = -1;
        HostField = -1;
        ExpectContinue = false;
        HasNominatedFields = false;
    }

    /// <summary>The first value of a field, for logs and tests; allocates.</summary>
    public string? GetValueString(string name)
    {
        foreach (ref readonly var field in Fields)
        {
            if (System.Text.Ascii.EqualsIgnoreCase(Name(field), Encoding.ASCII.GetBytes(name)))
            {
                return Encoding.Latin1.GetString(Value(field));
            }
        }

        return null;
    }

    public string MethodString => Encoding.ASCII.GetString(Method8);

    public string TargetString => Encoding.ASCII.GetString(Target);

    public void Dispose()
    {
        if (_buffer.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(_buffer);
            _buffer = [];
        }
    }
}
