/* The hole-index heap, the classic hobby-kernel design: blocks with a header
 * {magic, hole flag, size} and a footer {magic, pointer to header}, and an
 * ordered index of holes — a fixed-capacity array at the start of the region,
 * kept sorted by (size, address) — so malloc takes the smallest hole that
 * fits with one binary search. Free unifies with both neighbours, found
 * through the footer on the left and the header on the right.
 *
 *   region: [ index: HI_CAP x u64 keys ][pad 8][ blk ][ blk ] ... brk
 *   block:  [ hdr: magic32 | size/16 << 2 | orphan | hole ][ payload ][ ftr: magic32 | hdr offset/16 ]
 *   key:    size/16 << 32 | offset/16          (sorting keys sorts holes by size)
 *
 * Blocks start 8 bytes before a 16-byte boundary so payloads are 16-aligned.
 * When the index is full, the smallest hole is dropped from it and marked an
 * orphan: still a hole in the heap (it coalesces as usual), only not findable
 * until a rescue sweep re-indexes orphans, which runs when a request misses
 * and an orphan might fit, or when the index has drained to half. Magics mix
 * in the block's offset (and the header its size word), so interior pointers
 * and overwritten metadata fail them. */
#include "engine_impl.h"
#include <errno.h>
#include <string.h>

/* Index entries: 128 (1 KiB). The index counts in the footprint, so a page
 * of it costs small heaps more than orphan holes cost big ones (measured). */
#define HI_CAP      128u
#define HI_IDX      ((size_t)HI_CAP * 8u)
#define HI_HEAP0    (HI_IDX + 8u)              /* first block: payloads land on 16 */
#define HI_MIN      32u                        /* header + 16 payload + footer */
#define HI_TRIM     ((size_t)64 << 10)         /* contract when the last hole reaches this */
#define HI_MAXHEAP  ((size_t)16 << 30)         /* sizes are kept in 30 bits of 16-byte units */

enum { F_HOLE = 1u, F_ORPHAN = 2u };

typedef struct hi_hdr { uint32_t magic, word; } hi_hdr_t;
typedef struct hi_ftr { uint32_t magic, hdr16; } hi_ftr_t;

typedef struct hole_index {
    struct hk_engine base;
    size_t count;                              /* entries in the index */
    size_t orphans, orphan_max;                /* holes not in the index; bound on their size */
    size_t live_bytes, live_blocks, free_bytes, free_blocks;
} hole_index_t;

HK_INLINE hole_index_t *H(hk_engine_t *e) { return (hole_index_t *)e; }
HK_INLINE char *hbase(hole_index_t *h) { return h->base.heap.region.base; }
HK_INLINE size_t hbrk(hole_index_t *h) { return h->base.heap.brk; }
HK_INLINE uint64_t *keys(hole_index_t *h) { return (uint64_t *)(void *)hbase(h); }
HK_INLINE hi_hdr_t *hdr(hole_index_t *h, size_t off) { return (hi_hdr_t *)(void *)(hbase(h) + off); }
HK_INLINE hi_ftr_t *ftr(hole_index_t *h, size_t off, size_t size) { return (hi_ftr_t *)(void *)(hbase(h) + off + size - 8); }

HK_INLINE uint32_t mix(uint64_t x)
{
    x *= 0x9E3779B97F4A7C15ull;
    x ^= x >> 31;
    x *= 0xD6E8FEB86659FD93ull;
    return (uint32_t)(x >> 32);
}
HK_INLINE uint32_t hmagic(size_t off, uint32_t word) { return 0x401E1DE5u ^ mix((uint64_t)off << 20 ^ word); }
HK_INLINE uint32_t fmagic(size_t off) { return 0xF0071E25u ^ mix(~(uint64_t)off); }

HK_INLINE size_t wsize(uint32_t word) { return (size_t)(word >> 2) << 4; }
HK_INLINE uint64_t key_of(size_t off, size_t size) { return (uint64_t)(size >> 4) << 32 | (uint64_t)((off - HI_HEAP0) >> 4); }
HK_INLINE size_t key_off(uint64_t k) { return HI_HEAP0 + ((size_t)(uint32_t)k << 4); }
HK_INLINE size_t key_size(uint64_t k) { return (size_t)(k >> 32) << 4; }

/* Header and footer of the block (off, size). */
HK_INLINE void set_block(hole_index_t *h, size_t off, size_t size, unsigned flags)
{
    hi_hdr_t *hd = hdr(h, off);
    hd->word = (uint32_t)((size >> 4) << 2 | flags);
    hd->magic = hmagic(off, hd->word);
    hi_ftr_t *f = ftr(h, off, size);
    f->hdr16 = (uint32_t)((off - HI_HEAP0) >> 4);
    f->magic = fmagic(off);
}

HK_INLINE void set_flags(hole_index_t *h, size_t off, unsigned flags)
{
    hi_hdr_t *hd = hdr(h, off);
    hd->word = (hd->word & ~3u) | flags;
    hd->magic = hmagic(off, hd->word);
}

/* A block is sound when its header validates, it fits in the heap and its
 * footer points back at it. */
HK_INLINE bool block_ok(hole_index_t *h, size_t off)
{
    if (off < HI_HEAP0 || off + HI_MIN > hbrk(h) || ((off - HI_HEAP0) & 15)) return false;
    hi_hdr_t *hd = hdr(h, off);
    if (hd->magic != hmagic(off, hd->word)) return false;
    size_t s = wsize(hd->word);
    if (s < HI_MIN || s > hbrk(h) - off) return false;
    hi_ftr_t *f = ftr(h, off, s);
    return f->magic == fmagic(off) && f->hdr16 == (uint32_t)((off - HI_HEAP0) >> 4);
}

/* The block that ends at `end`, through its footer; false when damaged. */
HK_INLINE bool block_before(hole_index_t *h, size_t end, size_t *off)
{
    hi_ftr_t *f = (hi_ftr_t *)(void *)(hbase(h) + end - 8);
    size_t o = HI_HEAP0 + ((size_t)f->hdr16 << 4);
    if (o >= end || !block_ok(h, o) || o + wsize(hdr(h, o)->word) != end) return false;
    *off = o;
    return true;
}

/* An index entry names a sound, indexed hole of the recorded size. */
HK_INLINE bool entry_ok(hole_index_t *h, uint64_t k)
{
    size_t off = key_off(k);
    return block_ok(h, off) && hdr(h, off)->word == (uint32_t)((k >> 32) << 2 | F_HOLE);
}

/* ---- the index ----------------------------------------------------------- */

HK_INLINE size_t idx_lower_bound(hole_index_t *h, uint64_t k)
{
    const uint64_t *a = keys(h);
    size_t lo = 0, n = h->count;
    while (n > 0) {
        size_t half = n / 2;
        if (a[lo + half] < k) { lo += half + 1; n -= half + 1; }
        else n = half;
    }
    return lo;
}

static void make_orphan(hole_index_t *h, size_t off, size_t size)
{
    set_flags(h, off, F_HOLE | F_ORPHAN);
    h->orphans++;
    if (size > h->orphan_max) h->orphan_max = size;
}

/* Record a hole (header already written as an indexed hole). A full index
 * keeps the larger holes: the smallest of all becomes an orphan. */
static void idx_insert(hole_index_t *h, size_t off, size_t size)
{
    uint64_t k = key_of(off, size), *a = keys(h);
    if (hk_unlikely(h->count == HI_CAP)) {
        if (a[0] > k) { make_orphan(h, off, size); return; }
        make_orphan(h, key_off(a[0]), key_size(a[0]));
        memmove(a, a + 1, --h->count * sizeof *a);
    }
    size_t i = idx_lower_bound(h, k);
    memmove(a + i + 1, a + i, (h->count - i) * sizeof *a);
    a[i] = k;
    h->count++;
}

/* Forget a hole that is about to be used or merged. */
static void hole_forget(hole_index_t *h, size_t off, size_t size)
{
    if (hdr(h, off)->word & F_ORPHAN) { h->orphans--; return; }
    uint64_t k = key_of(off, size), *a = keys(h);
    size_t i = idx_lower_bound(h, k);
    if (hk_likely(i < h->count && a[i] == k)) {
        memmove(a + i, a + i + 1, (h->count - i - 1) * sizeof *a);
        h->count--;
    }
}

/* Make (off, size) a hole and record it. */
static void add_hole(hole_index_t *h, size_t off, size_t size)
{
    set_block(h, off, size, F_HOLE);
    h->free_bytes += size;
    h->free_blocks++;
    idx_insert(h, off, size);
}

static void drop_hole(hole_index_t *h, size_t off, size_t size)
{
    hole_forget(h, off, size);
    h->free_bytes -= size;
    h->free_blocks--;
}

/* Re-index orphans; keeps the largest holes when they do not all fit. */
HK_COLD static void rescue_orphans(hole_index_t *h)
{
    h->orphan_max = 0;
    for (size_t off = HI_HEAP0; off < hbrk(h);) {
        hi_hdr_t *hd = hdr(h, off);
        size_t s = wsize(hd->word);
        if (hd->word & F_ORPHAN) {
            h->orphans--;
            set_flags(h, off, F_HOLE);
            idx_insert(h, off, s);
        }
        off += s;
    }
}

/* Once the index has emptied to half, orphans fit again: re-admit them. A
 * sweep needs the index to have gone full and then lost half its entries,
 * so its O(blocks) cost is spread over at least HI_CAP/2 operations. */
HK_INLINE void maybe_rescue(hole_index_t *h)
{
    if (hk_unlikely(h->orphans) && h->count < HI_CAP / 2) rescue_orphans(h);
}

static size_t hi_check(hk_engine_t *e);

/* ---- allocation ---------------------------------------------------------- */

HK_INLINE size_t hi_max_request(const hole_index_t *h)
{
    return h->base.heap.region.reserved - HI_HEAP0 - 16;
}

HK_INLINE size_t need_for(size_t size)
{
    size_t n = hk__align_up(size + 16, 16);
    return n < HI_MIN ? HI_MIN : n;
}

/* Use `n` bytes at the start of the free range (off, s), which is in no
 * index; the tail becomes a hole when it is big enough to be one. */
static void place(hole_index_t *h, size_t off, size_t s, size_t n)
{
    if (s - n >= HI_MIN) {
        set_block(h, off, n, 0);
        add_hole(h, off + n, s - n);
    } else {
        n = s;
        set_block(h, off, n, 0);
    }
    h->live_bytes += n - 16;
    h->live_blocks++;
}

/* No hole fits: extend the last hole up to `n`, or add a block at the top.
 * Returns the offset of a free range of at least n bytes (in no index). */
HK_COLD static bool expand(hole_index_t *h, size_t n, size_t *out, size_t *out_size)
{
    size_t brk = hbrk(h), start = brk, have = 0, last;
    if (brk > HI_HEAP0 && block_before(h, brk, &last) && (hdr(h, last)->word & F_HOLE)) {
        start = last;
        have = wsize(hdr(h, last)->word);
    }
    size_t extra = have >= n ? 0 : n - have;
    if (start + n > HI_MAXHEAP || !hk_sbrk_grow(&h->base.heap, extra)) return false;
    if (have) drop_hole(h, start, have);
    *out = start;
    *out_size = HK_MAX(n, have);
    return true;
}

static void *hi_malloc(hk_engine_t *e, size_t size)
{
    hole_index_t *h = H(e);
    if (hk_unlikely(size > hi_max_request(h))) return NULL;
    size_t n = need_for(size);
    size_t i = idx_lower_bound(h, (uint64_t)(n >> 4) << 32);
    if (hk_unlikely(i == h->count) && h->orphans && h->orphan_max >= n) {
        rescue_orphans(h);
        i = idx_lower_bound(h, (uint64_t)(n >> 4) << 32);
    }
    size_t off, s;
    if (hk_likely(i < h->count)) {
        uint64_t k = keys(h)[i];
        if (hk_unlikely(!entry_ok(h, k))) {
            hk__engine_misuse(e, HK_ECORRUPT, hbase(h) + key_off(k), "hole index entry damaged");
            return NULL;
        }
        off = key_off(k);
        s = key_size(k);
        memmove(keys(h) + i, keys(h) + i + 1, (h->count - i - 1) * sizeof(uint64_t));
        h->count--;
        h->free_bytes -= s;
        h->free_blocks--;
    } else if (!expand(h, n, &off, &s)) {
        return NULL;
    }
    place(h, off, s, n);
    maybe_rescue(h);
    hk_assert_expensive(hi_check(e) == 0);
    return hbase(h) + off + 8;
}

/* Resolve a user pointer to its live block; a misuse code otherwise. */
static int resolve(hole_index_t *h, const void *p, size_t *out)
{
    size_t poff = (size_t)((const char *)p - hbase(h));
    if ((poff & 15) || poff < HI_HEAP0 + 8) return HK_EINVALID;
    size_t off = poff - 8;
    hi_hdr_t *hd = hdr(h, off);
    if (hd->magic != hmagic(off, hd->word)) return HK_EINVALID;
    if (hd->word & F_HOLE) return HK_EDOUBLEFREE;
    if (!block_ok(h, off)) return HK_ECORRUPT;
    *out = off;
    return HK_OK;
}

/* Give back a hole at the top of the heap when it is large. */
HK_INLINE bool contract(hole_index_t *h, size_t off, size_t s)
{
    if (off + s != hbrk(h) || s < HI_TRIM) return false;
    hk_sbrk_shrink(&h->base.heap, s);
    return true;
}

/* Free the range (off, s) that is in no index, unifying it with hole
 * neighbours (the caller has checked their metadata). */
static void release(hole_index_t *h, size_t off, size_t s)
{
    set_flags(h, off, F_HOLE);               /* a second free of an absorbed block still reads "hole" */
    size_t l;
    if (off > HI_HEAP0 && block_before(h, off, &l) && (hdr(h, l)->word & F_HOLE)) {
        size_t ls = wsize(hdr(h, l)->word);
        drop_hole(h, l, ls);
        off = l;
        s += ls;
    }
    size_t r = off + s;
    if (r < hbrk(h) && block_ok(h, r) && (hdr(h, r)->word & F_HOLE)) {
        size_t rs = wsize(hdr(h, r)->word);
        drop_hole(h, r, rs);
        s += rs;
    }
    if (hk_unlikely(contract(h, off, s))) return;
    add_hole(h, off, s);
}

/* Both neighbours must be sound before a free or a resize touches them. */
static bool neighbours_ok(hole_index_t *h, size_t off, size_t s)
{
    size_t l;
    if (off > HI_HEAP0 && !block_before(h, off, &l)) return false;
    return off + s >= hbrk(h) || block_ok(h, off + s);
}

static int hi_free(hk_engine_t *e, void *p)
{
    hole_index_t *h = H(e);
    size_t off;
    int rc = resolve(h, p, &off);
    if (rc != HK_OK)
        return hk__engine_misuse(e, rc, p, rc == HK_EDOUBLEFREE ? "block is already a hole"
                                         : rc == HK_ECORRUPT ? "footer damaged" : "bad magic: not a block start");
    size_t s = wsize(hdr(h, off)->word);
    if (!neighbours_ok(h, off, s)) return hk__engine_misuse(e, HK_ECORRUPT, p, "neighbour metadata damaged");
    h->live_bytes -= s - 16;
    h->live_blocks--;
    release(h, off, s);
    maybe_rescue(h);
    hk_assert_expensive(hi_check(e) == 0);
    return HK_OK;
}

static void *hi_realloc(hk_engine_t *e, void *p, size_t size)
{
    hole_index_t *h = H(e);
    size_t off;
    int rc = resolve(h, p, &off);
    if (rc != HK_OK) {
        hk__engine_misuse(e, rc, p, "realloc of a pointer that is not a live block");
        return NULL;
    }
    if (size > hi_max_request(h)) return NULL;
    size_t s = wsize(hdr(h, off)->word), n = need_for(size);
    if (!neighbours_ok(h, off, s)) {
        hk__engine_misuse(e, HK_ECORRUPT, p, "neighbour metadata damaged");
        return NULL;
    }
    if (n <= s) {
        if (s - n >= HI_MIN) {                /* give the tail back */
            set_block(h, off, n, 0);
            h->live_bytes -= s - n;
            set_block(h, off + n, s - n, 0);
            release(h, off + n, s - n);
        }
        return p;
    }
    size_t r = off + s, brk = hbrk(h);
    size_t rs = 0;
    if (r < brk && (hdr(h, r)->word & F_HOLE)) rs = wsize(hdr(h, r)->word);
    if (r + rs == brk || s + rs >= n) {       /* absorb the right hole, move the break if needed */
        size_t total = s + rs;
        if (total < n) {
            if (off + n > HI_MAXHEAP || !hk_sbrk_grow(&h->base.heap, n - total)) goto move;
            total = n;
        }
        if (rs) drop_hole(h, r, rs);
        h->live_bytes -= s - 16;
        h->live_blocks--;
        place(h, off, total, n);
        return p;
    }
move:;
    void *q = hi_malloc(e, size);
    if (!q) return NULL;
    memcpy(q, p, s - 16);
    hi_free(e, p);
    return q;
}

/* Where a payload aligned to `a` fits in the free range (start, s): the
 * leading part is either empty or big enough to stay a hole. */
HK_INLINE bool aligned_fit(size_t start, size_t s, size_t a, size_t n, uintptr_t base, size_t *blk)
{
    uintptr_t p = hk__align_up(base + start + 8, a);
    if (p - base - 8 != start && p - base - 8 - start < HI_MIN) p = hk__align_up(base + start + 8 + HI_MIN, a);
    size_t b = (size_t)(p - base - 8);
    if (b + n > start + s) return false;
    *blk = b;
    return true;
}

static void *hi_memalign(hk_engine_t *e, size_t align, size_t size)
{
    hole_index_t *h = H(e);
    if (size > hi_max_request(h) || align > HI_MAXHEAP / 2) return NULL;
    size_t n = need_for(size), off = 0, s = 0, blk = 0;
    uintptr_t base = (uintptr_t)hbase(h);
    bool found = false;
    /* The smallest hole where an aligned payload fits: scan up from the first big enough. */
    for (size_t i = idx_lower_bound(h, (uint64_t)(n >> 4) << 32); i < h->count; i++) {
        uint64_t k = keys(h)[i];
        if (!entry_ok(h, k)) {
            hk__engine_misuse(e, HK_ECORRUPT, hbase(h) + key_off(k), "hole index entry damaged");
            return NULL;
        }
        if (aligned_fit(key_off(k), key_size(k), align, n, base, &blk)) {
            off = key_off(k);
            s = key_size(k);
            memmove(keys(h) + i, keys(h) + i + 1, (h->count - i - 1) * sizeof(uint64_t));
            h->count--;
            h->free_bytes -= s;
            h->free_blocks--;
            found = true;
            break;
        }
    }
    if (!found) {
        /* Grow: from the last hole if there is one, else from the break. */
        size_t brk = hbrk(h), start = brk, have = 0, last;
        if (brk > HI_HEAP0 && block_before(h, brk, &last) && (hdr(h, last)->word & F_HOLE)) {
            start = last;
            have = wsize(hdr(h, last)->word);
        }
        aligned_fit(start, (size_t)-1 / 2, align, n, base, &blk);
        size_t end = HK_MAX(blk + n, brk);
        if (end > HI_MAXHEAP || end > h->base.heap.region.reserved || !hk_sbrk_grow(&h->base.heap, end - brk))
            return NULL;
        if (have) drop_hole(h, start, have);
        off = start;
        s = end - start;
    }
    if (blk > off) add_hole(h, off, blk - off);   /* the leading part is a hole of its own */
    place(h, blk, off + s - blk, n);
    return hbase(h) + blk + 8;
}

static size_t hi_usable_size(hk_engine_t *e, const void *p)
{
    hole_index_t *h = H(e);
    size_t off;
    if (resolve(h, p, &off) != HK_OK) return 0;
    return wsize(hdr(h, off)->word) - 16;
}

static int hi_init(hk_engine_t *e)
{
    hole_index_t *h = H(e);
    int err = hk_sbrk_init(&e->heap, HK_MIN(e->cfg.max_size, HI_MAXHEAP));
    if (err) return err;
    if (!hk_sbrk_grow(&e->heap, HI_HEAP0)) return ENOMEM;
    h->count = 0;
    return 0;
}

static void hi_walk(hk_engine_t *e, hk_walk_fn fn, void *arg)
{
    hole_index_t *h = H(e);
    for (size_t off = HI_HEAP0; off < hbrk(h);) {
        if (!block_ok(h, off)) return;
        size_t s = wsize(hdr(h, off)->word);
        fn(arg, hbase(h) + off, s, !(hdr(h, off)->word & F_HOLE));
        off += s;
    }
}

static size_t hi_check(hk_engine_t *e)
{
    hole_index_t *h = H(e);
    size_t bad = 0;
    const uint64_t *a = keys(h);
    /* The index: sorted by (size, address), every entry a real indexed hole. */
    if (h->count > HI_CAP) return 1;
    for (size_t i = 0; i < h->count; i++) {
        if (i && a[i - 1] >= a[i]) bad++;
        size_t off = key_off(a[i]);
        if (!block_ok(h, off)) { bad++; continue; }
        uint32_t w = hdr(h, off)->word;
        if ((w & 3u) != F_HOLE || wsize(w) != key_size(a[i])) bad++;
    }
    /* The heap in address order. */
    size_t off = HI_HEAP0, live = 0, nlive = 0, fb = 0, nfree = 0, norph = 0;
    bool prev_hole = false;
    while (off < hbrk(h)) {
        if (!block_ok(h, off)) { bad++; break; }
        uint32_t w = hdr(h, off)->word;
        size_t s = wsize(w);
        if (w & F_HOLE) {
            if (prev_hole) bad++;                  /* two holes side by side: missed unify */
            fb += s;
            nfree++;
            if (w & F_ORPHAN) {
                norph++;
                if (s > h->orphan_max) bad++;
            } else {
                size_t i = idx_lower_bound(h, key_of(off, s));
                if (i >= h->count || a[i] != key_of(off, s)) bad++;   /* a hole the index lost */
            }
            prev_hole = true;
        } else {
            if (w & F_ORPHAN) bad++;
            live += s - 16;
            nlive++;
            prev_hole = false;
        }
        off += s;
    }
    if (off == hbrk(h)) {
        if (live != h->live_bytes || nlive != h->live_blocks) bad++;
        if (fb != h->free_bytes || nfree != h->free_blocks) bad++;
        if (norph != h->orphans || nfree != h->count + h->orphans) bad++;
    }
    return bad;
}

static void hi_stats(hk_engine_t *e, hk_engine_stats_t *out)
{
    hole_index_t *h = H(e);
    out->live_bytes = h->live_bytes;
    out->live_blocks = h->live_blocks;
    out->footprint = e->heap.brk;
    out->peak_footprint = e->heap.peak;
    out->free_bytes = h->free_bytes;
    out->free_blocks = h->free_blocks;
    size_t big = h->count ? key_size(keys(h)[h->count - 1]) : 0;
    if (h->orphans) {
        for (size_t off = HI_HEAP0; off < hbrk(h) && block_ok(h, off);) {
            uint32_t w = hdr(h, off)->word;
            if ((w & F_HOLE) && wsize(w) > big) big = wsize(w);
            off += wsize(w);
        }
    }
    out->largest_free = big;
}

static void hi_info(const hk_engine_t *e, hk_engine_info_t *out)
{
    out->overhead = 16;
    out->min_block = HI_MIN;
    out->alignment = 16;
    out->max_request = hi_max_request((const hole_index_t *)e);
}

const hk_engine_ops_t hk__engine_hole_index = {
    .name = "hole-index",
    .description = "ordered hole index: magic header/footer, smallest-fit by binary search, page-aligned carving",
    .state_size = sizeof(hole_index_t),
    .init = hi_init,
    .malloc = hi_malloc,
    .free = hi_free,
    .realloc = hi_realloc,
    .memalign = hi_memalign,
    .usable_size = hi_usable_size,
    .check = hi_check,
    .walk = hi_walk,
    .stats = hi_stats,
    .info = hi_info,
};
