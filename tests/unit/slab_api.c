/* Slab caches: constructed state kept across alloc/free, ctor/dtor counts,
 * slab lists, reap, destroy, magazines seen through the stats, RSS. */
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

typedef struct obj { uint64_t magic; int uses; char payload[100]; } obj_t;
typedef struct counts { long ctor, dtor; } counts_t;

static void obj_ctor(void *o, void *arg)
{
    obj_t *x = o;
    x->magic = 0xc0ffee;
    x->uses = 0;
    ((counts_t *)arg)->ctor++;
}
static void obj_dtor(void *o, void *arg)
{
    obj_t *x = o;
    if (x->magic == 0xc0ffee) ((counts_t *)arg)->dtor++;
    x->magic = 0;
}

static void test_constructed_state(void)
{
    counts_t n = {0, 0};
    hk_slab_cache_t *c = hk_slab_cache_create("objs", sizeof(obj_t), 0, obj_ctor, obj_dtor, &n);
    REQUIRE(c);
    hk_slab_stats_t st;
    hk_slab_cache_stats(c, &st);
    CHECK_EQ(st.obj_size, sizeof(obj_t));
    CHECK(st.objs_per_slab > 400 && st.slab_size == 65536);
    obj_t *o = hk_slab_alloc(c);
    REQUIRE(o);
    CHECK(o->magic == 0xc0ffee);
    CHECK_EQ(n.ctor, (long)st.objs_per_slab);   /* the whole first slab at once */
    o->uses = 41;
    CHECK_EQ(hk_slab_free(c, o), 0);
    obj_t *again = hk_slab_alloc(c);
    CHECK(again == o);                          /* the magazine hands it back */
    CHECK(again->uses == 41);                   /* state kept: no ctor in between */
    CHECK_EQ(n.ctor, (long)st.objs_per_slab);
    CHECK_EQ(hk_slab_free(c, again), 0);
    CHECK_EQ(hk_slab_cache_destroy(c), 0);
    CHECK_EQ(n.dtor, n.ctor);
}

static void test_lists_and_reap(void)
{
    counts_t n = {0, 0};
    hk_slab_cache_t *c = hk_slab_cache_create("reap", 256, 64, obj_ctor, obj_dtor, &n);
    REQUIRE(c);
    enum { N = 5000 };
    static void *v[N];
    for (int i = 0; i < N; i++) {
        v[i] = hk_slab_alloc(c);
        REQUIRE(v[i]);
        CHECK(((uintptr_t)v[i] & 63) == 0);
    }
    hk_slab_stats_t st;
    hk_slab_cache_stats(c, &st);
    CHECK_EQ(st.in_use, N);
    CHECK_EQ(st.allocs, N);
    size_t per = st.objs_per_slab;
    CHECK(st.slabs_full + st.slabs_partial >= (N + per - 1) / per);
    CHECK_EQ(st.constructed, (st.slabs_full + st.slabs_partial + st.slabs_empty) * per);
    CHECK_EQ(hk_slab_cache_reap(c), 0);         /* nothing is empty yet */
    for (int i = 0; i < N; i++) CHECK_EQ(hk_slab_free(c, v[i]), 0);
    hk_slab_cache_stats(c, &st);
    CHECK_EQ(st.in_use, 0);
    CHECK_EQ(st.frees, N);
    CHECK(st.in_magazines > 0);
    /* Give the thread's magazines back, then reap every slab. */
    CHECK_EQ(hk_slab_cache_flush(c), 0);
    hk_slab_cache_stats(c, &st);
    CHECK(st.in_magazines > 0);                 /* full magazines wait in the depot */
    size_t slabs = st.slabs_created;
    CHECK_EQ(hk_slab_cache_reap(c), (long)slabs);  /* reap empties the depot first */
    hk_slab_cache_stats(c, &st);
    CHECK_EQ(st.in_magazines, 0);
    CHECK_EQ(st.slabs_empty + st.slabs_full + st.slabs_partial, 0);
    CHECK_EQ(st.slabs_reaped, slabs);
    CHECK_EQ(st.destructed, st.constructed);
    CHECK_EQ(n.dtor, n.ctor);
    /* Still usable after a full reap. */
    void *o = hk_slab_alloc(c);
    CHECK(o != NULL);
    CHECK_EQ(hk_slab_free(c, o), 0);
    hk_slab_cache_destroy(c);
    CHECK_EQ(n.dtor, n.ctor);
}

static void test_reap_keeps_used(void)
{
    hk_slab_cache_t *c = hk_slab_cache_create("keep", 1000, 0, NULL, NULL, NULL);
    REQUIRE(c);
    void *v[300];
    for (int i = 0; i < 300; i++) { v[i] = hk_slab_alloc(c); REQUIRE(v[i]); memset(v[i], i, 1000); }
    for (int i = 100; i < 300; i++) hk_slab_free(c, v[i]);
    hk_slab_cache_flush(c);
    CHECK(hk_slab_cache_reap(c) >= 1);
    for (int i = 0; i < 100; i++) CHECK(((unsigned char *)v[i])[999] == (unsigned char)i);
    hk_slab_stats_t st;
    hk_slab_cache_stats(c, &st);
    CHECK_EQ(st.in_use, 100);
    CHECK(st.slabs_full + st.slabs_partial >= 1);
    for (int i = 0; i < 100; i++) hk_slab_free(c, v[i]);
    hk_slab_cache_destroy(c);
}

static void test_big_objects(void)
{
    hk_slab_cache_t *c = hk_slab_cache_create("big", 100000, 4096, NULL, NULL, NULL);
    REQUIRE(c);
    hk_slab_stats_t st;
    hk_slab_cache_stats(c, &st);
    CHECK(st.objs_per_slab >= 7);
    CHECK((st.slab_size & (st.slab_size - 1)) == 0);
    void *v[20];
    for (int i = 0; i < 20; i++) { v[i] = hk_slab_alloc(c); REQUIRE(v[i]); CHECK(((uintptr_t)v[i] & 4095) == 0); memset(v[i], 1, 100000); }
    for (int i = 0; i < 20; i++) CHECK_EQ(hk_slab_free(c, v[i]), 0);
    hk_slab_cache_destroy(c);
    errno = 0;
    CHECK(hk_slab_cache_create("zero", 0, 0, NULL, NULL, NULL) == NULL && errno == EINVAL);
}

static void test_destroy_rss(void)
{
    size_t before = rss_kb();
    hk_slab_cache_t *c = hk_slab_cache_create("rss", 512, 0, NULL, NULL, NULL);
    REQUIRE(c);
    static void *v[200000];
    for (int i = 0; i < 200000; i++) { v[i] = hk_slab_alloc(c); REQUIRE(v[i]); memset(v[i], 3, 512); }
    size_t peak = rss_kb();
    CHECK(peak > before + 90 * 1024);
    for (int i = 0; i < 200000; i += 2) hk_slab_free(c, v[i]);
    CHECK_EQ(hk_slab_cache_destroy(c), 0);
#ifndef HK_SANITIZE_BUILD   /* TSan keeps the shadow of the touched memory resident */
    size_t after = rss_kb();
    CHECK(after < before + 4 * 1024);
#endif
}

int main(void)
{
    RUN(test_constructed_state);
    RUN(test_lists_and_reap);
    RUN(test_reap_keeps_used);
    RUN(test_big_objects);
    RUN(test_destroy_rss);
    return t_finish();
}
