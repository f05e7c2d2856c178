using System.Globalization;
using Infra.Core.Placement;
using Infra.ShardRouter.Placement;

namespace Infra.ShardRouter.Tests;

/// <summary>
/// Placement through the shard map: keys hash to 4096 slots, slots go to shards by weighted
/// rendezvous hashing. Balance over a million keys, minimal movement on adding and draining a
/// shard, weights, determinism.
/// </summary>
public sealed class PlacementTests
{
    private const int KeyCount = 1_000_000;

    internal static ShardInfo Shard(int i, double weight = 1.0) =>
        new($"shard-{i}", $"127.0.0.1:{7000 + i}", [$"127.0.0.1:{8000 + i}", $"127.0.0.1:{9000 + i}"], Weight: weight);

    internal static ShardInfo[] Shards(int n) => [.. Enumerable.Range(0, n).Select(i => Shard(i))];

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(8)]
    public void A_million_keys_spread_within_2_percent_of_the_ideal_share(int shardCount)
    {
        var map = ShardMap.Seed(Shards(shardCount));
        Assert.Equal(SlotTable.DefaultSlots, map.Slots);
        var keys = new long[shardCount];
        for (var i = 0; i < KeyCount; i++)
        {
            var slot = map.SlotOf("user:" + i.ToString(CultureInfo.InvariantCulture));
            Assert.InRange(slot, 0, map.Slots - 1);
            keys[map.IndexOf(map.OwnerOf(slot).Id)]++;
        }

        var ideal = KeyCount / (double)shardCount;
        var deviations = keys.Select(k => Math.Abs(k - ideal) / ideal).ToArray();
        Assert.True(deviations.All(d => d <= 0.02),
            $"{shardCount} shards: keys per shard {string.Join(", ", keys)} (ideal {ideal:F0}); worst deviation {deviations.Max():P2}");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    [InlineData(7)]
    [InlineData(8)]
    public void Adding_a_shard_moves_only_what_it_wins_and_about_1_over_n_plus_1(int n)
    {
        var before = ShardMap.Seed(Shards(n));
        var added = Shard(n);
        var grown = before.WithShard(added);
        Assert.Equal(before.Version + 1, grown.Version);
        Assert.Equal(n + 1, grown.Shards.Count);

        // The recorded owners do not change until slots are moved; the target does.
        Assert.Equal(before.Owners, grown.Owners);
        var target = grown.TargetOwners();
        var moved = 0;
        for (var slot = 0; slot < before.Slots; slot++)
        {
            var from = before.Shards[before.Owners[slot]].Id;
            var to = grown.Shards[target[slot]].Id;
            if (from != to)
            {
                Assert.Equal(added.Id, to);
                moved++;
            }
        }

        var bound = 1.05 * before.Slots / (n + 1);
        Assert.True(moved <= bound, $"{n} -> {n + 1} shards moved {moved} slots; the bound is {bound:F0}");

        // The new shard must actually win something (about its share), or nothing is being tested.
        Assert.True(moved >= 0.8 * before.Slots / (n + 1), $"{n} -> {n + 1} shards moved only {moved} slots");
    }

    [Theory]
    [InlineData(2, 0)]
    [InlineData(3, 1)]
    [InlineData(5, 4)]
    [InlineData(8, 3)]
    public void Draining_a_shard_moves_only_its_own_slots(int n, int drained)
    {
        var before = ShardMap.Seed(Shards(n));
        var shard = before.Shards[drained];
        var draining = before.WithShard(shard with { Draining = true });
        Assert.Equal(n, draining.Shards.Count);
        Assert.True(draining.Find(shard.Id)!.Draining);

        var target = draining.TargetOwners();
        var own = 0;
        for (var slot = 0; slot < before.Slots; slot++)
        {
            var from = before.Owners[slot];
            Assert.NotEqual(drained, target[slot]);
            if (from == drained)
            {
                own++;
            }
            else
            {
                Assert.Equal(before.Shards[from].Id, draining.Shards[target[slot]].Id);
            }
        }

        Assert.True(own > 0);
        Assert.Equal(own, before.SlotCounts()[drained]);
    }

    [Theory]
    [InlineData(4, false)]
    [InlineData(4, true)]
    [InlineData(2, true)]
    public void Moving_slots_one_at_a_time_reaches_the_target_without_it_shifting(int n, bool drain)
    {
        // What the resharder does: recompute the target, move the first misplaced slot, repeat.
        var map = ShardMap.Seed(Shards(n));
        map = drain ? map.WithShard(map.Shards[1] with { Draining = true }) : map.WithShard(Shard(n));
        var first = map.TargetOwners();
        var pending = Enumerable.Range(0, map.Slots).Count(s => map.Owners[s] != first[s]);
        Assert.True(pending > 0);
        var moves = 0;
        while (true)
        {
            var target = map.TargetOwners();
            Assert.Equal(first, target);
            var slot = Enumerable.Range(0, map.Slots).FirstOrDefault(s => map.Owners[s] != target[s], -1);
            if (slot < 0)
            {
                break;
            }

            map = map.WithOwner(slot, map.Shards[target[slot]].Id);
            moves++;
        }

        Assert.Equal(pending, moves);
        if (drain)
        {
            Assert.Equal(0, map.SlotCounts()[1]);
            var id = map.Shards[1].Id;
            map = map.Without(id);
            Assert.Null(map.Find(id));
            Assert.Equal(n - 1, map.Shards.Count);
        }

        // Balanced to the slot, and nothing left to move.
        Assert.All(map.SlotCounts(), c => Assert.InRange(c, map.Slots / map.Shards.Count, (map.Slots / map.Shards.Count) + 1));
        Assert.Equal(map.Owners, map.TargetOwners());
    }

    [Fact]
    public void Adding_a_heavy_shard_or_two_at_once_moves_slots_only_to_the_new_ones()
    {
        var before = ShardMap.Seed(Shards(3));
        var heavy = before.WithShard(Shard(3, weight: 3));
        var target = heavy.TargetOwners();
        var moved = Enumerable.Range(0, before.Slots).Where(s => target[s] != before.Owners[s]).ToList();
        Assert.All(moved, s => Assert.Equal(3, target[s]));
        Assert.Equal(before.Slots / 2, moved.Count);

        var two = before.WithShard(Shard(3)).WithShard(Shard(4));
        Assert.Equal(before.Version + 2, two.Version);
        target = two.TargetOwners();
        moved = [.. Enumerable.Range(0, before.Slots).Where(s => target[s] != before.Owners[s])];
        Assert.All(moved, s => Assert.Contains(target[s], new[] { 3, 4 }));
        Assert.InRange(moved.Count, 2 * (before.Slots / 5), 2 * (before.Slots / 5) + 2);
        Assert.All(Enumerable.Range(0, 5), i => Assert.InRange(target.Count(o => o == i), before.Slots / 5, (before.Slots / 5) + 1));
    }

    [Fact]
    public void Weights_are_honoured()
    {
        var map = ShardMap.Seed([Shard(0, 1), Shard(1, 2), Shard(2, 3)]);
        var counts = map.SlotCounts();
        Assert.Equal(map.Slots, counts.Sum());
        double[] expected = [1 / 6.0, 2 / 6.0, 3 / 6.0];
        for (var i = 0; i < 3; i++)
        {
            var share = counts[i] / (double)map.Slots;
            Assert.True(Math.Abs(share - expected[i]) <= 0.03, $"shard {i} (weight {i + 1}) has {share:P2} of the slots; expected {expected[i]:P2}");
        }
    }

    [Fact]
    public void Weights_change_the_target_only_towards_the_heavier_shard()
    {
        var before = ShardMap.Seed(Shards(4));
        var heavier = before.WithShard(before.Shards[1] with { Weight = 2 });
        var target = heavier.TargetOwners();
        var moved = 0;
        for (var slot = 0; slot < before.Slots; slot++)
        {
            if (target[slot] != before.Owners[slot])
            {
                Assert.Equal(1, target[slot]);
                moved++;
            }
        }

        // From 1/4 to 2/5 of the slots.
        Assert.InRange(moved / (double)before.Slots, 0.10, 0.20);
    }

    [Fact]
    public void The_same_shards_give_the_same_owners()
    {
        var a = ShardMap.Seed(Shards(5));
        var b = ShardMap.Seed(Shards(5));
        Assert.Equal(a.Owners, b.Owners);
        Assert.Equal(a.Owners, a.TargetOwners());

        // Owners follow shard ids, not positions in the list.
        var reversed = ShardMap.Seed([.. Shards(5).Reverse()]);
        for (var slot = 0; slot < a.Slots; slot++)
        {
            Assert.Equal(a.OwnerOf(slot).Id, reversed.OwnerOf(slot).Id);
        }

        // Addresses are not part of placement: only ids and weights are.
        var moved = ShardMap.Seed([.. Shards(5).Select(s => s with { Master = s.Master.Replace("127.0.0.1", "10.0.0.1", StringComparison.Ordinal), Replicas = [] })]);
        Assert.Equal(a.Owners, moved.Owners);
    }

    [Fact]
    public void Integer_and_text_keys_share_a_slot()
    {
        Assert.Equal(ShardKey.Slot(42L), ShardKey.Slot("42"));
        Assert.Equal(ShardKey.Slot(-7L), ShardKey.Slot("-7"));
        Assert.Equal(ShardKey.Slot(42.0), ShardKey.Slot("42"));
        Assert.Equal(ShardKey.Slot(long.MaxValue), ShardKey.Slot("9223372036854775807"));
        Assert.Equal(-1, ShardKey.Slot(null));

        var map = ShardMap.Seed(Shards(3));
        Assert.Equal(map.SlotOf(42L), map.SlotOf("42"));
        Assert.Equal(ShardKey.Slot("user:1"), map.SlotOf("user:1"));
        Assert.InRange(map.SlotOf("user:1"), 0, 4095);

        // Stable across runs and machines: the slot of a key is part of the stored data.
        Assert.Equal(SlotTable.SlotOf("42"u8), ShardKey.Slot(42L));
        Assert.NotEqual(ShardKey.Slot("42"), ShardKey.Slot("43"));
    }

    [Fact]
    public void A_map_with_fewer_slots_keeps_keys_within_them()
    {
        var map = ShardMap.Seed(Shards(3), slots: 16);
        Assert.Equal(16, map.Owners.Count);
        for (var i = 0; i < 1000; i++)
        {
            Assert.InRange(map.SlotOf(i.ToString(CultureInfo.InvariantCulture)), 0, 15);
        }
    }
}
