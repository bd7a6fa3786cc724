/* Private heaps: a handle around one engine instance (a classic engine, or
 * "general": a theap of the general allocator owned by the handle), an
 * optional lock and a size cap. Classic heaps sit in a range registry that
 * lets hk_free and hk_heap_of find the heap of any block; general heaps are
 * found through their segments' headers. Destroy releases the engine's
 * region (or the theap's segments) in one step, never visiting a block. */
#include "heap_impl.h"
#include "../classic/engine_impl.h"
#include "../core/core.h"
#include <errno.h>
#include <string.h>
#include <pthread.h>

#define HEAP_MAGIC_LIVE 0x48656170u   /* "Heap" */
#define HEAP_MAGIC_DEAD 0xdeadbeefu

struct hk_heap {
    uint32_t magic;
    unsigned flags;
    hk_engine_t *engine;
    hk_theap_t *gen;             /* "general": the theap this handle owns (engine is NULL) */
    const char *engine_name;     /* points into the engine registry (static) */
    size_t max_size;
    size_t initial_commit;
    pthread_mutex_t lock;
    hk_heap_t *next_free;        /* handle free list, while dead */
};

/* ---- handles: never unmapped, so a stale handle is always readable and a
 * second destroy or use after destroy sees the dead magic. Dead handles are
 * reused first-in first-out to keep a stale handle detectable as long as
 * possible. */
static pthread_mutex_t g_handles_lock = PTHREAD_MUTEX_INITIALIZER;
static hk_heap_t *g_free_head, *g_free_tail;

static hk_heap_t *handle_get(void)
{
    pthread_mutex_lock(&g_handles_lock);
    if (!g_free_head) {
        size_t ps = hk_vm_page_size(), n = ps / sizeof(hk_heap_t);
        void *mem;
        if (hk_vm_alloc(ps, 0, &mem) != 0) { pthread_mutex_unlock(&g_handles_lock); return NULL; }
        hk_heap_t *hs = mem;
        for (size_t i = 0; i < n; i++) {
            hs[i].magic = HEAP_MAGIC_DEAD;
            hs[i].next_free = i + 1 < n ? &hs[i + 1] : NULL;
        }
        g_free_head = hs;
        g_free_tail = &hs[n - 1];
    }
    hk_heap_t *h = g_free_head;
    g_free_head = h->next_free;
    if (!g_free_head) g_free_tail = NULL;
    pthread_mutex_unlock(&g_handles_lock);
    return h;
}

static void handle_put(hk_heap_t *h)
{
    pthread_mutex_lock(&g_handles_lock);
    h->magic = HEAP_MAGIC_DEAD;
    h->engine = NULL;
    h->next_free = NULL;
    if (g_free_tail) g_free_tail->next_free = h; else g_free_head = h;
    g_free_tail = h;
    pthread_mutex_unlock(&g_handles_lock);
}

/* ---- the range registry: sorted, non-overlapping [lo, hi) ranges. */
typedef struct range { uintptr_t lo, hi; hk_heap_t *heap; } range_t;
static pthread_rwlock_t g_reg_lock = PTHREAD_RWLOCK_INITIALIZER;
static range_t *g_ranges;
static size_t g_nranges, g_cap_bytes;
static size_t g_nranges_any;     /* atomic: lets free() of a foreign pointer skip the lock when empty */

static int registry_add(uintptr_t lo, uintptr_t hi, hk_heap_t *h)
{
    pthread_rwlock_wrlock(&g_reg_lock);
    if ((g_nranges + 1) * sizeof(range_t) > g_cap_bytes) {
        size_t ncap = g_cap_bytes ? 2 * g_cap_bytes : hk_vm_page_size();
        void *mem;
        int e = hk_vm_alloc(ncap, 0, &mem);
        if (e) { pthread_rwlock_unlock(&g_reg_lock); return e; }
        if (g_ranges) {
            memcpy(mem, g_ranges, g_nranges * sizeof(range_t));
            hk_vm_release(g_ranges, g_cap_bytes);
        }
        g_ranges = mem;
        g_cap_bytes = ncap;
    }
    size_t i = g_nranges;
    while (i > 0 && g_ranges[i - 1].lo > lo) { g_ranges[i] = g_ranges[i - 1]; i--; }
    g_ranges[i] = (range_t){ lo, hi, h };
    g_nranges++;
    __atomic_store_n(&g_nranges_any, g_nranges, __ATOMIC_RELEASE);
    pthread_rwlock_unlock(&g_reg_lock);
    return 0;
}

static void registry_remove(hk_heap_t *h)
{
    pthread_rwlock_wrlock(&g_reg_lock);
    size_t o = 0;
    for (size_t i = 0; i < g_nranges; i++)
        if (g_ranges[i].heap != h) g_ranges[o++] = g_ranges[i];
    g_nranges = o;
    __atomic_store_n(&g_nranges_any, g_nranges, __ATOMIC_RELEASE);
    pthread_rwlock_unlock(&g_reg_lock);
}

hk_heap_t *hk_heap_of(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    hk_heap_t *found = NULL;
    if (!p) return NULL;
    hk_theap_t *th = hk__theap_of(p);
    if (th) return th->owner;
    if (!__atomic_load_n(&g_nranges_any, __ATOMIC_ACQUIRE)) return NULL;
    pthread_rwlock_rdlock(&g_reg_lock);
    size_t lo = 0, hi = g_nranges;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (g_ranges[mid].hi <= a) lo = mid + 1;
        else if (g_ranges[mid].lo > a) hi = mid;
        else { found = g_ranges[mid].heap; break; }
    }
    pthread_rwlock_unlock(&g_reg_lock);
    return found;
}

/* ---- engine lifetime */
static const char g_general[] = "general";

static int engine_open(hk_heap_t *h)
{
    if (h->engine_name == g_general) {
        h->gen = hk__theap_private_new(h, h->max_size, (h->flags & HK_HEAP_HUGE_PAGES) != 0);
        if (!h->gen) return ENOMEM;
        int err = h->initial_commit ? hk__theap_commit(h->gen, h->initial_commit) : 0;
        if (err) { hk__theap_private_free(h->gen); h->gen = NULL; }
        return err;
    }
    hk_engine_config_t cfg = { .max_size = h->max_size, .flags = 0 };
    hk_engine_t *e = hk_engine_create(h->engine_name, &cfg);
    if (!e) return errno ? errno : ENOMEM;
    if (h->initial_commit) {
        size_t n = HK_MIN(h->initial_commit, e->heap.region.reserved);
        int err = hk_region_commit_to(&e->heap.region, n);
        if (!err && n) err = hk_vm_populate(e->heap.region.base, HK_MIN(hk__align_up(n, hk_vm_page_size()), e->heap.region.committed));
        if (err) { hk_engine_destroy(e); return err; }
    }
    uintptr_t lo = (uintptr_t)e->heap.region.base;
    if (h->flags & HK_HEAP_HUGE_PAGES) (void)hk_vm_advise_huge(e->heap.region.base, e->heap.region.reserved);
    int err = registry_add(lo, lo + e->heap.region.reserved, h);
    if (err) { hk_engine_destroy(e); return err; }
    h->engine = e;
    return 0;
}

static void engine_close(hk_heap_t *h)
{
    if (h->gen) {
        hk__theap_private_free(h->gen);
        h->gen = NULL;
        return;
    }
    registry_remove(h);
    hk_engine_destroy(h->engine);
    h->engine = NULL;
}

static const char *find_engine_name(const char *name)
{
    if (strcmp(name, g_general) == 0) return g_general;
    for (const char *const *n = hk_engine_names(); *n; n++)
        if (strcmp(*n, name) == 0) return *n;
    return NULL;
}

hk_heap_t *hk_heap_new(const hk_heap_options_t *opts)
{
    hk_heap_options_t o = HK_HEAP_OPTIONS_INIT;
    if (opts) {
        if (opts->size != sizeof(hk_heap_options_t)) { errno = EINVAL; return NULL; }
        o = *opts;
    }
    const char *name = o.engine ? o.engine : HK_HEAP_DEFAULT_ENGINE;
    const char *ename = find_engine_name(name);
    if (!ename) { errno = EINVAL; return NULL; }
    if (o.initial_commit && o.max_size && o.initial_commit > o.max_size) { errno = EINVAL; return NULL; }
    if (o.flags & ~(HK_HEAP_SINGLE_THREADED | HK_HEAP_HUGE_PAGES)) { errno = EINVAL; return NULL; }
    hk_heap_t *h = handle_get();
    if (!h) { errno = ENOMEM; return NULL; }
    h->flags = o.flags;
    h->engine_name = ename;
    h->engine = NULL;
    h->gen = NULL;
    h->max_size = o.max_size;
    h->initial_commit = o.initial_commit;
    pthread_mutex_init(&h->lock, NULL);
    int err = engine_open(h);
    if (err) { pthread_mutex_destroy(&h->lock); handle_put(h); errno = err; return NULL; }
    __atomic_store_n(&h->magic, HEAP_MAGIC_LIVE, __ATOMIC_RELEASE);
    return h;
}

HK_COLD static void heap_misuse(const hk_heap_t *h, const char *op)
{
    hk__fatal("heapkit: %s on heap %p that was destroyed or never created\n", op, (const void *)h);
}

/* A dead handle is a programming error that cannot be recovered from
 * safely (the caller would write into freed memory): report and abort. */
HK_INLINE void heap_enter(hk_heap_t *h, const char *op)
{
    if (hk_unlikely(!h || __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != HEAP_MAGIC_LIVE)) heap_misuse(h, op);
    if (!(h->flags & HK_HEAP_SINGLE_THREADED)) pthread_mutex_lock(&h->lock);
}

HK_INLINE void heap_leave(hk_heap_t *h)
{
    if (!(h->flags & HK_HEAP_SINGLE_THREADED)) pthread_mutex_unlock(&h->lock);
}

void hk_heap_destroy(hk_heap_t *h)
{
    heap_enter(h, "hk_heap_destroy");
    h->magic = HEAP_MAGIC_DEAD;
    engine_close(h);
    heap_leave(h);
    pthread_mutex_destroy(&h->lock);
    handle_put(h);
}

int hk_heap_reset(hk_heap_t *h)
{
    heap_enter(h, "hk_heap_reset");
    if (h->gen) {
        hk__theap_reset(h->gen);
        heap_leave(h);
        return 0;
    }
    engine_close(h);
    int err = engine_open(h);
    heap_leave(h);
    if (err) {
        /* Without an engine the heap cannot serve requests; keep it alive
         * (destroy still works) and say why. */
        errno = err;
        return -1;
    }
    return 0;
}

/* realloc within a general heap: a block that must move stays in it. */
static void *gen_realloc(hk_theap_t *gen, void *p, size_t size)
{
    if (!p) return hk__theap_malloc(gen, size);
    if (hk__theap_of(p) != gen) { errno = EINVAL; return NULL; }
    return hk__realloc_in(gen, p, size);
}

/* Every entry point: check the handle, take the lock, and bail out with
 * ENOMEM when a failed reset left the heap without an engine. */
void *hk_heap_malloc(hk_heap_t *h, size_t size)
{
    heap_enter(h, "hk_heap_malloc");
    void *p = h->gen ? hk__theap_malloc(h->gen, size) : h->engine ? hk_engine_malloc(h->engine, size) : NULL;
    heap_leave(h);
    if (!p) errno = ENOMEM;
    return p;
}

void *hk_heap_calloc(hk_heap_t *h, size_t n, size_t size)
{
    heap_enter(h, "hk_heap_calloc");
    void *p = NULL;
    if (h->gen) {
        size_t total;
        if (!__builtin_mul_overflow(n, size, &total) && (p = hk__theap_malloc(h->gen, total)) != NULL) memset(p, 0, total);
    } else if (h->engine) {
        p = hk_engine_calloc(h->engine, n, size);
    }
    heap_leave(h);
    if (!p) errno = ENOMEM;
    return p;
}

void *hk_heap_realloc(hk_heap_t *h, void *p, size_t size)
{
    heap_enter(h, "hk_heap_realloc");
    void *q = h->gen ? gen_realloc(h->gen, p, size) : h->engine ? hk_engine_realloc(h->engine, p, size) : NULL;
    if (!h->engine && !h->gen) errno = ENOMEM;
    heap_leave(h);
    return q;
}

void *hk_heap_memalign(hk_heap_t *h, size_t align, size_t size)
{
    heap_enter(h, "hk_heap_memalign");
    void *p = NULL;
    if (h->gen) {
        if (hk__is_pow2(align)) p = hk__theap_malloc_aligned(h->gen, align, size);
        else errno = EINVAL;
    } else if (h->engine) {
        p = hk_engine_memalign(h->engine, align, size);
    } else {
        errno = ENOMEM;
    }
    heap_leave(h);
    return p;
}

int hk_heap_free(hk_heap_t *h, void *p)
{
    if (!p) return HK_OK;
    if (h && __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) == HEAP_MAGIC_LIVE && h->gen) {
        /* No lock: a general heap's segments have no owner thread, so the
         * free takes the atomic thread_free path whoever calls it. */
        if (hk__theap_of(p) != h->gen) return HK_EINVALID;
        /* Not a block (inside one, past a page's last): the caller hears
         * so, as from the classic engines (hk__free would only warn). */
        bool freed;
        if (hk__usable_size_ex(p, &freed) == 0 && !freed) { hk__invalid_free(p, "not a block of this heap"); return HK_EINVALID; }
        hk__free(p);   /* a block already freed: reported there as a double free */
        return HK_OK;
    }
    heap_enter(h, "hk_heap_free");
    int r = h->engine ? hk_engine_free(h->engine, p) : HK_EINVALID;
    heap_leave(h);
    return r;
}

size_t hk_heap_usable_size(hk_heap_t *h, const void *p)
{
    heap_enter(h, "hk_heap_usable_size");
    size_t n = h->gen ? (hk__theap_of(p) == h->gen ? hk__usable_size(p) : 0)
             : h->engine ? hk_engine_usable_size(h->engine, p) : 0;
    heap_leave(h);
    return n;
}

void hk_heap_stats(hk_heap_t *h, hk_heap_stats_t *out)
{
    memset(out, 0, sizeof *out);
    out->version = 1;
    out->size = sizeof *out;
    heap_enter(h, "hk_heap_stats");
    if (h->gen) {
        hk__theap_collect(h->gen, &out->live_blocks, &out->live_bytes);
        out->footprint = __atomic_load_n(&h->gen->reserved, __ATOMIC_RELAXED);
        out->peak_footprint = __atomic_load_n(&h->gen->reserved_peak, __ATOMIC_RELAXED);
        out->max_size = h->max_size;
    } else if (h->engine) {
        hk_engine_stats_t s;
        hk_engine_stats(h->engine, &s);
        out->live_bytes = s.live_bytes;
        out->live_blocks = s.live_blocks;
        out->footprint = s.footprint;
        out->peak_footprint = s.peak_footprint;
        out->max_size = h->engine->cfg.max_size;
    }
    heap_leave(h);
}

/* The general allocator's cold paths for pointers outside its segments:
 * only classic heaps' blocks live there. */
static hk_heap_t *classic_heap_of(const void *p)
{
    if (!__atomic_load_n(&g_nranges_any, __ATOMIC_ACQUIRE)) return NULL;
    return hk_heap_of(p);
}

void *hk__heap_realloc_foreign(void *p, size_t size)
{
    hk_heap_t *h = classic_heap_of(p);
    if (!h && size == 0) { hk__invalid_free(p, "not allocated by heapkit"); return NULL; }   /* as free(p) */
    if (!h) {
        hk__invalid_free(p, "realloc of a pointer heapkit does not own");
        errno = ENOMEM;
        return NULL;
    }
    if (size == 0) { hk_heap_free(h, p); return NULL; }
    return hk_heap_realloc(h, p, size);
}

size_t hk__heap_usable_foreign(const void *p)
{
    hk_heap_t *h = classic_heap_of(p);
    return h ? hk_heap_usable_size(h, p) : 0;
}

bool hk__heap_free_foreign(void *p)
{
    hk_heap_t *h = classic_heap_of(p);
    if (!h) return false;
    hk_heap_free(h, p);
    return true;
}
