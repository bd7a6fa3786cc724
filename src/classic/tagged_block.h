/* Tagged blocks with an 8-byte header and no footer while allocated: the
 * block layout, checks and boundary-tag operations shared by the segregated
 * and TLSF engines, which differ only in how they index free blocks.
 *
 *   allocated:  [hdr: size|tag|P|A][payload ....................]
 *   free:       [hdr][next][prev] .................... [footer]
 *
 * hdr = size (multiple of 16, bits 4..47) | 16-bit tag (bits 48..63, a hash
 * of the block's address and size, so a stray pointer almost never looks like
 * a block) | P (previous block allocated) | A (this block allocated).
 * Payloads are 16-aligned, so headers sit at 8 mod 16 and the heap starts
 * with one 8-byte pad word. There is no epilogue: the P bit of the block past
 * the end lives in the state. What the footer of a free block holds is the
 * engine's choice; it reaches the header through the hooks below.
 *
 * An engine's state begins with hk_tb_t, and the file that includes this one
 * defines the hooks (free-list policy and footer form) declared at the end. */
#ifndef HK_TAGGED_BLOCK_H
#define HK_TAGGED_BLOCK_H

#include "engine_impl.h"
#include <errno.h>
#include <string.h>

#define W        8u
#define ALIGN    16u
#define MINBLK   32u
#define A_BIT    1u
#define P_BIT    2u
#define SIZE_MASK 0x0000fffffffffff0ull

typedef struct hk_tb {
    struct hk_engine base;
    char *first;                /* first block header (base + 8) */
    int end_prev_alloc;         /* P bit of the (virtual) block past the end */
    int regrow_watch;           /* set by a shrink: growing again doubles shrink_at */
    size_t shrink_at;           /* free top size that is given back (adapts like glibc's trim threshold) */
    size_t top_keep;            /* what a give-back leaves, so a heap breathing at the top does not refault */
} hk_tb_t;

/* ---- hooks: defined by the engine that includes this header ------------- */

HK_INLINE void tb_list_insert(hk_tb_t *s, char *b, size_t size);
HK_INLINE void tb_list_remove(hk_tb_t *s, char *b, size_t size);
HK_INLINE void tb_write_free(char *b, size_t size, unsigned pbit); /* header and footer */
HK_INLINE char *tb_prev_free(char *b);  /* the free block just before b, through its footer */
static bool tb_prev_free_ok(hk_tb_t *s, char *b);     /* that block is intact (b's P bit is clear) */
HK_INLINE bool tb_footer_ok(const char *b, size_t size, uint64_t h);
HK_INLINE unsigned tb_class_id(size_t size);          /* the list a free block belongs to */
HK_INLINE bool tb_class_marked(const hk_tb_t *s, size_t size); /* its bitmap bit is set */

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

HK_INLINE char *heap_end(const hk_tb_t *s) { return hk_sbrk_hi(&s->base.heap); }
HK_INLINE size_t bsize(const char *b) { return hsize(rd(b)); }
HK_INLINE bool b_alloc(const char *b) { return rd(b) & A_BIT; }
HK_INLINE unsigned b_pbit(const char *b) { return (unsigned)(rd(b) & P_BIT); }

HK_INLINE size_t adjust(size_t n)
{
    if (n > SIZE_MASK - 64) return 0;
    size_t a = (n + W + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    return a < MINBLK ? MINBLK : a;
}

/* A heap that grows again after giving its top back is breathing: make the
 * next give-back need twice as much free top, so it stops refaulting pages. */
HK_INLINE bool heap_grow(hk_tb_t *s, size_t incr)
{
    if (hk_unlikely(s->regrow_watch)) {
        s->regrow_watch = 0;
        if (s->shrink_at < ((size_t)1 << 36)) s->shrink_at *= 2;
    }
    return hk_sbrk_grow(&s->base.heap, incr) != NULL;
}

/* Set the P bit of whatever follows block b (a header or the end flag). */
HK_INLINE void set_next_prev(hk_tb_t *s, char *b, size_t size, bool alloc)
{
    char *n = b + size;
    if (n == heap_end(s)) { s->end_prev_alloc = alloc; return; }
    uint64_t h = rd(n);
    wr(n, alloc ? (h | P_BIT) : (h & ~(uint64_t)P_BIT));
}

/* Where a block could start: inside the heap with room for a free block,
 * its payload aligned. */
HK_INLINE bool at_block(const hk_tb_t *s, const char *x, const char *end)
{
    return x >= s->first && x + MINBLK <= end && !((uintptr_t)(x + W) & (ALIGN - 1));
}

/* A free-list node that is safe to unlink: inside the heap, a valid free
 * header, and links that are NULL or land on block boundaries in the heap.
 * This stops a use-after-free write over the links from steering malloc. */
HK_INLINE bool link_ok(const hk_tb_t *s, const char *x, const char *end)
{
    return !x || at_block(s, x, end);
}
static inline bool node_ok(const hk_tb_t *s, const char *b)
{
    const char *end = heap_end(s);
    if (!b || !link_ok(s, b, end)) return false;
    uint64_t h = rd(b);
    size_t size = hsize(h);
    return htag_ok(b, h) && !(h & A_BIT) && size >= MINBLK && size <= (size_t)(end - b) &&
           link_ok(s, rdp(b + W), end) && link_ok(s, rdp(b + 2 * W), end);
}

/* The last block when it is free (the one grow_for extends), else NULL. */
HK_INLINE char *free_top(hk_tb_t *s)
{
    return s->end_prev_alloc ? NULL : tb_prev_free(heap_end(s));
}

/* ---- free -------------------------------------------------------------- */

/* Validate the block behind user pointer p. Returns the block or NULL with
 * *code set (HK_EINVALID, HK_EDOUBLEFREE or HK_ECORRUPT). */
static inline char *tb_validate(hk_tb_t *s, const void *p, int *code)
{
    const char *c = p;
    char *end = heap_end(s);
    *code = HK_EINVALID;
    if (c < s->first + W || c >= end || ((uintptr_t)c & (ALIGN - 1))) return NULL;
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
    /* the free neighbour before must be intact: free and realloc merge into it */
    if (!(h & P_BIT) && !tb_prev_free_ok(s, b)) { *code = HK_ECORRUPT; return NULL; }
    return b;
}

/* Return block b (allocated, `size` bytes) to the free lists, coalescing,
 * and give a large free top back to the region. */
static inline void tb_release(hk_tb_t *s, char *b, size_t size)
{
    unsigned pbit = b_pbit(b);
    wr(b, mkhdr(b, size, pbit));    /* a stale free header makes a second free a double free */
    if (!pbit) {
        char *pb = tb_prev_free(b);
        size_t ps = bsize(pb);
        tb_list_remove(s, pb, ps);
        b = pb;
        size += ps;
        pbit = b_pbit(b);
    }
    char *n = b + size;
    if (n != heap_end(s) && !b_alloc(n)) {
        size_t ns = bsize(n);
        tb_list_remove(s, n, ns);
        size += ns;
    }
    if (b + size == heap_end(s) && size >= s->shrink_at) {
        size_t cut = (size - s->top_keep) & ~(size_t)(ALIGN - 1);
        if (hk_sbrk_shrink(&s->base.heap, cut) == 0) { size -= cut; s->regrow_watch = 1; }
    }
    tb_write_free(b, size, pbit);
    tb_list_insert(s, b, size);
    set_next_prev(s, b, size, false);
}

static inline int tb_free(hk_engine_t *e, void *p)
{
    hk_tb_t *s = (hk_tb_t *)e;
    int code;
    char *b = tb_validate(s, p, &code);
    if (!b) return hk__engine_misuse(e, code, p, code == HK_EDOUBLEFREE ? "block is already free"
                                  : code == HK_ECORRUPT ? "a neighbour disagrees about this block" : "not a block start");
    tb_release(s, b, bsize(b));
    hk_assert_expensive(e->ops->check(e) == 0);
    return HK_OK;
}

/* Malloc found free block b on a list: it must be intact before unlinking. */
HK_INLINE bool tb_fit_ok(hk_tb_t *s, char *b)
{
    if (hk_likely(node_ok(s, b))) return true;
    hk__engine_misuse(&s->base, HK_ECORRUPT, b + W, "free list damaged (write after free?)");
    return false;
}

/* Turn free block b (off its list, `size` bytes) into one allocated block
 * when the rest would be too small to stand alone; returns false otherwise. */
HK_INLINE bool tb_take_whole(hk_tb_t *s, char *b, size_t size, size_t asize, unsigned pbit)
{
    if (size - asize >= MINBLK) return false;
    wr(b, mkhdr(b, size, pbit | A_BIT));
    set_next_prev(s, b, size, true);
    return true;
}

/* ---- realloc / memalign --------------------------------------------------- */

/* Cut allocated block b down to asize, freeing the tail (coalesced). */
static inline void tb_trim(hk_tb_t *s, char *b, size_t size, size_t asize)
{
    if (size - asize < MINBLK) return;
    uint64_t h = rd(b);
    wr(b, mkhdr(b, asize, (unsigned)(h & (P_BIT | A_BIT))));
    char *r = b + asize;
    wr(r, mkhdr(r, size - asize, P_BIT | A_BIT));
    set_next_prev(s, r, size - asize, true);
    tb_release(s, r, size - asize);
}

/* In place when the next block (or the heap's top) makes room; with
 * merge_back also into a free block before; else move with `mal`. */
static inline void *tb_realloc(hk_engine_t *e, void *p, size_t n, bool merge_back,
                               void *(*mal)(hk_engine_t *, size_t))
{
    hk_tb_t *s = (hk_tb_t *)e;
    int code;
    char *b = tb_validate(s, p, &code);
    if (!b) { hk__engine_misuse(e, code, p, "realloc of a pointer that is not a live block"); return NULL; }
    size_t asize = adjust(n);
    if (!asize) return NULL;
    size_t size = bsize(b);
    if (asize <= size) { tb_trim(s, b, size, asize); return p; }
    char *nx = b + size, *end = heap_end(s);
    size_t avail = size;
    if (nx != end && !b_alloc(nx)) avail += bsize(nx);
    if (avail >= asize || nx + (avail - size) == end) {
        if (avail < asize) {  /* at the top: grow the heap by just the difference */
            if (!heap_grow(s, asize - avail)) return NULL;
            if (avail > size) tb_list_remove(s, nx, avail - size);
            avail = asize;
        } else if (avail > size) {
            tb_list_remove(s, nx, avail - size);
        }
        wr(b, mkhdr(b, avail, b_pbit(b) | A_BIT));
        set_next_prev(s, b, avail, true);
        tb_trim(s, b, avail, asize);
        return p;
    }
    /* a free block just before plus this one (plus a free next) may be enough */
    if (merge_back && !b_pbit(b)) {
        char *pb = tb_prev_free(b);
        size_t ps = bsize(pb);
        if (ps + avail >= asize) {
            tb_list_remove(s, pb, ps);
            if (avail > size) tb_list_remove(s, nx, avail - size);
            size_t tot = ps + avail;
            unsigned pbit = b_pbit(pb);
            memmove(pb + W, p, size - W);
            wr(pb, mkhdr(pb, tot, pbit | A_BIT));
            set_next_prev(s, pb, tot, true);
            tb_trim(s, pb, tot, asize);
            return pb + W;
        }
    }
    void *q = mal(e, n);
    if (!q) return NULL;
    memcpy(q, p, size - W);
    tb_release(s, b, size);
    return q;
}

static inline void *tb_memalign(hk_engine_t *e, size_t align, size_t n, void *(*mal)(hk_engine_t *, size_t))
{
    hk_tb_t *s = (hk_tb_t *)e;
    size_t asize = adjust(n);
    if (!asize || align > SIZE_MASK / 4 || asize > SIZE_MASK - align - MINBLK) return NULL;
    char *p = mal(e, asize + align + MINBLK);
    if (!p) return NULL;
    char *b = p - W;
    size_t size = bsize(b);
    if (((uintptr_t)p & (align - 1)) == 0) { tb_trim(s, b, size, asize); return p; }
    char *q = (char *)(((uintptr_t)p + MINBLK + align - 1) & ~(uintptr_t)(align - 1));
    size_t lead = (size_t)(q - p);
    char *nb = b + lead;
    uint64_t h = rd(b);
    wr(nb, mkhdr(nb, size - lead, A_BIT));
    wr(b, mkhdr(b, lead, (unsigned)(h & P_BIT) | A_BIT));
    tb_release(s, b, lead);
    tb_trim(s, nb, size - lead, asize);
    return q;
}

static inline size_t tb_usable(hk_engine_t *e, const void *p)
{
    int code;
    char *b = tb_validate((hk_tb_t *)e, p, &code);
    return b ? bsize(b) - W : 0;
}

/* ---- check / walk / stats ------------------------------------------------ */

/* Blocks in address order: tags, sizes, P bits, footers, coalescing, bitmap.
 * Counts the free blocks into *nfree. */
static inline size_t tb_check_blocks(hk_tb_t *s, size_t *nfree)
{
    size_t bad = 0;
    char *end = heap_end(s);
    if (s->first != hk_sbrk_lo(&s->base.heap) + W) bad++;
    bool prev_alloc = true;
    char *b = s->first;
    *nfree = 0;
    while (b < end) {
        uint64_t h = rd(b);
        size_t size = hsize(h);
        if (!htag_ok(b, h)) bad++;
        if (size < MINBLK || size > (size_t)(end - b)) { bad++; break; }
        if (!!(h & P_BIT) != prev_alloc) bad++;
        bool a = h & A_BIT;
        if (!a) {
            ++*nfree;
            if (!tb_footer_ok(b, size, h)) bad++;
            if (!prev_alloc) bad++;                   /* uncoalesced neighbours */
            if (!tb_class_marked(s, size)) bad++;
        }
        prev_alloc = a;
        b += size;
    }
    if (b != end) bad++;
    if (prev_alloc != !!s->end_prev_alloc) bad++;
    return bad;
}

/* One free list (class id `c`): node places, tags, class, back links. Adds
 * its nodes to *listed and stops past nfree (a cycle or a stray node). */
static inline size_t tb_check_list(hk_tb_t *s, char *head, unsigned c, size_t *listed, size_t nfree)
{
    size_t bad = 0;
    char *end = heap_end(s), *prev = NULL;
    for (char *f = head; f; f = rdp(f + W)) {
        if (!at_block(s, f, end)) { bad++; break; }
        uint64_t h = rd(f);
        if (!htag_ok(f, h) || (h & A_BIT) || tb_class_id(hsize(h)) != c) bad++;
        if (rdp(f + 2 * W) != prev) bad++;
        prev = f;
        if (++*listed > nfree) { bad++; break; }
    }
    return bad;
}

static inline void tb_walk(hk_engine_t *e, hk_walk_fn fn, void *arg)
{
    hk_tb_t *s = (hk_tb_t *)e;
    char *end = heap_end(s);
    for (char *b = s->first; b < end;) {
        size_t size = bsize(b);
        if (size < MINBLK || size > (size_t)(end - b)) break;
        fn(arg, b, size, b_alloc(b));
        b += size;
    }
}

static inline void tb_stats(hk_engine_t *e, hk_engine_stats_t *out)
{
    hk_tb_t *s = (hk_tb_t *)e;
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

static inline void tb_info(const hk_engine_t *e, hk_engine_info_t *out)
{
    out->overhead = W;
    out->min_block = MINBLK;
    out->alignment = ALIGN;
    size_t cap = e->cfg.max_size < SIZE_MASK ? e->cfg.max_size : SIZE_MASK;
    out->max_request = cap > 2 * MINBLK ? cap - 2 * MINBLK : 0;
}

static inline int tb_init(hk_engine_t *e, size_t shrink_at, size_t top_keep)
{
    hk_tb_t *s = (hk_tb_t *)e;
    int err = hk_sbrk_init(&e->heap, e->cfg.max_size);
    if (err) return err;
    /* one pad word so that headers sit at 8 mod 16 and payloads at 0 mod 16 */
    if (!hk_sbrk_grow(&e->heap, W)) return ENOMEM;
    s->first = hk_sbrk_lo(&e->heap) + W;
    s->end_prev_alloc = 1;
    s->shrink_at = shrink_at;
    s->top_keep = top_keep;
    return 0;
}

#endif
