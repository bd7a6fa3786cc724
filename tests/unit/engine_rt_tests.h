/* Tests shared by the buddy and hole-index engines: region exhaustion,
 * abort-mode deaths, and a seeded random sequence against a model with
 * payload patterns and check() after every step. The including file defines
 * ENGINE (its name) and RT_SEED (the random sequence's seed), and after the
 * include random_final_check(): what must hold once everything is freed. */
#ifndef HK_ENGINE_RT_TESTS_H
#define HK_ENGINE_RT_TESTS_H

#include "test.h"
#include "heapkit/engine.h"
#include "classic/engine_impl.h"
#include <errno.h>

static void random_final_check(hk_engine_t *e, const hk_engine_stats_t *st);

static hk_engine_t *mk(unsigned flags)
{
    hk_engine_config_t cfg = { .max_size = (size_t)64 << 20, .flags = flags };
    return hk_engine_create(ENGINE, &cfg);
}

/* A small region runs out: malloc returns NULL with ENOMEM, the heap stays
 * consistent, and everything can still be freed. */
static void test_exhaustion(void)
{
    hk_engine_config_t cfg = { .max_size = (size_t)64 << 10 };
    hk_engine_t *e = hk_engine_create(ENGINE, &cfg);
    REQUIRE(e);
    enum { N = 4096 };
    static void *p[N];
    int n = 0;
    errno = 0;
    while (n < N && (p[n] = hk_engine_malloc(e, 100 + (size_t)(n % 5) * 300)) != NULL) n++;
    CHECK(n > 10 && n < N);
    CHECK_EQ(errno, ENOMEM);
    CHECK(hk_engine_malloc(e, (size_t)1 << 20) == NULL);
    CHECK(hk_engine_memalign(e, 4096, 60000) == NULL);
    CHECK_EQ(hk_engine_check(e), 0);
    /* Growing in place fails softly too: the block is still there. */
    void *q = hk_engine_realloc(e, p[0], 50000);
    CHECK(q == NULL);
    CHECK(hk_engine_usable_size(e, p[0]) >= 100);
    for (int i = 0; i < n; i++) CHECK_EQ(hk_engine_free(e, p[i]), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    p[0] = hk_engine_malloc(e, 20000);
    CHECK(p[0] != NULL);
    CHECK_EQ(hk_engine_free(e, p[0]), HK_OK);
    hk_engine_destroy(e);
}

static void double_free_abort(void *arg)
{
    (void)arg;
    hk_engine_t *e = mk(HK_ENGINE_ABORT_ON_MISUSE);
    void *p = hk_engine_malloc(e, 10);
    hk_engine_malloc(e, 10);
    hk_engine_free(e, p);
    hk_engine_free(e, p);
}

static void invalid_free_abort(void *arg)
{
    (void)arg;
    hk_engine_t *e = mk(HK_ENGINE_ABORT_ON_MISUSE);
    char *p = hk_engine_malloc(e, 100);
    hk_engine_free(e, p + 16);
}

static void test_abort_mode(void)
{
    CHECK(t_expect_death(double_free_abort, NULL, SIGABRT, "double free"));
    CHECK(t_expect_death(invalid_free_abort, NULL, SIGABRT, "invalid pointer"));
}

/* Seeded random operations against a model: payload patterns are checked at
 * free and realloc, check() must return 0 after every step. */
static uint64_t rng_state;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return rng_state;
}
static size_t rnd_size(void)
{
    uint64_t r = rnd() % 100;
    if (r < 60) return 1 + rnd() % 128;
    if (r < 90) return 1 + rnd() % 2048;
    return 1 + rnd() % 65536;
}
static void fill(unsigned char *p, size_t n, unsigned id) { for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(id * 31 + i); }
static bool verify(const unsigned char *p, size_t n, unsigned id)
{
    for (size_t i = 0; i < n; i++) if (p[i] != (unsigned char)(id * 31 + i)) return false;
    return true;
}

static void test_random(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    enum { SLOTS = 200, OPS = 4000 };
    unsigned char *ptr[SLOTS] = {0};
    size_t len[SLOTS] = {0};
    unsigned id[SLOTS] = {0};
    rng_state = RT_SEED;
    size_t bad = 0, badpat = 0;
    for (unsigned op = 1; op <= OPS; op++) {
        unsigned s = (unsigned)(rnd() % SLOTS);
        unsigned kind = (unsigned)(rnd() % 10);
        if (!ptr[s]) {
            size_t n = rnd_size();
            if (kind == 0) {
                size_t al = (size_t)32 << (rnd() % 8);
                ptr[s] = hk_engine_memalign(e, al, n);
                if (ptr[s] && ((uintptr_t)ptr[s] & (al - 1))) bad++;
            } else {
                ptr[s] = kind == 1 ? hk_engine_calloc(e, 1, n) : hk_engine_malloc(e, n);
            }
            REQUIRE(ptr[s]);
            if (hk_engine_usable_size(e, ptr[s]) < n) bad++;
            len[s] = n; id[s] = op;
            fill(ptr[s], n, op);
        } else if (kind < 3) {
            size_t n = rnd_size();
            if (!verify(ptr[s], len[s], id[s])) badpat++;
            unsigned char *q = hk_engine_realloc(e, ptr[s], n);
            REQUIRE(q);
            if (!verify(q, (n < len[s] ? n : len[s]), id[s])) badpat++;
            ptr[s] = q; len[s] = n; id[s] = op;
            fill(q, n, op);
        } else {
            if (!verify(ptr[s], len[s], id[s])) badpat++;
            if (hk_engine_free(e, ptr[s]) != HK_OK) bad++;
            ptr[s] = NULL;
        }
        if (hk_engine_check(e) != 0) { bad++; break; }
    }
    CHECK_EQ(bad, 0);
    CHECK_EQ(badpat, 0);
    for (unsigned s = 0; s < SLOTS; s++)
        if (ptr[s]) { CHECK(verify(ptr[s], len[s], id[s])); CHECK_EQ(hk_engine_free(e, ptr[s]), HK_OK); }
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_stats_t st;
    hk_engine_stats(e, &st);
    CHECK_EQ(st.live_blocks, 0);
    CHECK_EQ(st.live_bytes, 0);
    random_final_check(e, &st);
    hk_engine_destroy(e);
}

#endif
