/* The segregated-fit engine: the project's best-utilization classic engine.
 * Exact 16-byte size classes up to 1 KiB and 8 classes per power of two above,
 * a bitmap of non-empty classes, best fit, immediate coalescing, and blocks
 * whose only per-block cost is one 8-byte header (no footer while allocated):
 *
 *   allocated:  [hdr: size|tag|P|A][payload ....................]
 *   free:       [hdr][next][prev] ..................... [footer=hdr]
 *
 * hdr = size (multiple of 16, bits 4..47) | 16-bit tag (bits 48..63, a hash
 * of the block's address and size, so a stray pointer almost never looks like
 * a block) | P (previous block allocated) | A (this block allocated).
 * Payloads are 16-aligned, so headers sit at 8 mod 16 and the heap starts
 * with one 8-byte pad word. There is no epilogue: the P bit of the block past
 * the end lives in the engine state. Small requests (below the moving average
 * of recent ones) are carved from the high end of a free block and large ones
 * from the low end, and a small request that must grow the heap grows it by a
 * small chunk (at most 1/16 of the heap) whose top it takes: small and large blocks then sit apart, so holes left by
 * freed large blocks coalesce instead of being pinned by small neighbours. */
#include "engine_impl.h"
#include <errno.h>
#include <string.h>

#ifndef HK_SEG_SMALL
#define HK_SEG_SMALL 512        /* only blocks below this may count as small, */
#endif
#ifndef HK_SEG_AVG_W
#define HK_SEG_AVG_W 16         /* weight of the moving average of request sizes */
#endif
#ifndef HK_SEG_CHUNK
#define HK_SEG_CHUNK 2048       /* growth for a small block: up to this much, */
#endif
#ifndef HK_SEG_CHUNK_DIV
#define HK_SEG_CHUNK_DIV 16     /* and never more than heap size / this */
#endif
#ifndef HK_SEG_SEARCH
#define HK_SEG_SEARCH 64        /* list nodes examined for best fit in a large class */
#endif
#ifndef HK_SEG_SHRINK
#define HK_SEG_SHRINK ((size_t)1 << 20) /* a free top this large goes back to the region (at first), */
#endif
#ifndef HK_SEG_TOP_KEEP
#define HK_SEG_TOP_KEEP ((size_t)256 << 10) /* less this much, so a heap breathing at the top does not refault */
#endif

#define W        8u
#define ALIGN    16u
#define MINBLK   32u
#define A_BIT    1u
#define P_BIT    2u
#define SIZE_MASK 0x0000fffffffffff0ull
#define EXACT_MAX 1024u
#define N_EXACT  ((EXACT_MAX / ALIGN) - 1)      /* classes 0..62: 32..1024 */
#define N_CLASS  (N_EXACT + 8 * (48 - 10))
#define N_WORDS  ((N_CLASS + 63) / 64)

typedef struct seg {
    struct hk_engine base;
    char *first;                /* first block header (base + 8) */
    int end_prev_alloc;         /* P bit of the (virtual) block past the end */
    int regrow_watch;           /* set by a shrink: growing again doubles shrink_at */
    size_t shrink_at;           /* free top size that is given back (adapts like glibc's trim threshold) */
    uint64_t bitmap[N_WORDS];
    char *heads[N_CLASS];
    size_t avg;                 /* moving average of request sizes: the small/large split */
} seg_t;

/* ---- block words ------------------------------------------------------ */

HK_INLINE uint64_t rd(const char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
HK_INLINE void wr(char *p, uint64_t v) { memcpy(p, &v, 8); }
HK_INLINE char *rdp(const char *p) { char *v; memcpy(&v, p, sizeof v); return v; }
HK_INLINE void wrp(char *p, char *v) { memcpy(p, &v, sizeof v); }

HK_INLINE uint64_t tag_of(const char *b, size_t size)
{
    uint64_t x = ((uint64_t)(uintptr_t)b >> 3) ^ ((uint64_t)size << 17) ^ 0x5bd1e995u;
    return (x * 0x9e3779b97f4a7c15ull) >> 48;
}
HK_INLINE uint64_t mkhdr(const char *b, size_t size, unsigned flags) { return size | flags | (tag_of(b, size) << 48); }
HK_INLINE size_t hsize(uint64_t h) { return (size_t)(h & SIZE_MASK); }
HK_INLINE bool htag_ok(const char *b, uint64_t h) { return (h >> 48) == tag_of(b, hsize(h)); }

HK_INLINE char *heap_end(seg_t *s) { return hk_sbrk_hi(&s->base.heap); }
HK_INLINE size_t bsize(const char *b) { return hsize(rd(b)); }
HK_INLINE bool b_alloc(const char *b) { return rd(b) & A_BIT; }
HK_INLINE bool b_prev_alloc(const char *b) { return rd(b) & P_BIT; }

/* Set the P bit of whatever follows block b (a header or the end flag). */
/* A heap that grows again after giving its top back is breathing: make the
 * next give-back need twice as much free top, so it stops refaulting pages. */
HK_INLINE bool heap_grow(seg_t *s, size_t incr)
{
    if (hk_unlikely(s->regrow_watch)) {
        s->regrow_watch = 0;
        if (s->shrink_at < ((size_t)1 << 36)) s->shrink_at *= 2;
    }
    return hk_sbrk_grow(&s->base.heap, incr) != NULL;
}

HK_INLINE void set_next_prev(seg_t *s, char *b, size_t size, bool alloc)
{
    char *n = b + size;
    if (n == heap_end(s)) { s->end_prev_alloc = alloc; return; }
    uint64_t h = rd(n);
    wr(n, alloc ? (h | P_BIT) : (h & ~(uint64_t)P_BIT));
}
HK_INLINE void write_free(char *b, size_t size, unsigned pbit)
{
    uint64_t h = mkhdr(b, size, pbit);
    wr(b, h);
    wr(b + size - W, h);
}

/* A free-list node that is safe to unlink: inside the heap, a valid free
 * header, and links that are NULL or land on block boundaries in the heap.
 * This stops a use-after-free write over the links from steering malloc. */
HK_INLINE bool link_ok(const seg_t *s, const char *x, const char *end)
{
    return !x || (x >= s->first && x + MINBLK <= end && !((uintptr_t)(x + W) & (ALIGN - 1)));
}
static bool node_ok(seg_t *s, const char *b)
{
    const char *end = heap_end(s);
    if (!b || !link_ok(s, b, end)) return false;
    uint64_t h = rd(b);
    size_t size = hsize(h);
    return htag_ok(b, h) && !(h & A_BIT) && size >= MINBLK && size <= (size_t)(end - b) &&
           link_ok(s, rdp(b + W), end) && link_ok(s, rdp(b + 2 * W), end);
}

/* ---- classes ------------------------------------------------------------ */

HK_INLINE unsigned class_of(size_t size)
{
    if (size <= EXACT_MAX) return (unsigned)(size >> 4) - 2;
    unsigned msb = 63u - (unsigned)__builtin_clzll(size);
    return N_EXACT + (msb - 10) * 8 + (unsigned)((size >> (msb - 3)) & 7);
}

HK_INLINE void list_insert(seg_t *s, char *b, size_t size)
{
    unsigned c = class_of(size);
    char *h = s->heads[c];
    wrp(b + W, h);
    wrp(b + 2 * W, NULL);
    if (h) wrp(h + 2 * W, b);
    s->heads[c] = b;
    s->bitmap[c >> 6] |= 1ull << (c & 63);
}
HK_INLINE void list_remove(seg_t *s, char *b, size_t size)
{
    unsigned c = class_of(size);
    char *n = rdp(b + W), *p = rdp(b + 2 * W);
    if (p) wrp(p + W, n); else s->heads[c] = n;
    if (n) wrp(n + 2 * W, p);
    if (!s->heads[c]) s->bitmap[c >> 6] &= ~(1ull << (c & 63));
}

/* First non-empty class >= c, or N_CLASS. Bounded by the bitmap's words. */
HK_INLINE unsigned next_class(const seg_t *s, unsigned c)
{
    unsigned w = c >> 6;
    uint64_t m = s->bitmap[w] & (~0ull << (c & 63));
    while (!m) {
        if (++w >= N_WORDS) return N_CLASS;
        m = s->bitmap[w];
    }
    return w * 64 + (unsigned)__builtin_ctzll(m);
}

/* Best fit: the smallest free block of at least asize, or NULL. */
static char *find_fit(seg_t *s, size_t asize)
{
    unsigned c = next_class(s, class_of(asize));
    while (c < N_CLASS) {
        char *b = s->heads[c];
        if (c < N_EXACT) return b;  /* every block of an exact class has the same size */
        char *best = NULL;
        size_t bs = SIZE_MAX;
        int n = 0;
        for (; b && n < HK_SEG_SEARCH; b = rdp(b + W), n++) {
            if (hk_unlikely(!node_ok(s, b))) return b;   /* malloc reports it */
            size_t sz = bsize(b);
            if (sz >= asize && sz < bs) { best = b; bs = sz; if (sz == asize) break; }
        }
        if (best) return best;
        c = next_class(s, c + 1);
    }
    return NULL;
}

/* ---- allocation ----------------------------------------------------------- */

/* "Small" is relative: below the recent average request and below a cap. */
HK_INLINE bool is_small(const seg_t *s, size_t asize)
{
    return asize < s->avg && asize < HK_SEG_SMALL;
}

/* Turn free block b (already off its list, `size` bytes, pbit its P bit) into
 * an allocated block of asize, returned; a rest of MINBLK or more stays free. */
static char *place(seg_t *s, char *b, size_t size, size_t asize, unsigned pbit)
{
    size_t rest = size - asize;
    if (rest < MINBLK) {
        wr(b, mkhdr(b, size, pbit | A_BIT));
        set_next_prev(s, b, size, true);
        return b;
    }
    if (is_small(s, asize)) {
        /* small: take the high end, the free rest stays where it was */
        write_free(b, rest, pbit);
        list_insert(s, b, rest);
        char *a = b + rest;
        wr(a, mkhdr(a, asize, A_BIT));
        set_next_prev(s, a, asize, true);
        return a;
    }
    wr(b, mkhdr(b, asize, pbit | A_BIT));
    char *r = b + asize;
    write_free(r, rest, P_BIT);
    list_insert(s, r, rest);
    return b;
}

/* Grow the heap for asize; reuses a free last block and asks only for what it lacks. */
static HK_NOINLINE char *grow_for(seg_t *s, size_t asize)
{
    char *end = heap_end(s);
    char *b = end;
    size_t have = 0;
    unsigned pbit = s->end_prev_alloc ? P_BIT : 0;
    if (!s->end_prev_alloc) {
        have = hsize(rd(end - W));
        b = end - have;
        pbit = b_prev_alloc(b) ? P_BIT : 0;
    }
    size_t need = asize - have, want = need;
    if (is_small(s, asize)) {
        /* a small block takes the top of a fresh chunk; large ones fill it from below */
        size_t chunk = HK_MIN((size_t)HK_SEG_CHUNK, (s->base.heap.brk / HK_SEG_CHUNK_DIV) & ~(size_t)(ALIGN - 1));
        if (want < chunk) want = chunk;
    }
    if (heap_grow(s, want)) need = want;
    else if (want == need || !heap_grow(s, need)) return NULL;
    if (have) list_remove(s, b, have);
    s->end_prev_alloc = 0;  /* place() sets it */
    return place(s, b, have + need, asize, pbit);
}

HK_INLINE size_t adjust(size_t n)
{
    if (n > SIZE_MASK - 64) return 0;
    size_t a = (n + W + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    return a < MINBLK ? MINBLK : a;
}

static size_t seg_check(hk_engine_t *e);

static void *seg_malloc(hk_engine_t *e, size_t n)
{
    seg_t *s = (seg_t *)e;
    size_t asize = adjust(n);
    if (!asize) return NULL;
    s->avg += ((ptrdiff_t)asize - (ptrdiff_t)s->avg) / HK_SEG_AVG_W;
    char *b = find_fit(s, asize);
    if (b) {
        if (hk_unlikely(!node_ok(s, b))) {
            hk__engine_misuse(e, HK_ECORRUPT, b + W, "free list damaged (write after free?)");
            return NULL;
        }
        size_t size = bsize(b);
        list_remove(s, b, size);
        b = place(s, b, size, asize, b_prev_alloc(b) ? P_BIT : 0);
    } else {
        b = grow_for(s, asize);
        if (!b) return NULL;
    }
    hk_assert_expensive(seg_check(e) == 0);
    return b + W;
}

/* ---- free ------------------------------------------------------------------ */

/* Validate the block behind user pointer p. Returns the block or NULL with
 * *code set (HK_EINVALID, HK_EDOUBLEFREE or HK_ECORRUPT). */
static char *validate(seg_t *s, const void *p, int *code)
{
    const char *c = p;
    char *lo = s->first, *end = heap_end(s);
    *code = HK_EINVALID;
    if (c < lo + W || c >= end || ((uintptr_t)c & (ALIGN - 1))) return NULL;
    char *b = (char *)c - W;
    uint64_t h = rd(b);
    size_t size = hsize(h);
    if (!htag_ok(b, h) || size < MINBLK || size > (size_t)(end - b)) return NULL;
    if (!(h & A_BIT)) { *code = HK_EDOUBLEFREE; return NULL; }
    /* the block after must agree that this one is allocated */
    char *n = b + size;
    if (n == end) { if (!s->end_prev_alloc) { *code = HK_ECORRUPT; return NULL; } }
    else {
        uint64_t nh = rd(n);
        if (!htag_ok(n, nh)) return NULL;
        if (!(nh & P_BIT)) { *code = HK_ECORRUPT; return NULL; }
        if (!(nh & A_BIT) && !node_ok(s, n)) { *code = HK_ECORRUPT; return NULL; }
    }
    if (!(h & P_BIT)) {
        /* the free neighbour before must be intact: free and realloc merge into it */
        uint64_t fh = rd(b - W);
        size_t ps = hsize(fh);
        if (ps < MINBLK || ps > (size_t)(b - s->first) || rd(b - ps) != fh || !node_ok(s, b - ps)) {
            *code = HK_ECORRUPT;
            return NULL;
        }
    }
    return b;
}

/* Return block b (allocated, `size` bytes) to the free lists, coalescing. */
static void release(seg_t *s, char *b, size_t size)
{
    uint64_t h = rd(b);
    /* leave a valid free header behind so a second free reports a double free */
    wr(b, mkhdr(b, size, (unsigned)(h & P_BIT)));
    unsigned pbit = h & P_BIT;
    if (!pbit) {
        size_t ps = hsize(rd(b - W));
        b -= ps;
        list_remove(s, b, ps);
        size += ps;
        pbit = rd(b) & P_BIT;
    }
    char *n = b + size;
    if (n != heap_end(s) && !(rd(n) & A_BIT)) {
        size_t ns = bsize(n);
        list_remove(s, n, ns);
        size += ns;
    }
    if (b + size == heap_end(s) && size >= s->shrink_at) {
        size_t cut = (size - HK_SEG_TOP_KEEP) & ~(size_t)(ALIGN - 1);
        if (hk_sbrk_shrink(&s->base.heap, cut) == 0) { size -= cut; s->regrow_watch = 1; }
    }
    write_free(b, size, pbit);
    list_insert(s, b, size);
    set_next_prev(s, b, size, false);
}

static int seg_free(hk_engine_t *e, void *p)
{
    seg_t *s = (seg_t *)e;
    int code;
    char *b = validate(s, p, &code);
    if (!b) return hk__engine_misuse(e, code, p, code == HK_EDOUBLEFREE ? "block is already free"
                                  : code == HK_ECORRUPT ? "a neighbour disagrees about this block" : "not a block start");
    release(s, b, bsize(b));
    hk_assert_expensive(seg_check(e) == 0);
    return HK_OK;
}

/* ---- realloc / memalign --------------------------------------------------- */

/* Cut allocated block b down to asize, freeing the tail (coalesced). */
static void trim(seg_t *s, char *b, size_t size, size_t asize)
{
    if (size - asize < MINBLK) return;
    uint64_t h = rd(b);
    wr(b, mkhdr(b, asize, (unsigned)(h & (P_BIT | A_BIT))));
    char *r = b + asize;
    wr(r, mkhdr(r, size - asize, P_BIT | A_BIT));
    set_next_prev(s, r, size - asize, true);
    release(s, r, size - asize);
}

static void *seg_realloc(hk_engine_t *e, void *p, size_t n)
{
    seg_t *s = (seg_t *)e;
    int code;
    char *b = validate(s, p, &code);
    if (!b) { hk__engine_misuse(e, code, p, "realloc of a pointer that is not a live block"); return NULL; }
    size_t asize = adjust(n);
    if (!asize) return NULL;
    size_t size = bsize(b);
    if (asize <= size) { trim(s, b, size, asize); return p; }
    char *nx = b + size, *end = heap_end(s);
    size_t avail = size;
    if (nx != end && !b_alloc(nx)) avail += bsize(nx);
    if (avail >= asize || nx == end || (nx + (avail - size) == end)) {
        if (avail < asize) {  /* at the top: grow the heap by just the difference */
            if (!heap_grow(s, asize - avail)) return NULL;
            if (avail > size) list_remove(s, nx, avail - size);
            avail = asize;
        } else if (avail > size) {
            list_remove(s, nx, avail - size);
        }
        uint64_t h = rd(b);
        wr(b, mkhdr(b, avail, (unsigned)(h & P_BIT) | A_BIT));
        set_next_prev(s, b, avail, true);
        trim(s, b, avail, asize);
        return p;
    }
    /* a free block just before plus this one (plus a free next) may be enough */
    if (!b_prev_alloc(b)) {
        size_t ps = hsize(rd(b - W));
        char *pb = b - ps;
        if (ps + avail >= asize) {
            list_remove(s, pb, ps);
            if (avail > size) list_remove(s, nx, avail - size);
            size_t tot = ps + avail;
            unsigned pbit = (unsigned)(rd(pb) & P_BIT);
            memmove(pb + W, p, size - W);
            wr(pb, mkhdr(pb, tot, pbit | A_BIT));
            set_next_prev(s, pb, tot, true);
            trim(s, pb, tot, asize);
            return pb + W;
        }
    }
    void *q = seg_malloc(e, n);
    if (!q) return NULL;
    memcpy(q, p, size - W);
    release(s, b, size);
    return q;
}

static void *seg_memalign(hk_engine_t *e, size_t align, size_t n)
{
    seg_t *s = (seg_t *)e;
    size_t asize = adjust(n);
    if (!asize || align > SIZE_MASK / 4 || asize > SIZE_MASK - align - MINBLK) return NULL;
    char *p = seg_malloc(e, asize + align + MINBLK);
    if (!p) return NULL;
    char *b = p - W;
    size_t size = bsize(b);
    if (((uintptr_t)p & (align - 1)) == 0) { trim(s, b, size, asize); return p; }
    char *q = (char *)(((uintptr_t)p + MINBLK + align - 1) & ~(uintptr_t)(align - 1));
    size_t lead = (size_t)(q - p);
    char *nb = b + lead;
    uint64_t h = rd(b);
    wr(nb, mkhdr(nb, size - lead, A_BIT));
    wr(b, mkhdr(b, lead, (unsigned)(h & P_BIT) | A_BIT));
    release(s, b, lead);
    trim(s, nb, size - lead, asize);
    return q;
}

static size_t seg_usable(hk_engine_t *e, const void *p)
{
    int code;
    char *b = validate((seg_t *)e, p, &code);
    return b ? bsize(b) - W : 0;
}

/* ---- check / walk / stats ------------------------------------------------ */

static size_t seg_check(hk_engine_t *e)
{
    seg_t *s = (seg_t *)e;
    size_t bad = 0, nfree = 0;
    char *end = heap_end(s);
    char *lo = hk_sbrk_lo(&e->heap);
    if (s->first != lo + W) bad++;
    bool prev_alloc = true;
    char *b = s->first;
    while (b < end) {
        uint64_t h = rd(b);
        size_t size = hsize(h);
        if (!htag_ok(b, h)) bad++;
        if (size < MINBLK || size > (size_t)(end - b) || (size & (ALIGN - 1))) { bad++; break; }
        if (((uintptr_t)(b + W) & (ALIGN - 1))) bad++;
        if (!!(h & P_BIT) != prev_alloc) bad++;
        bool a = h & A_BIT;
        if (!a) {
            nfree++;
            if (rd(b + size - W) != h) bad++;         /* footer mismatch */
            if (!prev_alloc) bad++;                   /* uncoalesced neighbours */
            unsigned c = class_of(size);
            if (!(s->bitmap[c >> 6] & (1ull << (c & 63)))) bad++;
        }
        prev_alloc = a;
        b += size;
    }
    if (b != end) bad++;
    if (prev_alloc != !!s->end_prev_alloc) bad++;
    /* every list: links, membership, bitmap */
    size_t listed = 0;
    for (unsigned c = 0; c < N_CLASS; c++) {
        bool bit = s->bitmap[c >> 6] & (1ull << (c & 63));
        if (bit != (s->heads[c] != NULL)) bad++;
        char *prev = NULL;
        for (char *f = s->heads[c]; f; f = rdp(f + W)) {
            if (f < s->first || f + MINBLK > end || ((uintptr_t)(f + W) & (ALIGN - 1))) { bad++; break; }
            uint64_t h = rd(f);
            if (!htag_ok(f, h) || (h & A_BIT) || class_of(hsize(h)) != c) bad++;
            if (rdp(f + 2 * W) != prev) bad++;
            prev = f;
            if (++listed > nfree) { bad++; break; }  /* a cycle or a stray node */
        }
    }
    if (listed != nfree) bad++;
    return bad;
}

static void seg_walk(hk_engine_t *e, hk_walk_fn fn, void *arg)
{
    seg_t *s = (seg_t *)e;
    char *end = heap_end(s);
    for (char *b = s->first; b < end;) {
        size_t size = bsize(b);
        if (size < MINBLK || size > (size_t)(end - b)) break;
        fn(arg, b, size, b_alloc(b));
        b += size;
    }
}

static void seg_stats(hk_engine_t *e, hk_engine_stats_t *out)
{
    seg_t *s = (seg_t *)e;
    char *end = heap_end(s);
    for (char *b = s->first; b < end;) {
        size_t size = bsize(b);
        if (size < MINBLK || size > (size_t)(end - b)) break;
        if (b_alloc(b)) { out->live_bytes += size - W; out->live_blocks++; }
        else {
            out->free_bytes += size; out->free_blocks++;
            if (size > out->largest_free) out->largest_free = size;
        }
        b += size;
    }
    out->footprint = e->heap.brk;
    out->peak_footprint = e->heap.peak;
}

static void seg_info(const hk_engine_t *e, hk_engine_info_t *out)
{
    out->overhead = W;
    out->min_block = MINBLK;
    out->alignment = ALIGN;
    size_t cap = e->cfg.max_size < SIZE_MASK ? e->cfg.max_size : SIZE_MASK;
    out->max_request = cap > 2 * MINBLK ? cap - 2 * MINBLK : 0;
}

static int seg_init(hk_engine_t *e)
{
    seg_t *s = (seg_t *)e;
    int err = hk_sbrk_init(&e->heap, e->cfg.max_size);
    if (err) return err;
    /* one pad word so that headers sit at 8 mod 16 and payloads at 0 mod 16 */
    if (!hk_sbrk_grow(&e->heap, W)) return ENOMEM;
    s->first = hk_sbrk_lo(&e->heap) + W;
    s->end_prev_alloc = 1;
    s->shrink_at = HK_SEG_SHRINK;
    return 0;
}

const hk_engine_ops_t hk__engine_segregated = {
    .name = "segregated",
    .description = "segregated fit: exact and 8-per-octave classes, bitmap, best fit, 8-byte header, immediate coalescing",
    .state_size = sizeof(seg_t),
    .init = seg_init,
    .malloc = seg_malloc,
    .free = seg_free,
    .realloc = seg_realloc,
    .memalign = seg_memalign,
    .usable_size = seg_usable,
    .check = seg_check,
    .walk = seg_walk,
    .stats = seg_stats,
    .info = seg_info,
};
