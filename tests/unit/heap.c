/* Private heaps over the general allocator ("general") and every classic
 * engine: cap, reset, destroy releasing memory, hk_heap_of, frees from other
 * threads (hk_heap_free and plain hk_free), the general API (hk_free,
 * hk_realloc, hk_malloc_usable_size) on private-heap blocks, misuse of dead
 * handles. */
#include "test.h"
#include "heapkit.h"
#include <errno.h>
#include <pthread.h>

static const char *engine_name;

static size_t rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (f) { if (fscanf(f, "%lu %lu", &size, &res) != 2) res = 0; fclose(f); }
    return res * (size_t)(sysconf(_SC_PAGESIZE) / 1024);
}

static hk_heap_t *make(size_t max_size, unsigned flags)
{
    hk_heap_options_t o = HK_HEAP_OPTIONS_INIT;
    o.engine = engine_name;
    o.max_size = max_size;
    o.flags = flags;
    return hk_heap_new(&o);
}

static void test_basic(void)
{
    hk_heap_t *h = make(0, 0);
    REQUIRE(h);
    char *p[100];
    for (int i = 0; i < 100; i++) {
        p[i] = hk_heap_malloc(h, (size_t)(i * 37 + 1));
        REQUIRE(p[i]);
        memset(p[i], i, (size_t)(i * 37 + 1));
        CHECK(hk_heap_of(p[i]) == h);
        CHECK(hk_heap_usable_size(h, p[i]) >= (size_t)(i * 37 + 1));
    }
    for (int i = 0; i < 100; i += 2) CHECK_EQ(hk_heap_free(h, p[i]), 0);
    for (int i = 1; i < 100; i += 2) CHECK_EQ(p[i][0], (char)i);
    int *z = hk_heap_calloc(h, 100, sizeof(int));
    REQUIRE(z);
    for (int i = 0; i < 100; i++) CHECK_EQ(z[i], 0);
    z = hk_heap_realloc(h, z, 4000 * sizeof(int));
    REQUIRE(z);
    CHECK_EQ(z[99], 0);
    void *a = hk_heap_memalign(h, 256, 100);
    CHECK(a && ((uintptr_t)a & 255) == 0);
    errno = 0;
    CHECK(hk_heap_calloc(h, SIZE_MAX / 2, 4) == NULL);
    CHECK_EQ(errno, ENOMEM);
    int local;
    CHECK(hk_heap_of(&local) == NULL);
    CHECK(hk_heap_free(h, &local) != 0);     /* not a block of this heap */
    CHECK_EQ(hk_heap_free(h, NULL), 0);
    hk_heap_stats_t st;
    hk_heap_stats(h, &st);
    CHECK(st.live_blocks >= 50);
    CHECK(st.footprint > 0);
    hk_heap_destroy(h);
    CHECK(hk_heap_of(p[1]) == NULL);
}

static void test_cap(void)
{
    size_t cap = (size_t)4 << 20;
    hk_heap_t *h = make(cap, HK_HEAP_SINGLE_THREADED);
    REQUIRE(h);
    size_t got = 0;
    void *last = NULL;
    for (;;) {
        void *p = hk_heap_malloc(h, 64 << 10);
        if (!p) break;
        last = p;
        got += 64 << 10;
        REQUIRE(got <= cap);
    }
    CHECK_EQ(errno, ENOMEM);
    CHECK(got >= cap / 4);                  /* the cap, not something else, stopped it */
    errno = 0;
    CHECK(hk_heap_malloc(h, cap * 2) == NULL);
    CHECK_EQ(errno, ENOMEM);
    REQUIRE(last);
    CHECK_EQ(hk_heap_free(h, last), 0);     /* still usable after hitting the cap */
    void *again = hk_heap_malloc(h, 64 << 10);
    CHECK(again != NULL);
    hk_heap_stats_t st;
    hk_heap_stats(h, &st);
    CHECK(st.footprint <= cap);
    hk_heap_destroy(h);
}

/* A cap well under one 4 MiB segment still lets the heap work, and stops
 * it near the cap (page granularity: 64 KiB for the general engine). */
static void test_small_cap(void)
{
    size_t cap = (size_t)1 << 20;
    hk_heap_t *h = make(cap, HK_HEAP_SINGLE_THREADED);
    REQUIRE(h);
    void *first = hk_heap_malloc(h, 100);
    CHECK(first != NULL);
    size_t got = 100;
    void *p;
    while ((p = hk_heap_malloc(h, 1000)) != NULL) { got += 1000; REQUIRE(got <= cap); }
    CHECK_EQ(errno, ENOMEM);
    CHECK(got >= cap / 2);
    hk_heap_free(h, first);
    hk_heap_destroy(h);
}

/* initial_commit makes the memory resident up front; blocks then come
 * without growing the footprint much further. */
static void test_initial_commit(void)
{
    size_t before = rss_kb();
    hk_heap_options_t o = HK_HEAP_OPTIONS_INIT;
    o.engine = engine_name;
    o.max_size = (size_t)64 << 20;
    o.initial_commit = (size_t)16 << 20;
    hk_heap_t *h = hk_heap_new(&o);
    REQUIRE(h);
    size_t committed = rss_kb();
#ifndef HK_SANITIZE_BUILD
    CHECK(committed >= before + 15 * 1024);
#endif
    for (int i = 0; i < 1000; i++) {
        char *q = hk_heap_malloc(h, 1000);
        REQUIRE(q);
        memset(q, 1, 1000);
    }
#ifndef HK_SANITIZE_BUILD
    CHECK(rss_kb() < committed + 2 * 1024);
#endif
    (void)committed;
    (void)before;
    hk_heap_destroy(h);
    o.initial_commit = (size_t)128 << 20;     /* more than the cap */
    errno = 0;
    CHECK(hk_heap_new(&o) == NULL);
    CHECK_EQ(errno, EINVAL);
}

static unsigned extra_flags;   /* HK_HEAP_HUGE_PAGES in the huge-page runs */

static void test_destroy_releases(void)
{
    size_t before = rss_kb();
    hk_heap_t *h = make((size_t)512 << 20, HK_HEAP_SINGLE_THREADED | extra_flags);
    REQUIRE(h);
    /* Few large blocks: the implicit engines search the whole heap per malloc. */
    for (int i = 0; i < 10000; i++) {
        char *p = hk_heap_malloc(h, 4000);
        REQUIRE(p);
        memset(p, 1, 4000);
    }
    /* Huge blocks too (their own mappings in the general heap); one of
     * them is freed through the general API. */
    for (int i = 0; i < 4; i++) {
        char *p = hk_heap_malloc(h, (size_t)(i + 1) << 20);
        REQUIRE(p);
        memset(p, 2, (size_t)(i + 1) << 20);
        if (i == 1) hk_free(p);
    }
    size_t full = rss_kb();
    CHECK(full > before + 30 * 1024);
    hk_heap_destroy(h);
    size_t after = rss_kb();
    CHECK(after < before + 4 * 1024);
}

static void test_reset(void)
{
    hk_heap_t *h = make(0, 0);
    REQUIRE(h);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 1000; i++) REQUIRE(hk_heap_malloc(h, 100));
        hk_heap_stats_t st;
        hk_heap_stats(h, &st);
        CHECK_EQ(st.live_blocks, 1000);
        CHECK_EQ(hk_heap_reset(h), 0);
        hk_heap_stats(h, &st);
        CHECK_EQ(st.live_blocks, 0);
    }
    hk_heap_destroy(h);
}

struct xarg { hk_heap_t *h; void **blocks; int n; int plain; };
static void *free_all(void *arg)
{
    struct xarg *x = arg;
    for (int i = 0; i < x->n; i++) {
        if (x->plain) { if (hk_heap_of(x->blocks[i]) != x->h) return (void *)1; hk_free(x->blocks[i]); }
        else if (hk_heap_free(x->h, x->blocks[i]) != 0) return (void *)1;
    }
    return NULL;
}
static void *alloc_some(void *arg)
{
    struct xarg *x = arg;
    for (int i = 0; i < x->n; i++) { x->blocks[i] = hk_heap_malloc(x->h, (size_t)(i % 500 + 1)); if (!x->blocks[i]) return (void *)1; }
    return NULL;
}

/* plain: the frees go through hk_free, which must find the heap itself. */
static void threads_run(int plain)
{
    hk_heap_t *h = make(0, 0);
    REQUIRE(h);
    enum { T = 4, N = 2000 };
    static void *blocks[T][N];
    struct xarg xs[T];
    pthread_t th[T];
    void *r;
    for (int t = 0; t < T; t++) { xs[t] = (struct xarg){ h, blocks[t], N, plain }; pthread_create(&th[t], NULL, alloc_some, &xs[t]); }
    for (int t = 0; t < T; t++) { pthread_join(th[t], &r); CHECK(r == NULL); }
    /* Each thread frees the blocks another one allocated, while this one
     * keeps allocating from the heap. */
    for (int t = 0; t < T; t++) { xs[t].blocks = blocks[(t + 1) % T]; pthread_create(&th[t], NULL, free_all, &xs[t]); }
    void *mine[500];
    for (int i = 0; i < 500; i++) { mine[i] = hk_heap_malloc(h, (size_t)(i * 7 + 1)); CHECK(mine[i] != NULL); }
    for (int t = 0; t < T; t++) { pthread_join(th[t], &r); CHECK(r == NULL); }
    hk_heap_stats_t st;
    hk_heap_stats(h, &st);
    CHECK_EQ(st.live_blocks, 500);
    for (int i = 0; i < 500; i++) CHECK_EQ(hk_heap_free(h, mine[i]), 0);
    hk_heap_stats(h, &st);
    CHECK_EQ(st.live_blocks, 0);
    hk_heap_destroy(h);
}

static void test_threads(void) { threads_run(0); }
static void test_threads_hk_free(void) { threads_run(1); }

/* hk_free / hk_realloc / hk_malloc_usable_size on a private heap's blocks. */
static void test_general_api(void)
{
    hk_heap_t *h = make(0, 0);
    REQUIRE(h);
    char *p[64];
    for (int i = 0; i < 64; i++) {
        size_t n = (size_t)(i * 101 + 8);
        p[i] = hk_heap_malloc(h, n);
        REQUIRE(p[i]);
        memset(p[i], 'a' + i % 26, n);
        CHECK(hk_malloc_usable_size(p[i]) >= n);
        CHECK_EQ(hk_malloc_usable_size(p[i]), hk_heap_usable_size(h, p[i]));
    }
    for (int i = 0; i < 64; i += 2) {
        size_t n = (size_t)(i * 101 + 8);
        char *q = hk_realloc(p[i], n * 3 + 5000);     /* must move: stays in the heap */
        REQUIRE(q);
        CHECK(hk_heap_of(q) == h);
        CHECK_EQ(q[0], (char)('a' + i % 26));
        CHECK_EQ(q[n - 1], (char)('a' + i % 26));
        CHECK(hk_malloc_usable_size(q) >= n * 3 + 5000);
        p[i] = q;
    }
    hk_heap_stats_t st;
    hk_heap_stats(h, &st);
    CHECK_EQ(st.live_blocks, 64);
    for (int i = 0; i < 64; i++) hk_free(p[i]);
    CHECK(hk_realloc(hk_heap_malloc(h, 10), 0) == NULL);   /* frees it */
    hk_heap_stats(h, &st);
    CHECK_EQ(st.live_blocks, 0);
    /* The thread heap's blocks belong to no private heap. */
    void *g = hk_malloc(100);
    CHECK(hk_heap_of(g) == NULL);
    CHECK(hk_heap_free(h, g) != 0);
    hk_free(g);
    hk_heap_destroy(h);
}

/* A thread that exits with live blocks abandons its segments; a private
 * heap must never adopt them (their blocks are not the heap's). */
static void *leave_blocks(void *arg)
{
    void **out = arg;
    for (int i = 0; i < 64; i++) out[i] = hk_malloc(64);
    return NULL;
}

static void test_no_adoption(void)
{
    static void *left[64];
    pthread_t th;
    pthread_create(&th, NULL, leave_blocks, left);
    pthread_join(th, NULL);
    hk_heap_t *h = make(0, 0);
    REQUIRE(h);
    for (int i = 0; i < 20000; i++) REQUIRE(hk_heap_malloc(h, 64));
    for (int i = 0; i < 64; i++) CHECK(left[i] && hk_heap_of(left[i]) == NULL);
    hk_heap_destroy(h);
    for (int i = 0; i < 64; i++) { CHECK(hk_malloc_usable_size(left[i]) >= 64); hk_free(left[i]); }
}

/* Resident transparent huge pages of the process, in KiB. */
static size_t anon_huge_kb(void)
{
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    size_t kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "AnonHugePages: %zu", &kb) == 1) break;
    if (f) fclose(f);
    return kb;
}

static int thp_available(void)
{
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    char line[128] = "";
    if (f) { if (!fgets(line, sizeof line, f)) line[0] = 0; fclose(f); }
    return strstr(line, "[always]") || strstr(line, "[madvise]");
}

/* HK_HEAP_HUGE_PAGES on the general engine: the heap works as any other,
 * its memory really sits on huge pages (where the kernel offers them),
 * its segments never enter the shared segment cache, and destroy gives
 * everything back. */
static void test_huge_pages(void)
{
    hk_stats_t st0, st1;
    hk_stats_get(&st0);
    size_t huge0 = anon_huge_kb(), before = rss_kb();
    hk_heap_options_t o = HK_HEAP_OPTIONS_INIT;
    o.flags = HK_HEAP_HUGE_PAGES;
    hk_heap_t *h = hk_heap_new(&o);
    REQUIRE(h);
    enum { N = 200000 };
    static char *v[N];
    for (int i = 0; i < N; i++) {
        v[i] = hk_heap_malloc(h, 16 + (size_t)(i % 200));
        REQUIRE(v[i]);
        memset(v[i], (int)(i & 0x7f), 16);
    }
    for (int i = 0; i < N; i += 2) hk_free(v[i]);
    for (int i = 1; i < N; i += 2) CHECK(v[i][15] == (char)(i & 0x7f));
    char *r = hk_realloc(v[1], 5000);
    REQUIRE(r);
    CHECK(r[0] == 1);
    CHECK(hk_heap_of(r) == h);
    if (thp_available()) CHECK(anon_huge_kb() >= huge0 + 2048);
    else printf("  (no transparent huge pages here: only the plain behaviour is checked)\n");
    hk_heap_destroy(h);
    hk_stats_get(&st1);
    CHECK(st1.segments_cached <= st0.segments_cached);
#ifndef HK_SANITIZE_BUILD   /* a sanitizer keeps the shadow of the touched memory resident */
    CHECK(rss_kb() < before + 4 * 1024);
#else
    (void)before;
#endif
}

static void bad_options(void)
{
    hk_heap_options_t o = HK_HEAP_OPTIONS_INIT;
    o.engine = "no-such-engine";
    errno = 0;
    CHECK(hk_heap_new(&o) == NULL);
    CHECK_EQ(errno, EINVAL);
    o = (hk_heap_options_t)HK_HEAP_OPTIONS_INIT;
    o.size = 3;
    CHECK(hk_heap_new(&o) == NULL);
    o = (hk_heap_options_t)HK_HEAP_OPTIONS_INIT;
    o.flags = 0x100;                 /* no such flag */
    errno = 0;
    CHECK(hk_heap_new(&o) == NULL);
    CHECK_EQ(errno, EINVAL);
}

static void do_double_destroy(void *arg) { (void)arg; hk_heap_t *h = make(0, 0); hk_heap_destroy(h); hk_heap_destroy(h); }
static void do_use_after_destroy(void *arg) { (void)arg; hk_heap_t *h = make(0, 0); hk_heap_destroy(h); hk_heap_malloc(h, 10); }

static void test_misuse(void)
{
    CHECK(t_expect_death(do_double_destroy, NULL, SIGABRT, "hk_heap_destroy on heap"));
    CHECK(t_expect_death(do_use_after_destroy, NULL, SIGABRT, "hk_heap_malloc on heap"));
}

/* Pointers inside live blocks (plain and aligned ones), given to
 * hk_heap_free, hk_heap_usable_size and hk_heap_realloc in a random load
 * with a fixed seed: every one is refused (a negative code, 0, NULL) and no
 * live block's data changes. */
static uint64_t ip_state;
static uint64_t ip_rand(void) { return t_rand(&ip_state); }
static void test_interior_pointers(void)
{
    enum { L = 400, OPS = 8000 };
    static unsigned char *p[L];
    static size_t n[L];
    ip_state = 88172645463325252ull;
    hk_heap_options_t o = HK_HEAP_OPTIONS_INIT;
    o.engine = engine_name;
    hk_heap_t *h = hk_heap_new(&o);
    REQUIRE(h);
    size_t tried = 0, accepted = 0, changed = 0;
    for (unsigned i = 0; i < OPS; i++) {
        unsigned k = (unsigned)(ip_rand() % L);
        if (p[k]) {
            for (size_t j = 0; j < n[k]; j++) changed += p[k][j] != (unsigned char)(k ^ j);
            unsigned m = (unsigned)(ip_rand() % L);
            if (p[m] && m != k && ip_rand() % 3 == 0) {
                size_t u = hk_heap_usable_size(h, p[m]);
                REQUIRE(u >= n[m] && u >= 2);
                unsigned char *q = p[m] + t_inside(u, &ip_state);
                switch (ip_rand() % 3) {
                case 0: accepted += hk_heap_free(h, q) >= 0; break;
                case 1: accepted += hk_heap_usable_size(h, q) != 0; break;
                default: accepted += hk_heap_realloc(h, q, 64) != NULL; break;
                }
                tried++;
            }
            REQUIRE(hk_heap_free(h, p[k]) == 0);
            p[k] = NULL;
        }
        n[k] = 1 + (ip_rand() % 10 ? ip_rand() % 512 : ip_rand() % 70000);
        p[k] = ip_rand() % 5 ? hk_heap_malloc(h, n[k]) : hk_heap_memalign(h, (size_t)32 << (ip_rand() % 6), n[k]);
        REQUIRE(p[k]);
        for (size_t j = 0; j < n[k]; j++) p[k][j] = (unsigned char)(k ^ j);
    }
    for (unsigned k = 0; k < L; k++) p[k] = NULL;
    hk_heap_destroy(h);
    printf("  %zu pointers inside blocks tried, %zu accepted, %zu bytes changed\n", tried, accepted, changed);
    CHECK(tried > 1000);
    CHECK_EQ(accepted, 0);
    CHECK_EQ(changed, 0);
}

int main(int argc, char **argv)
{
    RUN(bad_options);
    RUN(test_misuse);
    RUN(test_no_adoption);
    RUN(test_huge_pages);
    static const char *const general[] = { "general", NULL };
    for (const char *const *n = general; *n; n = (n == general ? hk_engine_names() : n + 1)) {
        if (argc > 1 && strcmp(argv[1], *n)) continue;
        engine_name = *n;
        char name[128];
        printf("-- engine %s\n", *n);
        snprintf(name, sizeof name, "basic/%s", *n); RUN_NAMED(name, test_basic);
        snprintf(name, sizeof name, "cap/%s", *n); RUN_NAMED(name, test_cap);
        snprintf(name, sizeof name, "small_cap/%s", *n); RUN_NAMED(name, test_small_cap);
        snprintf(name, sizeof name, "initial_commit/%s", *n); RUN_NAMED(name, test_initial_commit);
        snprintf(name, sizeof name, "reset/%s", *n); RUN_NAMED(name, test_reset);
        snprintf(name, sizeof name, "threads/%s", *n); RUN_NAMED(name, test_threads);
        snprintf(name, sizeof name, "threads_hk_free/%s", *n); RUN_NAMED(name, test_threads_hk_free);
        snprintf(name, sizeof name, "general_api/%s", *n); RUN_NAMED(name, test_general_api);
        snprintf(name, sizeof name, "destroy_releases/%s", *n); RUN_NAMED(name, test_destroy_releases);
        snprintf(name, sizeof name, "interior_pointers/%s", *n); RUN_NAMED(name, test_interior_pointers);
        extra_flags = HK_HEAP_HUGE_PAGES;
        snprintf(name, sizeof name, "destroy_releases_huge_pages/%s", *n); RUN_NAMED(name, test_destroy_releases);
        extra_flags = 0;
    }
    return t_finish();
}
