/* Pools across threads: a locked pool, per-thread pools and slab magazines
 * hammered by several threads with objects freed by threads that did not
 * allocate them; caches go back to the depot when threads exit. */
#include "test.h"
#include "heapkit/pool.h"
#include <pthread.h>

enum { THREADS = 4, ROUNDS = 20000, RING = 256 };

/* A ring per pair of threads: producers allocate, consumers free. */
typedef struct ring {
    void *slot[RING];
    unsigned head, tail;       /* atomics */
} ring_t;

static bool ring_push(ring_t *r, void *p)
{
    unsigned h = __atomic_load_n(&r->head, __ATOMIC_RELAXED);
    if (h - __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE) == RING) return false;
    r->slot[h % RING] = p;
    __atomic_store_n(&r->head, h + 1, __ATOMIC_RELEASE);
    return true;
}
static void *ring_pop(ring_t *r)
{
    unsigned t = __atomic_load_n(&r->tail, __ATOMIC_RELAXED);
    if (__atomic_load_n(&r->head, __ATOMIC_ACQUIRE) == t) return NULL;
    void *p = r->slot[t % RING];
    __atomic_store_n(&r->tail, t + 1, __ATOMIC_RELEASE);
    return p;
}

enum kind { K_POOL, K_TPOOL, K_SLAB };
typedef struct job {
    enum kind kind;
    void *h;
    ring_t *out, *in;          /* we allocate into out, free what arrives in in */
    int id;
    long errors;
} job_t;

static void *alloc_k(job_t *j)
{
    switch (j->kind) {
    case K_POOL: return hk_pool_alloc(j->h);
    case K_TPOOL: return hk_tpool_alloc(j->h);
    default: return hk_slab_alloc(j->h);
    }
}
static int free_k(job_t *j, void *p)
{
    switch (j->kind) {
    case K_POOL: return hk_pool_free(j->h, p);
    case K_TPOOL: return hk_tpool_free(j->h, p);
    default: return hk_slab_free(j->h, p);
    }
}

/* Each object carries its owner's tag and a sequence; a receiver checks it,
 * so two threads ever getting the same object shows up as a torn tag. */
static void take_in(job_t *j)
{
    void *p;
    while ((p = ring_pop(j->in))) {
        uint64_t *w = p;
        if (w[0] != ~w[1]) j->errors++;
        if (free_k(j, p) != 0) j->errors++;
    }
}

static void *worker(void *arg)
{
    job_t *j = arg;
    uint64_t s = 0x1234567ull + (uint64_t)j->id;
    void *local[64];
    int nlocal = 0;
    for (int i = 0; i < ROUNDS; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        uint64_t *p = alloc_k(j);
        if (!p) { j->errors++; continue; }
        p[0] = s; p[1] = ~s;
        if (s & 1) {
            /* Cross-thread free; when the consumer lags (or is done), free it here. */
            if (!ring_push(j->out, p) && free_k(j, p) != 0) j->errors++;
        } else if (nlocal < 64) {
            local[nlocal++] = p;
        } else {
            if (free_k(j, p) != 0) j->errors++;
        }
        if ((s & 0x30) == 0 && nlocal) {
            uint64_t *q = local[--nlocal];
            if (q[0] != ~q[1]) j->errors++;
            if (free_k(j, q) != 0) j->errors++;
        }
        take_in(j);
    }
    while (nlocal) free_k(j, local[--nlocal]);
    return NULL;
}

static long run_kind(enum kind k, void *h)
{
    static ring_t rings[THREADS];
    job_t jobs[THREADS];
    pthread_t th[THREADS];
    memset(rings, 0, sizeof rings);
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (job_t){ .kind = k, .h = h, .out = &rings[i], .in = &rings[(i + THREADS - 1) % THREADS], .id = i };
    }
    for (int i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, worker, &jobs[i]);
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    long errors = 0;
    /* Leftovers in the rings: the main thread frees them (another cross-thread free). */
    for (int i = 0; i < THREADS; i++) {
        job_t drain = jobs[(i + 1) % THREADS];
        drain.errors = 0;
        take_in(&drain);
        errors += jobs[i].errors + drain.errors;
    }
    return errors;
}

static void test_locked_pool(void)
{
    hk_pool_options_t o = { .flags = HK_POOL_THREAD_SAFE, .name = "locked" };
    hk_pool_t *p = hk_pool_create(32, 0, &o);
    REQUIRE(p);
    CHECK_EQ(run_kind(K_POOL, p), 0);
    hk_pool_stats_t st;
    hk_pool_stats(p, &st);
    CHECK_EQ(st.in_use, 0);
    CHECK_EQ(st.allocs, st.frees);
    CHECK_EQ(st.allocs, (uint64_t)THREADS * ROUNDS);
    hk_pool_destroy(p);
}

static void test_tpool(void)
{
    hk_tpool_t *t = hk_tpool_create(32, 0, NULL);
    REQUIRE(t);
    CHECK_EQ(run_kind(K_TPOOL, t), 0);
    hk_tpool_flush(t);                  /* the main thread's cache */
    hk_tpool_stats_t st;
    hk_tpool_stats(t, &st);
    /* Every worker exited, so their caches went back: nothing is out. */
    CHECK_EQ(st.caches, 0);
    CHECK_EQ(st.depot.in_use, 0);
    CHECK(st.refills > 0);
    hk_tpool_destroy(t);
}

static void test_tpool_checked_cap(void)
{
    /* Checked mode (atomic held bits) under threads, and a cap that the
     * caches cannot overrun. */
    hk_pool_options_t o = { .flags = HK_POOL_CHECKED, .max_objects = 100000 };
    hk_tpool_t *t = hk_tpool_create(24, 0, &o);
    REQUIRE(t);
    CHECK_EQ(run_kind(K_TPOOL, t), 0);
    hk_tpool_flush(t);
    hk_tpool_stats_t st;
    hk_tpool_stats(t, &st);
    CHECK_EQ(st.depot.in_use, 0);
    CHECK(st.depot.peak_in_use <= 100000);
    hk_tpool_destroy(t);
}

static long ctor_calls, dtor_calls;
static void ctor(void *o, void *arg) { (void)arg; memset(o, 0, 16); __atomic_fetch_add(&ctor_calls, 1, __ATOMIC_RELAXED); }
static void dtor(void *o, void *arg) { (void)o; (void)arg; __atomic_fetch_add(&dtor_calls, 1, __ATOMIC_RELAXED); }

static void test_slab(void)
{
    for (int checked = 0; checked < 2; checked++) {
        ctor_calls = dtor_calls = 0;
        hk_slab_cache_t *c = hk_slab_cache_create_ex("mt", 48, 0, ctor, dtor, NULL, checked ? HK_POOL_CHECKED : 0);
        REQUIRE(c);
        CHECK_EQ(run_kind(K_SLAB, c), 0);
        hk_slab_cache_flush(c);
        hk_slab_stats_t st;
        hk_slab_cache_stats(c, &st);
        CHECK_EQ(st.in_use, 0);
        CHECK_EQ(st.allocs, (uint64_t)THREADS * ROUNDS);
        CHECK_EQ(st.allocs, st.frees);
        CHECK(hk_slab_cache_reap(c) > 0);
        hk_slab_cache_stats(c, &st);
        /* Threads exited and the depot was reaped: every slab came back. */
        CHECK_EQ(st.slabs_full + st.slabs_partial + st.slabs_empty, 0);
        CHECK_EQ(st.in_magazines, 0);
        hk_slab_cache_destroy(c);
        CHECK_EQ(ctor_calls, dtor_calls);
    }
}

/* Threads that never exit before destroy: destroy must still release all,
 * and the threads' later exit must not touch the dead tpool. */
static hk_tpool_t *shared_tp;
static pthread_barrier_t bar;
static void *lingerer(void *arg)
{
    (void)arg;
    void *p = hk_tpool_alloc(shared_tp);
    hk_tpool_free(shared_tp, p);
    pthread_barrier_wait(&bar);   /* holds a cache */
    pthread_barrier_wait(&bar);   /* main destroyed the tpool meanwhile */
    return NULL;
}
static void test_destroy_with_live_threads(void)
{
    shared_tp = hk_tpool_create(64, 0, NULL);
    REQUIRE(shared_tp);
    pthread_t th[3];
    pthread_barrier_init(&bar, NULL, 4);
    for (int i = 0; i < 3; i++) pthread_create(&th[i], NULL, lingerer, NULL);
    pthread_barrier_wait(&bar);
    hk_tpool_stats_t st;
    hk_tpool_stats(shared_tp, &st);
    CHECK_EQ(st.caches, 3);
    CHECK_EQ(hk_tpool_destroy(shared_tp), 0);
    /* A new tpool may take over the same descriptor later; exits must not mix them up. */
    hk_tpool_t *fresh = hk_tpool_create(64, 0, NULL);
    REQUIRE(fresh);
    pthread_barrier_wait(&bar);
    for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
    hk_tpool_stats(fresh, &st);
    CHECK_EQ(st.caches, 0);
    CHECK_EQ(st.depot.in_use, 0);
    hk_tpool_destroy(fresh);
    pthread_barrier_destroy(&bar);
}

int main(void)
{
    RUN(test_locked_pool);
    RUN(test_tpool);
    RUN(test_tpool_checked_cap);
    RUN(test_slab);
    RUN(test_destroy_with_live_threads);
    return t_finish();
}
