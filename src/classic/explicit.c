/* The explicit free list: the boundary-tag heap of boundary_tag.h plus a
 * doubly linked list threaded through the free blocks' payloads, so a
 * search visits free blocks only. Insertion is LIFO (O(1)) or by address
 * (O(free blocks), less fragmentation); merging is immediate.
 *
 *   free block: | header | next | prev | ... | footer |   (32 bytes minimum) */
#include "boundary_tag.h"

#define EX_MIN_BLOCK 32u

typedef struct hk_explicit {
    struct hk_engine base;
    bool addr_order;
    hk_bt_blk *head;
} hk_explicit_t;

static inline hk_explicit_t *ex_of(hk_engine_t *e) { return (hk_explicit_t *)e; }

HK_INLINE hk_bt_blk *ex_next(const hk_bt_blk *b) { hk_bt_blk *p; memcpy(&p, b + 8, sizeof p); return p; }
HK_INLINE hk_bt_blk *ex_prev(const hk_bt_blk *b) { hk_bt_blk *p; memcpy(&p, b + 16, sizeof p); return p; }
HK_INLINE void ex_set_next(hk_bt_blk *b, hk_bt_blk *p) { memcpy(b + 8, &p, sizeof p); }
HK_INLINE void ex_set_prev(hk_bt_blk *b, hk_bt_blk *p) { memcpy(b + 16, &p, sizeof p); }

static inline void ex_unlink(hk_explicit_t *ex, hk_bt_blk *b)
{
    hk_bt_blk *n = ex_next(b), *p = ex_prev(b);
    if (p) ex_set_next(p, n); else ex->head = n;
    if (n) ex_set_prev(n, p);
}

/* Put b where old was (same neighbours in the list). */
static inline void ex_replace(hk_explicit_t *ex, hk_bt_blk *old, hk_bt_blk *b)
{
    hk_bt_blk *n = ex_next(old), *p = ex_prev(old);
    ex_set_next(b, n);
    ex_set_prev(b, p);
    if (p) ex_set_next(p, b); else ex->head = b;
    if (n) ex_set_prev(n, b);
}

static inline void ex_push(hk_explicit_t *ex, hk_bt_blk *b)
{
    ex_set_prev(b, NULL);
    ex_set_next(b, ex->head);
    if (ex->head) ex_set_prev(ex->head, b);
    ex->head = b;
}

static void ex_insert(hk_explicit_t *ex, hk_bt_blk *b)
{
    if (!ex->addr_order || !ex->head || ex->head > b) { ex_push(ex, b); return; }
    /* The next free block in address order is usually a few heap steps
     * away; a short walk there beats walking the list from its head. */
    hk_bt_blk *epi = hk__bt_epilogue(&ex->base), *f = hk__bt_next(b);
    for (int steps = 0; steps < 32 && f < epi; steps++, f = hk__bt_next(f)) {
        if (hk__bt_alloc(f)) continue;
        hk_bt_blk *p = ex_prev(f);   /* non-NULL: the head lies below b */
        ex_set_prev(b, p);
        ex_set_next(b, f);
        ex_set_next(p, b);
        ex_set_prev(f, b);
        return;
    }
    hk_bt_blk *p = ex->head, *n;
    while ((n = ex_next(p)) && n < b) p = n;
    ex_set_prev(b, p);
    ex_set_next(b, n);
    ex_set_next(p, b);
    if (n) ex_set_prev(n, b);
}

/* Give the top of the heap back when the free block b ending there is large. */
static void ex_maybe_trim(hk_explicit_t *ex, hk_bt_blk *b)
{
    hk_engine_t *e = &ex->base;
    if (hk__bt_next(b) != hk__bt_epilogue(e) || hk__bt_size(b) < HK_BT_TRIM) return;
    ex_unlink(ex, b);
    hk__bt_trim(e, b);
}

/* Turn [b, b+sz) (not on the list) into a free block, merge it with free
 * neighbours and list it. An address-ordered list keeps the position of a
 * merged neighbour: nothing free lies between the two. */
static void ex_release(hk_explicit_t *ex, hk_bt_blk *b, size_t sz, bool pa)
{
    hk_bt_blk *nx = b + sz;
    bool next_free = !hk__bt_alloc(nx);
    hk__bt_set_free(b, sz, pa);   /* stale-proof first: a double free of b must see it free */
    if (!pa) {
        hk_bt_blk *pv = hk__bt_prev(b);
        size_t total = (size_t)(b - pv) + sz;
        if (next_free) { total += hk__bt_size(nx); ex_unlink(ex, nx); }
        hk__bt_set_free(pv, total, hk__bt_prev_alloc(pv));
        if (!next_free) hk__bt_set_prev_alloc(pv + total, false);
        if (!ex->addr_order) { ex_unlink(ex, pv); ex_push(ex, pv); }
        b = pv;
    } else if (next_free) {
        hk__bt_set_free(b, sz + hk__bt_size(nx), pa);
        if (ex->addr_order) ex_replace(ex, nx, b);
        else { ex_unlink(ex, nx); ex_push(ex, b); }
    } else {
        hk__bt_set_prev_alloc(nx, false);
        ex_insert(ex, b);
    }
    ex_maybe_trim(ex, b);
}

/* Allocate asize bytes from listed free block b, keeping a usable rest
 * listed in b's place. */
static void ex_place(hk_explicit_t *ex, hk_bt_blk *b, size_t asize)
{
    size_t bsize = hk__bt_size(b);
    bool pa = hk__bt_prev_alloc(b);
    if (bsize - asize >= EX_MIN_BLOCK) {
        hk_bt_blk *r = b + asize;
        hk__bt_set_free(r, bsize - asize, true);
        ex_replace(ex, b, r);
        hk__bt_set_used(b, asize, pa);
    } else {
        ex_unlink(ex, b);
        hk__bt_set_used(b, bsize, pa);
        hk__bt_set_prev_alloc(b + bsize, true);
    }
}

/* No fit: extend the heap, reusing a free block at its top. Returns a
 * listed free block of at least asize bytes. */
static hk_bt_blk *ex_grow(hk_explicit_t *ex, size_t asize)
{
    bool fresh;
    hk_bt_blk *b = hk__bt_grow(&ex->base, asize, &fresh);
    if (b && fresh) ex_insert(ex, b);
    return b;
}

static hk_bt_blk *ex_alloc_block(hk_explicit_t *ex, size_t asize)
{
    hk_bt_blk *b = ex->head;
    while (b && hk__bt_size(b) < asize) b = ex_next(b);
    if (!b && !(b = ex_grow(ex, asize))) return NULL;
    ex_place(ex, b, asize);
    return b;
}

static size_t ex_check(hk_engine_t *e);

static void *ex_malloc(hk_engine_t *e, size_t size)
{
    size_t asize = hk__bt_asize(size, EX_MIN_BLOCK);
    if (!asize) return NULL;
    hk_bt_blk *b = ex_alloc_block(ex_of(e), asize);
    hk_assert_expensive(ex_check(e) == 0);
    return b ? hk__bt_payload(b) : NULL;
}

static int ex_free(hk_engine_t *e, void *p)
{
    hk_bt_blk *b;
    int rc = hk__bt_validate(e, p, EX_MIN_BLOCK, &b);
    if (rc != HK_OK) return hk__engine_misuse(e, rc, p, "free");
    ex_release(ex_of(e), b, hk__bt_size(b), hk__bt_prev_alloc(b));
    hk_assert_expensive(ex_check(e) == 0);
    return HK_OK;
}

static void ex_shrink(hk_explicit_t *ex, hk_bt_blk *b, size_t asize)
{
    size_t sz = hk__bt_size(b);
    if (sz - asize < EX_MIN_BLOCK) return;
    hk__bt_set_used(b, asize, hk__bt_prev_alloc(b));
    ex_release(ex, b + asize, sz - asize, true);
}

static void *ex_realloc(hk_engine_t *e, void *p, size_t size)
{
    hk_explicit_t *ex = ex_of(e);
    hk_bt_blk *b;
    int rc = hk__bt_validate(e, p, EX_MIN_BLOCK, &b);
    if (rc != HK_OK) { hk__engine_misuse(e, rc, p, "realloc"); return NULL; }
    size_t asize = hk__bt_asize(size, EX_MIN_BLOCK);
    if (!asize) return NULL;
    size_t sz = hk__bt_size(b);
    if (asize <= sz) { ex_shrink(ex, b, asize); return p; }

    /* Grow into a free successor; at the heap's end extend by just the
     * rest (a growing block stays on top, where it can keep growing
     * without a copy); failing both, slide down into a free predecessor
     * (the copy costs what a move would, the footprint does not). */
    hk_bt_blk *nx = b + sz;
    bool next_free = !hk__bt_alloc(nx);
    size_t avail = sz + (next_free ? hk__bt_size(nx) : 0);
    hk_bt_blk *after = b + avail;
    if (avail < asize && after == hk__bt_epilogue(e)) {
        if (!hk__bt_extend(e, asize - avail)) goto move;
        avail = asize;
        after = hk__bt_epilogue(e);
    }
    hk_bt_blk *pv = hk__bt_prev_alloc(b) ? b : hk__bt_prev(b);
    size_t total = avail + (size_t)(b - pv);
    if (total < asize) goto move;
    if (next_free) ex_unlink(ex, nx);
    if (avail < asize) {
        bool ppa = hk__bt_prev_alloc(pv);
        if (pv != b) ex_unlink(ex, pv);
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
    hk__bt_set_prev_alloc(after, true);
    ex_shrink(ex, b, asize);
    return hk__bt_payload(b);
move:;
    hk_bt_blk *nb = ex_alloc_block(ex, asize);
    if (!nb) return NULL;
    memcpy(hk__bt_payload(nb), p, sz - HK_BT_WORD);
    ex_release(ex, b, sz, hk__bt_prev_alloc(b));
    return hk__bt_payload(nb);
}

static void *ex_memalign(hk_engine_t *e, size_t align, size_t size)
{
    hk_explicit_t *ex = ex_of(e);
    size_t asize = hk__bt_asize(size, EX_MIN_BLOCK);
    if (!asize || align > ((size_t)1 << 40)) return NULL;
    hk_bt_blk *b = ex_alloc_block(ex, asize + align + EX_MIN_BLOCK);
    if (!b) return NULL;
    char *p = hk__bt_payload(b);
    if (!hk__is_aligned(p, align)) {
        size_t gap = (size_t)((char *)hk__align_up((uintptr_t)p + EX_MIN_BLOCK, align) - p);
        size_t sz = hk__bt_size(b);
        bool pa = hk__bt_prev_alloc(b);
        hk__bt_set_used(b + gap, sz - gap, true);
        hk__bt_set_used(b, gap, pa);   /* released next: merges with a free predecessor */
        ex_release(ex, b, gap, pa);
        b += gap;
    }
    ex_shrink(ex, b, asize);
    return hk__bt_payload(b);
}

static size_t ex_usable_size(hk_engine_t *e, const void *p) { return hk__bt_usable(e, p, EX_MIN_BLOCK); }

/* Heap invariants plus the list's: every listed block is a free block in
 * the heap, links agree both ways, order holds, and list and heap count
 * the same free blocks (so none is missing from the list). */
static size_t ex_check(hk_engine_t *e)
{
    hk_explicit_t *ex = ex_of(e);
    size_t nfree = 0;
    size_t bad = hk__bt_check_heap(e, EX_MIN_BLOCK, false, &nfree);
    hk_bt_blk *first = hk__bt_first(e), *epi = hk__bt_epilogue(e);
    hk_bt_blk *prev = NULL;
    size_t n = 0;
    for (hk_bt_blk *b = ex->head; b; b = ex_next(b)) {
        if (b < first || b >= epi || !hk__is_aligned(b + HK_BT_WORD, HK_BT_ALIGN)) { bad++; break; }
        if (!hk__bt_tag_ok(b) || hk__bt_alloc(b)) bad++;
        if (ex_prev(b) != prev) bad++;
        if (ex->addr_order && prev && b <= prev) bad++;
        if (++n > nfree) { bad++; break; }   /* a cycle, or blocks the heap does not know */
        prev = b;
    }
    if (n != nfree) bad++;
    return bad;
}

static void ex_walk(hk_engine_t *e, hk_walk_fn fn, void *arg) { hk__bt_walk(e, fn, arg); }
static void ex_stats(hk_engine_t *e, hk_engine_stats_t *out) { hk__bt_stats(e, out); }
static void ex_info(const hk_engine_t *e, hk_engine_info_t *out) { hk__bt_info(e, out, EX_MIN_BLOCK); }

static int ex_init(hk_engine_t *e, bool addr_order)
{
    ex_of(e)->addr_order = addr_order;
    ex_of(e)->head = NULL;
    return hk__bt_init(e);
}
static int ex_init_lifo(hk_engine_t *e) { return ex_init(e, false); }
static int ex_init_addr(hk_engine_t *e) { return ex_init(e, true); }

#define EX_OPS(sym, nm, desc, initfn) \
    const hk_engine_ops_t sym = { \
        .name = nm, .description = desc, .state_size = sizeof(hk_explicit_t), \
        .init = initfn, .fini = NULL, .malloc = ex_malloc, .free = ex_free, \
        .realloc = ex_realloc, .memalign = ex_memalign, .usable_size = ex_usable_size, \
        .check = ex_check, .walk = ex_walk, .stats = ex_stats, .info = ex_info, \
    };

EX_OPS(hk__engine_explicit_lifo, "explicit-lifo",
       "explicit doubly linked free list, LIFO insertion, first fit, immediate coalescing", ex_init_lifo)
EX_OPS(hk__engine_explicit_addr, "explicit-addr",
       "explicit doubly linked free list, address-ordered, first fit, immediate coalescing", ex_init_addr)
