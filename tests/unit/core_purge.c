/* Memory goes back to the OS: after allocating ~200 MB of small blocks and
 * freeing them, with the purge delay at 0, the resident size must shrink;
 * with a delay, hk_collect / later slow paths purge once it has passed. */
#include "test.h"
#include "gate.h"
#include "heapkit.h"
#include <time.h>
#include <pthread.h>
#include <sys/mman.h>

static size_t rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (f) { if (fscanf(f, "%lu %lu", &size, &res) != 2) res = 0; fclose(f); }
    return (size_t)res * (size_t)sysconf(_SC_PAGESIZE) >> 10;
}

static size_t rss_mb(void) { return rss_kb() >> 10; }

enum { TOTAL_MB = 200 };

static void **alloc_many(size_t *count)
{
    size_t cap = (size_t)TOTAL_MB << 20 >> 6, n = 0, bytes = 0;
    void **v = malloc(cap * sizeof *v);   /* the system allocator: not measured against us */
    while (bytes < ((size_t)TOTAL_MB << 20) && n < cap) {
        size_t sz = 64 + (n * 97) % 900;
        unsigned char *p = hk_malloc(sz);
        if (!p) break;
        memset(p, 1, sz);                 /* really touch it */
        v[n++] = p;
        bytes += sz;
    }
    *count = n;
    return v;
}

static void test_rss_shrinks_after_free(void)
{
    REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, 0) == 0);
    size_t base = rss_mb();
    size_t n;
    void **v = alloc_many(&n);
    size_t full = rss_mb();
    CHECK(full >= base + TOTAL_MB * 3 / 4);
    for (size_t i = 0; i < n; i++) hk_free(v[i]);
    size_t after = rss_mb();
    fprintf(stderr, "  rss: base %zu MB, full %zu MB, after free %zu MB\n", base, full, after);
    CHECK(after < base + 24);
    hk_stats_t st;
    hk_stats_get(&st);
    CHECK(st.purges > 0);
    CHECK(st.committed < ((size_t)48 << 20));
    free(v);
}

static void test_rss_shrinks_after_delay(void)
{
    REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, 30) == 0);
    size_t base = rss_mb();
    size_t n;
    void **v = alloc_many(&n);
    for (size_t i = 0; i < n; i++) hk_free(v[i]);
    free(v);
    t_sleep_ms(60);
    hk_collect(0);                         /* the delay has passed: purge now */
    size_t after = rss_mb();
    fprintf(stderr, "  rss: base %zu MB, after delay %zu MB\n", base, after);
    CHECK(after < base + 24);
    REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, -1) == 0);   /* never */
    v = alloc_many(&n);
    for (size_t i = 0; i < n; i++) hk_free(v[i]);
    free(v);
    hk_collect(1);                         /* force */
    CHECK(rss_mb() < base + 24);
    hk_option_set(HK_OPTION_PURGE_DELAY, 10);
}

/* A mass free followed by work that stays on fast paths (no page is given
 * back any more): the delayed purge must still come due, without
 * hk_collect. */
static void test_purge_comes_due_without_collect(void)
{
    REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, 20) == 0);
    size_t base = rss_mb();
    size_t n;
    void **v = alloc_many(&n);
    size_t full = rss_mb();
    for (size_t i = 0; i < n; i++) hk_free(v[i]);
    free(v);
    t_sleep_ms(60);
    /* keep working on a small set of blocks: malloc/free loops */
    void *w[64];
    for (int round = 0; round < 2000; round++) {
        for (int k = 0; k < 64; k++) { w[k] = hk_malloc((size_t)16 + (size_t)(k * 37 + round) % 400); CHECK(w[k] != NULL); }
        for (int k = 0; k < 64; k++) hk_free(w[k]);
    }
    size_t after = rss_mb();
    fprintf(stderr, "  rss: base %zu MB, full %zu MB, after delay + work %zu MB\n", base, full, after);
    CHECK(full >= base + TOTAL_MB * 3 / 4);
    CHECK(after < base + 24);
    hk_option_set(HK_OPTION_PURGE_DELAY, 10);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Steady churn gives pages back faster than every delay/4, which pushes
 * the purge back each time: it must still come due (within two delays),
 * so memory freed earlier and never reused goes back to the OS. */
static void test_purge_comes_due_under_churn(void)
{
    REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, 5) == 0);
    hk_collect(1);
    size_t base = rss_mb();
    size_t n;
    void **v = alloc_many(&n);
    for (size_t i = 0; i < n; i++) hk_free(v[i]);
    free(v);
    /* churn: three pages' worth of 2 KiB blocks, allocated and freed, so
     * that pages keep being given back */
    enum { NB = 96 };
    void *w[NB];
    double t0 = now_ms();
    unsigned rounds = 0;
    while (now_ms() - t0 < 60 || rounds < 100) {
        for (int k = 0; k < NB; k++) { w[k] = hk_malloc(2000); CHECK(w[k] != NULL); memset(w[k], 1, 64); }
        for (int k = 0; k < NB; k++) hk_free(w[k]);
        rounds++;
    }
    size_t after = rss_mb();
    fprintf(stderr, "  rss: base %zu MB, after churn %zu MB (%u rounds)\n", base, after, rounds);
    CHECK(after < base + 24);
    hk_option_set(HK_OPTION_PURGE_DELAY, 10);
}

/* A class used once keeps its one page while it is empty (a malloc/free
 * loop stays fast), but not for ever: once the page stayed empty from one
 * purge to the next it goes back to the segment, and after the delay its
 * memory to the OS. Here 24 classes of 1-32 KiB each carve about 48 KiB,
 * everything is freed, and later small malloc/free work must see those
 * pages retired and purged. */
static void test_unused_class_pages_go_back(void)
{
    REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, 5) == 0);
    hk_collect(1);
    hk_stats_t st0, st1, st2;
    hk_stats_get(&st0);
    enum { PER = 64 };
    void *w[PER];
    unsigned classes = 0;
    for (size_t sz = 1024; sz <= 32 * 1024; sz += sz / 4, classes++) {
        size_t n = (48 * 1024) / sz;
        for (size_t k = 0; k < n; k++) { w[k] = hk_malloc(sz); REQUIRE(w[k] != NULL); memset(w[k], 1, sz); }
        for (size_t k = 0; k < n; k++) hk_free(w[k]);
    }
    hk_stats_get(&st1);
    /* Each class kept its page, until a class 8 spans later took it (see
     * test_kept_pages_reused): 8 pages are kept at the end. */
    CHECK(classes > 8);
    CHECK(st1.pages >= st0.pages + 8);
    size_t committed_full = st1.committed;
    /* Later work on one small class, on slow paths now and then: the
     * pages go back within a few purge checks (a few delays); the loop
     * allows far more, so a slow machine does not fail it, while a page
     * kept for ever still does. */
    double t0 = now_ms();
    for (;;) {
        for (int k = 0; k < PER; k++) { w[k] = hk_malloc(48); CHECK(w[k] != NULL); }
        for (int k = 0; k < PER; k++) hk_free(w[k]);
        struct timespec ts = { 0, 200 * 1000 };
        nanosleep(&ts, NULL);
        hk_stats_get(&st2);
        if (now_ms() - t0 > 3000) break;
        if (now_ms() - t0 > 60 && st2.pages <= st0.pages + 1 && st2.committed + (size_t)classes * 32 * 1024 <= committed_full) break;
    }
    fprintf(stderr, "  pages: %llu before, %llu with %u classes kept, %llu after %.0f ms; committed %llu -> %llu KiB\n",
            (unsigned long long)st0.pages, (unsigned long long)st1.pages, classes, (unsigned long long)st2.pages, now_ms() - t0,
            (unsigned long long)committed_full >> 10, (unsigned long long)st2.committed >> 10);
    CHECK(st2.pages <= st0.pages + 1);                   /* only the 48-byte class's page */
    CHECK(st2.committed + (size_t)classes * 32 * 1024 <= committed_full);
    hk_option_set(HK_OPTION_PURGE_DELAY, 10);
}

/* Resident free one-page spans under a long purge delay. Freed below the
 * most pages the heap has had in use they wait out the delay (they raise
 * no peak); once the pages in use grow past that mark again while they
 * wait, the resident free ones are cut back to the budget (an eighth of
 * the pages in use, at least 512 KiB, looked at every 8 frees of one-page
 * spans) at once. With the delay at -1 (never) nothing goes back. */
static void test_churned_pages_stay_under_budget(void)
{
    enum { N = 128, SPANS = 64, SMALL = 64 * 1024, BIG = 100 * 1024, PAGE = 64 * 1024 };
    static void *v[N], *w[SPANS];
    for (int never = 0; never <= 1; never++) {
        REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, never ? -1 : 3600000) == 0);
        hk_collect(1);
        hk_stats_t st0, st1, st2, st3;
        hk_stats_get(&st0);
        /* 128 one-page spans, then every other one freed: 64 isolated
         * resident free pages, below the mark of 128 in use: kept. */
        for (int i = 0; i < N; i++) { v[i] = hk_malloc(SMALL); REQUIRE(v[i] != NULL); memset(v[i], 7, SMALL); }
        for (int i = 0; i < N; i += 2) hk_free(v[i]);
        hk_collect(0);     /* the big-block cache holds some of them: to their pages */
        hk_stats_get(&st1);
        /* Two-page spans cannot use the isolated pages: the pages in use
         * grow to 64 + 128, past the mark, while the 64 still wait. */
        for (int i = 0; i < SPANS; i++) { w[i] = hk_malloc(BIG); REQUIRE(w[i] != NULL); memset(w[i], 8, BIG); }
        hk_stats_get(&st2);
        for (int i = 1; i < 17; i += 2) hk_free(v[i]);     /* 8 more one-page spans: a look */
        hk_collect(0);
        hk_stats_get(&st3);
        size_t in_use = (size_t)(N / 2 - 8) * PAGE + (size_t)SPANS * 2 * PAGE;
        fprintf(stderr, "  delay %s: committed %llu KiB before, %llu after freeing half, %llu with the spans, "
                "%llu after 8 more frees (in use %zu KiB)\n", never ? "never" : "1 h",
                (unsigned long long)st0.committed >> 10, (unsigned long long)st1.committed >> 10,
                (unsigned long long)st2.committed >> 10, (unsigned long long)st3.committed >> 10, in_use >> 10);
        CHECK(st1.committed + 4 * PAGE >= st0.committed + (size_t)N * PAGE);   /* kept below the mark */
        CHECK(st2.committed + 4 * PAGE >= st0.committed + (size_t)(N + 2 * SPANS) * PAGE);   /* less segment headers */
        if (never) CHECK_EQ(st3.committed, st2.committed);
        else CHECK(st3.committed <= st0.committed + in_use + (size_t)(in_use / PAGE / 8 + 8 + 1) * PAGE);
        for (int i = 1; i < N; i += 2) if (i >= 17) hk_free(v[i]);
        for (int i = 0; i < SPANS; i++) hk_free(w[i]);
    }
    hk_option_set(HK_OPTION_PURGE_DELAY, 10);
    hk_collect(1);
}

/* A new page comes from resident free pages before untouched ones, in
 * whichever of the heap's segments they are. 100 one-page spans fill one
 * segment (63 such pages) and part of a second, which comes first in the
 * heap's list; 20 of the first segment's are freed and wait out a long
 * delay, resident. 20 new spans must reuse them: before, they came from
 * the newest segment's untouched pages and the resident set grew by
 * 1.25 MiB while the freed pages waited (peak RSS of programs whose
 * classes drift: 9.9 -> 9.6 MiB in a sh6bench-like load). */
static void test_resident_pages_reused_first(void)
{
    enum { N = 100, FREED = 20, PAGE = 64 * 1024 };
    static void *v[N], *w[FREED];
    REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, 3600000) == 0);
    hk_collect(1);
    for (int i = 0; i < N; i++) { v[i] = hk_malloc(PAGE); REQUIRE(v[i] != NULL); memset(v[i], 3, PAGE); }
    /* The first blocks lie in an older segment than the last ones. */
    CHECK(((uintptr_t)v[0] >> 22) != ((uintptr_t)v[N - 1] >> 22));
    for (int i = 0; i < FREED; i++) hk_free(v[i]);
    hk_stats_t st1, st2;
    hk_stats_get(&st1);
    for (int i = 0; i < FREED; i++) { w[i] = hk_malloc(PAGE); REQUIRE(w[i] != NULL); memset(w[i], 4, PAGE); }
    hk_stats_get(&st2);
    int reused = 0;
    for (int i = 0; i < FREED; i++)
        for (int j = 0; j < FREED; j++) reused += w[i] == v[j];
    fprintf(stderr, "  committed %llu -> %llu KiB for %d new pages; %d of them reused freed ones\n",
            (unsigned long long)st1.committed >> 10, (unsigned long long)st2.committed >> 10, FREED, reused);
    CHECK(st2.committed <= st1.committed + 2 * PAGE);
    CHECK(reused >= FREED - 2);
    for (int i = FREED; i < N; i++) hk_free(v[i]);
    for (int i = 0; i < FREED; i++) hk_free(w[i]);
    hk_option_set(HK_OPTION_PURGE_DELAY, 10);
    hk_collect(1);
}

/* An empty page a class keeps goes to another class that needs memory
 * once it stayed empty while the heap took 8 new spans, before fresh
 * pages are faulted in: a program that moves from size to size (the
 * sh6bench pattern) otherwise kept one carved page for every size it had
 * used until two purges saw it empty. */
static void test_kept_pages_reused(void)
{
    enum { CLASSES = 8, NEW = 24, PAGE = 64 * 1024 };
    static const size_t size[CLASSES] = { 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096 };
    static void *blk[64], *big[NEW];
    REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, 3600000) == 0);
    hk_collect(1);
    for (int c = 0; c < CLASSES; c++) {
        size_t n = (PAGE - 16 * 1024) / size[c];      /* one page, also after a segment header */
        for (size_t i = 0; i < n; i++) { blk[i] = hk_malloc(size[c]); REQUIRE(blk[i] != NULL); memset(blk[i], 7, size[c]); }
        for (size_t i = 0; i < n; i++) hk_free(blk[i]);
    }
    hk_stats_t st1, st2;
    hk_stats_get(&st1);
    for (int i = 0; i < NEW; i++) { big[i] = hk_malloc(PAGE); REQUIRE(big[i] != NULL); memset(big[i], 8, PAGE); }
    hk_stats_get(&st2);
    fprintf(stderr, "  %d new one-page blocks after %d classes kept an empty page: committed +%llu KiB\n", NEW,
            CLASSES, (unsigned long long)(st2.committed - st1.committed) >> 10);
    /* Each class's page emptied one span after the last: from the second
     * new span on, the 8 kept pages go one a span (then fresh ones): 16
     * pages more instead of 24, 17 when one of them is a segment's first
     * page, which a 64 KiB block does not fit beside the header. */
    CHECK(st2.committed - st1.committed <= (size_t)(NEW - CLASSES + 2) * PAGE);
    for (int i = 0; i < NEW; i++) hk_free(big[i]);
    for (int c = 0; c < CLASSES; c++) { void *p = hk_malloc(size[c]); CHECK(p != NULL); hk_free(p); }   /* the classes still serve */
    hk_option_set(HK_OPTION_PURGE_DELAY, 10);
    hk_collect(1);
}

/* ...but not the page of a class in use, which empties and fills by
 * turns: taking it made every new span rob the next class. (The new
 * spans hold one 40 KiB block each, which fits beside a segment's header,
 * so a robbed page is never one the class would get back at once.) */
static void test_active_kept_page_stays(void)
{
    enum { NEW = 24, BIG = 40 * 1024, SIZE = 3000 };
    static void *big[2 * NEW];
    REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, 3600000) == 0);
    hk_collect(1);
    void *first = hk_malloc(SIZE);
    REQUIRE(first != NULL);
    hk_free(first);
    int moved = 0;
    for (int i = 0; i < NEW; i++) {
        void *p = hk_malloc(SIZE);
        REQUIRE(p != NULL);
        moved += ((uintptr_t)p >> 16) != ((uintptr_t)first >> 16);
        hk_free(p);
        for (int k = 2 * i; k < 2 * i + 2; k++) {     /* the page is 0, then 1 span old */
            big[k] = hk_malloc(BIG);
            REQUIRE(big[k] != NULL);
            memset(big[k], 9, BIG);
        }
    }
    fprintf(stderr, "  a class's block left its page %d times in %d rounds of malloc/free and two new spans\n", moved, NEW);
    CHECK(moved == 0);
    for (int i = 0; i < 2 * NEW; i++) hk_free(big[i]);
    hk_option_set(HK_OPTION_PURGE_DELAY, 10);
    hk_collect(1);
}

/* Fills v with n written 16 KiB blocks, then frees the four of a 64 KiB
 * page whose blocks are all among them and start at its base (with 10
 * blocks another page of the class is in use but not full, so the page
 * empties into the segment rather than being kept); returns the page, or
 * 0 if none was found. */
static uintptr_t free_one_page(void **v, int n)
{
    enum { B = 16 * 1024, PAGE = 64 * 1024 };
    for (int i = 0; i < n; i++) { v[i] = hk_malloc(B); if (!v[i]) return 0; memset(v[i], 0x5a, B); }
    uintptr_t page = 0;
    for (int i = 0; i < n && !page; i++) {
        uintptr_t x = (uintptr_t)v[i] & ~(uintptr_t)(PAGE - 1);
        int in = 0;
        for (int j = 0; j < n; j++) in += ((uintptr_t)v[j] & ~(uintptr_t)(PAGE - 1)) == x;
        if (in == PAGE / B && x == (uintptr_t)v[i]) page = x;
    }
    for (int i = 0; i < n && page; i++)
        if (((uintptr_t)v[i] & ~(uintptr_t)(PAGE - 1)) == page) { hk_free(v[i]); v[i] = NULL; }
    hk_collect(0);     /* freed 16 KiB blocks may wait in the thread's big-block cache */
    return page;
}

/* A resident free page taken by a class whose blocks end short of where
 * the last ones reached gives the rest back: a page of four 16 KiB blocks,
 * all written, then one 40 KiB block, whose last 24 KiB are not resident. */
static void test_reused_page_tail_purged(void)
{
    enum { N = 10, PAGE = 64 * 1024, BIG = 40 * 1024 };
    static void *v[N];
    REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, 3600000) == 0);
    hk_collect(1);
    uintptr_t page = free_one_page(v, N);
    REQUIRE(page != 0);
    unsigned char vec[PAGE / 4096];
    REQUIRE(mincore((void *)page, PAGE, vec) == 0);
    int before = 0;
    for (int k = 0; k < PAGE / 4096; k++) before += vec[k] & 1;
    unsigned char *p = hk_malloc(BIG);
    REQUIRE(p != NULL);
    CHECK((uintptr_t)p == page);       /* the resident free page before fresh ones */
    REQUIRE(mincore((void *)page, PAGE, vec) == 0);
    int head = 0, tail = 0;
    for (int k = 0; k < PAGE / 4096; k++) { if (k < BIG / 4096) head += vec[k] & 1; else tail += vec[k] & 1; }
    fprintf(stderr, "  freed page: %d of 16 4-KiB pages resident; reused for 40 KiB: %d in the block, %d past it\n",
            before, head, tail);
    CHECK(before == PAGE / 4096);
    CHECK(tail == 0);
    memset(p, 1, BIG);
    hk_free(p);
    for (int i = 0; i < N; i++) hk_free(v[i]);
    hk_option_set(HK_OPTION_PURGE_DELAY, 10);
    hk_collect(1);
}

/* The same with a second thread heap live: the tail waits for the next
 * purge (one madvise a span taken, in a threaded program, stopped every
 * core for a TLB shootdown). The purge then gives back only what lies past
 * the block, also after the block grew in place into the tail. */
static t_gate_t idle_gate = T_GATE_INIT;   /* 1: the thread has its heap, 2: it may exit */
static void *idle_thread(void *arg)
{
    (void)arg;
    void *q = hk_malloc(32);  /* its own heap: two thread heaps live */
    t_gate_set(&idle_gate, 1);
    t_gate_wait(&idle_gate, 2);
    hk_free(q);
    return NULL;
}

static int resident_between(uintptr_t page, size_t from, size_t to)
{
    unsigned char vec[16];
    if (mincore((void *)page, 64 * 1024, vec) != 0) return -1;
    int n = 0;
    for (size_t k = from / 4096; k < to / 4096; k++) n += vec[k] & 1;
    return n;
}

static void test_reused_page_tail_deferred(void)
{
    enum { N = 10, PAGE = 64 * 1024, BIG = 40 * 1024, GROWN = 56 * 1024 };
    static void *v[N];
    pthread_t t;
    idle_gate.phase = 0;
    REQUIRE(pthread_create(&t, NULL, idle_thread, NULL) == 0);
    t_gate_wait(&idle_gate, 1);
    REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, 3600000) == 0);
    hk_collect(1);
    uintptr_t page = free_one_page(v, N);
    REQUIRE(page != 0);
    unsigned char *p = hk_malloc(BIG);
    REQUIRE(p != NULL);
    CHECK((uintptr_t)p == page);
    memset(p, 0x33, BIG);
    int tail_now = resident_between(page, BIG, PAGE);
    /* The block grows in place into the tail (a block alone in its page
     * takes the bigger class where it is). */
    unsigned char *g = hk_realloc(p, GROWN);
    REQUIRE(g != NULL);
    CHECK(g == p);
    memset(g + BIG, 0x44, GROWN - BIG);
    hk_collect(1);     /* a forced purge */
    int tail_after = resident_between(page, GROWN, PAGE), block_after = resident_between(page, 0, GROWN);
    fprintf(stderr, "  reused for 40 KiB with two heaps live: %d of 6 4-KiB pages past it resident; "
            "grown to 56 KiB, after a purge: %d of 14 in the block, %d of 2 past it\n", tail_now, block_after, tail_after);
    CHECK(tail_now == (PAGE - BIG) / 4096);
    CHECK(tail_after == 0);
    CHECK(block_after == GROWN / 4096);
    int bad = 0;
    for (size_t i = 0; i < GROWN; i++) bad += g[i] != (i < BIG ? 0x33 : 0x44);
    CHECK(bad == 0);
    hk_free(g);
    for (int i = 0; i < N; i++) hk_free(v[i]);
    t_gate_set(&idle_gate, 2);
    pthread_join(t, NULL);
    hk_option_set(HK_OPTION_PURGE_DELAY, 10);
    hk_collect(1);
}

/* A class's only page (the one malloc takes its blocks from) is not
 * trimmed by purges under a delay: its free blocks are the next ones out,
 * and a trimmed page sends every free into it the slow way. A class kept to a few live
 * blocks (a loop over 100 live blocks of 1-2000 bytes) otherwise trimmed
 * and refaulted its page at every purge. hk_collect(1) still trims it. */
static void test_active_page_not_trimmed(void)
{
    enum { N = 24, KEEP = 2, SIZE = 1500 };     /* class 1536: 34-42 blocks a page */
    static void *v[N];
    const long wait_ms = 40;
    REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, 20) == 0);
    hk_collect(1);
    for (int i = 0; i < N; i++) { v[i] = hk_malloc(SIZE); REQUIRE(v[i] != NULL); memset(v[i], 0x33, SIZE); }
    for (int i = 1; i < N; i++) CHECK(((uintptr_t)v[i] >> 16) == ((uintptr_t)v[0] >> 16));   /* one page */
    for (int i = KEEP; i < N; i++) hk_free(v[i]);
    hk_stats_t st0, st1, st2;
    hk_stats_get(&st0);
    hk_collect(0);                      /* first sight: sparse since now */
    t_sleep_ms(wait_ms);
    hk_collect(0);                      /* sparse for a delay: trimmed, were it not the active page */
    hk_stats_get(&st1);
    void *p = hk_malloc(SIZE);          /* the class's page still serves */
    CHECK(((uintptr_t)p >> 16) == ((uintptr_t)v[0] >> 16));
    hk_free(p);
    hk_collect(1);                      /* forced: trimmed */
    hk_stats_get(&st2);
    fprintf(stderr, "  committed %llu KiB sparse, %llu after two purges a delay apart, %llu after hk_collect(1)\n",
            (unsigned long long)st0.committed >> 10, (unsigned long long)st1.committed >> 10,
            (unsigned long long)st2.committed >> 10);
    CHECK(st1.committed >= st0.committed);
    CHECK(st2.committed + 32 * 1024 <= st1.committed);
    for (int i = 0; i < KEEP; i++) {
        const unsigned char *b = v[i];
        for (int k = 0; k < SIZE; k++) if (b[k] != 0x33) { CHECK(!"kept block changed"); break; }
        hk_free(v[i]);
    }
    hk_option_set(HK_OPTION_PURGE_DELAY, 10);
    hk_collect(1);
}

/* Sparse pages give back the memory of their free blocks ("trimming").
 * 2048 blocks of 1 KiB (32 or more 64 KiB pages); only the blocks in the
 * first 4 KiB of each page stay, the rest are freed: every page is in use
 * but nearly empty. A purge (delay 0, then forced) must give back most of
 * the freed memory, leave the kept blocks' data alone, and hand the freed
 * blocks out again (distinct, writable) when they are asked for. */
static int in_first_4k(const void *p) { return ((uintptr_t)p & 0xffff) < 4096; }
static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;
    return x < y ? -1 : x > y;
}

static void test_sparse_pages_trimmed(void)
{
    enum { N = 2048, SZ = 1000 };
    static unsigned char *v[N];
    REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, 0) == 0);
    hk_collect(1);
    for (int i = 0; i < N; i++) { v[i] = hk_malloc(SZ); REQUIRE(v[i] != NULL); memset(v[i], i & 0xff, SZ); }
    hk_stats_t st1, st2, st3;
    hk_stats_get(&st1);
    size_t rss1 = rss_kb();
    size_t kept = 0, freed = 0;
    for (int i = 0; i < N; i++) {
        if (in_first_4k(v[i])) { kept++; continue; }
        hk_free(v[i]);
        v[i] = NULL;
        freed++;
    }
    hk_collect(0);                 /* delay 0: the purge is due, trimming within its walk budget */
    hk_stats_get(&st2);
    size_t rss2 = rss_kb();
    fprintf(stderr, "  %zu blocks kept, %zu freed: committed %llu -> %llu KiB, rss %zu -> %zu KiB\n", kept, freed,
            (unsigned long long)st1.committed >> 10, (unsigned long long)st2.committed >> 10, rss1, rss2);
    /* The pages stay in use; most of the freed 1 MiB-and-more goes back. */
    CHECK(kept >= 32 && freed >= N - 4 * 64);
    CHECK(st2.committed + freed * 1024 / 2 <= st1.committed);
    CHECK(rss2 + freed * 1024 / 2 / 1024 <= rss1);
    hk_collect(1);                 /* nothing more to give: the trimmed pages stay as they are */
    hk_stats_get(&st3);
    CHECK(st3.committed <= st2.committed);
    static unsigned char fill[N];
    int bad = 0;
    for (int i = 0; i < N; i++) {
        fill[i] = (unsigned char)(i & 0xff);
        if (v[i]) for (int k = 0; k < SZ; k++) bad += v[i][k] != fill[i];
    }
    CHECK_EQ(bad, 0);              /* the kept blocks kept their data */
    /* The freed blocks come back: fill each with its own byte, then check
     * every block (an overlap or a block handed out twice shows). */
    for (int i = 0; i < N; i++)
        if (!v[i]) {
            v[i] = hk_malloc(SZ);
            REQUIRE(v[i] != NULL);
            fill[i] = (unsigned char)((i * 7 + 1) & 0xff);
            memset(v[i], fill[i], SZ);
        }
    for (int i = 0; i < N; i++) for (int k = 0; k < SZ; k++) bad += v[i][k] != fill[i];
    CHECK_EQ(bad, 0);
    static unsigned char *sorted[N];
    memcpy(sorted, v, sizeof sorted);
    qsort(sorted, N, sizeof *sorted, cmp_ptr);
    for (int i = 1; i < N; i++) CHECK(sorted[i - 1] + SZ <= sorted[i]);   /* no two blocks overlap */
    /* They came from the trimmed pages (their blocks were put back on the
     * lists), not from new pages. */
    hk_stats_t st4;
    hk_stats_get(&st4);
    CHECK(st4.pages <= st1.pages);
    for (int i = 0; i < N; i++) hk_free(v[i]);
    hk_option_set(HK_OPTION_PURGE_DELAY, 10);
}

/* A mass free that leaves every page a few blocks and empties none: the
 * purges that trim those pages come due and go on, a walk budget each,
 * while the program works on a few blocks, with no hk_collect. 256 pages
 * of 64-byte blocks are 16 purges' worth of blocks. (With a cache of the
 * thread's own frees tried this round, such work reached no slow path and
 * this failed: 14.3 of 16.4 MiB stayed committed.) */
static void test_trimming_goes_on(void)
{
    enum { PAGES = 256, PER = 65536 / 64, N = PAGES * PER };
    static unsigned char *v[N];
    REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, 1) == 0);
    hk_collect(1);
    for (int i = 0; i < N; i++) { v[i] = hk_malloc(64); REQUIRE(v[i] != NULL); memset(v[i], 0x11, 64); }
    hk_stats_t st1, st2;
    hk_stats_get(&st1);
    size_t rss1 = rss_kb(), freed = 0;
    for (int i = 0; i < N; i++) {
        if (in_first_4k(v[i])) continue;
        hk_free(v[i]);
        v[i] = NULL;
        freed++;
    }
    /* Work on a few blocks for a while. */
    double t0 = now_ms();
    void *w[16];
    while (now_ms() - t0 < 300)
        for (int r = 0; r < 1000; r++) {
            for (int k = 0; k < 16; k++) { w[k] = hk_malloc(48); REQUIRE(w[k] != NULL); }
            for (int k = 0; k < 16; k++) hk_free(w[k]);
        }
    hk_stats_get(&st2);
    size_t rss2 = rss_kb();
    fprintf(stderr, "  %zu of %d blocks freed: committed %llu -> %llu KiB, rss %zu -> %zu KiB\n", freed, N,
            (unsigned long long)st1.committed >> 10, (unsigned long long)st2.committed >> 10, rss1, rss2);
    CHECK(freed >= (size_t)N * 7 / 8);
    CHECK(st2.committed + freed * 64 * 3 / 4 <= st1.committed);     /* most of it went back */
    CHECK(rss2 + freed * 64 * 3 / 4 / 1024 <= rss1);
    int bad = 0;
    for (int i = 0; i < N; i++) if (v[i]) for (int k = 0; k < 64; k++) bad += v[i][k] != 0x11;
    CHECK_EQ(bad, 0);
    for (int i = 0; i < N; i++) hk_free(v[i]);
    hk_option_set(HK_OPTION_PURGE_DELAY, 10);
}

/* A page is trimmed only once a purge has found it sparse for a purge
 * delay: one that fills again in between (thread churn) keeps its memory
 * and starts over. */
static void test_trim_waits_a_delay(void)
{
    enum { PAGES = 8, PER = 65536 / 64, N = PAGES * PER };
    static unsigned char *v[N];
    const long wait_ms = 80;
    REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, 50) == 0);
    hk_collect(1);
    for (int i = 0; i < N; i++) { v[i] = hk_malloc(64); REQUIRE(v[i] != NULL); memset(v[i], 0x22, 64); }
    hk_stats_t st0, st1, st2, st3;
    hk_stats_get(&st0);
    for (int i = 0; i < N; i++) if (!in_first_4k(v[i])) { hk_free(v[i]); v[i] = NULL; }
    hk_collect(0);                         /* first sight: sparse since now */
    hk_stats_get(&st1);
    for (int i = 0; i < N; i++) if (!v[i]) { v[i] = hk_malloc(64); REQUIRE(v[i] != NULL); memset(v[i], 0x22, 64); }
    hk_collect(0);                         /* busy again: the clock stops */
    for (int i = 0; i < N; i++) if (!in_first_4k(v[i])) { hk_free(v[i]); v[i] = NULL; }
    t_sleep_ms(wait_ms);
    hk_collect(0);                         /* sparse again, but only since now */
    hk_stats_get(&st2);
    t_sleep_ms(wait_ms);
    hk_collect(0);                         /* sparse for a delay: trimmed */
    hk_stats_get(&st3);
    fprintf(stderr, "  committed %llu KiB full, %llu at first sight, %llu after refill and free, %llu a delay later\n",
            (unsigned long long)st0.committed >> 10, (unsigned long long)st1.committed >> 10,
            (unsigned long long)st2.committed >> 10, (unsigned long long)st3.committed >> 10);
    /* Trimming gives back 60 of each page's 64 KiB; a free page of some
     * other class going back after its delay is at most 64 KiB. */
    CHECK(st1.committed + 128 * 1024 > st0.committed);         /* nothing trimmed at first sight */
    CHECK(st2.committed + 128 * 1024 > st0.committed);         /* nor after the refill */
    CHECK(st3.committed + (size_t)PAGES * 48 * 1024 < st2.committed);   /* most of each page went */
    int bad = 0;
    for (int i = 0; i < N; i++) if (v[i]) for (int k = 0; k < 64; k++) bad += v[i][k] != 0x22;
    CHECK_EQ(bad, 0);
    for (int i = 0; i < N; i++) hk_free(v[i]);
    hk_collect(1);
    hk_option_set(HK_OPTION_PURGE_DELAY, 10);
}

int main(void)
{
    RUN(test_sparse_pages_trimmed);
    RUN(test_trim_waits_a_delay);
    RUN(test_churned_pages_stay_under_budget);
    RUN(test_resident_pages_reused_first);
    RUN(test_active_page_not_trimmed);
    RUN(test_kept_pages_reused);
    RUN(test_active_kept_page_stays);
    RUN(test_reused_page_tail_purged);
    RUN(test_reused_page_tail_deferred);
    RUN(test_unused_class_pages_go_back);
    RUN(test_purge_comes_due_under_churn);
    RUN(test_purge_comes_due_without_collect);
    RUN(test_rss_shrinks_after_free);
    RUN(test_rss_shrinks_after_delay);
    RUN(test_trimming_goes_on);      /* last: it raises the heap's high-water mark of pages in use */
    return t_finish();
}
