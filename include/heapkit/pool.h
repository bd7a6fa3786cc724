/* heapkit special-purpose allocators: fixed-size pools, bump arenas,
 * per-thread pools and slab object caches with per-thread magazines.
 * All memory comes from the OS layer (heapkit/vm.h), never from malloc.
 *
 * Checked mode (HK_POOL_CHECKED on the object, or a library built with
 * HK_DEBUG >= 1) detects every misuse - a foreign pointer, a pointer off an
 * object boundary, a double free, using or destroying a destroyed handle -
 * and aborts with a message naming the allocator and the pointer. Release
 * mode runs small inline fast paths (below) that check less: what each one
 * detects is listed at the function; detected misuse returns EINVAL with
 * the structure intact, undetected misuse (double free, off-boundary
 * pointers inside the range) corrupts the free list. docs/pools.md has the
 * full table.
 *
 * Handles live in a process-wide descriptor table that is never unmapped:
 * a destroyed handle keeps a "dead" magic number, so a second destroy or a
 * use after destroy reads valid memory and is reported. A descriptor is
 * reused only after every fresh one (65536 of them) has been handed out.
 */
#ifndef HEAPKIT_POOL_H
#define HEAPKIT_POOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Exported from libheapkit.so although the library builds with hidden visibility. */
#pragma GCC visibility push(default)

/* ---- private: read by the inline fast paths below, nothing else ----
 * Every pool-family handle begins with this block of two cache lines: the
 * pool's fast path reads only the first, the tpool and arena fast paths
 * only the second, the slab's both. The library sets the fields so that a fast path
 * is taken only when it is safe: a locked or checked object, a destroyed
 * handle or a handle of another kind has the gate fields of every other
 * fast path zero (pool: ncache and limit; tpool: tpool_key; slab:
 * slab_key and shome; arena: aend), so every call on it goes to the out-of-line
 * path, which validates the handle and reports. The handle memory is never
 * unmapped, so reading this block through a destroyed handle is safe. Do
 * not touch these fields. */
#define HK__POOL_CACHE 64     /* a fast pool's front cache: objects */
#define HK__POOL_CACHE_AT 512 /* its byte offset in the handle (an array of void *) */
typedef struct hk__hot {
    /* hk_pool_t fast mode. The free objects form one LIFO stack: its top
     * ncache entries sit in a small array inside the handle (the front
     * cache), the rest in the free list kept in the objects themselves,
     * which the out-of-line path refills the cache from and spills it to,
     * half a cache at a time. Alloc and free then touch only the handle,
     * never the object, and the depth is a 32-bit count: a program's own
     * stores of 64-bit words and pointers cannot alias it, so the compiler
     * may keep it in a register across a loop of calls. */
    uint32_t ncache;
    uint32_t pad0_;
    char *base;               /* first object */
    size_t limit;             /* committed object bytes when fast, else 0 */
    uint64_t allocs;          /* count (frees and in_use are derived) */
    /* hk_slab_cache_t: which thread owns the home block (below); read by
     * every thread's fast path, written only when the role changes hands,
     * so it sits apart from the fields the home thread writes per call. */
    uintptr_t shome;          /* the home thread's thread pointer; 0: none */
    void *pad1_[3];
    /* tpool / slab cache / arena. */
    char *tbase;              /* tpool: the depot's object range; slab: the span of its slabs */
    size_t tlimit;
    uint64_t tpool_key;       /* tpool: unique id << 7 | slot index; 0: no fast path */
    uint64_t slab_key;        /* slab cache: the same, in its own field */
    char *aptr, *aend;        /* arena: bump pointer and end of the bump chunk;
                                 both NULL while the inline bump must not run */
    size_t apad_;
    uint64_t abytes;          /* arena: requested bytes */
} hk__hot_t;                  /* 128 bytes: two cache lines at the start of the handle */

/* A stack of free objects: a tpool's per-thread cache or a slab magazine. */
typedef struct hk__objstack {
    size_t n;
    void *link;
    void *obj[];
} hk__objstack_t;
#define HK__TPOOL_CAP 128     /* objects in a tpool's per-thread cache */
#define HK__MAG_ROUNDS 64     /* objects in a slab magazine */
/* The calling thread's thread pointer (x86-64 Linux: the TCB's self
 * pointer at %fs:0): unique among live threads, read without a memory
 * access the compiler must order against the program's stores. */
static inline uintptr_t hk__thread_pointer(void)
{
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
    return (uintptr_t)__builtin_thread_pointer();
#else
    uintptr_t tp;
    __asm__("mov %%fs:0, %0" : "=r"(tp));
    return tp;
#endif
}
#define HK__SLAB_HOME 64      /* objects in a slab cache's home-thread cache */
/* A slab cache's home block, at HK__SLAB_HOME_AT in its handle: the home
 * thread's front cache, the same idea as the pool's (an array in the handle
 * over that thread's magazines, with a 32-bit depth), found by comparing
 * the thread pointer (no thread-local load). Only the home thread writes it;
 * its first line holds the depth and counts, the rest the array. */
typedef struct hk__slab_home {
    uint32_t n;               /* objects in obj[] (read by stats) */
    uint32_t pad0_;
    uint64_t allocs;          /* the home thread's allocs through this block (read by stats) */
    uint64_t moved_in;        /* objects moved in from its magazines, less those moved out:
                                 its frees are allocs + n - moved_in, so free counts nothing */
    char *lo;                 /* the home thread's copy of tbase / tlimit: read with plain */
    size_t span;              /* loads; stale only by being narrower (the span only grows), */
    uint64_t pad1_[3];        /* which sends a free out of line, where it is refreshed */
    void *obj[HK__SLAB_HOME];
} hk__slab_home_t;
#define HK__SLAB_HOME_AT 448  /* = 1024 - sizeof(hk__slab_home_t): the end of the handle slot */

/* Per thread, per tpool / slab cache (by the index in the handle's key):
 * the stack the fast path pops and pushes; id holds the owner's key, so a
 * slot left by a destroyed owner never matches. Slot 0 matches no key
 * (neither 0, the key of a handle without a fast path). The stack is kept
 * as a cursor between two bounds rather than a count: a pop or push then
 * carries only the cursor from one call to the next (a count needs the
 * array's address added back before the object can be read or written). */
typedef struct hk__tls_slot {
    uint64_t id;
    void **cur;               /* top->obj + top's count, kept here while top is loaded */
    void **lo, **hi;          /* top->obj and top->obj + its capacity */
    hk__objstack_t *top;      /* tpool: the cache; slab: the loaded magazine */
    void *ext;                /* slab: the thread's magazine pair */
    uint64_t allocs, frees;   /* slab: this thread's counts (read by stats) */
} __attribute__((aligned(64))) hk__tls_slot_t;   /* one cache line each */
#define HK__TLS_SLOTS 128     /* = 1 << 7, the index bits of tpool_key / slab_key */
/* The calling thread's slot array. Every thread starts on a shared
 * read-only array that matches no key (so the fast paths fall through to
 * the slow path, which maps the thread's own array): only this pointer sits
 * in static TLS, which keeps libheapkit.so loadable with dlopen. */
extern __thread hk__tls_slot_t *hk__tls_slots;

/* Option flags shared by the allocators here. */
enum {
    HK_POOL_THREAD_SAFE = 1u << 0,  /* hk_pool_t: a spinlock guards alloc/free */
    HK_POOL_CHECKED     = 1u << 1,  /* misuse aborts with a message (always so when HK_DEBUG >= 1) */
};

/* ------------------------------------------------------------------ */
/* Fixed-size pool. O(1) alloc and free through a free list threaded   */
/* through free objects; grows by chunks inside one reserved range, so  */
/* "is this pointer mine" is a range check; in checked mode a bitmap   */
/* with one bit per object catches double frees exactly.                */
/*                                                                      */
/*     hk_pool_options_t o = { .max_objects = 1000, .name = "conn" };   */
/*     hk_pool_t *p = hk_pool_create(sizeof(struct conn), 0, &o);       */
/*     struct conn *c = hk_pool_alloc(p);       // NULL+ENOMEM at cap   */
/*     ...                                                              */
/*     hk_pool_free(p, c);                      // 0, or EINVAL on misuse */
/*     hk_pool_destroy(p);                      // all memory to the OS */
/* ------------------------------------------------------------------ */
typedef struct hk_pool hk_pool_t;

typedef struct hk_pool_options {
    size_t chunk_size;      /* bytes added per growth step (0: 64 KiB; rounded to pages) */
    size_t objs_per_chunk;  /* or: objects per growth step (wins over chunk_size) */
    size_t max_objects;     /* cap on objects live at once (0: none) */
    size_t max_bytes;       /* cap on bytes of objects (0: none; default reserve 64 GiB) */
    unsigned flags;         /* HK_POOL_THREAD_SAFE | HK_POOL_CHECKED */
    const char *name;       /* copied (up to 31 chars); used in reports */
} hk_pool_options_t;

typedef struct hk_pool_stats {
    size_t obj_size;        /* stride: size rounded up to the alignment (>= 8) */
    size_t in_use;          /* objects allocated and not freed */
    size_t capacity;        /* objects that fit in the committed chunks */
    size_t chunks;          /* growth steps committed */
    size_t bytes_committed; /* objects + bitmap (checked pools) */
    size_t peak_in_use;
    uint64_t allocs, frees, failed;  /* failed: allocs refused by the cap */
} hk_pool_stats_t;                   /* in_use and peak_in_use are derived, not counted per call */

/* align: 0 (natural: 16 when obj_size is a multiple of 16, else 8) or a
 * power of two up to 4096. opt may be NULL. NULL+errno on error. */
hk_pool_t *hk_pool_create(size_t obj_size, size_t align, const hk_pool_options_t *opt);
void *hk__pool_alloc_slow(hk_pool_t *p);
int   hk__pool_free_slow(hk_pool_t *p, void *obj);

/* Release-mode pools (neither THREAD_SAFE nor CHECKED, HK_DEBUG == 0) pop
 * and push inline. hk_pool_free then checks only that obj lies in the
 * pool's committed range: a foreign pointer gives EINVAL, but a double
 * free or a pointer inside the range off an object boundary is NOT
 * detected and corrupts the free list. Checked pools detect all of them. */
static inline void *hk_pool_alloc(hk_pool_t *p)
{
    hk__hot_t *h = (hk__hot_t *)(void *)p;
    uint32_t n = h->ncache;
    if (__builtin_expect(n != 0, 1)) {
        void **cache = (void **)(void *)((char *)(void *)p + HK__POOL_CACHE_AT);
        h->ncache = --n;
        h->allocs++;
        return cache[n];
    }
    return hk__pool_alloc_slow(p);
}
/* NULL is a no-op (0). */
static inline int hk_pool_free(hk_pool_t *p, void *obj)
{
    hk__hot_t *h = (hk__hot_t *)(void *)p;
    uint32_t n = h->ncache;
    if (__builtin_expect((uintptr_t)obj - (uintptr_t)h->base < h->limit && n < HK__POOL_CACHE, 1)) {
        void **cache = (void **)(void *)((char *)(void *)p + HK__POOL_CACHE_AT);
        cache[n] = obj;
        h->ncache = n + 1;
        return 0;
    }
    return hk__pool_free_slow(p, obj);
}
/* Every object becomes free; memory past the first chunk goes back to the OS. */
int   hk_pool_reset(hk_pool_t *p);
int   hk_pool_destroy(hk_pool_t *p);
int   hk_pool_stats(hk_pool_t *p, hk_pool_stats_t *out);
/* 1 when obj is an allocated object of p, else 0. O(1) in checked pools
 * (bitmap); release pools have no bitmap and walk the free list. */
int   hk_pool_owns(hk_pool_t *p, const void *obj);

/* ------------------------------------------------------------------ */
/* Arena: bump allocation from chunks that double in size (64 KiB, then */
/* x2 up to 64 MiB). No per-object free. A request larger than half the */
/* next chunk gets a chunk of its own and leaves the bump chunk alone.  */
/*                                                                      */
/*     hk_arena_t *a = hk_arena_create(0);                              */
/*     char *s = hk_arena_strdup(a, "hello");                           */
/*     hk_arena_mark_t m = hk_arena_mark(a);                            */
/*     void *tmp = hk_arena_alloc(a, 1 << 20);  // scratch              */
/*     hk_arena_restore(a, m);                  // tmp is gone, s stays */
/*     hk_arena_destroy(a);                                             */
/*                                                                      */
/* restore: chunks created after the mark are dropped; reset: all are */
/* dropped. Dropped chunks for one large request go back to the OS at   */
/* once; ordinary ones are kept as spares (largest first) and reused by */
/* the next growth, so a fill/reset loop makes no system calls.         */
/* hk_arena_trim gives the spares back; destroy gives back everything.  */
/* An arena is not thread-safe: one per thread, or lock it yourself.    */
/* ------------------------------------------------------------------ */
typedef struct hk_arena hk_arena_t;
typedef struct hk_arena_mark {
    uint64_t arena_id;      /* which arena made the mark */
    uint64_t seq;           /* chunks with a larger sequence number came later */
    void    *chunk;         /* the bump chunk at the time (compared, never read) */
    size_t   used;          /* bump offset in it */
    size_t   allocated;     /* stats.bytes_allocated at the time */
} hk_arena_mark_t;

typedef struct hk_arena_stats {
    size_t bytes_allocated; /* sum of requested sizes since reset/restore */
    size_t bytes_reserved;  /* bytes in chunks held (including spares) */
    size_t chunks;          /* chunks held, including spares */
    size_t huge_chunks;     /* chunks made for one large request */
    size_t peak_reserved;
} hk_arena_stats_t;

/* first_chunk: size of the first chunk (0: 64 KiB). flags: HK_POOL_CHECKED. */
hk_arena_t *hk_arena_create_ex(size_t first_chunk, unsigned flags);
static inline hk_arena_t *hk_arena_create(size_t first_chunk) { return hk_arena_create_ex(first_chunk, 0); }
void *hk__arena_alloc_slow(hk_arena_t *a, size_t size);
/* 16-byte aligned. Release mode: a bump of the pointer kept in the handle's
 * hot block; a new chunk, size 0, checked mode and bad or destroyed handles
 * take the out-of-line path. */
static inline void *hk_arena_alloc(hk_arena_t *a, size_t size)
{
    hk__hot_t *h = (hk__hot_t *)(void *)a;
    char *p = (char *)(((uintptr_t)h->aptr + 15) & ~(uintptr_t)15);
    /* p never passes aend: chunk ends are page aligned. size 0 wraps and
     * goes out of line, as does everything when aptr = aend = NULL. */
    if (__builtin_expect(size - 1 < (size_t)((uintptr_t)h->aend - (uintptr_t)p), 1)) {
        h->aptr = p + size;
        h->abytes += size;
        return p;
    }
    return hk__arena_alloc_slow(a, size);
}
void *hk_arena_alloc_aligned(hk_arena_t *a, size_t size, size_t align); /* align: power of two <= 4096 */
void *hk_arena_calloc(hk_arena_t *a, size_t n, size_t size);
char *hk_arena_strdup(hk_arena_t *a, const char *s);
hk_arena_mark_t hk_arena_mark(hk_arena_t *a);
int   hk_arena_restore(hk_arena_t *a, hk_arena_mark_t mark);        /* EINVAL: foreign or stale mark */
int   hk_arena_reset(hk_arena_t *a);
int   hk_arena_trim(hk_arena_t *a);                                  /* release the spare chunks */
int   hk_arena_destroy(hk_arena_t *a);
int   hk_arena_stats(hk_arena_t *a, hk_arena_stats_t *out);

/* ------------------------------------------------------------------ */
/* Per-thread pool: one shared fixed-size pool (the depot) plus a small */
/* cache of free objects per thread, found through thread-local storage; */
/* the common alloc/free touch no lock. Any thread may free any object; */
/* it goes to the freeing thread's cache. A thread's caches go back to  */
/* the depot when it exits; destroy releases everything.               */
/*                                                                      */
/*     hk_tpool_t *tp = hk_tpool_create(64, 0, NULL);                   */
/*     void *o = hk_tpool_alloc(tp);    // any thread                   */
/*     hk_tpool_free(tp, o);            // any thread                   */
/*     hk_tpool_destroy(tp);            // when no thread uses it       */
/* ------------------------------------------------------------------ */
typedef struct hk_tpool hk_tpool_t;
typedef struct hk_tpool_stats {
    hk_pool_stats_t depot;  /* the shared pool; its in_use counts objects in caches too */
    size_t caches;          /* per-thread caches alive */
    uint64_t refills, flushes;
} hk_tpool_stats_t;

/* opt as for hk_pool_create (THREAD_SAFE is implied). */
hk_tpool_t *hk_tpool_create(size_t obj_size, size_t align, const hk_pool_options_t *opt);
void *hk__tpool_alloc_slow(hk_tpool_t *tp);
int   hk__tpool_free_slow(hk_tpool_t *tp, void *obj);
/* Release mode: the thread's cache is found by the handle's index into a
 * thread-local array; free checks that obj lies in the depot's reserved
 * range (foreign pointers: EINVAL), not object boundaries or double frees.
 * Checked tpools take the out-of-line path and detect all of them. */
static inline void *hk_tpool_alloc(hk_tpool_t *tp)
{
    hk__hot_t *h = (hk__hot_t *)(void *)tp;
    uint64_t key = h->tpool_key;
    hk__tls_slot_t *s = &hk__tls_slots[key & (HK__TLS_SLOTS - 1)];
    void **c;
    if (__builtin_expect(s->id == key && (c = s->cur) != s->lo, 1)) {
        s->cur = --c;
        return *c;
    }
    return hk__tpool_alloc_slow(tp);
}
static inline int hk_tpool_free(hk_tpool_t *tp, void *obj)
{
    hk__hot_t *h = (hk__hot_t *)(void *)tp;
    uint64_t key = h->tpool_key;
    hk__tls_slot_t *s = &hk__tls_slots[key & (HK__TLS_SLOTS - 1)];
    void **c;
    if (__builtin_expect((uintptr_t)obj - (uintptr_t)h->tbase < h->tlimit && s->id == key &&
                         (c = s->cur) != s->hi, 1)) {
        *c = obj;
        s->cur = c + 1;
        return 0;
    }
    return hk__tpool_free_slow(tp, obj);
}
/* Return the calling thread's cache to the depot now. */
int   hk_tpool_flush(hk_tpool_t *tp);
int   hk_tpool_destroy(hk_tpool_t *tp);
int   hk_tpool_stats(hk_tpool_t *tp, hk_tpool_stats_t *out);

/* ------------------------------------------------------------------ */
/* Slab object cache (Bonwick). Objects stay constructed while cached:  */
/* ctor(obj, arg) runs when a slab is created, dtor(obj, arg) when the  */
/* slab is reaped or the cache destroyed - not on every alloc/free.     */
/* Slabs are 64 KiB (or larger for big objects) blocks aligned to their */
/* size; a global slab map tells safely whether an address is a slab.   */
/* Each thread keeps two magazines of 64 objects; full and empty       */
/* magazines are exchanged with the cache's depot under a lock. The     */
/* first thread to use a cache (its home thread) also keeps 64 objects  */
/* in an array in the handle, in front of its magazines.               */
/*                                                                      */
/*     static void conn_init(void *o, void *arg) { memset(o, 0, 256); } */
/*     hk_slab_cache_t *c = hk_slab_cache_create("conn", 256, 0,        */
/*                                               conn_init, NULL, NULL);*/
/*     void *o = hk_slab_alloc(c);    // constructed                    */
/*     hk_slab_free(c, o);            // return it in constructed state */
/*     hk_slab_cache_reap(c);         // empty slabs back to the OS     */
/*     hk_slab_cache_destroy(c);                                        */
/* ------------------------------------------------------------------ */
typedef struct hk_slab_cache hk_slab_cache_t;
typedef void (*hk_slab_fn)(void *obj, void *arg);

typedef struct hk_slab_stats {
    size_t obj_size;        /* stride */
    size_t objs_per_slab;
    size_t slab_size;
    size_t in_use;          /* objects held by users (not in slabs or magazines) */
    size_t in_magazines;    /* free objects held in magazines (threads and depot) */
    size_t slabs_partial, slabs_full, slabs_empty;
    uint64_t allocs, frees;
    uint64_t constructed;   /* ctor calls */
    uint64_t destructed;    /* dtor calls */
    uint64_t slabs_created, slabs_reaped;
} hk_slab_stats_t;

/* size > 0; align 0 or a power of two <= 4096; ctor/dtor may be NULL.
 * flags: HK_POOL_CHECKED. name is copied (31 chars). */
hk_slab_cache_t *hk_slab_cache_create_ex(const char *name, size_t size, size_t align,
                                         hk_slab_fn ctor, hk_slab_fn dtor, void *arg, unsigned flags);
static inline hk_slab_cache_t *hk_slab_cache_create(const char *name, size_t size, size_t align,
                                                    hk_slab_fn ctor, hk_slab_fn dtor, void *arg)
{ return hk_slab_cache_create_ex(name, size, align, ctor, dtor, arg, 0); }
void *hk__slab_alloc_slow(hk_slab_cache_t *c);
int   hk__slab_free_slow(hk_slab_cache_t *c, void *obj);
/* Out of line but lock-free: every thread but the home thread pops and
 * pushes its loaded magazine here (kept out of the inline code so that it
 * stays small enough to inline at every call site). */
void *hk__slab_alloc_mag(hk_slab_cache_t *c);
int   hk__slab_free_mag(hk_slab_cache_t *c, void *obj);
/* Release mode: the cache's home thread (the first to use it; a flush or
 * its exit gives the role up) pops and pushes a 64-object array in the
 * handle, over its magazines, inline; every other thread pops and pushes
 * its loaded magazine, found by the cache's index into a thread-local
 * array, in hk__slab_alloc_mag / hk__slab_free_mag (a call, no lock).
 * free checks only that obj lies within
 * the span of addresses the cache's slabs have ever covered (a pointer from
 * the stack or malloc gives EINVAL; a pointer into another cache's slab in
 * between, an off-boundary pointer or a double free is NOT detected).
 * Checked caches take the out-of-line path: the slab map, the object
 * boundary and a per-object bit catch all of them. */
static inline void *hk_slab_alloc(hk_slab_cache_t *c)
{
    hk__hot_t *h = (hk__hot_t *)(void *)c;
    if (__builtin_expect(hk__thread_pointer() == __atomic_load_n(&h->shome, __ATOMIC_RELAXED), 1)) {
        hk__slab_home_t *hm = (hk__slab_home_t *)(void *)((char *)(void *)c + HK__SLAB_HOME_AT);
        uint32_t n = hm->n;
        if (__builtin_expect(n != 0, 1)) {
            __atomic_store_n(&hm->n, n - 1, __ATOMIC_RELAXED);
            __atomic_store_n(&hm->allocs, hm->allocs + 1, __ATOMIC_RELAXED);
            return hm->obj[n - 1];
        }
    }
    return hk__slab_alloc_mag(c);
}
static inline int hk_slab_free(hk_slab_cache_t *c, void *obj)
{
    hk__hot_t *h = (hk__hot_t *)(void *)c;
    if (__builtin_expect(hk__thread_pointer() == __atomic_load_n(&h->shome, __ATOMIC_RELAXED), 1)) {
        hk__slab_home_t *hm = (hk__slab_home_t *)(void *)((char *)(void *)c + HK__SLAB_HOME_AT);
        uint32_t n = hm->n;
        if (__builtin_expect((uintptr_t)obj - (uintptr_t)hm->lo < hm->span && n < HK__SLAB_HOME, 1)) {
            hm->obj[n] = obj;
            __atomic_store_n(&hm->n, n + 1, __ATOMIC_RELAXED);
            return 0;
        }
    }
    return hk__slab_free_mag(c, obj);
}
/* Empty the depot's magazines into the slabs, then destroy every empty
 * slab (dtor on each object) and give it back. Returns slabs released,
 * or -1 with errno = EINVAL for a bad handle. Other threads' magazines stay. */
long  hk_slab_cache_reap(hk_slab_cache_t *c);
/* Return the calling thread's magazines to the cache. */
int   hk_slab_cache_flush(hk_slab_cache_t *c);
int   hk_slab_cache_destroy(hk_slab_cache_t *c);
int   hk_slab_cache_stats(hk_slab_cache_t *c, hk_slab_stats_t *out);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif
