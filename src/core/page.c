/* Pages of one size class: carving blocks lazily, collecting the local and
 * thread free lists, the per-class page queues and the "full" list, and
 * the malloc/free slow paths that the inline fast paths fall back to.
 * A page whose last block comes back returns to its segment, unless it is
 * the only page of its class (that keeps a malloc/free loop off the OS). */
#include "core.h"
#include "../heap/heap_impl.h"
#include <errno.h>

uint32_t hk__class_size[HK_NCLASS] = {
    16, 16, 32, 48, 64, 80, 96, 112, 128,
#define HK_CLS4(b) (1u << (b)) + (1u << ((b) - 2)), (1u << (b)) + (2u << ((b) - 2)), \
                   (1u << (b)) + (3u << ((b) - 2)), (1u << ((b) + 1))
    HK_CLS4(7), HK_CLS4(8), HK_CLS4(9), HK_CLS4(10), HK_CLS4(11), HK_CLS4(12),
    HK_CLS4(13), HK_CLS4(14), HK_CLS4(15), HK_CLS4(16), HK_CLS4(17), HK_CLS4(18),
    HK_CLS4(19), HK_CLS4(20),
#undef HK_CLS4
};

/* hk__size_class_calc(16 * i) for i = 0..256 (sizes up to 4 KiB), worked
 * out by the compiler from the same formula. Sizes up to 4 KiB take this
 * table and no branch on their range: with 1 KiB as the limit, a program
 * whose sizes straddle it (1-2000 bytes at random) mispredicted that
 * branch every other malloc. Not const: in .data, next to the other tables
 * malloc reads, rather than the only thing a running program reads from
 * the library's read-only data (its first read faults in the pages around
 * it as well). */
#define HK_LOG2(x) (63 - __builtin_clzll((unsigned long long)(x)))
/* Each arm gets a size in its own range (clang checks each arm's constant
 * against uint8_t on its own, also for the sizes the arm does not take). */
#define HK_CLBIG(t) (9 + (HK_LOG2((t) - 1) - 7) * 4 + ((((unsigned long long)(t) - 1) >> (HK_LOG2((t) - 1) - 2)) & 3))
#define HK_CL(s) ((s) <= 128 ? (((s) <= 128 ? (s) : 128) + 15) >> 4 : HK_CLBIG((s) > 128 ? (s) : 129))
#define HK_E(i)   HK_CL(16ull * (i))
#define HK_E4(i)  HK_E(i), HK_E((i) + 1), HK_E((i) + 2), HK_E((i) + 3)
#define HK_E16(i) HK_E4(i), HK_E4((i) + 4), HK_E4((i) + 8), HK_E4((i) + 12)
#define HK_E64(i) HK_E16(i), HK_E16((i) + 16), HK_E16((i) + 32), HK_E16((i) + 48)
uint8_t hk__class_small[HK_CLASS_TABLE] = { HK_E64(0), HK_E64(64), HK_E64(128), HK_E64(192), HK_E(256) };
#undef HK_E64
#undef HK_E16
#undef HK_E4
#undef HK_E
#undef HK_CL
#undef HK_CLBIG
#undef HK_LOG2

/* Pages per span. Blocks up to a page share one 64 KiB page; a bigger
 * block gets a span of its own, rounded up to whole pages. Spans of many
 * big blocks would keep every freed block resident until the whole span
 * empties; one block a span goes back to the segment (and, after the
 * purge delay, to the OS) as soon as it is freed. */
static unsigned class_span(size_t cls)
{
    size_t bytes = hk__class_size[cls];
    if (bytes < HK_PAGE_SIZE) bytes = HK_PAGE_SIZE;
    return (unsigned)((bytes + HK_PAGE_SIZE - 1) >> HK_PAGE_SHIFT);
}

/* ------------------------------------------------------------ queues */

static inline bool queue_is_empty(const hk_page_queue_t *q) { return q->last == NULL; }

static void queue_push_front(hk_page_queue_t *q, hk_page_t *pg)
{
    pg->prev = NULL;
    if (queue_is_empty(q)) { pg->next = NULL; q->last = pg; }
    else { pg->next = q->first; q->first->prev = pg; }
    q->first = pg;
}

void hk__queue_push_back(hk_page_queue_t *q, hk_page_t *pg)
{
    pg->next = NULL;
    pg->prev = q->last;
    if (q->last) q->last->next = pg;
    else q->first = pg;
    q->last = pg;
}

void hk__queue_remove(hk_page_queue_t *q, hk_page_t *pg)
{
    if (pg->prev) pg->prev->next = pg->next;
    else q->first = pg->next ? pg->next : &hk__page_empty;
    if (pg->next) pg->next->prev = pg->prev;
    else q->last = pg->prev;
    pg->next = pg->prev = NULL;
}

static inline void page_set_flags(hk_page_t *pg, uint32_t f)
{
    __atomic_store_n(&pg->flags, f, __ATOMIC_SEQ_CST);
}
/* Flags change by atomic read-modify-write: the owner sets and clears
 * FULL and TRIMMED, but ALIGNED may be set by another thread (one that
 * made an aligned block out of a block of this page from its foreign-block
 * cache), and a plain read-modify-store by either could lose the other's
 * bit. (Sequentially consistent as the FULL protocol needs; a locked RMW
 * costs what the SEQ_CST store did.) */
static inline uint32_t page_flags(const hk_page_t *pg) { return __atomic_load_n(&pg->flags, __ATOMIC_RELAXED); }
static inline void page_flags_or(hk_page_t *pg, uint32_t f) { __atomic_fetch_or(&pg->flags, f, __ATOMIC_SEQ_CST); }
static inline void page_flags_clear(hk_page_t *pg, uint32_t f) { __atomic_fetch_and(&pg->flags, ~f, __ATOMIC_SEQ_CST); }

/* ------------------------------------------------------------ blocks */

/* Move the (atomically taken) remote frees into `free`. The count comes
 * with the list; only a page whose `free` is not empty (rare: callers
 * collect when it ran dry) walks the list to link it in front. */
void hk__page_collect(hk_page_t *pg)
{
    if (__atomic_load_n(&pg->thread_free, __ATOMIC_RELAXED) == 0) return;
    uintptr_t w = __atomic_exchange_n(&pg->thread_free, 0, __ATOMIC_ACQUIRE);
    hk_block_t *list = hk__tf_list(w);
    if (!list) return;
    if (pg->free) {
        hk_block_t *t = list;
        while (t->next) t = t->next;
        t->next = pg->free;
    }
    pg->free = list;
    pg->used -= hk__tf_count(w);
}

/* The index of the block that holds p (p is inside the page's block
 * area). Exact for offsets below 2^22 and blocks below 2^22 bytes: the
 * error of the reciprocal stays under 2^-22, too small to cross a block
 * boundary. */
static inline uint32_t block_index(const hk_page_t *pg, const void *p)
{
    return (uint32_t)(((uint64_t)((const char *)p - pg->start) * pg->inv) >> 44);
}
_Static_assert(HK_SEG_SIZE <= ((size_t)1 << 22), "block_index's reciprocal covers a segment");

/* ------------------------------------------------------------ trimming */

/* A page that has served many blocks of a class and now holds a few keeps
 * every 4 KiB it ever carved resident: one live block anywhere in it pins
 * the whole 64 KiB page. Trimming gives back the 4 KiB pages that only
 * free blocks cover; those blocks leave the free lists (their links went
 * with the memory) and come back, a 4 KiB page at a time, when the page
 * runs out of listed blocks. While a page is trimmed it carries
 * HK_PF_TRIMMED, so every free into it takes the slow path, which rejects
 * a block that is off the lists (a double free; its tag went too). Only
 * the owner trims, untrims or reads `trimmed` on its own (the free path
 * reads it after the flag, and a block handed to another thread was
 * listed again before it was handed out). */
#define HK_OS_PAGE 4096u

/* Bits of the 4 KiB pages that block idx touches (offsets within the span). */
static inline uint32_t block_os_bits(const hk_page_t *pg, size_t lead, uint32_t idx)
{
    size_t a = lead + (size_t)idx * pg->block_size, e = a + pg->block_size - 1;
    unsigned k0 = (unsigned)(a / HK_OS_PAGE), k1 = (unsigned)(e / HK_OS_PAGE);
    return (uint32_t)((((uint64_t)2 << k1) - 1) & ~(((uint64_t)1 << k0) - 1));
}


/* The page's trimmed map becomes t; the memory purged by trimming moves
 * with it in the purge accounting (`committed` counts it as purged). */
static void page_set_trimmed(hk_page_t *pg, uint32_t t)
{
    int64_t d = (int64_t)hk__popcount64(t) - (int64_t)hk__popcount64(pg->trimmed);
    __atomic_store_n(&pg->trimmed, (uint16_t)t, __ATOMIC_RELAXED);
    if (d) hk__purged_add(d * HK_OS_PAGE);
}

/* Is block b (of a trimmed page) one of the blocks off the lists? */
static bool block_trimmed(const hk_page_t *pg, const hk_block_t *b)
{
    return (block_os_bits(pg, hk__page_lead(pg), block_index(pg, b)) & __atomic_load_n(&pg->trimmed, __ATOMIC_RELAXED)) != 0;
}

/* Mark the blocks of pg tagged free; stops past cap - used of them. Reads
 * live blocks too, which other threads may be writing (their data, or a
 * remote free's tag): a racing read can only add a block to the count,
 * which then comes out too high and sends the caller to the lists, so the
 * race is harmless, and hidden from ThreadSanitizer. */
__attribute__((no_sanitize("thread")))
static uint32_t scan_tagged(const hk_page_t *pg, uint64_t *listed)
{
    uintptr_t tag = HK_FREE_TAG(pg);
    uint32_t bs = pg->block_size, cap = pg->capacity, want = cap - pg->used, found = 0;
    for (uint32_t i = 0; i < cap && found <= want; i++)
        if (((const hk_block_t *)(pg->start + (size_t)i * bs))->tag == tag) {
            listed[i >> 6] |= (uint64_t)1 << (i & 63);
            found++;
        }
    return found;
}

uint32_t hk__page_trim(hk_page_t *pg, uint64_t now, uint32_t min_age, bool *young)
{
    /* Once per page until it is untrimmed; sparse pages only (a quarter of
     * the carved blocks or fewer in use) with at least 16 KiB free: a busy
     * page would fault its memory back. */
    if (pg->span != 1 || pg->trimmed || (page_flags(pg) & (HK_PF_FULL | HK_PF_CHECKED | HK_PF_FREE))) return 0;
    uint32_t bs = pg->block_size, cap = pg->capacity;
    if (pg->used == 0 || (size_t)pg->used * 4 > cap || (size_t)(cap - pg->used) * bs < 4 * HK_OS_PAGE) {
        pg->sparse_since = 0;
        return 0;
    }
    hk__page_collect(pg);
    if (pg->used == 0 || (size_t)pg->used * 4 > cap) { pg->sparse_since = 0; return 0; }
    /* ...and sparse for a purge delay, seen at two purges at least that far
     * apart (busy at any look in between starts the clock again): a page
     * that goes sparse and fills again soon, as under thread churn, would
     * fault back what it gave. In `churn 4`, trimming at the first sight
     * cost 8-11% of the run time. */
    if (min_age) {
        uint32_t t = (uint32_t)now | 1;
        if (!pg->sparse_since) pg->sparse_since = t;
        if (t - pg->sparse_since < min_age) { *young = true; return 1; }
    }
    pg->sparse_since = 0;
    size_t lead = hk__page_lead(pg);
    uint64_t listed[HK_PAGE_SIZE / 16 / 64] = { 0 };
    /* The listed blocks are the cap - used free ones. A pass over the page
     * in address order finds the blocks tagged free, at memory speed; when
     * it finds more than that (blocks in other threads' foreign-block
     * caches carry the tag too, and so may a live block's data), the list
     * itself is walked instead, a cache miss a block. */
    if (scan_tagged(pg, listed) != cap - pg->used) {
        for (unsigned w = 0; w < sizeof listed / sizeof listed[0]; w++) listed[w] = 0;
        for (hk_block_t *b = pg->free; b; b = b->next) {
            uint32_t i = block_index(pg, b);
            listed[i >> 6] |= (uint64_t)1 << (i & 63);
        }
    }
    uint32_t busy = 0;     /* 4 KiB pages that a live (unlisted) block touches */
    for (uint32_t i = 0; i < cap; i++)
        if (!((listed[i >> 6] >> (i & 63)) & 1)) busy |= block_os_bits(pg, lead, i);
    /* 4 KiB pages wholly inside the carved blocks, touched by no live block. */
    unsigned lo = (unsigned)((lead + HK_OS_PAGE - 1) / HK_OS_PAGE);
    unsigned hi = (unsigned)((lead + (size_t)cap * bs) / HK_OS_PAGE);
    if (hi <= lo) return cap;
    uint32_t span = (uint32_t)((((uint64_t)1 << hi) - 1) & ~(((uint64_t)1 << lo) - 1));
    uint32_t cand = span & ~busy;
    if (!cand) return cap;
    char *base = pg->start - lead;
    for (uint32_t m = cand; m;) {
        unsigned k = (unsigned)__builtin_ctz(m);
        unsigned n = (unsigned)__builtin_ctz(~(m >> k));
        hk__purge_range(base + (size_t)k * HK_OS_PAGE, (size_t)n * HK_OS_PAGE);
        m &= ~(uint32_t)((((uint64_t)1 << n) - 1) << k);
    }
    page_set_trimmed(pg, cand);
    /* Relist the free blocks that kept their memory, lowest address first:
     * mallocs fill the page from the bottom, which leaves its top free. */
    hk_block_t *head = NULL, **tail = &head;
    for (uint32_t w = 0; w < (cap + 63) / 64; w++)
        for (uint64_t m = listed[w]; m; m &= m - 1) {
            uint32_t i = w * 64 + (uint32_t)__builtin_ctzll(m);
            if (block_os_bits(pg, lead, i) & cand) continue;
            hk_block_t *b = (hk_block_t *)(pg->start + (size_t)i * bs);
            *tail = b;
            tail = &b->next;
        }
    *tail = NULL;
    pg->free = head;
    page_flags_or(pg, HK_PF_TRIMMED);
    return cap;
}

/* Put the blocks off the lists back on `free`: those touching the lowest
 * trimmed 4 KiB page (and whatever trimmed pages they touch). */
static void page_untrim(hk_page_t *pg)
{
    uint32_t t = pg->trimmed;
    if (!t) return;
    size_t lead = hk__page_lead(pg);
    uint32_t take = t & (0u - t);
    for (;;) {   /* close over blocks that straddle two trimmed pages */
        uint32_t more = take;
        for (uint32_t i = 0; i < pg->capacity; i++) {
            uint32_t bits = block_os_bits(pg, lead, i);
            if (bits & take) more |= bits & t;
        }
        if (more == take) break;
        take = more;
    }
    hk_block_t *head = pg->free;
    for (uint32_t i = pg->capacity; i-- > 0;) {
        uint32_t bits = block_os_bits(pg, lead, i);
        if (!(bits & take)) continue;
        hk_block_t *b = (hk_block_t *)(pg->start + (size_t)i * pg->block_size);
        b->next = head;
        b->tag = HK_FREE_TAG(pg);
        head = b;
    }
    pg->free = head;
    page_set_trimmed(pg, t & ~take);
    if (!pg->trimmed) page_flags_clear(pg, HK_PF_TRIMMED);
}

/* Link the next few uncarved blocks onto `free`; touching memory lazily
 * keeps the resident size close to what is really used. */
static void page_extend(hk_page_t *pg)
{
    uint32_t bs = pg->block_size;
    uint32_t n = pg->reserved - pg->capacity;
    uint32_t want = bs >= 4096 ? 1 : 4096 / bs;
    if (n > want) n = want;
    char *b = pg->start + (size_t)pg->capacity * bs;
    uintptr_t tag = HK_FREE_TAG(pg);   /* every listed block carries it (hk__page_trim counts on it) */
    for (uint32_t i = 0; i + 1 < n; i++) {
        hk_block_t *x = (hk_block_t *)(b + (size_t)i * bs);
        x->next = (hk_block_t *)(b + (size_t)(i + 1) * bs);
        x->tag = tag;
    }
    ((hk_block_t *)(b + (size_t)(n - 1) * bs))->next = pg->free;
    ((hk_block_t *)(b + (size_t)(n - 1) * bs))->tag = tag;
    pg->free = (hk_block_t *)b;
    pg->capacity = (uint16_t)(pg->capacity + n);
}

void hk__page_set_class(hk_page_t *pg, size_t cls)
{
    pg->block_size = hk__class_size[cls];
    pg->cls = (uint8_t)cls;
    pg->inv = ((uint64_t)1 << 44) / pg->block_size + 1;
    unsigned k = (unsigned)__builtin_ctz(pg->block_size);
    uint32_t d0 = pg->block_size >> k, y = d0;     /* d0 * y == 1 mod 2^32 after the Newton steps */
    for (int i = 0; i < 4; i++) y *= 2 - d0 * y;
    pg->dmagic = y;
    pg->dshift = (uint8_t)k;
}

static void page_init(hk_theap_t *heap, hk_page_t *pg, size_t cls)
{
    hk_segment_t *seg = hk__segment_of(pg);
    size_t idx = (size_t)(pg - seg->pages);
    char *base = (char *)seg + idx * HK_PAGE_SIZE;
    char *start = base + hk__span_lead(idx);
    size_t area = (size_t)pg->span * HK_PAGE_SIZE - (size_t)(start - base);
    pg->free = NULL;
    pg->used = 0;
    pg->sparse_since = 0;
    hk__page_set_class(pg, cls);
    pg->capacity = 0;
    __atomic_store_n(&pg->trimmed, 0, __ATOMIC_RELAXED);
    pg->reserved = (uint16_t)(area / pg->block_size);
    __atomic_store_n(&pg->thread_free, 0, __ATOMIC_RELAXED);
    pg->start = start;
    __atomic_store_n(&pg->heap, heap, __ATOMIC_RELAXED);
    __atomic_store_n(&pg->owner, heap->thread_id, __ATOMIC_RELAXED);
    page_set_flags(pg, hk__page_mode(heap, (unsigned)cls));
}

/* ------------------------------------------------------------ page counts */

#define HK_PAGE_STATS_BATCH 16
#define HK_PAGE_BYTES_BATCH ((int64_t)HK_PAGE_STATS_BATCH * 4 * (int64_t)HK_PAGE_SIZE)

void hk__page_stats_flush(hk_theap_t *heap)
{
    int64_t dp = heap->pages_delta, db = heap->page_bytes_delta;
    if (!dp && !db) return;
    __atomic_store_n(&heap->pages_delta, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&heap->page_bytes_delta, 0, __ATOMIC_RELAXED);
    uint64_t np = __atomic_add_fetch(&hk__gstats.pages, (uint64_t)dp, __ATOMIC_RELAXED);
    HK_ATOMIC_ADD(&hk__gstats.page_bytes, (uint64_t)db);
    if (dp > 0) hk__stat_max(&hk__gstats.pages_peak, np);
}

/* dp spans and db bytes of pages into use (or, negative, out of it). A
 * churn of 8-64 KiB blocks takes and gives back a span every few mallocs:
 * with two threads, the shared counters' atomics were 15% of the slow
 * path's samples. */
static void page_stats(hk_theap_t *heap, int64_t dp, int64_t db)
{
    int64_t p = heap->pages_delta + dp, b = heap->page_bytes_delta + db;
    __atomic_store_n(&heap->pages_delta, p, __ATOMIC_RELAXED);
    __atomic_store_n(&heap->page_bytes_delta, b, __ATOMIC_RELAXED);
    if (heap->owner || p >= HK_PAGE_STATS_BATCH || p <= -HK_PAGE_STATS_BATCH ||
        b >= HK_PAGE_BYTES_BATCH || b <= -HK_PAGE_BYTES_BATCH)
        hk__page_stats_flush(heap);
}

/* Give an unused page back to its segment; true when that released the
 * segment itself (it must not be touched afterwards). */
bool hk__page_retire(hk_theap_t *heap, hk_page_t *pg)
{
    page_set_trimmed(pg, 0);   /* the segment's own purge accounting takes over */
    /* How far the carved blocks reached into the span: the next class to
     * take these pages purges what lies past its own blocks, at once or at
     * the next purge (see hk__segment_alloc_span). */
    size_t reach = hk__page_lead(pg) + (size_t)pg->capacity * pg->block_size;
    size_t dirty = (size_t)pg->dirty_end * HK_TAIL_UNIT;   /* an earlier class's, not purged yet */
    if (dirty > reach) reach = dirty;
    pg->dirty_end = 0;
    for (unsigned j = 0; j < pg->span; j++) {
        size_t in = reach > (size_t)j * HK_PAGE_SIZE ? reach - (size_t)j * HK_PAGE_SIZE : 0;
        if (in > HK_PAGE_SIZE) in = HK_PAGE_SIZE;
        pg[j].clean = (uint8_t)((HK_PAGE_SIZE - hk__align_up(in, HK_TAIL_UNIT)) / HK_TAIL_UNIT);
    }
    hk__cap_give(heap, (size_t)pg->span * HK_PAGE_SIZE);
    page_stats(heap, -1, -(int64_t)pg->span * (int64_t)HK_PAGE_SIZE);
    return hk__segment_free_span(heap, pg);
}

/* ------------------------------------------------------------ full pages */

/* A remote free reached full page pg: its bit in the segment's
 * full_remote, then the owner's count (release: an owner that sees the
 * count sees the bit). */
static void page_full_notify(hk_theap_t *owner, hk_page_t *pg)
{
    hk_segment_t *seg = hk__segment_of(pg);
    __atomic_fetch_or(&seg->full_remote, (uint64_t)1 << (pg - seg->pages), __ATOMIC_RELAXED);
    __atomic_fetch_add(&owner->full_pending, 1, __ATOMIC_RELEASE);
}

static void page_to_full(hk_theap_t *heap, hk_page_t *pg)
{
    pg->sparse_since = 0;      /* as busy as it gets (trimming's clock) */
    hk__queue_remove(&heap->queues[pg->cls], pg);
    hk__queue_push_back(&heap->full, pg);
    /* Pairs with the remote free's push-then-read-flags: either we see
     * its block here or it sees the flag and raises full_pending. */
    page_flags_or(pg, HK_PF_FULL);
    if (__atomic_load_n(&pg->thread_free, __ATOMIC_SEQ_CST) != 0) page_full_notify(heap, pg);
}

static void page_unfull(hk_theap_t *heap, hk_page_t *pg)
{
    hk__queue_remove(&heap->full, pg);
    page_flags_clear(pg, HK_PF_FULL);
    hk__queue_push_back(&heap->queues[pg->cls], pg);
}

/* Full pages that remote frees reached go back to their class's queue
 * (or, empty, to the segment). Only the pages whose bit a remote free set
 * are looked at: walking the whole full list on every slow path after a
 * remote free was 30% of the slow path's samples in a two-thread churn of
 * 16 B-64 KiB blocks, where most pages hold a few blocks and hundreds sit
 * full. A bit may be stale (the page emptied, moved on, or went with an
 * abandoned segment): a page counts only while it is still full with
 * remote frees waiting. */
static void collect_full(hk_theap_t *heap)
{
    __atomic_store_n(&heap->full_pending, 0, __ATOMIC_SEQ_CST);
    heap->no_purge++;
    hk_segment_t *next;
    for (hk_segment_t *seg = heap->segments; seg; seg = next) {
        next = seg->next;
        if (__atomic_load_n(&seg->full_remote, __ATOMIC_RELAXED) == 0) continue;
        uint64_t m = __atomic_exchange_n(&seg->full_remote, 0, __ATOMIC_ACQUIRE);
        for (; m; m &= m - 1) {
            hk_page_t *pg = &seg->pages[__builtin_ctzll(m)];
            if (!(page_flags(pg) & HK_PF_FULL) || __atomic_load_n(&pg->thread_free, __ATOMIC_SEQ_CST) == 0) continue;
            hk__page_collect(pg);
            page_unfull(heap, pg);
            if (pg->used == 0) {
                hk__queue_remove(&heap->queues[pg->cls], pg);
                if (hk__page_retire(heap, pg)) break;   /* the segment itself went back */
            }
        }
    }
    heap->no_purge--;
}

/* ------------------------------------------------------------ malloc */

/* Retire the empty page that a class other than cls kept longest, if it
 * has stayed empty while the heap took HK_KEPT_IDLE_SPANS new spans; false
 * when there is none. The age keeps the pages of classes in use, whose
 * one page empties and fills by turns, with them: taking those made every
 * new span rob the next class (a million spans in `server 2` instead of
 * 350, 1.37x the time). */
static bool retire_kept(hk_theap_t *heap, size_t cls)
{
    hk_page_t *best = NULL;
    uint32_t best_age = HK_KEPT_IDLE_SPANS - 1;
    for (unsigned c = 0; c < HK_NCLASS; c++) {
        hk_page_t *pg = hk__kept_page(heap, c);
        if (c == cls || !pg) continue;
        uint32_t age = heap->spans_made - (uint32_t)(pg->free_time >> 32);
        if (age > best_age) { best = pg; best_age = age; }
    }
    if (!best) return false;
    hk__queue_remove(&heap->queues[best->cls], best);
    heap->no_purge++;          /* the page is about to be taken again: no purge from this retire */
    hk__page_retire(heap, best);
    heap->no_purge--;
    return true;
}

/* A fresh span from the heap's own segments, or NULL. */
static hk_page_t *page_new(hk_theap_t *heap, size_t cls)
{
    unsigned n = class_span(cls);
    size_t block = hk__class_size[cls];
    /* Resident free pages in any segment before pages that would fault
     * in (hk__heap_alloc_span: seg_res before seg_pur): taking a
     * segment's untouched pages while an older one's freed pages wait out
     * the purge delay adds both to the resident set. */
    hk_page_t *pg = hk__heap_alloc_span(heap, n, block, true);
    /* Then an empty page another class keeps (see hk__page_now_empty):
     * its memory is resident, and faulting in fresh pages while it waits
     * for a purge adds both to the resident set (a program that moves
     * from size to size kept one carved page for every size it used). */
    if (!pg && retire_kept(heap, cls)) pg = hk__heap_alloc_span(heap, n, block, true);
    if (!pg) pg = hk__heap_alloc_span(heap, n, block, false);
    if (!pg) return NULL;
    if (pg->dirty_end) hk__heap_purge_later(heap);
    page_init(heap, pg, cls);
    heap->spans_made++;
    page_stats(heap, 1, (int64_t)n * (int64_t)HK_PAGE_SIZE);
    return pg;
}

/* Remote frees into full pages that wait before collect_full walks the
 * heap's segments: one per 4 segments, so the walk costs at most 4
 * segment headers per such free, however big the heap. Each walk read
 * every segment's header, a cold line in a big heap: with 1 GiB of small
 * blocks live (256 segments) and another thread freeing one of them
 * every 64 mallocs, the walk was two thirds of the owner's slow path.
 * The blocks that wait are taken before the heap grows (find_page), by
 * hk_collect, and at the next walk. */
static inline size_t full_walk_due(const hk_theap_t *heap)
{
    return heap->nsegs > 4 ? heap->nsegs / 4 : 1;
}

static hk_page_t *find_page(hk_theap_t *heap, size_t cls)
{
    size_t pending = __atomic_load_n(&heap->full_pending, __ATOMIC_RELAXED);
    if (hk_unlikely(pending != 0) && pending >= full_walk_due(heap)) {
        collect_full(heap);
        pending = 0;
    }
    hk_page_queue_t *q = &heap->queues[cls];
    for (;;) {
        /* Blocks that came back to any page of the class first, then
         * uncarved memory: carving the first page while freed blocks wait
         * in the next would make every page of the class resident. */
        hk_page_t *next, *grow = NULL;
        for (hk_page_t *pg = queue_is_empty(q) ? NULL : q->first; pg; pg = next) {
            next = pg->next;
            if (!pg->free) hk__page_collect(pg);
            if (!pg->free && pg->trimmed) page_untrim(pg);
            if (pg->free) {
                if (q->first != pg) { hk__queue_remove(q, pg); queue_push_front(q, pg); }
                return pg;
            }
            if (pg->capacity < pg->reserved) { if (!grow) grow = pg; }
            else page_to_full(heap, pg);
        }
        if (grow) {
            page_extend(grow);
            if (q->first != grow) { hk__queue_remove(q, grow); queue_push_front(q, grow); }
            return grow;
        }
        /* Blocks that remote frees brought back to full pages before a
         * fresh span (the walk waited for full_walk_due of them). */
        if (pending != 0) {
            collect_full(heap);
            pending = 0;
            continue;
        }
        /* No purging here: while the heap grows its free pages are about
         * to be reused. Purges run when pages are given back. A private
         * heap's cap counts the pages its blocks are carved from. */
        size_t span_bytes = (size_t)class_span(cls) * HK_PAGE_SIZE;
        if (!hk__cap_take(heap, span_bytes)) return NULL;
        hk_page_t *pg = page_new(heap, cls);
        if (pg) {
            queue_push_front(q, pg);
            page_extend(pg);
            return pg;
        }
        hk__cap_give(heap, span_bytes);
        /* A new segment: adopted ones bring pages into the queues, so look again. */
        if (!hk__segment_new(heap)) return NULL;
    }
}

/* A purge that came due while the program stayed on fast paths (no page
 * given back since): look at the coarse clock every 64th slow path. */
static HK_NOINLINE void purge_if_due(hk_theap_t *heap)
{
    uint64_t now = hk__now_ms();
    if (now >= heap->purge_due && !heap->no_purge) hk__heap_purge(heap, now, false, HK_TRIM_WALK);
}

/* Every HK_TICK_MALLOCS page-list mallocs: a purge that came due while
 * the program stayed on fast paths. */
void *hk__heap_tick(hk_theap_t *heap, void *b)
{
    heap->tick = HK_TICK_MALLOCS;
    if (heap->purge_due != 0) purge_if_due(heap);
    return b;
}

static void xbig_miss(hk_theap_t *heap, unsigned c);

/* Past the fast path: no cached block, no free block on the class's first
 * page (or a huge size). */
void *hk__malloc_generic(hk_theap_t *heap, size_t size)
{
    if (hk_unlikely(heap == &hk__heap_empty)) {
        heap = hk__heap_init_thread();
        if (!heap) { errno = ENOMEM; return NULL; }
        return hk__malloc(size);
    }
    if (hk_unlikely(heap->purge_due != 0) && (++heap->purge_tick & 63) == 0) purge_if_due(heap);
    if (size > HK_SMALL_MAX) return hk__huge_alloc_in(heap->owner ? heap : NULL, size, 0, NULL);
    size_t cls = hk__size_class(size);
    /* A miss (a malloc that a cached block would have served) lets a big
     * class keep one more. */
    if (hk__class_big(cls) && !heap->owner) xbig_miss(heap, (unsigned)cls);
    hk_page_t *pg = find_page(heap, cls);
    if (!pg) { errno = ENOMEM; return NULL; }
    hk_block_t *b = pg->free;
    pg->free = b->next;
    b->tag = 0;
    pg->used++;
    HK_STAT_ADD(&heap->st.malloc_bytes, pg->block_size);
    return b;
}

/* ------------------------------------------------------------ free */

void hk__page_now_empty(hk_page_t *pg)
{
    hk_theap_t *heap = hk__segment_of(pg)->heap;
    hk_page_queue_t *q = &heap->queues[pg->cls];
    /* Keep the class's only page: a malloc/free loop stays off the slow
     * path. A purge retires it once it stayed empty from one purge to the
     * next (big spans: at the next purge); the stamp says since when. */
    if (q->first == pg && pg->next == NULL) {
        pg->free_time = (uint64_t)heap->spans_made << 32 | heap->purge_epoch;
        if (!heap->purge_due) heap->purge_due = 1;
        return;
    }
    hk__queue_remove(q, pg);
    hk__page_retire(heap, pg);
}

/* An aligned pointer handed out inside its block (memalign and friends:
 * p > b) has the 16 bytes before it in the block, which hold a stamp of p
 * keyed with its page and p's offset in the block. free and usable_size
 * take such a pointer only with its stamp, so a pointer into a block of a
 * page that hands out aligned pointers is refused like any other; free
 * wipes the stamp. */
#define HK_ALIGN_STAMP(pg, p) ((uintptr_t)(p) ^ (uintptr_t)(pg) ^ (uintptr_t)0x2545f4914f6cdd1dull)
static inline bool aligned_stamped(const hk_page_t *pg, const hk_block_t *b, const void *p)
{
    if ((uintptr_t)p & 15) return false;     /* aligned pointers are at least 32-aligned */
    const uintptr_t *w = (const uintptr_t *)p - 2;
    return w[0] == HK_ALIGN_STAMP(pg, p) && w[1] == (uintptr_t)((const char *)p - (const char *)b);
}
static inline void aligned_unstamp(void *p) { ((uintptr_t *)p)[-2] = 0; }

/* The block that holds p (p is inside the page's block area). */
static inline hk_block_t *block_start(const hk_page_t *pg, void *p)
{
    return (hk_block_t *)(pg->start + (size_t)block_index(pg, p) * pg->block_size);
}

struct xfind { const hk_block_t *b; unsigned c; bool found; };
static void xcache_find(hk_theap_t *h, void *arg)
{
    struct xfind *f = arg;
    if (f->found) return;
    hk_block_t **v = h->xcache[f->c];
    unsigned n = __atomic_load_n(&h->xc[f->c].n, __ATOMIC_RELAXED);   /* another thread's count: read once */
    if (n > HK_XCACHE_MAX) n = HK_XCACHE_MAX;                         /* (HK_XBIG_MAX too) */
    for (unsigned i = 0; i < n; i++)
        if (__atomic_load_n(&v[i], __ATOMIC_RELAXED) == f->b) { f->found = true; return; }
}

/* Is b (tagged free) on one of the lists a free can reach from here? The
 * page's own lists (the owner's, read racily by others: the walk is
 * bounded) and the foreign-block caches of every thread heap, this
 * thread's included (parked heaps stay on the heap list too). */
static bool block_listed(const hk_page_t *pg, const hk_block_t *b)
{
    const hk_block_t *lists[2] = { pg->free, hk__tf_list(__atomic_load_n(&pg->thread_free, __ATOMIC_ACQUIRE)) };
    for (unsigned k = 0; k < 2; k++) {
        unsigned n = 0;
        for (const hk_block_t *x = lists[k]; x && n <= pg->reserved; x = x->next, n++)
            if (x == b) return true;
    }
    /* Other threads change their caches without a lock, so the look is
     * racy, but a block seen in a cache below its count was freed: a
     * correct program cannot be freeing it (it could only have it back
     * from that cache's own malloc, which clears the tag first). */
    if (pg->cls < HK_XCLASSES || hk__class_big(pg->cls)) {
        struct xfind f = { b, pg->cls, false };
        hk__heaps_foreach(xcache_find, &f);
        if (f.found) return true;
    }
    return false;
}

/* Is b (one of pg's blocks) already free: off the lists with its memory
 * trimmed (looked at first: reading a trimmed block faults a page in), or
 * tagged and on a list a free can reach? */
static bool block_freed(const hk_page_t *pg, uint32_t flags, const hk_block_t *b)
{
    if (hk_unlikely(flags & HK_PF_TRIMMED) && block_trimmed(pg, b)) return true;
    return hk_unlikely(b->tag == HK_FREE_TAG(pg)) && block_listed(pg, b);
}

/* The chain first..last of k tagged blocks of pg onto the page's atomic
 * thread_free, with one CAS (see HK_TF_SHIFT). */
static void page_push_remote(hk_page_t *pg, hk_block_t *first, hk_block_t *last, uint32_t k)
{
    uintptr_t head = __atomic_load_n(&pg->thread_free, __ATOMIC_RELAXED), w;
    do {
        last->next = hk__tf_list(head);
        w = (uintptr_t)first | ((uintptr_t)(hk__tf_count(head) + k) << HK_TF_SHIFT);
    } while (!__atomic_compare_exchange_n(&pg->thread_free, &head, w, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
#if HK_STATS_BLOCKS
    hk_theap_t *me = hk__tls_heap;
    if (me != &hk__heap_empty) HK_STAT_ADD(&me->st.free_bytes, (uint64_t)k * pg->block_size);
    else HK_ATOMIC_ADD(&hk__gstats.dead_free_bytes, (uint64_t)k * pg->block_size);
#endif
    if (__atomic_load_n(&pg->flags, __ATOMIC_SEQ_CST) & HK_PF_FULL) {
        hk_theap_t *owner = __atomic_load_n(&pg->heap, __ATOMIC_RELAXED);
        if (owner) page_full_notify(owner, pg);
    }
}

static inline bool segment_mine(const hk_segment_t *seg)
{
    return __atomic_load_n(&seg->thread_id, __ATOMIC_RELAXED) == hk__thread_id();
}

/* Block `b` back to its page of a segment the calling thread owns. */
static void page_free_own(hk_segment_t *seg, hk_page_t *pg, hk_block_t *b, uint32_t flags)
{
    if (flags & HK_PF_FULL) page_unfull(seg->heap, pg);
    hk__page_push_own(seg, pg, b);
}

/* Block `b` back to its page: onto `free` when the calling thread owns
 * the segment, else onto the page's atomic thread_free. */
static void page_free_block(hk_segment_t *seg, hk_page_t *pg, hk_block_t *b, uint32_t flags)
{
    if (segment_mine(seg)) {
        page_free_own(seg, pg, b, flags);
        return;
    }
    b->tag = HK_FREE_TAG(pg);
    page_push_remote(pg, b, b, 1);
}

/* The n cached blocks v[0..n) back to their pages. */
static void blocks_home(hk_block_t *const *v, unsigned n)
{
    /* Blocks of another thread's page go home a run at a time: a run of
     * blocks of one page (a producer carves them in a row, so its consumer
     * frees them in a row) is linked into one chain (the cache's blocks
     * carry their tags already) and pushed with one CAS. */
    hk_page_t *run = NULL;
    hk_block_t *first = NULL, *last = NULL;
    uint32_t k = 0;
    for (unsigned i = 0; i < n; i++) {
        hk_block_t *b = v[i];
        hk_segment_t *seg = hk__segment_of(b);
        hk_page_t *pg = hk__page_of(seg, b);
        if (pg == run) { last->next = b; last = b; k++; continue; }
        if (run) { page_push_remote(run, first, last, k); run = NULL; }
        if (segment_mine(seg)) { page_free_own(seg, pg, b, page_flags(pg)); continue; }
        run = pg; first = last = b; k = 1;
    }
    if (run) page_push_remote(run, first, last, k);
}

/* The n oldest of the `*have` blocks of stack v back to their pages. No
 * purge runs inside the loop (a block of a segment this thread has since
 * adopted goes on a local list, its page may empty and retire, and a purge
 * flushes the caches); one that came due runs after it. */
static void stack_flush(hk_theap_t *heap, hk_block_t **v, uint16_t *have, unsigned n)
{
    if (n > *have) n = *have;
    heap->no_purge++;
    blocks_home(v, n);
    for (unsigned i = n; i < *have; i++) v[i - n] = v[i];
    *have = (uint16_t)(*have - n);
    if (--heap->no_purge == 0 && heap->purge_due != 0) purge_if_due(heap);
}

static void xcache_flush_class(hk_theap_t *heap, unsigned c, unsigned n)
{
    stack_flush(heap, heap->xcache[c], &heap->xc[c].n, n);
}

/* ------------------------------------------------------------ big-block cache */

/* The bounds of all thread heaps' big-block caches, in bytes: changed
 * with each heap's own count (xbig_set_cap, slow paths only), read by
 * misses against HEAPKIT_BIG_CACHE_TOTAL. */
static int64_t g_xbig_total;

/* The bytes that one heap's bounds may add up to now: none when memory
 * goes back at once. */
static inline size_t xbig_budget(void)
{
    if (HK_OPT(HK_OPTION_PURGE_DELAY) == 0) return 0;
    return (size_t)HK_OPT(HK_OPTION_BIG_CACHE) << 20;
}

/* Big class c's bound to `cap`, its blocks over it home. The counts of
 * bound bytes change first: a purge that comes due while the blocks go
 * home runs at the end of stack_flush and may close the class itself. */
static void xbig_set_cap(hk_theap_t *heap, unsigned c, unsigned cap)
{
    struct hk_xclass *x = &heap->xc[c];
    int64_t d = ((int64_t)cap - (int64_t)x->cap[0]) * (int64_t)hk__class_size[c];
    if (d == 0) return;
    heap->xb_capbytes += (size_t)d;
    __atomic_add_fetch(&g_xbig_total, d, __ATOMIC_RELAXED);
    x->cap[0] = x->cap[1] = (uint16_t)cap;
    if (x->n > cap) stack_flush(heap, heap->xcache[c], &x->n, x->n - cap);
}

/* A malloc of big class c found the class empty: its bound grows by one
 * while the heap's budget and the one of all heaps together have room (a
 * lower budget than the heap's bounds add up to, after hk_option_set in
 * another thread, closes them all first; the total takes no bound from
 * other heaps, whose classes close when they go idle or shrink when
 * their frees outrun their mallocs). The first bound opened schedules a
 * purge, which closes idle classes. */
static void xbig_miss(hk_theap_t *heap, unsigned c)
{
    size_t budget = xbig_budget(), size = hk__class_size[c];
    if (heap->xb_capbytes > budget)
        for (unsigned k = HK_XBIG_FIRST; k <= HK_XBIG_LAST; k++) xbig_set_cap(heap, k, 0);
    unsigned cap = heap->xc[c].cap[0];
    if (cap >= HK_XBIG_MAX || heap->xb_capbytes + size > budget) return;
    int64_t total = __atomic_load_n(&g_xbig_total, __ATOMIC_RELAXED);
    if (total + (int64_t)size > (int64_t)HK_OPT(HK_OPTION_BIG_CACHE_TOTAL) << 20) return;
    if (heap->xb_capbytes == 0) hk__heap_purge_later(heap);
    xbig_set_cap(heap, c, cap + 1);
}

/* In a fork child only the forking thread's heap lives on: the total is
 * its bounds alone (the others' blocks stay where they are, as their
 * live blocks do). */
void hk__xbig_fork_child(const hk_theap_t *heap)
{
    __atomic_store_n(&g_xbig_total, heap != &hk__heap_empty ? (int64_t)heap->xb_capbytes : 0, __ATOMIC_RELAXED);
}

/* The bounds of all heaps' big-block caches, in bytes (hk_check). */
size_t hk__xbig_total(void) { return (size_t)__atomic_load_n(&g_xbig_total, __ATOMIC_RELAXED); }

/* A free of big class c found the class at its bound (the free fast
 * path's test): every HK_XBIG_SHRINK such frees the bound comes down by
 * one and the excess goes home. A class whose blocks nobody asks for
 * again keeps none for long. */
static void xbig_over(hk_theap_t *me, unsigned c)
{
    unsigned k = c - HK_XBIG_FIRST;
    if (++me->xb[k].over < HK_XBIG_SHRINK) return;
    me->xb[k].over = 0;
    if (me->xc[c].cap[0] > 1) xbig_set_cap(me, c, me->xc[c].cap[0] - 1u);
}

/* Any block in heap's big-block cache? */
bool hk__xbig_held(const hk_theap_t *heap)
{
    for (unsigned c = HK_XBIG_FIRST; c <= HK_XBIG_LAST; c++)
        if (heap->xc[c].n) return true;
    return false;
}

/* The heap's thread frees other threads' blocks, enough of them to fill a
 * class of its block cache: from now on its own frees of classes up to
 * 1 KiB go to the cache too (their bound opens, their pages take
 * HK_PF_MIXED, which sends the owner's free past its first fast path to
 * the cache), so malloc and free each take one way whoever owns the block.
 * A thread that frees its own and other threads' blocks by turns otherwise
 * mispredicts both choices about half the time (`prodcons`: 660 K of 734 K
 * mispredicted branches at scale 0.2, cachegrind). A heap that never frees
 * other threads' blocks keeps the owner's one-test free path. */
#define HK_XCACHE_OWN_MAX 8
void hk__heap_turn_mixed(hk_theap_t *heap)
{
    heap->mixed = 1;
    /* At most 8 own blocks a class: each cached block keeps its page in
     * use, and with the full bound (32 blocks or 4 KiB) `server 2` peaked
     * 6-8% higher (19.8 -> 21.4 MiB), with 8 about 3%; `prodcons 2` lost
     * little of the gain (0.83x against 0.80x the old CPU time). */
    for (unsigned c = 0; c < HK_XCLASSES; c++) {
        uint16_t cap = hk__xcache_cap(c);
        heap->xc[c].cap[0] = cap < HK_XCACHE_OWN_MAX ? cap : HK_XCACHE_OWN_MAX;
    }
    for (hk_segment_t *seg = heap->segments; seg; seg = seg->next)
        for (unsigned i = 0; i < HK_SEG_PAGES; i++) {
            hk_page_t *pg = &seg->pages[i];
            if (((seg->free_mask >> i) & 1) || pg->back) continue;
            if (pg->cls < HK_XCLASSES) page_flags_or(pg, HK_PF_MIXED);
        }
}

/* A purge's look at the caches: the foreign-block cache goes home; in
 * the big-block cache a class that did not change since the purge before
 * (the same count and the same top block: no malloc or free reached it,
 * or as many of each, which looks the same), or every class when forced,
 * goes home too and its bound closes (the next miss opens it again).
 * Emptying the big classes at every purge made `midsize 1` bimodal: 23 or
 * 34 MiB peak and up to 1.4x the time, by how the purges fell. */
void hk__xcache_purge(hk_theap_t *heap, bool force)
{
    for (unsigned c = 0; c < HK_XCLASSES; c++)
        if (heap->xc[c].n) xcache_flush_class(heap, c, heap->xc[c].n);
    for (unsigned c = HK_XBIG_FIRST; c <= HK_XBIG_LAST; c++) {
        struct hk_xclass *x = &heap->xc[c];
        struct hk_xbclass *s = &heap->xb[c - HK_XBIG_FIRST];
        const hk_block_t *top = x->n ? heap->xcache[c][x->n - 1] : NULL;
        if (force || (x->n == s->seen_n && top == s->seen_top)) {
            if (x->cap[0]) xbig_set_cap(heap, c, 0);
            s->seen_n = 0;
            s->seen_top = NULL;
        } else {
            s->seen_n = x->n;
            s->seen_top = top;
        }
    }
}

/* Every cached block back to its page (hk_collect, thread exit). */
void hk__xcache_flush(hk_theap_t *heap) { hk__xcache_purge(heap, true); }

uint16_t hk__xcache_cap(unsigned c)
{
    uint32_t n = HK_XCACHE_BYTES / hk__class_size[c];
    return (uint16_t)(n < HK_XCACHE_MAX ? n : HK_XCACHE_MAX);
}

/* Another thread's block under 64 bytes: several such blocks share a cache
 * line, so one reused here while its neighbours serve the thread that owns
 * the page makes the two threads write the same line (passive false
 * sharing). A thread that only now and then frees a block it was given
 * (the worker that frees its task, then allocates its own) sends it home;
 * one that keeps freeing other threads' small blocks (a consumer, whose
 * blocks would otherwise all make the round trip through the owner's
 * atomic list) caches them from the 64th of the class on, as tcmalloc and
 * jemalloc cache every block: the class's bound opens. */
static inline void xcache_count_foreign(hk_theap_t *me, unsigned c)
{
    if (me->xforeign[c] < 64 && ++me->xforeign[c] == 64) me->xc[c].cap[1] = hk__xcache_cap(c);
}

/* A free that passed the fast path's checks (a live block's start, flags
 * at most FULL and MIXED) and that no block cache took (its class full or
 * closed): an own block of a mixed heap's page goes on the page's list;
 * anything else takes the slow way, which sends the class's older half
 * home first (classes up to 1 KiB), except that the owner's block of a
 * full page (classes up to 1 KiB) goes to the block cache while the class
 * has room under the whole bound (hk__xcache_cap, in a heap that is mixed
 * or not): the page stays on the full list and the block is the class's
 * next malloc. Put
 * back on its page, the block moved the page from the full list to its
 * class's queue and the next malloc of the class moved it back, each move
 * writing two neighbours' descriptors, cold in a big heap (a churn over
 * 1 GiB of live blocks, one in 1,024 replaced: 0.88 -> 0.53 s). */
static inline void free_uncached(hk_block_t *b, hk_page_t *pg)
{
    uintptr_t other = __atomic_load_n(&pg->owner, __ATOMIC_RELAXED) ^ hk__thread_id();
    uint32_t flags = __atomic_load_n(&pg->flags, __ATOMIC_RELAXED) | other;
    if (flags == HK_PF_MIXED) {
        hk__page_push_own(hk__segment_of(b), pg, b);   /* a mixed heap's own block: on its page */
        return;
    }
    if ((flags & ~(uint32_t)HK_PF_MIXED) == HK_PF_FULL && pg->cls < HK_XCLASSES) {
        hk_theap_t *me = hk__tls_heap;
        unsigned c = pg->cls;
        if (me != &hk__heap_empty && me->xc[c].n < hk__xcache_cap(c)) {
            hk__xcache_push(me, pg, c, b);
            return;
        }
    }
    hk__free_generic(b);
}

/* pg: p's page (the fast path has it; passing the owner test's result
 * too made the fast path save a register). A free that passed the fast
 * path's checks and found its class of the block cache full or closed:
 * a big class's bound may come down; then the page's way (or, for the
 * owner's block of a full page up to 1 KiB, the foreign-block cache). */
void hk__free_cached(void *p, hk_page_t *pg)
{
    unsigned c = pg->cls;
    if (hk__class_big(c)) {
        hk_theap_t *me = hk__tls_heap;
        if (me != &hk__heap_empty && me->xc[c].cap[0] != 0) xbig_over(me, c);
    }
    free_uncached(p, pg);
}

/* The free fast path's way out for a pointer outside the small segments. */
void hk__free_nonsmall(void *p)
{
    if (hk__segmap_has(hk__segment_of(p))) hk__free_generic(p);
    else hk__free_outside(p);
}

void hk__free_generic(void *p)
{
    hk_segment_t *seg = hk__segment_of(p);
    if (hk_unlikely(seg->magic != HK_SEG_MAGIC)) { hk__invalid_free(p, "bad segment"); return; }
    if (seg->kind == HK_SEG_HUGE) {
        if (!hk__huge_is_block(seg, p)) { hk__invalid_free(p, "not the start of a huge block"); return; }
        hk__huge_free(seg);
        return;
    }
    if (seg->kind != HK_SEG_SMALL || (size_t)((char *)p - (char *)seg) < HK_SEG_HDR) {
        hk__invalid_free(p, "not a live block");
        return;
    }
    hk_page_t *pg = hk__page_of(seg, p);
    uint32_t flags = __atomic_load_n(&pg->flags, __ATOMIC_RELAXED);
    if ((flags & HK_PF_FREE) || pg->block_size == 0) { hk__invalid_free(p, "page not in use (double free?)"); return; }
    if (hk_unlikely((char *)p < pg->start)) { hk__invalid_free(p, "not a block"); return; }
    hk_block_t *b = block_start(pg, p);
    if (hk_unlikely((char *)b >= pg->start + (size_t)pg->reserved * pg->block_size)) { hk__invalid_free(p, "not a block"); return; }
    if (block_freed(pg, flags, b)) hk__fatal("heapkit: free(%p): double free\n", p);
    if (hk_unlikely(b != (hk_block_t *)p)) {
        if (!(flags & HK_PF_ALIGNED) || !aligned_stamped(pg, b, p)) { hk__invalid_free(p, "not the start of a block"); return; }
        aligned_unstamp(p);
    }
    /* A small block of another live thread's page: keep it for this
     * thread's own mallocs of the class instead of sending it home (a full
     * class sends its older half home first). Blocks then circulate
     * between threads that hand objects to each other with no atomic
     * operation, and the line just touched by the freeing thread is the one
     * it reuses. Private heaps' and abandoned pages (thread_id 0) are never
     * cached: destroy and adoption must see all their blocks. Blocks under
     * 64 bytes: see xcache_count_foreign. */
    uintptr_t tid = __atomic_load_n(&seg->thread_id, __ATOMIC_RELAXED);
    hk_theap_t *me = hk__tls_heap;
    /* A block of a parked heap (hk__heap_park): it goes home by the atomic
     * path below, and every 64th such free of this thread looks whether
     * that heap waited out the purge delay; if so the heap is abandoned
     * and this free adopts the segment, as below. */
    if (tid == 0 && me != &hk__heap_empty) {
        hk_theap_t *owner = __atomic_load_n(&seg->heap, __ATOMIC_RELAXED);
        if (owner && __atomic_load_n(&owner->parked_at, __ATOMIC_RELAXED) != 0 &&   /* only thread heaps park */
            (++me->parked_frees & 63) == 0)
            (void)hk__parked_expire_heap(owner, hk__now_ms());
    }
    /* A block of a segment whose thread exited: this thread takes the
     * segment over (private heaps' segments have a heap and no thread).
     * Otherwise blocks freed into it would wait, resident, for a purge or
     * a thread in need of a segment to adopt it: when 8 workers exited and
     * main then freed their 107 MB of results, all of it stayed resident. */
    if (tid == 0 && me != &hk__heap_empty && __atomic_load_n(&seg->heap, __ATOMIC_RELAXED) == NULL &&
        hk__abandoned_take(seg)) {
        /* The block is live (checked above), so its page stays in use and
         * adoption keeps the segment. */
        if (!hk__segment_adopt(me, seg)) { hk__invalid_free(p, "not a live block"); return; }
        flags = __atomic_load_n(&pg->flags, __ATOMIC_RELAXED);
        tid = hk__thread_id();
    }
    unsigned c = pg->cls;
    if (tid != 0 && tid != hk__thread_id() && !(flags & HK_PF_CHECKED) && c < HK_XCLASSES && me != &hk__heap_empty) {
        if (me->xc[c].cap[1] == 0) xcache_count_foreign(me, c);
        if (me->xc[c].cap[1] != 0) {
            if (me->xc[c].n >= me->xc[c].cap[1]) {
                if (!me->mixed) hk__heap_turn_mixed(me);
                xcache_flush_class(me, c, (me->xc[c].n + 1) / 2);
            }
            hk__xcache_push(me, pg, c, b);
            return;
        }
    }
    page_free_block(seg, pg, b, flags);
}

/* realloc growth without a copy: a block alone in its span (blocks over
 * 32 KiB) takes a bigger class in place, the span growing into free pages
 * right after it when the new size needs more. Only the owning thread
 * does this (the page lists are its own); private heaps never do (their
 * segments have no owning thread). glibc grows into free neighbours the
 * same way; without it a growing buffer leaves an empty span behind at
 * each class step, resident until the purge delay passes. */
bool hk__page_grow_in_place(void *p, size_t size)
{
    hk_segment_t *seg = hk__segment_of(p);
    if (seg->kind != HK_SEG_SMALL || __atomic_load_n(&seg->thread_id, __ATOMIC_RELAXED) != hk__thread_id()) return false;
    hk_page_t *pg = hk__page_of(seg, p);
    if (pg->reserved != 1 || pg->start != (char *)p || (page_flags(pg) & ~(uint32_t)HK_PF_CACHEABLE) != 0) return false;
    size_t cls = hk__size_class(size);
    uint32_t bs = hk__class_size[cls];
    if (bs <= pg->block_size) return false;
    unsigned n = class_span(cls);
    size_t hdr = hk__page_lead(pg);
    if ((size_t)n * HK_PAGE_SIZE - hdr < bs) return false;
    hk_theap_t *heap = seg->heap;
    if (n > pg->span) {
        unsigned old = pg->span;
        if (!hk__segment_extend_span(seg, pg, n)) return false;
        page_stats(heap, 0, (int64_t)(n - old) * (int64_t)HK_PAGE_SIZE);
    }
    hk_page_queue_t *q = (page_flags(pg) & HK_PF_FULL) ? &heap->full : &heap->queues[pg->cls];
    hk__queue_remove(q, pg);
    HK_STAT_ADD(&heap->st.malloc_bytes, bs - pg->block_size);
    hk__page_set_class(pg, cls);
    /* Still its one block, out: the page joins the full list of its new class. */
    hk__queue_push_back(&heap->full, pg);
    page_set_flags(pg, HK_PF_FULL | hk__page_mode(heap, (unsigned)cls));
    return true;
}

/* Mark the page of a block handed out at an inner (aligned) address. */
void *hk__page_mark_aligned(void *block, void *p) HK_HIDDEN;
void *hk__page_mark_aligned(void *block, void *p)
{
    if (p != block) {
        hk_segment_t *seg = hk__segment_of(block);
        if (seg->kind == HK_SEG_SMALL) {
            hk_page_t *pg = hk__page_of(seg, block);
            uintptr_t *w = (uintptr_t *)p - 2;      /* p - block >= 16: inside the block */
            w[0] = HK_ALIGN_STAMP(pg, p);
            w[1] = (uintptr_t)((char *)p - (char *)block);
            if (!(page_flags(pg) & HK_PF_ALIGNED)) page_flags_or(pg, HK_PF_ALIGNED);
        }
    }
    return p;
}

size_t hk__usable_size_ex(const void *p, bool *freed)
{
    hk_segment_t *seg = hk__segment_of(p);
    *freed = false;
    if (!p) return 0;
    if (hk_unlikely(!hk__segmap_has(seg))) return hk__heap_usable_foreign(p);
    if (seg->magic != HK_SEG_MAGIC) return 0;
    if (seg->kind == HK_SEG_HUGE) return hk__huge_usable(seg, p);
    if (seg->kind != HK_SEG_SMALL) return 0;
    /* A pointer in the segment header finds page 0, below its start. */
    hk_page_t *pg = hk__page_of(seg, p);
    uint32_t flags = __atomic_load_n(&pg->flags, __ATOMIC_RELAXED);
    if ((flags & HK_PF_FREE) || pg->block_size == 0) return 0;
    /* Not one of the page's blocks (below the first, inside one unless the
     * page hands out aligned pointers, past the last): 0, as for any
     * pointer heapkit did not hand out, so realloc refuses it. */
    if (hk_likely(hk__is_block(pg, p))) {
        /* A freed block is no live block either: realloc must not hand it back. */
        if (block_freed(pg, flags, (const hk_block_t *)p)) { *freed = true; return 0; }
        return pg->block_size;
    }
    uint32_t idx = block_index(pg, p);
    if (!(flags & HK_PF_ALIGNED) || (const char *)p < pg->start || idx >= pg->reserved) return 0;
    const char *b = pg->start + idx * pg->block_size;
    if (!aligned_stamped(pg, (const hk_block_t *)b, p)) return 0;   /* a freed one has lost its stamp */
    return pg->block_size - (size_t)((const char *)p - b);
}

size_t hk__usable_size(const void *p)
{
    bool freed;
    return hk__usable_size_ex(p, &freed);
}

/* ------------------------------------------------------------ checking */

/* hk_check's look at one page in use of `heap` (a span head): its fields
 * against its class and span, and its free list against its counts: every
 * block carved so far is listed, out (used: cached blocks and remote frees
 * count as out), or off the lists because trimming gave its memory back.
 * A listed block is checked to be one of the page's carved blocks before
 * its link is followed, so a wild link is reported, not followed. */
void hk__page_check(hk_checker_t *ck, const hk_theap_t *heap, hk_page_t *pg)
{
    hk_segment_t *seg = hk__segment_of(pg);
    size_t idx = (size_t)(pg - seg->pages);
    uint32_t flags = __atomic_load_n(&pg->flags, __ATOMIC_RELAXED);
    if (flags & (HK_PF_FREE | HK_PF_SPAN_TAIL)) { hk__check_bad(ck, "page in a queue is free or a span tail", pg); return; }
    if (pg->cls >= HK_NCLASS || pg->block_size != hk__class_size[pg->cls]) { hk__check_bad(ck, "page's block size is not its class's", pg); return; }
    if (pg->span == 0 || idx + pg->span > HK_SEG_PAGES) { hk__check_bad(ck, "page's span leaves its segment", pg); return; }
    if (__atomic_load_n(&pg->heap, __ATOMIC_RELAXED) != heap) hk__check_bad(ck, "page's heap is not its owner's", pg);
    if (__atomic_load_n(&pg->owner, __ATOMIC_RELAXED) != heap->thread_id) hk__check_bad(ck, "page's owner thread is not its heap's", pg);
    char *base = (char *)seg + idx * HK_PAGE_SIZE;
    if (pg->start < base + hk__span_lead(idx) ||
        (size_t)(pg->start - base) + (size_t)pg->reserved * pg->block_size > (size_t)pg->span * HK_PAGE_SIZE) {
        hk__check_bad(ck, "page's blocks do not fit its span", pg);
        return;
    }
    if (pg->used > pg->capacity || pg->capacity > pg->reserved) { hk__check_bad(ck, "page's counts out of order (used <= capacity <= reserved)", pg); return; }
    uint32_t listed = 0;
    uintptr_t tag = HK_FREE_TAG(pg);
    for (hk_block_t *b = pg->free; b; b = b->next) {
        if (!hk__is_block(pg, b) || block_index(pg, b) >= pg->capacity) {   /* (exact below start too: see hk__is_block) */
            hk__check_bad(ck, "free list links to a block the page has not carved", b);
            return;
        }
        if (b->tag != tag) hk__check_bad(ck, "free block lost its tag (written after free?)", b);
        if (++listed > pg->capacity) { hk__check_bad(ck, "free list longer than the page's blocks (a cycle?)", pg); return; }
    }
    uint32_t off = 0, trimmed = __atomic_load_n(&pg->trimmed, __ATOMIC_RELAXED);
    if (trimmed) {
        if (!(flags & HK_PF_TRIMMED)) hk__check_bad(ck, "page has trimmed memory and no TRIMMED flag", pg);
        for (uint32_t i = 0; i < pg->capacity; i++)
            off += (block_os_bits(pg, hk__page_lead(pg), i) & trimmed) != 0;
    }
    if (listed + pg->used + off != pg->capacity)
        hk__check_bad(ck, "listed, out and trimmed blocks do not add up to the blocks carved", pg);
}

/* hk_check's look at a block in a cache of class c: the start of a block
 * of a page in use of that class, tagged free. */
void hk__cached_check(hk_checker_t *ck, const hk_block_t *b, unsigned c)
{
    hk_segment_t *seg = hk__segment_of(b);
    if (!hk__smallmap_has(seg)) { hk__check_bad(ck, "cached block outside the small segments", b); return; }
    hk_page_t *pg = hk__page_of(seg, b);
    uint32_t flags = __atomic_load_n(&pg->flags, __ATOMIC_RELAXED);
    if ((flags & HK_PF_FREE) || pg->block_size == 0 || !hk__is_block(pg, b))
        hk__check_bad(ck, "cached block is not a block of a page in use", b);
    else if (pg->cls != c) hk__check_bad(ck, "cached block is in another class's cache", b);
    else if (b->tag != HK_FREE_TAG(pg)) hk__check_bad(ck, "cached block lost its tag (written after free?)", b);
}
