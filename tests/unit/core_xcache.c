/* The foreign-block cache: blocks of another thread's pages that a thread
 * frees (64 bytes and up, or smaller once it keeps freeing them) are handed
 * out again by that thread's own mallocs, and go home when the cache
 * fills, on hk_collect and at thread exit, even when their owner has
 * exited in between. */
#include "test.h"
#include "gate.h"
#include "heapkit.h"
#include "core/core.h"
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <string.h>
#include <errno.h>
#include <stdatomic.h>
#include <time.h>

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
    REQUIRE(t_in_thread(reuser, NULL));
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
    REQUIRE(t_in_thread(freer, NULL));
    hk_collect(1);
    hk_stats_get(&after);
    CHECK_EQ(after.pages, before.pages);
}

/* Blocks of two classes, freed by another thread in an order that mixes
 * runs of one page with single blocks, go home in chains (one CAS and one
 * count per run of a page). The owner, still alive, has freed a quarter
 * of the blocks itself first, so it also takes remote lists into pages
 * whose own list is not empty. Every count must be right: the owner gets
 * all blocks back (no new page for the same number of mallocs) and, once
 * it frees them, every page (a page whose count went wrong never
 * empties). */
enum { CH_N = 2000 };
static unsigned char *ch_v[CH_N];
static size_t ch_size(int i) { return (i % 5 == 0) ? 96 : 160; }
static void *chain_freer(void *arg)
{
    (void)arg;
    void *mine = hk_malloc(4000);
    for (int i = 0; i < CH_N; i += 2) hk_free(ch_v[i]);   /* even ones: runs with gaps */
    for (int i = 1; i < CH_N; i += 4) hk_free(ch_v[i]);   /* a quarter more, elsewhere in the pages */
    hk_free(mine);
    return NULL;                       /* the exit flushes what is cached */
}

static void test_chains_home(void)
{
    hk_collect(1);
    hk_stats_t before, full, again, after;
    hk_stats_get(&before);
    for (int i = 0; i < CH_N; i++) { ch_v[i] = hk_malloc(ch_size(i)); REQUIRE(ch_v[i]); memset(ch_v[i], 3, ch_size(i)); }
    hk_stats_get(&full);
    CHECK(full.pages > before.pages);
    for (int i = 3; i < CH_N; i += 4) { hk_free(ch_v[i]); ch_v[i] = NULL; }   /* the owner's own frees first */
    REQUIRE(t_in_thread(chain_freer, NULL));
    /* Every freed block again, of its size; they fit in the pages there are. */
    int bad_payload = 0;
    for (int i = 0; i < CH_N; i++) {   /* all were freed: i % 4 == 3 by the owner, the rest by the freer */
        ch_v[i] = hk_malloc(ch_size(i));
        REQUIRE(ch_v[i]);
        memset(ch_v[i], (unsigned char)i, ch_size(i));
    }
    hk_stats_get(&again);
    CHECK(again.pages <= full.pages);
    for (int i = 0; i < CH_N; i++)
        for (size_t k = 0; k < ch_size(i); k++) if (ch_v[i][k] != (unsigned char)i) { bad_payload++; break; }
    CHECK_EQ(bad_payload, 0);
    for (int i = 0; i < CH_N; i++) hk_free(ch_v[i]);
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
    REQUIRE(t_in_thread(circulator, NULL));
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

/* Remote frees into full pages: 2 KiB blocks (past the cache's classes, so
 * every free by another thread goes to the page's atomic list) fill a
 * dozen pages, which go to the owner's full list; another thread frees one
 * block of each of four full pages, and the owner's next four mallocs of
 * the class are exactly those blocks (the pages left the full list; no
 * fresh memory was carved). Twenty rounds, pages picked afresh. */
enum { FULL_BS = 2048, FULL_N = 400, FULL_PAGE = 65536 };
static void *full_blocks[FULL_N];
static void *full_victims[4];

static void *full_freer(void *arg)
{
    (void)arg;
    void *mine = hk_malloc(16);            /* a heap of its own: these frees are remote */
    for (int k = 0; k < 4; k++) hk_free(full_victims[k]);
    hk_free(mine);
    return NULL;
}

static void test_full_pages_take_remote_frees(void)
{
    bad = 0;
    for (int i = 0; i < FULL_N; i++) { full_blocks[i] = hk_malloc(FULL_BS); REQUIRE(full_blocks[i]); memset(full_blocks[i], 7, FULL_BS); }
    uintptr_t last = (uintptr_t)full_blocks[FULL_N - 1] & ~(uintptr_t)(FULL_PAGE - 1);
    int misses = 0;
    for (int round = 0; round < 20; round++) {
        /* one block each of four full pages (not the page being carved) */
        int got = 0;
        for (int i = (round * 37) % FULL_N, n = 0; got < 4 && n < FULL_N; i = (i + 61) % FULL_N, n++) {
            uintptr_t pg = (uintptr_t)full_blocks[i] & ~(uintptr_t)(FULL_PAGE - 1);
            int dup = pg == last;
            for (int k = 0; k < got; k++) dup |= ((uintptr_t)full_victims[k] & ~(uintptr_t)(FULL_PAGE - 1)) == pg;
            if (!dup) { full_victims[got++] = full_blocks[i]; full_blocks[i] = NULL; }
        }
        REQUIRE(got == 4);
        REQUIRE(t_in_thread(full_freer, NULL));
        for (int k = 0; k < 4; k++) {
            void *q = hk_malloc(FULL_BS);
            REQUIRE(q != NULL);
            int hit = 0;
            for (int j = 0; j < 4; j++) hit |= q == full_victims[j];
            misses += !hit;
            memset(q, 7, FULL_BS);
            for (int i = 0; i < FULL_N; i++) if (!full_blocks[i]) { full_blocks[i] = q; break; }
        }
    }
    CHECK_EQ(misses, 0);
    for (int i = 0; i < FULL_N; i++) {
        for (int k = 0; k < FULL_BS; k++) if (((unsigned char *)full_blocks[i])[k] != 7) { bad++; break; }
        hk_free(full_blocks[i]);
    }
    CHECK_EQ(bad, 0);
}

/* The same in a heap of many segments, where collect_full walks them only
 * once a remote free into a full page per 4 segments waits (full_walk_due
 * in page.c): the blocks that wait are still taken before the heap takes
 * a fresh span. 80 KiB blocks (a 2-page span each, past every cache) fill
 * a dozen segments, all their spans full; another thread frees one, then
 * three; the owner's next mallocs of the class take no span (the spans in
 * use stay as many), and every block taken is one of those freed. */
enum { WALK_BS = 80 * 1024, WALK_N = 400 };
static unsigned char *walk_blocks[WALK_N];
static unsigned char *walk_victims[3];
static int walk_nvict, walk_bad, walk_hits, walk_grew;

static void *walk_freer(void *arg)
{
    (void)arg;
    void *mine = hk_malloc(16);            /* a heap of its own: these frees are remote */
    for (int k = 0; k < walk_nvict; k++) hk_free(walk_victims[k]);
    hk_free(mine);
    return NULL;
}

static void *walk_owner(void *arg)
{
    (void)arg;
    for (int i = 0; i < WALK_N; i++) {
        walk_blocks[i] = hk_malloc(WALK_BS);
        if (!walk_blocks[i]) { walk_bad++; return NULL; }
        memset(walk_blocks[i], 5, 64);
    }
    for (int round = 0; round < 2; round++) {
        walk_nvict = round == 0 ? 1 : 3;
        for (int k = 0; k < walk_nvict; k++) {
            int i = 7 + 101 * k + round * 50;
            walk_victims[k] = walk_blocks[i];
            walk_blocks[i] = NULL;
        }
        hk_stats_t before, after;
        hk_stats_get(&before);
        if (!t_in_thread(walk_freer, NULL)) walk_bad++;
        for (int k = 0; k < walk_nvict; k++) {
            unsigned char *q = hk_malloc(WALK_BS);
            if (!q) { walk_bad++; continue; }
            for (int j = 0; j < walk_nvict; j++) walk_hits += q == walk_victims[j];
            memset(q, 5, 64);
            for (int i = 0; i < WALK_N; i++) if (!walk_blocks[i]) { walk_blocks[i] = q; break; }
        }
        hk_stats_get(&after);
        walk_grew += after.pages != before.pages;
    }
    if (hk_check() != 0) walk_bad++;
    for (int i = 0; i < WALK_N; i++) {
        if (walk_blocks[i][0] != 5 || walk_blocks[i][63] != 5) walk_bad++;
        hk_free(walk_blocks[i]);
    }
    return NULL;
}

static void test_full_walk_paced(void)
{
    REQUIRE(t_in_thread(walk_owner, NULL));
    CHECK_EQ(walk_bad, 0);
    CHECK_EQ(walk_grew, 0);
    CHECK_EQ(walk_hits, 4);
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
    REQUIRE(t_in_thread(small_freer, NULL));
    CHECK_EQ(bad, 0);
    hk_collect(1);
}

/* Three threads in a ring: each allocates blocks of 16-200 bytes, writes
 * them, hands them to the next thread, and checks and frees what the
 * previous one handed it, so every block is freed by a thread that did not
 * allocate it and most are taken from a cache and handed on again (small
 * ones too, once the consumer has freed enough of them). Every byte of a
 * block is checked: a block handed out twice, or reused while cached,
 * shows as a wrong pattern. Under ThreadSanitizer too (label threads). */
enum { RING_T = 3, RING_Q = 256, RING_N = 30000 };
static struct ring_q { pthread_mutex_t mu; unsigned char *p[RING_Q]; unsigned head, tail; } rq[RING_T];
static int ring_bad;

static size_t ring_len(unsigned t, unsigned i) { return 16 + (i * 29 + t * 7) % 185; }

static int ring_put(struct ring_q *q, unsigned char *p)
{
    pthread_mutex_lock(&q->mu);
    int ok = q->head - q->tail < RING_Q;
    if (ok) q->p[q->head++ % RING_Q] = p;
    pthread_mutex_unlock(&q->mu);
    return ok;
}

static unsigned char *ring_take(struct ring_q *q)
{
    pthread_mutex_lock(&q->mu);
    unsigned char *p = q->head != q->tail ? q->p[q->tail++ % RING_Q] : NULL;
    pthread_mutex_unlock(&q->mu);
    return p;
}

static int ring_eat(unsigned me)
{
    unsigned char *p = ring_take(&rq[me]);
    if (!p) return 0;
    unsigned from = p[0], i = (unsigned)p[1] | (unsigned)p[2] << 8 | (unsigned)p[3] << 16;
    size_t n = ring_len(from, i);
    int bad = from != (me + RING_T - 1) % RING_T;
    for (size_t k = 4; k < n; k++) bad |= p[k] != (unsigned char)(i + k);
    if (bad) __atomic_fetch_add(&ring_bad, 1, __ATOMIC_RELAXED);
    hk_free(p);
    return 1;
}

static void *ring_thread(void *arg)
{
    unsigned me = (unsigned)(uintptr_t)arg, eaten = 0;
    struct ring_q *next = &rq[(me + 1) % RING_T];
    for (unsigned i = 0; i < RING_N; i++) {
        size_t n = ring_len(me, i);
        unsigned char *p = hk_malloc(n);
        if (!p) { __atomic_fetch_add(&ring_bad, 1, __ATOMIC_RELAXED); break; }
        p[0] = (unsigned char)me; p[1] = (unsigned char)i; p[2] = (unsigned char)(i >> 8); p[3] = (unsigned char)(i >> 16);
        for (size_t k = 4; k < n; k++) p[k] = (unsigned char)(i + k);
        while (!ring_put(next, p)) eaten += (unsigned)ring_eat(me);
        eaten += (unsigned)ring_eat(me);
    }
    while (eaten < RING_N) eaten += (unsigned)ring_eat(me);
    return NULL;
}

static void test_ring(void)
{
    pthread_t th[RING_T];
    for (unsigned t = 0; t < RING_T; t++) { pthread_mutex_init(&rq[t].mu, NULL); rq[t].head = rq[t].tail = 0; }
    for (unsigned t = 0; t < RING_T; t++) pthread_create(&th[t], NULL, ring_thread, (void *)(uintptr_t)t);
    for (unsigned t = 0; t < RING_T; t++) pthread_join(th[t], NULL);
    CHECK_EQ(ring_bad, 0);
    for (unsigned t = 0; t < RING_T; t++) CHECK_EQ(rq[t].head, rq[t].tail);
}

/* A thread that frees enough of another live thread's blocks to fill a
 * class of its cache turns its heap mixed: its own frees of classes up to
 * 1 KiB go to the cache as well. The owner keeps running while they are
 * freed (a parked or abandoned owner's blocks take the slow way), then the
 * scenario runs on the mixed thread. */
enum { MIX_N = 200, MIX_OWN = 4000 };
static void *mix_blocks[MIX_N];
static pthread_barrier_t mix_made, mix_freed;

static void *mix_owner(void *arg)
{
    (void)arg;
    for (int i = 0; i < MIX_N; i++) mix_blocks[i] = hk_malloc(128);
    pthread_barrier_wait(&mix_made);
    pthread_barrier_wait(&mix_freed);
    return NULL;
}

static void (*mix_scenario)(void);

static void *mix_worker(void *arg)
{
    (void)arg;
    pthread_t owner;
    pthread_barrier_init(&mix_made, NULL, 2);
    pthread_barrier_init(&mix_freed, NULL, 2);
    pthread_create(&owner, NULL, mix_owner, NULL);
    pthread_barrier_wait(&mix_made);
    void *mine = hk_malloc(4000);            /* a heap of its own */
    for (int i = 0; i < MIX_N; i++) hk_free(mix_blocks[i]);   /* 200 > 32 cached: the class fills */
    pthread_barrier_wait(&mix_freed);
    pthread_join(owner, NULL);
    mix_scenario();
    hk_free(mine);
    return NULL;
}

static void run_mixed(void (*scenario)(void))
{
    mix_scenario = scenario;
    REQUIRE(t_in_thread(mix_worker, NULL));
}

static void own_double_free(void)
{
    void *x = hk_malloc(256);
    hk_free(x);                              /* into the cache: the heap is mixed */
    hk_free(x);
}
static void own_double_free_mixed(void *arg) { (void)arg; run_mixed(own_double_free); }

static int mix_bad;
static hk_stats_t mix_st[3];

static void own_blocks_go_back(void)
{
    static unsigned char *v[MIX_OWN];
    hk_collect(1);
    hk_stats_get(&mix_st[0]);
    for (int i = 0; i < MIX_OWN; i++) { v[i] = hk_malloc(256); memset(v[i], (unsigned char)i, 256); }
    hk_stats_get(&mix_st[1]);
    /* Free and reallocate half by turns: own blocks through the cache. */
    for (int i = 0; i < MIX_OWN; i += 2) { hk_free(v[i]); v[i] = hk_malloc(256); memset(v[i], (unsigned char)i, 256); }
    for (int i = 0; i < MIX_OWN; i++)
        for (int k = 0; k < 256; k++) if (v[i][k] != (unsigned char)i) { mix_bad++; break; }
    for (int i = 0; i < MIX_OWN; i++) hk_free(v[i]);
    hk_collect(1);
    hk_stats_get(&mix_st[2]);
}

static void test_mixed_heap(void)
{
    CHECK(t_expect_death(own_double_free_mixed, NULL, SIGABRT, "double free"));
    run_mixed(own_blocks_go_back);
    fprintf(stderr, "  mixed heap: committed %llu KiB, %llu with %d blocks of 256, %llu after they were freed\n",
            (unsigned long long)mix_st[0].committed >> 10, (unsigned long long)mix_st[1].committed >> 10, MIX_OWN,
            (unsigned long long)mix_st[2].committed >> 10);
    CHECK_EQ(mix_bad, 0);
    CHECK(mix_st[1].committed >= mix_st[0].committed + (size_t)MIX_OWN * 256 * 3 / 4);
    CHECK(mix_st[2].committed + (size_t)MIX_OWN * 256 * 3 / 4 <= mix_st[1].committed);
}

/* A thread's own frees into its full pages (classes up to 1 KiB) go to
 * its block cache, not back onto the page: the page stays on the full
 * list, and the next malloc of the class hands the block out again, ahead
 * of the page the class is carving. On the old way the page went to the
 * back of the class's queue and the next malloc came from the free list
 * of the page at its head. A second free of such a cached block is caught. */
enum { FULLP_N = 600 };   /* blocks of 256 B: two full 64 KiB pages and part of a third */
static int fullp_bad, fullp_reused;

static void *fullp_worker(void *arg)
{
    (void)arg;
    static unsigned char *v[FULLP_N];
    for (int i = 0; i < FULLP_N; i++) { v[i] = hk_malloc(256); if (!v[i]) { fullp_bad++; return NULL; } memset(v[i], 0x3c, 256); }
    /* v[10] and v[20] sit in the first page, full since the second was
     * carved; v[FULLP_N - 1] in the page being carved, at the head of the
     * class's queue, whose free list it starts. */
    hk_free(v[FULLP_N - 1]);
    hk_free(v[10]);
    hk_free(v[20]);
    unsigned char *a = hk_malloc(256), *b = hk_malloc(256), *c = hk_malloc(256);
    fullp_reused = (a == v[20]) + (b == v[10]) + (c == v[FULLP_N - 1]);
    v[20] = a; v[10] = b; v[FULLP_N - 1] = c;
    for (int i = 0; i < FULLP_N; i++) {
        if (i != 10 && i != 20 && i != FULLP_N - 1 && v[i][0] != 0x3c) fullp_bad++;
        hk_free(v[i]);
    }
    return NULL;
}

static void fullp_double(void *arg)
{
    (void)arg;
    static unsigned char *v[FULLP_N];
    for (int i = 0; i < FULLP_N; i++) v[i] = hk_malloc(256);
    hk_free(v[5]);                         /* into the cache: its page is full */
    hk_free(v[5]);
}
static void *fullp_double_thread(void *arg) { fullp_double(arg); return NULL; }
static void fullp_double_run(void *arg)
{
    (void)t_in_thread(fullp_double_thread, arg);   /* a thread that never ran aborts nothing: t_expect_death fails */
}

static void test_own_full_page(void)
{
    REQUIRE(t_in_thread(fullp_worker, NULL));
    CHECK_EQ(fullp_bad, 0);
    CHECK_EQ(fullp_reused, 3);
    CHECK(t_expect_death(fullp_double_run, NULL, SIGABRT, "double free"));
}

/* The big-block cache (blocks over 8 KiB up to 64 KiB). A thread frees
 * BIG_N blocks of 20 KiB, its own and as many of another thread's, and
 * mallocs as many again: every one is a block it just freed (the class's
 * bound grew with its 2 * BIG_N earlier mallocs, which found it empty),
 * payloads intact. A
 * second free of a cached block is caught. Then frees that nobody mallocs
 * again: the bound comes down and the blocks go to their pages. */
enum { BIG_N = 8, BIG = 20 * 1024, BIG_MANY = 200, BIG_LONE = 48 * 1024 };
static unsigned char *big_theirs[BIG_N];
static int big_reused, big_bad;
static hk_stats_t big_st[4];

static void *big_worker(void *arg)
{
    (void)arg;
    unsigned char *mine[2 * BIG_N], *got[2 * BIG_N];
    for (int i = 0; i < 2 * BIG_N; i++) { mine[i] = hk_malloc(BIG); if (!mine[i]) { big_bad++; return NULL; } memset(mine[i], 1, BIG); }
    for (int i = 0; i < BIG_N; i++) { hk_free(mine[i]); hk_free(big_theirs[i]); }
    for (int i = 0; i < 2 * BIG_N; i++) {
        got[i] = hk_malloc(BIG);
        if (!got[i]) { big_bad++; continue; }
        for (int k = 0; k < BIG_N; k++) big_reused += got[i] == mine[k] || got[i] == big_theirs[k];
        memset(got[i], 0x6b, BIG);
    }
    for (int i = 0; i < 2 * BIG_N; i++) {
        for (size_t k = 0; k < BIG; k += 512) if (got[i] && got[i][k] != 0x6b) { big_bad++; break; }
        hk_free(got[i]);
    }
    for (int i = BIG_N; i < 2 * BIG_N; i++) hk_free(mine[i]);
    /* Many blocks of one class freed, none asked for again. */
    static unsigned char *many[BIG_MANY];
    hk_collect(1);
    hk_stats_get(&big_st[0]);
    for (int i = 0; i < BIG_MANY; i++) { many[i] = hk_malloc(BIG_LONE); if (!many[i]) { big_bad++; return NULL; } many[i][0] = 1; }
    hk_stats_get(&big_st[1]);
    for (int i = 0; i < BIG_MANY; i++) hk_free(many[i]);
    hk_stats_get(&big_st[2]);
    /* With HEAPKIT_BIG_CACHE at 0 nothing is kept: every freed block's
     * page goes back at once, however many mallocs found the class empty. */
    long was = hk_option_get(HK_OPTION_BIG_CACHE);
    if (hk_option_set(HK_OPTION_BIG_CACHE, 0) != 0) big_bad++;
    for (int i = 0; i < BIG_N; i++) { mine[i] = hk_malloc(BIG_LONE); if (!mine[i]) big_bad++; }
    for (int i = 0; i < BIG_N; i++) hk_free(mine[i]);
    hk_stats_get(&big_st[3]);
    if (hk_option_set(HK_OPTION_BIG_CACHE, was) != 0) big_bad++;
    if (hk_option_set(HK_OPTION_BIG_CACHE, 65) != EINVAL) big_bad++;
    return NULL;
}

static void big_double_free(void *arg)
{
    (void)arg;
    void *keep[4], *x;
    for (int i = 0; i < 4; i++) keep[i] = hk_malloc(BIG);   /* misses: the class keeps blocks */
    for (int i = 0; i < 4; i++) hk_free(keep[i]);
    x = hk_malloc(BIG);
    hk_free(x);                                            /* into the cache */
    hk_free(x);
}

static void test_big_cache(void)
{
    for (int i = 0; i < BIG_N; i++) { big_theirs[i] = hk_malloc(BIG); REQUIRE(big_theirs[i]); memset(big_theirs[i], 2, BIG); }
    REQUIRE(t_in_thread(big_worker, NULL));
    fprintf(stderr, "  big-block cache: %d of %d mallocs reused a freed block; pages %llu before, %llu with %d blocks "
            "of 48 KiB, %llu after they were freed, %llu after %d more with the cache off\n", big_reused, 2 * BIG_N,
            (unsigned long long)big_st[0].pages, (unsigned long long)big_st[1].pages, BIG_MANY,
            (unsigned long long)big_st[2].pages, (unsigned long long)big_st[3].pages, BIG_N);
    CHECK_EQ(big_bad, 0);
    CHECK_EQ(big_reused, 2 * BIG_N);
    CHECK(big_st[1].pages >= big_st[0].pages + BIG_MANY);
    CHECK(big_st[2].pages <= big_st[0].pages + 2);          /* at most one block left cached */
    CHECK(big_st[3].pages <= big_st[2].pages + 1);          /* cache off: the pages went back */
    CHECK(t_expect_death(big_double_free, NULL, SIGABRT, "double free"));
}

/* A purge that comes due while the big-block cache sends blocks home: 36
 * blocks of 20 KiB (their misses open the class's bound to its most, 32);
 * 35 freed: 32 into the cache, 3 finding it at its bound; the delay waited
 * out with no malloc; then the 36th freed: the class at its bound a
 * fourth time, the bound comes down and one block goes home, and the
 * purge that came due runs at the end of that flush and empties the
 * class. The cache's byte count must come out exact (it was taken down
 * twice for the purge's blocks: by the purge, and again by the flush that
 * ran it). */
enum { FLUSH_N = 36, FLUSH_SIZE = 20 << 10 };
static size_t flush_bad;

static void *flush_purge_worker(void *arg)
{
    (void)arg;
    void *v[FLUSH_N];
    for (int i = 0; i < FLUSH_N; i++) if (!(v[i] = hk_malloc(FLUSH_SIZE))) flush_bad++;
    if (flush_bad) return NULL;
    for (int i = 0; i < FLUSH_N - 1; i++) hk_free(v[i]);
    flush_bad += hk_check();
    t_sleep_ms(3 * hk_option_get(HK_OPTION_PURGE_DELAY));
    hk_free(v[FLUSH_N - 1]);
    flush_bad += hk_check();
    hk_collect(1);
    flush_bad += hk_check();
    return NULL;
}

static void test_big_flush_meets_purge(void)
{
    REQUIRE(t_in_thread(flush_purge_worker, NULL));
    CHECK_EQ(flush_bad, 0);
}

/* A purge closes a big class that did not change since the purge before
 * (the same count and top block), and its blocks go home; one that
 * changed keeps them. hk_option_set of the purge delay runs a purge of
 * the calling thread's heap (not forced). Eight blocks of 48 KiB (one a
 * 64 KiB page): their misses open the bound to 8, their frees fill it. */
enum { IDLE_N = 8, IDLE_SIZE = 48 << 10 };
static int idle_bad;
static unsigned long long idle_pages[4];

static void idle_purge(void)
{
    if (hk_option_set(HK_OPTION_PURGE_DELAY, hk_option_get(HK_OPTION_PURGE_DELAY)) != 0) idle_bad++;
}

static unsigned long long idle_pages_now(void)
{
    hk_stats_t st;
    hk_stats_get(&st);
    return (unsigned long long)st.pages;
}

static void *idle_worker(void *arg)
{
    (void)arg;
    void *v[IDLE_N];
    for (int i = 0; i < IDLE_N; i++) if (!(v[i] = hk_malloc(IDLE_SIZE))) { idle_bad++; return NULL; }
    for (int i = 0; i < IDLE_N; i++) hk_free(v[i]);
    idle_pages[0] = idle_pages_now();
    idle_purge();                          /* the class changed since the last purge: kept */
    void *one = hk_malloc(IDLE_SIZE);      /* a cached block: the count changes */
    if (!one) idle_bad++;
    idle_purge();                          /* changed again: kept */
    idle_pages[1] = idle_pages_now();
    idle_purge();                          /* unchanged: home, the bound closed */
    idle_pages[2] = idle_pages_now();
    idle_bad += hk_check() != 0;
    /* Closed: the next free of the class goes to its page. */
    hk_free(one);
    idle_pages[3] = idle_pages_now();
    idle_bad += hk_check() != 0;
    return NULL;
}

static void test_big_idle_close(void)
{
    REQUIRE(t_in_thread(idle_worker, NULL));
    fprintf(stderr, "  big-block cache: pages %llu with %d blocks cached, %llu after a purge that saw the class in use, "
            "%llu after one that saw it idle, %llu after one more free\n", idle_pages[0], IDLE_N, idle_pages[1],
            idle_pages[2], idle_pages[3]);
    CHECK_EQ(idle_bad, 0);
    CHECK_EQ(idle_pages[1], idle_pages[0]);
    CHECK(idle_pages[2] + IDLE_N - 3 <= idle_pages[1]);    /* 7 blocks home: their pages go (one may stay kept) */
    CHECK(idle_pages[3] <= idle_pages[2]);
}

/* The bounds of a thread's big classes add up to HEAPKIT_BIG_CACHE MiB at
 * most: 64 blocks of 60 KiB (the 64 KiB class) freed with the budget at 1
 * MiB leave at most 16 cached. A budget lowered by another thread closes
 * the classes at this thread's next miss: 32 blocks of 20 KiB cached,
 * the budget set to 0 elsewhere, one malloc of 48 KiB, and the 32 go home. */
enum { BUD_N = 64, BUD_SIZE = 60 << 10, BUD_SMALL = 20 << 10, BUD_SMALL_N = 32 };
static int bud_bad;
static unsigned long long bud_pages[5];

static void *bud_setter(void *arg)
{
    if (hk_option_set(HK_OPTION_BIG_CACHE, (long)(intptr_t)arg) != 0) bud_bad++;
    return NULL;
}

static void *bud_worker(void *arg)
{
    (void)arg;
    static void *v[BUD_N];
    if (hk_option_set(HK_OPTION_BIG_CACHE, 1) != 0) bud_bad++;
    bud_pages[0] = idle_pages_now();
    for (int i = 0; i < BUD_N; i++) if (!(v[i] = hk_malloc(BUD_SIZE))) { bud_bad++; return NULL; }
    for (int i = 0; i < BUD_N; i++) hk_free(v[i]);
    bud_pages[1] = idle_pages_now();
    bud_bad += hk_check() != 0;
    if (hk_option_set(HK_OPTION_BIG_CACHE, 16) != 0) bud_bad++;    /* empties this thread's caches */
    for (int i = 0; i < BUD_SMALL_N; i++) if (!(v[i] = hk_malloc(BUD_SMALL))) { bud_bad++; return NULL; }
    for (int i = 0; i < BUD_SMALL_N; i++) hk_free(v[i]);
    bud_pages[2] = idle_pages_now();
    if (!t_in_thread(bud_setter, (void *)(intptr_t)0)) bud_bad++;
    bud_pages[3] = idle_pages_now();                                /* another thread's setting: nothing here yet */
    void *x = hk_malloc(IDLE_SIZE);                                 /* a miss */
    if (!x) bud_bad++;
    bud_pages[4] = idle_pages_now();
    bud_bad += hk_check() != 0;
    hk_free(x);
    if (!t_in_thread(bud_setter, (void *)(intptr_t)16)) bud_bad++;
    return NULL;
}

static void test_big_budget(void)
{
    REQUIRE(t_in_thread(bud_worker, NULL));
    fprintf(stderr, "  big-block cache budget: pages %llu, %llu after %d blocks of 60 KiB freed under 1 MiB; "
            "%llu with %d blocks of 20 KiB cached, %llu after the budget went to 0 elsewhere, %llu after the next miss\n",
            bud_pages[0], bud_pages[1], BUD_N, bud_pages[2], BUD_SMALL_N, bud_pages[3], bud_pages[4]);
    CHECK_EQ(bud_bad, 0);
    CHECK(bud_pages[1] <= bud_pages[0] + 16 + 1);           /* at most 16 blocks (1 MiB) kept their pages */
    CHECK_EQ(bud_pages[3], bud_pages[2]);
    CHECK(bud_pages[4] + 8 <= bud_pages[3]);                /* 32 blocks, three a page, went home */
}

/* The bounds of all threads' big-block caches add up to
 * HEAPKIT_BIG_CACHE_TOTAL MiB at most: with it at 1 MiB, thread A opens
 * its 20 KiB class to 32 blocks (640 KiB) and keeps them cached while
 * thread B, doing the same, can open its own only as far as the total
 * leaves room; B's exit closes its bounds, A's exit A's. The totals are
 * relative to the main thread's own bounds (earlier tests opened some). */
enum { TOT_N = 32, TOT_SIZE = 20 << 10 };
static sem_t tot_a_ready, tot_b_done;
static int tot_bad;
static size_t tot_base, tot_a, tot_b, tot_after_b, tot_after_a;

static void tot_churn(void)
{
    void *v[TOT_N];
    for (int i = 0; i < TOT_N; i++) if (!(v[i] = hk_malloc(TOT_SIZE))) tot_bad++;
    for (int i = 0; i < TOT_N; i++) hk_free(v[i]);
    tot_bad += hk_check() != 0;
}

static void *tot_worker_a(void *arg)
{
    (void)arg;
    tot_churn();
    tot_a = hk__xbig_total();
    sem_post(&tot_a_ready);
    while (sem_wait(&tot_b_done) != 0) {}
    tot_after_b = hk__xbig_total();
    return NULL;
}

static void *tot_worker_b(void *arg)
{
    (void)arg;
    tot_churn();
    tot_b = hk__xbig_total();
    return NULL;
}

static void test_big_total(void)
{
    long was = hk_option_get(HK_OPTION_BIG_CACHE_TOTAL);
    REQUIRE(hk_option_set(HK_OPTION_BIG_CACHE_TOTAL, 1) == 0);
    CHECK_EQ(hk_option_set(HK_OPTION_BIG_CACHE_TOTAL, 65537), EINVAL);
    REQUIRE(sem_init(&tot_a_ready, 0, 0) == 0 && sem_init(&tot_b_done, 0, 0) == 0);
    tot_base = hk__xbig_total();
    pthread_t a;
    REQUIRE(pthread_create(&a, NULL, tot_worker_a, NULL) == 0);
    while (sem_wait(&tot_a_ready) != 0) {}
    CHECK(t_in_thread(tot_worker_b, NULL));
    sem_post(&tot_b_done);
    pthread_join(a, NULL);
    tot_after_a = hk__xbig_total();
    fprintf(stderr, "  big-block caches' bound bytes with a total of 1 MiB: %zu of the main thread's, %zu with A's, "
            "%zu with B's too, %zu after B exited, %zu after A exited\n", tot_base, tot_a, tot_b, tot_after_b, tot_after_a);
    CHECK_EQ(tot_bad, 0);
    size_t one = TOT_SIZE;                                 /* the class of 20 KiB blocks is exactly that */
    CHECK(tot_a >= tot_base + TOT_N * one);                /* A opened its class fully */
    CHECK(tot_b <= (size_t)1 << 20);                       /* never over the total */
    CHECK(tot_b < tot_a + TOT_N * one);                    /* B could not */
    CHECK(tot_b > tot_a);                                  /* but some */
    CHECK_EQ(tot_after_b, tot_a);
    CHECK_EQ(tot_after_a, tot_base);
    CHECK_EQ(hk_option_set(HK_OPTION_BIG_CACHE_TOTAL, was), 0);
}

/* Threads in generations swap blocks of 10-64 KiB through a shared table
 * (each block carries its size and a pattern, checked before it is freed),
 * so the big-block caches hold other threads' blocks, also of threads that
 * have exited (their heaps parked or abandoned). Fixed seeds. Afterwards
 * every block is back: the pages in use return to what they were. */
enum { CHURN_SLOTS = 256, CHURN_GENS = 4, CHURN_THREADS = 3, CHURN_OPS = 4000 };

/* gens generations of n threads (n <= 8) running fn, one after another,
 * thread i of generation g given the seed g * n + i + 1; false if one
 * did not start. */
static bool run_generations(int gens, int n, void *(*fn)(void *))
{
    for (int g = 0; g < gens; g++) {
        pthread_t t[8];
        int started = 0;
        for (int i = 0; i < n && i < 8; i++, started++)
            if (pthread_create(&t[i], NULL, fn, (void *)(uintptr_t)(g * n + i + 1)) != 0) break;
        for (int i = 0; i < started; i++) pthread_join(t[i], NULL);
        if (started != n) return false;
    }
    return true;
}
static unsigned char *_Atomic churn_slot[CHURN_SLOTS];
static int _Atomic churn_bad;

static size_t churn_size(uint64_t *s)
{
    return 10 * 1024 + 16 + (size_t)(t_rand(s) % (54 * 1024 - 16));   /* 10 KiB + 16 .. 64 KiB */
}

static void churn_check_free(unsigned char *p)
{
    if (!p) return;
    size_t n;
    memcpy(&n, p, sizeof n);
    if (n < 10 * 1024 || n > 64 * 1024 || p[n - 1] != (unsigned char)n || p[sizeof n] != (unsigned char)(n >> 8))
        atomic_fetch_add(&churn_bad, 1);
    hk_free(p);
}

static void *churn_worker(void *arg)
{
    uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(uintptr_t)arg + 1;
    for (int i = 0; i < CHURN_OPS; i++) {
        size_t n = churn_size(&s);
        unsigned char *p = hk_malloc(n);
        if (!p) { atomic_fetch_add(&churn_bad, 1); continue; }
        memcpy(p, &n, sizeof n);
        p[sizeof n] = (unsigned char)(n >> 8);
        p[n - 1] = (unsigned char)n;
        churn_check_free(atomic_exchange(&churn_slot[s % CHURN_SLOTS], p));
    }
    /* Its big-block cache full of other threads' blocks, while they go on. */
    if (hk_check() != 0) atomic_fetch_add(&churn_bad, 1);
    return NULL;
}

static void test_big_cache_churn(void)
{
    hk_collect(1);
    hk_stats_t before, after;
    hk_stats_get(&before);
    REQUIRE(run_generations(CHURN_GENS, CHURN_THREADS, churn_worker));
    for (int k = 0; k < CHURN_SLOTS; k++) churn_check_free(atomic_exchange(&churn_slot[k], NULL));
    /* Heaps of exited threads wait parked for at most the purge delay. */
    t_sleep_ms(50);
    hk_collect(1);
    CHECK_EQ(hk_check(), 0);
    hk_stats_get(&after);
    fprintf(stderr, "  %d generations of %d threads, %d swaps each: %d bad blocks; pages %llu before, %llu after\n",
            CHURN_GENS, CHURN_THREADS, CHURN_OPS, atomic_load(&churn_bad), (unsigned long long)before.pages,
            (unsigned long long)after.pages);
    CHECK_EQ(atomic_load(&churn_bad), 0);
    CHECK(after.pages <= before.pages + 1);
}

/* Big blocks (and some small) through a shared table while threads change
 * the cache's options under each other (per-thread budget 0-16 MiB, total
 * 0-39 MiB, purge delay 0/5/10 ms) and collect: every block's size and
 * last byte intact, every heap's hk_check clean at each change and at
 * exit. Generations of 4 threads, fixed seeds. */
enum { OPT_SLOTS = 512, OPT_GENS = 4, OPT_THREADS = 4, OPT_OPS = 20000 };
static unsigned char *_Atomic opt_slot[OPT_SLOTS];
static atomic_int opt_bad;

static void opt_put(unsigned char *p)
{
    if (!p) return;
    size_t n;
    memcpy(&n, p, sizeof n);
    if (n < 16 || n > 70000 || p[n - 1] != (unsigned char)n) atomic_fetch_add(&opt_bad, 1);
    hk_free(p);
}

static void *opt_worker(void *arg)
{
    uint64_t s = (uint64_t)(uintptr_t)arg * 2654435761u + 1;
    for (int i = 0; i < OPT_OPS; i++) {
        uint64_t r = t_rand(&s);
        size_t n = (r & 7) ? 6000 + (size_t)(r >> 8) % 60000 : 16 + (size_t)(r >> 8) % 4000;
        unsigned char *p = hk_malloc(n);
        if (!p) { atomic_fetch_add(&opt_bad, 1); continue; }
        memcpy(p, &n, sizeof n);
        p[n - 1] = (unsigned char)n;
        if (r % 3 == 0) opt_put(p);
        else opt_put(atomic_exchange(&opt_slot[(r >> 20) % OPT_SLOTS], p));
        if (i % 2500 == 2499) {
            switch ((r >> 40) % 4) {
            case 0: hk_option_set(HK_OPTION_BIG_CACHE, (long)((r >> 44) % 17)); break;
            case 1: hk_option_set(HK_OPTION_BIG_CACHE_TOTAL, (long)((r >> 44) % 40)); break;
            case 2: hk_option_set(HK_OPTION_PURGE_DELAY, (long)((r >> 44) % 3) * 5); break;
            default: hk_collect((int)((r >> 44) & 1)); break;
            }
            if (hk_check() != 0) atomic_fetch_add(&opt_bad, 1);
        }
    }
    if (hk_check() != 0) atomic_fetch_add(&opt_bad, 1);
    return NULL;
}

static void test_big_options_stress(void)
{
    long big = hk_option_get(HK_OPTION_BIG_CACHE), total = hk_option_get(HK_OPTION_BIG_CACHE_TOTAL);
    long delay = hk_option_get(HK_OPTION_PURGE_DELAY);
    REQUIRE(run_generations(OPT_GENS, OPT_THREADS, opt_worker));
    for (int k = 0; k < OPT_SLOTS; k++) opt_put(atomic_exchange(&opt_slot[k], NULL));
    CHECK_EQ(hk_option_set(HK_OPTION_BIG_CACHE, big), 0);
    CHECK_EQ(hk_option_set(HK_OPTION_BIG_CACHE_TOTAL, total), 0);
    CHECK_EQ(hk_option_set(HK_OPTION_PURGE_DELAY, delay), 0);
    hk_collect(1);
    CHECK_EQ(hk_check(), 0);
    CHECK_EQ(atomic_load(&opt_bad), 0);
}

int main(void)
{
    RUN(test_own_full_page);   /* first: later threads may reuse a parked heap that turned mixed */
    RUN(test_big_cache);
    RUN(test_big_cache_churn);
    RUN(test_big_flush_meets_purge);
    RUN(test_big_idle_close);
    RUN(test_big_budget);
    RUN(test_big_total);
    RUN(test_big_options_stress);
    RUN(test_small_foreign_blocks);
    RUN(test_ring);
    RUN(test_reuse);
    RUN(test_full_page_circulates);
    RUN(test_full_pages_take_remote_frees);
    RUN(test_full_walk_paced);
    RUN(test_flush_home);
    RUN(test_chains_home);
    RUN(test_owner_exits);
    RUN(test_mixed_heap);
    return t_finish();
}
