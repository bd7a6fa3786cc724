/* Boundary-tag block layout shared by the implicit and explicit free-list
 * engines: a one-word header with a check tag, a footer only on free blocks
 * (the next header's PREV_ALLOC bit says when there is one to read).
 *
 *   allocated:  | header | payload ...................... |
 *   free:       | header | (links, explicit) ...  | footer |
 *                 ^ 16-aligned payload starts 8 bytes after the header
 *
 *   header word: [63..48] tag = hash(header address, bits 0..47)
 *                [47..4]  block size (multiple of 16, header included)
 *                [1] PREV_ALLOC   [0] ALLOC
 *
 * The tag makes a forged or stale-by-accident header (an interior pointer
 * landing in user data) fail validation with odds of about 1 in 65536, so
 * free can tell misuse from a real block without a side table. The heap is
 * [pad 8][prologue header+footer][blocks ...][epilogue header, size 0].
 * walk() reports each block by its header address and whole size, so the
 * blocks tile the heap between the prologue and the epilogue. */
#ifndef HK_BOUNDARY_TAG_H
#define HK_BOUNDARY_TAG_H

#include "engine_impl.h"
#include <errno.h>
#include <string.h>

#define HK_BT_ALLOC      ((uint64_t)1)
#define HK_BT_PREV_ALLOC ((uint64_t)2)
#define HK_BT_SIZE_MASK  ((uint64_t)0x0000fffffffffff0)
#define HK_BT_LOW_MASK   ((uint64_t)0x0000ffffffffffff)
#define HK_BT_WORD       8u
#define HK_BT_ALIGN      16u
#define HK_BT_PROLOGUE   16u   /* prologue block: header + footer */
#define HK_BT_HEAD       (HK_BT_WORD + HK_BT_PROLOGUE)  /* pad + prologue: offset of the first block */
/* Give the top of the heap back once this much of it is free. */
#define HK_BT_TRIM       ((size_t)256 << 10)

typedef unsigned char hk_bt_blk;   /* a block is addressed by its header */

HK_INLINE uint64_t hk__bt_tag(const void *hdr, uint64_t low)
{
    uint64_t x = ((uint64_t)(uintptr_t)hdr ^ low) * 0x9e3779b97f4a7c15ull;
    x ^= x >> 29;
    x *= 0xbf58476d1ce4e5b9ull;
    return x & ~HK_BT_LOW_MASK;
}

HK_INLINE uint64_t hk__bt_word(const hk_bt_blk *b) { uint64_t w; memcpy(&w, b, 8); return w; }
HK_INLINE size_t   hk__bt_size(const hk_bt_blk *b) { return (size_t)(hk__bt_word(b) & HK_BT_SIZE_MASK); }
HK_INLINE bool     hk__bt_alloc(const hk_bt_blk *b) { return hk__bt_word(b) & HK_BT_ALLOC; }
HK_INLINE bool     hk__bt_prev_alloc(const hk_bt_blk *b) { return hk__bt_word(b) & HK_BT_PREV_ALLOC; }
HK_INLINE bool     hk__bt_tag_ok(const hk_bt_blk *b)
{
    uint64_t w = hk__bt_word(b);
    return (w & ~HK_BT_LOW_MASK) == hk__bt_tag(b, w & HK_BT_LOW_MASK);
}
HK_INLINE hk_bt_blk *hk__bt_next(hk_bt_blk *b) { return b + hk__bt_size(b); }
HK_INLINE hk_bt_blk *hk__bt_of(const void *p) { return (hk_bt_blk *)p - HK_BT_WORD; }
HK_INLINE void      *hk__bt_payload(hk_bt_blk *b) { return b + HK_BT_WORD; }
/* The previous block, only valid when !PREV_ALLOC (its footer exists). */
HK_INLINE hk_bt_blk *hk__bt_prev(hk_bt_blk *b)
{
    uint64_t w; memcpy(&w, b - HK_BT_WORD, 8);
    return b - (size_t)(w & HK_BT_SIZE_MASK);
}

HK_INLINE uint64_t hk__bt_make(const hk_bt_blk *b, size_t size, uint64_t bits)
{
    uint64_t low = ((uint64_t)size & HK_BT_SIZE_MASK) | bits;
    return low | hk__bt_tag(b, low);
}
HK_INLINE void hk__bt_put(hk_bt_blk *at, uint64_t w) { memcpy(at, &w, 8); }
/* Write an allocated block's header. */
HK_INLINE void hk__bt_set_used(hk_bt_blk *b, size_t size, bool prev_alloc)
{
    hk__bt_put(b, hk__bt_make(b, size, HK_BT_ALLOC | (prev_alloc ? HK_BT_PREV_ALLOC : 0)));
}
/* Write a free block's header and footer. */
HK_INLINE void hk__bt_set_free(hk_bt_blk *b, size_t size, bool prev_alloc)
{
    uint64_t w = hk__bt_make(b, size, prev_alloc ? HK_BT_PREV_ALLOC : 0);
    hk__bt_put(b, w);
    hk__bt_put(b + size - HK_BT_WORD, w);
}
/* Update the PREV_ALLOC bit of a block (the epilogue included). */
HK_INLINE void hk__bt_set_prev_alloc(hk_bt_blk *b, bool prev_alloc)
{
    uint64_t w = hk__bt_word(b);
    uint64_t low = (w & HK_BT_LOW_MASK & ~HK_BT_PREV_ALLOC) | (prev_alloc ? HK_BT_PREV_ALLOC : 0);
    w = low | hk__bt_tag(b, low);
    hk__bt_put(b, w);
    if (!(low & HK_BT_ALLOC) && (low & HK_BT_SIZE_MASK))
        hk__bt_put(b + (low & HK_BT_SIZE_MASK) - HK_BT_WORD, w);
}

/* Block size for a request of n bytes, 0 when it cannot be represented. */
HK_INLINE size_t hk__bt_asize(size_t n, size_t min_block)
{
    if (n > ((size_t)1 << 46)) return 0;
    size_t a = hk__align_up(n + HK_BT_WORD, HK_BT_ALIGN);
    return a < min_block ? min_block : a;
}

HK_INLINE hk_bt_blk *hk__bt_first(hk_engine_t *e) { return (hk_bt_blk *)hk_sbrk_lo(&e->heap) + HK_BT_HEAD; }
HK_INLINE hk_bt_blk *hk__bt_epilogue(hk_engine_t *e) { return (hk_bt_blk *)hk_sbrk_hi(&e->heap) - HK_BT_WORD; }

/* Reserve the region and lay down pad, prologue and epilogue. */
static inline int hk__bt_init(hk_engine_t *e)
{
    int err = hk_sbrk_init(&e->heap, e->cfg.max_size);
    if (err) return err;
    hk_bt_blk *base = hk_sbrk_grow(&e->heap, HK_BT_HEAD + HK_BT_WORD);
    if (!base) return ENOMEM;
    memset(base, 0, HK_BT_WORD);
    hk_bt_blk *pro = base + HK_BT_WORD;
    uint64_t w = hk__bt_make(pro, HK_BT_PROLOGUE, HK_BT_ALLOC | HK_BT_PREV_ALLOC);
    hk__bt_put(pro, w);
    hk__bt_put(pro + HK_BT_WORD, w);
    hk_bt_blk *epi = base + HK_BT_HEAD;
    hk__bt_put(epi, hk__bt_make(epi, 0, HK_BT_ALLOC | HK_BT_PREV_ALLOC));
    return 0;
}

/* Grow the heap by `incr` bytes: the old epilogue becomes the header of a
 * new FREE block of that size (caller writes its final state). Returns the
 * new block, or NULL when the region is full. */
static inline hk_bt_blk *hk__bt_extend(hk_engine_t *e, size_t incr)
{
    hk_bt_blk *old_epi = hk__bt_epilogue(e);
    bool pa = hk__bt_prev_alloc(old_epi);
    if (!hk_sbrk_grow(&e->heap, incr)) return NULL;
    hk__bt_set_free(old_epi, incr, pa);
    hk_bt_blk *epi = hk__bt_epilogue(e);
    hk__bt_put(epi, hk__bt_make(epi, 0, HK_BT_ALLOC));
    return old_epi;
}

/* No fit: extend the heap for a free block of at least asize bytes. A free
 * block at the top is reused and grown in place (*fresh = false: it keeps
 * its place in any free list); otherwise the new block is *fresh. NULL when
 * the region is full. */
static inline hk_bt_blk *hk__bt_grow(hk_engine_t *e, size_t asize, bool *fresh)
{
    hk_bt_blk *epi = hk__bt_epilogue(e);
    *fresh = false;
    if (!hk__bt_prev_alloc(epi)) {
        hk_bt_blk *last = hk__bt_prev(epi);
        size_t have = hk__bt_size(last);
        if (have >= asize) return last;
        if (!hk__bt_extend(e, asize - have)) return NULL;
        hk__bt_set_free(last, asize, hk__bt_prev_alloc(last));
        return last;
    }
    *fresh = true;
    return hk__bt_extend(e, asize);
}

/* Drop the free block b, which must end at the epilogue, from the heap. */
static inline void hk__bt_trim(hk_engine_t *e, hk_bt_blk *b)
{
    size_t sz = hk__bt_size(b);
    bool pa = hk__bt_prev_alloc(b);
    hk__bt_put(b, hk__bt_make(b, 0, HK_BT_ALLOC | (pa ? HK_BT_PREV_ALLOC : 0)));
    hk_sbrk_shrink(&e->heap, sz);
}

/* Validate a pointer handed to free/realloc/usable_size. Returns HK_OK with
 * *out set to its block when p is a live allocated block, else the code. */
static inline int hk__bt_validate(hk_engine_t *e, const void *p, size_t min_block, hk_bt_blk **out)
{
    hk_bt_blk *first = hk__bt_first(e), *epi = hk__bt_epilogue(e);
    if (!hk__is_aligned(p, HK_BT_ALIGN)) return HK_EINVALID;
    hk_bt_blk *b = hk__bt_of(p);
    if (b < first || b >= epi) return HK_EINVALID;
    if (!hk__bt_tag_ok(b)) return HK_EINVALID;
    size_t sz = hk__bt_size(b);
    if (sz < min_block || sz > (size_t)(epi - b)) return HK_EINVALID;
    if (!hk__bt_alloc(b)) return HK_EDOUBLEFREE;
    hk_bt_blk *nx = b + sz;
    if (!hk__bt_tag_ok(nx) || !hk__bt_prev_alloc(nx)) return HK_ECORRUPT;
    if (!hk__bt_prev_alloc(b)) {
        uint64_t fw; memcpy(&fw, b - HK_BT_WORD, 8);
        size_t ps = (size_t)(fw & HK_BT_SIZE_MASK);
        if (ps < min_block || ps > (size_t)(b - first)) return HK_ECORRUPT;
        hk_bt_blk *pv = b - ps;
        if (hk__bt_word(pv) != fw || !hk__bt_tag_ok(pv) || (fw & HK_BT_ALLOC)) return HK_ECORRUPT;
    }
    *out = b;
    return HK_OK;
}

/* usable_size(): the payload of a live block, 0 for anything else. */
static inline size_t hk__bt_usable(hk_engine_t *e, const void *p, size_t min_block)
{
    hk_bt_blk *b;
    if (hk__bt_validate(e, p, min_block, &b) != HK_OK) return 0;
    return hk__bt_size(b) - HK_BT_WORD;
}

/* The heap-side half of check(): walks every block from the prologue to the
 * epilogue. Counts broken invariants; the walk stops at the first header it
 * cannot trust (its size cannot be followed). *free_count receives the
 * number of free blocks found. */
static inline size_t hk__bt_check_heap(hk_engine_t *e, size_t min_block, bool allow_adjacent_free,
                                       size_t *free_count)
{
    size_t bad = 0, nfree = 0;
    hk_bt_blk *base = (hk_bt_blk *)hk_sbrk_lo(&e->heap);
    hk_bt_blk *pro = base + HK_BT_WORD, *first = hk__bt_first(e), *epi = hk__bt_epilogue(e);
    if (!hk__bt_tag_ok(pro) || hk__bt_size(pro) != HK_BT_PROLOGUE || !hk__bt_alloc(pro)) bad++;
    bool prev_alloc = true;
    hk_bt_blk *b = first;
    while (b < epi) {
        if (!hk__bt_tag_ok(b)) { bad++; break; }
        size_t sz = hk__bt_size(b);
        if (sz < min_block || sz % HK_BT_ALIGN || sz > (size_t)(epi - b)) { bad++; break; }
        if (!hk__is_aligned(b + HK_BT_WORD, HK_BT_ALIGN)) bad++;
        if (hk__bt_prev_alloc(b) != prev_alloc) bad++;
        bool a = hk__bt_alloc(b);
        if (!a) {
            nfree++;
            if (hk__bt_word(b + sz - HK_BT_WORD) != hk__bt_word(b)) bad++;
            if (!prev_alloc && !allow_adjacent_free) bad++;
        }
        prev_alloc = a;
        b += sz;
    }
    if (b == epi) {
        if (!hk__bt_tag_ok(epi) || hk__bt_size(epi) != 0 || !hk__bt_alloc(epi)) bad++;
        else if (hk__bt_prev_alloc(epi) != prev_alloc) bad++;
    } else if (b > epi) {
        bad++;   /* the last block runs past the epilogue */
    }
    if (free_count) *free_count = nfree;
    return bad;
}

/* Every block in address order: its header address and whole size. */
static inline void hk__bt_walk(hk_engine_t *e, hk_walk_fn fn, void *arg)
{
    hk_bt_blk *epi = hk__bt_epilogue(e);
    for (hk_bt_blk *b = hk__bt_first(e); b < epi; ) {
        size_t sz = hk__bt_size(b);
        if (!hk__bt_tag_ok(b) || sz == 0 || sz > (size_t)(epi - b)) break;   /* corrupt: stop */
        fn(arg, b, sz, hk__bt_alloc(b));
        b += sz;
    }
}

static inline void hk__bt_stats(hk_engine_t *e, hk_engine_stats_t *out)
{
    hk_bt_blk *epi = hk__bt_epilogue(e);
    for (hk_bt_blk *b = hk__bt_first(e); b < epi; ) {
        size_t sz = hk__bt_size(b);
        if (!hk__bt_tag_ok(b) || sz == 0 || sz > (size_t)(epi - b)) break;
        if (hk__bt_alloc(b)) {
            out->live_bytes += sz - HK_BT_WORD;
            out->live_blocks++;
        } else {
            out->free_bytes += sz;
            out->free_blocks++;
            if (sz > out->largest_free) out->largest_free = sz;
        }
        b += sz;
    }
    out->footprint = e->heap.brk;
    out->peak_footprint = e->heap.peak;
}

static inline void hk__bt_info(const hk_engine_t *e, hk_engine_info_t *out, size_t min_block)
{
    out->overhead = HK_BT_WORD;
    out->min_block = min_block;
    out->alignment = HK_BT_ALIGN;
    size_t cap = e->heap.region.reserved;
    out->max_request = cap > HK_BT_HEAD + 2 * HK_BT_WORD + HK_BT_ALIGN ? cap - HK_BT_HEAD - 2 * HK_BT_WORD - HK_BT_ALIGN : 0;
}

#endif
