/* Arena: bump allocation from a list of chunks, each twice the last (to a
 * limit). Every chunk and every mark draws a number from one counter, so a
 * mark is "everything numbered after me": restore drops those chunks and
 * rewinds the bump pointer; marks it invalidated are remembered as a range.
 * Dropped ordinary chunks wait on a spare list (largest first) for reuse, so
 * a reset/refill loop costs no system calls; trim or destroy releases them. */
#include "pool_internal.h"
#include <string.h>

#define FIRST_CHUNK ((size_t)64 << 10)
#define MAX_CHUNK   ((size_t)64 << 20)
#define HDR         64u              /* chunk header, keeps payload 64-byte aligned */

typedef struct chunk {
    struct chunk *next;              /* older chunk */
    size_t size;                     /* whole mapping */
    uint64_t seq;
    bool huge;
} chunk_t;
_Static_assert(sizeof(chunk_t) <= HDR, "chunk header");

/* The bump range and the requested-byte count live in the handle's hot
 * block, where the inline hk_arena_alloc of heapkit/pool.h reads them:
 * aptr is the bump pointer, aend the end of the bump chunk, abytes the
 * sum of requested sizes. The inline path runs whenever the range is not
 * empty (no separate "armed" flag to load and test): a checked arena keeps
 * its range in cptr/cend instead and leaves aptr = aend = NULL, so every
 * call comes here; destroy clears them (hk__handle_kill) for the same reason. */
#define PTR(a)   (*ptr_ref(a))
#define END(a)   (*end_ref(a))
#define BYTES(a) ((a)->h.hot.abytes)

struct hk_arena {
    hk__handle_t h;
    chunk_t *cur;                    /* the bump chunk */
    chunk_t *chunks;                 /* every chunk held, newest first */
    chunk_t *spares;                 /* dropped ordinary chunks, largest first */
    size_t first_size, next_size;
    uint64_t seq;
    uint64_t floor;                  /* marks numbered <= floor are stale (reset) */
    uint64_t dead_lo, dead_hi;       /* marks in [lo, hi] were undone by a restore */
    hk_arena_stats_t st;
    char *cptr, *cend;               /* checked mode: the bump range */
};
_Static_assert(sizeof(struct hk_arena) <= HK__HANDLE_SLOT, "arena descriptor fits a slot");

HK_INLINE char **ptr_ref(hk_arena_t *a) { return hk__checked(&a->h) ? &a->cptr : &a->h.hot.aptr; }
HK_INLINE char **end_ref(hk_arena_t *a) { return hk__checked(&a->h) ? &a->cend : &a->h.hot.aend; }

hk_arena_t *hk_arena_create_ex(size_t first_chunk, unsigned flags)
{
    size_t ps = hk_vm_page_size();
    if (first_chunk == 0) first_chunk = FIRST_CHUNK;
    if (first_chunk > MAX_CHUNK) { errno = EINVAL; return NULL; }
    hk_arena_t *a = hk__handle_new(HK__MAGIC_ARENA, flags, "arena");
    if (!a) return NULL;
    a->first_size = a->next_size = hk__align_up(first_chunk, ps);
    return a;
}

static void chunk_release(hk_arena_t *a, chunk_t *c)
{
    a->st.bytes_reserved -= c->size;
    a->st.chunks--;
    if (c->huge) a->st.huge_chunks--;
    hk_vm_release(c, c->size);
}

/* Huge chunks go back to the OS at once; ordinary ones wait for reuse. */
static void chunk_retire(hk_arena_t *a, chunk_t *c)
{
    if (c->huge) { chunk_release(a, c); return; }
    chunk_t **pp = &a->spares;
    while (*pp && (*pp)->size >= c->size) pp = &(*pp)->next;
    c->next = *pp;
    *pp = c;
}

static chunk_t *chunk_new(hk_arena_t *a, size_t size, bool huge)
{
    chunk_t *c;
    if (!huge && a->spares && a->spares->size >= size) {
        c = a->spares;
        a->spares = c->next;
    } else {
        void *m;
        int e = hk_vm_alloc(size, 0, &m);
        if (e) { errno = e; return NULL; }
        c = m;
        c->size = size;
        c->huge = huge;
        a->st.bytes_reserved += size;
        a->st.chunks++;
        if (huge) a->st.huge_chunks++;
        if (a->st.bytes_reserved > a->st.peak_reserved) a->st.peak_reserved = a->st.bytes_reserved;
    }
    c->seq = ++a->seq;
    c->next = a->chunks;
    a->chunks = c;
    return c;
}

static HK_NOINLINE void *arena_alloc_slow(hk_arena_t *a, size_t size, size_t align)
{
    size_t ps = hk_vm_page_size();
    if (size > ((size_t)1 << 46)) { errno = ENOMEM; return NULL; }
    size_t need = HDR + size + (align > HDR ? align : 0);
    if (need > a->next_size / 2) {
        /* A chunk of its own, so the bump chunk keeps its free tail. */
        chunk_t *c = chunk_new(a, hk__align_up(need, ps), true);
        if (!c) return NULL;
        BYTES(a) += size;
        return (void *)hk__align_up((uintptr_t)c + HDR, align);
    }
    /* The spare serves first: a scratch loop of mark/alloc/restore settles
     * on reusing one chunk instead of mapping ever larger ones. */
    bool reuse = a->spares && a->spares->size >= need;
    chunk_t *c = chunk_new(a, reuse ? a->spares->size : a->next_size, false);
    if (!c) return NULL;
    if (!reuse && a->next_size < MAX_CHUNK) a->next_size *= 2;
    a->cur = c;
    END(a) = (char *)c + c->size;
    char *p = (char *)hk__align_up((uintptr_t)c + HDR, align);
    PTR(a) = p + size;
    BYTES(a) += size;
    return p;
}

HK_INLINE void *arena_alloc(hk_arena_t *a, size_t size, size_t align)
{
    char *p = (char *)hk__align_up((uintptr_t)PTR(a), align);
    if (hk_likely(PTR(a) && p <= END(a) && size <= (size_t)(END(a) - p))) {
        PTR(a) = p + size;
        BYTES(a) += size;
        return p;
    }
    return arena_alloc_slow(a, size, align);
}

/* hk_arena_alloc's out-of-line half (the bump itself is inline in
 * heapkit/pool.h): a new chunk, size 0, checked mode, bad handles. */
void *hk__arena_alloc_slow(hk_arena_t *a, size_t size)
{
    if (hk_unlikely(hk__handle_check(a, HK__MAGIC_ARENA, "hk_arena_alloc", "arena") != 0)) { errno = EINVAL; return NULL; }
    return arena_alloc(a, size ? size : 1, 16);
}

void *hk_arena_alloc_aligned(hk_arena_t *a, size_t size, size_t align)
{
    if (hk__handle_check(a, HK__MAGIC_ARENA, "hk_arena_alloc_aligned", "arena") != 0) { errno = EINVAL; return NULL; }
    if (!hk__is_pow2(align) || align > 4096) { errno = EINVAL; return NULL; }
    return arena_alloc(a, size ? size : 1, align);
}

void *hk_arena_calloc(hk_arena_t *a, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size) { errno = ENOMEM; return NULL; }
    void *p = hk_arena_alloc(a, n * size);
    /* Fresh chunks are zero, but restored or reset space is not. */
    if (p) memset(p, 0, n * size);
    return p;
}

char *hk_arena_strdup(hk_arena_t *a, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = hk_arena_alloc_aligned(a, n, 1);
    if (p) memcpy(p, s, n);
    return p;
}

hk_arena_mark_t hk_arena_mark(hk_arena_t *a)
{
    hk_arena_mark_t m = {0};
    if (hk__handle_check(a, HK__MAGIC_ARENA, "hk_arena_mark", "arena") != 0) return m;
    m.arena_id = a->h.id;
    m.seq = ++a->seq;
    m.chunk = a->cur;
    m.used = a->cur ? (size_t)(PTR(a) - (char *)a->cur) : 0;
    m.allocated = BYTES(a);
    return m;
}

static HK_COLD int arena_misuse(hk_arena_t *a, const char *what)
{
    if (hk__checked(&a->h)) hk__fatal("heapkit: hk_arena_restore: arena %p: %s\n", (void *)a, what);
    return EINVAL;
}

int hk_arena_restore(hk_arena_t *a, hk_arena_mark_t m)
{
    if (hk__handle_check(a, HK__MAGIC_ARENA, "hk_arena_restore", "arena") != 0) return EINVAL;
    if (m.arena_id != a->h.id) return arena_misuse(a, "mark is from another arena");
    if (m.seq <= a->floor || m.seq > a->seq || (m.seq >= a->dead_lo && m.seq <= a->dead_hi))
        return arena_misuse(a, "mark is stale (undone by an earlier restore or reset)");
    /* Check the mark's chunk is still held before changing anything. */
    if (m.chunk) {
        chunk_t *c = a->chunks;
        while (c && c != m.chunk) c = c->next;
        if (!c || c->seq > m.seq || m.used < HDR || m.used > c->size)
            return arena_misuse(a, "mark does not match this arena's chunks");
    }
    while (a->chunks && a->chunks->seq > m.seq) {
        chunk_t *c = a->chunks;
        a->chunks = c->next;
        chunk_retire(a, c);
    }
    a->cur = m.chunk;
    PTR(a) = m.chunk ? (char *)m.chunk + m.used : NULL;
    END(a) = m.chunk ? (char *)m.chunk + ((chunk_t *)m.chunk)->size : NULL;
    BYTES(a) = m.allocated;
    if (a->dead_lo <= a->dead_hi && a->dead_hi >= m.seq) a->dead_lo = HK_MIN(a->dead_lo, m.seq + 1);
    else a->dead_lo = m.seq + 1;
    a->dead_hi = a->seq;
    return 0;
}

int hk_arena_reset(hk_arena_t *a)
{
    if (hk__handle_check(a, HK__MAGIC_ARENA, "hk_arena_reset", "arena") != 0) return EINVAL;
    while (a->chunks) {
        chunk_t *c = a->chunks;
        a->chunks = c->next;
        chunk_retire(a, c);
    }
    /* The largest kept chunk becomes current; the others follow as it fills. */
    a->cur = NULL;
    PTR(a) = NULL;
    END(a) = NULL;
    if (a->spares) {
        chunk_t *c = chunk_new(a, a->spares->size, false);
        a->cur = c;
        PTR(a) = (char *)c + HDR;
        END(a) = (char *)c + c->size;
        a->next_size = HK_MIN(c->size * 2, MAX_CHUNK);
    } else {
        a->next_size = a->first_size;
    }
    BYTES(a) = 0;
    a->floor = a->seq;
    a->dead_lo = 1;
    a->dead_hi = 0;
    return 0;
}

int hk_arena_destroy(hk_arena_t *a)
{
    if (hk__handle_check(a, HK__MAGIC_ARENA, "hk_arena_destroy", "arena") != 0) return EINVAL;
    hk__spin_lock(&hk__handle_lock);
    if (hk__handle_magic(a) != HK__MAGIC_ARENA) { hk__spin_unlock(&hk__handle_lock); return EINVAL; }
    hk__handle_kill(a);
    hk__spin_unlock(&hk__handle_lock);
    while (a->chunks) {
        chunk_t *c = a->chunks;
        a->chunks = c->next;
        hk_vm_release(c, c->size);
    }
    while (a->spares) {
        chunk_t *c = a->spares;
        a->spares = c->next;
        hk_vm_release(c, c->size);
    }
    a->cur = NULL;
    return 0;
}

int hk_arena_trim(hk_arena_t *a)
{
    if (hk__handle_check(a, HK__MAGIC_ARENA, "hk_arena_trim", "arena") != 0) return EINVAL;
    while (a->spares) {
        chunk_t *c = a->spares;
        a->spares = c->next;
        chunk_release(a, c);
    }
    return 0;
}

int hk_arena_stats(hk_arena_t *a, hk_arena_stats_t *out)
{
    if (hk__handle_check(a, HK__MAGIC_ARENA, "hk_arena_stats", "arena") != 0 || !out) return EINVAL;
    *out = a->st;
    out->bytes_allocated = BYTES(a);
    return 0;
}
