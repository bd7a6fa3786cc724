/* Huge blocks (larger than the biggest size class): each is its own
 * mapping, aligned to the segment size so the same pointer mask finds its
 * header. Those that fit in one segment reuse the segment cache; bigger
 * ones reserve 2-4 times their size of address space (untouched, so
 * free) and go to a small cache of recently freed mappings, so a free +
 * malloc of a similar size reuses resident pages instead of munmap, mmap
 * and page faults. */
#include "core.h"
#include <errno.h>
#include <stdint.h>

void hk__segmap_set(void *seg, bool on) HK_HIDDEN;

/* The big-mapping cache: at most HCACHE_N mappings holding at most
 * HCACHE_BYTES of possibly resident memory; a miss empties it (so caching
 * never raises the peak), and entries go back to the OS after the purge
 * delay. For a big huge block, `cache_time` in its header holds the bytes
 * that may be resident (the most it was asked for), live or cached. */
#define HCACHE_N      4
#define HCACHE_BYTES  ((size_t)64 << 20)
#define HUGE_ROUND_MAX ((size_t)1 << 30)
static hk_lock_t g_hc_lock;
static hk_segment_t *g_hc[HCACHE_N];
static uint64_t g_hc_time[HCACHE_N];
static unsigned g_hc_n;
static size_t g_hc_bytes;

static void huge_release(hk_segment_t *seg)
{
    size_t sz = seg->map_size;
    seg->magic = 0;
    hk__segmap_set(seg, false);
    HK_ATOMIC_SUB(&hk__gstats.reserved, sz);
    hk_vm_release(seg, sz);
}

/* Remove entry i (lock held); returns it. */
static hk_segment_t *hc_take(unsigned i)
{
    hk_segment_t *seg = g_hc[i];
    g_hc_bytes -= (size_t)seg->cache_time;
    unsigned last = g_hc_n - 1;
    /* Atomic: the emptiness checks peek at the count without the lock. */
    __atomic_store_n(&g_hc_n, last, __ATOMIC_RELAXED);
    g_hc[i] = g_hc[last];
    g_hc_time[i] = g_hc_time[last];
    return seg;
}

/* A cached mapping of at least `need` bytes, or NULL (and the cache
 * emptied: what it holds cannot serve this size). */
static hk_segment_t *hc_get(size_t need)
{
    if (__atomic_load_n(&g_hc_n, __ATOMIC_RELAXED) == 0) return NULL;
    hk_segment_t *victims[HCACHE_N], *seg = NULL;
    unsigned nv = 0;
    hk__lock(&g_hc_lock);
    unsigned best = HCACHE_N;
    for (unsigned i = 0; i < g_hc_n; i++)
        if (g_hc[i]->map_size >= need && (best == HCACHE_N || g_hc[i]->map_size < g_hc[best]->map_size)) best = i;
    if (best < HCACHE_N) seg = hc_take(best);
    else while (g_hc_n) victims[nv++] = hc_take(g_hc_n - 1);
    hk__unlock(&g_hc_lock);
    for (unsigned i = 0; i < nv; i++) huge_release(victims[i]);
    return seg;
}

/* Keep a freed big mapping; false when it should be released. */
static bool hc_put(hk_segment_t *seg)
{
    long delay = HK_OPT(HK_OPTION_PURGE_DELAY);
    size_t bytes = (size_t)seg->cache_time;
    if (delay == 0 || bytes > HCACHE_BYTES || seg->map_size > HUGE_ROUND_MAX) return false;
    hk_segment_t *victims[HCACHE_N];
    unsigned nv = 0;
    uint64_t now = hk__now_ms();
    seg->kind = HK_SEG_CACHED;     /* a free into it now is misuse */
    hk__lock(&g_hc_lock);
    while (g_hc_n && (g_hc_n == HCACHE_N || g_hc_bytes + bytes > HCACHE_BYTES)) {
        unsigned old = 0;
        for (unsigned i = 1; i < g_hc_n; i++) if (g_hc_time[i] < g_hc_time[old]) old = i;
        victims[nv++] = hc_take(old);
    }
    g_hc[g_hc_n] = seg;
    g_hc_time[g_hc_n] = now;
    g_hc_bytes += bytes;
    __atomic_store_n(&g_hc_n, g_hc_n + 1, __ATOMIC_RELAXED);
    hk__unlock(&g_hc_lock);
    for (unsigned i = 0; i < nv; i++) huge_release(victims[i]);
    hk_theap_t *me = hk__tls_heap;
    uint64_t due = now + (uint64_t)(delay > 0 ? delay : 0);
    if (delay > 0 && me != &hk__heap_empty && (!me->purge_due || due < me->purge_due)) me->purge_due = due;
    return true;
}

/* Release the entries whose delay has passed; returns when the next one
 * comes due (0: none waits). */
uint64_t hk__huge_cache_purge(uint64_t now, bool force) HK_HIDDEN;
uint64_t hk__huge_cache_purge(uint64_t now, bool force)
{
    if (__atomic_load_n(&g_hc_n, __ATOMIC_RELAXED) == 0) return 0;
    long delay = HK_OPT(HK_OPTION_PURGE_DELAY);
    if (delay < 0 && !force) return 0;
    hk_segment_t *victims[HCACHE_N];
    unsigned nv = 0;
    uint64_t next = 0;
    hk__lock(&g_hc_lock);
    for (unsigned i = g_hc_n; i-- > 0;) {
        uint64_t due = g_hc_time[i] + (uint64_t)(delay > 0 ? delay : 0);
        if (force || now >= due) victims[nv++] = hc_take(i);
        else if (!next || due < next) next = due;
    }
    hk__unlock(&g_hc_lock);
    for (unsigned i = 0; i < nv; i++) huge_release(victims[i]);
    return next;
}

void hk__huge_cache_lock(bool lock, bool child) HK_HIDDEN;
void hk__huge_cache_lock(bool lock, bool child)
{
    if (lock) hk__lock(&g_hc_lock);
    else if (child) g_hc_lock.v = 0;
    else hk__unlock(&g_hc_lock);
}

void *hk__huge_alloc(size_t size, size_t align, bool *zeroed)
{
    return hk__huge_alloc_in(NULL, size, align, zeroed);
}

/* `heap` is a private heap (its blocks are linked in heap->huge so that
 * destroy finds them) or NULL. */
void *hk__huge_alloc_in(hk_theap_t *heap, size_t size, size_t align, bool *zeroed)
{
    hk__process_init();
    size_t off = align > HK_HUGE_OFF ? align : HK_HUGE_OFF;
    if (size > (size_t)PTRDIFF_MAX - 2 * HK_SEG_SIZE || off > HK_SEG_SIZE / 2) { errno = ENOMEM; return NULL; }
    size_t need = hk__align_up(off + size, hk_vm_page_size());
    size_t charge = need <= HK_SEG_SIZE ? HK_SEG_SIZE : need;
    if (heap && !hk__cap_take(heap, charge)) { errno = ENOMEM; return NULL; }
    hk_segment_t *seg;
    bool fresh = true;
    if (need <= HK_SEG_SIZE) {
        seg = hk__segment_map(&fresh, (unsigned)((need + HK_PAGE_SIZE - 1) >> HK_PAGE_SHIFT), false);
        if (!seg) { if (heap) hk__cap_give(heap, charge); errno = ENOMEM; return NULL; }
        hk__segment_take_for_huge(seg, need);
        need = HK_SEG_SIZE;
    } else if (!heap && (seg = hc_get(need)) != NULL) {
        /* Reuse: pages past the new size that the last user may have
         * touched go back, so the block does not carry them along. */
        size_t had = (size_t)seg->cache_time;
        if (had > need + ((size_t)1 << 20) && hk_vm_purge((char *)seg + need, had - need) == 0) had = need;
        seg->cache_time = had > need ? had : need;
        need = seg->map_size;
        fresh = false;
    } else {
        void *p;
        /* The footprint is about to grow by a fresh mapping: first give
         * back what this thread's heap and the caches hold free, rather
         * than add the new block on top of memory that waits for its
         * purge delay. (A mapping and its page faults cost far more than
         * the madvise calls.) */
        hk_theap_t *me = hk__tls_heap;
        if (!heap && me != &hk__heap_empty && !me->no_purge) hk__heap_purge(me, hk__now_ms(), true, HK_TRIM_WALK);
        /* Private heaps are charged the exact size; others reserve the
         * power of two at or above twice the size (address space only:
         * untouched pages cost nothing), so that a cached mapping serves
         * most later requests of a similar size. */
        size_t map = need;
        if (!heap && need <= HUGE_ROUND_MAX) map = (size_t)1 << (65 - __builtin_clzl(need - 1));
        if (hk_vm_alloc(map, HK_SEG_SIZE, &p) != 0) {
            if (map == need || hk_vm_alloc((map = need), HK_SEG_SIZE, &p) != 0) {
                if (heap) hk__cap_give(heap, charge);
                errno = ENOMEM;
                return NULL;
            }
        }
        if (hk_unlikely((uintptr_t)p >> HK_ADDR_BITS)) {   /* beyond the segment map (see hk__segment_map) */
            (void)hk_vm_release(p, map);
            if (heap) hk__cap_give(heap, charge);
            errno = ENOMEM;
            return NULL;
        }
        seg = p;
        seg->cache_time = need;
        need = map;
        HK_ATOMIC_ADD(&hk__gstats.reserved, need);
        hk__segmap_set(seg, true);
    }
    hk__segment_stamp(seg, HK_SEG_HUGE);
    seg->huge_shift = (uint16_t)__builtin_ctzl(off);   /* off: 64 or the alignment, a power of two */
    seg->map_size = need;
    seg->heap = heap;
    seg->next = seg->prev = NULL;
    if (heap) {
        hk__lock(&heap->huge_lock);
        seg->next = heap->huge;
        if (heap->huge) heap->huge->prev = seg;
        heap->huge = seg;
        hk__unlock(&heap->huge_lock);
    }
    __atomic_store_n(&seg->thread_id, 0, __ATOMIC_RELEASE);
    HK_ATOMIC_ADD(&hk__gstats.huge_blocks, 1);
    HK_ATOMIC_ADD(&hk__gstats.huge_bytes, need);
    if (zeroed) *zeroed = fresh;
    return (char *)seg + off;
}

void hk__huge_free(hk_segment_t *seg)
{
    hk_theap_t *heap = seg->heap;
    if (heap) {
        /* Any thread may free it: unlink under the heap's huge-list lock. */
        hk__lock(&heap->huge_lock);
        if (seg->prev) seg->prev->next = seg->next;
        else heap->huge = seg->next;
        if (seg->next) seg->next->prev = seg->prev;
        hk__unlock(&heap->huge_lock);
        seg->next = seg->prev = NULL;
        seg->heap = NULL;
        hk__cap_give(heap, seg->map_size);
    }
    size_t sz = seg->map_size;
    HK_ATOMIC_SUB(&hk__gstats.huge_blocks, 1);
    HK_ATOMIC_SUB(&hk__gstats.huge_bytes, sz);
    if (sz == HK_SEG_SIZE) { hk__segment_unmap_or_cache(seg); return; }
    if (hc_put(seg)) return;
    huge_release(seg);
}

size_t hk__huge_usable(hk_segment_t *seg, const void *p)
{
    if (!hk__huge_is_block(seg, p)) return 0;
    return seg->map_size - ((size_t)1 << seg->huge_shift);
}

/* Give back the tail of a big mapping when a realloc shrinks it a lot. */
bool hk__huge_shrink(hk_segment_t *seg, const void *p, size_t size)
{
    size_t keep = hk__align_up((size_t)((const char *)p - (const char *)seg) + size, hk_vm_page_size());
    /* A realloc that grew within the reserved mapping may touch more. */
    if (seg->map_size > HK_SEG_SIZE && keep > seg->cache_time) seg->cache_time = keep;
    if (seg->map_size <= HK_SEG_SIZE || keep < HK_SEG_SIZE + 1 || seg->map_size - keep < ((size_t)1 << 20)) return false;
    size_t cut = seg->map_size - keep;
    if (hk_vm_release((char *)seg + keep, cut) != 0) return false;
    seg->map_size = keep;
    if (seg->cache_time > keep) seg->cache_time = keep;
    if (seg->heap) hk__cap_give(seg->heap, cut);
    HK_ATOMIC_SUB(&hk__gstats.reserved, cut);
    HK_ATOMIC_SUB(&hk__gstats.huge_bytes, cut);
    return true;
}
