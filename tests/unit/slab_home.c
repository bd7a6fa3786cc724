/* The front caches in the handle: a release pool's 64-object cache over its
 * in-object free list, and a slab cache's home-thread cache over that
 * thread's magazines. Both must keep the whole free stack in exact LIFO
 * order across their spills and refills, keep the counts exact, and (slab)
 * hand the home role over cleanly at flush and at thread exit. */
#include "test.h"
#include "heapkit/pool.h"
#include <errno.h>
#include <pthread.h>

enum { N = 1000 };
static void *a[N], *order[N];

/* Free N in a scattered order, then every alloc must return the last freed:
 * N is far past the front cache, so this crosses many spills and refills. */
static void test_pool_cache_lifo(void)
{
    hk_pool_t *p = hk_pool_create(48, 0, NULL);
    REQUIRE(p);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) { a[i] = hk_pool_alloc(p); REQUIRE(a[i]); }
        for (int i = 0; i < N; i++) {
            order[i] = a[(size_t)i * 613 % N];
            CHECK_EQ(hk_pool_free(p, order[i]), 0);
        }
        hk_pool_stats_t st;
        CHECK_EQ(hk_pool_stats(p, &st), 0);
        CHECK_EQ(st.in_use, 0);
        CHECK_EQ(st.peak_in_use, N);
        CHECK_EQ(st.allocs, (uint64_t)N * (2 * round + 1));
        CHECK_EQ(st.frees, (uint64_t)N * (2 * round + 1));
        /* owns walks the cache and the list: every object is free now. */
        CHECK_EQ(hk_pool_owns(p, order[0]), 0);
        CHECK_EQ(hk_pool_owns(p, order[N - 1]), 0);
        for (int i = N - 1; i >= 0; i--) {
            void *o = hk_pool_alloc(p);
            if (o != order[i]) { CHECK(o == order[i]); break; }
        }
        CHECK_EQ(hk_pool_owns(p, order[0]), 1);
        CHECK_EQ(hk_pool_stats(p, &st), 0);
        CHECK_EQ(st.in_use, N);
        CHECK_EQ(st.peak_in_use, N);                 /* the cache never carves ahead */
        for (int i = 0; i < N; i++) CHECK_EQ(hk_pool_free(p, order[i]), 0);
    }
#if HK_DEBUG < 1   /* release: a foreign pointer with a non-full cache still goes out of line */
    int x;
    CHECK_EQ(hk_pool_free(p, &x), EINVAL);
#endif
    CHECK_EQ(hk_pool_reset(p), 0);
    hk_pool_stats_t st;
    CHECK_EQ(hk_pool_stats(p, &st), 0);
    CHECK_EQ(st.in_use, 0);
    void *o = hk_pool_alloc(p);                      /* carved again from the start */
    CHECK(o != NULL);
    CHECK_EQ(hk_pool_stats(p, &st), 0);
    CHECK_EQ(st.in_use, 1);
    CHECK_EQ(hk_pool_destroy(p), 0);
}

/* A cap still holds with objects sitting in the cache. */
static void test_pool_cache_cap(void)
{
    hk_pool_options_t opt = { .max_objects = 100 };
    hk_pool_t *p = hk_pool_create(32, 0, &opt);
    REQUIRE(p);
    for (int i = 0; i < 100; i++) { a[i] = hk_pool_alloc(p); REQUIRE(a[i]); }
    CHECK(hk_pool_alloc(p) == NULL);
    for (int i = 0; i < 100; i++) CHECK_EQ(hk_pool_free(p, a[i]), 0);
    for (int i = 0; i < 100; i++) CHECK(hk_pool_alloc(p) != NULL);
    errno = 0;
    CHECK(hk_pool_alloc(p) == NULL);
    CHECK_EQ(errno, ENOMEM);
    CHECK_EQ(hk_pool_destroy(p), 0);
}

static void check_slab_counts(hk_slab_cache_t *c, uint64_t allocs, uint64_t frees)
{
    hk_slab_stats_t st;
    CHECK_EQ(hk_slab_cache_stats(c, &st), 0);
    CHECK_EQ(st.allocs, allocs);
    CHECK_EQ(st.frees, frees);
    CHECK_EQ(st.in_use, allocs - frees);
}

/* The home cache keeps its top in LIFO order across spills (the magazines
 * below it swap whole stacks, as in Bonwick's design, so deeper down the
 * order is not exact), and the counts stay exact. */
static void test_slab_home_lifo(void)
{
    hk_slab_cache_t *c = hk_slab_cache_create("home", 40, 0, NULL, NULL, NULL);
    REQUIRE(c);
    uint64_t allocs = 0, frees = 0;
    enum { TOP = HK__SLAB_HOME / 2 };
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) { a[i] = hk_slab_alloc(c); REQUIRE(a[i]); }
        allocs += N;
        check_slab_counts(c, allocs, frees);
        for (int i = 0; i < N; i++) {
            order[i] = a[(size_t)i * 613 % N];
            CHECK_EQ(hk_slab_free(c, order[i]), 0);
        }
        frees += N;
        check_slab_counts(c, allocs, frees);
        hk_slab_stats_t st;
        CHECK_EQ(hk_slab_cache_stats(c, &st), 0);
        CHECK(st.in_magazines >= N);
        /* The last TOP freed are certainly in the home cache. */
        for (int i = N - 1; i >= N - TOP; i--) CHECK(hk_slab_alloc(c) == order[i]);
        for (int i = N - TOP; i < N; i++) CHECK_EQ(hk_slab_free(c, order[i]), 0);
        allocs += TOP;
        frees += TOP;
        check_slab_counts(c, allocs, frees);
    }
#if HK_DEBUG < 1
    int x;
    CHECK_EQ(hk_slab_free(c, &x), EINVAL);           /* foreign: out of line, structure intact */
#endif
    CHECK_EQ(hk_slab_free(c, NULL), 0);
    check_slab_counts(c, allocs, frees);
    /* Flush gives the home role up: every object goes back to its slab. */
    CHECK_EQ(hk_slab_cache_flush(c), 0);
    CHECK(hk_slab_cache_reap(c) > 0);
    hk_slab_stats_t st;
    CHECK_EQ(hk_slab_cache_stats(c, &st), 0);
    CHECK_EQ(st.in_magazines, 0);
    CHECK_EQ(st.slabs_full + st.slabs_partial + st.slabs_empty, 0);
    CHECK_EQ(st.allocs, allocs);
    CHECK_EQ(st.frees, frees);
    /* The role is taken again by the next use. */
    void *o = hk_slab_alloc(c);
    CHECK(o != NULL);
    CHECK_EQ(hk_slab_free(c, o), 0);
    CHECK(hk_slab_alloc(c) == o);
    CHECK_EQ(hk_slab_free(c, o), 0);
    check_slab_counts(c, allocs + 2, frees + 2);
    CHECK_EQ(hk_slab_cache_destroy(c), 0);
}

/* A worker becomes the home thread and exits holding objects in its home
 * cache; they must go back to the slabs, and the role to the next user. */
static hk_slab_cache_t *shared;
static void *worker(void *arg)
{
    (void)arg;
    static void *mine[300];
    for (int i = 0; i < 300; i++) mine[i] = hk_slab_alloc(shared);
    for (int i = 0; i < 300; i++) hk_slab_free(shared, mine[i]);
    for (int i = 0; i < 20; i++) mine[i] = hk_slab_alloc(shared);   /* 20 still live at exit */
    return NULL;
}
static void test_slab_home_thread_exit(void)
{
    shared = hk_slab_cache_create("exit", 64, 0, NULL, NULL, NULL);
    REQUIRE(shared);
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, worker, NULL) == 0);
    pthread_join(th, NULL);
    check_slab_counts(shared, 320, 300);
    hk_slab_cache_reap(shared);
    hk_slab_stats_t st;
    CHECK_EQ(hk_slab_cache_stats(shared, &st), 0);
    CHECK_EQ(st.in_magazines, 0);                     /* the exited home cache was drained */
    CHECK_EQ(st.in_use, 20);
    /* The main thread takes the role now and works as usual. */
    for (int i = 0; i < 200; i++) { a[i] = hk_slab_alloc(shared); REQUIRE(a[i]); }
    for (int i = 0; i < 200; i++) CHECK_EQ(hk_slab_free(shared, a[i]), 0);
    check_slab_counts(shared, 520, 500);
    CHECK_EQ(hk_slab_cache_destroy(shared), 0);
}

/* The home thread's inline free checks its own copy of the span; objects
 * from slabs another thread created since lie outside that copy and must
 * still be accepted (out of line, which refreshes the copy). */
static void *far[3000];
static void *grower(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3000; i++) far[i] = hk_slab_alloc(shared);   /* several new slabs */
    return NULL;
}
static void test_slab_home_span_grows(void)
{
    shared = hk_slab_cache_create("span", 64, 0, NULL, NULL, NULL);
    REQUIRE(shared);
    void *mine = hk_slab_alloc(shared);                  /* the main thread is home */
    REQUIRE(mine);
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, grower, NULL) == 0);
    pthread_join(th, NULL);
    for (int i = 0; i < 3000; i++) { REQUIRE(far[i]); CHECK_EQ(hk_slab_free(shared, far[i]), 0); }
    CHECK_EQ(hk_slab_free(shared, mine), 0);
    check_slab_counts(shared, 3001, 3001);
#if HK_DEBUG < 1
    int x;
    CHECK_EQ(hk_slab_free(shared, &x), EINVAL);
#endif
    CHECK_EQ(hk_slab_cache_flush(shared), 0);
    hk_slab_cache_reap(shared);
    hk_slab_stats_t st;
    CHECK_EQ(hk_slab_cache_stats(shared, &st), 0);
    CHECK_EQ(st.in_magazines, 0);
    CHECK_EQ(st.slabs_full + st.slabs_partial + st.slabs_empty, 0);
    CHECK_EQ(hk_slab_cache_destroy(shared), 0);
}

int main(void)
{
    RUN(test_pool_cache_lifo);
    RUN(test_pool_cache_cap);
    RUN(test_slab_home_lifo);
    RUN(test_slab_home_thread_exit);
    RUN(test_slab_home_span_grows);
    return t_finish();
}
