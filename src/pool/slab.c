/* Slab object caches after Bonwick: objects are constructed once, when their
 * slab is created, and stay constructed while cached; the dtor runs when an
 * empty slab is reaped. A slab is a block aligned to its size, registered in
 * a global slab map so any address can be tested without touching unmapped
 * memory. In front sit per-thread magazines (two stacks of 32 objects),
 * exchanged whole with the cache's depot of full and empty magazines. The
 * loaded magazine sits in the thread's hk__tls_slots entry, where the inline
 * hk_slab_alloc/free (heapkit/pool.h) pop and push it in release mode. One
 * thread, the home thread (the first to use the cache), has a third stack
 * on top of its magazines: an array in the handle, which its inline paths
 * reach without a thread-local load and with a depth the compiler may keep
 * in a register; it is refilled from and spilled to its magazines. */
#include "pool_internal.h"
#include <string.h>

#define SLAB_MIN   ((size_t)64 << 10)
#define SLAB_MAX   ((size_t)16 << 20)
#define GRAIN_SHIFT 16                /* slab map granule: 64 KiB */
#define MAG_ROUNDS HK__MAG_ROUNDS

/* ---- the slab map: 64 KiB granule -> slab header, two levels ---- */
#define MAP_TOP_BITS  15
#define MAP_LEAF_BITS 16              /* 15 + 16 + 16 = 47-bit addresses */
static void **map_top[1u << MAP_TOP_BITS];
static hk__spin_t map_lock;

HK_INLINE void *map_get(const void *p)
{
    uintptr_t g = (uintptr_t)p >> GRAIN_SHIFT;
    if (g >> (MAP_TOP_BITS + MAP_LEAF_BITS)) return NULL;
    void **leaf = __atomic_load_n(&map_top[g >> MAP_LEAF_BITS], __ATOMIC_ACQUIRE);
    if (!leaf) return NULL;
    return __atomic_load_n(&leaf[g & ((1u << MAP_LEAF_BITS) - 1)], __ATOMIC_ACQUIRE);
}

static int map_set(void *base, size_t size, void *val)
{
    for (uintptr_t a = (uintptr_t)base; a < (uintptr_t)base + size; a += (uintptr_t)1 << GRAIN_SHIFT) {
        uintptr_t g = a >> GRAIN_SHIFT;
        if (g >> (MAP_TOP_BITS + MAP_LEAF_BITS)) return EINVAL;
        void **leaf = __atomic_load_n(&map_top[g >> MAP_LEAF_BITS], __ATOMIC_ACQUIRE);
        if (!leaf) {
            hk__spin_lock(&map_lock);
            leaf = map_top[g >> MAP_LEAF_BITS];
            if (!leaf) {
                void *m;
                int e = hk_vm_alloc(sizeof(void *) << MAP_LEAF_BITS, 0, &m);
                if (e) { hk__spin_unlock(&map_lock); return e; }
                leaf = m;
                __atomic_store_n(&map_top[g >> MAP_LEAF_BITS], leaf, __ATOMIC_RELEASE);
            }
            hk__spin_unlock(&map_lock);
        }
        __atomic_store_n(&leaf[g & ((1u << MAP_LEAF_BITS) - 1)], val, __ATOMIC_RELEASE);
    }
    return 0;
}

/* ---- slabs ---- */
enum { L_PARTIAL, L_FULL, L_EMPTY, L_COUNT };

typedef struct slab {
    hk_slab_cache_t *cache;
    struct slab *prev, *next;
    int list;
    uint32_t nobj, nfree;
    char *objs;
    uint64_t *held;                  /* checked mode: bit set while a user holds the object */
    uint32_t *stack;                 /* indexes of free objects; the objects are left untouched */
} slab_t;

/* s.link chains magazines in the depot. */
typedef hk__objstack_t mag_t;        /* with MAG_ROUNDS objects */
#define MAG_SIZE (sizeof(mag_t) + MAG_ROUNDS * sizeof(void *))
#define MNEXT(m) (*(mag_t **)&(m)->link)

/* The loaded magazine is slot->top; counts are slot->allocs / frees. */
typedef struct tcache {
    mag_t *prev;
    hk__tls_slot_t *slot;            /* this thread's slot (valid while linked) */
    struct tcache *tnext, *tprev;    /* the cache's list of live tcaches */
} tcache_t;

#define HOME_HALF (HK__SLAB_HOME / 2)

struct hk_slab_cache {
  union {
   struct {
    hk__handle_t h;
    hk__spin_t lock;                 /* slab lists, depot, tcache list, counters */
    size_t stride, slab_size, nobj, objs_off;
    uint64_t div_magic;
    hk_slab_fn ctor, dtor;
    void *arg;
    slab_t *lists[L_COUNT];
    size_t counts[L_COUNT];
    mag_t *full, *empty;             /* the depot */
    size_t nfull;
    size_t out;                      /* objects outside slabs (users + magazines) */
    tcache_t *tcs;
    hk_pool_t *mags, *tcpool;
    uint64_t allocs, frees;          /* totals of retired tcaches and direct paths */
    uint64_t constructed, destructed, created, reaped;
   };
   char head_[HK__SLAB_HOME_AT];
  };
  /* The home thread's cache: hm.n objects, hm.obj[n - 1] on top. Only the
   * home thread writes it; n and moved_in change together only under the
   * cache lock (refill, spill, drain), so the stats, which hold the lock,
   * derive the home thread's frees from a consistent pair. */
  hk__slab_home_t hm;
};
_Static_assert(offsetof(struct hk_slab_cache, hm) == HK__SLAB_HOME_AT, "the inline paths find the home block here");
_Static_assert(HK__SLAB_HOME_AT % 64 == 0 && offsetof(hk__slab_home_t, obj) == 64, "the counts have a line of their own");
_Static_assert(sizeof(struct hk_slab_cache) <= HK__HANDLE_SLOT, "slab descriptor fits a slot");
_Static_assert(HK__SLAB_HOME % 2 == 0 && HOME_HALF <= MAG_ROUNDS, "the home cache moves halves");

__extension__ typedef unsigned __int128 u128;

hk_slab_cache_t *hk_slab_cache_create_ex(const char *name, size_t size, size_t align,
                                         hk_slab_fn ctor, hk_slab_fn dtor, void *arg, unsigned flags)
{
    if (align == 0) align = (size & 15) == 0 ? 16 : 8;
    if (size == 0 || size > SLAB_MAX / 8 || !hk__is_pow2(align) || align > 4096) { errno = EINVAL; return NULL; }
    size_t stride = hk__align_up(size, HK_MAX(align, (size_t)8));
    size_t slab = SLAB_MIN;
    while (slab < stride * 8) slab *= 2;
    /* Header, held bitmap and index stack before the objects; shrink n until it all fits. */
    size_t n = slab / stride, off = 0;
    for (; n > 0; n--) {
        off = hk__align_up(sizeof(slab_t) + (n + 63) / 64 * 8 + n * 4, align);
        if (off + n * stride <= slab) break;
    }
    hk_slab_cache_t *c = hk__handle_new(HK__MAGIC_SLAB, flags, name ? name : "slab");
    if (!c) return NULL;
    hk_pool_options_t mo = { .max_bytes = (size_t)256 << 20, .flags = HK_POOL_THREAD_SAFE, .name = "slab-mags" };
    hk_pool_options_t to = { .max_bytes = (size_t)16 << 20, .flags = HK_POOL_THREAD_SAFE, .name = "slab-tcaches" };
    c->mags = hk_pool_create(MAG_SIZE, 64, &mo);
    c->tcpool = c->mags ? hk_pool_create(sizeof(tcache_t), 64, &to) : NULL;
    if (!c->tcpool) {
        int e = errno;
        if (c->mags) hk_pool_destroy(c->mags);
        hk__handle_discard(c);
        errno = e;
        return NULL;
    }
    c->stride = stride;
    c->div_magic = UINT64_MAX / stride + 1;
    c->slab_size = slab;
    c->nobj = n;
    c->objs_off = off;
    c->ctor = ctor;
    c->dtor = dtor;
    c->arg = arg;
    hk__tls_index_new(&c->h);
    if (!hk__checked(&c->h) && c->h.tidx) {      /* arm the inline paths */
        c->h.hot.slab_key = c->h.tkey;
    }
    return c;
}

/* ---- the slab layer; everything below holds c->lock ---- */
static void list_remove(hk_slab_cache_t *c, slab_t *s)
{
    if (s->prev) s->prev->next = s->next; else c->lists[s->list] = s->next;
    if (s->next) s->next->prev = s->prev;
    c->counts[s->list]--;
}

static void list_push(hk_slab_cache_t *c, slab_t *s, int l)
{
    s->list = l;
    s->prev = NULL;
    s->next = c->lists[l];
    if (s->next) s->next->prev = s;
    c->lists[l] = s;
    c->counts[l]++;
}

static slab_t *slab_new(hk_slab_cache_t *c)
{
    void *m;
    int e = hk_vm_alloc(c->slab_size, c->slab_size, &m);
    if (e) { errno = e; return NULL; }
    slab_t *s = m;
    s->cache = c;
    s->nobj = s->nfree = (uint32_t)c->nobj;
    s->held = (uint64_t *)(s + 1);
    s->stack = (uint32_t *)(s->held + (c->nobj + 63) / 64);
    s->objs = (char *)m + c->objs_off;
    for (uint32_t i = 0; i < s->nobj; i++) {
        s->stack[i] = s->nobj - 1 - i;     /* lowest address handed out first */
        if (c->ctor) c->ctor(s->objs + (size_t)i * c->stride, c->arg);
    }
    if (map_set(m, c->slab_size, s) != 0) {
        for (uint32_t i = 0; c->dtor && i < s->nobj; i++) c->dtor(s->objs + (size_t)i * c->stride, c->arg);
        hk_vm_release(m, c->slab_size);
        errno = ENOMEM;
        return NULL;
    }
    c->constructed += s->nobj;
    c->created++;
    if (c->h.hot.slab_key) {
        /* Widen the span the inline free accepts. A racing reader that mixes
         * old and new values sees a range inside the new span, or fails and
         * goes out of line, where the slab map decides. */
        uintptr_t lo = (uintptr_t)c->h.hot.tbase, hi = lo + c->h.hot.tlimit;
        uintptr_t a = (uintptr_t)m, b = a + c->slab_size;
        if (!c->h.hot.tlimit) { lo = a; hi = b; }
        if (a < lo) lo = a;
        if (b > hi) hi = b;
        __atomic_store_n(&c->h.hot.tbase, (char *)lo, __ATOMIC_RELAXED);
        __atomic_store_n(&c->h.hot.tlimit, hi - lo, __ATOMIC_RELAXED);
    }
    list_push(c, s, L_EMPTY);
    return s;
}

static void slab_release(hk_slab_cache_t *c, slab_t *s)
{
    map_set(s, c->slab_size, NULL);
    for (uint32_t i = 0; c->dtor && i < s->nobj; i++) c->dtor(s->objs + (size_t)i * c->stride, c->arg);
    c->destructed += s->nobj;
    hk_vm_release(s, c->slab_size);
}

static void *slab_take(hk_slab_cache_t *c)
{
    slab_t *s = c->lists[L_PARTIAL];
    if (!s) s = c->lists[L_EMPTY];
    if (!s && !(s = slab_new(c))) return NULL;
    list_remove(c, s);
    void *o = s->objs + (size_t)s->stack[--s->nfree] * c->stride;
    list_push(c, s, s->nfree ? L_PARTIAL : L_FULL);
    c->out++;
    return o;
}

static void slab_give(hk_slab_cache_t *c, void *o)
{
    slab_t *s = map_get(o);
    list_remove(c, s);
    s->stack[s->nfree++] = (uint32_t)((size_t)((char *)o - s->objs) / c->stride);
    list_push(c, s, s->nfree == s->nobj ? L_EMPTY : L_PARTIAL);
    c->out--;
}

/* ---- checks ---- */
static HK_COLD int slab_misuse(hk_slab_cache_t *c, const void *obj, const char *what)
{
    if (hk__checked(&c->h)) hk__fatal("heapkit: hk_slab_free: cache '%s': %p %s\n", c->h.name, obj, what);
    return EINVAL;
}

HK_INLINE slab_t *slab_of(hk_slab_cache_t *c, const void *obj, size_t *idx)
{
    slab_t *s = map_get(obj);
    if (hk_unlikely(!s || s->cache != c)) return NULL;
    size_t off = (size_t)((const char *)obj - s->objs);
    *idx = (size_t)(((u128)off * c->div_magic) >> 64);
    if ((uintptr_t)obj < (uintptr_t)s->objs || *idx >= s->nobj || *idx * c->stride != off) *idx = SIZE_MAX;
    return s;
}

/* Checked mode: flip the held bit; the old value exposes a double free. */
static int held_flip(hk_slab_cache_t *c, void *obj, bool to_user)
{
    size_t idx = 0;
    slab_t *s = slab_of(c, obj, &idx);
    uint64_t bit = (uint64_t)1 << (idx & 63);
    if (to_user) { __atomic_fetch_or(&s->held[idx >> 6], bit, __ATOMIC_RELAXED); return 0; }
    uint64_t old = __atomic_fetch_and(&s->held[idx >> 6], ~bit, __ATOMIC_RELAXED);
    return (old & bit) ? 0 : slab_misuse(c, obj, "double free");
}

/* ---- magazines ---- */
static mag_t *mag_new(hk_slab_cache_t *c)
{
    mag_t *m = hk_pool_alloc(c->mags);
    if (m) { m->n = 0; m->link = NULL; }
    return m;
}

/* This thread's tcache, made on first use; NULL when no slot or memory. */
static tcache_t *tcache_of(hk_slab_cache_t *c)
{
    hk__tls_slot_t *sl = hk__tls_mine(&c->h);
    if (sl) return sl->ext;
    if (!c->h.tidx) return NULL;
    tcache_t *t = hk_pool_alloc(c->tcpool);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    mag_t *loaded = mag_new(c);
    t->prev = mag_new(c);
    if (!loaded || !t->prev || hk__tls_register(&c->h, loaded, MAG_ROUNDS, t) != 0) {
        hk_pool_free(c->mags, loaded);
        hk_pool_free(c->mags, t->prev);
        hk_pool_free(c->tcpool, t);
        return NULL;
    }
    t->slot = hk__tls_mine(&c->h);
    hk__spin_lock(&c->lock);
    t->tnext = c->tcs;
    if (c->tcs) c->tcs->tprev = t;
    c->tcs = t;
    hk__spin_unlock(&c->lock);
    return t;
}

HK_INLINE mag_t *loaded_of(tcache_t *t) { return t->slot->top; }

static void tcache_drain(hk_slab_cache_t *c, tcache_t *t)
{
    hk__slot_unload(t->slot);
    hk__spin_lock(&c->lock);
    mag_t *ms[2] = { loaded_of(t), t->prev };
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < ms[k]->n; i++) slab_give(c, ms[k]->obj[i]);
        ms[k]->n = 0;
        MNEXT(ms[k]) = c->empty;
        c->empty = ms[k];
    }
    if (t->tprev) t->tprev->tnext = t->tnext; else c->tcs = t->tnext;
    if (t->tnext) t->tnext->tprev = t->tprev;
    c->allocs += t->slot->allocs;
    c->frees += t->slot->frees;
    hk__spin_unlock(&c->lock);
    hk_pool_free(c->tcpool, t);
}

HK_INLINE bool is_home(hk_slab_cache_t *c)
{
    return __atomic_load_n(&c->h.hot.shome, __ATOMIC_RELAXED) == hk__thread_pointer();
}

/* The home thread's copy of the span its inline free accepts (home thread only). */
HK_INLINE void home_sync_span(hk_slab_cache_t *c)
{
    c->hm.lo = __atomic_load_n(&c->h.hot.tbase, __ATOMIC_RELAXED);
    c->hm.span = __atomic_load_n(&c->h.hot.tlimit, __ATOMIC_RELAXED);
}

/* Objects come into the home cache from its magazines (moved_in) and from
 * frees, and leave to allocs and back to the magazines. Caller holds c->lock
 * (or is the home thread). */
HK_INLINE uint64_t home_frees(hk_slab_cache_t *c)
{
    return __atomic_load_n(&c->hm.allocs, __ATOMIC_RELAXED) + __atomic_load_n(&c->hm.n, __ATOMIC_RELAXED) -
           c->hm.moved_in;
}

/* Give this thread's home role up: its objects go back to their slabs. */
static void home_drain(hk_slab_cache_t *c)
{
    hk__spin_lock(&c->lock);
    for (uint32_t i = 0; i < c->hm.n; i++) slab_give(c, c->hm.obj[i]);
    c->allocs += c->hm.allocs;
    c->frees += home_frees(c);
    __atomic_store_n(&c->hm.n, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&c->hm.allocs, 0, __ATOMIC_RELAXED);
    c->hm.moved_in = 0;
    /* Release: the next home thread claims with acquire, so it sees sn = 0. */
    __atomic_store_n(&c->h.hot.shome, 0, __ATOMIC_RELEASE);
    hk__spin_unlock(&c->lock);
}

void hk__slab_thread_exit(hk__handle_t *owner, hk__tls_slot_t *slot)
{
    hk_slab_cache_t *c = (hk_slab_cache_t *)owner;
    if (is_home(c)) home_drain(c);   /* before the thread pointer can name another thread */
    tcache_drain(c, slot->ext);
}

HK_INLINE void count(uint64_t *ctr) { __atomic_store_n(ctr, *ctr + 1, __ATOMIC_RELAXED); }

/* Pop t's magazines (refilling them from the depot or the slabs); no count. */
static void *tc_take(hk_slab_cache_t *c, tcache_t *t)
{
    void *o = NULL;
    hk__slot_unload(t->slot);
    mag_t *l = loaded_of(t);
    if (!l->n) {
        if (t->prev->n) {
            hk__slot_load(t->slot, t->prev, MAG_ROUNDS);
            t->prev = l;
        } else {
            hk__spin_lock(&c->lock);
            if (c->full) {                /* trade our empty magazine for a full one */
                mag_t *f = c->full;
                c->full = MNEXT(f);
                c->nfull--;
                MNEXT(l) = c->empty;
                c->empty = l;
                hk__slot_load(t->slot, f, MAG_ROUNDS);
            } else {
                while (l->n < MAG_ROUNDS / 2 && (o = slab_take(c))) l->obj[l->n++] = o;
                hk__slot_load(t->slot, l, MAG_ROUNDS);
            }
            hk__spin_unlock(&c->lock);
        }
        l = loaded_of(t);
        if (!l->n) { errno = ENOMEM; return NULL; }
    }
    o = l->obj[--l->n];
    t->slot->cur = l->obj + l->n;
    return o;
}

/* The home cache is empty: refill half of it from the magazines, in LIFO
 * order (the magazines' top becomes its top), after taking obj for the caller. */
static void *home_alloc(hk_slab_cache_t *c, tcache_t *t)
{
    void *o = tc_take(c, t);
    if (!o) return NULL;
    /* The loaded magazine's top k, in one copy (no lock). */
    hk__tls_slot_t *sl = t->slot;
    size_t k = HK_MIN((size_t)(sl->cur - sl->lo), (size_t)HOME_HALF);
    memcpy(c->hm.obj, sl->cur - k, k * sizeof(void *));
    sl->cur -= k;
    hk__spin_lock(&c->lock);
    c->hm.moved_in += k + 1;              /* o passes through the home cache too */
    __atomic_store_n(&c->hm.n, (uint32_t)k, __ATOMIC_RELAXED);
    count(&c->hm.allocs);
    hk__spin_unlock(&c->lock);
    return o;
}

/* This thread's tcache; the first thread with one and no home thread
 * yet becomes the home thread (release caches only). */
static tcache_t *tcache_claim(hk_slab_cache_t *c)
{
    tcache_t *t = tcache_of(c);
    if (t && c->h.hot.slab_key && !__atomic_load_n(&c->h.hot.shome, __ATOMIC_RELAXED)) {
        uintptr_t none = 0;
        __atomic_compare_exchange_n(&c->h.hot.shome, &none, hk__thread_pointer(), false,
                                    __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
    }
    return t;
}

static void *slab_alloc_inner(hk_slab_cache_t *c)
{
    void *o = NULL;
    tcache_t *t = tcache_claim(c);
    if (!t) {                             /* no TLS slot: straight from the slabs */
        hk__spin_lock(&c->lock);
        o = slab_take(c);
        if (o) c->allocs++;
        hk__spin_unlock(&c->lock);
        return o;
    }
    if (is_home(c)) {
        home_sync_span(c);
        uint32_t n = c->hm.n;
        if (n) {                          /* the caller saw it empty before */
            __atomic_store_n(&c->hm.n, n - 1, __ATOMIC_RELAXED);
            count(&c->hm.allocs);
            return c->hm.obj[n - 1];
        }
        return home_alloc(c, t);
    }
    o = tc_take(c, t);
    if (o) count(&t->slot->allocs);
    return o;
}

void *hk__slab_alloc_slow(hk_slab_cache_t *c)
{
    if (hk_unlikely(hk__handle_check(c, HK__MAGIC_SLAB, "hk_slab_alloc", "slab cache") != 0)) { errno = EINVAL; return NULL; }
    void *o = slab_alloc_inner(c);
    if (hk_unlikely(hk__checked(&c->h)) && o) held_flip(c, o, true);
    return o;
}

/* Push obj onto t's magazines (trading a full one at the depot); no count. */
static void tc_put(hk_slab_cache_t *c, tcache_t *t, void *obj)
{
    hk__slot_unload(t->slot);
    mag_t *l = loaded_of(t);
    if (l->n == MAG_ROUNDS) {
        if (t->prev->n == 0) {
            hk__slot_load(t->slot, t->prev, MAG_ROUNDS);
            t->prev = l;
        } else {
            mag_t *e = NULL;
            hk__spin_lock(&c->lock);
            if (c->empty) { e = c->empty; c->empty = MNEXT(e); }
            hk__spin_unlock(&c->lock);
            if (!e) e = mag_new(c);
            hk__spin_lock(&c->lock);
            if (!e) {                     /* no magazine memory: this one object to its slab */
                slab_give(c, obj);
                hk__spin_unlock(&c->lock);
                return;
            }
            MNEXT(l) = c->full;           /* the full magazine goes to the depot */
            c->full = l;
            c->nfull++;
            hk__slot_load(t->slot, e, MAG_ROUNDS);
            hk__spin_unlock(&c->lock);
        }
        l = loaded_of(t);
    }
    l->obj[l->n++] = obj;
    t->slot->cur = l->obj + l->n;
}

static int slab_free_inner(hk_slab_cache_t *c, void *obj)
{
    tcache_t *t = tcache_claim(c);
    if (!t) {
        hk__spin_lock(&c->lock);
        slab_give(c, obj);
        c->frees++;
        hk__spin_unlock(&c->lock);
        return 0;
    }
    if (is_home(c)) {
        home_sync_span(c);
        uint32_t n = c->hm.n;
        if (n == HK__SLAB_HOME) {
            /* Full: its bottom half goes onto the magazines, oldest first,
             * so the order of the whole stack is kept. */
            hk__tls_slot_t *sl = t->slot;
            if ((size_t)(sl->hi - sl->cur) >= HOME_HALF) {   /* room in the loaded magazine: one copy */
                memcpy(sl->cur, c->hm.obj, HOME_HALF * sizeof(void *));
                sl->cur += HOME_HALF;
            } else {
                for (size_t i = 0; i < HOME_HALF; i++) tc_put(c, t, c->hm.obj[i]);
            }
            memmove(c->hm.obj, c->hm.obj + HOME_HALF, (HK__SLAB_HOME - HOME_HALF) * sizeof(void *));
            n = HK__SLAB_HOME - HOME_HALF;
            hk__spin_lock(&c->lock);
            c->hm.moved_in -= HOME_HALF;
            c->hm.obj[n] = obj;
            __atomic_store_n(&c->hm.n, n + 1, __ATOMIC_RELAXED);
            hk__spin_unlock(&c->lock);
            return 0;
        }
        c->hm.obj[n] = obj;
        __atomic_store_n(&c->hm.n, n + 1, __ATOMIC_RELAXED);
        return 0;
    }
    tc_put(c, t, obj);
    count(&t->slot->frees);
    return 0;
}

int hk__slab_free_slow(hk_slab_cache_t *c, void *obj)
{
    if (hk_unlikely(hk__handle_check(c, HK__MAGIC_SLAB, "hk_slab_free", "slab cache") != 0)) return EINVAL;
    if (!obj) return 0;
    size_t idx;
    slab_t *s = slab_of(c, obj, &idx);
    if (hk_unlikely(!s)) return slab_misuse(c, obj, "is not from this cache");
    if (hk_unlikely(idx == SIZE_MAX)) return slab_misuse(c, obj, "is not on an object boundary");
    if (hk_unlikely(hk__checked(&c->h)) && held_flip(c, obj, false)) return EINVAL;
    return slab_free_inner(c, obj);
}

/* The magazine fast path of the threads other than the home thread. */
void *hk__slab_alloc_mag(hk_slab_cache_t *c)
{
    hk__hot_t *h = &c->h.hot;
    uint64_t key = h->slab_key;
    hk__tls_slot_t *s = &hk__tls_slots[key & (HK__TLS_SLOTS - 1)];
    void **cp;
    /* The home thread comes here with its home cache empty: refill it. */
    if (hk_likely(!is_home(c) && s->id == key && (cp = s->cur) != s->lo)) {
        count(&s->allocs);
        s->cur = --cp;
        return *cp;
    }
    return hk__slab_alloc_slow(c);
}

int hk__slab_free_mag(hk_slab_cache_t *c, void *obj)
{
    hk__hot_t *h = &c->h.hot;
    uint64_t key = h->slab_key;
    hk__tls_slot_t *s = &hk__tls_slots[key & (HK__TLS_SLOTS - 1)];
    uintptr_t off = (uintptr_t)obj - (uintptr_t)__atomic_load_n(&h->tbase, __ATOMIC_RELAXED);
    void **cp;
    if (hk_likely(off < __atomic_load_n(&h->tlimit, __ATOMIC_RELAXED) && !is_home(c) && s->id == key &&
                  (cp = s->cur) != s->hi)) {
        *cp = obj;
        s->cur = cp + 1;
        count(&s->frees);
        return 0;
    }
    return hk__slab_free_slow(c, obj);
}

int hk_slab_cache_flush(hk_slab_cache_t *c)
{
    if (hk__handle_check(c, HK__MAGIC_SLAB, "hk_slab_cache_flush", "slab cache") != 0) return EINVAL;
    hk__tls_slot_t *sl = hk__tls_mine(&c->h);
    if (sl) {
        if (is_home(c)) home_drain(c);
        tcache_drain(c, sl->ext);
        hk__tls_unregister(&c->h);
    }
    return 0;
}

long hk_slab_cache_reap(hk_slab_cache_t *c)
{
    if (hk__handle_check(c, HK__MAGIC_SLAB, "hk_slab_cache_reap", "slab cache") != 0) { errno = EINVAL; return -1; }
    mag_t *spare = NULL;
    long n = 0;
    hk__spin_lock(&c->lock);
    while (c->full) {                    /* depot rounds go home to their slabs */
        mag_t *m = c->full;
        c->full = MNEXT(m);
        for (size_t i = 0; i < m->n; i++) slab_give(c, m->obj[i]);
        MNEXT(m) = spare;
        spare = m;
    }
    c->nfull = 0;
    while (c->empty) { mag_t *m = c->empty; c->empty = MNEXT(m); MNEXT(m) = spare; spare = m; }
    while (c->lists[L_EMPTY]) {
        slab_t *s = c->lists[L_EMPTY];
        list_remove(c, s);
        slab_release(c, s);
        c->reaped++;
        n++;
    }
    hk__spin_unlock(&c->lock);
    while (spare) { mag_t *m = spare; spare = MNEXT(m); hk_pool_free(c->mags, m); }
    return n;
}

int hk_slab_cache_destroy(hk_slab_cache_t *c)
{
    if (hk__handle_check(c, HK__MAGIC_SLAB, "hk_slab_cache_destroy", "slab cache") != 0) return EINVAL;
    hk__spin_lock(&hk__handle_lock);
    if (hk__handle_magic(c) != HK__MAGIC_SLAB) { hk__spin_unlock(&hk__handle_lock); return EINVAL; }
    hk__tls_unregister(&c->h);         /* before kill frees the index */
    hk__handle_kill(c);
    hk__spin_unlock(&hk__handle_lock);
    /* Every object of every slab was constructed, so every one is destructed. */
    for (int l = 0; l < L_COUNT; l++)
        while (c->lists[l]) {
            slab_t *s = c->lists[l];
            list_remove(c, s);
            slab_release(c, s);
        }
    int e = hk_pool_destroy(c->mags);
    int e2 = hk_pool_destroy(c->tcpool);
    return e ? e : e2;
}

int hk_slab_cache_stats(hk_slab_cache_t *c, hk_slab_stats_t *out)
{
    if (hk__handle_check(c, HK__MAGIC_SLAB, "hk_slab_cache_stats", "slab cache") != 0 || !out) return EINVAL;
    memset(out, 0, sizeof *out);
    hk__spin_lock(&c->lock);
    out->obj_size = c->stride;
    out->objs_per_slab = c->nobj;
    out->slab_size = c->slab_size;
    out->slabs_partial = c->counts[L_PARTIAL];
    out->slabs_full = c->counts[L_FULL];
    out->slabs_empty = c->counts[L_EMPTY];
    out->allocs = c->allocs + __atomic_load_n(&c->hm.allocs, __ATOMIC_RELAXED);
    out->frees = c->frees + home_frees(c);
    for (tcache_t *t = c->tcs; t; t = t->tnext) {
        out->allocs += __atomic_load_n(&t->slot->allocs, __ATOMIC_RELAXED);
        out->frees += __atomic_load_n(&t->slot->frees, __ATOMIC_RELAXED);
    }
    out->in_use = (size_t)(out->allocs - out->frees);
    out->in_magazines = c->out - out->in_use;
    out->constructed = c->constructed;
    out->destructed = c->destructed;
    out->slabs_created = c->created;
    out->slabs_reaped = c->reaped;
    hk__spin_unlock(&c->lock);
    return 0;
}
