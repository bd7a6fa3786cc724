/* The cache of freed big huge mappings: a free + malloc of a similar size
 * reuses the mapping (same address, no new reservation), calloc from it is
 * still zeroed, a double free into a cached mapping is ignored, realloc
 * grows in place within the reservation, and the cache goes back to the OS
 * (resident size and reserved bytes) after the delay / on hk_collect. */
#include "test.h"
#include "heapkit.h"
#include <time.h>

static size_t rss_mb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (f) { if (fscanf(f, "%lu %lu", &size, &res) != 2) res = 0; fclose(f); }
    return (size_t)res * (size_t)sysconf(_SC_PAGESIZE) >> 20;
}

static void touch(unsigned char *p, size_t n, unsigned char v)
{
    for (size_t i = 0; i < n; i += 4096) p[i] = v;
    p[n - 1] = v;
}

static uint64_t reserved(void)
{
    hk_stats_t st;
    hk_stats_get(&st);
    return st.reserved;
}

static void test_reuse_and_zeroing(void)
{
    REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, 1000) == 0);
    unsigned char *a = hk_malloc((size_t)40 << 20);
    REQUIRE(a != NULL);
    touch(a, (size_t)40 << 20, 0xab);
    uint64_t res = reserved();
    hk_free(a);
    CHECK_EQ(reserved(), res);                     /* kept mapped */
    unsigned char *b = hk_malloc((size_t)30 << 20);
    REQUIRE(b != NULL);
    CHECK(b == a);                                 /* the same mapping */
    CHECK_EQ(reserved(), res);
    touch(b, (size_t)30 << 20, 1);
    hk_free(b);
    unsigned char *c = hk_calloc(1, (size_t)35 << 20);
    REQUIRE(c != NULL);
    CHECK(c == a);
    int zero = 1;
    for (size_t i = 0; i < ((size_t)35 << 20); i += 4093) if (c[i]) { zero = 0; break; }
    CHECK(zero && c[((size_t)35 << 20) - 1] == 0);
    /* realloc grows within the reservation without moving */
    unsigned char *d = hk_realloc(c, (size_t)50 << 20);
    CHECK(d == c);
    CHECK(hk_malloc_usable_size(d) >= ((size_t)50 << 20));
    touch(d, (size_t)50 << 20, 2);
    hk_free(d);
    hk_free(d);                                    /* misuse: ignored, the mapping is cached */
    unsigned char *e = hk_malloc((size_t)20 << 20);
    CHECK(e == a);
    CHECK(e[0] == 2 || e[0] == 0);
    hk_free(e);
    hk_option_set(HK_OPTION_PURGE_DELAY, 10);
}

static void test_goes_back_to_the_os(void)
{
    REQUIRE(hk_option_set(HK_OPTION_PURGE_DELAY, 20) == 0);
    hk_collect(1);
    size_t base = rss_mb();
    uint64_t res0 = reserved();
    unsigned char *a = hk_malloc((size_t)48 << 20);
    REQUIRE(a != NULL);
    touch(a, (size_t)48 << 20, 3);
    CHECK(rss_mb() >= base + 40);
    hk_free(a);
    CHECK(rss_mb() >= base + 40);                  /* cached for now */
    struct timespec ts = { 0, 60 * 1000 * 1000 };
    nanosleep(&ts, NULL);
    /* keep working on small blocks: the purge comes due on slow paths */
    void *w[64];
    for (int round = 0; round < 2000; round++) {
        for (int k = 0; k < 64; k++) w[k] = hk_malloc((size_t)16 + (size_t)(k * 37 + round) % 400);
        for (int k = 0; k < 64; k++) hk_free(w[k]);
    }
    size_t after = rss_mb();
    fprintf(stderr, "  rss: base %zu MB, after delay %zu MB\n", base, after);
    CHECK(after < base + 16);
    CHECK(reserved() < res0 + ((size_t)16 << 20));
    /* a bigger request than anything cached empties the cache first */
    uint64_t res1 = reserved();
    a = hk_malloc((size_t)20 << 20);
    touch(a, (size_t)20 << 20, 4);
    hk_free(a);
    CHECK(reserved() >= res1 + ((size_t)20 << 20));   /* cached */
    unsigned char *b = hk_malloc((size_t)100 << 20);
    REQUIRE(b != NULL);
    touch(b, (size_t)100 << 20, 5);
    /* the cached 20 MiB mapping went back before the new one was made */
    CHECK(reserved() <= res1 + ((size_t)256 << 20) + ((size_t)4 << 20));   /* 2-4 x address space */
    hk_free(b);
    hk_collect(1);
    CHECK(rss_mb() < base + 16);
    hk_option_set(HK_OPTION_PURGE_DELAY, 10);
}

int main(void)
{
    RUN(test_reuse_and_zeroing);
    RUN(test_goes_back_to_the_os);
    return t_finish();
}
