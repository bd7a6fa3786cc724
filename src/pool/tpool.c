/* Per-thread pools: a thread-safe fixed-size pool is the shared depot; each
 * thread keeps a stack of up to 128 free objects in its hk__tls_slots entry,
 * refilled and drained 64 at a time under the depot's lock. An object freed
 * by another thread simply joins that thread's stack. In release mode the
 * pop and push are inline (heapkit/pool.h); checked tpools come here for
 * every call and keep a "held by a user" bit per object. */
#include "pool_internal.h"
#include <string.h>

#define TC_BATCH (HK__TPOOL_CAP / 2)

typedef hk__objstack_t tcache_t;     /* with HK__TPOOL_CAP objects */
#define TC_SIZE (sizeof(tcache_t) + HK__TPOOL_CAP * sizeof(void *))

struct hk_tpool {
    hk__handle_t h;
    hk_pool_t *depot;
    hk_pool_t *caches;               /* where the tcache_t structs come from */
    uint64_t *live;                  /* checked mode: one bit per object held by a user */
    size_t live_bytes;
    size_t ncaches;                  /* atomics: touched only on slow paths */
    uint64_t refills, flushes;
    /* Flushed halves of caches, kept as arrays (nodes from `caches`) rather
     * than pushed object by object onto the depot's free list: a flush or
     * a refill then copies 64 pointers and touches no object, where the
     * list would write (flush) or chase (refill) a link in each one. */
    hk__spin_t block;
    tcache_t *batches;               /* chained through link; n = TC_BATCH each */
    size_t nbatched;                 /* objects in them (counted as free in stats) */
};
_Static_assert(sizeof(struct hk_tpool) <= HK__HANDLE_SLOT, "tpool descriptor fits a slot");

hk_tpool_t *hk_tpool_create(size_t obj_size, size_t align, const hk_pool_options_t *opt)
{
    hk_pool_options_t o = {0};
    if (opt) o = *opt;
    o.flags |= HK_POOL_THREAD_SAFE;
    if (!o.name) o.name = "tpool";
    hk_tpool_t *tp = hk__handle_new(HK__MAGIC_TPOOL, o.flags, o.name);
    if (!tp) return NULL;
    hk_pool_options_t co = { .max_bytes = (size_t)64 << 20, .flags = HK_POOL_THREAD_SAFE, .name = "tpool-caches" };
    tp->depot = hk_pool_create(obj_size, align, &o);
    tp->caches = tp->depot ? hk_pool_create(TC_SIZE, 64, &co) : NULL;
    int e = tp->caches ? 0 : errno;
    if (!e && hk__checked(&tp->h)) {
        size_t n = hk__pool_reserved_objs(tp->depot);
        tp->live_bytes = hk__align_up((n + 63) / 64 * 8, hk_vm_page_size());
        void *m;
        e = hk_vm_alloc(tp->live_bytes, 0, &m);
        tp->live = m;
    }
    if (e) {
        if (tp->caches) hk_pool_destroy(tp->caches);
        if (tp->depot) hk_pool_destroy(tp->depot);
        hk__handle_discard(tp);
        errno = e;
        return NULL;
    }
    hk__tls_index_new(&tp->h);
    if (!hk__checked(&tp->h) && tp->h.tidx) {     /* arm the inline paths */
        tp->h.hot.tbase = hk__pool_base(tp->depot);
        tp->h.hot.tlimit = hk__pool_reserved_objs(tp->depot) * hk__pool_stride(tp->depot);
        tp->h.hot.tpool_key = tp->h.tkey;
    }
    return tp;
}

static HK_COLD int tp_misuse(hk_tpool_t *tp, const void *obj, const char *what)
{
    if (hk__checked(&tp->h)) hk__fatal("heapkit: hk_tpool_free: tpool '%s': %p %s\n", tp->h.name, obj, what);
    return EINVAL;
}

/* Checked mode: flip the object's "held by a user" bit atomically; the old
 * value tells a double free from a fresh one, across threads. */
static int live_flip(hk_tpool_t *tp, void *obj, bool to_user)
{
    size_t idx = (size_t)((char *)obj - hk__pool_base(tp->depot)) / hk__pool_stride(tp->depot);
    uint64_t bit = (uint64_t)1 << (idx & 63);
    if (to_user) {
        uint64_t old = __atomic_fetch_or(&tp->live[idx >> 6], bit, __ATOMIC_RELAXED);
        hk_assert(!(old & bit));
        (void)old;
        return 0;
    }
    uint64_t old = __atomic_fetch_and(&tp->live[idx >> 6], ~bit, __ATOMIC_RELAXED);
    return (old & bit) ? 0 : tp_misuse(tp, obj, "double free");
}

static tcache_t *batch_take(hk_tpool_t *tp)
{
    if (!__atomic_load_n(&tp->batches, __ATOMIC_RELAXED)) return NULL;
    hk__spin_lock(&tp->block);
    tcache_t *b = tp->batches;
    if (b) {
        __atomic_store_n(&tp->batches, (tcache_t *)b->link, __ATOMIC_RELAXED);
        tp->nbatched -= TC_BATCH;
    }
    hk__spin_unlock(&tp->block);
    return b;
}

/* This thread's slot, with its cache made on first use; NULL when no slot
 * or no memory. While registered, slot->top is the cache (its count kept
 * in the slot's cursor: hk__slot_unload before reading it). */
static hk__tls_slot_t *cache_of(hk_tpool_t *tp)
{
    hk__tls_slot_t *s = hk__tls_mine(&tp->h);
    if (s || !tp->h.tidx) return s;
    tcache_t *c = hk_pool_alloc(tp->caches);
    if (!c) return NULL;
    c->n = 0;
    if (hk__tls_register(&tp->h, c, HK__TPOOL_CAP, NULL) != 0) { hk_pool_free(tp->caches, c); return NULL; }
    __atomic_fetch_add(&tp->ncaches, 1, __ATOMIC_RELAXED);
    return hk__tls_mine(&tp->h);
}

void *hk__tpool_alloc_slow(hk_tpool_t *tp)
{
    if (hk_unlikely(hk__handle_check(tp, HK__MAGIC_TPOOL, "hk_tpool_alloc", "tpool") != 0)) { errno = EINVAL; return NULL; }
    hk__tls_slot_t *s = cache_of(tp);
    void *o;
    if (!s) {                          /* no TLS slot: straight from the depot */
        tcache_t *b = batch_take(tp);  /* parked arrays first, as a cache would (the cap) */
        if (b) {
            hk__pool_free_batch(tp->depot, b->obj, b->n);
            hk_pool_free(tp->caches, b);
        }
        if (hk__pool_alloc_batch(tp->depot, &o, 1) != 1) { errno = ENOMEM; return NULL; }
    } else {
        hk__slot_unload(s);
        tcache_t *c = s->top;
        if (!c->n) {
            tcache_t *b = batch_take(tp);
            if (b) {
                memcpy(c->obj, b->obj, TC_BATCH * sizeof(void *));
                c->n = TC_BATCH;
                hk_pool_free(tp->caches, b);
            } else {
                c->n = hk__pool_alloc_batch(tp->depot, c->obj, TC_BATCH);
            }
            __atomic_fetch_add(&tp->refills, 1, __ATOMIC_RELAXED);
            if (!c->n) { errno = ENOMEM; return NULL; }
        }
        o = c->obj[--c->n];
        hk__slot_load(s, c, HK__TPOOL_CAP);
    }
    if (hk_unlikely(tp->live != NULL)) live_flip(tp, o, true);
    return o;
}

int hk__tpool_free_slow(hk_tpool_t *tp, void *obj)
{
    if (hk_unlikely(hk__handle_check(tp, HK__MAGIC_TPOOL, "hk_tpool_free", "tpool") != 0)) return EINVAL;
    if (!obj) return 0;
    int where = hk__pool_locate(tp->depot, obj);
    if (hk_unlikely(where)) return tp_misuse(tp, obj, where == 1 ? "is not from this pool" : "is not on an object boundary");
    if (hk_unlikely(tp->live != NULL) && live_flip(tp, obj, false)) return EINVAL;
    hk__tls_slot_t *s = cache_of(tp);
    if (!s) { hk__pool_free_batch(tp->depot, &obj, 1); return 0; }
    hk__slot_unload(s);
    tcache_t *c = s->top;
    if (c->n == HK__TPOOL_CAP) {
        c->n -= TC_BATCH;
        tcache_t *b = hk_pool_alloc(tp->caches);
        if (b) {
            memcpy(b->obj, c->obj + c->n, TC_BATCH * sizeof(void *));
            b->n = TC_BATCH;
            hk__spin_lock(&tp->block);
            b->link = tp->batches;
            __atomic_store_n(&tp->batches, b, __ATOMIC_RELAXED);   /* batch_take peeks without the lock */
            tp->nbatched += TC_BATCH;
            hk__spin_unlock(&tp->block);
        } else {                       /* no node memory: the objects go onto the depot's list */
            hk__pool_free_batch(tp->depot, c->obj + c->n, TC_BATCH);
        }
        __atomic_fetch_add(&tp->flushes, 1, __ATOMIC_RELAXED);
    }
    c->obj[c->n++] = obj;
    hk__slot_load(s, c, HK__TPOOL_CAP);
    return 0;
}

static void cache_drain(hk_tpool_t *tp, hk__tls_slot_t *s)
{
    hk__slot_unload(s);
    hk__pool_free_batch(tp->depot, s->top->obj, s->top->n);
    s->top->n = 0;
    s->cur = s->lo;
    hk_pool_free(tp->caches, s->top);
    __atomic_fetch_sub(&tp->ncaches, 1, __ATOMIC_RELAXED);
}

void hk__tpool_thread_exit(hk__handle_t *owner, hk__tls_slot_t *slot)
{
    cache_drain((hk_tpool_t *)owner, slot);
}

int hk_tpool_flush(hk_tpool_t *tp)
{
    if (hk__handle_check(tp, HK__MAGIC_TPOOL, "hk_tpool_flush", "tpool") != 0) return EINVAL;
    hk__tls_slot_t *s = hk__tls_mine(&tp->h);
    if (s) {
        cache_drain(tp, s);
        hk__tls_unregister(&tp->h);
    }
    return 0;
}

int hk_tpool_destroy(hk_tpool_t *tp)
{
    if (hk__handle_check(tp, HK__MAGIC_TPOOL, "hk_tpool_destroy", "tpool") != 0) return EINVAL;
    hk__spin_lock(&hk__handle_lock);
    if (hk__handle_magic(tp) != HK__MAGIC_TPOOL) { hk__spin_unlock(&hk__handle_lock); return EINVAL; }
    hk__tls_unregister(&tp->h);        /* before kill frees the index */
    hk__handle_kill(tp);               /* from here no thread-exit flush will touch it */
    hk__spin_unlock(&hk__handle_lock);
    int e = hk_pool_destroy(tp->depot);
    int e2 = hk_pool_destroy(tp->caches);
    if (tp->live) hk_vm_release(tp->live, tp->live_bytes);
    return e ? e : e2;
}

int hk_tpool_stats(hk_tpool_t *tp, hk_tpool_stats_t *out)
{
    if (hk__handle_check(tp, HK__MAGIC_TPOOL, "hk_tpool_stats", "tpool") != 0 || !out) return EINVAL;
    memset(out, 0, sizeof *out);
    hk_pool_stats(tp->depot, &out->depot);
    hk__spin_lock(&tp->block);
    size_t nb = tp->nbatched;
    hk__spin_unlock(&tp->block);
    /* Objects parked in batches are free, though the depot lent them out. */
    out->depot.in_use -= HK_MIN(nb, out->depot.in_use);
    out->depot.frees += nb;
    out->caches = __atomic_load_n(&tp->ncaches, __ATOMIC_RELAXED);
    out->refills = __atomic_load_n(&tp->refills, __ATOMIC_RELAXED);
    out->flushes = __atomic_load_n(&tp->flushes, __ATOMIC_RELAXED);
    return 0;
}
