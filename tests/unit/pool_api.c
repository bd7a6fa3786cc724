/* Fixed-size pools: alloc/free, alignment, growth, caps, reset, stats,
 * memory really returned on destroy, and a seeded random run against a model. */
#include "test.h"
#include "heapkit/pool.h"
#include <errno.h>

static size_t rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (f) { if (fscanf(f, "%lu %lu", &size, &res) != 2) res = 0; fclose(f); }
    return res * (size_t)(sysconf(_SC_PAGESIZE) / 1024);
}

static void test_basic(void)
{
    hk_pool_t *p = hk_pool_create(24, 0, NULL);
    REQUIRE(p);
    void *a[1000];
    for (int i = 0; i < 1000; i++) {
        a[i] = hk_pool_alloc(p);
        REQUIRE(a[i]);
        CHECK(((uintptr_t)a[i] & 7) == 0);
        memset(a[i], i & 0xff, 24);
    }
    for (int i = 0; i < 1000; i++) {
        unsigned char *b = a[i];
        CHECK(b[0] == (i & 0xff) && b[23] == (i & 0xff));
        CHECK(hk_pool_owns(p, a[i]));
    }
    hk_pool_stats_t st;
    CHECK_EQ(hk_pool_stats(p, &st), 0);
    CHECK_EQ(st.in_use, 1000);
    CHECK_EQ(st.obj_size, 24);
    CHECK_EQ(st.allocs, 1000);
    CHECK(st.capacity >= 1000);
    for (int i = 0; i < 1000; i += 2) CHECK_EQ(hk_pool_free(p, a[i]), 0);
    CHECK(!hk_pool_owns(p, a[0]));
    /* LIFO reuse: the last freed comes back first. */
    CHECK(hk_pool_alloc(p) == a[998]);
    CHECK_EQ(hk_pool_free(p, NULL), 0);
    CHECK_EQ(hk_pool_stats(p, &st), 0);
    CHECK_EQ(st.in_use, 501);
    CHECK_EQ(st.frees, 500);
    CHECK_EQ(st.peak_in_use, 1000);
    CHECK_EQ(hk_pool_destroy(p), 0);
}

static void test_alignment(void)
{
    size_t sizes[] = { 1, 8, 13, 48, 100, 4000 };
    size_t aligns[] = { 0, 8, 16, 64, 256, 4096 };
    for (size_t s = 0; s < 6; s++)
        for (size_t a = 0; a < 6; a++) {
            hk_pool_t *p = hk_pool_create(sizes[s], aligns[a], NULL);
            REQUIRE(p);
            size_t al = aligns[a] ? aligns[a] : 8;
            for (int i = 0; i < 50; i++) {
                char *o = hk_pool_alloc(p);
                REQUIRE(o);
                CHECK(((uintptr_t)o & (al - 1)) == 0);
                memset(o, 0x5a, sizes[s]);
            }
            hk_pool_destroy(p);
        }
    errno = 0;
    CHECK(hk_pool_create(0, 0, NULL) == NULL && errno == EINVAL);
    CHECK(hk_pool_create(16, 24, NULL) == NULL);
    CHECK(hk_pool_create(16, 8192, NULL) == NULL);
    hk_pool_options_t huge = { .max_objects = SIZE_MAX / 2 };
    errno = 0;
    CHECK(hk_pool_create(64, 0, &huge) == NULL && errno == EINVAL);
}

static void test_growth_chunks(void)
{
    hk_pool_options_t o = { .objs_per_chunk = 100 };
    hk_pool_t *p = hk_pool_create(64, 64, &o);
    REQUIRE(p);
    void *v[5000];
    for (int i = 0; i < 5000; i++) { v[i] = hk_pool_alloc(p); REQUIRE(v[i]); }
    hk_pool_stats_t st;
    hk_pool_stats(p, &st);
    /* 100 x 64 bytes rounds up to 2 pages = 128 objects per chunk. */
    CHECK_EQ(st.chunks, (5000 + 127) / 128);
    CHECK_EQ(st.capacity, st.chunks * 128);
    for (int i = 0; i < 5000; i++) CHECK_EQ(hk_pool_free(p, v[i]), 0);
    hk_pool_destroy(p);
}

static void test_cap(void)
{
    hk_pool_options_t o = { .max_objects = 100, .name = "capped" };
    hk_pool_t *p = hk_pool_create(32, 0, &o);
    REQUIRE(p);
    void *v[100];
    for (int i = 0; i < 100; i++) { v[i] = hk_pool_alloc(p); REQUIRE(v[i]); }
    errno = 0;
    CHECK(hk_pool_alloc(p) == NULL);
    CHECK_EQ(errno, ENOMEM);
    hk_pool_stats_t st;
    hk_pool_stats(p, &st);
    CHECK_EQ(st.failed, 1);
    /* Still usable: free one, get one. */
    CHECK_EQ(hk_pool_free(p, v[50]), 0);
    CHECK(hk_pool_alloc(p) == v[50]);
    CHECK(hk_pool_alloc(p) == NULL);
    hk_pool_destroy(p);

    hk_pool_options_t ob = { .max_bytes = 4096 };
    p = hk_pool_create(100, 0, &ob);   /* stride 104: 39 objects */
    REQUIRE(p);
    int n = 0;
    while (hk_pool_alloc(p)) n++;
    CHECK_EQ(n, 4096 / 104);
    hk_pool_destroy(p);
}

static void test_reset(void)
{
    hk_pool_options_t o = { .chunk_size = 65536 };
    hk_pool_t *p = hk_pool_create(128, 0, &o);
    REQUIRE(p);
    for (int i = 0; i < 10000; i++) REQUIRE(hk_pool_alloc(p));
    hk_pool_stats_t st;
    hk_pool_stats(p, &st);
    CHECK(st.chunks > 10);
    CHECK_EQ(hk_pool_reset(p), 0);
    hk_pool_stats(p, &st);
    CHECK_EQ(st.in_use, 0);
    CHECK_EQ(st.chunks, 1);
    CHECK_EQ(st.capacity, 65536 / 128);
    /* Addresses start over from the beginning. */
    void *first = hk_pool_alloc(p);
    void *again[100];
    for (int i = 0; i < 100; i++) { again[i] = hk_pool_alloc(p); REQUIRE(again[i]); }
    CHECK((char *)again[0] == (char *)first + 128);
    CHECK_EQ(hk_pool_free(p, first), 0);
    hk_pool_destroy(p);
}

static void test_thread_safe_flag_single(void)
{
    hk_pool_options_t o = { .flags = HK_POOL_THREAD_SAFE };
    hk_pool_t *p = hk_pool_create(40, 0, &o);
    REQUIRE(p);
    void *a = hk_pool_alloc(p), *b = hk_pool_alloc(p);
    CHECK(a && b && a != b);
    CHECK_EQ(hk_pool_free(p, a), 0);
    CHECK_EQ(hk_pool_free(p, b), 0);
    hk_pool_destroy(p);
}

static void test_destroy_releases_rss(void)
{
    size_t before = rss_kb();
    hk_pool_t *p = hk_pool_create(256, 0, NULL);
    REQUIRE(p);
    for (int i = 0; i < 400000; i++) { char *o = hk_pool_alloc(p); REQUIRE(o); o[0] = 1; o[128] = 2; }
    size_t peak = rss_kb();
    CHECK(peak > before + 90 * 1024);          /* ~100 MB touched */
    CHECK_EQ(hk_pool_destroy(p), 0);
    size_t after = rss_kb();
    CHECK(after < before + 4 * 1024);
    if (after >= before + 4 * 1024) fprintf(stderr, "  rss before %zu peak %zu after %zu KiB\n", before, peak, after);
}

static void test_reset_releases_rss(void)
{
    hk_pool_t *p = hk_pool_create(256, 0, NULL);
    REQUIRE(p);
    size_t before = rss_kb();
    for (int i = 0; i < 200000; i++) { char *o = hk_pool_alloc(p); REQUIRE(o); o[0] = 1; }
    CHECK(rss_kb() > before + 40 * 1024);
    hk_pool_reset(p);
    CHECK(rss_kb() < before + 4 * 1024);
    hk_pool_destroy(p);
}

/* Random alloc/free against a model: every live object keeps its pattern. */
/* The free list is dealt over several chains: whatever the free order, a
 * pool (fast, locked or checked) hands objects back in exact LIFO order,
 * keeps its committed chunks between rounds, and its counts stay exact
 * across a reset. */
static void test_lifo_rounds_and_counts(void)
{
    unsigned flags[] = { 0, HK_POOL_THREAD_SAFE, HK_POOL_CHECKED };
    enum { N = 5000 };
    static void *a[N], *order[N];
    for (int f = 0; f < 3; f++) {
        hk_pool_options_t o = { .flags = flags[f], .chunk_size = 4096 };
        hk_pool_t *p = hk_pool_create(40, 0, &o);
        REQUIRE(p);
        hk_pool_stats_t st0, st;
        for (int round = 0; round < 3; round++) {
            for (int i = 0; i < N; i++) { a[i] = hk_pool_alloc(p); REQUIRE(a[i]); }
            CHECK_EQ(hk_pool_stats(p, &st), 0);
            if (round == 0) st0 = st;
            /* Round 2 and 3 reuse the memory of round 1: no new chunks. */
            CHECK_EQ(st.chunks, st0.chunks);
            CHECK_EQ(st.bytes_committed, st0.bytes_committed);
            CHECK_EQ(st.in_use, N);
            for (int i = 0; i < N; i++) {           /* a scattered order */
                order[i] = a[(size_t)i * 1237 % N];
                CHECK_EQ(hk_pool_free(p, order[i]), 0);
            }
            CHECK_EQ(hk_pool_stats(p, &st), 0);
            CHECK_EQ(st.in_use, 0);
            CHECK_EQ(st.allocs, (uint64_t)N * (round + 1) + 100u * round);
            CHECK_EQ(st.frees, (uint64_t)N * (round + 1) + 100u * round);
            for (int i = N - 1; i >= N - 100; i--) CHECK(hk_pool_alloc(p) == order[i]);
            for (int i = N - 100; i < N; i++) CHECK_EQ(hk_pool_free(p, order[i]), 0);
        }
        /* 50 live at the reset: dropped, so allocs - frees keeps them. */
        for (int i = 0; i < 50; i++) REQUIRE(hk_pool_alloc(p));
        CHECK_EQ(hk_pool_reset(p), 0);
        CHECK_EQ(hk_pool_stats(p, &st), 0);
        CHECK_EQ(st.in_use, 0);
        CHECK_EQ(st.allocs, (uint64_t)N * 3 + 300 + 50);
        CHECK_EQ(st.frees, (uint64_t)N * 3 + 300);
        void *x = hk_pool_alloc(p), *y = hk_pool_alloc(p);
        CHECK(x && y && x != y);
        CHECK_EQ(hk_pool_free(p, x), 0);
        CHECK(hk_pool_alloc(p) == x);
        CHECK_EQ(hk_pool_stats(p, &st), 0);
        CHECK_EQ(st.in_use, 2);
        CHECK_EQ(st.allocs, (uint64_t)N * 3 + 300 + 53);
        CHECK_EQ(st.frees, (uint64_t)N * 3 + 300 + 1);
        CHECK_EQ(hk_pool_destroy(p), 0);
    }
}

static void test_random_model(void)
{
    enum { N = 4096 };
    static unsigned char *live[N];
    static int nlive;
    hk_pool_options_t o = { .max_objects = N, .objs_per_chunk = 64 };
    hk_pool_t *p = hk_pool_create(40, 0, &o);
    REQUIRE(p);
    uint64_t s = 0x9e3779b97f4a7c15ull;
    nlive = 0;
    for (int step = 0; step < 200000; step++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        if ((s % 100) < 60 && nlive == N) {
            CHECK(hk_pool_alloc(p) == NULL);       /* at the cap */
        } else if ((s % 100) < 60 || nlive == 0) {
            unsigned char *q = hk_pool_alloc(p);
            REQUIRE(q);
            memset(q, (int)(((uintptr_t)q >> 3) & 0xff), 40);
            live[nlive++] = q;
        } else {
            size_t i = (size_t)(s >> 20) % (size_t)nlive;
            unsigned char *q = live[i];
            unsigned char pat = (unsigned char)(((uintptr_t)q >> 3) & 0xff);
            CHECK(q[0] == pat && q[39] == pat);
            CHECK_EQ(hk_pool_free(p, q), 0);
            live[i] = live[--nlive];
        }
        if (step % 10000 == 0) {
            hk_pool_stats_t st;
            hk_pool_stats(p, &st);
            CHECK_EQ(st.in_use, (size_t)nlive);
        }
    }
    hk_pool_destroy(p);
}

int main(void)
{
    RUN(test_basic);
    RUN(test_alignment);
    RUN(test_growth_chunks);
    RUN(test_cap);
    RUN(test_reset);
    RUN(test_thread_safe_flag_single);
    RUN(test_destroy_releases_rss);
    RUN(test_reset_releases_rss);
    RUN(test_lifo_rounds_and_counts);
    RUN(test_random_model);
    return t_finish();
}
