/* The implicit free-list engines (first, next, best, worst fit; deferred
 * coalescing): seeded random sequences with check() after every step,
 * placement policies on hand-built holes, misuse detection, heap growth. */
#include "test.h"
#include "classic/boundary_tag.h"

static const char *const k_engines[] = {
    "implicit-first", "implicit-next", "implicit-best", "implicit-worst", "implicit-deferred",
};
#define N_ENGINES (sizeof k_engines / sizeof k_engines[0])

#define BT_MIN_BLOCK 16
#define BT_MIN_USABLE 8
/* deferred (i == 4): g moved the usual way after the merge pass */
#define BT_OLD_BLOCK_CODE(i) ((i) == 4 ? HK_EDOUBLEFREE : HK_EINVALID)
#include "engine_bt_tests.h"

/* The same sequence under next fit and first fit picks different holes. */
/* Two neighbouring free blocks break the invariant of the immediate
 * engines but not the deferred one's: forge one with valid tags. */
static void test_check_adjacent_free(void)
{
    for (size_t i = 0; i < N_ENGINES; i++) {
        hk_engine_t *e = hk_engine_create(k_engines[i], NULL);
        REQUIRE(e != NULL);
        char *a = hk_engine_malloc(e, 40), *b = hk_engine_malloc(e, 40), *c = hk_engine_malloc(e, 40);
        CHECK_EQ(hk_engine_free(e, a), HK_OK);
        CHECK_EQ(hk_engine_check(e), 0);
        hk_bt_blk *bb = hk__bt_of(b);
        hk__bt_set_free(bb, hk__bt_size(bb), false);
        hk__bt_set_prev_alloc(hk__bt_of(c), false);
        CHECK_EQ(hk_engine_check(e), i == 4 ? 0 : 1);
        hk_engine_destroy(e);
    }
}

static void test_next_fit_rover(void)
{
    void *got[2];
    void *hole2[2];
    const char *names[2] = { "implicit-first", "implicit-next" };
    for (int k = 0; k < 2; k++) {
        hk_engine_t *e = hk_engine_create(names[k], NULL);
        REQUIRE(e != NULL);
        void *a[6];
        for (int i = 0; i < 6; i++) a[i] = hk_engine_malloc(e, 100);
        hk_engine_free(e, a[1]);
        hk_engine_free(e, a[3]);
        void *x = hk_engine_malloc(e, 100);     /* both take hole a[1]; the rover moves past it */
        CHECK(x == a[1]);
        hk_engine_free(e, x);                   /* a[1] is a hole again, before the rover */
        got[k] = hk_engine_malloc(e, 100);
        hole2[k] = a[3];
        CHECK(got[k] == (k == 0 ? a[1] : a[3]));
        CHECK_EQ(hk_engine_check(e), 0);
        hk_engine_destroy(e);
    }
    (void)got; (void)hole2;
}

/* Holes of 208, 112 and 416 bytes separated by live guards: a 90-byte
 * request lands in the first, the smallest or the largest of them. */
static void test_fit_policies(void)
{
    const char *names[3] = { "implicit-first", "implicit-best", "implicit-worst" };
    for (int k = 0; k < 3; k++) {
        hk_engine_t *e = hk_engine_create(names[k], NULL);
        REQUIRE(e != NULL);
        void *h1 = hk_engine_malloc(e, 200); void *g1 = hk_engine_malloc(e, 8);
        void *h2 = hk_engine_malloc(e, 100); void *g2 = hk_engine_malloc(e, 8);
        void *h3 = hk_engine_malloc(e, 400); void *g3 = hk_engine_malloc(e, 8);
        CHECK_EQ(hk_engine_usable_size(e, h1), 200);
        CHECK_EQ(hk_engine_usable_size(e, h2), 104);
        CHECK_EQ(hk_engine_usable_size(e, h3), 408);
        hk_engine_free(e, h1); hk_engine_free(e, h2); hk_engine_free(e, h3);
        void *want = k == 0 ? h1 : k == 1 ? h2 : h3;
        void *p = hk_engine_malloc(e, 90);
        CHECK(p == want);
        CHECK_EQ(hk_engine_check(e), 0);
        (void)g1; (void)g2; (void)g3;
        hk_engine_destroy(e);
    }
}

static void test_deferred_coalescing(void)
{
    hk_engine_t *e = hk_engine_create("implicit-deferred", NULL);
    REQUIRE(e != NULL);
    void *a = hk_engine_malloc(e, 100), *b = hk_engine_malloc(e, 100), *c = hk_engine_malloc(e, 100);
    void *g = hk_engine_malloc(e, 100);
    hk_engine_free(e, a); CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_free(e, b); CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_free(e, c); CHECK_EQ(hk_engine_check(e), 0);
    blocks_t w = {0};
    hk_engine_walk(e, rec, &w);
    REQUIRE(w.n == 4);
    CHECK(!w.used[0] && !w.used[1] && !w.used[2] && w.used[3]);   /* three adjacent free blocks stay */
    void *s = hk_engine_malloc(e, 50);      /* fits in a: no merging needed */
    CHECK(s == a);
    memset(&w, 0, sizeof w);
    hk_engine_walk(e, rec, &w);
    CHECK_EQ(w.n, 5);                        /* a split: 64 used + 48 free, then b, c free, g */
    CHECK_EQ(hk_engine_check(e), 0);
    void *big = hk_engine_malloc(e, 200);   /* no single block fits: merge pass, then fit */
    CHECK(big == (char *)a + 64);
    memset(&w, 0, sizeof w);
    hk_engine_walk(e, rec, &w);
    REQUIRE(w.n == 4);
    CHECK(w.used[0] && w.used[1] && !w.used[2] && w.used[3]);
    CHECK_EQ(w.size[0] + w.size[1] + w.size[2], 3 * 112);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_free(e, s); hk_engine_free(e, big); hk_engine_free(e, g);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);

    /* The immediate engines merge the same frees at once. */
    e = hk_engine_create("implicit-first", NULL);
    a = hk_engine_malloc(e, 100); b = hk_engine_malloc(e, 100); c = hk_engine_malloc(e, 100);
    g = hk_engine_malloc(e, 100);
    hk_engine_free(e, a); hk_engine_free(e, c); hk_engine_free(e, b);
    memset(&w, 0, sizeof w);
    hk_engine_walk(e, rec, &w);
    CHECK_EQ(w.n, 2);
    CHECK(!w.used[0] && w.size[0] == 3 * 112);
    hk_engine_destroy(e);
}


int main(void)
{
    RUN(test_basic_api);
    RUN(test_random);
    RUN(test_next_fit_rover);
    RUN(test_fit_policies);
    RUN(test_deferred_coalescing);
    RUN(test_realloc_in_place);
    RUN(test_growth_and_shrink);
    RUN(test_misuse);
    RUN(test_abort_mode);
    RUN(test_corruption_detected);
    RUN(test_check_adjacent_free);
    return t_finish();
}
