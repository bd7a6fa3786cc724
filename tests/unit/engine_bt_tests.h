/* Tests shared by the boundary-tag list engines (implicit-*, explicit-*):
 * seeded random sequences with check() after every step and payload
 * patterns, the basic API, in-place realloc, heap growth and shrink, misuse
 * codes, abort-mode deaths and corruption detection, each run on every
 * engine of k_engines. The including file defines k_engines, N_ENGINES,
 * BT_MIN_BLOCK and BT_MIN_USABLE (min_block and the usable size of a 1-byte
 * block), and BT_OLD_BLOCK_CODE(i) (what freeing a realloc-moved block's old
 * address returns on engine i). */
#ifndef HK_ENGINE_BT_TESTS_H
#define HK_ENGINE_BT_TESTS_H

#include "test.h"
#include "heapkit/engine.h"
#include "classic/engine_impl.h"
#include <errno.h>

static uint64_t rng_state;
static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    return rng_state = x;
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(seed * 31u + i * 7u);
}
static bool verify(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed * 31u + i * 7u)) return false;
    return true;
}

static size_t rand_size(void)
{
    unsigned r = (unsigned)(rng() % 100);
    if (r < 70) return 1 + rng() % 256;
    if (r < 95) return 257 + rng() % 4000;
    return 4097 + rng() % 61440;
}

/* A walk that records blocks. */
typedef struct { void *addr[256]; size_t size[256]; bool used[256]; size_t n; } blocks_t;
static void rec(void *arg, void *block, size_t size, bool in_use)
{
    blocks_t *b = arg;
    if (b->n < 256) { b->addr[b->n] = block; b->size[b->n] = size; b->used[b->n] = in_use; }
    b->n++;
}

#define SLOTS 160
static void random_ops(const char *name, uint64_t seed, int ops)
{
    hk_engine_t *e = hk_engine_create(name, NULL);
    REQUIRE(e != NULL);
    unsigned char *ptr[SLOTS] = {0};
    size_t len[SLOTS] = {0};
    unsigned tag[SLOTS] = {0};
    rng_state = seed;
    int bad_steps = 0, misuse_tries = 0;
    void *stale[16] = {0};
    size_t stale_at = 0;
    for (int i = 0; i < ops; i++) {
        size_t k = rng() % SLOTS;
        unsigned op = (unsigned)(rng() % 10);
        if (!ptr[k]) {
            size_t n = rand_size();
            if (op == 0) {
                size_t align = (size_t)32 << (rng() % 8);
                ptr[k] = hk_engine_memalign(e, align, n);
                CHECK(ptr[k] && ((uintptr_t)ptr[k] & (align - 1)) == 0);
            } else if (op == 1) {
                ptr[k] = hk_engine_calloc(e, 1, n);
                if (ptr[k]) for (size_t j = 0; j < n; j++) if (ptr[k][j]) { CHECK(!"calloc not zero"); break; }
            } else {
                ptr[k] = hk_engine_malloc(e, n);
            }
            REQUIRE(ptr[k] != NULL);
            CHECK(((uintptr_t)ptr[k] & 15) == 0);
            CHECK(hk_engine_usable_size(e, ptr[k]) >= n);
            len[k] = n; tag[k] = (unsigned)i;
            fill(ptr[k], n, tag[k]);
        } else if (op == 9) {
            /* Misuse never changes the heap: an interior pointer, and a
             * pointer freed earlier that is no live block's start now. */
            size_t off = 16 * (1 + rng() % 4);
            if (off < len[k]) CHECK(hk_engine_free(e, ptr[k] + off) != HK_OK);
            void *old = stale[rng() % 16];
            bool live_now = false;
            for (size_t j = 0; j < SLOTS; j++) if (ptr[j] == old) live_now = true;
            if (old && !live_now) { CHECK(hk_engine_free(e, old) != HK_OK); misuse_tries++; }
            CHECK(verify(ptr[k], len[k], tag[k]));
        } else if (op < 3) {
            size_t n = rand_size();
            unsigned char *q = hk_engine_realloc(e, ptr[k], n);
            REQUIRE(q != NULL);
            CHECK(verify(q, (n < len[k] ? n : len[k]), tag[k]));
            ptr[k] = q; len[k] = n; tag[k] = (unsigned)i;
            fill(q, n, tag[k]);
        } else {
            CHECK(verify(ptr[k], len[k], tag[k]));
            CHECK_EQ(hk_engine_free(e, ptr[k]), HK_OK);
            stale[stale_at++ % 16] = ptr[k];
            ptr[k] = NULL;
        }
        size_t c = hk_engine_check(e);
        if (c && bad_steps++ < 3) fprintf(stderr, "  %s: check()=%zu after step %d\n", name, c, i);
    }
    CHECK_EQ(bad_steps, 0);
    CHECK(misuse_tries > 50);
    hk_engine_stats_t st;
    hk_engine_stats(e, &st);
    size_t live = 0;
    for (size_t k = 0; k < SLOTS; k++) if (ptr[k]) live++;
    CHECK_EQ(st.live_blocks, live);
    CHECK(st.peak_footprint >= st.footprint);
    for (size_t k = 0; k < SLOTS; k++) if (ptr[k]) {
        CHECK(verify(ptr[k], len[k], tag[k]));
        CHECK_EQ(hk_engine_free(e, ptr[k]), HK_OK);
        CHECK_EQ(hk_engine_check(e), 0);
    }
    hk_engine_stats(e, &st);
    CHECK_EQ(st.live_blocks, 0);
    CHECK_EQ(st.live_bytes, 0);
    hk_engine_destroy(e);
}

static void test_random(void)
{
    for (size_t i = 0; i < N_ENGINES; i++) random_ops(k_engines[i], 0x9e3779b97f4a7c15ull + i, 3000);
}

static void test_basic_api(void)
{
    for (size_t i = 0; i < N_ENGINES; i++) {
        hk_engine_t *e = hk_engine_create(k_engines[i], NULL);
        REQUIRE(e != NULL);
        hk_engine_info_t info;
        hk_engine_info(e, &info);
        CHECK_EQ(info.alignment, 16);
        CHECK_EQ(info.overhead, 8);
        CHECK_EQ(info.min_block, BT_MIN_BLOCK);
        CHECK(strcmp(info.name, k_engines[i]) == 0);
        char *p = hk_engine_malloc(e, 1);
        REQUIRE(p != NULL);
        CHECK_EQ(hk_engine_usable_size(e, p), BT_MIN_USABLE);
        int *z = hk_engine_calloc(e, 100, sizeof(int));
        REQUIRE(z != NULL);
        for (int k = 0; k < 100; k++) CHECK_EQ(z[k], 0);
        errno = 0;
        CHECK(hk_engine_calloc(e, SIZE_MAX / 2, 4) == NULL);
        CHECK_EQ(errno, ENOMEM);
        CHECK(hk_engine_malloc(e, SIZE_MAX - 8) == NULL);
        void *a = hk_engine_memalign(e, 4096, 100);
        CHECK(a && ((uintptr_t)a & 4095) == 0);
        CHECK_EQ(hk_engine_check(e), 0);
        CHECK_EQ(hk_engine_free(e, a), HK_OK);
        CHECK_EQ(hk_engine_free(e, z), HK_OK);
        CHECK_EQ(hk_engine_free(e, p), HK_OK);
        CHECK_EQ(hk_engine_free(e, NULL), HK_OK);
        CHECK_EQ(hk_engine_check(e), 0);
        hk_engine_destroy(e);
    }
}

static void test_realloc_in_place(void)
{
    for (size_t i = 0; i < N_ENGINES; i++) {
        hk_engine_t *e = hk_engine_create(k_engines[i], NULL);
        REQUIRE(e != NULL);
        char *p = hk_engine_malloc(e, 100), *q = hk_engine_malloc(e, 300), *g = hk_engine_malloc(e, 10);
        char *h = hk_engine_malloc(e, 10);
        fill((unsigned char *)p, 100, 1);
        hk_engine_free(e, q);
        char *r = hk_engine_realloc(e, p, 350);   /* grows into the free neighbour */
        CHECK(r == p);
        CHECK(verify((unsigned char *)r, 100, 1));
        CHECK_EQ(hk_engine_check(e), 0);
        r = hk_engine_realloc(e, p, 40);          /* shrinks, the tail becomes free */
        CHECK(r == p);
        CHECK_EQ(hk_engine_usable_size(e, p), 40);
        CHECK_EQ(hk_engine_check(e), 0);
        /* The last block grows past the heap's end by just the difference. */
        hk_engine_stats_t s0, s1;
        hk_engine_stats(e, &s0);
        char *r2 = hk_engine_realloc(e, h, 10000);
        CHECK(r2 == h);
        hk_engine_stats(e, &s1);
        CHECK_EQ(s1.footprint - s0.footprint, 10016 - 32);
        CHECK_EQ(hk_engine_check(e), 0);
        /* g cannot grow forward (h is live) and slides down into the free
         * block left by p's shrink instead of taking new space. */
        fill((unsigned char *)g, 10, 2);
        char *r3 = hk_engine_realloc(e, g, 300);
        CHECK(r3 == p + 48);
        CHECK(verify((unsigned char *)r3, 10, 2));
        /* The old address is no block any more (or, where g moved after a
         * merge pass, its old block is simply free: BT_OLD_BLOCK_CODE). */
        CHECK_EQ(hk_engine_free(e, g), BT_OLD_BLOCK_CODE(i));
        CHECK_EQ(hk_engine_usable_size(e, g), 0);
        hk_engine_stats(e, &s0);
        CHECK_EQ(s0.footprint, s1.footprint);
        CHECK_EQ(hk_engine_check(e), 0);
        hk_engine_destroy(e);
    }
}

static void test_growth_and_shrink(void)
{
    for (size_t i = 0; i < N_ENGINES; i++) {
        hk_engine_t *e = hk_engine_create(k_engines[i], NULL);
        REQUIRE(e != NULL);
        hk_engine_stats_t s0, s1, s2;
        hk_engine_stats(e, &s0);
        void *small = hk_engine_malloc(e, 64);
        void *big = hk_engine_malloc(e, 1 << 20);
        REQUIRE(big != NULL);
        hk_engine_stats(e, &s1);
        CHECK_EQ(s1.footprint - s0.footprint, 80 + (1 << 20) + 16);   /* grown by just what was asked */
        CHECK_EQ(hk_engine_free(e, big), HK_OK);
        hk_engine_stats(e, &s2);
        CHECK_EQ(s2.footprint, s0.footprint + 80);                    /* the free top went back */
        CHECK_EQ(s2.peak_footprint, s1.footprint);
        CHECK_EQ(hk_engine_check(e), 0);
        /* A capped heap says no instead of failing hard. */
        hk_engine_free(e, small);
        hk_engine_destroy(e);
        hk_engine_config_t cfg = { .max_size = 1 << 20, .flags = 0 };
        e = hk_engine_create(k_engines[i], &cfg);
        REQUIRE(e != NULL);
        errno = 0;
        CHECK(hk_engine_malloc(e, 2 << 20) == NULL);
        CHECK_EQ(errno, ENOMEM);
        CHECK(hk_engine_malloc(e, 100) != NULL);
        CHECK_EQ(hk_engine_check(e), 0);
        hk_engine_destroy(e);
        /* info.max_request is a promise an empty heap keeps. */
        e = hk_engine_create(k_engines[i], &cfg);
        REQUIRE(e != NULL);
        hk_engine_info_t info;
        hk_engine_info(e, &info);
        CHECK(info.max_request > (1 << 20) - 4096 && info.max_request < (1 << 20));
        CHECK(hk_engine_malloc(e, info.max_request + 64) == NULL);
        void *m = hk_engine_malloc(e, info.max_request);
        CHECK(m != NULL);
        CHECK_EQ(hk_engine_check(e), 0);
        CHECK_EQ(hk_engine_free(e, m), HK_OK);
        CHECK_EQ(hk_engine_check(e), 0);
        hk_engine_destroy(e);
    }
}

static void test_misuse(void)
{
    for (size_t i = 0; i < N_ENGINES; i++) {
        hk_engine_t *e = hk_engine_create(k_engines[i], NULL);
        REQUIRE(e != NULL);
        char *p = hk_engine_malloc(e, 200), *q = hk_engine_malloc(e, 200);
        fill((unsigned char *)p, 200, 5);
        int local;
        CHECK_EQ(hk_engine_free(e, &local), HK_EINVALID);
        CHECK_EQ(hk_engine_free(e, p + 8), HK_EINVALID);
        CHECK_EQ(hk_engine_free(e, p + 16), HK_EINVALID);
        CHECK_EQ(hk_engine_free(e, p + 64), HK_EINVALID);
        memset(p, 0, 200);
        CHECK_EQ(hk_engine_free(e, p + 32), HK_EINVALID);
        CHECK_EQ(hk_engine_usable_size(e, p + 16), 0);
        CHECK(hk_engine_realloc(e, p + 16, 10) == NULL);
        CHECK_EQ(hk_engine_check(e), 0);
        CHECK_EQ(hk_engine_free(e, p), HK_OK);
        CHECK_EQ(hk_engine_free(e, p), HK_EDOUBLEFREE);
        CHECK_EQ(hk_engine_free(e, q), HK_OK);              /* q merges with p's block */
        CHECK_EQ(hk_engine_free(e, q), HK_EDOUBLEFREE);
        CHECK_EQ(hk_engine_free(e, p), HK_EDOUBLEFREE);
        CHECK_EQ(hk_engine_usable_size(e, p), 0);
        CHECK_EQ(hk_engine_check(e), 0);
        hk_engine_destroy(e);
    }
}

static void double_free_abort(void *arg)
{
    hk_engine_config_t cfg = { .max_size = 0, .flags = HK_ENGINE_ABORT_ON_MISUSE };
    hk_engine_t *e = hk_engine_create(arg, &cfg);
    void *p = hk_engine_malloc(e, 32);
    hk_engine_malloc(e, 32);
    hk_engine_free(e, p);
    hk_engine_free(e, p);
}
static void invalid_free_abort(void *arg)
{
    hk_engine_config_t cfg = { .max_size = 0, .flags = HK_ENGINE_ABORT_ON_MISUSE };
    hk_engine_t *e = hk_engine_create(arg, &cfg);
    char *p = hk_engine_malloc(e, 64);
    memset(p, 0x5a, 64);
    hk_engine_free(e, p + 32);
}

static void test_abort_mode(void)
{
    for (size_t i = 0; i < N_ENGINES; i++) {
        CHECK(t_expect_death(double_free_abort, (void *)k_engines[i], SIGABRT, "double free"));
        CHECK(t_expect_death(invalid_free_abort, (void *)k_engines[i], SIGABRT, "invalid pointer"));
    }
}

static void test_corruption_detected(void)
{
    for (size_t i = 0; i < N_ENGINES; i++) {
        hk_engine_t *e = hk_engine_create(k_engines[i], NULL);
        REQUIRE(e != NULL);
        char *a = hk_engine_malloc(e, 48), *b = hk_engine_malloc(e, 48), *c = hk_engine_malloc(e, 48);
        hk_engine_free(e, b);
        CHECK_EQ(hk_engine_check(e), 0);
        /* An overflow from a (56 usable bytes) runs over b's header. */
        memset(a, 0x41, 56 + 8);
        CHECK(hk_engine_check(e) > 0);
        CHECK_EQ(hk_engine_free(e, c), HK_ECORRUPT);   /* c's prev footer no longer leads to a free header */
        hk_engine_destroy(e);

        /* A footer that disagrees with its header. */
        e = hk_engine_create(k_engines[i], NULL);
        a = hk_engine_malloc(e, 48); b = hk_engine_malloc(e, 48); c = hk_engine_malloc(e, 48);
        hk_engine_free(e, b);
        memset(b + 48, 0x42, 8);   /* b's footer: last word of its 64-byte block */
        CHECK(hk_engine_check(e) > 0);
        hk_engine_destroy(e);
    }
}

#endif
