/* Fixed-size pool: objects live in one reserved address range committed a
 * chunk at a time, so ownership is a range check and an object's index is
 * its offset over the stride. Free objects form a LIFO list threaded through
 * their first word (dealt over four chains, so that walking a scattered list
 * overlaps four cache misses); never-used objects are carved lazily from the
 * top. A release pool puts a bounded front cache (an array in the handle)
 * on top of that list: the inline hk_pool_alloc/free in heapkit/pool.h pop
 * and push the array, and the code here refills it from the list and
 * spills half of it back. Locked and checked pools use the list alone, out
 * of line. Checked pools add a bitmap (one bit per object, "allocated")
 * that makes double frees exact. */
#include "pool_internal.h"
#include <string.h>

#define DEFAULT_RESERVE ((size_t)16 << 30)
#define DEFAULT_CHUNK   ((size_t)64 << 10)

#define POOL_LISTS 4
#define CACHE_HALF (HK__POOL_CACHE / 2)

struct hk_pool {
  union {
   struct {
    hk__handle_t h;
    hk__spin_t lock;
    size_t stride;
    uint64_t div_magic;     /* ceil(2^64 / stride): offset / stride by multiplication */
    size_t chunk_bytes;
    size_t max_objs;        /* cap on live objects (SIZE_MAX: none) */
    char *base;             /* objects: rbase + a per-pool colour */
    size_t reserved;        /* bytes of object address space */
    size_t committed;       /* bytes of objects committed */
    char *rbase;            /* the reserved region (page aligned) */
    size_t rsize, rcommitted;
    size_t capacity;        /* objects fitting in committed bytes */
    size_t bump;            /* objects [0, bump) have been handed out at least once */
    size_t peak;            /* highest bump since create: the list is used before carving, so = peak in_use */
    uint64_t dropped;       /* objects live at resets, so frees = allocs - in_use - dropped */
    bool fast;              /* release pool: the inline paths own cache, hot.ncache and hot.limit */
    void *list[POOL_LISTS]; /* the free list below the cache: heads of the four chains */
    size_t nlist;
    uint64_t *bitmap;       /* checked pools only */
    size_t bm_reserved, bm_committed;
    hk_pool_stats_t st;
   };
   char head_[HK__POOL_CACHE_AT];
  };
  /* The top hot.ncache free objects (fast pools), cache[ncache - 1] on top. */
  void *cache[HK__POOL_CACHE];
};
_Static_assert(offsetof(struct hk_pool, cache) == HK__POOL_CACHE_AT, "the inline paths find the cache here");
_Static_assert(sizeof(struct hk_pool) <= HK__HANDLE_SLOT, "pool descriptor fits a slot");
_Static_assert(HK__POOL_CACHE % 2 == 0 && HK__POOL_CACHE < UINT32_MAX, "the cache spills halves");

size_t hk__pool_stride(const hk_pool_t *p) { return p->stride; }
char  *hk__pool_base(const hk_pool_t *p) { return p->base; }
size_t hk__pool_reserved_objs(const hk_pool_t *p) { return p->reserved / p->stride; }

hk_pool_t *hk_pool_create(size_t obj_size, size_t align, const hk_pool_options_t *opt)
{
    hk_pool_options_t o = {0};
    if (opt) o = *opt;
    if (align == 0) align = (obj_size & 15) == 0 ? 16 : 8;  /* natural alignment, at most 16 */
    if (obj_size == 0 || obj_size > ((size_t)1 << 30) || !hk__is_pow2(align) || align > 4096) {
        errno = EINVAL;
        return NULL;
    }
    size_t ps = hk_vm_page_size();
    size_t stride = hk__align_up(HK_MAX(obj_size, sizeof(void *)), HK_MAX(align, sizeof(void *)));
    size_t chunk = o.objs_per_chunk ? o.objs_per_chunk * stride : (o.chunk_size ? o.chunk_size : DEFAULT_CHUNK);
    chunk = hk__align_up(HK_MAX(chunk, stride), ps);
    size_t reserve = DEFAULT_RESERVE, max_objs = SIZE_MAX;
    if (o.max_objects > ((size_t)1 << 46) / stride) { errno = EINVAL; return NULL; }
    if (o.max_objects) { max_objs = o.max_objects; reserve = o.max_objects * stride; }
    if (o.max_bytes) {
        size_t n = o.max_bytes / stride;
        if (n == 0) { errno = EINVAL; return NULL; }
        if (n < max_objs) { max_objs = n; reserve = n * stride; }
    }
    /* Colour: start the objects a few cache lines into the region, varying
     * by pool. Regions and the handle table come back from mmap at large
     * power-of-two alignments, so without it a pool's first objects share
     * L1 sets (and, on AMD, the linear-address tag) with hot handle blocks
     * and with other pools' first objects, and thrash the L1. */
    static unsigned colour_seq;
    unsigned cs = __atomic_fetch_add(&colour_seq, 1, __ATOMIC_RELAXED);
    /* 2..15 lines: never at 0 or 64 modulo 1 KiB, where the two hot lines
     * of handle blocks sit. */
    size_t colour = hk__align_up((size_t)64 * (2 + cs % 14), HK_MAX(align, (size_t)8));
    if (colour % 1024 <= 64) colour = 0;
    if (colour + stride > ps) colour = 0;
    reserve = hk__align_up(reserve + colour, chunk);
    hk_pool_t *p = hk__handle_new(HK__MAGIC_POOL, o.flags, o.name ? o.name : "pool");
    if (!p) return NULL;
    bool checked = hk__checked(&p->h);
    size_t bm_bytes = checked ? hk__align_up((reserve / stride + 63) / 64 * 8, ps) : 0;
    hk_region_t objs, bm = {0};
    int e = hk_region_reserve(&objs, reserve);
    if (!e && checked) {
        e = hk_region_reserve(&bm, bm_bytes);
        if (e) hk_region_release(&objs);
    }
    if (e) {
        hk__handle_discard(p);
        errno = e;
        return NULL;
    }
    p->stride = stride;
    p->div_magic = UINT64_MAX / stride + 1;
    p->chunk_bytes = chunk;
    p->max_objs = max_objs;
    p->rbase = objs.base;
    p->rsize = objs.reserved;
    p->base = objs.base + colour;
    p->h.hot.base = p->base;
    p->fast = !checked && !(o.flags & HK_POOL_THREAD_SAFE);
    p->reserved = objs.reserved - colour;
    p->bitmap = (uint64_t *)bm.base;
    p->bm_reserved = bm.reserved;
    p->st.obj_size = stride;
    return p;
}

/* Commit one more chunk of objects and the bitmap words that cover it. */
static HK_NOINLINE int pool_grow(hk_pool_t *p)
{
    if (p->committed >= p->reserved) return ENOMEM;
    /* Chunks count in object bytes from base; the pages under them (one
     * more for the colour) are what gets committed. */
    size_t add = HK_MIN(p->chunk_bytes, p->reserved - p->committed);
    size_t rnew = HK_MIN(hk__align_up((size_t)(p->base - p->rbase) + p->committed + add, hk_vm_page_size()), p->rsize);
    int e = hk_vm_commit(p->rbase + p->rcommitted, rnew - p->rcommitted);
    if (e) return e;
    size_t cap = (p->committed + add) / p->stride;
    size_t need = p->bitmap ? hk__align_up((cap + 63) / 64 * 8, hk_vm_page_size()) : 0;
    if (need > p->bm_committed) {
        e = hk_vm_commit((char *)p->bitmap + p->bm_committed, need - p->bm_committed);
        if (e) { hk_vm_decommit(p->rbase + p->rcommitted, rnew - p->rcommitted); return e; }
        p->bm_committed = need;
    }
    p->rcommitted = rnew;
    p->committed += add;
    if (p->fast) p->h.hot.limit = p->committed;
    p->capacity = cap;
    p->st.chunks++;
    return 0;
}

__extension__ typedef unsigned __int128 u128;

HK_INLINE size_t obj_index(const hk_pool_t *p, size_t off)
{
    /* Exact for offsets below 2^32 with a 64-bit ceil(2^64/d) multiplier. */
    if (hk_likely(off < ((size_t)1 << 32)))
        return (size_t)(((u128)off * p->div_magic) >> 64);
    return off / p->stride;
}

/* The free list: entry k of the LIFO stack (k = 0 at the bottom) is on chain
 * k % POOL_LISTS, so pop and push touch the chain the count selects. */
HK_INLINE void *list_pop(hk_pool_t *p)
{
    if (!p->nlist) return NULL;
    void **head = &p->list[--p->nlist & (POOL_LISTS - 1)];
    void *o = *head;
    *head = *(void **)o;
    __builtin_prefetch(*head, 1);   /* scattered lists: fetch the chain's next one early */
    return o;
}
HK_INLINE void list_push(hk_pool_t *p, void *o)
{
    void **head = &p->list[p->nlist++ & (POOL_LISTS - 1)];
    *(void **)o = *head;
    *head = o;
}
/* Free objects: the list and the front cache (hot.ncache is 0 unless fast). */
HK_INLINE size_t pool_nfree(const hk_pool_t *p) { return p->nlist + p->h.hot.ncache; }

/* The next free object in LIFO order is on the cache (fast pools), then the
 * list, then carved: so bump only grows when every object is live, and the
 * highest bump is the peak of in_use. */
HK_INLINE void *pool_alloc_locked(hk_pool_t *p)
{
    char *o = list_pop(p);
    size_t idx;
    if (hk_likely(o != NULL)) {
        idx = p->bitmap ? obj_index(p, (size_t)(o - p->base)) : 0;
    } else {
        /* Carving is the only way past the cap: live <= bump <= max_objs. */
        if (hk_unlikely(p->bump >= p->max_objs)) { p->st.failed++; errno = ENOMEM; return NULL; }
        if (hk_unlikely(p->bump >= p->capacity)) {
            int e = pool_grow(p);
            if (e) { p->st.failed++; errno = e; return NULL; }
        }
        idx = p->bump++;
        if (p->bump > p->peak) p->peak = p->bump;
        o = p->base + idx * p->stride;
    }
    if (p->bitmap) p->bitmap[idx >> 6] |= (uint64_t)1 << (idx & 63);
    p->h.hot.allocs++;
    return o;
}

int hk__pool_locate(hk_pool_t *p, const void *obj)
{
    size_t off = (size_t)((uintptr_t)obj - (uintptr_t)p->base);
    if ((uintptr_t)obj < (uintptr_t)p->base || off >= p->reserved) return 1;
    if (obj_index(p, off) * p->stride != off) return 2;
    return 0;
}

static HK_COLD int pool_misuse(hk_pool_t *p, const void *obj, const char *what)
{
    if (hk__checked(&p->h)) hk__fatal("heapkit: hk_pool_free: pool '%s': %p %s\n", p->h.name, obj, what);
    return EINVAL;
}

/* Validation first, so a bad pointer never touches the list or the counts.
 * Without the bitmap (release pools) a double free cannot be seen here. */
HK_INLINE int pool_free_locked(hk_pool_t *p, void *obj)
{
    size_t off = (size_t)((uintptr_t)obj - (uintptr_t)p->base);
    if (hk_unlikely((uintptr_t)obj < (uintptr_t)p->base || off >= p->committed))
        return pool_misuse(p, obj, "is not from this pool");
    size_t idx = obj_index(p, off);
    if (hk_unlikely(idx * p->stride != off)) return pool_misuse(p, obj, "is not on an object boundary");
    if (p->fast) {
        /* The cache is full (else the inline path had taken obj): its
         * bottom half goes onto the list, oldest first, so the order of
         * the whole stack is kept. */
        uint32_t n = p->h.hot.ncache;
        if (n == HK__POOL_CACHE) {
            for (size_t i = 0; i < CACHE_HALF; i++) list_push(p, p->cache[i]);
            memmove(p->cache, p->cache + CACHE_HALF, (HK__POOL_CACHE - CACHE_HALF) * sizeof(void *));
            n = HK__POOL_CACHE - CACHE_HALF;
        }
        p->cache[n] = obj;
        p->h.hot.ncache = n + 1;
        return 0;
    }
    if (p->bitmap) {
        uint64_t bit = (uint64_t)1 << (idx & 63);
        if (hk_unlikely(!(p->bitmap[idx >> 6] & bit)))
            return pool_misuse(p, obj, idx < p->bump ? "double free" : "was never allocated");
        p->bitmap[idx >> 6] &= ~bit;
    }
    list_push(p, obj);
    return 0;
}

void *hk__pool_alloc_slow(hk_pool_t *p)
{
    if (hk_unlikely(hk__handle_check(p, HK__MAGIC_POOL, "hk_pool_alloc", "pool") != 0)) { errno = EINVAL; return NULL; }
    void *o;
    if (p->h.flags & HK_POOL_THREAD_SAFE) {
        hk__spin_lock(&p->lock);
        o = pool_alloc_locked(p);
        hk__spin_unlock(&p->lock);
    } else if (p->fast && p->h.hot.ncache) {
        o = p->cache[--p->h.hot.ncache];   /* a caller that saw the cache empty before */
        p->h.hot.allocs++;
    } else {
        o = pool_alloc_locked(p);
        if (o && p->fast && p->nlist) {
            /* Refill the empty cache from the list (never by carving: that
             * would count objects nobody holds in the peak), in LIFO order:
             * the list's top becomes the cache's top. */
            size_t k = HK_MIN(p->nlist, (size_t)CACHE_HALF);
            for (size_t i = k; i-- > 0;) p->cache[i] = list_pop(p);
            p->h.hot.ncache = (uint32_t)k;
        }
    }
    return o;
}

int hk__pool_free_slow(hk_pool_t *p, void *obj)
{
    if (hk_unlikely(hk__handle_check(p, HK__MAGIC_POOL, "hk_pool_free", "pool") != 0)) return EINVAL;
    if (!obj) return 0;
    int r;
    if (p->h.flags & HK_POOL_THREAD_SAFE) {
        hk__spin_lock(&p->lock);
        r = pool_free_locked(p, obj);
        hk__spin_unlock(&p->lock);
    } else {
        r = pool_free_locked(p, obj);
    }
    return r;
}

size_t hk__pool_alloc_batch(hk_pool_t *p, void **out, size_t n)
{
    size_t i = 0;
    hk__spin_lock(&p->lock);
    for (; i < n; i++) {
        void *o = pool_alloc_locked(p);
        if (!o) break;
        out[i] = o;
    }
    hk__spin_unlock(&p->lock);
    return i;
}

void hk__pool_free_batch(hk_pool_t *p, void *const *objs, size_t n)
{
    hk__spin_lock(&p->lock);
    for (size_t i = 0; i < n; i++) (void)pool_free_locked(p, objs[i]);
    hk__spin_unlock(&p->lock);
}

int hk_pool_owns(hk_pool_t *p, const void *obj)
{
    if (hk__handle_check(p, HK__MAGIC_POOL, "hk_pool_owns", "pool") != 0) return 0;
    int r = 0;
    hk__spin_lock(&p->lock);
    size_t off = (size_t)((uintptr_t)obj - (uintptr_t)p->base);
    if ((uintptr_t)obj >= (uintptr_t)p->base && off < p->bump * p->stride && obj_index(p, off) * p->stride == off) {
        size_t idx = obj_index(p, off);
        if (p->bitmap) {
            r = (int)(p->bitmap[idx >> 6] >> (idx & 63) & 1);
        } else {                         /* no bitmap: allocated unless on the free list */
            r = 1;
            for (uint32_t i = 0; i < p->h.hot.ncache && r; i++)
                if (p->cache[i] == obj) r = 0;
            for (int k = 0; k < POOL_LISTS && r; k++)
                for (void *f = p->list[k]; f; f = *(void **)f)
                    if (f == obj) { r = 0; break; }
        }
    }
    hk__spin_unlock(&p->lock);
    return r;
}

int hk_pool_reset(hk_pool_t *p)
{
    if (hk__handle_check(p, HK__MAGIC_POOL, "hk_pool_reset", "pool") != 0) return EINVAL;
    hk__spin_lock(&p->lock);
    int e = 0;
    /* Keep the first chunk (and its bitmap page) committed; the rest goes back. */
    size_t rkeep = HK_MIN(hk__align_up((size_t)(p->base - p->rbase) + p->chunk_bytes, hk_vm_page_size()), p->rsize);
    if (p->committed > p->chunk_bytes) {
        e = hk_vm_decommit(p->rbase + rkeep, p->rcommitted - rkeep);
        if (!e) {
            p->rcommitted = rkeep;
            p->committed = p->chunk_bytes;
            p->st.chunks = 1;
        }
    }
    size_t bm_keep = hk__align_up((p->committed / p->stride + 63) / 64 * 8, hk_vm_page_size());
    if (p->bm_committed > bm_keep && !hk_vm_decommit((char *)p->bitmap + bm_keep, p->bm_committed - bm_keep))
        p->bm_committed = bm_keep;
    if (p->bm_committed) memset(p->bitmap, 0, p->bm_committed);
    p->capacity = p->committed / p->stride;
    p->dropped += p->bump - pool_nfree(p);   /* the objects live until now */
    p->bump = 0;
    memset(p->list, 0, sizeof p->list);
    p->nlist = 0;
    p->h.hot.ncache = 0;
    if (p->fast) p->h.hot.limit = p->committed;
    hk__spin_unlock(&p->lock);
    return e;
}

int hk_pool_destroy(hk_pool_t *p)
{
    if (hk__handle_check(p, HK__MAGIC_POOL, "hk_pool_destroy", "pool") != 0) return EINVAL;
    hk__spin_lock(&hk__handle_lock);
    if (hk__handle_magic(p) != HK__MAGIC_POOL) {  /* lost a race with another destroy */
        hk__spin_unlock(&hk__handle_lock);
        return EINVAL;
    }
    hk__handle_kill(p);
    hk__spin_unlock(&hk__handle_lock);
    int e = hk_vm_release(p->rbase, p->rsize);
    int e2 = p->bitmap ? hk_vm_release(p->bitmap, p->bm_reserved) : 0;
    return e ? e : e2;
}

int hk_pool_stats(hk_pool_t *p, hk_pool_stats_t *out)
{
    if (hk__handle_check(p, HK__MAGIC_POOL, "hk_pool_stats", "pool") != 0 || !out) return EINVAL;
    hk__spin_lock(&p->lock);
    *out = p->st;
    /* Every object below the carve mark is live or on the free list. */
    out->in_use = p->bump - pool_nfree(p);
    out->allocs = p->h.hot.allocs;
    out->frees = out->allocs - out->in_use - p->dropped;
    out->peak_in_use = p->peak;
    out->capacity = p->capacity;
    out->bytes_committed = p->rcommitted + p->bm_committed;
    hk__spin_unlock(&p->lock);
    return 0;
}
