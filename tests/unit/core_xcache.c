/* The foreign-block cache: blocks of another thread's pages that a thread
 * frees (64 bytes and up, or smaller once it keeps freeing them) are handed
 * out again by that thread's own mallocs, and go home when the cache
 * fills, on hk_collect and at thread exit, even when their owner has
 * exited in between. */
#include "test.h"
#include "heapkit.h"
#include <pthread.h>

enum { N = 24, MANY = 3000 };   /* N blocks of 64 or 96 bytes fit in one class of the cache */

static void *owned[MANY];
static int reused, bad;

static int is_owned(void *p, int n)
{
    for (int i = 0; i < n; i++) if (owned[i] == p) return 1;
    return 0;
}

/* Frees the owner's N blocks, then allocates N of the same class: every
 * one of them is one of the blocks it just freed (the cache holds 32 of
 * 64-byte blocks), and the payload written there stays intact. */
static void *reuser(void *arg)
{
    (void)arg;
    void *mine = hk_malloc(4000);            /* this thread gets a heap of its own */
    for (int i = 0; i < N; i++) hk_free(owned[i]);
    void *got[N];
    for (int i = 0; i < N; i++) {
        got[i] = hk_malloc(64);
        if (!got[i]) { bad++; continue; }
        if (is_owned(got[i], N)) reused++;
        memset(got[i], 0x5a, 64);
    }
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < 64; k++) if (got[i] && ((unsigned char *)got[i])[k] != 0x5a) { bad++; break; }
        owned[i] = got[i];                   /* the main thread frees these */
    }
    hk_free(mine);
    return NULL;
}

static void test_reuse(void)
{
    for (int i = 0; i < N; i++) { owned[i] = hk_malloc(64); REQUIRE(owned[i]); memset(owned[i], 1, 64); }
    pthread_t th;
    pthread_create(&th, NULL, reuser, NULL);
    pthread_join(th, NULL);
    CHECK_EQ(bad, 0);
    CHECK_EQ(reused, N);
    for (int i = 0; i < N; i++) hk_free(owned[i]);   /* back on our own pages, locally */
}

/* Many blocks freed by a thread that then exits: the overflow and the
 * flush at exit send all of them home, so the owner gets its pages back. */
static void *freer(void *arg)
{
    (void)arg;
    void *mine = hk_malloc(24);
    for (int i = 0; i < MANY; i++) hk_free(owned[i]);
    hk_free(mine);
    return NULL;
}

static void test_flush_home(void)
{
    hk_collect(1);
    hk_stats_t before, full, after;
    hk_stats_get(&before);
    for (int i = 0; i < MANY; i++) { owned[i] = hk_malloc(16 + (size_t)(i % 8) * 16); REQUIRE(owned[i]); }
    hk_stats_get(&full);
    CHECK(full.pages > before.pages);
    pthread_t th;
    pthread_create(&th, NULL, freer, NULL);
    pthread_join(th, NULL);
    hk_collect(1);
    hk_stats_get(&after);
    CHECK_EQ(after.pages, before.pages);
}

/* The owner exits while another thread still caches its blocks: the
 * cached blocks stay valid, are handed out and freed again, and go to
 * the abandoned pages when the caching thread flushes. */
static pthread_barrier_t ok_bar, mk_bar;   /* owner/keeper, main/keeper */

static void *short_owner(void *arg)
{
    (void)arg;
    for (int i = 0; i < N; i++) { owned[i] = hk_malloc(96); if (owned[i]) memset(owned[i], 7, 96); else bad++; }
    pthread_barrier_wait(&ok_bar);     /* blocks handed over */
    pthread_barrier_wait(&ok_bar);     /* keeper has cached them: exit */
    return NULL;
}

static void *keeper(void *arg)
{
    (void)arg;
    void *mine = hk_malloc(5000);
    pthread_barrier_wait(&ok_bar);
    for (int i = 0; i < N; i++) hk_free(owned[i]);
    pthread_barrier_wait(&ok_bar);
    pthread_barrier_wait(&mk_bar);     /* the owner has been joined */
    int hits = 0;
    void *got[N];
    for (int i = 0; i < N; i++) {
        got[i] = hk_malloc(96);
        if (!got[i]) { bad++; continue; }
        if (is_owned(got[i], N)) hits++;
        memset(got[i], 9, 96);
    }
    for (int i = 0; i < N; i++) hk_free(got[i]);
    if (hits != N) bad++;
    hk_collect(1);                     /* flush what is cached into the abandoned pages */
    hk_free(mine);
    return NULL;
}

static void test_owner_exits(void)
{
    bad = 0;
    pthread_barrier_init(&ok_bar, NULL, 2);
    pthread_barrier_init(&mk_bar, NULL, 2);
    pthread_t own, keep;
    pthread_create(&own, NULL, short_owner, NULL);
    pthread_create(&keep, NULL, keeper, NULL);
    pthread_join(own, NULL);
    pthread_barrier_wait(&mk_bar);
    pthread_join(keep, NULL);
    pthread_barrier_destroy(&ok_bar);
    pthread_barrier_destroy(&mk_bar);
    CHECK_EQ(bad, 0);
    /* Another thread's allocation adopts the abandoned segment, and the
     * blocks that went home through thread_free are reusable. */
    void *v[200];
    for (int i = 0; i < 200; i++) { v[i] = hk_malloc(96); REQUIRE(v[i]); memset(v[i], 3, 96); }
    for (int i = 0; i < 200; i++) hk_free(v[i]);
}

/* Blocks of a page in its owner's full list: every block of the first
 * page of the 64-byte class is out, so the page sits in the full list
 * while another thread frees N of them, takes them back from its cache,
 * writes them, frees them again and takes them again (blocks circulating
 * between threads keep their home page full). The page then leaves the
 * full list when the owner frees its share, the cached blocks go home at
 * the thread's exit, and every page of the class is given back. */
enum { PAGE_BLOCKS = 65536 / 64 };
static void *page_blocks[PAGE_BLOCKS + 64];

static void *circulator(void *arg)
{
    (void)arg;
    void *mine = hk_malloc(4000);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) hk_free(page_blocks[i]);
        int hits = 0;
        for (int i = 0; i < N; i++) {
            void *q = hk_malloc(64);
            if (!q) { bad++; continue; }
            for (int k = 0; k < N; k++) if (page_blocks[k] == q) { hits++; break; }
            memset(q, 0x40 + round, 64);
        }
        if (hits != N) bad++;
        /* the same N blocks came back (hits == N): each holds this round's bytes */
        for (int i = 0; i < N; i++)
            for (int k = 0; k < 64; k++)
                if (((unsigned char *)page_blocks[i])[k] != 0x40 + round) { bad++; break; }
    }
    for (int i = 0; i < N; i++) hk_free(page_blocks[i]);
    hk_free(mine);
    return NULL;
}

static void test_full_page_circulates(void)
{
    bad = 0;
    hk_collect(1);
    hk_stats_t before, after;
    hk_stats_get(&before);
    for (int i = 0; i < PAGE_BLOCKS + 64; i++) { page_blocks[i] = hk_malloc(64); REQUIRE(page_blocks[i]); memset(page_blocks[i], 1, 64); }
    pthread_t th;
    pthread_create(&th, NULL, circulator, NULL);
    pthread_join(th, NULL);
    CHECK_EQ(bad, 0);
    for (int i = N; i < PAGE_BLOCKS + 64; i++) {
        for (int k = 0; k < 64; k++) if (((unsigned char *)page_blocks[i])[k] != 1) { bad++; break; }
        hk_free(page_blocks[i]);
    }
    CHECK_EQ(bad, 0);
    hk_collect(1);
    hk_stats_get(&after);
    CHECK_EQ(after.pages, before.pages);
}

/* Another thread's block under 64 bytes goes home while the freeing thread
 * frees such blocks only now and then (it would share a cache line with
 * its owner's live blocks); from the 64th of the class on it is kept. */
static void *small_freer(void *arg)
{
    (void)arg;
    void *mine = hk_malloc(16);             /* this thread gets a heap of its own */
    hk_free(mine);
    hk_free(owned[0]);
    void *q = hk_malloc(16);
    if (q == owned[0]) bad++;               /* went home, not into this cache */
    hk_free(q);
    for (int i = 1; i < 80; i++) hk_free(owned[i]);
    void *r = hk_malloc(16);
    if (r != owned[79]) bad++;              /* now cached: the last one freed comes first */
    hk_free(r);
    return NULL;
}

static void test_small_foreign_blocks(void)
{
    bad = 0;
    for (int i = 0; i < 80; i++) { owned[i] = hk_malloc(16); REQUIRE(owned[i]); }
    pthread_t th;
    pthread_create(&th, NULL, small_freer, NULL);
    pthread_join(th, NULL);
    CHECK_EQ(bad, 0);
    hk_collect(1);
}

int main(void)
{
    RUN(test_small_foreign_blocks);
    RUN(test_reuse);
    RUN(test_full_page_circulates);
    RUN(test_flush_home);
    RUN(test_owner_exits);
    return t_finish();
}
