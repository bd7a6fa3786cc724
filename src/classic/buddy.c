/* Binary buddy engine: power-of-two blocks from 32 bytes up, one set of free
 * blocks per order (an address-ordered treap, lowest address taken first),
 * the buddy of a block found by (offset ^ size), recursive merging on free
 * and splitting on malloc.
 *
 * The whole reservation is one virtual buddy tree rooted at the region base;
 * only the prefix [0, brk) exists. To get a block of order k when no order has
 * one, the break is first aligned up to 2^k by adding free blocks the size of
 * brk's lowest set bit (each one is a legal, aligned buddy block and merges
 * with its lower buddy when that is free), then 2^k more are added. So the
 * heap grows by what the request needs instead of doubling, and a free run at
 * the top is given back with hk_sbrk_shrink.
 *
 *     block:  [ hdr 16: tag | order | state | aoff ][ payload ... ]  2^order bytes
 *     free:   [ hdr 16 ][ left | right | parent | 0 ][ ... ]   (treap links, u32)
 *     memalign: [ hdr, aoff = A' ] ... [ alias hdr 16 ][ payload at block + A' ]
 *
 * The tag is a hash of (offset, order, state, aoff), so a pointer that is not
 * a block start, a stale or overwritten header almost never validates. */
#include "engine_impl.h"
#include <string.h>

#define B_MIN_ORDER 5u                       /* 32-byte blocks: header + tree links */
#define B_HDR       16u
#define B_MAX_ORDERS 48u
#define B_TRIM      ((size_t)64 << 10)       /* give a free top run back from this size */
#define B_MAXHEAP   ((size_t)1 << 36)        /* block numbers fit in 32 bits */

enum { B_FREE = 0x5Fu, B_USED = 0xA3u, B_ALIAS = 0xC6u };

typedef struct bhdr {
    uint32_t tag;
    uint8_t  order;
    uint8_t  state;
    uint8_t  seen;      /* scratch for check(), not part of the tag */
    uint8_t  pad;
    uint32_t aoff;      /* payload offset from the block start (alias: back to the block) */
    uint32_t pad2;
} bhdr_t;

/* Free blocks of one order form a treap keyed by address (the heap order
 * comes from a hash of the address, so it needs no storage): taking the
 * lowest-addressed block keeps the low end of the heap dense and the high
 * end free to merge and be trimmed, which LIFO lists do not. Links are
 * 32-byte-unit block numbers + 1 (0 = none) so three fit in 16 bytes. */
typedef struct bfree {
    bhdr_t h;
    uint32_t l, r, p, pad;
} bfree_t;

_Static_assert(sizeof(bhdr_t) == B_HDR, "buddy header must be 16 bytes");
_Static_assert(sizeof(bfree_t) <= (1u << B_MIN_ORDER), "free block must fit the minimum order");

typedef struct buddy {
    struct hk_engine base;
    uint32_t root[B_MAX_ORDERS];             /* treap root per order, 0 = none */
    uint64_t nonempty;                       /* bit k: root[k] != 0 */
    unsigned max_order;                      /* largest block the reservation can hold */
    size_t live_bytes, live_blocks, free_bytes, free_blocks;
} buddy_t;

HK_INLINE buddy_t *B(hk_engine_t *e) { return (buddy_t *)e; }
HK_INLINE char *bbase(buddy_t *b) { return b->base.heap.region.base; }
HK_INLINE size_t bbrk(buddy_t *b) { return b->base.heap.brk; }
HK_INLINE bhdr_t *hdr_at(buddy_t *b, size_t off) { return (bhdr_t *)(void *)(bbase(b) + off); }
HK_INLINE size_t bsize(unsigned k) { return (size_t)1 << k; }

HK_INLINE uint32_t btag(size_t off, unsigned order, unsigned state, uint32_t aoff)
{
    uint64_t x = (uint64_t)off ^ ((uint64_t)order << 52) ^ ((uint64_t)state << 56) ^ ((uint64_t)aoff << 20);
    x *= 0x9E3779B97F4A7C15ull;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    return (uint32_t)(x >> 32) ^ 0xB0DD1E5u;
}

HK_INLINE void set_hdr(bhdr_t *h, size_t off, unsigned order, unsigned state, uint32_t aoff)
{
    h->order = (uint8_t)order;
    h->state = (uint8_t)state;
    h->seen = 0;
    h->pad = 0;
    h->aoff = aoff;
    h->pad2 = 0;
    h->tag = btag(off, order, state, aoff);
}

/* A header is valid when its tag matches its place and contents. */
HK_INLINE bool hdr_ok(buddy_t *b, size_t off, const bhdr_t *h)
{
    if (h->state != B_FREE && h->state != B_USED && h->state != B_ALIAS) return false;
    if (h->state != B_ALIAS && (h->order < B_MIN_ORDER || h->order > b->max_order)) return false;
    return h->tag == btag(off, h->order, h->state, h->aoff);
}

/* A valid block header that also sits where its order allows. */
HK_INLINE bool block_ok(buddy_t *b, size_t off, const bhdr_t *h)
{
    return hdr_ok(b, off, h) && h->state != B_ALIAS && (off & (bsize(h->order) - 1)) == 0 &&
           off + bsize(h->order) <= bbrk(b);
}

HK_INLINE unsigned ceil_log2(size_t n) { return n <= 1 ? 0 : 64u - (unsigned)__builtin_clzll(n - 1); }

HK_INLINE unsigned order_for(size_t need)
{
    unsigned k = ceil_log2(need);
    return k < B_MIN_ORDER ? B_MIN_ORDER : k;
}

/* ---- free trees --------------------------------------------------------- */

HK_INLINE uint32_t fid(buddy_t *b, const void *f) { return (uint32_t)(((const char *)f - bbase(b)) >> B_MIN_ORDER) + 1; }
HK_INLINE bfree_t *fnode(buddy_t *b, uint32_t id) { return (bfree_t *)(void *)(bbase(b) + ((size_t)(id - 1) << B_MIN_ORDER)); }
HK_INLINE uint32_t prio(uint32_t id) { return (uint32_t)((id * 0x9E3779B97F4A7C15ull) >> 32) ^ (id * 0x85EBCA6Bu); }

HK_INLINE void t_replace_child(buddy_t *b, unsigned k, uint32_t parent, uint32_t old, uint32_t now)
{
    if (!parent) b->root[k] = now;
    else if (fnode(b, parent)->l == old) fnode(b, parent)->l = now;
    else fnode(b, parent)->r = now;
}

/* Rotate x above its parent. */
static void t_rotate_up(buddy_t *b, unsigned k, uint32_t x)
{
    bfree_t *n = fnode(b, x);
    uint32_t p = n->p;
    bfree_t *pn = fnode(b, p);
    uint32_t g = pn->p;
    if (pn->l == x) {
        pn->l = n->r;
        if (n->r) fnode(b, n->r)->p = p;
        n->r = p;
    } else {
        pn->r = n->l;
        if (n->l) fnode(b, n->l)->p = p;
        n->l = p;
    }
    pn->p = x;
    n->p = g;
    t_replace_child(b, k, g, p, x);
}

static void t_insert(buddy_t *b, unsigned k, uint32_t id)
{
    bfree_t *n = fnode(b, id);
    uint32_t par = 0, cur = b->root[k];
    while (cur) { par = cur; cur = id < cur ? fnode(b, cur)->l : fnode(b, cur)->r; }
    n->l = n->r = 0;
    n->p = par;
    n->pad = 0;
    if (!par) b->root[k] = id;
    else if (id < par) fnode(b, par)->l = id;
    else fnode(b, par)->r = id;
    uint32_t pr = prio(id);
    while (n->p && pr > prio(n->p)) t_rotate_up(b, k, id);
}

static void t_remove(buddy_t *b, unsigned k, uint32_t id)
{
    bfree_t *n = fnode(b, id);
    while (n->l && n->r) t_rotate_up(b, k, prio(n->l) > prio(n->r) ? n->l : n->r);
    uint32_t c = n->l ? n->l : n->r;
    if (c) fnode(b, c)->p = n->p;
    t_replace_child(b, k, n->p, id, c);
}

HK_INLINE void free_insert(buddy_t *b, size_t off, unsigned k)
{
    bfree_t *f = (bfree_t *)(void *)hdr_at(b, off);
    set_hdr(&f->h, off, k, B_FREE, B_HDR);
    t_insert(b, k, fid(b, f));
    b->nonempty |= 1ull << k;
    b->free_bytes += bsize(k);
    b->free_blocks++;
}

HK_INLINE void free_remove(buddy_t *b, bfree_t *f)
{
    unsigned k = f->h.order;
    t_remove(b, k, fid(b, f));
    if (!b->root[k]) b->nonempty &= ~(1ull << k);
    b->free_bytes -= bsize(k);
    b->free_blocks--;
}

/* Safe unlinking: a free block's tree neighbours must be free blocks of the
 * same order that point back at it, or a use-after-free write into the
 * links would turn tree surgery into a write anywhere. */
HK_INLINE bool link_ok(buddy_t *b, uint32_t id, unsigned k)
{
    if (!id) return true;
    size_t o = (size_t)(id - 1) << B_MIN_ORDER;
    if (o >= bbrk(b) || (o & (bsize(k) - 1))) return false;
    const bfree_t *x = fnode(b, id);
    return x->h.state == B_FREE && x->h.order == k && hdr_ok(b, o, &x->h);
}

HK_INLINE bool links_ok(buddy_t *b, const bfree_t *f)
{
    unsigned k = f->h.order;
    uint32_t id = fid(b, f);
    if (!link_ok(b, f->l, k) || !link_ok(b, f->r, k) || !link_ok(b, f->p, k)) return false;
    if (f->l && (f->l >= id || fnode(b, f->l)->p != id)) return false;
    if (f->r && (f->r <= id || fnode(b, f->r)->p != id)) return false;
    if (!f->p) return b->root[k] == id;
    const bfree_t *pn = fnode(b, f->p);
    return pn->l == id || pn->r == id;
}

/* A buddy that a merge may absorb: a whole free block of order m, linked. */
HK_INLINE bool free_buddy(buddy_t *b, size_t bud, unsigned m)
{
    bhdr_t *bh = hdr_at(b, bud);
    return bh->state == B_FREE && bh->order == m && hdr_ok(b, bud, bh) && links_ok(b, (bfree_t *)(void *)bh);
}

/* Free the block (off, k), merging it with free buddies as far as they go.
 * Returns the final (offset, order) through the pointers. */
static void merge_insert(buddy_t *b, size_t off, unsigned k, size_t *out_off, unsigned *out_k)
{
    /* Marked free first: if a merge absorbs this header, a second free of
     * the same pointer still reads "free" and is caught as a double free. */
    set_hdr(hdr_at(b, off), off, k, B_FREE, B_HDR);
    while (k < b->max_order) {
        size_t bud = off ^ bsize(k);
        if (bud >= bbrk(b) || !free_buddy(b, bud, k)) break;
        free_remove(b, (bfree_t *)(void *)hdr_at(b, bud));
        off &= ~bsize(k);
        k++;
    }
    free_insert(b, off, k);
    if (out_off) *out_off = off;
    if (out_k) *out_k = k;
}

/* The block that ends at `end`: it is aligned to its size, so its size is
 * at most end's lowest set bit; try the candidates largest first (a smaller
 * candidate's header may be a stale one inside the real block). */
static bool block_ending_at(buddy_t *b, size_t end, size_t *off)
{
    if (end == 0) return false;
    for (size_t t = end & (0 - end); t >= bsize(B_MIN_ORDER); t >>= 1) {
        bhdr_t *h = hdr_at(b, end - t);
        if (h->state != B_ALIAS && bsize(h->order) == t && hdr_ok(b, end - t, h)) { *off = end - t; return true; }
    }
    return false;
}

/* Give the free run at the top of the heap back once it is B_TRIM or more.
 * The run is fully merged, so it holds at most two blocks per order. */
HK_COLD static void trim_top(buddy_t *b)
{
    size_t x = bbrk(b), o, run = 0;
    while (run < B_TRIM && block_ending_at(b, x, &o) && hdr_at(b, o)->state == B_FREE) {
        run += x - o;
        x = o;
    }
    if (run < B_TRIM) return;
    while (block_ending_at(b, bbrk(b), &o)) {
        bhdr_t *h = hdr_at(b, o);
        if (h->state != B_FREE || !links_ok(b, (bfree_t *)(void *)h)) break;
        free_remove(b, (bfree_t *)(void *)h);
        h->tag = 0;
        hk_sbrk_shrink(&b->base.heap, bbrk(b) - o);
    }
}

/* ---- growth -------------------------------------------------------------- */

HK_COLD static bool grow_for(buddy_t *b, unsigned k)
{
    size_t s = bsize(k), brk = bbrk(b);
    size_t a = hk__align_up(brk, s);
    if (a < brk || a + s < a || a + s > b->base.heap.region.reserved) return false;
    while (bbrk(b) < a) {
        size_t cur = bbrk(b), lb = cur & (0 - cur);
        if (!hk_sbrk_grow(&b->base.heap, lb)) return false;
        merge_insert(b, cur, (unsigned)__builtin_ctzll(lb), NULL, NULL);
    }
    if (b->nonempty >> k) return true;       /* the gap itself merged into a big enough block */
    if (!hk_sbrk_grow(&b->base.heap, s)) return false;
    merge_insert(b, a, k, NULL, NULL);
    return true;
}

/* Take a free block of exactly order k, splitting a larger one if needed. */
static bool take(buddy_t *b, unsigned k, size_t *out)
{
    if (hk_unlikely(!(b->nonempty >> k)) && !grow_for(b, k)) return false;
    unsigned j = k + (unsigned)__builtin_ctzll(b->nonempty >> k);
    /* Down to the lowest address; ids are bounds-checked on the way, the
     * chosen node and its links fully before the unlink. */
    uint32_t id = b->root[j], lim = (uint32_t)(bbrk(b) >> B_MIN_ORDER);
    bool ok = id - 1 < lim;
    for (uint32_t nx; ok && (nx = fnode(b, id)->l) != 0; id = nx) ok = nx - 1 < lim;
    bfree_t *f = fnode(b, id);
    if (hk_unlikely(!ok || !link_ok(b, id, j) || !links_ok(b, f))) {
        hk__engine_misuse(&b->base, HK_ECORRUPT, f, "free tree damaged");
        return false;
    }
    free_remove(b, f);
    size_t off = (size_t)((char *)f - bbase(b));
    while (j > k) {
        j--;
        free_insert(b, off + bsize(j), j);
    }
    *out = off;
    return true;
}

static size_t buddy_check(hk_engine_t *e);

/* ---- operations ---------------------------------------------------------- */

static int buddy_init(hk_engine_t *e)
{
    buddy_t *b = B(e);
    int err = hk_sbrk_init(&e->heap, HK_MIN(e->cfg.max_size, B_MAXHEAP));
    if (err) return err;
    unsigned mo = 63u - (unsigned)__builtin_clzll(e->heap.region.reserved);
    b->max_order = mo >= B_MAX_ORDERS ? B_MAX_ORDERS - 1 : mo;
    return 0;
}

static size_t max_request(const buddy_t *b) { return bsize(b->max_order) - B_HDR; }

static void *buddy_malloc(hk_engine_t *e, size_t size)
{
    buddy_t *b = B(e);
    if (hk_unlikely(size > max_request(b))) return NULL;
    unsigned k = order_for(size + B_HDR);
    size_t off;
    if (!take(b, k, &off)) return NULL;
    set_hdr(hdr_at(b, off), off, k, B_USED, B_HDR);
    b->live_bytes += bsize(k) - B_HDR;
    b->live_blocks++;
    hk_assert_expensive(buddy_check(e) == 0);
    return bbase(b) + off + B_HDR;
}

/* Resolve a user pointer to its block. Returns HK_OK with the block offset,
 * or the misuse code (not yet reported). */
static int resolve(buddy_t *b, const void *p, size_t *out_off)
{
    size_t poff = (size_t)((const char *)p - bbase(b));
    if ((poff & (B_HDR - 1)) || poff < B_HDR) return HK_EINVALID;
    size_t hoff = poff - B_HDR;
    bhdr_t *h = hdr_at(b, hoff);
    if (!hdr_ok(b, hoff, h)) return HK_EINVALID;
    size_t off = hoff;
    if (h->state == B_ALIAS) {
        if (h->aoff > poff) return HK_EINVALID;
        off = poff - h->aoff;
        bhdr_t *bh = hdr_at(b, off);
        if (!hdr_ok(b, off, bh) || bh->state == B_ALIAS) return HK_EINVALID;
        if (bh->state == B_FREE) return HK_EDOUBLEFREE;      /* freeing rewrote aoff */
        if (bh->aoff != h->aoff) return HK_EINVALID;
        h = bh;
    } else if (h->aoff != B_HDR) {
        return HK_EINVALID;                  /* the header of a memaligned block, not its payload */
    }
    if (h->state == B_FREE) return HK_EDOUBLEFREE;
    if ((off & (bsize(h->order) - 1)) || off + bsize(h->order) > bbrk(b)) return HK_ECORRUPT;
    *out_off = off;
    return HK_OK;
}

static int buddy_free(hk_engine_t *e, void *p)
{
    buddy_t *b = B(e);
    size_t off;
    int rc = resolve(b, p, &off);
    if (rc != HK_OK)
        return hk__engine_misuse(e, rc, p, rc == HK_EDOUBLEFREE ? "block is already free"
                                         : rc == HK_ECORRUPT ? "block header damaged" : "not a block start");
    bhdr_t *h = hdr_at(b, off);
    unsigned k = h->order;
    /* Check the buddies the merge will read before changing anything. */
    for (size_t o = off, m = k; m < b->max_order; m++) {
        size_t bud = o ^ bsize(m);
        if (bud >= bbrk(b)) break;
        bhdr_t *bh = hdr_at(b, bud);
        if (!hdr_ok(b, bud, bh) || bh->state == B_ALIAS)
            return hk__engine_misuse(e, HK_ECORRUPT, p, "buddy header damaged");
        if (bh->state != B_FREE || bh->order != m) break;
        if (!links_ok(b, (bfree_t *)(void *)bh))
            return hk__engine_misuse(e, HK_ECORRUPT, p, "free tree links of the buddy damaged");
        o &= ~bsize(m);
    }
    b->live_bytes -= bsize(k) - h->aoff;
    b->live_blocks--;
    size_t fo;
    unsigned fk;
    merge_insert(b, off, k, &fo, &fk);
    /* Did this free complete (or extend) a free run reaching the break? */
    size_t end = fo + bsize(fk);
    while (end < bbrk(b)) {
        bhdr_t *nh = hdr_at(b, end);
        if (nh->state != B_FREE || !block_ok(b, end, nh)) break;
        end += bsize(nh->order);
    }
    if (hk_unlikely(end == bbrk(b))) trim_top(b);
    hk_assert_expensive(buddy_check(e) == 0);
    return HK_OK;
}

/* Grow (off, k) to order nk in place: every level's upper buddy must be a
 * whole free block, or lie at/after the break (then the break moves). */
static bool grow_in_place(buddy_t *b, size_t off, unsigned k, unsigned nk)
{
    if (nk > b->max_order || (off & (bsize(nk) - 1))) return false;
    size_t brk = bbrk(b);
    for (unsigned m = k; m < nk; m++) {
        size_t bud = off + bsize(m);
        if (bud >= brk) break;
        if (!free_buddy(b, bud, m)) return false;
    }
    size_t end = off + bsize(nk);
    if (end > brk) {
        if (end > b->base.heap.region.reserved || !hk_sbrk_grow(&b->base.heap, end - brk)) return false;
    }
    for (unsigned m = k; m < nk; m++) {
        size_t bud = off + bsize(m);
        if (bud >= brk) break;
        free_remove(b, (bfree_t *)(void *)hdr_at(b, bud));
    }
    return true;
}

/* Grow (off, k) to order nk by merging with free buddies on either side;
 * the block may start lower afterwards (returned through *out). */
static bool grow_by_merging(buddy_t *b, size_t off, unsigned k, unsigned nk, size_t *out)
{
    if (nk > b->max_order) return false;
    size_t cur = off;
    for (unsigned m = k; m < nk; m++, cur &= ~bsize(m - 1)) {
        size_t bud = cur ^ bsize(m);
        if (bud >= bbrk(b) || !free_buddy(b, bud, m)) return false;
    }
    cur = off;
    for (unsigned m = k; m < nk; m++) {
        free_remove(b, (bfree_t *)(void *)hdr_at(b, cur ^ bsize(m)));
        cur &= ~bsize(m);
    }
    *out = cur;
    return true;
}

static void *buddy_realloc(hk_engine_t *e, void *p, size_t size)
{
    buddy_t *b = B(e);
    size_t off;
    int rc = resolve(b, p, &off);
    if (rc != HK_OK) {
        hk__engine_misuse(e, rc, p, "realloc of a pointer that is not a live block");
        return NULL;
    }
    bhdr_t *h = hdr_at(b, off);
    unsigned k = h->order;
    uint32_t aoff = h->aoff;
    size_t usable = bsize(k) - aoff;
    if (aoff != B_HDR) {                     /* memaligned: keep it simple */
        if (size <= usable) return p;
    } else if (size <= max_request(b)) {
        unsigned nk = order_for(size + B_HDR);
        if (nk == k) return p;
        if (nk < k) {
            for (unsigned m = k; m-- > nk;) free_insert(b, off + bsize(m), m);
            set_hdr(h, off, nk, B_USED, B_HDR);
            b->live_bytes -= bsize(k) - bsize(nk);
            if (hk_unlikely(off + bsize(k) == bbrk(b))) trim_top(b);
            return p;
        }
        if (grow_in_place(b, off, k, nk)) {
            set_hdr(h, off, nk, B_USED, B_HDR);
            b->live_bytes += bsize(nk) - bsize(k);
            return p;
        }
        size_t to;
        if (grow_by_merging(b, off, k, nk, &to)) {
            /* Retire the old header first: the move may or may not cover it,
             * and it must never read as a live block again. */
            set_hdr(h, off, k, B_FREE, B_HDR);
            char *q = bbase(b) + to + B_HDR;
            memmove(q, p, usable);
            set_hdr(hdr_at(b, to), to, nk, B_USED, B_HDR);
            b->live_bytes += bsize(nk) - bsize(k);
            return q;
        }
    }
    void *q = buddy_malloc(e, size);
    if (!q) return NULL;
    memcpy(q, p, HK_MIN(usable, size));
    buddy_free(e, p);
    return q;
}

static void *buddy_memalign(hk_engine_t *e, size_t align, size_t size)
{
    buddy_t *b = B(e);
    /* The payload sits A' into a block aligned to at least 2A', with an alias
     * header right before it; A' >= 64 keeps the alias clear of the links. */
    size_t pofs = align < 64 ? 64 : align;
    if (align > ((size_t)1 << 30) || size > max_request(b) || pofs + size > bsize(b->max_order)) return NULL;
    unsigned k = order_for(pofs + size);
    size_t off;
    if (!take(b, k, &off)) return NULL;
    set_hdr(hdr_at(b, off), off, k, B_USED, (uint32_t)pofs);
    set_hdr(hdr_at(b, off + pofs - B_HDR), off + pofs - B_HDR, 0, B_ALIAS, (uint32_t)pofs);
    b->live_bytes += bsize(k) - pofs;
    b->live_blocks++;
    return bbase(b) + off + pofs;
}

static size_t buddy_usable_size(hk_engine_t *e, const void *p)
{
    buddy_t *b = B(e);
    size_t off;
    if (resolve(b, p, &off) != HK_OK) return 0;
    bhdr_t *h = hdr_at(b, off);
    return bsize(h->order) - h->aoff;
}

static void buddy_walk(hk_engine_t *e, hk_walk_fn fn, void *arg)
{
    buddy_t *b = B(e);
    for (size_t off = 0; off < bbrk(b);) {
        bhdr_t *h = hdr_at(b, off);
        if (!block_ok(b, off, h)) return;
        fn(arg, h, bsize(h->order), h->state == B_USED);
        off += bsize(h->order);
    }
}

static size_t buddy_check(hk_engine_t *e)
{
    buddy_t *b = B(e);
    size_t bad = 0, nfree[B_MAX_ORDERS] = {0}, live = 0, nlive = 0;
    size_t off = 0;
    /* 1. The heap, in address order: headers, alignment, uncoalesced buddies. */
    while (off < bbrk(b)) {
        bhdr_t *h = hdr_at(b, off);
        if (!block_ok(b, off, h)) { bad++; break; }
        unsigned k = h->order;
        if (h->state == B_FREE) {
            nfree[k]++;
            h->seen = 1;
            size_t bud = off ^ bsize(k);
            if (bud > off && bud < bbrk(b)) {
                bhdr_t *bh = hdr_at(b, bud);
                if (bh->state == B_FREE && bh->order == k && hdr_ok(b, bud, bh)) bad++;   /* missed merge */
            }
        } else {
            nlive++;
            if (h->aoff != B_HDR) {
                size_t a = off + h->aoff - B_HDR;
                bhdr_t *ah = hdr_at(b, a);
                if (h->aoff >= bsize(k) || !hdr_ok(b, a, ah) || ah->state != B_ALIAS || ah->aoff != h->aoff) bad++;
            }
            live += bsize(k) - h->aoff;
        }
        off += bsize(k);
    }
    bool walked = off == bbrk(b);
    /* 2. The trees: links, order by address, heap order of priorities, and
     * every node a real free block. In-order walk through parent links. */
    size_t fb = 0, fbytes = 0, cap = bbrk(b) / bsize(B_MIN_ORDER) + 1;
    for (unsigned k = 0; k < B_MAX_ORDERS; k++) {
        if (!!b->root[k] != !!(b->nonempty & (1ull << k))) bad++;
        if (!b->root[k]) { if (walked && nfree[k]) bad++; continue; }
        if (!link_ok(b, b->root[k], k) || fnode(b, b->root[k])->p) { bad++; continue; }
        size_t n = 0, steps = 0;
        uint32_t cur = b->root[k], last = 0;
        bool broken = false;
        while (fnode(b, cur)->l) {
            cur = fnode(b, cur)->l;
            if (!link_ok(b, cur, k) || ++steps > 4 * cap) { bad++; broken = true; break; }
        }
        while (!broken && cur) {
            bfree_t *f = fnode(b, cur);
            if (!links_ok(b, f)) { bad++; broken = true; break; }
            if (cur <= last) bad++;                          /* out of address order */
            if (f->p && prio(cur) > prio(f->p)) bad++;       /* heap order */
            if (walked && !f->h.seen) bad++;                  /* in a tree but not in the heap */
            f->h.seen = 0;
            last = cur;
            n++;
            fb++;
            fbytes += bsize(k);
            /* The successor; every id is checked before it is followed. */
            if (f->r) {
                cur = f->r;
                for (uint32_t nx; (nx = fnode(b, cur)->l) != 0; cur = nx)
                    if (!link_ok(b, nx, k) || ++steps > 4 * cap) { broken = true; break; }
            } else {
                uint32_t c = cur;
                cur = f->p;
                while (cur && fnode(b, cur)->r == c) {
                    c = cur;
                    cur = fnode(b, cur)->p;
                    if (!link_ok(b, cur, k) || ++steps > 4 * cap) { broken = true; break; }
                }
            }
            if (broken || ++steps > 4 * cap) { bad++; broken = true; break; }   /* a cycle */
        }
        if (!broken && walked && n != nfree[k]) bad++;         /* a free block missing from its tree */
    }
    /* Clear the marks of free blocks no tree reached. */
    for (off = 0; off < bbrk(b);) {
        bhdr_t *h = hdr_at(b, off);
        if (!block_ok(b, off, h)) break;
        h->seen = 0;
        off += bsize(h->order);
    }
    if (fb != b->free_blocks || fbytes != b->free_bytes) bad++;
    if (walked && (live != b->live_bytes || nlive != b->live_blocks)) bad++;
    return bad;
}

static void buddy_stats(hk_engine_t *e, hk_engine_stats_t *out)
{
    buddy_t *b = B(e);
    out->live_bytes = b->live_bytes;
    out->live_blocks = b->live_blocks;
    out->footprint = e->heap.brk;
    out->peak_footprint = e->heap.peak;
    out->free_bytes = b->free_bytes;
    out->free_blocks = b->free_blocks;
    out->largest_free = b->nonempty ? bsize(63u - (unsigned)__builtin_clzll(b->nonempty)) : 0;
}

static void buddy_info(const hk_engine_t *e, hk_engine_info_t *out)
{
    const buddy_t *b = (const buddy_t *)e;
    out->overhead = B_HDR;
    out->min_block = bsize(B_MIN_ORDER);
    out->alignment = 16;
    out->max_request = max_request(b);
}

const hk_engine_ops_t hk__engine_buddy = {
    .name = "buddy",
    .description = "binary buddy system: power-of-two blocks, XOR buddies, recursive merging",
    .state_size = sizeof(buddy_t),
    .init = buddy_init,
    .malloc = buddy_malloc,
    .free = buddy_free,
    .realloc = buddy_realloc,
    .memalign = buddy_memalign,
    .usable_size = buddy_usable_size,
    .check = buddy_check,
    .walk = buddy_walk,
    .stats = buddy_stats,
    .info = buddy_info,
};
