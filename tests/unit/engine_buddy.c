/* The buddy engine: splitting and XOR buddies, recursive merging, growth and
 * trimming of the break, in-place realloc, memalign, misuse detection and a
 * seeded random sequence with check() after every step. */
#define ENGINE "buddy"
#define RT_SEED 0x1234567887654321ull
#include "engine_rt_tests.h"

typedef struct { int n; void *addr[64]; size_t size[64]; bool used[64]; } walk_t;
static void walk_cb(void *arg, void *block, size_t size, bool in_use)
{
    walk_t *w = arg;
    if (w->n < 64) { w->addr[w->n] = block; w->size[w->n] = size; w->used[w->n] = in_use; }
    w->n++;
}

static void test_basic(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    hk_engine_info_t info;
    hk_engine_info(e, &info);
    CHECK_EQ(info.alignment, 16);
    CHECK_EQ(info.min_block, 32);
    CHECK_EQ(info.overhead, 16);
    char *p = hk_engine_malloc(e, 1);
    REQUIRE(p);
    CHECK(((uintptr_t)p & 15) == 0);
    CHECK_EQ(hk_engine_usable_size(e, p), 16);
    char *q = hk_engine_calloc(e, 10, 100);
    REQUIRE(q);
    for (int i = 0; i < 1000; i++) CHECK(q[i] == 0);
    CHECK_EQ(hk_engine_usable_size(e, q), 1024 - 16);
    CHECK_EQ(hk_engine_check(e), 0);
    CHECK_EQ(hk_engine_free(e, p), HK_OK);
    CHECK_EQ(hk_engine_free(e, q), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    CHECK(hk_engine_malloc(e, (size_t)1 << 40) == NULL);
    CHECK(hk_engine_malloc(e, SIZE_MAX - 8) == NULL);
    hk_engine_stats_t st;
    hk_engine_stats(e, &st);
    CHECK_EQ(st.live_blocks, 0);
    CHECK_EQ(st.live_bytes, 0);
    hk_engine_destroy(e);
}

static void test_split_and_merge(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    char *a = hk_engine_malloc(e, 16);
    char *b = hk_engine_malloc(e, 16);
    REQUIRE(a && b);
    /* The second minimum block is the first one's buddy: address ^ 32. */
    CHECK_EQ((uintptr_t)(b - 16), (uintptr_t)(a - 16) ^ 32);
    walk_t w = {0};
    hk_engine_walk(e, walk_cb, &w);
    CHECK_EQ(w.n, 2);
    CHECK_EQ(hk_engine_free(e, a), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    CHECK_EQ(hk_engine_free(e, b), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    /* Both buddies free: one block of the next order. */
    memset(&w, 0, sizeof w);
    hk_engine_walk(e, walk_cb, &w);
    CHECK_EQ(w.n, 1);
    CHECK_EQ(w.size[0], 64);
    CHECK(!w.used[0]);
    CHECK(w.addr[0] == a - 16);
    /* Splitting again gives the same addresses back. */
    char *c = hk_engine_malloc(e, 10);
    CHECK(c == a);
    CHECK_EQ(hk_engine_free(e, c), HK_OK);
    hk_engine_destroy(e);
}

static void test_recursive_merge(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    enum { N = 64 };
    char *p[N];
    for (int i = 0; i < N; i++) { p[i] = hk_engine_malloc(e, 16); REQUIRE(p[i]); }
    hk_engine_stats_t st;
    hk_engine_stats(e, &st);
    CHECK_EQ(st.footprint, N * 32);
    CHECK_EQ(st.free_blocks, 0);
    /* Free in a scrambled order; every step stays consistent. */
    for (int i = 0; i < N; i++) {
        int j = (i * 37) % N;
        CHECK_EQ(hk_engine_free(e, p[j]), HK_OK);
        CHECK_EQ(hk_engine_check(e), 0);
    }
    walk_t w = {0};
    hk_engine_walk(e, walk_cb, &w);
    CHECK_EQ(w.n, 1);
    CHECK_EQ(w.size[0], N * 32);
    CHECK(!w.used[0]);
    hk_engine_stats(e, &st);
    CHECK_EQ(st.free_blocks, 1);
    CHECK_EQ(st.largest_free, N * 32);
    hk_engine_destroy(e);
}

static void test_growth_gap_and_trim(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    char *s = hk_engine_malloc(e, 16);                 /* [0,32) */
    char *big = hk_engine_malloc(e, 3000);             /* order 12: the gap [32,4096) is filled with free blocks */
    REQUIRE(s && big);
    CHECK_EQ((uintptr_t)(big - 16) - (uintptr_t)(s - 16), 4096);
    hk_engine_stats_t st;
    hk_engine_stats(e, &st);
    CHECK_EQ(st.footprint, 8192);
    CHECK_EQ(st.free_bytes, 4096 - 32);
    CHECK_EQ(st.free_blocks, 7);                       /* 32, 64, ..., 2048 */
    CHECK_EQ(hk_engine_check(e), 0);
    /* A large block at the top goes back to the region when freed. */
    char *huge = hk_engine_malloc(e, 200000);
    REQUIRE(huge);
    hk_engine_stats(e, &st);
    CHECK(st.footprint >= 262144 + 8192);
    size_t peak = st.footprint;
    memset(huge, 0x5a, 200000);
    CHECK_EQ(hk_engine_free(e, huge), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_stats(e, &st);
    CHECK(st.footprint <= 8192);
    CHECK_EQ(st.peak_footprint, peak);
    CHECK_EQ(hk_engine_free(e, big), HK_OK);
    CHECK_EQ(hk_engine_free(e, s), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_stats(e, &st);
    CHECK_EQ(st.footprint, 8192);                      /* an 8 KiB free run: under the trim threshold */
    CHECK_EQ(st.free_blocks, 1);
    hk_engine_destroy(e);

    /* A small block above a large one, freed first: freeing the large one
     * then completes a free run up to the break, and all of it goes back. */
    e = mk(0);
    REQUIRE(e);
    huge = hk_engine_malloc(e, 200000);
    char *tiny = hk_engine_malloc(e, 16);
    REQUIRE(huge && tiny);
    CHECK_EQ(tiny - huge, 262144);
    CHECK_EQ(hk_engine_free(e, tiny), HK_OK);
    hk_engine_stats(e, &st);
    CHECK_EQ(st.footprint, 262144 + 32);
    CHECK_EQ(hk_engine_free(e, huge), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_stats(e, &st);
    CHECK_EQ(st.footprint, 0);
    CHECK_EQ(st.free_blocks, 0);
    hk_engine_destroy(e);
}

/* Free blocks are taken lowest address first (address-ordered trees), so
 * the low end fills up and the high end stays free to merge. */
static void test_lowest_address_first(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    enum { N = 16 };
    char *p[N];
    for (int i = 0; i < N; i++) { p[i] = hk_engine_malloc(e, 100); REQUIRE(p[i]); }
    /* Free every other block, in descending address order (LIFO would hand
     * them back highest first). */
    for (int i = N - 2; i >= 0; i -= 2) CHECK_EQ(hk_engine_free(e, p[i]), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    for (int i = 0; i < N; i += 2) {
        char *q = hk_engine_malloc(e, 100);
        CHECK(q == p[i]);
    }
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);
}

static void test_realloc(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    char *p = hk_engine_malloc(e, 16);
    REQUIRE(p);
    memcpy(p, "0123456789abcde", 16);
    /* At the top of the heap: grows in place by moving the break. */
    char *q = hk_engine_realloc(e, p, 40);
    CHECK(q == p);
    CHECK_EQ(hk_engine_usable_size(e, q), 48);
    CHECK_EQ(hk_engine_check(e), 0);
    char *r = hk_engine_malloc(e, 16);                 /* right after, in the upper buddy */
    REQUIRE(r);
    /* The buddy is in use now: it has to move, keeping the data. */
    char *q2 = hk_engine_realloc(e, q, 100);
    REQUIRE(q2);
    CHECK(q2 != q);
    CHECK(memcmp(q2, "0123456789abcde", 16) == 0);
    CHECK_EQ(hk_engine_check(e), 0);
    /* Shrinking keeps the address and gives the upper halves back. */
    char *big = hk_engine_malloc(e, 4000);
    REQUIRE(big);
    memset(big, 7, 4000);
    hk_engine_stats_t before, after;
    hk_engine_stats(e, &before);
    char *small = hk_engine_realloc(e, big, 100);
    CHECK(small == big);
    CHECK_EQ(hk_engine_usable_size(e, small), 112);
    hk_engine_stats(e, &after);
    CHECK_EQ(after.free_bytes - before.free_bytes, 4096 - 128);
    CHECK_EQ(hk_engine_check(e), 0);
    /* ... and grows back into them in place, the buddies being free. */
    char *again = hk_engine_realloc(e, small, 2000);
    CHECK(again == small);
    CHECK_EQ(small[99], 7);
    CHECK_EQ(hk_engine_check(e), 0);
    CHECK_EQ(hk_engine_free(e, again), HK_OK);
    CHECK_EQ(hk_engine_free(e, q2), HK_OK);
    CHECK_EQ(hk_engine_free(e, r), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);
}

/* An upper buddy whose lower buddy is free grows by merging downwards: the
 * data moves to the lower address, nothing new is taken from the region. */
static void test_realloc_merge_down(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    char *a = hk_engine_malloc(e, 16);                 /* [0,32) */
    char *b = hk_engine_malloc(e, 16);                 /* [32,64) */
    char *c = hk_engine_malloc(e, 40);                 /* [64,128): b can't grow upwards */
    REQUIRE(a && b && c);
    memcpy(b, "abcdefghijklmno", 16);
    CHECK_EQ(hk_engine_free(e, a), HK_OK);
    hk_engine_stats_t st0, st;
    hk_engine_stats(e, &st0);
    char *m = hk_engine_realloc(e, b, 40);
    CHECK(m == a);
    CHECK(memcmp(m, "abcdefghijklmno", 16) == 0);
    CHECK_EQ(hk_engine_usable_size(e, m), 48);
    hk_engine_stats(e, &st);
    CHECK_EQ(st.footprint, st0.footprint);
    CHECK_EQ(st.free_blocks, 0);
    CHECK_EQ(hk_engine_check(e), 0);
    CHECK_EQ(hk_engine_free(e, b), HK_EDOUBLEFREE);    /* realloc released the old pointer */
    CHECK_EQ(hk_engine_free(e, m), HK_OK);
    CHECK_EQ(hk_engine_free(e, c), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);
}

static void test_memalign(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    char *x = hk_engine_malloc(e, 24);
    size_t aligns[] = { 32, 64, 256, 4096, 65536 };
    for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
        size_t a = aligns[i];
        char *p = hk_engine_memalign(e, a, 100);
        REQUIRE(p);
        CHECK(((uintptr_t)p & (a - 1)) == 0);
        CHECK(hk_engine_usable_size(e, p) >= 100);
        memset(p, 0xab, hk_engine_usable_size(e, p));
        CHECK_EQ(hk_engine_check(e), 0);
        char *r = hk_engine_realloc(e, p, 50);
        CHECK(r == p);
        CHECK_EQ(hk_engine_free(e, p), HK_OK);
        /* The 64 KiB one was at the top and went back to the region. */
        CHECK_EQ(hk_engine_free(e, p), a < 65536 ? HK_EDOUBLEFREE : HK_EINVALID);
        CHECK_EQ(hk_engine_check(e), 0);
    }
    char *p = hk_engine_memalign(e, 128, 10);
    REQUIRE(p);
    memset(p, 1, 10);
    char *q = hk_engine_realloc(e, p, 5000);           /* moves, keeps the data */
    REQUIRE(q);
    CHECK(q[9] == 1);
    CHECK_EQ(hk_engine_free(e, q), HK_OK);
    CHECK_EQ(hk_engine_free(e, x), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);
}

static void test_misuse(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    char *a = hk_engine_malloc(e, 200);
    char *b = hk_engine_malloc(e, 200);
    REQUIRE(a && b);
    memset(a, 0, 200);
    CHECK_EQ(hk_engine_free(e, a + 8), HK_EINVALID);
    CHECK_EQ(hk_engine_free(e, a + 16), HK_EINVALID);   /* 16-aligned, but inside the payload */
    CHECK_EQ(hk_engine_free(e, a + 32), HK_EINVALID);   /* a 32-byte boundary, not this order's */
    CHECK_EQ(hk_engine_free(e, a + 128), HK_EINVALID);
    int local;
    CHECK_EQ(hk_engine_free(e, &local), HK_EINVALID);
    CHECK_EQ(hk_engine_usable_size(e, a + 16), 0);
    CHECK(hk_engine_realloc(e, a + 16, 10) == NULL);
    CHECK_EQ(hk_engine_check(e), 0);
    CHECK_EQ(hk_engine_free(e, a), HK_OK);
    CHECK_EQ(hk_engine_free(e, a), HK_EDOUBLEFREE);
    CHECK_EQ(hk_engine_free(e, b), HK_OK);             /* merges a and b */
    CHECK_EQ(hk_engine_free(e, b), HK_EDOUBLEFREE);    /* header absorbed in a merge, still caught */
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
    CHECK_EQ(hk_engine_check(e), 0);
    char saved[16];
    memcpy(saved, b - 16, 16);
    memset(b - 16, 0x41, 16);                          /* an overflow out of a */
    CHECK(hk_engine_check(e) > 0);
    CHECK_EQ(hk_engine_free(e, b), HK_EINVALID);
    CHECK_EQ(hk_engine_free(e, a), HK_ECORRUPT);       /* a's buddy b can't be read */
    memcpy(b - 16, saved, 16);
    CHECK_EQ(hk_engine_check(e), 0);
    /* Changing only the order byte is caught too. */
    b[-11] ^= 1;
    CHECK(hk_engine_check(e) > 0);
    b[-11] ^= 1;
    /* A broken free-list link. */
    CHECK_EQ(hk_engine_free(e, c), HK_OK);
    void **link = (void **)(void *)c;
    void *old = *link;
    *link = (void *)(a + 4);
    CHECK(hk_engine_check(e) > 0);
    /* Safe unlinking: the damaged list is refused, not followed. */
    CHECK(hk_engine_malloc(e, 100) == NULL);
    *link = old;
    CHECK_EQ(hk_engine_check(e), 0);
    /* A use-after-free write into the links of b, then b's buddy a is freed:
     * the merge would unlink b through them, so the free reports corruption. */
    CHECK_EQ(hk_engine_free(e, b), HK_OK);
    void **blink = (void **)(void *)b;
    old = *blink;
    *blink = (void *)0x1000;
    CHECK_EQ(hk_engine_free(e, a), HK_ECORRUPT);
    *blink = old;
    CHECK_EQ(hk_engine_check(e), 0);
    CHECK_EQ(hk_engine_free(e, a), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);
}

static void random_final_check(hk_engine_t *e, const hk_engine_stats_t *st)
{
    /* Everything free: the heap is one block per set bit of the break at most. */
    walk_t w = {0};
    hk_engine_walk(e, walk_cb, &w);
    CHECK(w.n <= __builtin_popcountll(st->footprint));
}

int main(void)
{
    RUN(test_basic);
    RUN(test_split_and_merge);
    RUN(test_recursive_merge);
    RUN(test_growth_gap_and_trim);
    RUN(test_lowest_address_first);
    RUN(test_realloc);
    RUN(test_realloc_merge_down);
    RUN(test_memalign);
    RUN(test_exhaustion);
    RUN(test_misuse);
    RUN(test_corruption);
    RUN(test_abort_mode);
    RUN(test_random);
    return t_finish();
}
