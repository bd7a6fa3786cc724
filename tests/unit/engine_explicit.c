/* The explicit free-list engines (LIFO and address-ordered): seeded random
 * sequences with check() after every step, list order seen through
 * placement, misuse detection, corrupted links, heap growth and shrink. */

static const char *const k_engines[] = {
    "explicit-lifo", "explicit-addr",
};
#define N_ENGINES (sizeof k_engines / sizeof k_engines[0])

#define BT_MIN_BLOCK 32
#define BT_MIN_USABLE 24
#define BT_OLD_BLOCK_CODE(i) HK_EINVALID
#include "engine_bt_tests.h"

/* Holes freed in the order a2, a0, a1 are reused newest-first by the LIFO
 * list and lowest-address-first by the address-ordered one. */
static void test_list_order(void)
{
    for (size_t i = 0; i < N_ENGINES; i++) {
        hk_engine_t *e = hk_engine_create(k_engines[i], NULL);
        REQUIRE(e != NULL);
        bool lifo = strcmp(k_engines[i], "explicit-lifo") == 0;
        void *a[3], *g[3];
        for (int k = 0; k < 3; k++) { a[k] = hk_engine_malloc(e, 100); g[k] = hk_engine_malloc(e, 8); }
        hk_engine_free(e, a[2]); CHECK_EQ(hk_engine_check(e), 0);
        hk_engine_free(e, a[0]); CHECK_EQ(hk_engine_check(e), 0);
        hk_engine_free(e, a[1]); CHECK_EQ(hk_engine_check(e), 0);
        void *x = hk_engine_malloc(e, 100), *y = hk_engine_malloc(e, 100), *z = hk_engine_malloc(e, 100);
        CHECK(x == (lifo ? a[1] : a[0]));
        CHECK(y == (lifo ? a[0] : a[1]));
        CHECK(z == a[2]);
        CHECK_EQ(hk_engine_check(e), 0);
        (void)g;
        hk_engine_destroy(e);
    }
}

/* Three neighbours freed in every order end up as one free block. */
static void test_coalescing(void)
{
    static const int order[6][3] = { {0,1,2}, {0,2,1}, {1,0,2}, {1,2,0}, {2,0,1}, {2,1,0} };
    for (size_t i = 0; i < N_ENGINES; i++) {
        for (int o = 0; o < 6; o++) {
            hk_engine_t *e = hk_engine_create(k_engines[i], NULL);
            REQUIRE(e != NULL);
            void *a[3];
            for (int k = 0; k < 3; k++) a[k] = hk_engine_malloc(e, 100);
            void *g = hk_engine_malloc(e, 100);
            for (int k = 0; k < 3; k++) {
                CHECK_EQ(hk_engine_free(e, a[order[o][k]]), HK_OK);
                CHECK_EQ(hk_engine_check(e), 0);
            }
            blocks_t w = {0};
            hk_engine_walk(e, rec, &w);
            CHECK_EQ(w.n, 2);
            CHECK(!w.used[0] && w.size[0] == 3 * 112 && w.used[1]);
            hk_engine_stats_t st;
            hk_engine_stats(e, &st);
            CHECK_EQ(st.free_blocks, 1);
            CHECK_EQ(st.free_bytes, 3 * 112);
            CHECK(hk_engine_malloc(e, 300) == a[0]);   /* the merged block serves a larger request */
            (void)g;
            hk_engine_destroy(e);
        }
    }
}


/* Damaged list links are counted by check(). */
static void test_broken_links(void)
{
    for (size_t i = 0; i < N_ENGINES; i++) {
        for (int kind = 0; kind < 3; kind++) {
            hk_engine_t *e = hk_engine_create(k_engines[i], NULL);
            REQUIRE(e != NULL);
            char *a = hk_engine_malloc(e, 64), *g1 = hk_engine_malloc(e, 64);
            char *b = hk_engine_malloc(e, 64), *g2 = hk_engine_malloc(e, 64);
            hk_engine_free(e, a);
            hk_engine_free(e, b);
            CHECK_EQ(hk_engine_check(e), 0);
            bool lifo = strcmp(k_engines[i], "explicit-lifo") == 0;
            char *head = lifo ? b : a, *tail = lifo ? a : b;
            void *bogus = kind == 0 ? NULL : kind == 1 ? (void *)g1 : (void *)(head + 8);
            if (kind < 2) memcpy(head, &bogus, sizeof bogus);       /* next link: lose or misdirect */
            else memcpy(tail + 8, &bogus, sizeof bogus);            /* prev link */
            CHECK(hk_engine_check(e) > 0);
            (void)g2;
            hk_engine_destroy(e);
        }
    }
}

/* Forge a list order with consistent links: address order is an invariant
 * of explicit-addr only, LIFO may hold the blocks in any order. */
static void set_links(char *payload, void *next, void *prev)
{
    memcpy(payload, &next, sizeof next);
    memcpy(payload + 8, &prev, sizeof prev);
}

static void test_forged_order(void)
{
    for (size_t i = 0; i < N_ENGINES; i++) {
        hk_engine_t *e = hk_engine_create(k_engines[i], NULL);
        REQUIRE(e != NULL);
        bool lifo = strcmp(k_engines[i], "explicit-lifo") == 0;
        char *p[6];
        for (int k = 0; k < 6; k++) p[k] = hk_engine_malloc(e, 64);
        char *a = p[0], *b = p[2], *c = p[4];
        hk_engine_free(e, a); hk_engine_free(e, b); hk_engine_free(e, c);
        CHECK_EQ(hk_engine_check(e), 0);
        /* headers are 8 bytes below the payloads; links live in the payload */
        char *ha = a - 8, *hb = b - 8, *hc = c - 8;
        if (lifo) {   /* natural c, b, a; forged c, a, b keeps c at the head */
            set_links(c, ha, NULL); set_links(a, hb, hc); set_links(b, NULL, ha);
            CHECK_EQ(hk_engine_check(e), 0);
        } else {      /* natural a, b, c; forged a, c, b */
            set_links(a, hc, NULL); set_links(c, hb, ha); set_links(b, NULL, hc);
            CHECK(hk_engine_check(e) > 0);
        }
        hk_engine_destroy(e);
    }
}

int main(void)
{
    RUN(test_basic_api);
    RUN(test_random);
    RUN(test_list_order);
    RUN(test_coalescing);
    RUN(test_realloc_in_place);
    RUN(test_growth_and_shrink);
    RUN(test_misuse);
    RUN(test_abort_mode);
    RUN(test_corruption_detected);
    RUN(test_broken_links);
    RUN(test_forged_order);
    return t_finish();
}
