namespace Infra.CacheServer.Commands;

/// <summary>SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE, PUBLISH (StackExchange.Redis subscribes on connect).</summary>
internal static class PubSubCommands
{
    public static void Subscribe(ref CommandContext c) => Change(ref c, subscribe: true, pattern: false);

    public static void PSubscribe(ref CommandContext c) => Change(ref c, subscribe: true, pattern: true);

    public static void Unsubscribe(ref CommandContext c) => Change(ref c, subscribe: false, pattern: false);

    public static void PUnsubscribe(ref CommandContext c) => Change(ref c, subscribe: false, pattern: true);

    public static void Publish(ref CommandContext c) => c.Reply.Integer(c.Server.PubSub.Publish(c.Text(1), c.Arg(2).ToArray()));

    /// <summary>Drops every subscription of a session (RESET, disconnect).</summary>
    public static void UnsubscribeAll(CacheSession session)
    {
        foreach (var channel in session.Channels)
        {
            session.Server.PubSub.Unsubscribe(channel, session);
        }

        foreach (var pattern in session.Patterns)
        {
            session.Server.PubSub.PUnsubscribe(pattern, session);
        }

        session.Channels.Clear();
        session.Patterns.Clear();
        session.Client.Channels = 0;
        session.Client.Patterns = 0;
    }

    private static void Change(ref CommandContext c, bool subscribe, bool pattern)
    {
        var session = c.Session;
        var names = session.Channels;
        var hub = c.Server.PubSub;
        var kind = (subscribe, pattern) switch
        {
            (true, false) => "subscribe",
            (true, true) => "psubscribe",
            (false, false) => "unsubscribe",
            _ => "punsubscribe",
        };
        var targets = new List<string>();
        for (var i = 1; i < c.Count; i++)
        {
            targets.Add(c.Text(i));
        }

        var set = pattern ? session.Patterns : names;
        if (!subscribe && targets.Count == 0)
        {
            targets.AddRange(set);
            if (targets.Count == 0)
            {
                // Nothing to leave: one reply with a null name, as Redis gives.
                c.Reply.PushHeader(3);
                c.Reply.Bulk(kind);
                c.Reply.Null();
                c.Reply.Integer(session.Channels.Count + session.Patterns.Count);
                return;
            }
        }

        if (subscribe)
        {
            session.EnablePushes();
        }

        foreach (var target in targets)
        {
            if (subscribe && set.Add(target))
            {
                if (pattern)
                {
                    hub.PSubscribe(target, session);
                }
                else
                {
                    hub.Subscribe(target, session);
                }
            }
            else if (!subscribe && set.Remove(target))
            {
                if (pattern)
                {
                    hub.PUnsubscribe(target, session);
                }
                else
                {
                    hub.Unsubscribe(target, session);
                }
            }

            session.Client.Channels = session.Channels.Count;
            session.Client.Patterns = session.Patterns.Count;
            c.Reply.PushHeader(3);
            c.Reply.Bulk(kind);
            c.Reply.Bulk(target);
            c.Reply.Integer(session.Channels.Count + session.Patterns.Count);
        }
    }
}
