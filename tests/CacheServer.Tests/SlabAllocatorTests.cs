using System.Globalization;
using System.Text;
using Infra.CacheServer.Eviction;
using Infra.CacheServer.Storage;

namespace Infra.CacheServer.Tests;

/// <summary>Slab pages moving between size classes, so the pages in use follow the bytes stored.</summary>
public class SlabAllocatorTests
{
    private static readonly int[] FloodSizes = [40, 100, 200, 400, 700, 1000, 1500, 2200, 3000, 4000, 5500, 7000, 9000, 12000, 16000];

    /// <summary>Owner of raw chunks for the allocator alone: each chunk starts with its owner's number.</summary>
    private sealed class ChunkOwners : ISlabOwner
    {
        public Dictionary<int, long> Handles { get; } = [];

        public SlabAllocator? Slab { get; set; }

        public bool Lose { get; set; }

        public int OwnerOf(long handle, int chunkSize)
        {
            var owner = BitConverter.ToInt32(Slab!.Span(handle, 4));
            return !Lose && Handles.TryGetValue(owner, out var known) && known == handle ? owner : -1;
        }

        public void Moved(int owner, long handle) => Handles[owner] = handle;
    }

    [Fact]
    public void A_class_takes_over_a_page_of_idle_free_chunks_instead_of_growing_and_moved_chunks_keep_their_bytes()
    {
        var owners = new ChunkOwners();
        var slab = new SlabAllocator(owners);
        owners.Slab = slab;

        // 20 pages of 32-byte chunks, then three of every four freed: 15 pages' worth of free chunks,
        // spread over every page.
        const int small = 32;
        var perPage = SlabAllocator.PageSize / small;
        for (var i = 0; i < perPage * 20; i++)
        {
            var handle = slab.Allocate(small);
            Fill(slab, handle, small, i);
            owners.Handles[i] = handle;
        }

        foreach (var i in owners.Handles.Keys.Where(i => i % 4 != 0).ToList())
        {
            slab.Free(owners.Handles[i], small);
            owners.Handles.Remove(i);
        }

        var pages = slab.ReservedBytes / SlabAllocator.PageSize;
        Assert.Equal(20, pages);

        // 1 KiB chunks: 10 pages of them must come from the small class's idle chunks.
        var large = new List<long>();
        for (var i = 0; i < 10 * (SlabAllocator.PageSize / SlabAllocator.ChunkSize(1000)); i++)
        {
            var handle = slab.Allocate(1000);
            slab.Span(handle, 1000).Fill(0xAB);
            large.Add(handle);
        }

        Assert.Equal(pages, slab.ReservedBytes / SlabAllocator.PageSize);
        Assert.Equal(10, slab.PagesMoved);
        Assert.True(slab.ChunksMoved > 0, "every page held live chunks, so some had to move");
        foreach (var (owner, handle) in owners.Handles)
        {
            Check(slab, handle, small, owner);
        }

        Assert.All(large, h => Assert.True(slab.Span(h, 1000).IndexOfAnyExcept((byte)0xAB) < 0, "a moved chunk was written over a large one"));

        // Handles are unique: no two owners and no large chunk share a chunk.
        var all = owners.Handles.Values.Concat(large).ToList();
        Assert.Equal(all.Count, all.Distinct().Count());

        // Once the small class has less than a page free, the next page is a new one.
        while (slab.FreeBytes >= SlabAllocator.PageSize)
        {
            slab.Allocate(1000);
        }

        var before = slab.ReservedBytes;
        for (var i = 0; i < 64; i++)
        {
            slab.Allocate(1000);
        }

        Assert.True(slab.ReservedBytes > before);
    }

    [Fact]
    public void Taking_back_the_chunks_of_deleted_keys_walks_their_free_list_once_and_keeps_the_empty_pages_for_any_class()
    {
        var owners = new ChunkOwners();
        var slab = new SlabAllocator(owners);
        owners.Slab = slab;
        var handles = new List<long>();
        for (var i = 0; i < 20 * (SlabAllocator.PageSize / 32); i++)
        {
            handles.Add(slab.Allocate(32));
        }

        // One key kept in the last page, the rest deleted.
        owners.Handles[7] = handles[^1];
        Fill(slab, handles[^1], 32, 7);
        foreach (var handle in handles.Take(handles.Count - 1))
        {
            slab.Free(handle, 32);
        }

        // One move takes the first page the class no longer needs, and sets aside the 18 others that are empty.
        slab.Allocate(1000);
        Assert.Equal(1, slab.PagesMoved);
        Assert.Equal(20 * SlabAllocator.PageSize, slab.ReservedBytes);

        // The next pages come from those indices without another move.
        for (var i = 1; i < 10 * (SlabAllocator.PageSize / SlabAllocator.ChunkSize(1000)); i++)
        {
            slab.Allocate(1000);
        }

        Assert.Equal(1, slab.PagesMoved);
        Assert.Equal(20 * SlabAllocator.PageSize, slab.ReservedBytes);

        // Ten pages more: the nine left empty, then (the small class has under a page free) a new one.
        for (var i = 0; i < 10 * (SlabAllocator.PageSize / SlabAllocator.ChunkSize(1000)); i++)
        {
            slab.Allocate(1000);
        }

        Assert.Equal(21 * SlabAllocator.PageSize, slab.ReservedBytes);
        Check(slab, owners.Handles[7], 32, 7);
    }

    [Fact]
    public void Pages_taken_from_a_class_with_chunks_freed_at_random_keep_every_live_chunk_intact()
    {
        // Random frees leave no page empty: every page taken is emptied by moving its live chunks, and its
        // free chunks leave the (doubly linked) free list one by one wherever they are in it.
        var owners = new ChunkOwners();
        var slab = new SlabAllocator(owners);
        owners.Slab = slab;
        var random = new Random(3);
        for (var i = 0; i < 40 * (SlabAllocator.PageSize / 16); i++)
        {
            var handle = slab.Allocate(16);
            Fill(slab, handle, 16, i);
            owners.Handles[i] = handle;
        }

        foreach (var i in owners.Handles.Keys.Where(_ => random.Next(10) != 0).ToList())
        {
            slab.Free(owners.Handles[i], 16);
            owners.Handles.Remove(i);
        }

        var pages = slab.ReservedBytes;
        for (var i = 0; i < 30 * (SlabAllocator.PageSize / SlabAllocator.ChunkSize(1000)); i++)
        {
            slab.Span(slab.Allocate(1000), 1000).Fill(0xCD);
        }

        Assert.Equal(pages, slab.ReservedBytes); // 30 pages came from the small class's free chunks
        Assert.Equal(30, slab.PagesMoved);
        foreach (var (owner, handle) in owners.Handles)
        {
            Check(slab, handle, 16, owner);
        }

        // The small class's free list is still whole: its remaining free chunks are all handed out again
        // before it needs a page.
        var free = slab.FreeBytes / 16;
        var live = owners.Handles.Values.ToHashSet();
        for (var i = 0; i < free; i++)
        {
            Assert.True(live.Add(slab.Allocate(16)), "a free chunk handed out twice, or a live one handed out");
        }

        Assert.Equal(pages, slab.ReservedBytes);
    }

    [Fact]
    public void A_shard_reads_free_chunks_as_no_owner_when_their_links_look_like_a_key_length()
    {
        // Found on the real server right after the free lists became doubly linked: a free chunk's first
        // bytes are a link, which for a chunk in page 0 at a small offset reads as a key length up to
        // 16 KB; the lookup then read past its 24-byte chunk and the page, and the SET's connection died.
        var shard = new CacheShard(EvictionPolicyKind.AllKeysLru, 0, new Random(9), hashSeed: 77);
        byte[] Key(int i) => Encoding.ASCII.GetBytes("k" + i.ToString("D4", CultureInfo.InvariantCulture));
        int Hash(byte[] key) => (int)Infra.Core.Placement.XxHash64.Hash(key, 77);
        for (var i = 0; i < 6000; i++)
        {
            var key = Key(i);
            shard.AddString(key, Hash(key), "0123456789"u8, 0, 0);
        }

        void Delete(int i)
        {
            var key = Key(i);
            shard.Remove(shard.Find(key, Hash(key), 0, Lookup.Write), Removal.Deleted);
        }

        // Keys k0000… sit in 24-byte chunks in order: page 0 holds k0000..k2729. Empty most of page 0, so
        // it is the page taken, and free pairs so that a chunk near its end links to one at offset
        // 24 × (600 + j) — read as a key length of 14–16 KB, past the end of the page.
        for (var i = 700; i <= 2500; i++)
        {
            Delete(i);
        }

        for (var j = 0; j <= 80; j++)
        {
            Delete(600 + j);
            Delete(2729 - j);
        }

        for (var i = 2800; i <= 3800; i++)
        {
            Delete(i); // page 1: the class now has more than a page of free chunks
        }

        var live = Enumerable.Range(0, 6000).Where(i => !(i is >= 700 and <= 2500) && !(i is >= 600 and <= 680) && !(i is >= 2649 and <= 2729) && !(i is >= 2800 and <= 3800)).ToList();

        for (var i = 0; i < 200; i++)
        {
            var key = Encoding.ASCII.GetBytes("big" + i.ToString(CultureInfo.InvariantCulture));
            shard.AddString(key, Hash(key), new byte[1000], 0, 0);
        }

        Assert.True(shard.SlabMoves.Pages > 0);
        Assert.Equal(live.Count + 200, shard.Count);
        foreach (var i in live)
        {
            var key = Key(i);
            var index = shard.Find(key, Hash(key), 0, Lookup.Check);
            Assert.True(index >= 0, $"k{i} is gone");
            Assert.Equal("0123456789", Encoding.ASCII.GetString(shard.StringOf(index)));
        }
    }

    [Fact]
    public void A_chunk_whose_owner_cannot_be_found_stops_the_move_and_changes_nothing()
    {
        var owners = new ChunkOwners();
        var slab = new SlabAllocator(owners);
        owners.Slab = slab;
        for (var i = 0; i < 4096; i++)
        {
            var handle = slab.Allocate(32);
            Fill(slab, handle, 32, i);
            owners.Handles[i] = handle;
        }

        foreach (var i in owners.Handles.Keys.Where(i => i % 2 == 0).ToList())
        {
            slab.Free(owners.Handles[i], 32);
            owners.Handles.Remove(i);
        }

        owners.Lose = true;
        var before = slab.ReservedBytes;
        slab.Allocate(1000);
        Assert.Equal(0, slab.PagesMoved);
        Assert.Equal(before + SlabAllocator.PageSize, slab.ReservedBytes);
        foreach (var (owner, handle) in owners.Handles)
        {
            Check(slab, handle, 32, owner);
        }

        // The free chunks are all still there for their own class: 2048 allocations need no new page.
        var reserved = slab.ReservedBytes;
        for (var i = 0; i < 2048; i++)
        {
            slab.Allocate(32);
        }

        Assert.Equal(reserved, slab.ReservedBytes);
    }

    [Fact]
    public void Floods_of_changing_value_sizes_keep_slab_pages_near_the_budget_and_every_value_intact()
    {
        // The stress that found it: maxmemory 32mb took 690 MB of RSS after floods of 15 value sizes,
        // each size class keeping the most pages it ever held. One shard of 1 MiB here.
        const long budget = 1 << 20;
        var shard = new CacheShard(EvictionPolicyKind.AllKeysLru, budget, new Random(5), hashSeed: 12345);
        shard.SetBudget(budget);
        var written = new Dictionary<string, int>();
        var next = 0;
        foreach (var size in FloodSizes.Concat(FloodSizes.Reverse()))
        {
            for (var bytesWritten = 0L; bytesWritten < 3 * budget; bytesWritten += size)
            {
                var key = "k" + (next++).ToString(CultureInfo.InvariantCulture);
                var bytes = Encoding.ASCII.GetBytes(key);
                var hash = (int)Infra.Core.Placement.XxHash64.Hash(bytes, 12345);
                var value = Value(key, size);
                lock (shard.Lock)
                {
                    Assert.True(shard.Reserve(shard.CostOfNewString(bytes.Length, size), -1));
                    shard.AddString(bytes, hash, value, 0, 0);
                }

                written[key] = size;
            }
        }

        var (movedPages, _) = shard.SlabMoves;
        Assert.True(movedPages > 0);

        // Live chunk bytes ≤ the budget; each class may keep under a page of free chunks and the page it
        // is cutting: 15 classes × 2 pages.
        var bound = budget + (FloodSizes.Length * 2L * SlabAllocator.PageSize);
        Assert.True(shard.SlabBytes <= bound, $"slab pages {shard.SlabBytes} over {bound}");

        var live = 0;
        foreach (var (key, size) in written)
        {
            var bytes = Encoding.ASCII.GetBytes(key);
            var index = shard.Find(bytes, (int)Infra.Core.Placement.XxHash64.Hash(bytes, 12345), 0, Lookup.Check);
            if (index >= 0)
            {
                live++;
                Assert.Equal(key, Encoding.ASCII.GetString(shard.KeyOf(index)));
                Assert.True(shard.StringOf(index).SequenceEqual(Value(key, size)), $"value of {key} changed");
            }
        }

        Assert.Equal(shard.Count, live);
        Assert.True(live > 0);
    }

    private static byte[] Value(string key, int size)
    {
        var value = new byte[size];
        var seed = key.GetHashCode(StringComparison.Ordinal);
        new Random(seed).NextBytes(value);
        return value;
    }

    private static void Fill(SlabAllocator slab, long handle, int size, int owner)
    {
        var span = slab.Span(handle, size);
        BitConverter.TryWriteBytes(span, owner);
        span[4..].Fill((byte)owner);
    }

    private static void Check(SlabAllocator slab, long handle, int size, int owner)
    {
        var span = slab.Span(handle, size);
        Assert.Equal(owner, BitConverter.ToInt32(span));
        Assert.True(span[4..].IndexOfAnyExcept((byte)owner) < 0, $"chunk of {owner} changed");
    }
}
