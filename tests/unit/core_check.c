/* hk_check, the general allocator's invariant check: it finds nothing
 * wrong in heaps that a fixed-seed load of every kind of block left behind
 * (small and multi-page spans, big-block and foreign-block caches, aligned
 * blocks, realloc, frees from another thread, collects), in the main
 * thread's heap and in a worker's; and it finds each kind of damage a test
 * can do to a heap without crashing it (a free block written after its
 * free, a wild free-list link, a cached block written after its free),
 * reports it, and finds nothing once it is undone. Also the heap's
 * segment lists (free pages resident, free pages purged) through a heap of
 * a dozen segments that frees whole segments, purges and grows again. */
#include "test.h"
#include "gate.h"
#include "heapkit.h"
#include "core/core.h"
#include <pthread.h>
#include <string.h>

static size_t check_quiet(void)
{
    /* A clean heap writes nothing; a damaged one describes the damage. */
    return hk_check();
}

static char g_out[2048];
static size_t g_found;
static void run_check(void) { g_found = hk_check(); }

/* hk_check on the damaged heap: the count and what it wrote. */
static size_t check_reported(const char *needle)
{
    g_found = 0;
    t_capture_stderr(run_check, g_out, sizeof g_out);
    if (!strstr(g_out, needle)) fprintf(stderr, "  hk_check said: %s\n", g_out);
    return strstr(g_out, needle) ? g_found : 0;
}

static void test_finds_damage(void)
{
    /* A free block on its page's list: its tag, then its link. */
    void *keep = hk_malloc(48);
    void *p = hk_malloc(48), *q = hk_malloc(48);
    REQUIRE(keep && p && q);
    hk_free(q);
    hk_free(p);                        /* p heads the page's list, q after it */
    CHECK_EQ(check_quiet(), 0);
    uintptr_t *w = p, saved = w[1];
    w[1] = 0;                          /* a write after free over the tag */
    CHECK(check_reported("lost its tag") >= 1);
    w[1] = saved;
    CHECK_EQ(check_quiet(), 0);
    saved = w[0];
    w[0] = (uintptr_t)keep + 8;        /* a link into the middle of a live block */
    CHECK(check_reported("links to a block the page has not carved") >= 1);
    w[0] = 0x10;                       /* and a wild one: reported, not followed */
    CHECK(check_reported("links to a block the page has not carved") >= 1);
    w[0] = saved;
    CHECK_EQ(check_quiet(), 0);
    hk_free(keep);

    /* A block in the big-block cache: two misses open the class's bound
     * to two, so the free of one of two 20 KiB blocks is cached. */
    void *a = hk_malloc(20 << 10), *b = hk_malloc(20 << 10);
    REQUIRE(a && b);
    hk_free(a);
    CHECK_EQ(check_quiet(), 0);
    uintptr_t *x = a;
    saved = x[1];
    x[1] = 0x5a5a;
    CHECK(check_reported("cached block lost its tag") >= 1);
    x[1] = saved;
    CHECK_EQ(check_quiet(), 0);
    hk_free(b);
    CHECK_EQ(check_quiet(), 0);

    /* The segment lists: a segment filed on the wrong one, and the
     * heap's count of pages in use off by one. */
    void *c = hk_malloc(100);
    REQUIRE(c != NULL);
    hk_segment_t *seg = hk__segment_of(c);
    uint8_t filed = seg->slist;
    seg->slist = filed == HK_SL_RES ? HK_SL_PUR : HK_SL_RES;
    CHECK(check_reported("filed on the wrong list") >= 1);
    seg->slist = filed;
    CHECK_EQ(check_quiet(), 0);
    hk__tls_heap->used_pages++;
    CHECK(check_reported("page count is not its segments' sum") >= 1);
    hk__tls_heap->used_pages--;
    hk__tls_heap->nsegs++;
    CHECK(check_reported("segment count disagrees with its list") >= 1);
    hk__tls_heap->nsegs--;
    CHECK_EQ(check_quiet(), 0);
    hk_free(c);
}

/* A heap of about a dozen segments of 4,000-byte blocks (first bytes
 * written): every third segment emptied and the rest half emptied, purges
 * past the delay (free pages go from resident to purged, empty segments
 * leave), the heap grown again over both kinds, then emptied; the segment
 * lists checked at every step. */
enum { SEGBLOCKS = 12000 };
static void *g_seg_blocks[SEGBLOCKS];
static size_t g_seg_bad;

static void *segment_worker(void *arg)
{
    (void)arg;
    for (unsigned i = 0; i < SEGBLOCKS; i++) {
        unsigned char *p = hk_malloc(4000);
        if (p) *p = (unsigned char)i;
        g_seg_blocks[i] = p;
    }
    g_seg_bad += hk_check();
    for (unsigned i = 0; i < SEGBLOCKS; i++) {
        uintptr_t segno = (uintptr_t)g_seg_blocks[i] >> HK_SEG_SHIFT;
        if (segno % 3 == 0 || i % 2) { hk_free(g_seg_blocks[i]); g_seg_blocks[i] = NULL; }
    }
    g_seg_bad += hk_check();
    for (int k = 0; k < 2; k++) {
        t_sleep_ms(3 * hk_option_get(HK_OPTION_PURGE_DELAY));
        hk_collect(0);
        g_seg_bad += hk_check();
    }
    for (unsigned i = 0; i < SEGBLOCKS; i++)
        if (!g_seg_blocks[i]) g_seg_blocks[i] = hk_malloc(i % 3 ? 4000 : 700);
    g_seg_bad += hk_check();
    for (unsigned i = 0; i < SEGBLOCKS; i++) { hk_free(g_seg_blocks[i]); g_seg_blocks[i] = NULL; }
    g_seg_bad += hk_check();
    hk_collect(1);
    g_seg_bad += hk_check();
    return NULL;
}

static void test_segment_lists(void)
{
    REQUIRE(t_in_thread(segment_worker, NULL));
    CHECK_EQ(g_seg_bad, 0);
}

/* A fixed-seed load: sizes from 1 byte to 192 KiB (log-uniform, so every
 * class range gets its share) and now and then a 3 MiB huge block, aligned
 * allocations, realloc up and down, with the heap checked along the way. */
enum { SLOTS = 1500 };
typedef struct { void *p[SLOTS]; size_t n[SLOTS]; } slots_t;

static size_t pick(uint64_t *s)
{
    unsigned e = (unsigned)(t_rand(s) % 18);       /* 1 B .. 256 KiB */
    size_t n = ((size_t)1 << e) + (size_t)(t_rand(s) & (((size_t)1 << e) - 1));
    if (t_rand(s) % 997 == 0) n = (size_t)3 << 20;
    return n;
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    p[n - 1] = (unsigned char)(seed >> 8);
    p[0] = (unsigned char)seed;
}

static int intact(const unsigned char *p, size_t n, unsigned seed)
{
    return p[0] == (unsigned char)seed && (n == 1 || p[n - 1] == (unsigned char)(seed >> 8));
}

static void churn(slots_t *sl, uint64_t *s, unsigned steps, size_t *damaged)
{
    for (unsigned i = 0; i < steps; i++) {
        unsigned k = (unsigned)(t_rand(s) % SLOTS);
        if (sl->p[k] && !intact(sl->p[k], sl->n[k], k)) ++*damaged;
        unsigned op = (unsigned)(t_rand(s) % 8);
        if (op == 0 && sl->p[k]) {
            size_t n = pick(s);
            void *r = hk_realloc(sl->p[k], n);
            if (!r) continue;
            sl->p[k] = r;
            sl->n[k] = n;
        } else {
            hk_free(sl->p[k]);
            size_t n = pick(s);
            sl->p[k] = op == 1 ? hk_aligned_alloc((size_t)64 << (t_rand(s) % 7), n) : hk_malloc(n);
            sl->n[k] = sl->p[k] ? n : 0;
            if (!sl->p[k]) continue;
        }
        fill(sl->p[k], sl->n[k], k);
    }
}

static slots_t g_main, g_worker;
static size_t g_worker_bad, g_worker_damaged;

/* Frees every other block of the main thread's (cross-thread frees: remote
 * lists, and its foreign-block and big-block caches), runs its own load,
 * and checks its heap. */
static void *worker(void *arg)
{
    (void)arg;
    uint64_t s = 77;
    for (unsigned k = 0; k < SLOTS; k += 2) { hk_free(g_main.p[k]); g_main.p[k] = NULL; }
    churn(&g_worker, &s, 20000, &g_worker_damaged);
    g_worker_bad += hk_check();
    hk_collect(0);
    g_worker_bad += hk_check();
    for (unsigned k = 0; k < SLOTS; k++) { hk_free(g_worker.p[k]); g_worker.p[k] = NULL; }
    g_worker_bad += hk_check();
    return NULL;
}

static void test_clean_under_load(void)
{
    uint64_t s = 2026;
    size_t damaged = 0;
    for (int round = 0; round < 4; round++) {
        churn(&g_main, &s, 50000, &damaged);
        CHECK_EQ(hk_check(), 0);
    }
    REQUIRE(t_in_thread(worker, NULL));
    CHECK_EQ(g_worker_bad, 0);
    CHECK_EQ(g_worker_damaged, 0);
    CHECK_EQ(hk_check(), 0);          /* remote frees still waiting count as blocks out */
    churn(&g_main, &s, 20000, &damaged);
    CHECK_EQ(hk_check(), 0);
    /* Nine blocks in ten go; purges past the delay give back free pages
     * and trim sparse ones (their free blocks leave the lists), and the
     * load that follows takes the trimmed memory back. */
    for (unsigned k = 0; k < SLOTS; k++)
        if (k % 10) { hk_free(g_main.p[k]); g_main.p[k] = NULL; }
    for (int i = 0; i < 3; i++) {
        t_sleep_ms(3 * hk_option_get(HK_OPTION_PURGE_DELAY));
        hk_collect(0);
        CHECK_EQ(hk_check(), 0);
    }
    churn(&g_main, &s, 20000, &damaged);
    CHECK_EQ(hk_check(), 0);
    hk_collect(0);
    CHECK_EQ(hk_check(), 0);
    hk_collect(1);
    CHECK_EQ(hk_check(), 0);
    CHECK_EQ(damaged, 0);
    for (unsigned k = 0; k < SLOTS; k++) { hk_free(g_main.p[k]); g_main.p[k] = NULL; }
    CHECK_EQ(hk_check(), 0);
    hk_collect(1);
    CHECK_EQ(hk_check(), 0);
}

/* hk_check looks at the parked heaps of exited threads too: a thread
 * frees half of its 100-byte blocks and exits (its heap parked, the other
 * half still live); damage to one of the freed blocks in its pages is
 * found from the main thread, and the repaired heap checks clean. */
enum { PK_N = 64 };
static void *pk_blocks[PK_N];

static void *pk_leaver(void *arg)
{
    (void)arg;
    for (int i = 0; i < PK_N; i++) pk_blocks[i] = hk_malloc(100);
    for (int i = 0; i < PK_N; i += 2) hk_free(pk_blocks[i]);
    return NULL;
}

static void test_parked_heap_checked(void)
{
    hk_collect(1);                  /* nothing parked before */
    long parked = hk_option_get(HK_OPTION_PARKED_HEAPS), delay = hk_option_get(HK_OPTION_PURGE_DELAY);
    REQUIRE(hk_option_set(HK_OPTION_PARKED_HEAPS, 4) == 0);
    REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, 60000) == 0);   /* parked for the test's length */
    REQUIRE(t_in_thread(pk_leaver, NULL));
    for (int i = 1; i < PK_N; i += 2) REQUIRE(pk_blocks[i] != NULL);
    hk_stats_t st;
    hk_stats_get(&st);
    CHECK_EQ(st.heaps_parked, 1);
    CHECK_EQ(check_quiet(), 0);
    uintptr_t *x = pk_blocks[0];     /* freed by the leaver: on its page's list, tagged */
    uintptr_t saved = x[1];
    x[1] = 0x5a5a;
    CHECK(check_reported("free block lost its tag") >= 1);
    x[1] = saved;
    CHECK_EQ(check_quiet(), 0);
    for (int i = 1; i < PK_N; i += 2) hk_free(pk_blocks[i]);
    CHECK_EQ(hk_option_set(HK_OPTION_PURGE_DELAY, delay), 0);
    CHECK_EQ(hk_option_set(HK_OPTION_PARKED_HEAPS, parked), 0);
    hk_collect(1);
    CHECK_EQ(check_quiet(), 0);
}

int main(void)
{
    RUN(test_finds_damage);
    RUN(test_clean_under_load);
    RUN(test_segment_lists);
    RUN(test_parked_heap_checked);
    return t_finish();
}
