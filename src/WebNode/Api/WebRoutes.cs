using System.Globalization;
using System.Text.Json;
using Infra.Client.Data;
using Infra.Core.Admin;
using Infra.WebNode.Accounts;
using Infra.WebNode.Backends;
using Infra.WebNode.Clicks;
using Infra.WebNode.Links;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;

namespace Infra.WebNode.Api;

/// <summary>The site: the JSON API under /api, redirects at /{code}, the UI at / and /static.</summary>
internal sealed partial class WebRoutes(
    WebOptions options,
    Accounts.Accounts accounts,
    Sessions sessions,
    LinkStore links,
    ClickPublisher clicks,
    WebMetrics metrics,
    StaticAssets assets,
    ILogger<WebRoutes> logger) : IAdminRoutes
{
    public const int MaxPageSize = 100;

    public void Map(IEndpointRouteBuilder routes)
    {
        routes.MapPost("/api/signup", context => Guard(context, SignUpAsync));
        routes.MapPost("/api/login", context => Guard(context, LogInAsync));
        routes.MapPost("/api/logout", context => Guard(context, LogOutAsync));
        routes.MapGet("/api/me", context => Guard(context, MeAsync));
        routes.MapPost("/api/links", context => Guard(context, CreateLinkAsync));
        routes.MapGet("/api/links/{code}", context => Guard(context, LinkStatsAsync));
        routes.MapGet("/api/me/links", context => Guard(context, MyLinksAsync));
        routes.MapGet("/", assets.ServeIndexAsync);
        routes.MapGet("/static/{file}", assets.ServeAsync);
        routes.MapGet("/{code}", context => Guard(context, RedirectAsync));
    }

    private Task Guard(HttpContext context, Func<HttpContext, Task> handler) => Guard(context, handler, logger);

    /// <summary>Runs a handler and turns what it throws into the API's JSON errors.</summary>
    internal static async Task Guard(HttpContext context, Func<HttpContext, Task> handler, ILogger logger)
    {
        try
        {
            if (IsCrossOriginWrite(context.Request))
            {
                await ErrorAsync(context, StatusCodes.Status403Forbidden, "forbidden", "a cross-origin request may not change anything here");
                return;
            }

            await handler(context);
        }
        catch (DataUnavailableException ex)
        {
            LogUnavailable(logger, context.Request.Path, ex.Message);
            context.Response.Headers.RetryAfter = "1";
            await ErrorAsync(context, StatusCodes.Status503ServiceUnavailable, "unavailable", ex.Message);
        }
        catch (JsonException ex)
        {
            await ErrorAsync(context, StatusCodes.Status400BadRequest, "bad_request", "the body is not valid JSON: " + ex.Message);
        }
        catch (BadHttpRequestException ex)
        {
            await ErrorAsync(context, ex.StatusCode, "bad_request", ex.Message);
        }
        catch (FormatException ex)
        {
            await ErrorAsync(context, StatusCodes.Status400BadRequest, "bad_request", ex.Message);
        }
        catch (DataException ex)
        {
            LogDataError(logger, context.Request.Path, ex.Message);
            await ErrorAsync(context, StatusCodes.Status500InternalServerError, "internal", "the database refused the request");
        }
        catch (Exception ex) when (!context.Response.HasStarted && !context.RequestAborted.IsCancellationRequested && ex is not OutOfMemoryException)
        {
            // A bug, or a dependency failing in a way nobody expected: the API's JSON error, not Kestrel's
            // empty 500, and the exception in the log with the path that hit it.
            LogUnhandled(logger, ex, context.Request.Path);
            context.Response.Clear(); // a Location or cookie set before the failure must not go out with it
            await ErrorAsync(context, StatusCodes.Status500InternalServerError, "internal", "internal error");
        }
    }

    // ------------------------------------------------------------------ accounts

    private async Task SignUpAsync(HttpContext context)
    {
        var (name, password) = await ReadCredentialsAsync(context);
        if (Accounts.Accounts.CheckName(name) is { } badName)
        {
            await ErrorAsync(context, 400, "bad_request", badName);
            return;
        }

        if (Accounts.Accounts.CheckPassword(password) is { } badPassword)
        {
            await ErrorAsync(context, 400, "bad_request", badPassword);
            return;
        }

        if (!await accounts.SignUpAsync(name!, password!))
        {
            await ErrorAsync(context, StatusCodes.Status409Conflict, "taken", "that username is taken");
            return;
        }

        metrics.Signups.Add(1);
        await StartSessionAsync(context, name!, StatusCodes.Status201Created);
    }

    private async Task LogInAsync(HttpContext context)
    {
        var (name, password) = await ReadCredentialsAsync(context);
        if (Accounts.Accounts.CheckName(name) is not null || Accounts.Accounts.CheckPassword(password) is not null
            || !await accounts.VerifyAsync(name!, password!))
        {
            metrics.Logins.Add(1, new KeyValuePair<string, object?>("outcome", "refused"));
            await ErrorAsync(context, StatusCodes.Status401Unauthorized, "unauthorized", "wrong username or password");
            return;
        }

        metrics.Logins.Add(1, new KeyValuePair<string, object?>("outcome", "ok"));
        await StartSessionAsync(context, name!, StatusCodes.Status200OK);
    }

    private async Task StartSessionAsync(HttpContext context, string name, int status)
    {
        if (await sessions.CreateAsync(name) is not { } session)
        {
            throw new DataUnavailableException("the cache tier cannot hold a session now");
        }

        context.Response.Cookies.Append(Sessions.Cookie, session.Id, new CookieOptions
        {
            HttpOnly = true,
            SameSite = SameSiteMode.Lax,
            Path = "/",
            MaxAge = options.SessionTtl,
            Secure = IsHttps(context),
        });
        context.Response.StatusCode = status;
        await JsonHttp.WriteAsync(context, w =>
        {
            w.WriteStartObject();
            w.WriteString("username", name);
            w.WriteEndObject();
        });
    }

    private async Task LogOutAsync(HttpContext context)
    {
        if (context.Request.Cookies[Sessions.Cookie] is { } id && !await sessions.DeleteAsync(id))
        {
            // A cache server that may hold the session did not answer: it would serve it again once back
            // (a copied cookie with it). Not "logged out" then: the cookie stays, so a retry can finish it.
            throw new DataUnavailableException("the session could not be ended: a cache server that may hold it did not answer; try again");
        }

        context.Response.Cookies.Delete(Sessions.Cookie, new CookieOptions { Path = "/" });
        context.Response.StatusCode = StatusCodes.Status204NoContent;
    }

    private async Task MeAsync(HttpContext context)
    {
        if (await RequireSessionAsync(context) is not { } session)
        {
            return;
        }

        await JsonHttp.WriteAsync(context, w =>
        {
            w.WriteStartObject();
            w.WriteString("username", session.User);
            w.WriteEndObject();
        });
    }

    // ------------------------------------------------------------------ links

    private async Task CreateLinkAsync(HttpContext context)
    {
        if (await RequireSessionAsync(context) is not { } session)
        {
            return;
        }

        using var body = await JsonHttp.ReadAsync(context);
        var text = body?.RootElement is { ValueKind: JsonValueKind.Object } root && root.TryGetProperty("url", out var url) && url.ValueKind == JsonValueKind.String
            ? url.GetString()
            : null;
        var (normalised, problem) = UrlRules.Check(text, options.MaxUrlLength);
        if (problem is not null)
        {
            await ErrorAsync(context, 400, "bad_request", problem);
            return;
        }

        var created = await links.CreateAsync(session.User, normalised!);
        await sessions.RememberWriteAsync(session, created.Token);
        context.Response.StatusCode = StatusCodes.Status201Created;
        context.Response.Headers.Location = "/api/links/" + created.Code;
        await JsonHttp.WriteAsync(context, w =>
        {
            w.WriteStartObject();
            w.WriteString("code", created.Code);
            w.WriteString("shortUrl", ShortUrl(context, created.Code));
            w.WriteEndObject();
        });
    }

    private async Task RedirectAsync(HttpContext context)
    {
        var code = (string)context.Request.RouteValues["code"]!;
        if (!LinkCodes.IsCode(code))
        {
            await ErrorAsync(context, 404, "not_found", "no such link");
            return;
        }

        string? url;
        try
        {
            url = await links.ResolveAsync(code);
        }
        catch (DataUnavailableException)
        {
            metrics.Redirects.Add(1, new KeyValuePair<string, object?>("outcome", "unavailable"));
            throw;
        }

        if (url is null)
        {
            metrics.Redirects.Add(1, new KeyValuePair<string, object?>("outcome", "not_found"));
            await ErrorAsync(context, 404, "not_found", "no such link");
            return;
        }

        // The Location first: a URL it refuses (only a link stored before the create-time check was
        // complete) fails before a click is counted for it.
        context.Response.Headers.Location = url;
        context.Response.StatusCode = StatusCodes.Status302Found;
        context.Response.Headers.CacheControl = "private, max-age=0";
        metrics.Redirects.Add(1, new KeyValuePair<string, object?>("outcome", "found"));
        clicks.TryPublish(code);
    }

    private async Task LinkStatsAsync(HttpContext context)
    {
        var code = (string)context.Request.RouteValues["code"]!;
        var link = LinkCodes.IsCode(code) ? await links.GetAsync(code) : null;
        if (link is null)
        {
            await ErrorAsync(context, 404, "not_found", "no such link");
            return;
        }

        await JsonHttp.WriteAsync(context, w =>
        {
            w.WriteStartObject();
            w.WriteString("code", link.Code);
            w.WriteString("url", link.Url);
            w.WriteNumber("clicks", link.Clicks);
            w.WriteString("createdAt", DateTimeOffset.FromUnixTimeMilliseconds(link.CreatedAt).ToString("O", CultureInfo.InvariantCulture));
            w.WriteEndObject();
        });
    }

    private async Task MyLinksAsync(HttpContext context)
    {
        if (await RequireSessionAsync(context) is not { } session)
        {
            return;
        }

        var limit = 20;
        if (context.Request.Query["limit"] is { Count: > 0 } limitText
            && (!int.TryParse(limitText.ToString(), NumberStyles.None, CultureInfo.InvariantCulture, out limit) || limit is < 1 or > MaxPageSize))
        {
            await ErrorAsync(context, 400, "bad_request", $"limit must be 1 to {MaxPageSize}");
            return;
        }

        var cursor = context.Request.Query["cursor"] is { Count: > 0 } c ? c.ToString() : null;
        var (page, partial) = await links.ListAsync(session.User, cursor, limit, session.Tokens);
        await JsonHttp.WriteAsync(context, w =>
        {
            w.WriteStartObject();
            w.WriteStartArray("links");
            foreach (var link in page.Links)
            {
                w.WriteStartObject();
                w.WriteString("code", link.Code);
                w.WriteString("url", link.Url);
                w.WriteString("shortUrl", ShortUrl(context, link.Code));
                w.WriteNumber("clicks", link.Clicks);
                w.WriteString("createdAt", DateTimeOffset.FromUnixTimeMilliseconds(link.CreatedAt).ToString("O", CultureInfo.InvariantCulture));
                w.WriteEndObject();
            }

            w.WriteEndArray();
            if (page.Next is { } next)
            {
                w.WriteString("next", next);
            }
            else
            {
                w.WriteNull("next");
            }

            w.WriteBoolean("partial", partial);
            w.WriteEndObject();
        });
    }

    // ------------------------------------------------------------------ helpers

    private async Task<Session?> RequireSessionAsync(HttpContext context)
    {
        var session = await sessions.GetAsync(context.Request.Cookies[Sessions.Cookie]);
        if (session is null)
        {
            await ErrorAsync(context, StatusCodes.Status401Unauthorized, "unauthorized", "log in first");
        }

        return session;
    }

    private static async Task<(string? Name, string? Password)> ReadCredentialsAsync(HttpContext context)
    {
        using var body = await JsonHttp.ReadAsync(context);
        if (body?.RootElement is not { ValueKind: JsonValueKind.Object } root)
        {
            return (null, null);
        }

        return (Text(root, "username"), Text(root, "password"));

        static string? Text(JsonElement root, string name) =>
            root.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;
    }

    private string ShortUrl(HttpContext context, string code)
    {
        if (options.PublicUrl is { } publicUrl)
        {
            return publicUrl.AbsoluteUri.TrimEnd('/') + "/" + code;
        }

        // Without --public-url the host comes from the request, which a client that reaches a web node
        // directly controls: only a well-formed host[:port] is used (found by fuzzing: "\"><script>",
        // ",,,", a port of 99999 and an empty Host all went into the link).
        var host = Authority(FirstValue(context.Request.Headers["X-Forwarded-Host"])) ?? Authority(context.Request.Host.Value) ?? "localhost";
        return (IsHttps(context) ? "https" : "http") + "://" + host + "/" + code;
    }

    /// <summary><paramref name="text"/> when it is a host name or IP literal with an optional port (1–65535), else null.</summary>
    internal static string? Authority(string? text)
    {
        if (string.IsNullOrEmpty(text) || text.Length > 255 || !System.Text.Ascii.IsValid(text) || text.Contains(' ', StringComparison.Ordinal))
        {
            return null;
        }

        // An IPv6 literal in one pair of brackets, nothing else bracketed; the port, when there is one, 1..65535.
        var bracketed = text.StartsWith('[');
        if (text.Count(c => c is '[' or ']') != (bracketed ? 2 : 0))
        {
            return null;
        }

        var host = Infra.Core.Configuration.OptionValues.TryParseHostPort(text, out var withPort, out _) ? withPort : text.Trim('[', ']');
        var kind = Uri.CheckHostName(host);
        return kind is UriHostNameType.Dns or UriHostNameType.IPv4 or UriHostNameType.IPv6 && (kind == UriHostNameType.IPv6) == bracketed ? text : null;
    }

    private static bool IsHttps(HttpContext context) =>
        FirstValue(context.Request.Headers["X-Forwarded-Proto"]) is { } proto ? proto == "https" : context.Request.IsHttps;

    private static string? FirstValue(Microsoft.Extensions.Primitives.StringValues values)
    {
        var text = values.ToString();
        if (text.Length == 0)
        {
            return null;
        }

        var comma = text.IndexOf(',', StringComparison.Ordinal);
        return (comma < 0 ? text : text[..comma]).Trim();
    }

    /// <summary>
    /// A browser's request from another site that would change something (log in, sign up, make a link):
    /// refused, as the fetch metadata it sends says where it came from. The JSON bodies are read whatever
    /// their Content-Type (so curl -d works), and a form with enctype=text/plain can post one: without this
    /// a page anywhere could log its visitor in to the attacker's account (login CSRF; SameSite=Lax keeps
    /// the visitor's cookie from that POST, not the answer's cookie from the visitor). Clients without
    /// these headers (curl, scripts, old browsers) are not browsers acting for someone else.
    /// </summary>
    internal static bool IsCrossOriginWrite(HttpRequest request)
    {
        if (HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method) || HttpMethods.IsOptions(request.Method))
        {
            return false;
        }

        if (request.Headers["Sec-Fetch-Site"] is { Count: > 0 } site)
        {
            return site.ToString() is not ("same-origin" or "none");
        }

        if (request.Headers.Origin is { Count: > 0 } origin)
        {
            return !(Uri.TryCreate(origin.ToString(), UriKind.Absolute, out var from)
                && string.Equals(from.Authority, request.Host.Value, StringComparison.OrdinalIgnoreCase));
        }

        return false;
    }

    internal static Task ErrorAsync(HttpContext context, int status, string error, string message)
    {
        context.Response.StatusCode = status;
        return JsonHttp.WriteAsync(context, w =>
        {
            w.WriteStartObject();
            w.WriteString("error", error);
            w.WriteString("message", message);
            w.WriteEndObject();
        });
    }

    [LoggerMessage(EventId = 730, Level = LogLevel.Debug, Message = "{Path}: 503, a dependency is unavailable: {Reason}")]
    private static partial void LogUnavailable(ILogger logger, string path, string reason);

    [LoggerMessage(EventId = 731, Level = LogLevel.Warning, Message = "{Path}: the database refused the request: {Reason}")]
    private static partial void LogDataError(ILogger logger, string path, string reason);

    [LoggerMessage(EventId = 732, Level = LogLevel.Error, Message = "{Path}: 500, unhandled exception")]
    private static partial void LogUnhandled(ILogger logger, Exception exception, string path);
}
