/* The segregated-fit engine: the project's best-utilization classic engine.
 * Exact 16-byte size classes up to 1 KiB and 8 classes per power of two above,
 * a bitmap of non-empty classes, best fit, immediate coalescing, and blocks
 * whose only per-block cost is one 8-byte header (tagged_block.h; the footer
 * of a free block is a copy of its header). Small requests (below the moving
 * average of recent ones) are carved from the high end of a free block and
 * large ones from the low end, and a small request that must grow the heap
 * grows it by a small chunk (at most 1/16 of the heap) whose top it takes:
 * small and large blocks then sit apart, so holes left by freed large blocks
 * coalesce instead of being pinned by small neighbours. */
#include "tagged_block.h"

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

#define EXACT_MAX 1024u
#define N_EXACT  ((EXACT_MAX / ALIGN) - 1)      /* classes 0..62: 32..1024 */
#define N_CLASS  (N_EXACT + 8 * (48 - 10))
#define N_WORDS  ((N_CLASS + 63) / 64)

typedef struct seg {
    hk_tb_t tb;
    uint64_t bitmap[N_WORDS];
    char *heads[N_CLASS];
    size_t avg;                 /* moving average of request sizes: the small/large split */
} seg_t;

/* ---- footer: a copy of the header ----------------------------------------- */

HK_INLINE void tb_write_free(char *b, size_t size, unsigned pbit)
{
    uint64_t h = mkhdr(b, size, pbit);
    wr(b, h);
    wr(b + size - W, h);
}
HK_INLINE char *tb_prev_free(char *b) { return b - hsize(rd(b - W)); }
HK_INLINE bool tb_footer_ok(const char *b, size_t size, uint64_t h) { return rd(b + size - W) == h; }
static bool tb_prev_free_ok(hk_tb_t *s, char *b)
{
    uint64_t fh = rd(b - W);
    size_t ps = hsize(fh);
    return !(ps < MINBLK || ps > (size_t)(b - s->first) || rd(b - ps) != fh || !node_ok(s, b - ps));
}

/* ---- classes ------------------------------------------------------------ */

HK_INLINE unsigned class_of(size_t size)
{
    if (size <= EXACT_MAX) return (unsigned)(size >> 4) - 2;
    unsigned msb = 63u - (unsigned)__builtin_clzll(size);
    return N_EXACT + (msb - 10) * 8 + (unsigned)((size >> (msb - 3)) & 7);
}
HK_INLINE unsigned tb_class_id(size_t size) { return class_of(size); }
HK_INLINE bool tb_class_marked(const hk_tb_t *tb, size_t size)
{
    unsigned c = class_of(size);
    return ((const seg_t *)tb)->bitmap[c >> 6] & (1ull << (c & 63));
}

HK_INLINE void tb_list_insert(hk_tb_t *tb, char *b, size_t size)
{
    seg_t *s = (seg_t *)tb;
    unsigned c = class_of(size);
    char *h = s->heads[c];
    wrp(b + W, h);
    wrp(b + 2 * W, NULL);
    if (h) wrp(h + 2 * W, b);
    s->heads[c] = b;
    s->bitmap[c >> 6] |= 1ull << (c & 63);
}
HK_INLINE void tb_list_remove(hk_tb_t *tb, char *b, size_t size)
{
    seg_t *s = (seg_t *)tb;
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
            if (hk_unlikely(!node_ok(&s->tb, b))) return b;   /* malloc reports it */
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
    if (tb_take_whole(&s->tb, b, size, asize, pbit)) return b;
    size_t rest = size - asize;
    if (is_small(s, asize)) {
        /* small: take the high end, the free rest stays where it was */
        tb_write_free(b, rest, pbit);
        tb_list_insert(&s->tb, b, rest);
        char *a = b + rest;
        wr(a, mkhdr(a, asize, A_BIT));
        set_next_prev(&s->tb, a, asize, true);
        return a;
    }
    wr(b, mkhdr(b, asize, pbit | A_BIT));
    char *r = b + asize;
    tb_write_free(r, rest, P_BIT);
    tb_list_insert(&s->tb, r, rest);
    return b;
}

/* Grow the heap for asize; reuses a free last block and asks only for what it lacks. */
static HK_NOINLINE char *grow_for(seg_t *s, size_t asize)
{
    char *b = free_top(&s->tb);
    size_t have = b ? bsize(b) : 0;
    unsigned pbit = b ? b_pbit(b) : P_BIT;
    if (!b) b = heap_end(&s->tb);
    size_t need = asize - have, want = need;
    if (is_small(s, asize)) {
        /* a small block takes the top of a fresh chunk; large ones fill it from below */
        size_t chunk = HK_MIN((size_t)HK_SEG_CHUNK, (s->tb.base.heap.brk / HK_SEG_CHUNK_DIV) & ~(size_t)(ALIGN - 1));
        if (want < chunk) want = chunk;
    }
    if (heap_grow(&s->tb, want)) need = want;
    else if (want == need || !heap_grow(&s->tb, need)) return NULL;
    if (have) tb_list_remove(&s->tb, b, have);
    s->tb.end_prev_alloc = 0;  /* place() sets it */
    return place(s, b, have + need, asize, pbit);
}

static void *seg_malloc(hk_engine_t *e, size_t n)
{
    seg_t *s = (seg_t *)e;
    size_t asize = adjust(n);
    if (!asize) return NULL;
    s->avg += ((ptrdiff_t)asize - (ptrdiff_t)s->avg) / HK_SEG_AVG_W;
    char *b = find_fit(s, asize);
    if (b) {
        if (hk_unlikely(!tb_fit_ok(&s->tb, b))) return NULL;
        size_t size = bsize(b);
        tb_list_remove(&s->tb, b, size);
        b = place(s, b, size, asize, b_pbit(b));
    } else {
        b = grow_for(s, asize);
        if (!b) return NULL;
    }
    hk_assert_expensive(e->ops->check(e) == 0);
    return b + W;
}

static void *seg_realloc(hk_engine_t *e, void *p, size_t n) { return tb_realloc(e, p, n, true, seg_malloc); }
static void *seg_memalign(hk_engine_t *e, size_t align, size_t n) { return tb_memalign(e, align, n, seg_malloc); }

/* ---- check ------------------------------------------------------------------ */

static size_t seg_check(hk_engine_t *e)
{
    seg_t *s = (seg_t *)e;
    size_t nfree, bad = tb_check_blocks(&s->tb, &nfree);
    /* every list: links, membership, bitmap */
    size_t listed = 0;
    for (unsigned c = 0; c < N_CLASS; c++) {
        bool bit = s->bitmap[c >> 6] & (1ull << (c & 63));
        if (bit != (s->heads[c] != NULL)) bad++;
        bad += tb_check_list(&s->tb, s->heads[c], c, &listed, nfree);
    }
    if (listed != nfree) bad++;
    return bad;
}

static int seg_init(hk_engine_t *e) { return tb_init(e, HK_SEG_SHRINK, HK_SEG_TOP_KEEP); }

const hk_engine_ops_t hk__engine_segregated = {
    .name = "segregated",
    .description = "segregated fit: exact and 8-per-octave classes, bitmap, best fit, 8-byte header, immediate coalescing",
    .state_size = sizeof(seg_t),
    .init = seg_init,
    .malloc = seg_malloc,
    .free = tb_free,
    .realloc = seg_realloc,
    .memalign = seg_memalign,
    .usable_size = tb_usable,
    .check = seg_check,
    .walk = tb_walk,
    .stats = tb_stats,
    .info = tb_info,
};
