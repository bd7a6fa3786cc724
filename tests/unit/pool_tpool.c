/* Per-thread pools on one thread: the cache in front of the depot, flush,
 * the cap seen through the caches, and memory released on destroy. */
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

static void test_cache_and_flush(void)
{
    hk_tpool_t *t = hk_tpool_create(40, 0, NULL);
    REQUIRE(t);
    static void *v[1000];
    for (int i = 0; i < 1000; i++) { v[i] = hk_tpool_alloc(t); REQUIRE(v[i]); memset(v[i], i, 40); }
    for (int i = 0; i < 1000; i++) for (int j = i + 1; j < i + 3 && j < 1000; j++) CHECK(v[i] != v[j]);
    hk_tpool_stats_t st;
    hk_tpool_stats(t, &st);
    CHECK_EQ(st.caches, 1);
    CHECK_EQ(st.depot.obj_size, 40);
    CHECK(st.depot.in_use >= 1000 && st.depot.in_use < 1000 + HK__TPOOL_CAP);  /* + what the cache holds */
    CHECK_EQ(hk_tpool_free(t, NULL), 0);
    for (int i = 0; i < 1000; i++) CHECK_EQ(hk_tpool_free(t, v[i]), 0);
    void *again = hk_tpool_alloc(t);
    CHECK(again == v[999]);                    /* LIFO through the thread cache */
    CHECK_EQ(hk_tpool_free(t, again), 0);
    hk_tpool_stats(t, &st);
    CHECK(st.flushes > 0 && st.refills > 0);
    CHECK(st.depot.in_use <= HK__TPOOL_CAP);
    CHECK_EQ(hk_tpool_flush(t), 0);
    hk_tpool_stats(t, &st);
    CHECK_EQ(st.caches, 0);
    CHECK_EQ(st.depot.in_use, 0);
    CHECK(hk_tpool_alloc(t) != NULL);          /* a new cache after a flush */
    hk_tpool_destroy(t);
}

/* Flushed halves of the cache wait in the depot as arrays of pointers;
 * a refill takes them back whole. No object may come back twice or get
 * lost, and the stats must count parked objects as free. */
static void test_batches_round_trip(void)
{
    enum { N = 5000 };
    hk_tpool_t *t = hk_tpool_create(32, 0, NULL);
    REQUIRE(t);
    static char *v[N], *w[N];
    for (int i = 0; i < N; i++) { v[i] = hk_tpool_alloc(t); REQUIRE(v[i]); }
    for (int i = 0; i < N; i++) CHECK_EQ(hk_tpool_free(t, v[(i * 7919) % N]), 0);
    hk_tpool_stats_t st;
    hk_tpool_stats(t, &st);
    CHECK(st.depot.in_use <= HK__TPOOL_CAP);   /* only the thread cache's objects */
    CHECK_EQ(st.depot.allocs - st.depot.frees, st.depot.in_use);
    size_t cap0 = st.depot.capacity;
    for (int i = 0; i < N; i++) { w[i] = hk_tpool_alloc(t); REQUIRE(w[i]); w[i][0] = 1; }
    hk_tpool_stats(t, &st);
    CHECK_EQ(st.depot.capacity, cap0);          /* no growth: the freed objects were reused */
    /* Distinct, and the same set as before but for what sat unused in the
     * cache after the first loop (a refill takes 64 at a time). */
    for (int k = 0; k < 2; k++) {
        char **a = k ? w : v;
        for (int i = 1; i < N; i++)
            for (int j = i; j > 0 && a[j - 1] > a[j]; j--) { char *x = a[j]; a[j] = a[j - 1]; a[j - 1] = x; }
    }
    int distinct = 1, common = 0;
    for (int i = 1; i < N; i++) distinct &= w[i - 1] != w[i];
    CHECK(distinct);
    for (int i = 0, j = 0; i < N && j < N;) {
        if (v[i] == w[j]) { common++; i++; j++; }
        else if (v[i] < w[j]) i++;
        else j++;
    }
    CHECK(common >= N - HK__TPOOL_CAP);
    hk_tpool_destroy(t);
}

static void test_cap(void)
{
    hk_pool_options_t o = { .max_objects = 100 };
    hk_tpool_t *t = hk_tpool_create(64, 0, &o);
    REQUIRE(t);
    void *v[100];
    for (int i = 0; i < 100; i++) { v[i] = hk_tpool_alloc(t); REQUIRE(v[i]); }
    errno = 0;
    CHECK(hk_tpool_alloc(t) == NULL);
    CHECK_EQ(errno, ENOMEM);
    CHECK_EQ(hk_tpool_free(t, v[7]), 0);
    CHECK(hk_tpool_alloc(t) == v[7]);
    hk_tpool_destroy(t);
}

static void test_destroy_rss(void)
{
    size_t before = rss_kb();
    hk_tpool_t *t = hk_tpool_create(256, 0, NULL);
    REQUIRE(t);
    for (int i = 0; i < 400000; i++) { char *p = hk_tpool_alloc(t); REQUIRE(p); p[0] = 1; p[200] = 1; }
    CHECK(rss_kb() > before + 90 * 1024);
    CHECK_EQ(hk_tpool_destroy(t), 0);
    CHECK(rss_kb() < before + 4 * 1024);
}

int main(void)
{
    RUN(test_cache_and_flush);
    RUN(test_batches_round_trip);
    RUN(test_cap);
    RUN(test_destroy_rss);
    return t_finish();
}
