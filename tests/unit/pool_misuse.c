/* Misuse of pools, arenas, tpools and slab caches: with HK_POOL_CHECKED each
 * bug aborts with an exact message naming the allocator and the pointer; in
 * release builds without the flag the call returns EINVAL and nothing breaks.
 * The parent sets the scene, a forked child makes the bad call, so the
 * pointer in the expected message is known in advance. */
#include "test.h"
#include "heapkit/pool.h"
#include <errno.h>

static char needle[256];
static char outside[256];

enum op { POOL_FREE, POOL_DESTROY, POOL_ALLOC, ARENA_RESTORE, ARENA_DESTROY, TPOOL_FREE, SLAB_FREE, SLAB_DESTROY, SLAB_ALLOC };
typedef struct bad { enum op op; void *h; void *ptr; hk_arena_mark_t mark; } bad_t;

static void do_bad(void *arg)
{
    bad_t *b = arg;
    switch (b->op) {
    case POOL_FREE: hk_pool_free(b->h, b->ptr); break;
    case POOL_DESTROY: hk_pool_destroy(b->h); break;
    case POOL_ALLOC: (void)hk_pool_alloc(b->h); break;
    case ARENA_RESTORE: hk_arena_restore(b->h, b->mark); break;
    case ARENA_DESTROY: hk_arena_destroy(b->h); break;
    case TPOOL_FREE: hk_tpool_free(b->h, b->ptr); break;
    case SLAB_FREE: hk_slab_free(b->h, b->ptr); break;
    case SLAB_DESTROY: hk_slab_cache_destroy(b->h); break;
    case SLAB_ALLOC: (void)hk_slab_alloc(b->h); break;
    }
}

#define EXPECT_DEATH(b, ...) do { \
    snprintf(needle, sizeof needle, __VA_ARGS__); \
    CHECK(t_expect_death(do_bad, &(b), SIGABRT, needle)); } while (0)

static hk_pool_t *checked_pool(void)
{
    hk_pool_options_t o = { .flags = HK_POOL_CHECKED, .name = "conn" };
    return hk_pool_create(48, 0, &o);
}

static void test_pool_messages(void)
{
    hk_pool_t *p = checked_pool(), *q = checked_pool();
    REQUIRE(p && q);
    char *a = hk_pool_alloc(p), *b = hk_pool_alloc(p), *other = hk_pool_alloc(q);
    REQUIRE(a && b && other);
    hk_pool_free(p, b);
    bad_t x = { .op = POOL_FREE, .h = p, .ptr = b };
    EXPECT_DEATH(x, "heapkit: hk_pool_free: pool 'conn': %p double free\n", (void *)b);
    x.ptr = outside;
    EXPECT_DEATH(x, "heapkit: hk_pool_free: pool 'conn': %p is not from this pool\n", (void *)outside);
    x.ptr = other;
    EXPECT_DEATH(x, "heapkit: hk_pool_free: pool 'conn': %p is not from this pool\n", (void *)other);
    x.ptr = a + 8;
    EXPECT_DEATH(x, "heapkit: hk_pool_free: pool 'conn': %p is not on an object boundary\n", (void *)(a + 8));
    x.ptr = a + 480;
    EXPECT_DEATH(x, "heapkit: hk_pool_free: pool 'conn': %p was never allocated\n", (void *)(a + 480));
    /* The parent's pool saw none of it. */
    CHECK_EQ(hk_pool_free(p, a), 0);
    CHECK_EQ(hk_pool_destroy(p), 0);
    x.op = POOL_DESTROY;
    EXPECT_DEATH(x, "heapkit: hk_pool_destroy: pool 'conn' at %p was already destroyed\n", (void *)p);
    x.op = POOL_ALLOC;
    EXPECT_DEATH(x, "heapkit: hk_pool_alloc: pool 'conn' at %p was already destroyed\n", (void *)p);
    hk_pool_destroy(q);
}

static void test_arena_messages(void)
{
    hk_arena_t *a = hk_arena_create_ex(0, HK_POOL_CHECKED), *b = hk_arena_create_ex(0, HK_POOL_CHECKED);
    REQUIRE(a && b);
    bad_t x = { .op = ARENA_RESTORE, .h = a, .mark = hk_arena_mark(b) };
    EXPECT_DEATH(x, "heapkit: hk_arena_restore: arena %p: mark is from another arena\n", (void *)a);
    hk_arena_mark_t m1 = hk_arena_mark(a);
    REQUIRE(hk_arena_alloc(a, 100));
    x.mark = hk_arena_mark(a);
    CHECK_EQ(hk_arena_restore(a, m1), 0);
    EXPECT_DEATH(x, "heapkit: hk_arena_restore: arena %p: mark is stale (undone by an earlier restore or reset)\n", (void *)a);
    hk_arena_destroy(a);
    x.op = ARENA_DESTROY;
    EXPECT_DEATH(x, "heapkit: hk_arena_destroy: arena 'arena' at %p was already destroyed\n", (void *)a);
    hk_arena_destroy(b);
}

static void test_tpool_messages(void)
{
    hk_pool_options_t o = { .flags = HK_POOL_CHECKED, .name = "msgs" };
    hk_tpool_t *t = hk_tpool_create(64, 0, &o);
    REQUIRE(t);
    char *a = hk_tpool_alloc(t), *b = hk_tpool_alloc(t);
    REQUIRE(a && b);
    CHECK_EQ(hk_tpool_free(t, a), 0);
    bad_t x = { .op = TPOOL_FREE, .h = t, .ptr = a };
    EXPECT_DEATH(x, "heapkit: hk_tpool_free: tpool 'msgs': %p double free\n", (void *)a);
    x.ptr = outside;
    EXPECT_DEATH(x, "heapkit: hk_tpool_free: tpool 'msgs': %p is not from this pool\n", (void *)outside);
    x.ptr = b + 4;
    EXPECT_DEATH(x, "heapkit: hk_tpool_free: tpool 'msgs': %p is not on an object boundary\n", (void *)(b + 4));
    CHECK_EQ(hk_tpool_free(t, b), 0);
    hk_tpool_destroy(t);
}

static void test_slab_messages(void)
{
    hk_slab_cache_t *c = hk_slab_cache_create_ex("inode", 200, 0, NULL, NULL, NULL, HK_POOL_CHECKED);
    hk_slab_cache_t *d = hk_slab_cache_create_ex("dentry", 200, 0, NULL, NULL, NULL, HK_POOL_CHECKED);
    REQUIRE(c && d);
    char *a = hk_slab_alloc(c), *b = hk_slab_alloc(c), *other = hk_slab_alloc(d);
    REQUIRE(a && b && other);
    CHECK_EQ(hk_slab_free(c, a), 0);
    bad_t x = { .op = SLAB_FREE, .h = c, .ptr = a };
    EXPECT_DEATH(x, "heapkit: hk_slab_free: cache 'inode': %p double free\n", (void *)a);
    x.ptr = outside;
    EXPECT_DEATH(x, "heapkit: hk_slab_free: cache 'inode': %p is not from this cache\n", (void *)outside);
    x.ptr = other;
    EXPECT_DEATH(x, "heapkit: hk_slab_free: cache 'inode': %p is not from this cache\n", (void *)other);
    x.ptr = b + 1;
    EXPECT_DEATH(x, "heapkit: hk_slab_free: cache 'inode': %p is not on an object boundary\n", (void *)(b + 1));
    hk_pool_t *p = checked_pool();
    x.op = SLAB_ALLOC;
    x.h = p;
    EXPECT_DEATH(x, "heapkit: hk_slab_alloc: %p is a pool, not a slab cache\n", (void *)p);
    hk_pool_destroy(p);
    CHECK_EQ(hk_slab_free(c, b), 0);
    CHECK_EQ(hk_slab_cache_destroy(c), 0);
    x.op = SLAB_DESTROY;
    x.h = c;
    EXPECT_DEATH(x, "heapkit: hk_slab_cache_destroy: slab cache 'inode' at %p was already destroyed\n", (void *)c);
    hk_slab_free(d, other);
    hk_slab_cache_destroy(d);
}

/* Release behaviour (no flag, no HK_DEBUG): the inline fast paths check only
 * that a freed pointer lies in the pool's range; what they catch returns
 * EINVAL with the structure intact. Double frees and off-boundary pointers
 * are the checked mode's job (above) and are not exercised here. */
static void test_release_returns_einval(void)
{
#if HK_DEBUG < 1
    hk_pool_t *p = hk_pool_create(32, 0, NULL);
    REQUIRE(p);
    char *a = hk_pool_alloc(p), *b = hk_pool_alloc(p);
    CHECK_EQ(hk_pool_free(p, a), 0);
    hk_pool_stats_t s0, s1;
    hk_pool_stats(p, &s0);
    CHECK_EQ(hk_pool_free(p, outside), EINVAL);
    CHECK_EQ(hk_pool_free(p, b + (1 << 20)), EINVAL);   /* reserved but not committed */
    hk_pool_stats(p, &s1);
    CHECK_EQ(s1.in_use, s0.in_use);
    CHECK_EQ(s1.frees, s0.frees);
    /* The free list was not corrupted: a comes back once, then fresh ones. */
    char *c = hk_pool_alloc(p), *d = hk_pool_alloc(p);
    CHECK(c == a && d != a && d != b);
    CHECK_EQ(hk_pool_destroy(p), 0);
    CHECK_EQ(hk_pool_destroy(p), EINVAL);
    errno = 0;
    CHECK(hk_pool_alloc(p) == NULL && errno == EINVAL);  /* the inline path sees a dead handle */
    CHECK_EQ(hk_pool_free(p, a), EINVAL);
    CHECK_EQ(hk_pool_destroy((hk_pool_t *)outside), EINVAL);   /* not a handle at all */

    /* A locked pool is out of line anyway and also checks object boundaries. */
    hk_pool_options_t lo = { .flags = HK_POOL_THREAD_SAFE };
    hk_pool_t *lp = hk_pool_create(32, 0, &lo);
    REQUIRE(lp);
    char *e = hk_pool_alloc(lp);
    CHECK_EQ(hk_pool_free(lp, e + 1), EINVAL);
    CHECK_EQ(hk_pool_free(lp, outside), EINVAL);
    CHECK_EQ(hk_pool_free(lp, e), 0);
    CHECK(hk_pool_alloc(lp) == e);
    CHECK_EQ(hk_pool_destroy(lp), 0);

    hk_slab_cache_t *sc = hk_slab_cache_create("plain", 64, 0, NULL, NULL, NULL);
    REQUIRE(sc);
    CHECK_EQ(hk_slab_free(sc, outside), EINVAL);
    char *o = hk_slab_alloc(sc);
    CHECK_EQ(hk_slab_free(sc, outside), EINVAL);
    CHECK_EQ(hk_slab_free(sc, o), 0);
    CHECK_EQ(hk_slab_cache_destroy(sc), 0);
    CHECK_EQ(hk_slab_cache_destroy(sc), EINVAL);
    errno = 0;
    CHECK(hk_slab_alloc(sc) == NULL && errno == EINVAL);
    CHECK_EQ(hk_slab_free(sc, o), EINVAL);

    hk_tpool_t *tp = hk_tpool_create(64, 0, NULL);
    REQUIRE(tp);
    void *q = hk_tpool_alloc(tp);
    CHECK_EQ(hk_tpool_free(tp, outside), EINVAL);
    CHECK_EQ(hk_tpool_free(tp, q), 0);
    CHECK_EQ(hk_tpool_destroy(tp), 0);
    errno = 0;
    CHECK(hk_tpool_alloc(tp) == NULL && errno == EINVAL);
    CHECK_EQ(hk_tpool_free(tp, q), EINVAL);

    /* A tpool and a slab cache handed to each other's fast paths. */
    hk_tpool_t *tq = hk_tpool_create(64, 0, NULL);
    hk_slab_cache_t *sq = hk_slab_cache_create("cross", 64, 0, NULL, NULL, NULL);
    REQUIRE(tq && sq);
    void *to = hk_tpool_alloc(tq), *so = hk_slab_alloc(sq);
    CHECK_EQ(hk_tpool_free(tq, to), 0);
    CHECK_EQ(hk_slab_free(sq, so), 0);
    errno = 0;
    CHECK(hk_slab_alloc((hk_slab_cache_t *)tq) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(hk_tpool_alloc((hk_tpool_t *)sq) == NULL && errno == EINVAL);
    CHECK_EQ(hk_slab_free((hk_slab_cache_t *)tq, to), EINVAL);
    CHECK_EQ(hk_tpool_free((hk_tpool_t *)sq, so), EINVAL);
    CHECK(hk_tpool_alloc(tq) == to && hk_slab_alloc(sq) == so);   /* neither stack was touched */
    hk_tpool_destroy(tq);
    hk_slab_cache_destroy(sq);

    hk_arena_t *ar = hk_arena_create(0);
    errno = 0;
    CHECK(hk_pool_alloc((hk_pool_t *)ar) == NULL && errno == EINVAL);    /* wrong kind */
    CHECK(hk_slab_alloc((hk_slab_cache_t *)ar) == NULL && errno == EINVAL);
    CHECK_EQ(hk_tpool_free((hk_tpool_t *)ar, outside), EINVAL);
    CHECK_EQ(hk_arena_destroy(ar), 0);
    CHECK_EQ(hk_arena_destroy(ar), EINVAL);
    CHECK(hk_arena_alloc(ar, 10) == NULL);
#endif
}

int main(void)
{
    RUN(test_pool_messages);
    RUN(test_arena_messages);
    RUN(test_tpool_messages);
    RUN(test_slab_messages);
    RUN(test_release_returns_einval);
    return t_finish();
}
