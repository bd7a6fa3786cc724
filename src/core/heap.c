/* Thread heaps: the TLS heap pointer (starting at a static empty heap whose
 * fast path always misses, so the first malloc of a thread lands in the
 * slow path that sets the heap up), process start-up without recursion,
 * thread exit (abandonment), the abandoned-segment list, and fork. */
#define _GNU_SOURCE
#include "core.h"
#include <string.h>
#include <sched.h>

hk_page_t hk__page_empty = { .flags = HK_PF_FREE };
#define Q1 { &hk__page_empty, NULL }
#define Q8 Q1, Q1, Q1, Q1, Q1, Q1, Q1, Q1
_Static_assert(HK_NCLASS == 65, "the empty heap below lists 65 queues");
/* Read-only: every queue head is the empty page, so the fast path misses. */
hk_theap_t hk__heap_empty = { .queues = { Q8, Q8, Q8, Q8, Q8, Q8, Q8, Q8, Q1 }, .full = Q1 };
#undef Q1
#undef Q8
__thread hk_theap_t *hk__tls_heap = &hk__heap_empty;
hk_gstats_t hk__gstats;

static union { hk_theap_t h; char bytes[HK_THEAP_BYTES]; } g_main_store __attribute__((aligned(64)));
#define g_main_heap (g_main_store.h)
static int g_main_taken;
static int g_init_state;      /* 0 none, 1 running, 2 done */
static pthread_key_t g_key;
static int g_key_ok;
static hk_lock_t g_heaps_lock, g_abandoned_lock, g_pool_lock;
static hk_theap_t *g_heaps;           /* live heaps */
static hk_theap_t *g_heap_pool;       /* released heap structs */
static char *g_pool_cur, *g_pool_end;
static hk_segment_t *g_abandoned;
static hk_lock_t g_parked_lock;
static hk_theap_t *g_parked;          /* parked heaps, most recent first; written under */
static unsigned g_parked_n;           /* the lock, atomically (the head is peeked at without it) */

void hk__lock(hk_lock_t *l)
{
    while (__atomic_exchange_n(&l->v, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(&l->v, __ATOMIC_RELAXED)) sched_yield();
}

void hk__stat_max(uint64_t *peak, uint64_t v)
{
    uint64_t cur = __atomic_load_n(peak, __ATOMIC_RELAXED);
    while (cur < v && !__atomic_compare_exchange_n(peak, &cur, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
}

static void heap_clear_queues(hk_theap_t *h)
{
    h->tick = HK_TICK_MALLOCS;
    for (unsigned i = 0; i < HK_NCLASS; i++) { h->queues[i].first = &hk__page_empty; h->queues[i].last = NULL; }
    h->full.first = &hk__page_empty;
    h->full.last = NULL;
}

static void heap_thread_done(void *arg);
static void fork_prepare(void);
static void fork_parent(void);
static void fork_child(void);

/* pthread_atfork itself comes from libc_nonshared.a, linked at the far end
 * of the library's code: a page touched for one call at start-up, and the
 * pages faulted in around it, would stay resident in every process. glibc's
 * pthread_atfork only forwards to __register_atfork with the DSO handle
 * (handlers go away if the library is unloaded); call that directly. */
#if defined(__GLIBC__)
extern int __register_atfork(void (*)(void), void (*)(void), void (*)(void), void *);
extern void *__dso_handle __attribute__((weak, visibility("hidden")));
static void register_atfork(void)
{
    __register_atfork(fork_prepare, fork_parent, fork_child, &__dso_handle ? __dso_handle : NULL);
}
#else
static void register_atfork(void) { pthread_atfork(fork_prepare, fork_parent, fork_child); }
#endif

void hk__process_init(void)
{
    if (hk_likely(__atomic_load_n(&g_init_state, __ATOMIC_ACQUIRE) == 2)) return;
    int expect = 0;
    if (__atomic_compare_exchange_n(&g_init_state, &expect, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        hk__options_init();
        g_key_ok = pthread_key_create(&g_key, heap_thread_done) == 0;
        __atomic_store_n(&g_init_state, 2, __ATOMIC_RELEASE);
        /* May allocate (glibc's handler list); everything it needs is ready. */
        register_atfork();
        return;
    }
    while (__atomic_load_n(&g_init_state, __ATOMIC_ACQUIRE) != 2) sched_yield();
}

static hk_theap_t *heap_pool_alloc(void)
{
    hk__lock(&g_pool_lock);
    hk_theap_t *h = g_heap_pool;
    if (h) g_heap_pool = h->next_heap;
    else {
        if (g_pool_cur + HK_THEAP_BYTES > g_pool_end) {
            void *p;
            size_t sz = (size_t)64 << 10;
            if (hk_vm_alloc(sz, 0, &p) != 0) { hk__unlock(&g_pool_lock); return NULL; }
            g_pool_cur = p;
            g_pool_end = g_pool_cur + sz;
        }
        h = (hk_theap_t *)g_pool_cur;
        g_pool_cur += HK_THEAP_BYTES;
    }
    hk__unlock(&g_pool_lock);
    return h;
}

static void heap_pool_free(hk_theap_t *h)
{
    hk__lock(&g_pool_lock);
    h->next_heap = g_heap_pool;
    g_heap_pool = h;
    hk__unlock(&g_pool_lock);
}

/* g_parked_n and the statistic move together (under g_parked_lock). */
static void parked_count(int d)
{
    __atomic_store_n(&g_parked_n, g_parked_n + (unsigned)d, __ATOMIC_RELAXED);
    if (d > 0) HK_ATOMIC_ADD(&hk__gstats.heaps_parked, (uint64_t)d);
    else HK_ATOMIC_SUB(&hk__gstats.heaps_parked, (uint64_t)-d);
}

/* Take the heap at *pp (a link of the parked list) off the list; the
 * caller holds g_parked_lock and then owns the heap. */
static hk_theap_t *parked_take(hk_theap_t **pp)
{
    hk_theap_t *h = *pp;
    __atomic_store_n(pp, h->parked_next, __ATOMIC_RELAXED);
    parked_count(-1);
    h->parked_next = NULL;
    __atomic_store_n(&h->parked_at, 0, __ATOMIC_RELAXED);
    return h;
}

/* The most recently parked heap, off the list, or NULL. */
static hk_theap_t *heap_unpark(void)
{
    if (__atomic_load_n(&g_parked, __ATOMIC_RELAXED) == NULL) return NULL;
    hk__lock(&g_parked_lock);
    hk_theap_t *h = g_parked ? parked_take(&g_parked) : NULL;
    hk__unlock(&g_parked_lock);
    return h;
}

hk_theap_t *hk__heap_init_thread(void)
{
    hk__process_init();
    if (hk__tls_heap != &hk__heap_empty) return hk__tls_heap;   /* set up by a nested call */
    hk_theap_t *h = heap_unpark();
    if (h) {
        /* An exited thread's heap, whole: its pages, free lists and warm
         * memory serve this thread from its first malloc. */
        uintptr_t tid = hk__thread_id();
        h->thread_id = tid;
        for (hk_segment_t *seg = h->segments; seg; seg = seg->next)
            hk__segment_set_thread(seg, tid);
        HK_ATOMIC_ADD(&hk__gstats.heaps, 1);
        hk__tls_heap = h;
        if (g_key_ok) pthread_setspecific(g_key, h);
        return h;
    }
    int expect = 0;
    if (__atomic_compare_exchange_n(&g_main_taken, &expect, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) h = &g_main_heap;
    else if (!(h = heap_pool_alloc())) return NULL;
    memset(h, 0, sizeof *h);
    heap_clear_queues(h);
    h->thread_id = hk__thread_id();
    for (unsigned c = 0; c < HK_XCLASSES; c++)
        if (hk__class_size[c] >= 64) h->xc[c].cap[1] = hk__xcache_cap(c);   /* smaller: see hk__free_generic */
    hk__lock(&g_heaps_lock);
    h->next_heap = g_heaps;
    if (g_heaps) g_heaps->prev_heap = h;
    g_heaps = h;
    hk__unlock(&g_heaps_lock);
    HK_ATOMIC_ADD(&hk__gstats.heaps, 1);
    hk__tls_heap = h;
    /* glibc keeps the first 32 keys' values in the thread descriptor: no
     * allocation; past that it callocs, which finds this heap ready. */
    if (g_key_ok) pthread_setspecific(g_key, h);
    return h;
}

/* A private heap's theap: from the same pool (never unmapped, so a stale
 * page owner pointer stays harmless), but not on the live list, so no
 * thread-exit or statistics walk ever touches it. thread_id stays 0. */
hk_theap_t *hk__theap_private_new(void *owner, size_t max_size, bool huge_pages)
{
    hk__process_init();
    hk_theap_t *h = heap_pool_alloc();
    if (!h) return NULL;
    memset(h, 0, sizeof *h);
    heap_clear_queues(h);
    h->owner = owner;
    h->max_size = max_size;
    h->huge_pages = huge_pages;
    return h;
}

void hk__theap_private_free(hk_theap_t *heap)
{
    hk__theap_release_all(heap);
    heap_clear_queues(heap);
    heap->owner = NULL;
    heap_pool_free(heap);
}

void hk__theap_reset(hk_theap_t *heap)
{
    hk__theap_release_all(heap);
    heap_clear_queues(heap);
    __atomic_store_n(&heap->full_pending, 0, __ATOMIC_RELAXED);
    heap->purge_due = 0;
    heap->no_purge = 0;
}

void hk__heaps_foreach(void (*fn)(hk_theap_t *, void *), void *arg)
{
    hk__lock(&g_heaps_lock);
    for (hk_theap_t *h = g_heaps; h; h = h->next_heap) fn(h, arg);
    hk__unlock(&g_heaps_lock);
}

/* ------------------------------------------------------------ abandonment */

/* The abandoned list is doubly linked (through the segments' own links)
 * so that a free into any abandoned segment can take it off the list. */
static void abandoned_push(hk_segment_t *seg)
{
    hk__lock(&g_abandoned_lock);
    seg->prev = NULL;
    seg->next = g_abandoned;
    if (g_abandoned) g_abandoned->prev = seg;
    seg->abandoned = 1;
    /* Atomic because hk__abandoned_pop peeks at the head without the lock. */
    __atomic_store_n(&g_abandoned, seg, __ATOMIC_RELAXED);
    hk__unlock(&g_abandoned_lock);
}

static void abandoned_unlink(hk_segment_t *seg)
{
    if (seg->prev) seg->prev->next = seg->next;
    else __atomic_store_n(&g_abandoned, seg->next, __ATOMIC_RELAXED);
    if (seg->next) seg->next->prev = seg->prev;
    seg->next = seg->prev = NULL;
    seg->abandoned = 0;
}

hk_segment_t *hk__abandoned_pop(void)
{
    if (__atomic_load_n(&g_abandoned, __ATOMIC_RELAXED) == NULL) return NULL;
    hk__lock(&g_abandoned_lock);
    hk_segment_t *seg = g_abandoned;
    if (seg) abandoned_unlink(seg);
    hk__unlock(&g_abandoned_lock);
    return seg;
}

bool hk__abandoned_take(hk_segment_t *seg)
{
    hk__lock(&g_abandoned_lock);
    bool on = seg->abandoned != 0;
    if (on) abandoned_unlink(seg);
    hk__unlock(&g_abandoned_lock);
    return on;
}

static void queue_drain(hk_theap_t *heap, hk_page_queue_t *q)
{
    hk_page_t *next;
    for (hk_page_t *pg = q->last ? q->first : NULL; pg; pg = next) {
        next = pg->next;
        hk__page_collect(pg);
        __atomic_fetch_and(&pg->flags, ~(uint32_t)HK_PF_FULL, __ATOMIC_SEQ_CST);   /* see page_flags_or */
        hk__queue_remove(q, pg);
        if (pg->used == 0) hk__page_retire(heap, pg);
    }
}

/* An exited thread's heap: its foreign-block cache goes home (the thread's
 * TLS already points at the empty heap: nothing comes back), every page is
 * collected and leaves its queue, and the empty ones go back. */
static void heap_drain(hk_theap_t *heap)
{
    hk__xcache_flush(heap);
    for (unsigned i = 0; i < HK_NCLASS; i++) queue_drain(heap, &heap->queues[i]);
    queue_drain(heap, &heap->full);
}

void hk__heap_abandon(hk_theap_t *heap)
{
    heap->no_purge++;     /* never reset: the heap struct is re-initialised on reuse */
    heap_drain(heap);
    while (heap->segments) {
        hk_segment_t *seg = heap->segments;
        if (seg->used_pages == 0) { hk__segment_release_empty(heap, seg, false); continue; }
        hk__segment_abandon(heap, seg);
        abandoned_push(seg);
    }
    hk__page_stats_flush(heap);   /* while still on the live list, which hk_stats_get adds up */
    hk__lock(&g_heaps_lock);
    if (heap->prev_heap) heap->prev_heap->next_heap = heap->next_heap;
    else g_heaps = heap->next_heap;
    if (heap->next_heap) heap->next_heap->prev_heap = heap->prev_heap;
    HK_ATOMIC_ADD(&hk__gstats.dead_malloc_bytes, __atomic_load_n(&heap->st.malloc_bytes, __ATOMIC_RELAXED));
    HK_ATOMIC_ADD(&hk__gstats.dead_free_bytes, __atomic_load_n(&heap->st.free_bytes, __ATOMIC_RELAXED));
    hk__unlock(&g_heaps_lock);
    HK_ATOMIC_SUB(&hk__gstats.heaps, 1);
    heap_clear_queues(heap);
    heap->thread_id = 0;
    heap_pool_free(heap);
}

/* ------------------------------------------------------------ parked heaps */

/* A thread that exits while others start (thread per connection, pools
 * that grow and shrink) would leave its segments to the abandoned list,
 * its free pages purged, and the next thread would build a heap of its
 * own, faulting in fresh pages for every class it uses. Instead, up to
 * HK_OPTION_PARKED_HEAPS heaps of exited threads wait whole, with their
 * page queues and the free blocks in them, and the next thread that
 * starts takes the most recent one as its heap (as glibc hands arenas
 * on). A parked heap gives its empty pages back as abandonment does, and
 * its free pages once another heap is parked after it (the last one
 * parked keeps them for the next thread); its segments have no owner
 * thread, so frees into them take the atomic path, and they stay with the
 * heap (a free does not adopt them). A heap parked for longer than the
 * purge delay is abandoned after all, by the next purge of any live heap,
 * by a free into it, or by hk_collect(1); with a purge delay of 0 nothing
 * is parked. */

/* After heap_drain: the pages that still hold blocks back in their class
 * queues. */
static void heap_requeue(hk_theap_t *heap)
{
    for (hk_segment_t *seg = heap->segments; seg; seg = seg->next)
        for (unsigned i = 0; i < HK_SEG_PAGES; i++) {
            hk_page_t *pg = &seg->pages[i];
            if ((seg->free_mask >> i) & 1 || pg->back) continue;
            hk__queue_push_back(&heap->queues[pg->cls], pg);
        }
}

bool hk__heap_park(hk_theap_t *heap)
{
    long max = HK_OPT(HK_OPTION_PARKED_HEAPS);
    if (heap->owner || max <= 0 || HK_OPT(HK_OPTION_PURGE_DELAY) == 0) return false;
    hk__lock(&g_parked_lock);      /* take a place on the list first */
    bool room = g_parked_n < (unsigned long)max;
    if (room) parked_count(1);
    hk__unlock(&g_parked_lock);
    if (!room) return false;
    heap->no_purge++;
    heap_drain(heap);
    heap_requeue(heap);
    for (hk_segment_t *seg = heap->segments, *next; seg; seg = next) {
        next = seg->next;
        if (seg->used_pages == 0) hk__segment_release_empty(heap, seg, false);
        else hk__segment_park(seg);
    }
    heap->thread_id = 0;
    heap->no_purge--;
    hk__page_stats_flush(heap);
    HK_ATOMIC_SUB(&hk__gstats.heaps, 1);
    hk__lock(&g_parked_lock);
    hk_theap_t *cool = g_parked;
    heap->parked_next = g_parked;
    __atomic_store_n(&g_parked, heap, __ATOMIC_RELAXED);
    __atomic_store_n(&heap->parked_at, hk__now_ms() | 1, __ATOMIC_RELAXED);
    /* The heap parked before this one is no longer the next a starting
     * thread takes: its free pages go back now (under the lock, which
     * keeps it parked; nobody else touches a parked heap's free pages).
     * This heap's stay resident for that thread, which then reuses them
     * instead of faulting them in again, or go when it too cools or is
     * abandoned: one parked heap's free pages at most are held. */
    if (cool)
        for (hk_segment_t *seg = cool->segments; seg; seg = seg->next) hk__segment_cool(seg);
    hk__unlock(&g_parked_lock);
    return true;
}

/* fn on every parked heap, under the parked list's lock (hk_check). */
void hk__parked_foreach(void (*fn)(hk_theap_t *, void *), void *arg)
{
    if (__atomic_load_n(&g_parked, __ATOMIC_RELAXED) == NULL) return;
    hk__lock(&g_parked_lock);
    for (hk_theap_t *h = g_parked; h; h = h->parked_next) fn(h, arg);
    hk__unlock(&g_parked_lock);
}

/* Take h off the parked list if it is still on it; the caller then owns it. */
static bool parked_unlink(hk_theap_t *h)
{
    for (hk_theap_t **pp = &g_parked; *pp; pp = &(*pp)->parked_next)
        if (*pp == h) {
            (void)parked_take(pp);
            return true;
        }
    return false;
}

static void parked_abandon(hk_theap_t *h)
{
    HK_ATOMIC_ADD(&hk__gstats.heaps, 1);     /* hk__heap_abandon counts it out again */
    hk__heap_abandon(h);
}

static bool parked_due(const hk_theap_t *h, uint64_t now, bool force)
{
    uint64_t at = __atomic_load_n(&h->parked_at, __ATOMIC_RELAXED);
    long delay = HK_OPT(HK_OPTION_PURGE_DELAY);
    return at && (force || (delay >= 0 && now >= (at & ~(uint64_t)1) + (uint64_t)delay));
}

/* Abandon the parked heaps that waited out the purge delay (all of them
 * with force), and those beyond the bound (it may have been lowered). */
void hk__parked_expire(uint64_t now, bool force)
{
    if (__atomic_load_n(&g_parked, __ATOMIC_RELAXED) == NULL) return;
    long max = HK_OPT(HK_OPTION_PARKED_HEAPS);
    hk_theap_t *due = NULL;
    hk__lock(&g_parked_lock);
    unsigned k = 0;
    for (hk_theap_t **pp = &g_parked; *pp;) {
        if (parked_due(*pp, now, force) || (long)k >= max) {
            hk_theap_t *h = parked_take(pp);
            h->parked_next = due;
            due = h;
        } else {
            pp = &(*pp)->parked_next;
            k++;
        }
    }
    hk__unlock(&g_parked_lock);
    while (due) {
        hk_theap_t *h = due;
        due = h->parked_next;
        h->parked_next = NULL;
        parked_abandon(h);
    }
}

/* A free into a segment of parked heap h: abandon h if it waited out the
 * delay (the free then adopts the segment, as for any abandoned one). */
bool hk__parked_expire_heap(hk_theap_t *h, uint64_t now)
{
    if (!parked_due(h, now, false)) return false;
    hk__lock(&g_parked_lock);
    bool mine = parked_unlink(h);
    hk__unlock(&g_parked_lock);
    if (mine) parked_abandon(h);
    return mine;
}

static void heap_thread_done(void *arg)
{
    hk_theap_t *heap = arg;
    if (!heap || heap == &hk__heap_empty) return;
    if (hk__tls_heap == heap) hk__tls_heap = &hk__heap_empty;
    if (!hk__heap_park(heap)) hk__heap_abandon(heap);
}

/* ------------------------------------------------------------ fork */

static void fork_prepare(void)
{
    hk__lock(&g_parked_lock);
    hk__lock(&g_heaps_lock);
    hk__lock(&g_abandoned_lock);
    hk__lock(&g_pool_lock);
    hk__segments_lock_all();
}

static void fork_parent(void)
{
    hk__segments_unlock_all(false);
    hk__unlock(&g_pool_lock);
    hk__unlock(&g_abandoned_lock);
    hk__unlock(&g_heaps_lock);
    hk__unlock(&g_parked_lock);
}

/* Only the forking thread lives on: the locks its siblings may have held
 * were taken by prepare, so resetting them is safe. */
static void fork_child(void)
{
    hk__xbig_fork_child(hk__tls_heap);
    hk__segments_unlock_all(true);
    g_pool_lock.v = 0;
    g_abandoned_lock.v = 0;
    g_heaps_lock.v = 0;
    g_parked_lock.v = 0;
}
