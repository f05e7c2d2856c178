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
/// commits what it has processed. When a rebalance takes a partition away, the consumer stops
/// reading it at its next heartbeat — after committing its position there — and the broker hands it
/// to the new owner only then, so two members never own a partition at once.
/// </summary>
public sealed class StreamConsumer : IAsyncDisposable
{
    private readonly QueueClient _client;
    private readonly string _topic;
    private readonly string _group;
    private readonly StreamConsumerOptions _options;
    private readonly Dictionary<int, long> _positions = [];
    private readonly SemaphoreSlim _lock = new(1, 1);
    private readonly CancellationTokenSource _stop = new();
    private StreamMembership _membership;
    private Task? _heartbeats;

    private StreamConsumer(QueueClient client, string topic, string group, StreamConsumerOptions options, StreamMembership membership)
    {
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
            var consumer = new StreamConsumer(client, topic, group, options, membership);
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

    /// <summary>Messages from the owned partitions, waiting up to <paramref name="wait"/> when there are none.</summary>
    public async Task<List<QueueMessage>> PollAsync(TimeSpan wait)
    {
        await _lock.WaitAsync();
        try
        {
            var result = new List<QueueMessage>();
            foreach (var (partition, position) in _positions.ToList())
            {
                result.AddRange(await _client.FetchAsync(_topic, partition, position, _options.MaxMessages));
            }

            if (result.Count == 0 && wait > TimeSpan.Zero && _positions.Count > 0)
            {
                var (partition, position) = _positions.First();
                result.AddRange(await _client.FetchAsync(_topic, partition, position, _options.MaxMessages, wait));
            }

            foreach (var message in result)
            {
                _positions[message.Partition] = message.Offset + 1;
            }

            return result;
        }
        finally
        {
            _lock.Release();
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
                        next = await _client.JoinAsync(_topic, _group, session: _options.SessionTimeout);
                    }

                    // Partitions no longer ours: commit where we are before the broker releases them.
                    var revoked = _positions.Keys.Where(p => !next.Partitions.Contains(p)).ToList();
                    if (revoked.Count > 0 && next.MemberId == _membership.MemberId)
                    {
                        await CommitLockedAsync(revoked);
                    }

                    await AdoptAsync(next);
                }
                finally
                {
                    _lock.Release();
                }
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (QueueException)
            {
                // The broker is away: the next heartbeat tries again (or the session expires).
            }
        }
    }

    private async Task AdoptAsync(StreamMembership membership)
    {
        foreach (var partition in _positions.Keys.Where(p => !membership.Partitions.Contains(p)).ToList())
        {
            _positions.Remove(partition);
        }

        foreach (var partition in membership.Partitions)
        {
            if (!_positions.ContainsKey(partition))
            {
                var committed = await _client.CommittedAsync(_topic, _group, partition);
                _positions[partition] = committed >= 0 ? committed : (await _client.MetadataAsync(_topic)).Starts[partition];
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
