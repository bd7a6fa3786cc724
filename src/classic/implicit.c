/* The implicit free list: the heap itself is the list, blocks are found by
 * stepping from header to header (boundary_tag.h). One implementation,
 * parameterised by placement (first, next, best, worst fit) and by when
 * free neighbours merge (at free, or only when a request finds no fit). */
#include "boundary_tag.h"

#define IM_MIN_BLOCK 16u   /* header + footer; 8 payload bytes when allocated */

enum im_fit { FIT_FIRST, FIT_NEXT, FIT_BEST, FIT_WORST };

typedef struct hk_implicit {
    struct hk_engine base;
    enum im_fit fit;
    bool deferred;         /* merge free neighbours only when no fit is found */
    hk_bt_blk *rover;      /* next fit: where the last search ended (a block or the epilogue) */
    hk_bt_blk *low;        /* no free block starts below this block: scans start here */
    bool unmerged;         /* deferred: blocks were freed since the last merge pass */
} hk_implicit_t;

static inline hk_implicit_t *im_of(hk_engine_t *e) { return (hk_implicit_t *)e; }

/* The roving pointer and the low mark must always name a block header:
 * when the block [at, at+size) swallows the one they name, the rover moves
 * to `to` and the low mark to `at` (nothing free lies below either). */
static inline void im_fix_ptrs(hk_implicit_t *im, hk_bt_blk *at, size_t size, hk_bt_blk *to)
{
    if (im->rover > at && im->rover < at + size) im->rover = to;
    if (im->low > at && im->low < at + size) im->low = at;
}

static inline void im_note_free(hk_implicit_t *im, hk_bt_blk *b)
{
    if (b < im->low) im->low = b;
}

/* Skip the allocated blocks below the first free one (and remember it). */
static inline hk_bt_blk *im_first_free(hk_implicit_t *im, hk_bt_blk *epi)
{
    hk_bt_blk *b = im->low;
    while (b < epi && hk__bt_alloc(b)) b = hk__bt_next(b);
    return im->low = b;
}

static hk_bt_blk *im_find_fit(hk_implicit_t *im, size_t asize)
{
    hk_engine_t *e = &im->base;
    hk_bt_blk *first = hk__bt_first(e), *epi = hk__bt_epilogue(e);
    hk_bt_blk *pick = NULL;
    size_t pick_size = 0;
    switch (im->fit) {
    case FIT_FIRST:
        for (hk_bt_blk *b = im_first_free(im, epi); b < epi; b = hk__bt_next(b))
            if (!hk__bt_alloc(b) && hk__bt_size(b) >= asize) return b;
        return NULL;
    case FIT_NEXT:
        for (hk_bt_blk *b = im->rover; b < epi; b = hk__bt_next(b))
            if (!hk__bt_alloc(b) && hk__bt_size(b) >= asize) return b;
        for (hk_bt_blk *b = first; b < im->rover; b = hk__bt_next(b))
            if (!hk__bt_alloc(b) && hk__bt_size(b) >= asize) return b;
        return NULL;
    case FIT_BEST:
        for (hk_bt_blk *b = im_first_free(im, epi); b < epi; b = hk__bt_next(b)) {
            uint64_t w = hk__bt_word(b);
            size_t sz = (size_t)(w & HK_BT_SIZE_MASK);
            if (!(w & HK_BT_ALLOC) && sz >= asize && (!pick || sz < pick_size)) {
                pick = b, pick_size = sz;
                if (sz == asize) break;
            }
        }
        return pick;
    case FIT_WORST:
        for (hk_bt_blk *b = im_first_free(im, epi); b < epi; b = hk__bt_next(b)) {
            uint64_t w = hk__bt_word(b);
            size_t sz = (size_t)(w & HK_BT_SIZE_MASK);
            if (!(w & HK_BT_ALLOC) && sz >= asize && sz > pick_size) pick = b, pick_size = sz;
        }
        return pick;
    }
    return NULL;
}

/* Merge free block b with free neighbours; returns the merged block. */
static hk_bt_blk *im_coalesce(hk_implicit_t *im, hk_bt_blk *b)
{
    size_t sz = hk__bt_size(b);
    bool pa = hk__bt_prev_alloc(b);
    hk_bt_blk *nx = b + sz;
    if (!hk__bt_alloc(nx)) sz += hk__bt_size(nx);
    if (!pa) {
        hk_bt_blk *pv = hk__bt_prev(b);
        sz += (size_t)(b - pv);
        b = pv;
        pa = hk__bt_prev_alloc(pv);
    }
    hk__bt_set_free(b, sz, pa);
    im_fix_ptrs(im, b, sz, b);
    return b;
}

/* Give the top of the heap back when the free block b ending there is large. */
static void im_maybe_trim(hk_implicit_t *im, hk_bt_blk *b)
{
    hk_engine_t *e = &im->base;
    if (hk__bt_alloc(b) || hk__bt_next(b) != hk__bt_epilogue(e) || hk__bt_size(b) < HK_BT_TRIM) return;
    if (im->rover > b) im->rover = b;   /* b's header becomes the epilogue */
    if (im->low > b) im->low = b;
    hk__bt_trim(e, b);
}

/* Turn [b, b+sz) into a free block (prev_alloc = pa) and settle it:
 * merged at once, or left for the deferred pass. */
static hk_bt_blk *im_release(hk_implicit_t *im, hk_bt_blk *b, size_t sz, bool pa)
{
    hk__bt_set_free(b, sz, pa);
    hk__bt_set_prev_alloc(b + sz, false);
    if (!im->deferred) b = im_coalesce(im, b);
    else im->unmerged = true;
    im_note_free(im, b);
    im_maybe_trim(im, b);
    return b;
}

/* Deferred coalescing: one pass merging every run of free blocks. */
static HK_NOINLINE void im_coalesce_all(hk_implicit_t *im)
{
    hk_engine_t *e = &im->base;
    hk_bt_blk *epi = hk__bt_epilogue(e), *last = NULL;
    for (hk_bt_blk *b = im->low; b < epi; ) {   /* nothing free lies below */
        if (hk__bt_alloc(b)) { b = hk__bt_next(b); continue; }
        size_t sz = hk__bt_size(b);
        while (!hk__bt_alloc(b + sz)) sz += hk__bt_size(b + sz);
        hk__bt_set_free(b, sz, hk__bt_prev_alloc(b));
        im_fix_ptrs(im, b, sz, b);
        last = b;
        b += sz;
    }
    im->unmerged = false;
    if (last) im_maybe_trim(im, last);
}

/* No fit: extend the heap, reusing a free block at its top. */
static hk_bt_blk *im_grow(hk_implicit_t *im, size_t asize)
{
    bool fresh;
    return hk__bt_grow(&im->base, asize, &fresh);
}

/* Allocate asize bytes from free block b, splitting off a usable rest. */
static void im_place(hk_implicit_t *im, hk_bt_blk *b, size_t asize)
{
    size_t bsize = hk__bt_size(b);
    bool pa = hk__bt_prev_alloc(b);
    if (bsize - asize >= IM_MIN_BLOCK) {
        hk__bt_set_used(b, asize, pa);
        hk__bt_set_free(b + asize, bsize - asize, true);
    } else {
        hk__bt_set_used(b, bsize, pa);
        hk__bt_set_prev_alloc(b + bsize, true);
    }
    if (im->fit == FIT_NEXT) im->rover = hk__bt_next(b);
}

static hk_bt_blk *im_alloc_block(hk_implicit_t *im, size_t asize)
{
    hk_bt_blk *b = im_find_fit(im, asize);
    if (!b && im->deferred && im->unmerged) {
        im_coalesce_all(im);
        b = im_find_fit(im, asize);
    }
    if (!b && !(b = im_grow(im, asize))) return NULL;
    im_place(im, b, asize);
    return b;
}

static size_t im_check(hk_engine_t *e);

static void *im_malloc(hk_engine_t *e, size_t size)
{
    size_t asize = hk__bt_asize(size, IM_MIN_BLOCK);
    if (!asize) return NULL;
    hk_bt_blk *b = im_alloc_block(im_of(e), asize);
    hk_assert_expensive(im_check(e) == 0);
    return b ? hk__bt_payload(b) : NULL;
}

static int im_free(hk_engine_t *e, void *p)
{
    hk_bt_blk *b;
    int rc = hk__bt_validate(e, p, IM_MIN_BLOCK, &b);
    if (rc != HK_OK) return hk__engine_misuse(e, rc, p, "free");
    im_release(im_of(e), b, hk__bt_size(b), hk__bt_prev_alloc(b));
    hk_assert_expensive(im_check(e) == 0);
    return HK_OK;
}

/* Cut allocated block b down to asize, freeing the tail when it is big enough. */
static void im_shrink(hk_implicit_t *im, hk_bt_blk *b, size_t asize)
{
    size_t sz = hk__bt_size(b);
    if (sz - asize < IM_MIN_BLOCK) return;
    hk__bt_set_used(b, asize, hk__bt_prev_alloc(b));
    im_release(im, b + asize, sz - asize, true);
}

static void *im_realloc(hk_engine_t *e, void *p, size_t size)
{
    hk_implicit_t *im = im_of(e);
    hk_bt_blk *b;
    int rc = hk__bt_validate(e, p, IM_MIN_BLOCK, &b);
    if (rc != HK_OK) { hk__engine_misuse(e, rc, p, "realloc"); return NULL; }
    size_t asize = hk__bt_asize(size, IM_MIN_BLOCK);
    if (!asize) return NULL;
    size_t sz = hk__bt_size(b);
    if (asize <= sz) { im_shrink(im, b, asize); return p; }

    /* Grow into the free blocks that follow; at the heap's end extend by
     * just the rest (a growing block stays on top, where it can keep
     * growing without a copy); failing both, slide down into a free
     * predecessor (the copy costs what a move would, the footprint not). */
    hk_bt_blk *epi = hk__bt_epilogue(e), *nx = b + sz;
    size_t avail = sz;
    while (!hk__bt_alloc(nx)) { avail += hk__bt_size(nx); nx = hk__bt_next(nx); }
    if (avail < asize && nx == epi) {
        if (!hk__bt_extend(e, asize - avail)) goto move;
        avail = asize;
        nx = hk__bt_epilogue(e);
    }
    hk_bt_blk *pv = hk__bt_prev_alloc(b) ? b : hk__bt_prev(b);
    size_t total = avail + (size_t)(b - pv);
    if (total < asize) goto move;
    if (avail < asize) {
        bool ppa = hk__bt_prev_alloc(pv);
        memmove(hk__bt_payload(pv), p, sz - HK_BT_WORD);
        /* The old header survives the copy when the hole was at least as
         * big; wipe it, or a stale free(p) would pass as a live block. */
        if ((size_t)(b - pv) >= sz) memset(b, 0, HK_BT_WORD);
        b = pv;
        hk__bt_set_used(b, total, ppa);
    } else {
        total = avail;
        hk__bt_set_used(b, total, hk__bt_prev_alloc(b));
    }
    hk__bt_set_prev_alloc(nx, true);
    im_fix_ptrs(im, b, total, nx);
    im_shrink(im, b, asize);
    return hk__bt_payload(b);
move:;
    hk_bt_blk *nb = im_alloc_block(im, asize);
    if (!nb) return NULL;
    memcpy(hk__bt_payload(nb), p, sz - HK_BT_WORD);
    im_release(im, b, sz, hk__bt_prev_alloc(b));
    return hk__bt_payload(nb);
}

static void *im_memalign(hk_engine_t *e, size_t align, size_t size)
{
    hk_implicit_t *im = im_of(e);
    size_t asize = hk__bt_asize(size, IM_MIN_BLOCK);
    if (!asize || align > ((size_t)1 << 40)) return NULL;
    hk_bt_blk *b = im_alloc_block(im, asize + align + IM_MIN_BLOCK);
    if (!b) return NULL;
    char *p = hk__bt_payload(b);
    if (!hk__is_aligned(p, align)) {
        /* Free a leading piece big enough to be a block of its own. */
        size_t gap = (size_t)((char *)hk__align_up((uintptr_t)p + IM_MIN_BLOCK, align) - p);
        size_t sz = hk__bt_size(b);
        bool pa = hk__bt_prev_alloc(b);
        hk__bt_set_used(b + gap, sz - gap, false);
        hk__bt_set_free(b, gap, pa);
        if (!im->deferred) im_note_free(im, im_coalesce(im, b));
        else { im->unmerged = true; im_note_free(im, b); }
        b += gap;
    }
    im_shrink(im, b, asize);
    return hk__bt_payload(b);
}

static size_t im_usable_size(hk_engine_t *e, const void *p) { return hk__bt_usable(e, p, IM_MIN_BLOCK); }

static size_t im_check(hk_engine_t *e)
{
    hk_implicit_t *im = im_of(e);
    size_t bad = hk__bt_check_heap(e, IM_MIN_BLOCK, im->deferred, NULL);
    if (im->fit == FIT_NEXT) {
        hk_bt_blk *epi = hk__bt_epilogue(e), *b = hk__bt_first(e);
        while (b < im->rover && b < epi && hk__bt_size(b)) b = hk__bt_next(b);
        if (b != im->rover) bad++;   /* the rover points inside a block */
    }
    hk_bt_blk *epi = hk__bt_epilogue(e), *b = hk__bt_first(e);
    while (b < im->low && b < epi && hk__bt_size(b) && hk__bt_alloc(b)) b = hk__bt_next(b);
    if (b != im->low) bad++;   /* a free block below the low mark, or the mark inside a block */
    return bad;
}

static void im_walk(hk_engine_t *e, hk_walk_fn fn, void *arg) { hk__bt_walk(e, fn, arg); }
static void im_stats(hk_engine_t *e, hk_engine_stats_t *out) { hk__bt_stats(e, out); }
static void im_info(const hk_engine_t *e, hk_engine_info_t *out) { hk__bt_info(e, out, IM_MIN_BLOCK); }

static int im_init(hk_engine_t *e, enum im_fit fit, bool deferred)
{
    hk_implicit_t *im = im_of(e);
    im->fit = fit;
    im->deferred = deferred;
    int err = hk__bt_init(e);
    if (err) return err;
    im->rover = im->low = hk__bt_first(e);
    return 0;
}

static int im_init_first(hk_engine_t *e)    { return im_init(e, FIT_FIRST, false); }
static int im_init_next(hk_engine_t *e)     { return im_init(e, FIT_NEXT, false); }
static int im_init_best(hk_engine_t *e)     { return im_init(e, FIT_BEST, false); }
static int im_init_worst(hk_engine_t *e)    { return im_init(e, FIT_WORST, false); }
static int im_init_deferred(hk_engine_t *e) { return im_init(e, FIT_FIRST, true); }

#define IM_OPS(sym, nm, desc, initfn) \
    const hk_engine_ops_t sym = { \
        .name = nm, .description = desc, .state_size = sizeof(hk_implicit_t), \
        .init = initfn, .fini = NULL, .malloc = im_malloc, .free = im_free, \
        .realloc = im_realloc, .memalign = im_memalign, .usable_size = im_usable_size, \
        .check = im_check, .walk = im_walk, .stats = im_stats, .info = im_info, \
    };

IM_OPS(hk__engine_implicit_first, "implicit-first",
       "implicit free list, boundary tags, first fit, immediate coalescing", im_init_first)
IM_OPS(hk__engine_implicit_next, "implicit-next",
       "implicit free list, boundary tags, next fit (roving pointer), immediate coalescing", im_init_next)
IM_OPS(hk__engine_implicit_best, "implicit-best",
       "implicit free list, boundary tags, best fit, immediate coalescing", im_init_best)
IM_OPS(hk__engine_implicit_worst, "implicit-worst",
       "implicit free list, boundary tags, worst fit, immediate coalescing", im_init_worst)
IM_OPS(hk__engine_implicit_deferred, "implicit-deferred",
       "implicit free list, boundary tags, first fit, coalescing deferred until no fit", im_init_deferred)
