namespace Infra.Client.Queue;

/// <summary>Settings of a <see cref="StreamConsumer"/>.</summary>
public sealed record StreamConsumerOptions
{
    /// <summary>The broker removes the member after this long without a heartbeat.</summary>
    public TimeSpan SessionTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How often the member heartbeats (and learns about rebalances).</summary>
    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Most messages one poll returns per partition.</summary>
    public int MaxMessages { get; init; } = 500;
}

/// <summary>
/// A member of a stream (Kafka-like) consumer group on one topic. It joins, heartbeats in the
/// background, polls the partitions the broker assigned to it from their committed offsets, and
/// commits what it has processed: everything <see cref="CommitAsync"/> covers, and — as Kafka's
/// consumer takes a new poll to mean the last one's records are done — what earlier polls returned.
/// When a rebalance takes a partition away, the consumer stops reading it at its next heartbeat —
/// after committing its processed position there (never past what the latest poll returned and the
/// application may still be working on: those are delivered again to the new owner) — and the broker
/// hands it to the new owner only then, so two members never own a partition at once. A poll's wait
/// does not hold up the heartbeats.
/// </summary>
public sealed class StreamConsumer : IAsyncDisposable
{
    private readonly string _host;
    private readonly int _port;
    private volatile QueueClient _client;
    private readonly string _topic;
    private readonly string _group;
    private readonly StreamConsumerOptions _options;
    private readonly Dictionary<int, long> _positions = [];

    /// <summary>Per owned partition, the position the application is done with (see the class remarks).</summary>
    private readonly Dictionary<int, long> _processed = [];
    private readonly SemaphoreSlim _lock = new(1, 1);
    private readonly CancellationTokenSource _stop = new();
    private StreamMembership _membership;
    private Task? _heartbeats;

    private StreamConsumer(string host, int port, QueueClient client, string topic, string group, StreamConsumerOptions options, StreamMembership membership)
    {
        _host = host;
        _port = port;
        _client = client;
        _topic = topic;
        _group = group;
        _options = options;
        _membership = membership;
    }

    /// <summary>The partitions this member owns now.</summary>
    public IReadOnlyList<int> Partitions => _membership.Partitions;

    public string MemberId => _membership.MemberId;

    public static async Task<StreamConsumer> CreateAsync(string host, int port, string topic, string group, StreamConsumerOptions? options = null)
    {
        options ??= new StreamConsumerOptions();
        var client = await QueueClient.ConnectAsync(host, port);
        try
        {
            var membership = await client.JoinAsync(topic, group, session: options.SessionTimeout);
            var consumer = new StreamConsumer(host, port, client, topic, group, options, membership);
            await consumer.AdoptAsync(membership);
            consumer._heartbeats = Task.Run(consumer.HeartbeatLoopAsync);
            return consumer;
        }
        catch
        {
            await client.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// Messages from the owned partitions, waiting up to <paramref name="wait"/> when there are none. Calling it
    /// again tells the consumer the messages it returned before are processed.
    /// </summary>
    public async Task<List<QueueMessage>> PollAsync(TimeSpan wait)
    {
        var deadline = DateTime.UtcNow + wait;
        var first = true;
        while (true)
        {
            // The positions are read under the lock, the fetches made without it: a long poll held the lock,
            // the heartbeats waited behind it, and the broker expired a member that was still reading.
            Dictionary<int, long> from;
            await _lock.WaitAsync();
            try
            {
                if (first)
                {
                    foreach (var (partition, position) in _positions)
                    {
                        _processed[partition] = position;
                    }
                }

                from = new Dictionary<int, long>(_positions);
            }
            finally
            {
                _lock.Release();
            }

            first = false;
            var remaining = deadline - DateTime.UtcNow;
            var fetched = new List<QueueMessage>();
            var moved = new Dictionary<int, long>();
            foreach (var (partition, position) in from)
            {
                fetched.AddRange(await FetchAsync(partition, position, TimeSpan.Zero, moved));
            }

            if (fetched.Count == 0 && remaining > TimeSpan.Zero && from.Count > 0)
            {
                // One partition is waited on at a time, for at most a heartbeat interval: the others are
                // looked at again after it (data there waited the whole wait before).
                var (partition, position) = from.First();
                fetched.AddRange(await FetchAsync(partition, moved.GetValueOrDefault(partition, position), remaining < _options.HeartbeatInterval ? remaining : _options.HeartbeatInterval, moved));
            }

            var result = new List<QueueMessage>();
            await _lock.WaitAsync();
            try
            {
                // Only partitions still ours, read from where we still are: one taken away (or given back)
                // meanwhile is the new owner's to read.
                foreach (var message in fetched)
                {
                    if (_positions.TryGetValue(message.Partition, out var at) && from.TryGetValue(message.Partition, out var was) && at == was)
                    {
                        result.Add(message);
                    }
                }

                foreach (var (partition, position) in moved)
                {
                    if (_positions.TryGetValue(partition, out var at) && at == from[partition])
                    {
                        _positions[partition] = position;
                    }
                }

                foreach (var message in result)
                {
                    _positions[message.Partition] = message.Offset + 1;
                }
            }
            finally
            {
                _lock.Release();
            }

            if (result.Count > 0 || DateTime.UtcNow >= deadline)
            {
                return result;
            }
        }
    }

    /// <summary>
    /// One partition's next messages. A position outside the log — below its start once retention deleted what
    /// it pointed at, past its end after the broker lost its tail — moves to the nearest end that exists (noted
    /// in <paramref name="moved"/>), as Kafka's consumer resets with auto.offset.reset=earliest: every poll
    /// failed with OffsetOutOfRange before, for all partitions, for good.
    /// </summary>
    private async Task<List<QueueMessage>> FetchAsync(int partition, long position, TimeSpan wait, Dictionary<int, long> moved)
    {
        try
        {
            return await _client.FetchAsync(_topic, partition, position, _options.MaxMessages, wait);
        }
        catch (QueueException ex) when (ex.Code == "OffsetOutOfRange")
        {
            var (_, starts, ends) = await _client.MetadataAsync(_topic);
            var reset = Math.Clamp(position, starts[partition], ends[partition]);
            moved[partition] = reset;
            return await _client.FetchAsync(_topic, partition, reset, _options.MaxMessages);
        }
    }

    /// <summary>Commits the position after the last polled message of every owned partition (durable when this returns).</summary>
    public async Task CommitAsync()
    {
        await _lock.WaitAsync();
        try
        {
            await CommitLockedAsync(_positions.Keys);
        }
        finally
        {
            _lock.Release();
        }
    }

    private async Task CommitLockedAsync(IEnumerable<int> partitions)
    {
        foreach (var partition in partitions.ToList())
        {
            await _client.CommitAsync(_topic, _group, _membership.MemberId, partition, _positions[partition]);
            _processed[partition] = _positions[partition];
        }
    }

    private async Task HeartbeatLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(_options.HeartbeatInterval, _stop.Token);
                await _lock.WaitAsync(_stop.Token);
                try
                {
                    StreamMembership next;
                    try
                    {
                        next = await _client.HeartbeatAsync(_topic, _group, _membership.MemberId, _membership.Generation);
                    }
                    catch (QueueException ex) when (ex.Code == "UnknownMember")
                    {
                        _positions.Clear();
                        _processed.Clear();
                        next = await _client.JoinAsync(_topic, _group, session: _options.SessionTimeout);
                    }

                    // Partitions no longer ours: commit what is processed there before the broker releases them —
                    // not the polled position: messages the latest poll returned may still be in the works, and
                    // committing past them lost them if this member then failed.
                    var revoked = _positions.Keys.Where(p => !next.Partitions.Contains(p)).ToList();
                    if (revoked.Count > 0 && next.MemberId == _membership.MemberId)
                    {
                        foreach (var partition in revoked.Where(_processed.ContainsKey))
                        {
                            await _client.CommitAsync(_topic, _group, _membership.MemberId, partition, _processed[partition]);
                        }
                    }

                    await AdoptAsync(next);
                }
                finally
                {
                    _lock.Release();
                }
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                // The broker is away (the next heartbeat tries again, or the session expires), or its connection
                // is lost: a new one joins again — the loop kept heartbeating a dead connection, and the
                // consumer reported partitions the broker had long given to others. (Anything else must not end
                // the heartbeats either: they stopped for good, unseen.)
                if (!_client.IsConnected)
                {
                    await ReconnectAsync();
                }
            }
        }
    }

    private async Task ReconnectAsync()
    {
        QueueClient? next = null;
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
            timeout.CancelAfter(_options.SessionTimeout);
            next = await QueueClient.ConnectAsync(_host, _port, timeout.Token);
            var membership = await next.JoinAsync(_topic, _group, session: _options.SessionTimeout);
            await _lock.WaitAsync(_stop.Token);
            try
            {
                var old = _client;
                _client = next;
                next = null;
                _positions.Clear();
                _processed.Clear();
                await AdoptAsync(membership);
                await old.DisposeAsync();
            }
            finally
            {
                _lock.Release();
            }
        }
        catch (Exception ex) when (ex is QueueException or IOException or System.Net.Sockets.SocketException or OperationCanceledException)
        {
            // Still away: the next heartbeat tries again.
        }
        finally
        {
            if (next is not null)
            {
                await next.DisposeAsync();
            }
        }
    }

    private async Task AdoptAsync(StreamMembership membership)
    {
        foreach (var partition in _positions.Keys.Where(p => !membership.Partitions.Contains(p)).ToList())
        {
            _positions.Remove(partition);
            _processed.Remove(partition);
        }

        foreach (var partition in membership.Partitions)
        {
            if (!_positions.ContainsKey(partition))
            {
                var committed = await _client.CommittedAsync(_topic, _group, partition);
                _positions[partition] = committed >= 0 ? committed : (await _client.MetadataAsync(_topic)).Starts[partition];
                _processed[partition] = _positions[partition];
            }
        }

        _membership = membership;
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        if (_heartbeats is not null)
        {
            await _heartbeats;
        }

        try
        {
            await _client.LeaveAsync(_topic, _group, _membership.MemberId);
        }
        catch (QueueException)
        {
            // Gone already; the session expires on its own.
        }

        await _client.DisposeAsync();
        _stop.Dispose();
        _lock.Dispose();
    }
}
