/* The TLSF engine (Two-Level Segregated Fit, Masmano et al.): malloc and free
 * in O(1) whatever the heap size. A size maps to a first level (its most
 * significant bit) and a second level (the next SL_LOG bits); one bitmap of
 * non-empty first levels and one per first level of non-empty lists find a
 * fitting list with two bit scans. The request is rounded up to the next list
 * boundary first ("good fit"), so the head of the list found always fits.
 * Blocks are tagged_block.h's; the last word of a free block points back to
 * its header, so the block after it reaches its free physical neighbour in
 * one step (P says whether it may). No operation loops over blocks. */
#include "tagged_block.h"

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
    hk_tb_t tb;
    uint64_t fl_bitmap;
    uint32_t sl_bitmap[FL_COUNT];
    char *heads[FL_COUNT][SL_COUNT];
} tlsf_t;

/* ---- footer: a pointer back to the header ------------------------------- */

HK_INLINE void tb_write_free(char *b, size_t size, unsigned pbit)
{
    wr(b, mkhdr(b, size, pbit));
    wrp(b + size - W, b);
}
HK_INLINE char *tb_prev_free(char *b) { return rdp(b - W); }
HK_INLINE bool tb_footer_ok(const char *b, size_t size, uint64_t h) { (void)h; return rdp(b + size - W) == b; }
static bool tb_prev_free_ok(hk_tb_t *s, char *b)
{
    char *pb = rdp(b - W);
    return !(pb < s->first || pb > b - MINBLK || ((uintptr_t)(pb + W) & (ALIGN - 1)) ||
             !node_ok(s, pb) || pb + bsize(pb) != b);
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

HK_INLINE void tb_list_insert(hk_tb_t *tb, char *b, size_t size)
{
    tlsf_t *t = (tlsf_t *)tb;
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
HK_INLINE void tb_list_remove(hk_tb_t *tb, char *b, size_t size)
{
    tlsf_t *t = (tlsf_t *)tb;
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

HK_INLINE unsigned tb_class_id(size_t size)
{
    unsigned fl, sl;
    mapping_insert(size, &fl, &sl);
    return fl * SL_COUNT + sl;
}
HK_INLINE bool tb_class_marked(const hk_tb_t *tb, size_t size)
{
    unsigned fl, sl;
    mapping_insert(size, &fl, &sl);
    return ((const tlsf_t *)tb)->sl_bitmap[fl] & (1u << sl);
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
    if (tb_take_whole(&t->tb, b, size, asize, pbit)) return b;
    wr(b, mkhdr(b, asize, pbit | A_BIT));
    tb_write_free(b + asize, size - asize, P_BIT);
    tb_list_insert(&t->tb, b + asize, size - asize);
    return b;
}

static HK_NOINLINE char *grow_for(tlsf_t *t, size_t asize)
{
    char *b = free_top(&t->tb);
    size_t have = b ? bsize(b) : 0;
    unsigned pbit = b ? b_pbit(b) : P_BIT;
    if (!b) b = heap_end(&t->tb);
    if (!heap_grow(&t->tb, asize - have)) return NULL;
    if (have) tb_list_remove(&t->tb, b, have);
    return carve(t, b, asize, asize, pbit);
}

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
        if (b && node_ok(&t->tb, b) && bsize(b) < asize) b = NULL;
    }
    if (b) {
        if (hk_unlikely(!tb_fit_ok(&t->tb, b))) return NULL;
        size_t size = bsize(b);
        tb_list_remove(&t->tb, b, size);
        b = carve(t, b, size, asize, b_pbit(b));
    } else {
        b = grow_for(t, asize);
        if (!b) return NULL;
    }
    hk_assert_expensive(e->ops->check(e) == 0);
    return b + W;
}

static void *tlsf_realloc(hk_engine_t *e, void *p, size_t n) { return tb_realloc(e, p, n, false, tlsf_malloc); }
static void *tlsf_memalign(hk_engine_t *e, size_t align, size_t n) { return tb_memalign(e, align, n, tlsf_malloc); }

/* ---- check ------------------------------------------------------------------ */

static size_t tlsf_check(hk_engine_t *e)
{
    tlsf_t *t = (tlsf_t *)e;
    size_t nfree, bad = tb_check_blocks(&t->tb, &nfree);
    size_t listed = 0;
    for (unsigned fl = 0; fl < FL_COUNT; fl++) {
        if (!!(t->fl_bitmap & (1ull << fl)) != (t->sl_bitmap[fl] != 0)) bad++;
        for (unsigned sl = 0; sl < SL_COUNT; sl++) {
            if (!!(t->sl_bitmap[fl] & (1u << sl)) != (t->heads[fl][sl] != NULL)) bad++;
            bad += tb_check_list(&t->tb, t->heads[fl][sl], fl * SL_COUNT + sl, &listed, nfree);
        }
    }
    if (t->fl_bitmap >> FL_COUNT) bad++;
    if (listed != nfree) bad++;
    return bad;
}

static int tlsf_init(hk_engine_t *e) { return tb_init(e, HK_TLSF_SHRINK, HK_TLSF_TOP_KEEP); }

const hk_engine_ops_t hk__engine_tlsf = {
    .name = "tlsf",
    .description = "two-level segregated fit: O(1) malloc/free with bitmaps, good fit, boundary-tag coalescing",
    .state_size = sizeof(tlsf_t),
    .init = tlsf_init,
    .malloc = tlsf_malloc,
    .free = tb_free,
    .realloc = tlsf_realloc,
    .memalign = tlsf_memalign,
    .usable_size = tb_usable,
    .check = tlsf_check,
    .walk = tb_walk,
    .stats = tb_stats,
    .info = tb_info,
};
