/* Tests shared by the engines with tagged_block.h blocks (segregated, tlsf):
 * API behaviour, a seeded random sequence with check() after every step and
 * payload patterns, misuse codes, abort-mode deaths, interior pointers,
 * corruption detection, coalescing, in-place realloc, heap growth and shrink,
 * region exhaustion. The including file defines ENGINE (its name), and
 * TT_REALLOC_MERGES_BACK when realloc also merges into a free block in front. */
#ifndef HK_ENGINE_TAGGED_TESTS_H
#define HK_ENGINE_TAGGED_TESTS_H

#include "test.h"
#include "classic/engine_impl.h"
#include <errno.h>

#ifndef ENGINE
#error "define ENGINE before including engine_tagged_tests.h"
#endif

static hk_engine_t *mk(unsigned flags)
{
    hk_engine_config_t cfg = { .max_size = (size_t)256 << 20, .flags = flags };
    return hk_engine_create(ENGINE, &cfg);
}

static size_t footprint(hk_engine_t *e)
{
    hk_engine_stats_t st;
    hk_engine_stats(e, &st);
    return st.footprint;
}

typedef struct { int n; int n_free; size_t free_bytes; char *last; size_t last_size; bool last_used; } walk_t;
static void count_cb(void *arg, void *block, size_t size, bool in_use)
{
    walk_t *w = arg;
    w->n++;
    if (!in_use) { w->n_free++; w->free_bytes += size; }
    w->last = block; w->last_size = size; w->last_used = in_use;
}
static walk_t walk(hk_engine_t *e) { walk_t w = {0}; hk_engine_walk(e, count_cb, &w); return w; }

static void test_info_and_basics(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    hk_engine_info_t in;
    hk_engine_info(e, &in);
    CHECK_EQ(in.alignment, 16);
    CHECK_EQ(in.overhead, 8);
    CHECK_EQ(in.min_block, 32);
    CHECK(in.max_request > 0);
    for (size_t n = 1; n < 5000; n = n * 3 + 1) {
        char *p = hk_engine_malloc(e, n);
        REQUIRE(p);
        CHECK(((uintptr_t)p & 15) == 0);
        CHECK(hk_engine_usable_size(e, p) >= n);
        CHECK(hk_engine_usable_size(e, p) < n + 32);
        memset(p, 0xab, n);
        CHECK_EQ(hk_engine_check(e), 0);
        CHECK_EQ(hk_engine_free(e, p), HK_OK);
    }
    int *z = hk_engine_calloc(e, 100, sizeof(int));
    REQUIRE(z);
    for (int i = 0; i < 100; i++) CHECK_EQ(z[i], 0);
    CHECK(hk_engine_malloc(e, SIZE_MAX - 8) == NULL);
    CHECK(hk_engine_calloc(e, SIZE_MAX / 2, 4) == NULL);
    CHECK(hk_engine_malloc(e, (size_t)1 << 30) == NULL);   /* larger than the region */
    CHECK_EQ(errno, ENOMEM);
    CHECK_EQ(hk_engine_check(e), 0);
    for (size_t al = 32; al <= 8192; al <<= 1) {
        char *p = hk_engine_memalign(e, al, 100);
        REQUIRE(p);
        CHECK(((uintptr_t)p & (al - 1)) == 0);
        CHECK(hk_engine_usable_size(e, p) >= 100);
        memset(p, 1, 100);
        CHECK_EQ(hk_engine_check(e), 0);
        if (al & 64) CHECK_EQ(hk_engine_free(e, p), HK_OK);
    }
    CHECK_EQ(hk_engine_check(e), 0);
    CHECK_EQ(hk_engine_free(e, z), HK_OK);
    hk_engine_destroy(e);
}

/* Seeded random mix with a fill pattern per block, check() after every step. */
static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint64_t rnd(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }
static size_t rnd_size(void)
{
    uint64_t r = rnd() % 100;
    if (r < 60) return 1 + rnd() % 128;
    if (r < 90) return 1 + rnd() % 2048;
    return 1 + rnd() % 65536;
}

#define SLOTS 256
static void test_random_sequence(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    char *ptr[SLOTS] = {0};
    size_t len[SLOTS] = {0};
    int fails = 0;
    for (int step = 0; step < 4000 && fails < 5; step++) {
        int i = (int)(rnd() % SLOTS);
        unsigned char pat = (unsigned char)(i * 7 + 1);
        if (ptr[i]) {
            for (size_t k = 0; k < len[i]; k++)
                if ((unsigned char)ptr[i][k] != pat) { fails++; CHECK(!"payload pattern changed"); break; }
        }
        uint64_t op = rnd() % 10;
        if (!ptr[i]) {
            size_t n = rnd_size();
            ptr[i] = op == 0 ? hk_engine_memalign(e, (size_t)64 << (rnd() % 6), n)
                   : op == 1 ? hk_engine_calloc(e, 1, n) : hk_engine_malloc(e, n);
            REQUIRE(ptr[i]);
            len[i] = n;
            memset(ptr[i], pat, n);
        } else if (op < 3) {
            size_t n = op == 0 ? len[i] + 1 + rnd() % 512 : rnd_size();
            char *q = hk_engine_realloc(e, ptr[i], n);
            REQUIRE(q);
            for (size_t k = 0; k < HK_MIN(n, len[i]); k++)
                if ((unsigned char)q[k] != pat) { fails++; CHECK(!"realloc lost data"); break; }
            ptr[i] = q; len[i] = n;
            memset(q, pat, n);
        } else {
            CHECK_EQ(hk_engine_free(e, ptr[i]), HK_OK);
            ptr[i] = NULL;
        }
        size_t bad = hk_engine_check(e);
        if (bad) { fails++; fprintf(stderr, "  check() = %zu after step %d\n", bad, step); }
    }
    CHECK_EQ(fails, 0);
    for (int i = 0; i < SLOTS; i++) if (ptr[i]) CHECK_EQ(hk_engine_free(e, ptr[i]), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_stats_t st;
    hk_engine_stats(e, &st);
    CHECK_EQ(st.live_blocks, 0);
    CHECK_EQ(st.live_bytes, 0);
    CHECK(st.free_blocks <= 1);                       /* everything coalesced */
    CHECK(st.peak_footprint >= st.footprint);
    hk_engine_destroy(e);
}

static void test_misuse_codes(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    char *a = hk_engine_malloc(e, 200), *b = hk_engine_malloc(e, 200), *c = hk_engine_malloc(e, 200);
    REQUIRE(a && b && c);
    int local;
    CHECK_EQ(hk_engine_free(e, &local), HK_EINVALID);
    CHECK_EQ(hk_engine_free(e, b + 16), HK_EINVALID);   /* interior, aligned */
    CHECK_EQ(hk_engine_free(e, b + 8), HK_EINVALID);    /* interior, misaligned */
    CHECK_EQ(hk_engine_free(e, b + 64), HK_EINVALID);
    CHECK_EQ(hk_engine_usable_size(e, b + 16), 0);
    CHECK(hk_engine_realloc(e, b + 16, 10) == NULL);
    CHECK_EQ(hk_engine_check(e), 0);
    CHECK_EQ(hk_engine_free(e, b), HK_OK);
    CHECK_EQ(hk_engine_free(e, b), HK_EDOUBLEFREE);
    CHECK_EQ(hk_engine_free(e, a), HK_OK);              /* coalesces with b */
    CHECK_EQ(hk_engine_free(e, b), HK_EDOUBLEFREE);     /* b's header is now inside a free block */
    CHECK_EQ(hk_engine_free(e, a), HK_EDOUBLEFREE);
    CHECK_EQ(hk_engine_usable_size(e, a), 0);
    CHECK_EQ(hk_engine_check(e), 0);
    CHECK_EQ(hk_engine_free(e, c), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);
}

static void double_free_child(void *arg)
{
    (void)arg;
    hk_engine_t *e = mk(HK_ENGINE_ABORT_ON_MISUSE);
    char *p = hk_engine_malloc(e, 64);
    char *q = hk_engine_malloc(e, 64);
    (void)q;
    hk_engine_free(e, p);
    hk_engine_free(e, p);
}
static void invalid_free_child(void *arg)
{
    (void)arg;
    hk_engine_t *e = mk(HK_ENGINE_ABORT_ON_MISUSE);
    char *p = hk_engine_malloc(e, 64);
    hk_engine_free(e, p + 32);
}
static void corrupt_free_child(void *arg)
{
    (void)arg;
    hk_engine_t *e = mk(HK_ENGINE_ABORT_ON_MISUSE);
    char *a = hk_engine_malloc(e, 100), *b = hk_engine_malloc(e, 100), *c = hk_engine_malloc(e, 100);
    (void)c;
    hk_engine_free(e, a);
    memset(b - 16, 0x55, 8);                 /* damage the free block in front of b */
    hk_engine_free(e, b);
}
static void uaf_malloc_child(void *arg)
{
    (void)arg;
    hk_engine_t *e = mk(HK_ENGINE_ABORT_ON_MISUSE);
    char *a = hk_engine_malloc(e, 100), *b = hk_engine_malloc(e, 100), *c = hk_engine_malloc(e, 100);
    (void)a; (void)c;
    hk_engine_free(e, b);
    memset(b, 0x42, 16);                     /* write after free over the links */
    hk_engine_malloc(e, 100);
}
static void test_abort_mode(void)
{
    CHECK(t_expect_death(uaf_malloc_child, NULL, SIGABRT, "heap corruption"));
    CHECK(t_expect_death(corrupt_free_child, NULL, SIGABRT, "heap corruption"));
    CHECK(t_expect_death(double_free_child, NULL, SIGABRT, "double free"));
    CHECK(t_expect_death(invalid_free_child, NULL, SIGABRT, "invalid pointer"));
}

/* Every aligned interior pointer of live blocks is refused, and refusing
 * them changes nothing. */
static void test_interior_pointers(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    static const size_t sizes[] = { 24, 100, 700, 3000, 20000 };
    char *p[5];
    for (int i = 0; i < 5; i++) { p[i] = hk_engine_malloc(e, sizes[i]); REQUIRE(p[i]); memset(p[i], 0x11 * (i + 1), sizes[i]); }
    int wrong = 0;
    for (int i = 0; i < 5; i++)
        for (size_t off = 16; off < sizes[i]; off += 16) {
            if (hk_engine_free(e, p[i] + off) != HK_EINVALID) wrong++;
            if (hk_engine_usable_size(e, p[i] + off) != 0) wrong++;
        }
    CHECK_EQ(wrong, 0);
    CHECK_EQ(hk_engine_check(e), 0);
    /* a header copied into a payload is not a block: its tag names another address */
    memcpy(p[3] + 64, p[2] - 8, 8);
    CHECK_EQ(hk_engine_free(e, p[3] + 72), HK_EINVALID);
    for (int i = 0; i < 5; i++) CHECK_EQ(hk_engine_free(e, p[i]), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);
}

static void test_corruption_detected(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    char *a = hk_engine_malloc(e, 100), *b = hk_engine_malloc(e, 100), *c = hk_engine_malloc(e, 100);
    REQUIRE(a && b && c);
    CHECK_EQ(hk_engine_check(e), 0);
    uint64_t saved;
    memcpy(&saved, b - 8, 8);
    memset(b - 8, 0x41, 8);                  /* an overflow out of a runs over b's header */
    CHECK(hk_engine_check(e) > 0);
    CHECK(hk_engine_free(e, b) != HK_OK);
    memcpy(b - 8, &saved, 8);
    CHECK_EQ(hk_engine_check(e), 0);
    /* a free block's links (and footer) */
    CHECK_EQ(hk_engine_free(e, b), HK_OK);
    memset(b, 0x42, 16);                     /* use after free over the list links */
    CHECK(hk_engine_check(e) > 0);
    CHECK(hk_engine_malloc(e, 100) == NULL);         /* malloc refuses to unlink it */
    CHECK_EQ(hk_engine_free(e, a), HK_ECORRUPT);     /* so does free, which would merge with it */
    CHECK_EQ(hk_engine_free(e, c), HK_ECORRUPT);
    hk_engine_destroy(e);

    e = mk(0);
    a = hk_engine_malloc(e, 100); b = hk_engine_malloc(e, 100); c = hk_engine_malloc(e, 100);
    CHECK_EQ(hk_engine_free(e, a), HK_OK);
    memset(b - 16, 0x43, 8);                 /* a's footer (or back pointer): freeing b must not merge into garbage */
    CHECK(hk_engine_check(e) > 0);
    CHECK_EQ(hk_engine_free(e, b), HK_ECORRUPT);
    CHECK(hk_engine_realloc(e, b, 5000) == NULL);   /* realloc would merge into it too */
    CHECK_EQ(hk_engine_usable_size(e, b), 0);
    CHECK_EQ(hk_engine_usable_size(e, c), 104);      /* 100 + 8-byte header, rounded to 16 */
    hk_engine_destroy(e);
}

static void test_coalescing_and_best_fit(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    char *p[7];
    for (int i = 0; i < 7; i++) { p[i] = hk_engine_malloc(e, 1000); REQUIRE(p[i]); }
    walk_t w0 = walk(e);
    CHECK_EQ(w0.n, 7);
    CHECK_EQ(w0.n_free, 0);
    /* both neighbours free: three blocks become one */
    CHECK_EQ(hk_engine_free(e, p[1]), HK_OK);
    CHECK_EQ(hk_engine_free(e, p[3]), HK_OK);
    CHECK_EQ(walk(e).n_free, 2);
    CHECK_EQ(hk_engine_free(e, p[2]), HK_OK);
    walk_t w1 = walk(e);
    CHECK_EQ(w1.n_free, 1);
    CHECK_EQ(w1.n, 5);
    CHECK_EQ(hk_engine_check(e), 0);
    /* a hole of one block (p[5]) is preferred over the triple hole (best fit;
     * for good fit, it is in the exact list and the triple hole is not) */
    CHECK_EQ(hk_engine_free(e, p[5]), HK_OK);
    char *q = hk_engine_malloc(e, 1000);
    CHECK(q == p[5]);
    /* an exact-size small request reuses an exact hole */
    char *s1 = hk_engine_malloc(e, 40), *s2 = hk_engine_malloc(e, 40), *s3 = hk_engine_malloc(e, 40);
    REQUIRE(s1 && s2 && s3);
    CHECK_EQ(hk_engine_free(e, s2), HK_OK);
    CHECK(hk_engine_malloc(e, 33) == s2);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);
}

static void test_realloc_in_place(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    char *a = hk_engine_malloc(e, 500), *b = hk_engine_malloc(e, 500);
    REQUIRE(a && b);
    memset(b, 7, 500);
    /* b is the last block: growing it grows the heap by just the difference */
    size_t fp = footprint(e);
    char *b2 = hk_engine_realloc(e, b, 5000);
    CHECK(b2 == b);
    CHECK(footprint(e) - fp <= 4512);
    for (int i = 0; i < 500; i++) if (b2[i] != 7) { CHECK(!"data lost"); break; }
    /* shrinking in place frees the tail, growing again takes it back */
    CHECK(hk_engine_realloc(e, b2, 100) == b);
    CHECK(hk_engine_realloc(e, b, 4000) == b);
    /* a is followed by b: it cannot grow in place, but b freed makes room */
    CHECK_EQ(hk_engine_free(e, b), HK_OK);
    memset(a, 9, 500);
    char *a2 = hk_engine_realloc(e, a, 3000);
    CHECK(a2 == a);
    for (int i = 0; i < 500; i++) if (a2[i] != 9) { CHECK(!"data lost"); break; }
    CHECK_EQ(hk_engine_check(e), 0);
#ifdef TT_REALLOC_MERGES_BACK
    /* a free block in front is used too: the data moves down */
    hk_engine_destroy(e);
    e = mk(0);
    char *c = hk_engine_malloc(e, 1000), *d = hk_engine_malloc(e, 300), *f = hk_engine_malloc(e, 300);
    REQUIRE(c && d && f);
    CHECK(d > c && f > d);
    memset(d, 5, 300);
    CHECK_EQ(hk_engine_free(e, c), HK_OK);
    char *d2 = hk_engine_realloc(e, d, 900);
    CHECK(d2 == c);
    for (int i = 0; i < 300; i++) if (d2[i] != 5) { CHECK(!"data lost"); break; }
    CHECK_EQ(hk_engine_check(e), 0);
#endif
    hk_engine_destroy(e);
}

static void test_heap_growth_and_shrink(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    char *a = hk_engine_malloc(e, 100);
    char *b = hk_engine_malloc(e, 3000);
    REQUIRE(a && b);
    size_t fp = footprint(e);
    CHECK_EQ(hk_engine_free(e, b), HK_OK);          /* top is free now */
    char *c = hk_engine_malloc(e, 4000);            /* reuses it and asks only for the rest */
    CHECK(c == b);
    CHECK(footprint(e) <= fp + 1008);
    CHECK_EQ(hk_engine_free(e, c), HK_OK);
    char *big = hk_engine_malloc(e, (size_t)8 << 20);
    REQUIRE(big);
    size_t grown = footprint(e);
    CHECK_EQ(hk_engine_free(e, big), HK_OK);        /* a large free top goes back to the region */
    CHECK(footprint(e) < grown / 2);
    hk_engine_stats_t st;
    hk_engine_stats(e, &st);
    CHECK(st.peak_footprint >= grown);
    CHECK_EQ(st.live_blocks, 1);
    CHECK_EQ(hk_engine_check(e), 0);
    walk_t w = walk(e);
    CHECK(!w.last_used);
    CHECK_EQ(hk_engine_free(e, a), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);
}

/* A small region runs out: NULL with ENOMEM, nothing damaged, and the
 * memory is whole again once everything is freed. */
static void test_out_of_memory(void)
{
    hk_engine_config_t cfg = { .max_size = (size_t)256 << 10 };
    hk_engine_t *e = hk_engine_create(ENGINE, &cfg);
    REQUIRE(e);
    static char *p[1024];
    int n = 0;
    errno = 0;
    while (n < 1024 && (p[n] = hk_engine_malloc(e, 1000)) != NULL) { memset(p[n], n & 0xff, 1000); n++; }
    CHECK(n > 200 && n < 1024);
    CHECK_EQ(errno, ENOMEM);
    CHECK_EQ(hk_engine_check(e), 0);
    CHECK(hk_engine_realloc(e, p[n - 1], (size_t)1 << 20) == NULL);   /* the last block cannot grow */
    CHECK(hk_engine_memalign(e, 4096, 100000) == NULL);
    char *tiny = hk_engine_malloc(e, 16);             /* the last few bytes still serve a small request */
    CHECK(tiny != NULL);
    CHECK_EQ(hk_engine_check(e), 0);
    CHECK_EQ(hk_engine_free(e, tiny), HK_OK);
    for (int k = 0; k < 1000; k++) if ((unsigned char)p[n - 1][k] != ((n - 1) & 0xff)) { CHECK(!"data lost"); break; }
    CHECK_EQ(hk_engine_check(e), 0);
    for (int i = 0; i < n; i += 2) CHECK_EQ(hk_engine_free(e, p[i]), HK_OK);
    CHECK(hk_engine_malloc(e, 5000) == NULL);          /* only 1 KiB holes */
    CHECK_EQ(hk_engine_check(e), 0);
    for (int i = 1; i < n; i += 2) CHECK_EQ(hk_engine_free(e, p[i]), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_stats_t st;
    hk_engine_stats(e, &st);
    CHECK_EQ(st.live_blocks, 0);
    CHECK_EQ(st.free_blocks, 1);
    char *big = hk_engine_malloc(e, 200000);
    CHECK(big != NULL);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);
}

#endif
