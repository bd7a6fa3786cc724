/* The API suite: the same contract checked on every engine through the
 * common interface. With an engine name as argv[1] it tests that engine and
 * fails when it is not linked in; without, every engine that is linked. */
#include "test.h"
#include "heapkit/engine.h"
#include <errno.h>

#define hk__aligned(p, a) (((uintptr_t)(p) & ((a) - 1)) == 0)

static const char *g_name;   /* the engine under test */

static hk_engine_t *mk(void)
{
    hk_engine_t *e = hk_engine_create(g_name, NULL);
    if (!e) fprintf(stderr, "  cannot create engine %s\n", g_name);
    return e;
}

static size_t align_of(hk_engine_t *e)
{
    hk_engine_info_t in;
    hk_engine_info(e, &in);
    return in.alignment;
}

static void fill(void *p, size_t n, unsigned seed)
{
    unsigned char *c = p;
    for (size_t i = 0; i < n; i++) c[i] = (unsigned char)(seed + i * 31 + (i >> 8));
}
static bool same(const void *p, size_t n, unsigned seed)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) if (c[i] != (unsigned char)(seed + i * 31 + (i >> 8))) return false;
    return true;
}

static void test_info(void)
{
    hk_engine_t *e = mk();
    REQUIRE(e);
    hk_engine_info_t in;
    hk_engine_info(e, &in);
    CHECK(in.name && !strcmp(in.name, g_name));
    CHECK(!strcmp(hk_engine_name(e), g_name));
    CHECK(in.description && in.description[0]);
    CHECK_EQ(in.alignment, 16);          /* every engine is a valid malloc replacement */
    CHECK(in.min_block >= 16);
    CHECK(in.max_request >= ((size_t)1 << 20));
    hk_engine_stats_t st;
    hk_engine_stats(e, &st);
    CHECK_EQ(st.version, HK_ENGINE_STATS_VERSION);
    CHECK_EQ(st.size, sizeof st);
    CHECK_EQ(st.live_blocks, 0);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);
}

static void test_malloc_sizes(void)
{
    hk_engine_t *e = mk();
    REQUIRE(e);
    size_t al = align_of(e);
    static const size_t sizes[] = { 0, 1, 7, 8, 15, 16, 17, 24, 100, 1000, 4095, 4096, 4097, 65536, 1 << 20, 3 << 20 };
    void *p[sizeof sizes / sizeof sizes[0]];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        p[i] = hk_engine_malloc(e, sizes[i]);
        REQUIRE(p[i]);
        CHECK(hk__aligned(p[i], al));
        CHECK(hk_engine_owns(e, p[i]));
        CHECK(hk_engine_usable_size(e, p[i]) >= (sizes[i] ? sizes[i] : 1));
        fill(p[i], sizes[i], (unsigned)i);
        CHECK_EQ(hk_engine_check(e), 0);
    }
    hk_engine_stats_t st;
    hk_engine_stats(e, &st);
    CHECK_EQ(st.live_blocks, sizeof sizes / sizeof sizes[0]);
    CHECK(st.footprint >= (4u << 20));
    CHECK(st.peak_footprint >= st.footprint);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        CHECK(same(p[i], sizes[i], (unsigned)i));
        CHECK_EQ(hk_engine_free(e, p[i]), HK_OK);
        CHECK_EQ(hk_engine_check(e), 0);
    }
    hk_engine_stats(e, &st);
    CHECK_EQ(st.live_blocks, 0);
    CHECK_EQ(st.live_bytes, 0);
    hk_engine_destroy(e);
}

static void test_too_large(void)
{
    hk_engine_t *e = mk();
    REQUIRE(e);
    hk_engine_info_t in;
    hk_engine_info(e, &in);
    errno = 0;
    CHECK(hk_engine_malloc(e, SIZE_MAX) == NULL);
    CHECK_EQ(errno, ENOMEM);
    errno = 0;
    CHECK(hk_engine_malloc(e, SIZE_MAX / 2) == NULL);
    CHECK_EQ(errno, ENOMEM);
    if (in.max_request < SIZE_MAX / 2) {
        /* max_request may be conservative by a rounding step; well past it must fail */
        errno = 0;
        void *big = hk_engine_malloc(e, in.max_request + 65536);
        CHECK(big == NULL);
        CHECK_EQ(errno, ENOMEM);
        if (big) hk_engine_free(e, big);
    }
    /* larger than the 1 GiB default region */
    errno = 0;
    CHECK(hk_engine_malloc(e, (size_t)2 << 30) == NULL);
    CHECK_EQ(errno, ENOMEM);
    CHECK_EQ(hk_engine_check(e), 0);
    void *p = hk_engine_malloc(e, 100);   /* still usable after the failures */
    CHECK(p != NULL);
    CHECK_EQ(hk_engine_free(e, p), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);
}

static void test_calloc(void)
{
    hk_engine_t *e = mk();
    REQUIRE(e);
    /* dirty memory first, so calloc has something to clear */
    void *d = hk_engine_malloc(e, 5000);
    REQUIRE(d);
    memset(d, 0xAB, 5000);
    CHECK_EQ(hk_engine_free(e, d), HK_OK);
    unsigned char *z = hk_engine_calloc(e, 1000, 5);
    REQUIRE(z);
    size_t nz = 0;
    for (size_t i = 0; i < 5000; i++) nz += z[i] != 0;
    CHECK_EQ(nz, 0);
    CHECK_EQ(hk_engine_check(e), 0);
    errno = 0;
    CHECK(hk_engine_calloc(e, SIZE_MAX / 2, 3) == NULL);
    CHECK_EQ(errno, ENOMEM);
    errno = 0;
    CHECK(hk_engine_calloc(e, (size_t)1 << 33, (size_t)1 << 33) == NULL);
    CHECK_EQ(errno, ENOMEM);
    void *c0 = hk_engine_calloc(e, 0, 10);
    CHECK(c0 != NULL);
    CHECK_EQ(hk_engine_free(e, c0), HK_OK);
    CHECK_EQ(hk_engine_free(e, z), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);
}

static void test_realloc(void)
{
    hk_engine_t *e = mk();
    REQUIRE(e);
    size_t al = align_of(e);
    char *p = hk_engine_realloc(e, NULL, 40);    /* realloc(NULL) = malloc */
    REQUIRE(p);
    CHECK(hk_engine_usable_size(e, p) >= 40);
    fill(p, 40, 7);
    /* a neighbour, so growth cannot always happen in place */
    void *n = hk_engine_malloc(e, 40);
    REQUIRE(n);
    fill(n, 40, 9);
    size_t sz = 40;
    static const size_t steps[] = { 100, 1000, 1001, 5000, 70000, 300000, 64, 10, 1, 2000, 24 };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        char *q = hk_engine_realloc(e, p, steps[i]);
        REQUIRE(q);
        CHECK(hk__aligned(q, al));
        CHECK(hk_engine_usable_size(e, q) >= steps[i]);
        size_t keep = sz < steps[i] ? sz : steps[i];
        CHECK(same(q, keep, 7));
        fill(q, steps[i], 7);
        p = q;
        sz = steps[i];
        CHECK_EQ(hk_engine_check(e), 0);
        CHECK(same(n, 40, 9));
    }
    hk_engine_stats_t st;
    hk_engine_stats(e, &st);
    CHECK_EQ(st.live_blocks, 2);
    CHECK_EQ(hk_engine_free(e, p), HK_OK);
    CHECK_EQ(hk_engine_free(e, n), HK_OK);
    /* a failed realloc leaves the block alone */
    char *r = hk_engine_malloc(e, 64);
    REQUIRE(r);
    fill(r, 64, 3);
    errno = 0;
    CHECK(hk_engine_realloc(e, r, SIZE_MAX / 2) == NULL);
    CHECK_EQ(errno, ENOMEM);
    CHECK(same(r, 64, 3));
    CHECK_EQ(hk_engine_free(e, r), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);
}

static void test_memalign(void)
{
    hk_engine_t *e = mk();
    REQUIRE(e);
    void *ps[64];
    size_t n = 0;
    for (size_t a = 16; a <= 4096; a *= 2) {
        static const size_t sizes[] = { 1, 24, 100, 5000 };
        for (size_t k = 0; k < 4; k++) {
            void *p = hk_engine_memalign(e, a, sizes[k]);
            REQUIRE(p);
            CHECK(hk__aligned(p, a));
            CHECK(hk_engine_usable_size(e, p) >= sizes[k]);
            fill(p, sizes[k], (unsigned)(a + k));
            ps[n++] = p;
            CHECK_EQ(hk_engine_check(e), 0);
        }
    }
    for (size_t i = 0; i < n; i++) {
        size_t a = (size_t)16 << (i / 4), k = i % 4;
        static const size_t sizes[] = { 1, 24, 100, 5000 };
        CHECK(same(ps[i], sizes[k], (unsigned)(a + k)));
        CHECK_EQ(hk_engine_free(e, ps[i]), HK_OK);
        CHECK_EQ(hk_engine_check(e), 0);
    }
    errno = 0;
    CHECK(hk_engine_memalign(e, 24, 100) == NULL);
    CHECK_EQ(errno, EINVAL);
    errno = 0;
    CHECK(hk_engine_memalign(e, 0, 100) == NULL);
    CHECK_EQ(errno, EINVAL);
    hk_engine_stats_t st;
    hk_engine_stats(e, &st);
    CHECK_EQ(st.live_blocks, 0);
    hk_engine_destroy(e);
}

static void test_misuse(void)
{
    hk_engine_t *e = mk();
    REQUIRE(e);
    CHECK_EQ(hk_engine_free(e, NULL), HK_OK);
    char *a = hk_engine_malloc(e, 64), *b = hk_engine_malloc(e, 64), *c = hk_engine_malloc(e, 64);
    REQUIRE(a && b && c);
    fill(a, 64, 1); fill(b, 64, 2); fill(c, 64, 3);
    long local;
    CHECK_EQ(hk_engine_free(e, &local), HK_EINVALID);         /* not the engine's */
    CHECK_EQ(hk_engine_free(e, b + 16), HK_EINVALID);         /* inside a block */
    CHECK_EQ(hk_engine_free(e, b + 8), HK_EINVALID);
    CHECK_EQ(hk_engine_check(e), 0);
    CHECK(same(a, 64, 1) && same(b, 64, 2) && same(c, 64, 3));
    CHECK_EQ(hk_engine_free(e, b), HK_OK);
    CHECK_EQ(hk_engine_free(e, b), HK_EDOUBLEFREE);
    CHECK_EQ(hk_engine_check(e), 0);
    CHECK(same(a, 64, 1) && same(c, 64, 3));
    CHECK_EQ(hk_engine_usable_size(e, &local), 0);
    errno = 0;
    CHECK(hk_engine_realloc(e, &local, 10) == NULL);
    CHECK_EQ(hk_engine_free(e, a), HK_OK);
    CHECK_EQ(hk_engine_free(e, c), HK_OK);
    CHECK_EQ(hk_engine_free(e, c), HK_EDOUBLEFREE);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_stats_t st;
    hk_engine_stats(e, &st);
    CHECK_EQ(st.live_blocks, 0);
    hk_engine_destroy(e);
}

static void double_free_child(void *arg)
{
    (void)arg;
    hk_engine_config_t cfg = { .flags = HK_ENGINE_ABORT_ON_MISUSE };
    hk_engine_t *e = hk_engine_create(g_name, &cfg);
    if (!e) _exit(1);
    void *p = hk_engine_malloc(e, 32);
    void *q = hk_engine_malloc(e, 32);
    (void)q;
    hk_engine_free(e, p);
    hk_engine_free(e, p);
    _exit(0);
}

static void test_abort_on_misuse(void)
{
    CHECK(t_expect_death(double_free_child, NULL, SIGABRT, "double free"));
}

typedef struct walk_acc {
    uintptr_t lo, hi, last_end;
    size_t n, used, free_n, free_bytes, total, largest_free, bad_order;
    void *const *live;
    size_t n_live, live_found;
} walk_acc_t;

static void walk_cb(void *arg, void *block, size_t size, bool in_use)
{
    walk_acc_t *w = arg;
    uintptr_t b = (uintptr_t)block;
    if (b < w->last_end || b < w->lo || b + size > w->hi || size == 0) w->bad_order++;
    w->last_end = b + size;
    w->n++;
    w->total += size;
    if (in_use) {
        w->used++;
        for (size_t i = 0; i < w->n_live; i++)
            if ((uintptr_t)w->live[i] >= b && (uintptr_t)w->live[i] < b + size) w->live_found++;
    } else {
        w->free_n++;
        w->free_bytes += size;
        if (size > w->largest_free) w->largest_free = size;
    }
}

static void test_walk_and_stats(void)
{
    hk_engine_t *e = mk();
    REQUIRE(e);
    void *p[200];
    uint64_t s = 42;
    for (int i = 0; i < 200; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = hk_engine_malloc(e, 1 + (size_t)(s >> 33) % 3000);
        REQUIRE(p[i]);
    }
    for (int i = 0; i < 200; i += 3) { CHECK_EQ(hk_engine_free(e, p[i]), HK_OK); p[i] = NULL; }
    void *live[200];
    size_t nl = 0;
    for (int i = 0; i < 200; i++) if (p[i]) live[nl++] = p[i];
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_stats_t st;
    hk_engine_stats(e, &st);
    walk_acc_t w = { .live = live, .n_live = nl };
    /* the walk stays inside the region the engine owns */
    w.lo = (uintptr_t)live[0];
    w.hi = 0;
    for (size_t i = 0; i < nl; i++) {
        if ((uintptr_t)live[i] < w.lo) w.lo = (uintptr_t)live[i];
        if ((uintptr_t)live[i] > w.hi) w.hi = (uintptr_t)live[i];
    }
    w.lo -= st.footprint; w.hi += st.footprint;
    hk_engine_walk(e, walk_cb, &w);
    CHECK_EQ(w.bad_order, 0);
    CHECK_EQ(w.used, nl);
    CHECK_EQ(w.used, st.live_blocks);
    CHECK_EQ(w.live_found, nl);                 /* each live pointer in exactly one used block */
    CHECK_EQ(w.free_n, st.free_blocks);
    CHECK_EQ(w.free_bytes, st.free_bytes);
    CHECK_EQ(w.largest_free, st.largest_free);
    CHECK(w.total <= st.footprint);
    CHECK(w.total + 4096 >= st.footprint);      /* the walk covers the heap, less fixed bookkeeping */
    for (size_t i = 0; i < nl; i++) CHECK_EQ(hk_engine_free(e, live[i]), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_stats(e, &st);
    CHECK_EQ(st.live_blocks, 0);
    CHECK_EQ(st.live_bytes, 0);
    hk_engine_destroy(e);
}

static void test_create_destroy(void)
{
    for (int i = 0; i < 50; i++) {
        hk_engine_t *e = mk();
        REQUIRE(e);
        for (int k = 0; k < 20; k++) CHECK(hk_engine_malloc(e, (size_t)(k * 100 + 1)) != NULL);
        CHECK_EQ(hk_engine_check(e), 0);
        hk_engine_destroy(e);            /* frees every block at once */
    }
    hk_engine_config_t cfg = { .max_size = (size_t)1 << 20 };
    hk_engine_t *e = hk_engine_create(g_name, &cfg);
    REQUIRE(e);
    size_t got = 0;
    for (int i = 0; i < 1000; i++) {     /* a small region fills up and says so */
        void *p = hk_engine_malloc(e, 4000);
        if (!p) { CHECK_EQ(errno, ENOMEM); break; }
        got += 4000;
    }
    CHECK(got > 0 && got <= ((size_t)1 << 20));
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);
    errno = 0;
    CHECK(hk_engine_create("no-such-engine", NULL) == NULL);
    CHECK_EQ(errno, EINVAL);
}

static void suite(const char *name)
{
    g_name = name;
    char label[128];
#define R(fn) do { snprintf(label, sizeof label, "%s: %s", name, #fn); RUN_NAMED(label, fn); } while (0)
    R(test_info);
    R(test_malloc_sizes);
    R(test_too_large);
    R(test_calloc);
    R(test_realloc);
    R(test_memalign);
    R(test_misuse);
    R(test_abort_on_misuse);
    R(test_walk_and_stats);
    R(test_create_destroy);
#undef R
}

int main(int argc, char **argv)
{
    const char *const *names = hk_engine_names();
    if (argc > 1) {
        bool found = false;
        for (const char *const *n = names; *n; n++) found |= !strcmp(*n, argv[1]);
        if (!found) {
            fprintf(stderr, "engine '%s' is not linked into this build; linked:", argv[1]);
            for (const char *const *n = names; *n; n++) fprintf(stderr, " %s", *n);
            fprintf(stderr, "\n");
            return 1;
        }
        suite(argv[1]);
    } else {
        if (!names[0]) printf("no engines linked in\n");
        for (const char *const *n = names; *n; n++) suite(*n);
    }
    return t_finish();
}
