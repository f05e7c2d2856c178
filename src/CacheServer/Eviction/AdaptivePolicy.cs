using System.Numerics;
using Infra.CacheServer.Storage;

namespace Infra.CacheServer.Eviction;

/// <summary>
/// A count-min sketch of 4-bit counters estimating how often each key hash was seen recently. When
/// the number of increments reaches ten times the width, every counter is halved, so history fades
/// and the sketch tracks the recent workload (TinyLFU's "reset").
/// </summary>
internal sealed class FrequencySketch
{
    private const ulong ResetMask = 0x7777_7777_7777_7777UL;
    private const ulong OneMask = 0x1111_1111_1111_1111UL;
    private static readonly ulong[] Seeds = [0xc3a5c85c97cb3127UL, 0xb492b66fbe98f273UL, 0x9ae16a3b2f90404fUL, 0xcbf29ce484222325UL];

    private ulong[] _table = new ulong[16];
    private int _sampleSize = 160;
    private int _additions;

    /// <summary>Sizes the sketch for about <paramref name="entries"/> distinct keys (it only grows).</summary>
    public void EnsureCapacity(long entries)
    {
        var width = (int)Math.Min(1 << 26, BitOperations.RoundUpToPowerOf2((ulong)Math.Max(16, entries)));
        if (width <= _table.Length)
        {
            return;
        }

        _table = new ulong[width];
        _sampleSize = 10 * width;
        _additions = 0;
    }

    public int Frequency(int hash)
    {
        var spread = Spread(hash);
        var start = (int)(spread & 3) << 2;
        var frequency = int.MaxValue;
        for (var i = 0; i < 4; i++)
        {
            var index = IndexOf(spread, i);
            var count = (int)((_table[index] >> ((start + i) << 2)) & 0xF);
            frequency = Math.Min(frequency, count);
        }

        return frequency;
    }

    public void Increment(int hash)
    {
        var spread = Spread(hash);
        var start = (int)(spread & 3) << 2;
        var added = false;
        for (var i = 0; i < 4; i++)
        {
            var index = IndexOf(spread, i);
            var shift = (start + i) << 2;
            var mask = 0xFUL << shift;
            if ((_table[index] & mask) != mask)
            {
                _table[index] += 1UL << shift;
                added = true;
            }
        }

        if (added && ++_additions >= _sampleSize)
        {
            Reset();
        }
    }

    private void Reset()
    {
        var odd = 0;
        for (var i = 0; i < _table.Length; i++)
        {
            odd += BitOperations.PopCount(_table[i] & OneMask);
            _table[i] = (_table[i] >> 1) & ResetMask;
        }

        _additions = (_additions - (odd >> 2)) >> 1;
    }

    private int IndexOf(ulong spread, int i)
    {
        var h = (spread + Seeds[i]) * Seeds[i];
        h += h >> 32;
        return (int)(h & (ulong)(_table.Length - 1));
    }

    private static ulong Spread(int hash)
    {
        var x = (ulong)(uint)hash;
        x = (x ^ (x >> 17)) * 0xed5ad4bbUL;
        x = (x ^ (x >> 11)) * 0xac4c1b51UL;
        x = (x ^ (x >> 15)) * 0x31848babUL;
        return x ^ (x >> 14);
    }
}

/// <summary>Parameters of <see cref="AdaptivePolicy"/>; the defaults are the ones chosen on the traces.</summary>
internal sealed record AdaptiveSettings
{
    public static readonly AdaptiveSettings Default = new();

    /// <summary>Share of the capacity the window starts with.</summary>
    public double InitialWindowShare { get; init; } = 0.01;

    /// <summary>Share of the main area the protected segment may fill.</summary>
    public double ProtectedShare { get; init; } = 0.80;

    /// <summary>How much more frequent than the victim a candidate must look to be admitted.</summary>
    public int AdmitMargin { get; init; } = 1;

    /// <summary>Window shares the shadow caches try; empty turns tuning off (a fixed window).</summary>
    public IReadOnlyList<double> CandidateWindowShares { get; init; } = [0.01, 0.05, 0.15, 0.3, 0.5, 0.7];

    /// <summary>Shadow caches hold about this many entries (keys are sampled to fit).</summary>
    public int ShadowEntries { get; init; } = 2048;

    /// <summary>Sampled lookups between decisions, per shadow-cache entry.</summary>
    public double DecisionPeriodPerEntry { get; init; } = 2;

    /// <summary>A new window is adopted only if its shadow's hit ratio beats the current one's by this.</summary>
    public double SwitchMargin { get; init; } = 0.01;
}

/// <summary>
/// <c>allkeys-adaptive</c>: W-TinyLFU whose window size is picked by shadow simulation. New keys enter
/// an LRU window; what leaves the window competes for the main area (a segmented LRU of probation and
/// protected) against the main area's LRU victim and is admitted only if the frequency sketch says it
/// is clearly more frequent. A <see cref="WindowTuner"/> replays a hash-sampled subset of the lookups
/// through small shadow caches with different window sizes and moves the window to the best one:
/// recency-heavy workloads get a large window (LRU-like), frequency-heavy and looping ones a small
/// one (TinyLFU-like). Chosen by miss ratios on the shared traces (bench/RESULTS.md).
/// </summary>
internal sealed class AdaptivePolicy : EvictionPolicy
{
    private const int Window = 1;
    private const int Probation = 2;
    private const int Protected = 3;

    private readonly AdaptiveSettings _settings;
    private readonly FrequencySketch _sketch = new();
    private EntryList _window;
    private EntryList _probation;
    private EntryList _protected;
    private int _candidate = -1;

    private double _windowShare;
    private WindowTuner? _tuner;

    public AdaptivePolicy(EntryTable entries, AdaptiveSettings? settings = null)
        : base(entries)
    {
        _settings = settings ?? AdaptiveSettings.Default;
        _windowShare = _settings.InitialWindowShare;
    }

    /// <summary>Current share of the capacity given to the window (0–1), for INFO and tests.</summary>
    public double WindowShare => _windowShare;

    private long WindowMax => (long)(Capacity * _windowShare);

    private long ProtectedMax => (long)((Capacity - WindowMax) * _settings.ProtectedShare);

    public override void RecordLookup(int hash)
    {
        _sketch.Increment(hash);
        if (_tuner is { } tuner && tuner.Record(hash, Entries.Count) is { } share && share != _windowShare)
        {
            _windowShare = share;
            DrainWindow(0);
            DemoteProtected();
        }
    }

    /// <summary>
    /// How many entries the capacity probably holds: the sketch is sized for it up front, since
    /// growing a sketch later throws its history away.
    /// </summary>
    public long ExpectedEntries
    {
        get => _expectedEntries;
        set
        {
            _expectedEntries = value;
            _sketch.EnsureCapacity(value);
            _tuner = _settings.CandidateWindowShares.Count > 0 && value > 0
                ? new WindowTuner(_settings, value, _windowShare)
                : null;
        }
    }

    private long _expectedEntries;

    public override void OnInsert(int index, long cost, int nowSeconds)
    {
        _sketch.EnsureCapacity(Math.Max(Entries.Count, ExpectedEntries));
        ref var entry = ref Entries.At(index);
        entry.Access = nowSeconds;
        entry.Queue = Window;
        PushHead(ref _window, index, cost);
        DrainWindow(cost);
    }

    public override void OnAccess(int index, int nowSeconds)
    {
        ref var entry = ref Entries.At(index);
        entry.Access = nowSeconds;
        switch (entry.Queue)
        {
            case Window:
                MoveToHead(ref _window, index);
                break;
            case Probation:
                var cost = CostOf(index);
                Unlink(ref _probation, index, cost);
                entry.Queue = Protected;
                PushHead(ref _protected, index, cost);
                if (_candidate == index)
                {
                    _candidate = -1;
                }

                DemoteProtected();
                break;
            case Protected:
                MoveToHead(ref _protected, index);
                break;
        }
    }

    public override void OnRemove(int index, long cost)
    {
        ref var entry = ref Entries.At(index);
        switch (entry.Queue)
        {
            case Window:
                Unlink(ref _window, index, cost);
                break;
            case Probation:
                Unlink(ref _probation, index, cost);
                break;
            case Protected:
                Unlink(ref _protected, index, cost);
                break;
        }

        entry.Queue = 0;
        if (_candidate == index)
        {
            _candidate = -1;
        }
    }

    public override void OnResize(int index, long oldCost, long newCost)
    {
        var delta = newCost - oldCost;
        switch (Entries.At(index).Queue)
        {
            case Window:
                _window.Cost += delta;
                break;
            case Probation:
                _probation.Cost += delta;
                break;
            case Protected:
                _protected.Cost += delta;
                break;
        }
    }

    public override int SelectVictim(int protect, ReadOnlySpan<int> volatileKeys)
    {
        DrainWindow(0);
        var victim = TailExcept(_probation, protect);
        var candidate = _candidate;
        _candidate = -1;
        if (candidate >= 0 && candidate != protect && candidate != victim && victim >= 0
            && Entries.At(candidate).Queue == Probation)
        {
            return Admit(candidate, victim) ? victim : candidate;
        }

        if (victim >= 0)
        {
            return victim;
        }

        victim = TailExcept(_protected, protect);
        return victim >= 0 ? victim : TailExcept(_window, protect);
    }

    public override string Describe() => FormattableString.Invariant(
        $"window={_window.Count} probation={_probation.Count} protected={_protected.Count} window_share={_windowShare:0.###}");

    private bool Admit(int candidate, int victim)
    {
        var candidateFrequency = _sketch.Frequency(Entries.At(candidate).Hash);
        var victimFrequency = _sketch.Frequency(Entries.At(victim).Hash);
        // The margin keeps the sketch's periodic halving from churning the main area: just after a
        // reset a recent key looks one higher than an equally frequent older one. Keys cannot be
        // crafted to collide in the sketch because the server seeds its key hash per process.
        return candidateFrequency > victimFrequency + _settings.AdmitMargin;
    }

    /// <summary>Moves what overflows the window into probation; the last one moved is the candidate.</summary>
    private void DrainWindow(long justInserted)
    {
        var max = WindowMax;
        while (_window.Cost > max && _window.Count > 0 && (_window.Count > 1 || justInserted == 0 || max == 0))
        {
            var index = _window.Tail - 1;
            var cost = CostOf(index);
            Unlink(ref _window, index, cost);
            Entries.At(index).Queue = Probation;
            PushHead(ref _probation, index, cost);
            _candidate = index;
        }
    }

    private void DemoteProtected()
    {
        var max = ProtectedMax;
        while (_protected.Cost > max && _protected.Count > 1)
        {
            var index = _protected.Tail - 1;
            var cost = CostOf(index);
            Unlink(ref _protected, index, cost);
            Entries.At(index).Queue = Probation;
            PushHead(ref _probation, index, cost);
        }
    }

    /// <summary>The cost the shard charges for an entry; the lists keep sums, entries keep no copy.</summary>
    private long CostOf(int index) => CostFunction(index);

    /// <summary>Set by the shard: how to price an entry (bytes, or 1 in the trace simulator).</summary>
    public Func<int, long> CostFunction { get; set; } = static _ => 1;
}

/// <summary>
/// Shadow caches for <see cref="AdaptivePolicy"/>: one small fixed-window W-TinyLFU per candidate
/// window share, fed the same hash-sampled lookups (keys stand in as their 4-byte hashes, scaled
/// down like SHARDS). Because they see the same requests at the same time, their hit counts compare
/// like for like, which a hill climber comparing successive periods cannot do.
/// </summary>
internal sealed class WindowTuner
{
    private readonly AdaptiveSettings _settings;
    private readonly CacheShard[] _shadows;
    private readonly long[] _hits;
    private readonly uint _sampleDivisor;
    private readonly long _decisionPeriod;
    private long _sampled;
    private int _current;

    public WindowTuner(AdaptiveSettings settings, long expectedEntries, double initialShare)
    {
        _settings = settings;
        var shares = settings.CandidateWindowShares;
        _sampleDivisor = (uint)Math.Max(1, BitOperations.RoundUpToPowerOf2((ulong)Math.Max(1, expectedEntries / settings.ShadowEntries)));
        var capacity = Math.Max(16, (int)(expectedEntries / _sampleDivisor));
        _decisionPeriod = (long)Math.Max(256, capacity * settings.DecisionPeriodPerEntry);
        var fixedWindow = settings with { CandidateWindowShares = [] };
        _shadows = new CacheShard[shares.Count];
        for (var i = 0; i < shares.Count; i++)
        {
            _shadows[i] = new CacheShard(EvictionPolicyKind.AllKeysAdaptive, capacity, new Random(17 + i), countEntries: true,
                fixedWindow with { InitialWindowShare = shares[i] });
            _shadows[i].SetBudget(capacity);
        }

        _hits = new long[shares.Count];
        _current = IndexOfNearest(shares, initialShare);
    }

    /// <summary>Feeds one lookup; returns a new window share when a decision changes it.</summary>
    public double? Record(int hash, int liveEntries)
    {
        var mixed = (uint)hash * 0x9E3779B1u;
        if (_sampleDivisor > 1 && (mixed >> 7) % _sampleDivisor != 0)
        {
            return null;
        }

        Span<byte> key = stackalloc byte[4];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(key, hash);
        for (var i = 0; i < _shadows.Length; i++)
        {
            var shadow = _shadows[i];
            if (shadow.Find(key, hash, nowMs: 1, read: true) >= 0)
            {
                _hits[i]++;
            }
            else
            {
                shadow.MakeRoom(shadow.AddString(key, hash, [], expireAt: 0, nowMs: 1));
            }
        }

        if (++_sampled < _decisionPeriod)
        {
            return null;
        }

        var best = _current;
        for (var i = 0; i < _hits.Length; i++)
        {
            if (_hits[i] > _hits[best])
            {
                best = i;
            }
        }

        if ((_hits[best] - _hits[_current]) / (double)_sampled > _settings.SwitchMargin)
        {
            _current = best;
        }

        Array.Clear(_hits);
        _sampled = 0;
        return _settings.CandidateWindowShares[_current];
    }

    private static int IndexOfNearest(IReadOnlyList<double> shares, double share)
    {
        var best = 0;
        for (var i = 1; i < shares.Count; i++)
        {
            if (Math.Abs(shares[i] - share) < Math.Abs(shares[best] - share))
            {
                best = i;
            }
        }

        return best;
    }
}
