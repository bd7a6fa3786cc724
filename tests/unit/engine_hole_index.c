/* The hole-index engine: smallest-fit through the ordered index (check()
 * verifies the order after every step), page-aligned carving with the
 * leading hole recorded, unify on free, expansion and contraction, a full
 * index falling back to orphan holes, misuse and magic corruption, and a
 * seeded random sequence. */
#define ENGINE "hole-index"
#define RT_SEED 0x0badc0ffee123457ull
#include "engine_rt_tests.h"

typedef struct { int n; char *addr[8]; size_t size[8]; bool used[8]; } walk_t;
static void walk_cb(void *arg, void *block, size_t size, bool in_use)
{
    walk_t *w = arg;
    if (w->n < 8) { w->addr[w->n] = block; w->size[w->n] = size; w->used[w->n] = in_use; }
    w->n++;
}

static void test_basic(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    hk_engine_info_t info;
    hk_engine_info(e, &info);
    CHECK_EQ(info.alignment, 16);
    CHECK_EQ(info.overhead, 16);
    CHECK_EQ(info.min_block, 32);
    char *p = hk_engine_malloc(e, 1);
    REQUIRE(p);
    CHECK(((uintptr_t)p & 15) == 0);
    CHECK_EQ(hk_engine_usable_size(e, p), 16);
    char *q = hk_engine_calloc(e, 3, 33);
    REQUIRE(q);
    for (int i = 0; i < 99; i++) CHECK(q[i] == 0);
    CHECK_EQ(hk_engine_usable_size(e, q), 112);
    CHECK_EQ(hk_engine_check(e), 0);
    CHECK_EQ(hk_engine_free(e, p), HK_OK);
    CHECK_EQ(hk_engine_free(e, q), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    CHECK(hk_engine_malloc(e, (size_t)1 << 40) == NULL);
    CHECK(hk_engine_malloc(e, SIZE_MAX - 8) == NULL);
    hk_engine_destroy(e);
}

/* Holes of sizes 48, 160, 96 (payload 32, 144, 80), separated by live blocks. */
static void test_smallest_fit_and_unify(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    char *h1 = hk_engine_malloc(e, 32), *s1 = hk_engine_malloc(e, 16);
    char *h2 = hk_engine_malloc(e, 144), *s2 = hk_engine_malloc(e, 16);
    char *h3 = hk_engine_malloc(e, 80), *s3 = hk_engine_malloc(e, 16);
    REQUIRE(h1 && s1 && h2 && s2 && h3 && s3);
    CHECK_EQ(hk_engine_free(e, h2), HK_OK);
    CHECK_EQ(hk_engine_free(e, h1), HK_OK);
    CHECK_EQ(hk_engine_free(e, h3), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_stats_t st;
    hk_engine_stats(e, &st);
    CHECK_EQ(st.free_blocks, 3);
    CHECK_EQ(st.largest_free, 160);
    /* Smallest hole that fits, not the first one or the last freed. */
    char *a = hk_engine_malloc(e, 70);
    CHECK(a == h3);
    char *b = hk_engine_malloc(e, 20);
    CHECK(b == h1);
    char *c = hk_engine_malloc(e, 40);                 /* splits the 160 hole: 64 used, 96 left */
    CHECK(c == h2);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_stats(e, &st);
    CHECK_EQ(st.free_blocks, 1);
    CHECK_EQ(st.free_bytes, 96);
    /* Unify left and right: freeing s2's neighbours and s2 leaves one hole. */
    CHECK_EQ(hk_engine_free(e, c), HK_OK);             /* unifies with the 96 hole on its right */
    CHECK_EQ(hk_engine_check(e), 0);
    CHECK_EQ(hk_engine_free(e, a), HK_OK);
    CHECK_EQ(hk_engine_free(e, s2), HK_OK);            /* left and right at once */
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_stats(e, &st);
    CHECK_EQ(st.free_blocks, 1);
    CHECK_EQ(st.largest_free, 160 + 32 + 96);
    CHECK_EQ(hk_engine_free(e, b), HK_OK);
    CHECK_EQ(hk_engine_free(e, s1), HK_OK);
    CHECK_EQ(hk_engine_free(e, s3), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    walk_t w = {0};
    hk_engine_walk(e, walk_cb, &w);
    CHECK_EQ(w.n, 1);
    CHECK(!w.used[0]);
    hk_engine_destroy(e);
}

static void test_expand_and_contract(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    hk_engine_stats_t st0, st;
    hk_engine_stats(e, &st0);
    char *a = hk_engine_malloc(e, 1000);
    REQUIRE(a);
    hk_engine_stats(e, &st);
    CHECK_EQ(st.footprint, st0.footprint + 1024);      /* grows by exactly the block */
    /* A last hole is extended rather than left behind. */
    char *b = hk_engine_malloc(e, 5000);
    REQUIRE(b);
    CHECK_EQ(hk_engine_free(e, b), HK_OK);
    hk_engine_stats(e, &st);
    CHECK_EQ(st.free_blocks, 1);
    char *c = hk_engine_malloc(e, 8000);
    CHECK(c == b);
    hk_engine_stats(e, &st);
    CHECK_EQ(st.footprint, st0.footprint + 1024 + 8016);
    CHECK_EQ(st.free_blocks, 0);
    CHECK_EQ(hk_engine_check(e), 0);
    /* A big hole at the top goes back: the footprint comes down. */
    char *big = hk_engine_malloc(e, 300000);
    REQUIRE(big);
    memset(big, 1, 300000);
    hk_engine_stats(e, &st);
    size_t peak = st.footprint;
    CHECK_EQ(hk_engine_free(e, big), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_stats(e, &st);
    CHECK_EQ(st.footprint, st0.footprint + 1024 + 8016);
    CHECK_EQ(st.peak_footprint, peak);
    /* Freeing c, then a: the holes unify and stay (9 KiB is under the
     * contraction threshold). */
    CHECK_EQ(hk_engine_free(e, c), HK_OK);
    CHECK_EQ(hk_engine_free(e, a), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_stats(e, &st);
    CHECK_EQ(st.free_blocks, 1);
    CHECK_EQ(st.free_bytes, 1024 + 8016);
    hk_engine_destroy(e);
}

static void test_page_aligned(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    char *x = hk_engine_malloc(e, 100);
    REQUIRE(x);
    /* Grown at the top: the part before the aligned payload is a hole. */
    char *p = hk_engine_memalign(e, 4096, 200);
    REQUIRE(p);
    CHECK(((uintptr_t)p & 4095) == 0);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_stats_t st;
    hk_engine_stats(e, &st);
    CHECK_EQ(st.free_blocks, 1);
    CHECK_EQ((size_t)(p - 8 - (x - 8 + 112 + 16)), st.free_bytes);   /* the leading hole, indexed (check) */
    /* The leading hole is used by later requests. */
    char *y = hk_engine_malloc(e, 64);
    CHECK(y == x + 112 + 16);
    CHECK_EQ(hk_engine_check(e), 0);
    /* Carved out of an existing hole. */
    char *big = hk_engine_malloc(e, 20000);
    char *tail = hk_engine_malloc(e, 16);
    REQUIRE(big && tail);
    CHECK_EQ(hk_engine_free(e, big), HK_OK);
    char *q = hk_engine_memalign(e, 4096, 1000);
    REQUIRE(q);
    CHECK(((uintptr_t)q & 4095) == 0);
    CHECK(q > big && q < big + 20000);
    CHECK_EQ(hk_engine_check(e), 0);
    memset(q, 3, 1000);
    char *r = hk_engine_memalign(e, 64, 10);
    REQUIRE(r);
    CHECK(((uintptr_t)r & 63) == 0);
    CHECK_EQ(hk_engine_check(e), 0);
    CHECK_EQ(hk_engine_free(e, q), HK_OK);
    CHECK_EQ(hk_engine_free(e, p), HK_OK);
    CHECK_EQ(hk_engine_free(e, r), HK_OK);
    CHECK_EQ(hk_engine_free(e, p), HK_EDOUBLEFREE);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);
}

static void test_realloc(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    char *a = hk_engine_malloc(e, 100);
    REQUIRE(a);
    for (int i = 0; i < 100; i++) a[i] = (char)i;
    char *b = hk_engine_realloc(e, a, 3000);           /* last block: the break moves */
    CHECK(b == a);
    char *c = hk_engine_malloc(e, 100);
    REQUIRE(c);
    char *d = hk_engine_realloc(e, b, 200);            /* shrink: the tail becomes a hole */
    CHECK(d == a);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_stats_t st;
    hk_engine_stats(e, &st);
    CHECK_EQ(st.free_blocks, 1);
    char *g = hk_engine_realloc(e, d, 1000);           /* grows into the hole on its right */
    CHECK(g == a);
    CHECK_EQ(hk_engine_check(e), 0);
    char *m = hk_engine_realloc(e, g, 5000);           /* no room: moves */
    REQUIRE(m);
    CHECK(m != a);
    for (int i = 0; i < 100; i++) CHECK_EQ(m[i], (char)i);
    CHECK_EQ(hk_engine_check(e), 0);
    CHECK_EQ(hk_engine_free(e, m), HK_OK);
    CHECK_EQ(hk_engine_free(e, c), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);
}

/* More holes than index entries: the smallest become orphans, the heap stays
 * consistent, and freeing their neighbours still unifies them. */
static void test_index_full(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    enum { N = 1400 };
    static char *p[N];
    for (int i = 0; i < N; i++) { p[i] = hk_engine_malloc(e, 16 + (size_t)(i % 7) * 16); REQUIRE(p[i]); }
    for (int i = 0; i < N; i += 2) CHECK_EQ(hk_engine_free(e, p[i]), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_stats_t st;
    hk_engine_stats(e, &st);
    CHECK_EQ(st.free_blocks, N / 2);
    CHECK_EQ(st.largest_free, 16 + 6 * 16 + 16);
    /* Requests still find holes (indexed or rescued); all stay consistent. */
    for (int i = 0; i < N; i += 2) {
        p[i] = hk_engine_malloc(e, 16 + (size_t)(i % 7) * 16);
        REQUIRE(p[i]);
        if (i % 64 == 0) CHECK_EQ(hk_engine_check(e), 0);
    }
    CHECK_EQ(hk_engine_check(e), 0);
    for (int i = 0; i < N; i += 2) CHECK_EQ(hk_engine_free(e, p[i]), HK_OK);
    for (int i = 1; i < N; i += 2) {
        CHECK_EQ(hk_engine_free(e, p[i]), HK_OK);
        if (i % 64 == 1) CHECK_EQ(hk_engine_check(e), 0);
    }
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_stats(e, &st);
    CHECK(st.free_blocks <= 1);
    hk_engine_destroy(e);
}

/* Holes all of one size, more than the index holds: every one is reused
 * before the heap grows, the orphans through a rescue sweep. */
static void test_orphans_reused(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    enum { N = 1600 };
    static char *p[N];
    for (int i = 0; i < N; i++) { p[i] = hk_engine_malloc(e, 32); REQUIRE(p[i]); }
    for (int i = 0; i < N; i += 2) CHECK_EQ(hk_engine_free(e, p[i]), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_stats_t st;
    hk_engine_stats(e, &st);
    size_t fp = st.footprint;
    CHECK_EQ(st.free_blocks, N / 2);
    for (int i = 0; i < N; i += 2) {
        p[i] = hk_engine_malloc(e, 20);
        REQUIRE(p[i]);
        if (i % 50 == 0) CHECK_EQ(hk_engine_check(e), 0);
    }
    hk_engine_stats(e, &st);
    CHECK_EQ(st.footprint, fp);
    CHECK_EQ(st.free_blocks, 0);
    CHECK_EQ(hk_engine_check(e), 0);
    for (int i = 0; i < N; i++) CHECK_EQ(hk_engine_free(e, p[i]), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);
}

static void test_misuse(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    char *a = hk_engine_malloc(e, 200);
    char *b = hk_engine_malloc(e, 200);
    char *c = hk_engine_malloc(e, 200);
    REQUIRE(a && b && c);
    memset(a, 0, 200);
    CHECK_EQ(hk_engine_free(e, a + 8), HK_EINVALID);
    CHECK_EQ(hk_engine_free(e, a + 16), HK_EINVALID);
    CHECK_EQ(hk_engine_free(e, a + 96), HK_EINVALID);
    int local;
    CHECK_EQ(hk_engine_free(e, &local), HK_EINVALID);
    CHECK_EQ(hk_engine_usable_size(e, a + 16), 0);
    CHECK(hk_engine_realloc(e, a + 16, 10) == NULL);
    CHECK_EQ(hk_engine_check(e), 0);
    CHECK_EQ(hk_engine_free(e, b), HK_OK);
    CHECK_EQ(hk_engine_free(e, b), HK_EDOUBLEFREE);
    CHECK_EQ(hk_engine_free(e, a), HK_OK);             /* b is absorbed into a's hole */
    CHECK_EQ(hk_engine_free(e, b), HK_EDOUBLEFREE);
    CHECK_EQ(hk_engine_free(e, a), HK_EDOUBLEFREE);
    CHECK_EQ(hk_engine_check(e), 0);
    CHECK_EQ(hk_engine_free(e, c), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);
}

static void test_corruption(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    char *a = hk_engine_malloc(e, 100);
    char *b = hk_engine_malloc(e, 100);
    char *c = hk_engine_malloc(e, 100);
    REQUIRE(a && b && c);
    /* Header magic overwritten (an underflow of b). */
    uint32_t *bh = (uint32_t *)(void *)(b - 8);
    uint32_t saved = bh[0];
    bh[0] ^= 0x00100000u;
    CHECK(hk_engine_check(e) > 0);
    CHECK_EQ(hk_engine_free(e, b), HK_EINVALID);
    CHECK_EQ(hk_engine_free(e, a), HK_ECORRUPT);       /* its right neighbour is unreadable */
    CHECK_EQ(hk_engine_free(e, c), HK_ECORRUPT);       /* ... and c's left one through its footer: ok, but */
    bh[0] = saved;
    CHECK_EQ(hk_engine_check(e), 0);
    /* Footer of a overwritten (an overflow of a): free(a) and free(b) see it. */
    uint32_t *af = (uint32_t *)(void *)(a + 112);
    uint32_t fs[2] = { af[0], af[1] };
    memset(a, 0x41, 120);
    CHECK(hk_engine_check(e) > 0);
    CHECK_EQ(hk_engine_free(e, a), HK_ECORRUPT);
    CHECK_EQ(hk_engine_free(e, b), HK_ECORRUPT);
    af[0] = fs[0]; af[1] = fs[1];
    CHECK_EQ(hk_engine_check(e), 0);
    /* Size field changed: magic no longer matches. */
    bh[1] += 4;
    CHECK(hk_engine_check(e) > 0);
    bh[1] -= 4;
    /* A hole in the index whose size was changed is caught by check. */
    CHECK_EQ(hk_engine_free(e, b), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    bh[1] ^= 1;                                        /* hole flag cleared, magic now wrong */
    CHECK(hk_engine_check(e) > 0);
    /* malloc refuses to carve a hole whose metadata is damaged. */
    CHECK(hk_engine_malloc(e, 100) == NULL);
    bh[1] ^= 1;
    CHECK_EQ(hk_engine_check(e), 0);
    /* A damaged index entry (the index lives at the start of the region). */
    uint64_t *idx = (uint64_t *)(void *)(a - 8 - 1024 - 8);   /* [1 KiB index][pad 8][a hdr 8] */
    CHECK_EQ(idx[0] >> 32, 128 / 16);                  /* b's hole: size 128 */
    uint64_t ke = idx[0];
    idx[0] += 1;
    CHECK(hk_engine_check(e) > 0);
    CHECK(hk_engine_malloc(e, 100) == NULL);
    idx[0] = ke;
    CHECK_EQ(hk_engine_check(e), 0);
    char *again = hk_engine_malloc(e, 100);
    CHECK(again == b);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);
}

static void random_final_check(hk_engine_t *e, const hk_engine_stats_t *st)
{
    (void)e;
    CHECK(st->free_blocks <= 1);
}

int main(void)
{
    RUN(test_basic);
    RUN(test_smallest_fit_and_unify);
    RUN(test_expand_and_contract);
    RUN(test_page_aligned);
    RUN(test_realloc);
    RUN(test_index_full);
    RUN(test_orphans_reused);
    RUN(test_exhaustion);
    RUN(test_misuse);
    RUN(test_corruption);
    RUN(test_abort_mode);
    RUN(test_random);
    return t_finish();
}
