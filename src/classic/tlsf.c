/* The TLSF engine (Two-Level Segregated Fit, Masmano et al.): malloc and free
 * in O(1) whatever the heap size. A size maps to a first level (its most
 * significant bit) and a second level (the next SL_LOG bits); one bitmap of
 * non-empty first levels and one per first level of non-empty lists find a
 * fitting list with two bit scans. The request is rounded up to the next list
 * boundary first ("good fit"), so the head of the list found always fits.
 *
 *   allocated:  [hdr: size|tag|P|A][payload ..........................]
 *   free:       [hdr][next][prev] .......................... [prev_phys]
 *
 * The last word of a free block points back to its header: the block after
 * it reaches its free physical neighbour in one step (P says whether it may).
 * The header tag is a hash of address and size that makes stray pointers
 * and overwritten headers detectable. No operation loops over blocks. */
#include "engine_impl.h"
#include <errno.h>
#include <string.h>

#define W        8u
#define ALIGN    16u
#define MINBLK   32u
#define A_BIT    1u
#define P_BIT    2u
#define SIZE_MASK 0x0000fffffffffff0ull

#define SL_LOG   5
#define SL_COUNT (1u << SL_LOG)
#define FL_SHIFT (SL_LOG + 4)                 /* sizes below 512 are mapped linearly */
#define SMALL_SIZE (1u << FL_SHIFT)
#define FL_COUNT (48 - FL_SHIFT + 1)

#ifndef HK_TLSF_SHRINK
#define HK_TLSF_SHRINK ((size_t)1 << 20)
#endif
#ifndef HK_TLSF_TOP_KEEP
#define HK_TLSF_TOP_KEEP ((size_t)256 << 10)
#endif

typedef struct tlsf {
    struct hk_engine base;
    char *first;
    int end_prev_alloc;
    int regrow_watch;           /* set by a shrink: growing again doubles shrink_at */
    size_t shrink_at;           /* free top size that is given back (adapts like glibc's trim threshold) */
    uint64_t fl_bitmap;
    uint32_t sl_bitmap[FL_COUNT];
    char *heads[FL_COUNT][SL_COUNT];
} tlsf_t;

/* ---- block words (same layout rules as the segregated engine) -------- */

HK_INLINE uint64_t rd(const char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
HK_INLINE void wr(char *p, uint64_t v) { memcpy(p, &v, 8); }
HK_INLINE char *rdp(const char *p) { char *v; memcpy(&v, p, sizeof v); return v; }
HK_INLINE void wrp(char *p, char *v) { memcpy(p, &v, sizeof v); }

HK_INLINE uint64_t tag_of(const char *b, size_t size)
{
    uint64_t x = ((uint64_t)(uintptr_t)b >> 3) ^ ((uint64_t)size << 19) ^ 0x7f4a7c15u;
    return (x * 0xbf58476d1ce4e5b9ull) >> 48;
}
HK_INLINE uint64_t mkhdr(const char *b, size_t size, unsigned flags) { return size | flags | (tag_of(b, size) << 48); }
HK_INLINE size_t hsize(uint64_t h) { return (size_t)(h & SIZE_MASK); }
HK_INLINE bool htag_ok(const char *b, uint64_t h) { return (h >> 48) == tag_of(b, hsize(h)); }
HK_INLINE char *heap_end(tlsf_t *t) { return hk_sbrk_hi(&t->base.heap); }
HK_INLINE size_t bsize(const char *b) { return hsize(rd(b)); }

/* A heap that grows again after giving its top back is breathing: make the
 * next give-back need twice as much free top, so it stops refaulting pages. */
HK_INLINE bool heap_grow(tlsf_t *t, size_t incr)
{
    if (hk_unlikely(t->regrow_watch)) {
        t->regrow_watch = 0;
        if (t->shrink_at < ((size_t)1 << 36)) t->shrink_at *= 2;
    }
    return hk_sbrk_grow(&t->base.heap, incr) != NULL;
}

HK_INLINE void set_next_prev(tlsf_t *t, char *b, size_t size, bool alloc)
{
    char *n = b + size;
    if (n == heap_end(t)) { t->end_prev_alloc = alloc; return; }
    uint64_t h = rd(n);
    wr(n, alloc ? (h | P_BIT) : (h & ~(uint64_t)P_BIT));
}
HK_INLINE void write_free(char *b, size_t size, unsigned pbit)
{
    wr(b, mkhdr(b, size, pbit));
    wrp(b + size - W, b);
}

/* A free-list node that is safe to unlink: inside the heap, a valid free
 * header, and links that are NULL or land on block boundaries in the heap.
 * This stops a use-after-free write over the links from steering malloc. */
HK_INLINE bool link_ok(const tlsf_t *t, const char *x, const char *end)
{
    return !x || (x >= t->first && x + MINBLK <= end && !((uintptr_t)(x + W) & (ALIGN - 1)));
}
static bool node_ok(tlsf_t *t, const char *b)
{
    const char *end = heap_end(t);
    if (!b || !link_ok(t, b, end)) return false;
    uint64_t h = rd(b);
    size_t size = hsize(h);
    return htag_ok(b, h) && !(h & A_BIT) && size >= MINBLK && size <= (size_t)(end - b) &&
           link_ok(t, rdp(b + W), end) && link_ok(t, rdp(b + 2 * W), end);
}

/* ---- the two-level mapping -------------------------------------------- */

/* The list a block of `size` bytes belongs to. */
HK_INLINE void mapping_insert(size_t size, unsigned *fl, unsigned *sl)
{
    if (size < SMALL_SIZE) { *fl = 0; *sl = (unsigned)(size >> 4); return; }
    unsigned msb = 63u - (unsigned)__builtin_clzll(size);
    *fl = msb - FL_SHIFT + 1;
    *sl = (unsigned)(size >> (msb - SL_LOG)) - SL_COUNT;
}
/* The first list whose every block is at least `size` bytes. */
HK_INLINE void mapping_search(size_t size, unsigned *fl, unsigned *sl)
{
    if (size >= SMALL_SIZE) {
        unsigned msb = 63u - (unsigned)__builtin_clzll(size);
        size += ((size_t)1 << (msb - SL_LOG)) - 1;
    }
    mapping_insert(size, fl, sl);
}

/* Exported for the unit tests of the mapping. */
void hk__tlsf_mapping_insert(size_t size, unsigned *fl, unsigned *sl) HK_HIDDEN;
void hk__tlsf_mapping_search(size_t size, unsigned *fl, unsigned *sl) HK_HIDDEN;
void hk__tlsf_mapping_insert(size_t size, unsigned *fl, unsigned *sl) { mapping_insert(size, fl, sl); }
void hk__tlsf_mapping_search(size_t size, unsigned *fl, unsigned *sl) { mapping_search(size, fl, sl); }

HK_INLINE void list_insert(tlsf_t *t, char *b, size_t size)
{
    unsigned fl, sl;
    mapping_insert(size, &fl, &sl);
    char *h = t->heads[fl][sl];
    wrp(b + W, h);
    wrp(b + 2 * W, NULL);
    if (h) wrp(h + 2 * W, b);
    t->heads[fl][sl] = b;
    t->sl_bitmap[fl] |= 1u << sl;
    t->fl_bitmap |= 1ull << fl;
}
HK_INLINE void list_remove(tlsf_t *t, char *b, size_t size)
{
    unsigned fl, sl;
    mapping_insert(size, &fl, &sl);
    char *n = rdp(b + W), *p = rdp(b + 2 * W);
    if (p) wrp(p + W, n); else t->heads[fl][sl] = n;
    if (n) wrp(n + 2 * W, p);
    if (!t->heads[fl][sl]) {
        t->sl_bitmap[fl] &= ~(1u << sl);
        if (!t->sl_bitmap[fl]) t->fl_bitmap &= ~(1ull << fl);
    }
}

/* Head of the first non-empty list at or above (fl, sl): two bit scans. */
HK_INLINE char *find_suitable(tlsf_t *t, unsigned fl, unsigned sl)
{
    if (fl >= FL_COUNT) return NULL;
    uint32_t sm = sl < SL_COUNT ? t->sl_bitmap[fl] & (~0u << sl) : 0;
    if (!sm) {
        uint64_t fm = fl + 1 < 64 ? t->fl_bitmap & (~0ull << (fl + 1)) : 0;
        if (!fm) return NULL;
        fl = (unsigned)__builtin_ctzll(fm);
        sm = t->sl_bitmap[fl];
    }
    return t->heads[fl][__builtin_ctz(sm)];
}

/* ---- allocation ------------------------------------------------------------ */

static char *carve(tlsf_t *t, char *b, size_t size, size_t asize, unsigned pbit)
{
    size_t rest = size - asize;
    if (rest < MINBLK) {
        wr(b, mkhdr(b, size, pbit | A_BIT));
        set_next_prev(t, b, size, true);
        return b;
    }
    wr(b, mkhdr(b, asize, pbit | A_BIT));
    write_free(b + asize, rest, P_BIT);
    list_insert(t, b + asize, rest);
    return b;
}

static HK_NOINLINE char *grow_for(tlsf_t *t, size_t asize)
{
    char *end = heap_end(t), *b = end;
    size_t have = 0;
    unsigned pbit = P_BIT;
    if (!t->end_prev_alloc) {
        b = rdp(end - W);
        have = bsize(b);
        pbit = (unsigned)(rd(b) & P_BIT);
    }
    if (!heap_grow(t, asize - have)) return NULL;
    if (have) list_remove(t, b, have);
    return carve(t, b, asize, asize, pbit);
}

HK_INLINE size_t adjust(size_t n)
{
    if (n > SIZE_MASK - 64) return 0;
    size_t a = (n + W + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    return a < MINBLK ? MINBLK : a;
}

static size_t tlsf_check(hk_engine_t *e);

static void *tlsf_malloc(hk_engine_t *e, size_t n)
{
    tlsf_t *t = (tlsf_t *)e;
    size_t asize = adjust(n);
    if (!asize) return NULL;
    unsigned fl, sl;
    mapping_search(asize, &fl, &sl);
    char *b = find_suitable(t, fl, sl);
    if (!b) {
        /* the request's own list may still hold a fitting head: one look, no loop */
        mapping_insert(asize, &fl, &sl);
        b = t->heads[fl][sl];
        if (b && node_ok(t, b) && bsize(b) < asize) b = NULL;
    }
    if (b) {
        if (hk_unlikely(!node_ok(t, b))) {
            hk__engine_misuse(e, HK_ECORRUPT, b + W, "free list damaged (write after free?)");
            return NULL;
        }
        size_t size = bsize(b);
        list_remove(t, b, size);
        b = carve(t, b, size, asize, (unsigned)(rd(b) & P_BIT));
    } else {
        b = grow_for(t, asize);
        if (!b) return NULL;
    }
    hk_assert_expensive(tlsf_check(e) == 0);
    return b + W;
}

static char *validate(tlsf_t *t, const void *p, int *code)
{
    const char *c = p;
    char *end = heap_end(t);
    *code = HK_EINVALID;
    if (c < t->first + W || c >= end || ((uintptr_t)c & (ALIGN - 1))) return NULL;
    char *b = (char *)c - W;
    uint64_t h = rd(b);
    size_t size = hsize(h);
    if (!htag_ok(b, h) || size < MINBLK || size > (size_t)(end - b)) return NULL;
    if (!(h & A_BIT)) { *code = HK_EDOUBLEFREE; return NULL; }
    char *n = b + size;
    if (n == end) { if (!t->end_prev_alloc) { *code = HK_ECORRUPT; return NULL; } }
    else {
        uint64_t nh = rd(n);
        if (!htag_ok(n, nh)) return NULL;
        if (!(nh & P_BIT)) { *code = HK_ECORRUPT; return NULL; }
        if (!(nh & A_BIT) && !node_ok(t, n)) { *code = HK_ECORRUPT; return NULL; }
    }
    if (!(h & P_BIT)) {
        /* the free neighbour before must be intact: free and realloc merge into it */
        char *pb = rdp(b - W);
        uint64_t ph;
        if (pb < t->first || pb > b - MINBLK || ((uintptr_t)(pb + W) & (ALIGN - 1)) ||
            !node_ok(t, pb) || pb + hsize(ph = rd(pb)) != b) {
            *code = HK_ECORRUPT;
            return NULL;
        }
    }
    return b;
}

static void release(tlsf_t *t, char *b, size_t size)
{
    unsigned pbit = (unsigned)(rd(b) & P_BIT);
    wr(b, mkhdr(b, size, pbit));    /* a stale free header makes a second free a double free */
    if (!pbit) {
        char *pb = rdp(b - W);
        size_t ps = bsize(pb);
        list_remove(t, pb, ps);
        b = pb;
        size += ps;
        pbit = (unsigned)(rd(b) & P_BIT);
    }
    char *n = b + size;
    if (n != heap_end(t) && !(rd(n) & A_BIT)) {
        size_t ns = bsize(n);
        list_remove(t, n, ns);
        size += ns;
    }
    if (b + size == heap_end(t) && size >= t->shrink_at) {
        size_t cut = (size - HK_TLSF_TOP_KEEP) & ~(size_t)(ALIGN - 1);
        if (hk_sbrk_shrink(&t->base.heap, cut) == 0) { size -= cut; t->regrow_watch = 1; }
    }
    write_free(b, size, pbit);
    list_insert(t, b, size);
    set_next_prev(t, b, size, false);
}

static int tlsf_free(hk_engine_t *e, void *p)
{
    tlsf_t *t = (tlsf_t *)e;
    int code;
    char *b = validate(t, p, &code);
    if (!b) return hk__engine_misuse(e, code, p, code == HK_EDOUBLEFREE ? "block is already free"
                                  : code == HK_ECORRUPT ? "a neighbour disagrees about this block" : "not a block start");
    release(t, b, bsize(b));
    hk_assert_expensive(tlsf_check(e) == 0);
    return HK_OK;
}

static void trim(tlsf_t *t, char *b, size_t size, size_t asize)
{
    if (size - asize < MINBLK) return;
    uint64_t h = rd(b);
    wr(b, mkhdr(b, asize, (unsigned)(h & (P_BIT | A_BIT))));
    char *r = b + asize;
    wr(r, mkhdr(r, size - asize, P_BIT | A_BIT));
    set_next_prev(t, r, size - asize, true);
    release(t, r, size - asize);
}

static void *tlsf_realloc(hk_engine_t *e, void *p, size_t n)
{
    tlsf_t *t = (tlsf_t *)e;
    int code;
    char *b = validate(t, p, &code);
    if (!b) { hk__engine_misuse(e, code, p, "realloc of a pointer that is not a live block"); return NULL; }
    size_t asize = adjust(n);
    if (!asize) return NULL;
    size_t size = bsize(b);
    if (asize <= size) { trim(t, b, size, asize); return p; }
    char *nx = b + size, *end = heap_end(t);
    size_t avail = size;
    if (nx != end && !(rd(nx) & A_BIT)) avail += bsize(nx);
    if (avail >= asize || nx + (avail - size) == end) {
        if (avail < asize) {
            if (!heap_grow(t, asize - avail)) return NULL;
            if (avail > size) list_remove(t, nx, avail - size);
            avail = asize;
        } else if (avail > size) {
            list_remove(t, nx, avail - size);
        }
        wr(b, mkhdr(b, avail, (unsigned)(rd(b) & P_BIT) | A_BIT));
        set_next_prev(t, b, avail, true);
        trim(t, b, avail, asize);
        return p;
    }
    void *q = tlsf_malloc(e, n);
    if (!q) return NULL;
    memcpy(q, p, size - W);
    release(t, b, size);
    return q;
}

static void *tlsf_memalign(hk_engine_t *e, size_t align, size_t n)
{
    tlsf_t *t = (tlsf_t *)e;
    size_t asize = adjust(n);
    if (!asize || align > SIZE_MASK / 4 || asize > SIZE_MASK - align - MINBLK) return NULL;
    char *p = tlsf_malloc(e, asize + align + MINBLK);
    if (!p) return NULL;
    char *b = p - W;
    size_t size = bsize(b);
    if (((uintptr_t)p & (align - 1)) == 0) { trim(t, b, size, asize); return p; }
    char *q = (char *)(((uintptr_t)p + MINBLK + align - 1) & ~(uintptr_t)(align - 1));
    size_t lead = (size_t)(q - p);
    char *nb = b + lead;
    uint64_t h = rd(b);
    wr(nb, mkhdr(nb, size - lead, A_BIT));
    wr(b, mkhdr(b, lead, (unsigned)(h & P_BIT) | A_BIT));
    release(t, b, lead);
    trim(t, nb, size - lead, asize);
    return q;
}

static size_t tlsf_usable(hk_engine_t *e, const void *p)
{
    int code;
    char *b = validate((tlsf_t *)e, p, &code);
    return b ? bsize(b) - W : 0;
}

/* ---- check / walk / stats ---------------------------------------------------- */

static size_t tlsf_check(hk_engine_t *e)
{
    tlsf_t *t = (tlsf_t *)e;
    size_t bad = 0, nfree = 0;
    char *end = heap_end(t);
    if (t->first != hk_sbrk_lo(&e->heap) + W) bad++;
    bool prev_alloc = true;
    char *b = t->first;
    while (b < end) {
        uint64_t h = rd(b);
        size_t size = hsize(h);
        if (!htag_ok(b, h)) bad++;
        if (size < MINBLK || size > (size_t)(end - b)) { bad++; break; }
        if (!!(h & P_BIT) != prev_alloc) bad++;
        bool a = h & A_BIT;
        if (!a) {
            nfree++;
            if (rdp(b + size - W) != b) bad++;        /* prev_phys pointer */
            if (!prev_alloc) bad++;                   /* uncoalesced neighbours */
            unsigned fl, sl;
            mapping_insert(size, &fl, &sl);
            if (!(t->sl_bitmap[fl] & (1u << sl))) bad++;
        }
        prev_alloc = a;
        b += size;
    }
    if (b != end) bad++;
    if (prev_alloc != !!t->end_prev_alloc) bad++;
    size_t listed = 0;
    for (unsigned fl = 0; fl < FL_COUNT; fl++) {
        if (!!(t->fl_bitmap & (1ull << fl)) != (t->sl_bitmap[fl] != 0)) bad++;
        for (unsigned sl = 0; sl < SL_COUNT; sl++) {
            if (!!(t->sl_bitmap[fl] & (1u << sl)) != (t->heads[fl][sl] != NULL)) bad++;
            char *prev = NULL;
            for (char *f = t->heads[fl][sl]; f; f = rdp(f + W)) {
                if (f < t->first || f + MINBLK > end || ((uintptr_t)(f + W) & (ALIGN - 1))) { bad++; break; }
                uint64_t h = rd(f);
                unsigned f1, s1;
                mapping_insert(hsize(h), &f1, &s1);
                if (!htag_ok(f, h) || (h & A_BIT) || f1 != fl || s1 != sl) bad++;
                if (rdp(f + 2 * W) != prev) bad++;
                prev = f;
                if (++listed > nfree) { bad++; break; }
            }
        }
    }
    if (t->fl_bitmap >> FL_COUNT) bad++;
    if (listed != nfree) bad++;
    return bad;
}

static void tlsf_walk(hk_engine_t *e, hk_walk_fn fn, void *arg)
{
    tlsf_t *t = (tlsf_t *)e;
    char *end = heap_end(t);
    for (char *b = t->first; b < end;) {
        size_t size = bsize(b);
        if (size < MINBLK || size > (size_t)(end - b)) break;
        fn(arg, b, size, rd(b) & A_BIT);
        b += size;
    }
}

static void tlsf_stats(hk_engine_t *e, hk_engine_stats_t *out)
{
    tlsf_t *t = (tlsf_t *)e;
    char *end = heap_end(t);
    for (char *b = t->first; b < end;) {
        size_t size = bsize(b);
        if (size < MINBLK || size > (size_t)(end - b)) break;
        if (rd(b) & A_BIT) { out->live_bytes += size - W; out->live_blocks++; }
        else {
            out->free_bytes += size; out->free_blocks++;
            if (size > out->largest_free) out->largest_free = size;
        }
        b += size;
    }
    out->footprint = e->heap.brk;
    out->peak_footprint = e->heap.peak;
}

static void tlsf_info(const hk_engine_t *e, hk_engine_info_t *out)
{
    out->overhead = W;
    out->min_block = MINBLK;
    out->alignment = ALIGN;
    size_t cap = e->cfg.max_size < SIZE_MASK ? e->cfg.max_size : SIZE_MASK;
    out->max_request = cap > 2 * MINBLK ? cap - 2 * MINBLK : 0;
}

static int tlsf_init(hk_engine_t *e)
{
    tlsf_t *t = (tlsf_t *)e;
    int err = hk_sbrk_init(&e->heap, e->cfg.max_size);
    if (err) return err;
    if (!hk_sbrk_grow(&e->heap, W)) return ENOMEM;
    t->first = hk_sbrk_lo(&e->heap) + W;
    t->end_prev_alloc = 1;
    t->shrink_at = HK_TLSF_SHRINK;
    return 0;
}

const hk_engine_ops_t hk__engine_tlsf = {
    .name = "tlsf",
    .description = "two-level segregated fit: O(1) malloc/free with bitmaps, good fit, boundary-tag coalescing",
    .state_size = sizeof(tlsf_t),
    .init = tlsf_init,
    .malloc = tlsf_malloc,
    .free = tlsf_free,
    .realloc = tlsf_realloc,
    .memalign = tlsf_memalign,
    .usable_size = tlsf_usable,
    .check = tlsf_check,
    .walk = tlsf_walk,
    .stats = tlsf_stats,
    .info = tlsf_info,
};
