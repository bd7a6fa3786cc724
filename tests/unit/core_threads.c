/* The allocator across threads: blocks freed by other threads than their
 * owner, threads that exit with live blocks (their segments are abandoned
 * and later adopted, by a thread that needs a segment, by a purge, or by
 * a free into them). Fixed seeds. */
#include "test.h"
#include "heapkit.h"
#include <pthread.h>

enum { NTHREADS = 4, PER = 20000 };

static unsigned char *blocks[NTHREADS][PER];
static size_t sizes[NTHREADS][PER];
static pthread_barrier_t bar;

static size_t size_for(unsigned t, unsigned i)
{
    uint32_t x = (t + 1) * 2654435761u ^ (i * 40503u);
    x ^= x >> 13;
    return (x % 16 == 0) ? 1000 + x % 60000 : 1 + x % 700;
}

static int check_block(const unsigned char *p, size_t n, unsigned tag)
{
    for (size_t i = 0; i < n; i += 61) if (p[i] != (unsigned char)(tag + i)) return 0;
    return p[n - 1] == (unsigned char)(tag + n - 1);
}

static void mark_block(unsigned char *p, size_t n, unsigned tag)
{
    for (size_t i = 0; i < n; i += 61) p[i] = (unsigned char)(tag + i);
    p[n - 1] = (unsigned char)(tag + n - 1);
}

static int bad[NTHREADS];

/* Each round: allocate our row, wait, free the next thread's row. */
static void *cross_worker(void *arg)
{
    unsigned t = (unsigned)(uintptr_t)arg;
    for (int round = 0; round < 3; round++) {
        for (unsigned i = 0; i < PER; i++) {
            size_t n = size_for(t + (unsigned)round, i);
            blocks[t][i] = hk_malloc(n);
            if (!blocks[t][i]) { bad[t]++; continue; }
            sizes[t][i] = n;
            mark_block(blocks[t][i], n, t + i);
        }
        pthread_barrier_wait(&bar);
        unsigned o = (t + 1) % NTHREADS;
        for (unsigned i = 0; i < PER; i++) {
            if (!blocks[o][i]) continue;
            if (!check_block(blocks[o][i], sizes[o][i], o + i)) bad[t]++;
            hk_free(blocks[o][i]);
        }
        pthread_barrier_wait(&bar);
    }
    return NULL;
}

static void test_cross_thread_free(void)
{
    pthread_t th[NTHREADS];
    pthread_barrier_init(&bar, NULL, NTHREADS);
    for (unsigned t = 0; t < NTHREADS; t++) pthread_create(&th[t], NULL, cross_worker, (void *)(uintptr_t)t);
    for (unsigned t = 0; t < NTHREADS; t++) pthread_join(th[t], NULL);
    pthread_barrier_destroy(&bar);
    for (unsigned t = 0; t < NTHREADS; t++) CHECK_EQ(bad[t], 0);
}

/* A thread allocates and exits without freeing: its heap is abandoned. */
static void *leaver(void *arg)
{
    unsigned t = (unsigned)(uintptr_t)arg;
    for (unsigned i = 0; i < PER; i++) {
        size_t n = t == 1 ? 1 + i % 200 : size_for(t, i);
        blocks[t][i] = hk_malloc(n);
        sizes[t][i] = n;
        if (blocks[t][i]) mark_block(blocks[t][i], n, t + i);
    }
    return NULL;
}

static uint64_t adopt_before, adopt_after;

static void *adopter(void *arg)
{
    (void)arg;
    hk_stats_t st;
    hk_stats_get(&st);
    adopt_before = st.segments_abandoned;
    /* Enough allocation to need fresh segments: those come from the
     * abandoned list first. */
    void **v = malloc(sizeof(void *) * 4000);
    for (int i = 0; i < 4000; i++) { v[i] = hk_malloc(100 + (size_t)(i % 50) * 40); if (v[i]) memset(v[i], 1, 100); }
    hk_stats_get(&st);
    adopt_after = st.segments_abandoned;
    for (int i = 0; i < 4000; i++) hk_free(v[i]);
    free(v);
    return NULL;
}

static void test_thread_exit_and_adoption(void)
{
    pthread_t th;
    pthread_create(&th, NULL, leaver, (void *)(uintptr_t)0);
    pthread_join(th, NULL);
    hk_stats_t st;
    hk_stats_get(&st);
    CHECK(st.segments_abandoned >= 1);
    /* A thread that needs segments takes abandoned ones first. */
    pthread_create(&th, NULL, adopter, NULL);
    pthread_join(th, NULL);
    CHECK(adopt_after < adopt_before);
    /* That thread exited too: free half of the blocks from here (frees
     * into segments abandoned twice over by now). */
    for (unsigned i = 0; i < PER; i += 2) {
        CHECK(check_block(blocks[0][i], sizes[0][i], i));
        hk_free(blocks[0][i]);
        blocks[0][i] = NULL;
    }
    hk_stats_t after;
    /* The other half is intact and frees fine, wherever it lives now. */
    for (unsigned i = 1; i < PER; i += 2) {
        CHECK(check_block(blocks[0][i], sizes[0][i], i));
        hk_free(blocks[0][i]);
    }
    /* Many short-lived threads in a row keep working (heap structs recycle). */
    for (int k = 0; k < 30; k++) {
        pthread_create(&th, NULL, leaver, (void *)(uintptr_t)1);
        pthread_join(th, NULL);
        for (unsigned i = 0; i < PER; i += 97) CHECK(check_block(blocks[1][i], sizes[1][i], 1 + i));
        for (unsigned i = 0; i < PER; i++) hk_free(blocks[1][i]);
    }
    hk_stats_get(&after);
    CHECK(after.heaps <= 2);
}

/* Purge until no abandoned segment is left (each purge adopts one), so
 * that a thread the test starts next cannot take an old one in. */
static void drain_abandoned(hk_stats_t *st)
{
    for (int k = 0; k < 256; k++) {
        hk_collect(1);
        hk_stats_get(st);
        if (st->segments_abandoned == 0) break;
    }
    CHECK_EQ(st->segments_abandoned, 0);
}

/* A free into a segment whose thread exited takes the segment over: the
 * blocks freed from here become this thread's local frees, and pages they
 * empty go back at once, with no purge and no new segment needed. */
static void test_free_adopts_abandoned(void)
{
    hk_stats_t before, orphaned, after;
    void *mine = hk_malloc(32);      /* this thread has a live heap */
    REQUIRE(mine);
    drain_abandoned(&before);
    pthread_t th;
    pthread_create(&th, NULL, leaver, (void *)(uintptr_t)1);
    pthread_join(th, NULL);
    hk_stats_get(&orphaned);
    CHECK(orphaned.segments_abandoned > before.segments_abandoned);
    /* One free per segment is enough to take it; free everything. */
    for (unsigned i = 0; i < PER; i++) {
        CHECK(check_block(blocks[1][i], sizes[1][i], 1 + i));
        hk_free(blocks[1][i]);
    }
    hk_stats_get(&after);
    CHECK_EQ(after.segments_abandoned, 0);
    /* Emptied pages went back (each class may keep one). */
    CHECK(after.pages < orphaned.pages);
    CHECK(after.pages <= before.pages + 64);
    hk_free(mine);
}

/* Producer/consumer: every block is freed by another thread. */
#define RING 1024
static void *ring[RING];
static unsigned ring_head, ring_tail;
static pthread_mutex_t ring_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ring_cv = PTHREAD_COND_INITIALIZER;

static void *producer(void *arg)
{
    (void)arg;
    for (unsigned i = 0; i < 100000; i++) {
        size_t n = 16 + (i * 37) % 500;
        unsigned char *p = hk_malloc(n);
        p[0] = (unsigned char)i; p[n - 1] = (unsigned char)(i >> 3);
        pthread_mutex_lock(&ring_mu);
        while (ring_head - ring_tail == RING) pthread_cond_wait(&ring_cv, &ring_mu);
        ring[ring_head++ % RING] = p;
        pthread_cond_broadcast(&ring_cv);
        pthread_mutex_unlock(&ring_mu);
    }
    return NULL;
}

static void *consumer(void *arg)
{
    int *errs = arg;
    for (unsigned i = 0; i < 100000; i++) {
        pthread_mutex_lock(&ring_mu);
        while (ring_head == ring_tail) pthread_cond_wait(&ring_cv, &ring_mu);
        unsigned char *p = ring[ring_tail++ % RING];
        pthread_cond_broadcast(&ring_cv);
        pthread_mutex_unlock(&ring_mu);
        size_t n = 16 + (i * 37) % 500;
        if (p[0] != (unsigned char)i || p[n - 1] != (unsigned char)(i >> 3)) (*errs)++;
        hk_free(p);
    }
    return NULL;
}

static void test_producer_consumer(void)
{
    int errs = 0;
    pthread_t a, b;
    pthread_create(&a, NULL, producer, NULL);
    pthread_create(&b, NULL, consumer, &errs);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    CHECK_EQ(errs, 0);
    hk_stats_t st;
    hk_stats_get(&st);
    CHECK(st.allocated < ((size_t)64 << 20));   /* remote frees were reclaimed */
}

/* A thread exits leaving blocks; another frees them all (remote frees
 * into the abandoned segments, which no owner collects). A purge in a
 * live thread adopts abandoned segments one at a time, so their pages
 * come back without any thread needing a new segment. */
static void *orphan_maker(void *arg)
{
    (void)arg;
    for (unsigned i = 0; i < PER; i++) { blocks[2][i] = hk_malloc(48 + (i % 8) * 16); if (blocks[2][i]) blocks[2][i][0] = 1; }
    return NULL;
}

static void test_adopt_on_purge(void)
{
    hk_stats_t before, orphaned, after;
    void *mine = hk_malloc(32);      /* the purges below run on this thread's heap */
    REQUIRE(mine);
    drain_abandoned(&before);
    pthread_t th;
    pthread_create(&th, NULL, orphan_maker, NULL);
    pthread_join(th, NULL);
    hk_stats_get(&orphaned);
    CHECK(orphaned.segments_abandoned > before.segments_abandoned);
    CHECK(orphaned.pages > before.pages);
    /* Nobody frees into them (a free would take its segment over): the
     * purges alone adopt them. */
    for (int k = 0; k < 64 && k <= (int)orphaned.segments_abandoned; k++) hk_collect(1);
    hk_stats_get(&after);
    CHECK_EQ(after.segments_abandoned, 0);
    for (unsigned i = 0; i < PER; i++) hk_free(blocks[2][i]);
    hk_stats_get(&after);
    CHECK(after.pages < orphaned.pages);
    hk_free(mine);
}

int main(void)
{
    RUN(test_cross_thread_free);
    RUN(test_thread_exit_and_adoption);
    RUN(test_free_adopts_abandoned);
    RUN(test_producer_consumer);
    RUN(test_adopt_on_purge);
    return t_finish();
}
