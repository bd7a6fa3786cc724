/* The allocator across threads: blocks freed by other threads than their
 * owner, threads that exit with live blocks (their segments are abandoned
 * and later adopted, by a thread that needs a segment, by a purge, or by
 * a free into them; or their heap waits parked for the next thread).
 * Fixed seeds. */
#include "test.h"
#include "gate.h"
#include "heapkit.h"
#include <pthread.h>
#include <semaphore.h>
#include <time.h>

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
static size_t adopt_check;

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
    adopt_check = hk_check();         /* adopted segments' pages now owned by this thread */
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
    CHECK_EQ(adopt_check, 0);
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
    CHECK_EQ(hk_check(), 0);          /* the adopted pages carry this thread as owner */
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

/* ------------------------------------------------------------ parked heaps */

/* Allocates row 3 (small blocks), frees every other one, exits. */
static void *park_leaver(void *arg)
{
    (void)arg;
    for (unsigned i = 0; i < PER; i++) {
        size_t n = 16 + i % 185;
        blocks[3][i] = hk_malloc(n);
        sizes[3][i] = n;
        if (blocks[3][i]) mark_block(blocks[3][i], n, 3 + i);
    }
    for (unsigned i = 1; i < PER; i += 2) { hk_free(blocks[3][i]); blocks[3][i] = NULL; }
    return NULL;
}

static unsigned char *g_taken[1000];
static uint64_t g_taker_new_segments;
static size_t g_taker_check;

static void *park_taker(void *arg)
{
    (void)arg;
    hk_stats_t a, b;
    hk_stats_get(&a);
    for (int i = 0; i < 1000; i++) { g_taken[i] = hk_malloc(16 + (size_t)(i % 185)); if (g_taken[i]) g_taken[i][0] = 1; }
    hk_stats_get(&b);
    g_taker_new_segments = b.segments - a.segments;
    g_taker_check = hk_check();       /* the parked heap's pages carry this thread as owner */
    for (int i = 0; i < 1000; i++) hk_free(g_taken[i]);
    return NULL;
}

static bool in_leaver_segment(const void *p)
{
    uintptr_t seg = (uintptr_t)p & ~(((uintptr_t)4 << 20) - 1);
    for (unsigned i = 0; i < PER; i += 2)
        if (((uintptr_t)blocks[3][i] & ~(((uintptr_t)4 << 20) - 1)) == seg) return true;
    return false;
}

/* A thread that exits is parked, not abandoned; the next thread that
 * starts takes its heap whole: its mallocs get the exited thread's free
 * blocks, from the exited thread's segments, and need no new segment. */
static void test_parked_heap_goes_to_next_thread(void)
{
    hk_stats_t before, parked;
    void *mine = hk_malloc(32);
    REQUIRE(mine);
    REQUIRE(hk_option_set(HK_OPTION_PARKED_HEAPS, 8) == 0);
    REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, 60000) == 0);   /* nothing expires during the test */
    drain_abandoned(&before);
    pthread_t th;
    pthread_create(&th, NULL, park_leaver, NULL);
    pthread_join(th, NULL);
    hk_stats_get(&parked);
    CHECK_EQ(parked.segments_abandoned, before.segments_abandoned);   /* parked, not abandoned */
    CHECK_EQ(parked.heaps, before.heaps);                             /* and not counted live */
    CHECK_EQ(parked.heaps_parked, before.heaps_parked + 1);
    pthread_create(&th, NULL, park_taker, NULL);
    pthread_join(th, NULL);
    CHECK_EQ(g_taker_new_segments, 0);
    CHECK_EQ(g_taker_check, 0);
    unsigned from_leaver = 0;
    for (int i = 0; i < 1000; i++) from_leaver += in_leaver_segment(g_taken[i]);
    CHECK_EQ(from_leaver, 1000);
    /* The leaver's live blocks are intact, and free from here. */
    for (unsigned i = 0; i < PER; i += 2) {
        CHECK(check_block(blocks[3][i], sizes[3][i], 3 + i));
        hk_free(blocks[3][i]);
    }
    hk_collect(1);      /* abandons what waits parked (the taker's heap, parked again) */
    hk_stats_t after;
    hk_stats_get(&after);
    CHECK_EQ(after.heaps_parked, 0);
    CHECK(after.pages <= parked.pages);
    hk_free(mine);
    hk_option_set(HK_OPTION_PURGE_DELAY, 10);
}

/* With a purge delay of PARK_MS, a thread leaves row 1 behind and exits:
 * its heap is parked (stats before and after in *before, *parked). The
 * checks that it is still parked run within that delay: at 20 ms, 10,000
 * frees under ThreadSanitizer on a busy 2-core machine outlasted it once
 * (the heap expired during them and the test failed). */
enum { PARK_MS = 300 };
static void park_row1(hk_stats_t *before, hk_stats_t *parked)
{
    REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, PARK_MS) == 0);
    drain_abandoned(before);
    pthread_t th;
    pthread_create(&th, NULL, leaver, (void *)(uintptr_t)1);
    pthread_join(th, NULL);
    hk_stats_get(parked);
    CHECK_EQ(parked->segments_abandoned, before->segments_abandoned);
    CHECK_EQ(parked->heaps_parked, 1);
}

static void free_row1(unsigned from, unsigned to)
{
    for (unsigned i = from; i < to; i++) {
        CHECK(check_block(blocks[1][i], sizes[1][i], 1 + i));
        hk_free(blocks[1][i]);
    }
}

/* A heap parked longer than the purge delay is abandoned by the next purge
 * of a live thread. */
static void test_parked_heap_expires(void)
{
    hk_stats_t before, parked, after;
    void *mine = hk_malloc(32);
    REQUIRE(mine);
    park_row1(&before, &parked);
    hk_collect(0);                      /* too young: stays parked */
    hk_stats_get(&after);
    CHECK_EQ(after.segments_abandoned, before.segments_abandoned);
    CHECK_EQ(after.heaps_parked, 1);
    t_sleep_ms(2 * PARK_MS);
    hk_collect(0);                      /* a purge of this heap: the parked one is due */
    hk_stats_get(&after);
    CHECK_EQ(after.heaps_parked, 0);    /* abandoned (and maybe adopted at once by that purge) */
    free_row1(0, PER);
    drain_abandoned(&after);
    hk_free(mine);
    hk_option_set(HK_OPTION_PURGE_DELAY, 10);
}

/* Frees into a parked heap go home by the atomic path; once the heap has
 * waited out the delay, a free abandons it and adopts the segment, and the
 * pages the frees empty go back. */
static void test_free_into_parked_heap(void)
{
    hk_stats_t before, parked, after;
    void *mine = hk_malloc(32);
    REQUIRE(mine);
    park_row1(&before, &parked);
    free_row1(0, PER / 2);
    hk_stats_get(&after);
    CHECK_EQ(after.segments_abandoned, before.segments_abandoned);   /* still parked: nothing adopted */
    CHECK_EQ(after.segments, parked.segments);
    CHECK_EQ(after.heaps_parked, 1);
    t_sleep_ms(2 * PARK_MS);
    free_row1(PER / 2, PER);
    hk_stats_get(&after);
    CHECK_EQ(after.heaps_parked, 0);
    CHECK_EQ(after.segments_abandoned, 0);           /* abandoned by a free, adopted by the frees */
    CHECK(after.pages < parked.pages);
    hk_free(mine);
    hk_option_set(HK_OPTION_PURGE_DELAY, 10);
}

/* A thread heap adds the pages it takes to the process's counters 16 at
 * a time; statistics read in between count the ones it has not added yet.
 * A thread takes pages of six classes (one block each, 8-48 KiB: one page
 * apiece) and waits; the main thread's hk_stats_get sees six pages more
 * (and as many page bytes), and after the thread frees them and exits,
 * as many fewer. */
static t_gate_t st_gate = T_GATE_INIT;   /* 1: the thread has its pages, 2: it may free them */
static void *six_pages(void *arg)
{
    (void)arg;
    void *p[6];
    for (int i = 0; i < 6; i++) p[i] = hk_malloc((size_t)(8 + 8 * i) << 10);
    t_gate_set(&st_gate, 1);
    t_gate_wait(&st_gate, 2);
    for (int i = 0; i < 6; i++) hk_free(p[i]);
    return NULL;
}

static void test_page_counts_between_flushes(void)
{
    hk_collect(1);
    hk_stats_t before, during, after;
    hk_stats_get(&before);
    pthread_t t;
    st_gate.phase = 0;
    REQUIRE(pthread_create(&t, NULL, six_pages, NULL) == 0);
    t_gate_wait(&st_gate, 1);
    hk_stats_get(&during);
    t_gate_set(&st_gate, 2);
    pthread_join(t, NULL);
    hk_collect(1);
    hk_stats_get(&after);
    fprintf(stderr, "  pages %llu before, %llu with the thread's six, %llu after it exited\n",
            (unsigned long long)before.pages, (unsigned long long)during.pages, (unsigned long long)after.pages);
    CHECK(during.pages >= before.pages + 6);
    CHECK(during.allocated >= before.allocated + 6 * 65536);
    CHECK(during.pages_peak >= during.pages);
    CHECK(after.pages <= before.pages);
}

/* The most recently parked heap keeps its free pages resident for the
 * next thread that starts; parking another heap gives them back. Threads
 * A and B each free 64 blocks of 16 KiB (1 MiB, sixteen 64 KiB pages)
 * and keep one small block, so their segments stay; A exits,
 * then B. A's exit purges nothing; B's purges A's free pages. The purge
 * delay is long so that nothing else purges in between. */
enum { WARM_N = 64, WARM_SIZE = 16 << 10 };
static sem_t warm_ready, warm_go[2];
static void *warm_kept[2];
static int warm_bad;

static void *warm_thread(void *arg)
{
    int id = (int)(intptr_t)arg;
    void *v[WARM_N];
    warm_kept[id] = hk_malloc(100);
    for (int i = 0; i < WARM_N; i++) if (!(v[i] = hk_malloc(WARM_SIZE))) warm_bad++; else memset(v[i], id, WARM_SIZE);
    for (int i = 0; i < WARM_N; i++) hk_free(v[i]);
    hk_collect(0);    /* cached big blocks go home: their pages empty at exit */
    sem_post(&warm_ready);
    while (sem_wait(&warm_go[id]) != 0) {}
    return NULL;
}

static void test_parked_heap_warm(void)
{
    hk_collect(1);    /* nothing parked from earlier tests */
    long delay = hk_option_get(HK_OPTION_PURGE_DELAY);
    REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, 60000) == 0);
    REQUIRE(sem_init(&warm_ready, 0, 0) == 0 && sem_init(&warm_go[0], 0, 0) == 0 && sem_init(&warm_go[1], 0, 0) == 0);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) REQUIRE(pthread_create(&th[i], NULL, warm_thread, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < 2; i++) while (sem_wait(&warm_ready) != 0) {}
    hk_stats_t s0, s1, s2;
    hk_stats_get(&s0);
    sem_post(&warm_go[0]);
    pthread_join(th[0], NULL);
    hk_stats_get(&s1);
    sem_post(&warm_go[1]);
    pthread_join(th[1], NULL);
    hk_stats_get(&s2);
    fprintf(stderr, "  parked heaps: %llu, then %llu; purged bytes +%llu at the first exit, +%llu at the second\n",
            (unsigned long long)s1.heaps_parked, (unsigned long long)s2.heaps_parked,
            (unsigned long long)(s1.purged_bytes - s0.purged_bytes), (unsigned long long)(s2.purged_bytes - s1.purged_bytes));
    CHECK_EQ(warm_bad, 0);
    CHECK_EQ(s1.heaps_parked, s0.heaps_parked + 1);
    CHECK_EQ(s2.heaps_parked, s0.heaps_parked + 2);
    CHECK_EQ(s1.purged_bytes, s0.purged_bytes);                                      /* A's free pages stay */
    CHECK(s2.purged_bytes >= s1.purged_bytes + (uint64_t)WARM_N * WARM_SIZE / 2);    /* until B parks */
    for (int i = 0; i < 2; i++) hk_free(warm_kept[i]);
    REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, delay) == 0);
    hk_collect(1);
    CHECK_EQ(hk_check(), 0);
}

int main(void)
{
    RUN(test_cross_thread_free);
    /* Abandonment and adoption as such: no heap waits parked (the tests
     * at the end cover parking). */
    hk_option_set(HK_OPTION_PARKED_HEAPS, 0);
    RUN(test_thread_exit_and_adoption);
    RUN(test_free_adopts_abandoned);
    RUN(test_producer_consumer);
    RUN(test_adopt_on_purge);
    hk_option_set(HK_OPTION_PARKED_HEAPS, 8);
    RUN(test_parked_heap_goes_to_next_thread);
    RUN(test_parked_heap_expires);
    RUN(test_free_into_parked_heap);
    RUN(test_parked_heap_warm);
    RUN(test_page_counts_between_flushes);
    return t_finish();
}
