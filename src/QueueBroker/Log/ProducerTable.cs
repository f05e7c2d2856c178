namespace Infra.QueueBroker.Log;

internal enum SequenceCheck
{
    /// <summary>New producer or the next sequence: append.</summary>
    Accept,

    /// <summary>A retry of a batch still remembered: answer with its offset, do not append.</summary>
    Duplicate,

    /// <summary>A retry older than the remembered batches: it was appended, its offset is gone.</summary>
    DuplicateOld,

    /// <summary>Sequence numbers were skipped.</summary>
    OutOfOrder,
}

/// <summary>
/// Idempotent-produce state of one partition: per producer id, the last sequence appended and the
/// last few batches (so a retry gets its original offset back). Kafka keeps five; so do we.
/// At most <see cref="MaxProducers"/> producer ids are kept: past that, the tenth least recently used
/// are forgotten (as Kafka expires idle producer ids), so a client inventing ids cannot grow memory or
/// the recovery point without bound. A forgotten producer's next batch is accepted as from a new one.
/// </summary>
internal sealed class ProducerTable(int maxProducers = ProducerTable.DefaultMaxProducers)
{
    public const int Remembered = 5;
    public const int DefaultMaxProducers = 10_000;
    private readonly Dictionary<long, State> _states = [];
    private long _clock;

    public int MaxProducers { get; } = maxProducers;

    public int Count => _states.Count;

    public SequenceCheck Check(long producerId, int baseSequence, int count, out long baseOffset, out Task durable, out int expected)
    {
        baseOffset = -1;
        durable = Task.CompletedTask;
        expected = 0;
        if (!_states.TryGetValue(producerId, out var state))
        {
            return SequenceCheck.Accept;
        }

        foreach (var batch in state.Recent)
        {
            if (batch.BaseSequence == baseSequence && batch.Count == count)
            {
                baseOffset = batch.BaseOffset;
                durable = batch.Durable;
                return SequenceCheck.Duplicate;
            }
        }

        expected = state.LastSequence + 1;
        if (baseSequence <= state.LastSequence)
        {
            return SequenceCheck.DuplicateOld;
        }

        return baseSequence == expected ? SequenceCheck.Accept : SequenceCheck.OutOfOrder;
    }

    public void Record(long producerId, int baseSequence, int count, long baseOffset, Task durable)
    {
        if (!_states.TryGetValue(producerId, out var state))
        {
            if (_states.Count >= MaxProducers)
            {
                ForgetLeastRecentlyUsed();
            }

            state = new State();
            _states[producerId] = state;
        }

        state.LastUsed = ++_clock;
        state.LastSequence = baseSequence + count - 1;
        state.Recent.Enqueue(new Batch(baseSequence, count, baseOffset, durable));
        while (state.Recent.Count > Remembered)
        {
            state.Recent.Dequeue();
        }
    }

    /// <summary>
    /// Every remembered batch of every producer, oldest first per producer (what the recovery point stores;
    /// recording them in this order rebuilds the table). Only the last batch was kept once: a restart then
    /// answered a retry of an earlier one DuplicateSequence instead of its offset.
    /// </summary>
    public IEnumerable<(long ProducerId, int BaseSequence, int Count, long BaseOffset)> Snapshot()
    {
        foreach (var (id, state) in _states)
        {
            foreach (var batch in state.Recent)
            {
                yield return (id, batch.BaseSequence, batch.Count, batch.BaseOffset);
            }
        }
    }

    private void ForgetLeastRecentlyUsed()
    {
        var forget = Math.Max(1, MaxProducers / 10);
        foreach (var id in _states.OrderBy(kv => kv.Value.LastUsed).Take(forget).Select(kv => kv.Key).ToList())
        {
            _states.Remove(id);
        }
    }

    public ProducerTable Clone()
    {
        var copy = new ProducerTable(MaxProducers) { _clock = _clock };
        foreach (var (id, state) in _states)
        {
            var clone = new State { LastSequence = state.LastSequence, LastUsed = state.LastUsed };
            foreach (var batch in state.Recent)
            {
                clone.Recent.Enqueue(batch with { Durable = Task.CompletedTask });
            }

            copy._states[id] = clone;
        }

        return copy;
    }

    private sealed class State
    {
        public int LastSequence { get; set; }

        public long LastUsed { get; set; }

        public Queue<Batch> Recent { get; } = new();
    }

    private readonly record struct Batch(int BaseSequence, int Count, long BaseOffset, Task Durable);
}
