/* Segments: 4 MiB mappings aligned to their size, their page bitmaps, the
 * segment-address bitmap that tells heapkit's pointers from others, the
 * small cache of free segments, adoption of abandoned segments, and
 * purging (MADV_DONTNEED) of pages that stayed free past the purge delay. */
#define _GNU_SOURCE
#include "core.h"
#include <string.h>
#include <time.h>

uint64_t hk__segmap[((size_t)1 << (HK_ADDR_BITS - HK_SEG_SHIFT)) / 64];
uint64_t hk__smallmap[((size_t)1 << (HK_ADDR_BITS - HK_SEG_SHIFT)) / 64];   /* kind HK_SEG_SMALL */

static hk_lock_t g_cache_lock;
static hk_segment_t *g_cache[64];
static unsigned g_cache_n;
static uint64_t g_purged_now;   /* bytes of mapped segments currently purged */

uint64_t hk__now_ms(void)
{
    return hk__os_now_ms();      /* CLOCK_MONOTONIC_COARSE: a few ms of resolution is plenty, and it is cheap */
}

static void map_set(uint64_t *map, const void *seg, bool on)
{
    uintptr_t i = (uintptr_t)seg >> HK_SEG_SHIFT;
    uint64_t bit = (uint64_t)1 << (i & 63);
    if (on) __atomic_fetch_or(&map[i >> 6], bit, __ATOMIC_RELEASE);
    else __atomic_fetch_and(&map[i >> 6], ~bit, __ATOMIC_RELEASE);
}

void hk__segmap_set(void *seg, bool on) HK_HIDDEN;
void hk__segmap_set(void *seg, bool on) { map_set(hk__segmap, seg, on); }

static void update_committed_peak(void)
{
    uint64_t c = __atomic_load_n(&hk__gstats.reserved, __ATOMIC_RELAXED) -
                 __atomic_load_n(&g_purged_now, __ATOMIC_RELAXED);
    hk__stat_max(&hk__gstats.committed_peak, c);
}

uint64_t hk__purged_now(void) HK_HIDDEN;
uint64_t hk__purged_now(void) { return __atomic_load_n(&g_purged_now, __ATOMIC_RELAXED); }
void hk__purged_add(int64_t bytes) { __atomic_fetch_add(&g_purged_now, (uint64_t)bytes, __ATOMIC_RELAXED); }

static inline uint64_t span_bits(unsigned i, unsigned n)
{
    return (n >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << n) - 1)) << i;
}

void hk__purge_range(void *start, size_t bytes)
{
    if (hk_vm_purge(start, bytes) == 0) {
        HK_ATOMIC_ADD(&hk__gstats.purges, 1);
        HK_ATOMIC_ADD(&hk__gstats.purged_bytes, (uint64_t)bytes);
    }
}

/* ------------------------------------------------------------ segment lists
 *
 * A heap files each of its segments by its free pages: seg_res holds those
 * with a free page still resident, seg_pur those whose free pages are all
 * purged, and a segment with no free page is on neither. Taking a span
 * walks seg_res (then seg_pur), a purge walks seg_res: in a heap of
 * thousands of segments, mostly full, neither visits the full ones (a
 * 4 GiB heap of small blocks walked its 1,000 segment headers for every
 * span it took). Every change to a segment's free or purged pages refiles
 * it (O(1)). */
static inline hk_segment_t **slist_head(hk_theap_t *heap, unsigned l)
{
    return l == HK_SL_RES ? &heap->seg_res : &heap->seg_pur;
}

static void slist_out(hk_theap_t *heap, hk_segment_t *seg)
{
    if (seg->slist == HK_SL_NONE) return;
    if (seg->sprev) seg->sprev->snext = seg->snext;
    else *slist_head(heap, seg->slist) = seg->snext;
    if (seg->snext) seg->snext->sprev = seg->sprev;
    seg->snext = seg->sprev = NULL;
    seg->slist = HK_SL_NONE;
}

/* File seg on the list its free pages call for (a no-op off a heap, and
 * when it is already there). in_heap means something in small segments
 * only: in a cached or huge one a huge block's bytes may lie there. */
static void seg_file(hk_segment_t *seg)
{
    if (seg->kind != HK_SEG_SMALL || !seg->in_heap) return;
    unsigned l = hk__seg_state(seg);
    if (l == seg->slist) return;
    hk_theap_t *heap = seg->heap;
    slist_out(heap, seg);
    if (l == HK_SL_NONE) return;
    hk_segment_t **head = slist_head(heap, l);
    seg->sprev = NULL;
    seg->snext = *head;
    if (*head) (*head)->sprev = seg;
    *head = seg;
    seg->slist = (uint8_t)l;
    /* An empty segment whose pages were all purged (a budget purge, a
     * parked heap): the next purge looks through seg_pur to release it. */
    if (l == HK_SL_PUR && seg->used_pages == 0) heap->pur_empty = 1;
}

/* A page of seg in use got a dirty tail (hk_page_t.dirty_end): the next
 * purge visits seg. */
static void seg_note_tail(hk_theap_t *heap, hk_segment_t *seg)
{
    if (seg->tails) return;
    seg->tails = 1;
    if (heap->ntails < sizeof heap->tails / sizeof heap->tails[0]) heap->tails[heap->ntails++] = seg;
    else heap->tails_all = 1;
}

/* Give pages in `mask` (free, not yet purged) back to the OS, run by run. */
static void purge_mask(hk_segment_t *seg, uint64_t mask)
{
    mask &= ~seg->purged_mask;
    if (!mask) return;
    seg->purged_mask |= mask;
    HK_ATOMIC_ADD(&g_purged_now, (uint64_t)hk__popcount64(mask) * HK_PAGE_SIZE);
    while (mask) {
        unsigned i = (unsigned)__builtin_ctzll(mask);
        uint64_t rest = ~(mask >> i);
        unsigned n = rest ? (unsigned)__builtin_ctzll(rest) : 64 - i;
        char *start = (char *)seg + (size_t)i * HK_PAGE_SIZE + hk__span_lead(i);
        char *end = (char *)seg + (size_t)(i + n) * HK_PAGE_SIZE;
        if (end > start) hk__purge_range(start, (size_t)(end - start));
        mask &= ~span_bits(i, n);
    }
    seg_file(seg);
}

/* ------------------------------------------------------------ mapping and cache */

void *hk__segment_map(bool *fresh, unsigned want_pages, bool huge_pages)
{
    hk__lock(&g_cache_lock);
    if (g_cache_n && !huge_pages) {
        /* Best fit on resident pages: a segment whose touched pages match
         * the need is reused without purging or refaulting. */
        unsigned best = g_cache_n - 1, best_cost = ~0u;
        for (unsigned i = g_cache_n; i-- > 0;) {
            unsigned res = 64u - (unsigned)hk__popcount64(g_cache[i]->purged_mask);
            unsigned cost = res > want_pages ? res - want_pages : want_pages - res;
            if (cost < best_cost) { best_cost = cost; best = i; }
        }
        hk_segment_t *seg = g_cache[best];
        g_cache[best] = g_cache[--g_cache_n];
        hk__unlock(&g_cache_lock);
        HK_ATOMIC_SUB(&hk__gstats.segments_cached, 1);
        *fresh = false;
        return seg;
    }
    hk__unlock(&g_cache_lock);
    void *p;
    if (hk_vm_alloc(HK_SEG_SIZE, HK_SEG_SIZE, &p) != 0) return NULL;
    /* The segment map and the pages' thread_free words (HK_TF_SHIFT) cover
     * addresses below 2^HK_ADDR_BITS; Linux maps above only when asked
     * (huge blocks check the same in hk__huge_alloc_in). */
    if (hk_unlikely((uintptr_t)p >> HK_ADDR_BITS)) {
        (void)hk_vm_release(p, HK_SEG_SIZE);
        return NULL;
    }
    /* Before the first write, or the header's fault maps small pages. */
    bool thp = huge_pages && hk_vm_advise_huge(p, HK_SEG_SIZE) == 0;
    hk_segment_t *seg = p;
    if (huge_pages) seg->thp = thp;
    seg->purged_mask = ~(uint64_t)0;         /* untouched pages cost nothing yet */
    HK_ATOMIC_ADD(&g_purged_now, HK_SEG_SIZE);
    HK_ATOMIC_ADD(&hk__gstats.reserved, HK_SEG_SIZE);
    uint64_t n = __atomic_add_fetch(&hk__gstats.segments, 1, __ATOMIC_RELAXED);
    hk__stat_max(&hk__gstats.segments_peak, n);
    hk__segmap_set(seg, true);
    *fresh = true;
    return seg;
}

/* A segment taken whole by a huge block of `bytes`: its first pages become
 * committed; pages past the block that a previous user touched are purged
 * so the block does not carry their resident memory along. */
void hk__segment_take_for_huge(hk_segment_t *seg, size_t bytes)
{
    unsigned n = (unsigned)((bytes + HK_PAGE_SIZE - 1) >> HK_PAGE_SHIFT);
    uint64_t used = span_bits(0, n);
    uint64_t pur = seg->purged_mask & used;
    if (pur) HK_ATOMIC_SUB(&g_purged_now, (uint64_t)hk__popcount64(pur) * HK_PAGE_SIZE);
    seg->purged_mask &= ~used;
    if (n < 64) purge_mask(seg, ~used);
    update_committed_peak();
}

/* The counters and the segment bitmap forget a mapping of `sz` bytes at
 * seg (a segment when sz is the segment size, else a bigger huge block). */
static void segment_unaccount(hk_segment_t *seg, size_t sz)
{
    if (sz == HK_SEG_SIZE) {
        HK_ATOMIC_SUB(&g_purged_now, (uint64_t)hk__popcount64(seg->purged_mask) * HK_PAGE_SIZE);
        HK_ATOMIC_SUB(&hk__gstats.segments, 1);
    }
    map_set(hk__smallmap, seg, false);
    hk__segmap_set(seg, false);
    HK_ATOMIC_SUB(&hk__gstats.reserved, sz);
}

static void segment_release(hk_segment_t *seg)
{
    segment_unaccount(seg, HK_SEG_SIZE);
    hk_vm_release(seg, HK_SEG_SIZE);
}

/* A free segment (all pages unused, or a segment-sized huge block):
 * keep a few mapped for reuse, purged after the delay; unmap the rest. */
void hk__segment_unmap_or_cache(hk_segment_t *seg)
{
    if (seg->kind == HK_SEG_SMALL && seg->thp) {   /* keep huge-page segments out of the shared cache */
        seg->magic = 0;
        segment_release(seg);
        return;
    }
    map_set(hk__smallmap, seg, false);
    __atomic_store_n(&seg->thread_id, 0, __ATOMIC_RELAXED);
    seg->kind = HK_SEG_CACHED;
    seg->heap = NULL;
    long delay = HK_OPT(HK_OPTION_PURGE_DELAY);
    if (delay == 0) purge_mask(seg, ~(uint64_t)0);
    seg->cache_time = hk__now_ms();
    /* Read before publishing: once in the cache another thread may take it. */
    uint64_t due = (delay > 0 && seg->purged_mask != ~(uint64_t)0) ? seg->cache_time + (uint64_t)delay : 0;
    hk__lock(&g_cache_lock);
    if (g_cache_n < (unsigned)HK_OPT(HK_OPTION_SEGMENT_CACHE) && g_cache_n < 64) {
        g_cache[g_cache_n++] = seg;
        hk__unlock(&g_cache_lock);
        HK_ATOMIC_ADD(&hk__gstats.segments_cached, 1);
        hk_theap_t *me = hk__tls_heap;
        if (due && me != &hk__heap_empty && (!me->purge_due || due < me->purge_due)) me->purge_due = due;
        return;
    }
    hk__unlock(&g_cache_lock);
    segment_release(seg);
}

uint64_t hk__huge_cache_purge(uint64_t now, bool force) HK_HIDDEN;
void hk__huge_cache_lock(bool lock, bool child) HK_HIDDEN;

uint64_t hk__cache_purge(uint64_t now, bool force)
{
    uint64_t next = hk__huge_cache_purge(now, force);
    long delay = HK_OPT(HK_OPTION_PURGE_DELAY);
    if (delay < 0 && !force) return next;
    hk__lock(&g_cache_lock);
    for (unsigned i = 0; i < g_cache_n; i++) {
        hk_segment_t *seg = g_cache[i];
        if (seg->purged_mask == ~(uint64_t)0) continue;
        uint64_t due = seg->cache_time + (uint64_t)(delay > 0 ? delay : 0);
        if (force || now >= due) purge_mask(seg, ~(uint64_t)0);
        else if (!next || due < next) next = due;
    }
    /* Trim to the option's size (it may have been lowered). */
    while (g_cache_n > (unsigned)HK_OPT(HK_OPTION_SEGMENT_CACHE)) {
        hk_segment_t *seg = g_cache[--g_cache_n];
        HK_ATOMIC_SUB(&hk__gstats.segments_cached, 1);
        segment_release(seg);
    }
    hk__unlock(&g_cache_lock);
    return next;
}

void hk__segments_lock_all(void) { hk__huge_cache_lock(true, false); hk__lock(&g_cache_lock); }
void hk__segments_unlock_all(bool child)
{
    hk__huge_cache_lock(false, child);
    if (child) g_cache_lock.v = 0;
    else hk__unlock(&g_cache_lock);
}

/* ------------------------------------------------------------ small segments */

static void segment_link(hk_theap_t *heap, hk_segment_t *seg)
{
    seg->prev = NULL;
    seg->next = heap->segments;
    if (heap->segments) heap->segments->prev = seg;
    heap->segments = seg;
    heap->used_pages += seg->used_pages;
    heap->nsegs++;
    seg->in_heap = 1;
    seg->slist = HK_SL_NONE;
    seg->snext = seg->sprev = NULL;
    seg_file(seg);
    /* (an adopted segment may bring dirty tails from its last heap) */
    if (seg->tails) { seg->tails = 0; seg_note_tail(heap, seg); }
}

static void segment_unlink(hk_theap_t *heap, hk_segment_t *seg)
{
    if (seg->prev) seg->prev->next = seg->next;
    else heap->segments = seg->next;
    if (seg->next) seg->next->prev = seg->prev;
    seg->next = seg->prev = NULL;
    slist_out(heap, seg);
    seg->in_heap = 0;
    heap->used_pages -= seg->used_pages;
    heap->nsegs--;
    if (seg->tails) {
        for (unsigned k = 0; k < heap->ntails; k++)
            if (heap->tails[k] == seg) { heap->tails[k] = heap->tails[--heap->ntails]; break; }
    }
}

/* Destroy of a private heap: the segment (or huge block) is forgotten
 * whatever it holds, no block visited; the caller unmaps the returned
 * number of bytes at seg (hk__theap_release_all joins neighbours into one
 * munmap). */
size_t hk__segment_forget(hk_segment_t *seg) HK_HIDDEN;
HK_RARE_CODE size_t hk__segment_forget(hk_segment_t *seg)
{
    size_t sz = HK_SEG_SIZE;
    if (seg->kind == HK_SEG_SMALL) {
        uint64_t pages = 0, bytes = 0;
        for (unsigned i = 0; i < HK_SEG_PAGES; i++) {
            const hk_page_t *pg = &seg->pages[i];
            if ((seg->free_mask >> i) & 1 || pg->back) continue;
            pages++;
            bytes += (uint64_t)pg->span * HK_PAGE_SIZE;
        }
        HK_ATOMIC_SUB(&hk__gstats.pages, pages);
        HK_ATOMIC_SUB(&hk__gstats.page_bytes, bytes);
    } else {
        sz = seg->map_size;
        HK_ATOMIC_SUB(&hk__gstats.huge_blocks, 1);
        HK_ATOMIC_SUB(&hk__gstats.huge_bytes, sz);
    }
    seg->magic = 0;
    segment_unaccount(seg, sz);
    return sz;
}

hk_segment_t *hk__segment_new(hk_theap_t *heap)
{
    hk_segment_t *seg;
    /* A private heap never adopts: another heap's blocks would die with it. */
    if (!heap->owner)
        while ((seg = hk__abandoned_pop()) != NULL)
            if (hk__segment_adopt(heap, seg)) return seg;
    bool fresh;
    seg = hk__segment_map(&fresh, 64, heap->huge_pages);
    if (!seg) return NULL;
    if (!heap->huge_pages) seg->thp = 0;   /* a cached segment's field held anything */
    uint64_t purged = seg->purged_mask;
    /* A fresh mapping reads as zero: its page descriptors (8 of the 12 KiB
     * header) stay untouched until their pages are used. free and
     * usable_size take a zero descriptor (block_size 0) for a page not in
     * use, as they take HK_PF_FREE. */
    if (!fresh) {
        /* A cached segment: clear only the descriptors its last owner
         * wrote. Reading the others maps the zero page, and the header
         * pages that hold them stay out of the resident set (a reused
         * segment of a thread that used a few classes: 4 KiB of header
         * resident instead of 12). */
        for (unsigned i = 0; i < HK_SEG_PAGES; i++) {
            const uint64_t *w = (const uint64_t *)&seg->pages[i];
            uint64_t any = 0;
            for (unsigned k = 0; k < sizeof(hk_page_t) / 8; k++) any |= w[k];
            if (any) memset(&seg->pages[i], 0, sizeof seg->pages[i]);
        }
    }
    hk__segment_stamp(seg, HK_SEG_SMALL);
    seg->map_size = HK_SEG_SIZE;
    seg->heap = heap;
    seg->abandoned = 0;
    seg->used_pages = 0;
    seg->free_mask = ~(uint64_t)0;
    seg->purged_mask = purged;
    seg->tails = 0;                    /* (a cached segment's fields hold anything) */
    __atomic_store_n(&seg->thread_id, heap->thread_id, __ATOMIC_RELEASE);
    map_set(hk__smallmap, seg, true);   /* after the descriptors were cleared */
    segment_link(heap, seg);
    return seg;
}

/* The purged pages among `bits` count as committed again (the caller
 * refiles the segment: seg_file). */
static void unpurge(hk_segment_t *seg, uint64_t bits)
{
    uint64_t pur = seg->purged_mask & bits;
    if (!pur) return;
    seg->purged_mask &= ~pur;
    HK_ATOMIC_SUB(&g_purged_now, (uint64_t)hk__popcount64(pur) * HK_PAGE_SIZE);
    update_committed_peak();
}

/* The free pages in `bits` (n of them) go into use. */
static void take_pages(hk_segment_t *seg, uint64_t bits, unsigned n)
{
    seg->free_mask &= ~bits;
    seg->used_pages += n;
    if (seg->in_heap) seg->heap->used_pages += n;
    unpurge(seg, bits);
    seg_file(seg);
}

/* Where `count` blocks of `block` bytes after `lead` end, in whole purge units. */
static inline size_t blocks_end(size_t lead, size_t count, size_t block)
{
    return hk__align_up(lead + count * block, HK_TAIL_UNIT);
}

/* Resident pages taken for a class whose blocks end short of where the
 * last class's carved blocks reached: the memory in between would stay
 * resident and unused for as long as the span serves the new class (a
 * 64 KiB page that held 16 KiB blocks, reused for one 40 KiB block, kept
 * 24 KiB). tail_excess says how much that is for a span of n pages at
 * page i (0: none), and where the new blocks end (`need`, from the span's
 * start, in whole purge units). */
static size_t tail_excess(const hk_segment_t *seg, unsigned i, unsigned n, size_t block, size_t *need)
{
    size_t lead = hk__span_lead(i);
    *need = blocks_end(lead, ((size_t)n * HK_PAGE_SIZE - lead) / block, block);
    size_t reach = 0;
    for (unsigned j = 0; j < n; j++)
        if (!(seg->purged_mask & ((uint64_t)1 << (i + j))))
            reach = (size_t)(j + 1) * HK_PAGE_SIZE - (size_t)seg->pages[i + j].clean * HK_TAIL_UNIT;
    return reach > *need ? reach - *need : 0;
}

hk_page_t *hk__segment_alloc_span(hk_segment_t *seg, unsigned n, size_t block, bool resident_only)
{
    uint64_t m = seg->free_mask;
    for (unsigned k = 1; k < n && m; k++) m &= seg->free_mask >> k;
    /* A span at page 0 shares it with the segment header. */
    if ((size_t)n * HK_PAGE_SIZE - HK_SEG_HDR < block) m &= ~(uint64_t)1;
    if (!m) return NULL;
    /* Prefer a run whose pages are all still resident (freed, not yet
     * purged): reusing them costs no page faults and keeps the resident
     * set from creeping over the purged pages while freed ones wait. */
    uint64_t res = seg->free_mask & ~seg->purged_mask, r = res;
    for (unsigned k = 1; k < n && r; k++) r &= res >> k;
    unsigned i;
    size_t need, excess;
    if (r & m) {
        /* Among the first few resident runs, the one whose old blocks
         * reached least past the new ones: less to purge now and to fault
         * back in if the block grows in place. */
        m &= r;
        i = (unsigned)__builtin_ctzll(m);
        excess = tail_excess(seg, i, n, block, &need);
        uint64_t c = m & (m - 1);
        for (unsigned look = 1; c && excess && look < HK_TAIL_LOOK; look++, c &= c - 1) {
            unsigned k = (unsigned)__builtin_ctzll(c);
            size_t nk, ek = tail_excess(seg, k, n, block, &nk);
            if (ek < excess) { i = k; excess = ek; need = nk; }
        }
    } else {
        if (resident_only) return NULL;
        i = (unsigned)__builtin_ctzll(m);
        excess = tail_excess(seg, i, n, block, &need);
    }
    hk_page_t *head = &seg->pages[i];
    head->dirty_end = 0;
    if (excess && !seg->thp) {   /* (a huge page would be split) */
        /* In a program with more than one thread heap live, and a purge
         * delay, the excess waits for the next purge (hk__heap_purge): one
         * madvise for each span taken stopped every core the program ran
         * on for a TLB shootdown, and a span of 8-64 KiB blocks is often
         * given back long before the purge (a churn of mid-size blocks in
         * two threads made 84 K such calls in 0.3 s: a third of its time).
         * A single thread purges at once: that costs it no shootdown, and
         * keeps its peak (growing strings held their tails to a purge:
         * `realloc` peaked 7% higher). */
        if (HK_OPT(HK_OPTION_PURGE_DELAY) != 0 && __atomic_load_n(&hk__gstats.heaps, __ATOMIC_RELAXED) > 1) {
            head->dirty_end = (uint16_t)((need + excess) / HK_TAIL_UNIT);
            seg_note_tail(seg->heap, seg);
        } else {
            hk__purge_range((char *)seg + (size_t)i * HK_PAGE_SIZE + need, excess);
        }
    }
    take_pages(seg, span_bits(i, n), n);
    head->span = (uint8_t)n;
    head->back = 0;
    for (unsigned j = 1; j < n; j++) {
        seg->pages[i + j].back = (uint8_t)j;
        __atomic_store_n(&seg->pages[i + j].flags, HK_PF_SPAN_TAIL, __ATOMIC_RELAXED);
    }
    return head;
}

/* A span of n pages for blocks of `block` bytes from the first of the
 * heap's segments that has one (resident_only: all its pages resident):
 * those with resident free pages first (seg_res), then (unless
 * resident_only) those whose free pages would fault in (seg_pur). */
hk_page_t *hk__heap_alloc_span(hk_theap_t *heap, unsigned n, size_t block, bool resident_only)
{
    for (hk_segment_t *s = heap->seg_res; s; s = s->snext) {
        hk_page_t *pg = hk__segment_alloc_span(s, n, block, resident_only);
        if (pg) return pg;
    }
    if (resident_only) return NULL;
    for (hk_segment_t *s = heap->seg_pur; s; s = s->snext) {
        hk_page_t *pg = hk__segment_alloc_span(s, n, block, false);
        if (pg) return pg;
    }
    return NULL;
}

/* Grow the span at `head` to `n` pages in place when the pages after it
 * are free (a one-block span whose block grows). */
bool hk__segment_extend_span(hk_segment_t *seg, hk_page_t *head, unsigned n)
{
    unsigned i = (unsigned)(head - seg->pages), old = head->span;
    if (i + n > HK_SEG_PAGES) return false;
    uint64_t bits = span_bits(i + old, n - old);
    if ((seg->free_mask & bits) != bits) return false;
    take_pages(seg, bits, n - old);
    for (unsigned j = old; j < n; j++) {
        seg->pages[i + j].back = (uint8_t)j;
        __atomic_store_n(&seg->pages[i + j].flags, HK_PF_SPAN_TAIL, __ATOMIC_RELAXED);
    }
    head->span = (uint8_t)n;
    return true;
}

/* Fault in (commit) the free pages of `seg` that hold its first `bytes`
 * bytes past the header: a private heap's initial commit. */
void hk__segment_prefault(hk_segment_t *seg, size_t bytes)
{
    size_t end = HK_SEG_HDR + bytes < HK_SEG_SIZE ? HK_SEG_HDR + bytes : HK_SEG_SIZE;
    end = hk__align_up(end, hk_vm_page_size());
    (void)hk_vm_populate((char *)seg + HK_SEG_HDR, end - HK_SEG_HDR);   /* advice: a failure only costs faults later */
    unsigned n = (unsigned)((end + HK_PAGE_SIZE - 1) >> HK_PAGE_SHIFT);
    unpurge(seg, span_bits(0, n) & seg->free_mask);
    seg_file(seg);
}

/* An empty segment leaves its heap for the cache (or the OS). */
void hk__segment_release_empty(hk_theap_t *heap, hk_segment_t *seg, bool purge)
{
    segment_unlink(heap, seg);
    if (purge) purge_mask(seg, ~(uint64_t)0);
    hk__segment_unmap_or_cache(seg);
}

/* Freed pages wait out the purge delay resident, so that a working set
 * which shrinks and grows again does not fault its pages back in. Under
 * steady churn of one-page spans (pages of blocks up to 64 KiB) that wait
 * lets the resident free pages pile up to whatever the heap freed in the
 * last delay or two: past an eighth of the pages in use (and never under
 * 512 KiB), over the most pages the heap has had in use, the oldest of them
 * go back at once. Pages of bigger spans wait out
 * the delay: a program that frees and allocates big blocks by turns would
 * otherwise fault its pages back on every allocation. */
#define HK_RESFREE_MIN_PAGES  8
#define HK_RESFREE_SHARE      8
#define HK_RESFREE_CHECK      8      /* one-page spans freed between two looks */

static inline uint64_t lone_resident(const hk_segment_t *s)
{
    uint64_t m = 0;
    for (uint64_t c = s->free_mask & ~s->purged_mask; c; c &= c - 1) {
        unsigned i = (unsigned)__builtin_ctzll(c);
        if (s->pages[i].lone) m |= (uint64_t)1 << i;
    }
    return m;
}

static void purge_over_budget(hk_theap_t *heap)
{
    uint64_t used = heap->used_pages, res = 0;
    for (hk_segment_t *s = heap->seg_res; s; s = s->snext) res += (uint64_t)hk__popcount64(lone_resident(s));
    uint64_t budget = used / HK_RESFREE_SHARE;
    if (budget < HK_RESFREE_MIN_PAGES) budget = HK_RESFREE_MIN_PAGES;
    /* Below the most pages the heap has had in use, free pages raise no
     * peak the pages in use did not already reach: they wait out the delay
     * (no purge, no refault when the heap grows back). */
    if (used > heap->used_hwm) heap->used_hwm = (uint32_t)used;
    budget += heap->used_hwm - used;
    if (res <= budget) return;
    uint64_t excess = res - budget / 2;     /* down to half the budget: no purge on every free */
    while (excess) {
        uint64_t oldest = UINT64_MAX;
        for (hk_segment_t *s = heap->seg_res; s; s = s->snext)
            for (uint64_t c = lone_resident(s); c; c &= c - 1) {
                uint64_t t = s->pages[__builtin_ctzll(c)].free_time;
                if (t < oldest) oldest = t;
            }
        if (oldest == UINT64_MAX) break;
        hk_segment_t *next;
        for (hk_segment_t *s = heap->seg_res; s && excess; s = next) {
            next = s->snext;       /* (purging may move s to seg_pur) */
            uint64_t todo = 0;
            for (uint64_t c = lone_resident(s); c && excess; c &= c - 1) {
                unsigned i = (unsigned)__builtin_ctzll(c);
                if (s->pages[i].free_time == oldest) { todo |= (uint64_t)1 << i; excess--; }
            }
            purge_mask(s, todo);
        }
    }
}

/* The heap's next purge at `due` (none was due), a round that began `now`. */
static inline void purge_schedule(hk_theap_t *heap, uint64_t now, uint64_t due)
{
    heap->purge_due = due;
    heap->purge_since = now;
}

bool hk__segment_free_span(hk_theap_t *heap, hk_page_t *pg)
{
    hk_segment_t *seg = hk__segment_of(pg);
    unsigned i = (unsigned)(pg - seg->pages), n = pg->span;
    uint64_t bits = span_bits(i, n);
    for (unsigned j = 0; j < n; j++) {
        hk_page_t *p = &seg->pages[i + j];
        __atomic_store_n(&p->flags, HK_PF_FREE, __ATOMIC_RELAXED);
        p->back = 0;
        p->lone = n == 1;
        p->next = p->prev = NULL;
    }
    seg->free_mask |= bits;
    seg->used_pages -= n;
    if (seg->in_heap) seg->heap->used_pages -= n;
    seg_file(seg);
    long delay = HK_OPT(HK_OPTION_PURGE_DELAY);
    if (seg->used_pages == 0 && delay == 0) {
        hk__segment_release_empty(heap, seg, false);
        return true;
    }
    if (delay == 0) purge_mask(seg, bits);
    else {
        /* Empty segments stay with the heap until the delay passes, so a
         * working set that shrinks and grows again does not refault. */
        uint64_t now = hk__now_ms();
        for (unsigned j = 0; j < n; j++) seg->pages[i + j].free_time = now;
        if (seg->used_pages == 0) seg->cache_time = now;
        uint64_t due = now + (uint64_t)(delay > 0 ? delay : 0);
        if (delay > 0) {
            /* A series of frees pushes the purge back (up to one delay from
             * now): memory freed in a burst is often reused right after. */
            if (heap->purge_due && now >= heap->purge_due && !heap->no_purge) hk__heap_purge(heap, now, false, HK_TRIM_WALK);
            else if (heap->purge_due && now < heap->purge_due) {
                /* ...but not forever: under steady churn pages are given
                 * back more often than every delay/4, and the purge would
                 * never come due. Two delays after the round began it does. */
                uint64_t ext = heap->purge_due + (uint64_t)delay / 4;
                uint64_t cap = heap->purge_since + 2 * (uint64_t)delay;
                if (ext > cap) ext = cap > heap->purge_due ? cap : heap->purge_due;
                heap->purge_due = ext < due ? ext : due;
            }
            if (!heap->purge_due) purge_schedule(heap, now, due);
            if (n == 1 && ++heap->freed_pages >= HK_RESFREE_CHECK) { heap->freed_pages = 0; purge_over_budget(heap); }
        }
    }
    return false;
}

/* Sparse pages of thread heaps give back the memory of their free blocks
 * (hk__page_trim); a private heap's blocks come back from any thread
 * through its pages' remote lists, so it leaves them be. Each page looked
 * at costs a pass over its blocks: a purge looks at a bounded number,
 * going on from the class where the last one stopped. */
unsigned hk__heap_trim(hk_theap_t *heap, uint32_t walk, uint64_t now, uint32_t min_age)
{
    if (heap->owner) return 0;
    bool young = false, trimmed = false;
    for (unsigned k = 0; k < HK_NCLASS && walk; k++) {
        unsigned c = (heap->trim_next + k) % HK_NCLASS;
        for (hk_page_t *pg = heap->queues[c].last ? heap->queues[c].first : NULL; pg && walk; pg = pg->next) {
            /* A class's only page is left untrimmed (unless forced, or
             * with no delay): malloc takes the class's blocks from it, the
             * owner frees onto its list and takes the same blocks back,
             * and a trimmed page sends every free the slow way until
             * malloc runs the list dry. A class with a few live blocks
             * would trim and refault its one page at every purge (1.7 M
             * of 20 M frees went the slow way in a loop over 100 live
             * blocks of 1-2000 bytes). A class with more pages trims them
             * all: skipping its first page too cost `churn` 2-3% peak RSS. */
            if (min_age != 0 && pg == heap->queues[c].first && pg->next == NULL) continue;
            uint32_t n = hk__page_trim(pg, now, min_age, &young);
            if (n > 1 && pg->trimmed) trimmed = true;
            walk = n >= walk ? 0 : walk - n;
        }
        if (!walk) heap->trim_next = c + 1;
    }
    return (young ? HK_TRIM_YOUNG : 0) | (!walk && trimmed ? HK_TRIM_MORE : 0);
}

void hk__heap_purge_later(hk_theap_t *heap)
{
    long delay = HK_OPT(HK_OPTION_PURGE_DELAY);
    if (delay <= 0 || heap->purge_due) return;
    uint64_t now = hk__now_ms();
    purge_schedule(heap, now, now + (uint64_t)delay);
}

/* The dirty tails of seg's spans in use (hk_page_t.dirty_end) back to the OS. */
static void purge_tails(hk_segment_t *seg)
{
    for (uint64_t c = ~seg->free_mask; c; c &= c - 1) {
        unsigned i = (unsigned)__builtin_ctzll(c);
        hk_page_t *pg = &seg->pages[i];
        if (!pg->dirty_end || pg->back) continue;
        char *base = (char *)seg + (size_t)i * HK_PAGE_SIZE;
        size_t end = (size_t)pg->dirty_end * HK_TAIL_UNIT;
        /* Where the blocks end now (a block that grew in place reaches further). */
        size_t need = blocks_end(hk__page_lead(pg), pg->reserved, pg->block_size);
        if (end > need) hk__purge_range(base + need, end - need);
        pg->dirty_end = 0;
    }
    seg->tails = 0;
}

/* Every dirty tail of the heap's segments (seg_note_tail) back to the OS. */
static void purge_heap_tails(hk_theap_t *heap)
{
    if (heap->tails_all) {
        for (hk_segment_t *seg = heap->segments; seg; seg = seg->next)
            if (seg->tails) purge_tails(seg);
    } else {
        for (unsigned k = 0; k < heap->ntails; k++) purge_tails(heap->tails[k]);
    }
    heap->ntails = 0;
    heap->tails_all = 0;
}

/* An empty segment of the heap goes (to the cache or the OS) once it has
 * stayed empty for the purge delay, or when forced: true when it went;
 * otherwise its due time counts towards *next_due. */
static bool release_if_due(hk_theap_t *heap, hk_segment_t *seg, uint64_t now, bool force, uint64_t *next_due)
{
    long delay = HK_OPT(HK_OPTION_PURGE_DELAY);
    uint64_t due = seg->cache_time + (uint64_t)(delay > 0 ? delay : 0);
    if (force || now >= due) {
        hk__segment_release_empty(heap, seg, true);
        return true;
    }
    if (!*next_due || due < *next_due) *next_due = due;
    return false;
}

void hk__heap_purge(hk_theap_t *heap, uint64_t now, bool force, uint32_t trim_walk)
{
    long delay = HK_OPT(HK_OPTION_PURGE_DELAY);
    uint64_t next_due = 0;
    hk__page_stats_flush(heap);
    heap->no_purge++;         /* the retires below must not re-enter */
    /* The foreign-block cache goes home first: the blocks it holds keep
     * their pages (other threads') in use, and would otherwise stay as
     * long as this thread does not fill the class. */
    if (heap == hk__tls_heap) hk__xcache_purge(heap, force);
    /* Empty pages kept as their class's only page go back to the segment:
     * big spans (blocks > 32 KiB) at once, others when they stayed empty
     * since the last purge. Without this a class used once would keep its
     * carved memory resident for the life of the thread. */
    bool kept = false;
    for (unsigned c = 0; c < HK_NCLASS; c++) {
        hk_page_t *pg = hk__kept_page(heap, c);
        if (pg) {
            if (c >= 41 || force || (uint32_t)pg->free_time != heap->purge_epoch) {
                hk__queue_remove(&heap->queues[c], pg);
                hk__page_retire(heap, pg);
            } else {
                kept = true;
            }
        }
    }
    heap->purge_epoch++;
    if (kept && delay >= 0) next_due = now + (uint64_t)(delay > 0 ? delay : 0);
    if (delay >= 0 || force) {
        purge_heap_tails(heap);
        /* Empty segments whose pages were all purged (seg_file), if any. */
        if (heap->pur_empty) {
            heap->pur_empty = 0;
            hk_segment_t *next;
            for (hk_segment_t *seg = heap->seg_pur; seg; seg = next) {
                next = seg->snext;
                if (seg->used_pages == 0 && !release_if_due(heap, seg, now, force, &next_due)) heap->pur_empty = 1;
            }
        }
        /* Free pages still resident: only seg_res has them. */
        hk_segment_t *next;
        for (hk_segment_t *seg = heap->seg_res; seg; seg = next) {
            next = seg->snext;
            if (seg->used_pages == 0 && release_if_due(heap, seg, now, force, &next_due)) continue;
            uint64_t cand = seg->free_mask & ~seg->purged_mask, todo = 0;
            while (cand) {
                unsigned i = (unsigned)__builtin_ctzll(cand);
                cand &= cand - 1;
                uint64_t due = seg->pages[i].free_time + (uint64_t)(delay > 0 ? delay : 0);
                if (force || now >= due) todo |= (uint64_t)1 << i;
                else if (!next_due || due < next_due) next_due = due;
            }
            purge_mask(seg, todo);
        }
        /* Pages found sparse are trimmed once they stayed so for a delay:
         * a purge then comes due to look again. One that stopped on its
         * budget after trimming makes the next one due at once, so a
         * backlog (a mass free) goes back a budget at a time without
         * waiting a delay per budget: each such purge gave memory back. */
        uint32_t age = force ? 0 : (uint32_t)(delay > 0 ? delay : 0);
        unsigned t = hk__heap_trim(heap, trim_walk, now, age);
        uint64_t due = (t & HK_TRIM_MORE) ? (now ? now : 1) : (t & HK_TRIM_YOUNG) ? now + age : 0;
        if (due && (!next_due || due < next_due)) next_due = due;
    }
    heap->no_purge--;
    /* Parked heaps of exited threads that no new thread took within the
     * delay are abandoned (their memory then goes back as below). */
    if (!heap->owner) hk__parked_expire(now, force);
    /* One abandoned segment a purge: live threads take in what exited
     * threads left even when none of them needs a new segment, so blocks
     * freed into it (remote frees nobody collects) become reusable and its
     * emptied pages go back. */
    if (!heap->owner) {
        hk_segment_t *a = hk__abandoned_pop();
        if (a) (void)hk__segment_adopt(heap, a);
    }
    /* A big-block cache in use waits for the next purge. */
    if (delay > 0 && !next_due && hk__xbig_held(heap)) next_due = now + (uint64_t)delay;
    /* The caches are shared: what waits there comes due on this heap too. */
    uint64_t cache_due = hk__cache_purge(now, force);
    if (cache_due && (!next_due || cache_due < next_due)) next_due = cache_due;
    if (next_due && (!heap->purge_due || heap->purge_due > next_due || heap->purge_due <= now)) heap->purge_due = next_due;
    else if (!next_due) heap->purge_due = 0;
    heap->purge_since = now;
}

/* The segment's owner thread, and its copy in each page in use (pages that
 * are not take theirs when they come into use: page_init). */
void hk__segment_set_thread(hk_segment_t *seg, uintptr_t tid)
{
    for (unsigned i = 0; i < HK_SEG_PAGES; i++) {
        hk_page_t *pg = &seg->pages[i];
        if ((seg->free_mask >> i) & 1 || pg->back) continue;
        __atomic_store_n(&pg->owner, tid, __ATOMIC_SEQ_CST);
    }
    __atomic_store_n(&seg->thread_id, tid, __ATOMIC_SEQ_CST);
}

/* Take over an abandoned segment: its pages join this heap's queues, frees
 * that other threads made meanwhile are collected, empty pages go back. */
bool hk__segment_adopt(hk_theap_t *heap, hk_segment_t *seg)
{
    HK_ATOMIC_SUB(&hk__gstats.segments_abandoned, 1);
    __atomic_store_n(&seg->heap, heap, __ATOMIC_RELAXED);   /* read by frees that look for abandoned segments */
    hk__segment_set_thread(seg, heap->thread_id);
    segment_link(heap, seg);
    heap->no_purge++;
    for (unsigned i = 0; i < HK_SEG_PAGES; i++) {
        hk_page_t *pg = &seg->pages[i];
        if ((seg->free_mask >> i) & 1 || pg->back) continue;
        __atomic_store_n(&pg->heap, heap, __ATOMIC_RELAXED);
        __atomic_store_n(&pg->flags, (pg->flags & ~(uint32_t)HK_PF_CACHEABLE) | hk__page_mode(heap, pg->cls), __ATOMIC_SEQ_CST);
        hk__page_collect(pg);
        if (pg->used == 0) {
            if (hk__page_retire(heap, pg)) { heap->no_purge--; return false; }   /* the segment went to the cache */
        } else {
            hk__queue_push_back(&heap->queues[pg->cls], pg);
        }
    }
    heap->no_purge--;
    if (seg->free_mask & ~seg->purged_mask) heap->purge_due = 1;   /* purge its old free pages soon */
    return true;
}

/* A parked heap's segment (hk__heap_park): it loses its owner thread
 * (every free into it then takes the atomic path) but keeps its heap, so
 * a free does not adopt it: the heap waits whole for the next thread. Its
 * free pages stay resident while the heap is the next one taken (see
 * hk__segment_cool). */
void hk__segment_park(hk_segment_t *seg)
{
    hk__segment_set_thread(seg, 0);
}

/* A parked heap's segment that is no longer the next one a starting
 * thread takes (hk__heap_park): its free pages go back as at abandonment. */
void hk__segment_cool(hk_segment_t *seg)
{
    if (HK_OPT(HK_OPTION_PURGE_DELAY) >= 0) purge_mask(seg, seg->free_mask);
}

/* Thread exit: every page is collected; empty ones go back; segments with
 * live blocks are handed to the abandoned list. */
void hk__segment_abandon(hk_theap_t *heap, hk_segment_t *seg) HK_HIDDEN;
void hk__segment_abandon(hk_theap_t *heap, hk_segment_t *seg)
{
    segment_unlink(heap, seg);
    /* Nobody purges an abandoned segment until a thread adopts it, which
     * may be never: give its free pages back now. */
    if (HK_OPT(HK_OPTION_PURGE_DELAY) >= 0) purge_mask(seg, seg->free_mask);
    for (unsigned i = 0; i < HK_SEG_PAGES; i++) {
        hk_page_t *pg = &seg->pages[i];
        if ((seg->free_mask >> i) & 1 || pg->back) continue;
        __atomic_store_n(&pg->heap, NULL, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&seg->heap, NULL, __ATOMIC_RELAXED);
    hk__segment_set_thread(seg, 0);
    HK_ATOMIC_ADD(&hk__gstats.segments_abandoned, 1);
}
