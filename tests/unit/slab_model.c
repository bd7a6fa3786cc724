/* Slab caches under a seeded random mix of alloc, free, flush and reap,
 * checked against a model: live objects keep their payload, every object
 * handed out is in its constructed state, and the counters add up. */
#include "test.h"
#include "heapkit/pool.h"

typedef struct thing { uint64_t state; uint64_t owner; char pad[40]; } thing_t;
static long live_ctor;   /* constructed objects not yet destructed */

static void ctor(void *o, void *arg) { (void)arg; ((thing_t *)o)->state = 0xfeed; ((thing_t *)o)->owner = 0; live_ctor++; }
static void dtor(void *o, void *arg) { (void)arg; if (((thing_t *)o)->state == 0xfeed) live_ctor--; }

static void test_random_model(void)
{
    enum { MAX = 3000, STEPS = 150000 };
    static thing_t *live[MAX];
    int n = 0;
    live_ctor = 0;
    hk_slab_cache_t *c = hk_slab_cache_create("model", sizeof(thing_t), 0, ctor, dtor, NULL);
    REQUIRE(c);
    uint64_t s = 0x243f6a8885a308d3ull;
    for (int step = 0; step < STEPS; step++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        unsigned r = (unsigned)(s % 1000);
        if (r < 520 && n < MAX) {
            thing_t *t = hk_slab_alloc(c);
            REQUIRE(t);
            CHECK(t->state == 0xfeed && t->owner == 0);   /* constructed, as returned */
            t->owner = (uint64_t)(uintptr_t)t ^ 0x5555;
            live[n++] = t;
        } else if (r < 995 && n > 0) {
            size_t i = (size_t)(s >> 24) % (size_t)n;
            thing_t *t = live[i];
            CHECK(t->owner == ((uint64_t)(uintptr_t)t ^ 0x5555));
            t->owner = 0;                                 /* back to constructed state */
            CHECK_EQ(hk_slab_free(c, t), 0);
            live[i] = live[--n];
        } else if (r < 998) {
            CHECK_EQ(hk_slab_cache_flush(c), 0);
        } else {
            CHECK(hk_slab_cache_reap(c) >= 0);
        }
        if (step % 5000 == 0) {
            hk_slab_stats_t st;
            CHECK_EQ(hk_slab_cache_stats(c, &st), 0);
            CHECK_EQ(st.in_use, (size_t)n);
            size_t slabs = st.slabs_partial + st.slabs_full + st.slabs_empty;
            CHECK_EQ(st.constructed - st.destructed, slabs * st.objs_per_slab);
            CHECK_EQ((uint64_t)live_ctor, st.constructed - st.destructed);
            CHECK(st.slabs_full * st.objs_per_slab <= (size_t)n + st.in_magazines);
        }
    }
    for (int i = 0; i < n; i++) { live[i]->owner = 0; CHECK_EQ(hk_slab_free(c, live[i]), 0); }
    hk_slab_cache_flush(c);
    hk_slab_cache_reap(c);
    hk_slab_stats_t st;
    hk_slab_cache_stats(c, &st);
    CHECK_EQ(st.slabs_partial + st.slabs_full + st.slabs_empty, 0);
    CHECK_EQ(live_ctor, 0);
    hk_slab_cache_destroy(c);
}

/* Arena nesting against a model: data written before a mark survives any
 * sequence of allocations and restores to that mark or an earlier one. */
static void test_arena_nested_marks(void)
{
    hk_arena_t *a = hk_arena_create(4096);
    REQUIRE(a);
    enum { DEPTH = 8 };
    hk_arena_mark_t marks[DEPTH];
    unsigned char *probe[DEPTH];
    int depth = 0;
    uint64_t s = 0x13198a2e03707344ull;
    for (int step = 0; step < 20000; step++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        unsigned r = (unsigned)(s % 100);
        if (r < 20 && depth < DEPTH) {
            probe[depth] = hk_arena_alloc(a, 32);
            REQUIRE(probe[depth]);
            memset(probe[depth], depth + 1, 32);
            marks[depth++] = hk_arena_mark(a);
        } else if (r < 30 && depth > 0) {
            int to = (int)((s >> 20) % (uint64_t)depth);
            CHECK_EQ(hk_arena_restore(a, marks[to]), 0);
            depth = to + 1;                 /* marks above `to` are stale now */
            for (int i = 0; i < depth; i++) CHECK(probe[i][0] == i + 1 && probe[i][31] == i + 1);
            depth--;                        /* and we leave level `to` too */
        } else {
            size_t sz = (size_t)(s >> 40) % 5000 + 1;
            unsigned char *p = hk_arena_alloc(a, sz);
            REQUIRE(p);
            memset(p, 0xee, sz);
        }
    }
    for (int i = 0; i < depth; i++) CHECK(probe[i][0] == i + 1);
    hk_arena_destroy(a);
}

int main(void)
{
    RUN(test_random_model);
    RUN(test_arena_nested_marks);
    return t_finish();
}
