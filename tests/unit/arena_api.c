/* Arenas: bump allocation and alignment, chunk doubling, huge chunks,
 * mark/restore (with stale and foreign marks), reset, and RSS on destroy. */
#include "test.h"
#include "heapkit/pool.h"
#include <errno.h>

static size_t rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (f) { if (fscanf(f, "%lu %lu", &size, &res) != 2) res = 0; fclose(f); }
    return res * (size_t)(sysconf(_SC_PAGESIZE) / 1024);
}

static void test_bump(void)
{
    hk_arena_t *a = hk_arena_create(0);
    REQUIRE(a);
    char *p = hk_arena_alloc(a, 10), *q = hk_arena_alloc(a, 10);
    REQUIRE(p && q);
    CHECK(((uintptr_t)p & 15) == 0 && ((uintptr_t)q & 15) == 0);
    CHECK(q == p + 16);                       /* contiguous bump */
    memset(p, 1, 10);
    char *r = hk_arena_alloc_aligned(a, 100, 256);
    CHECK(r && ((uintptr_t)r & 255) == 0);
    char *s = hk_arena_alloc_aligned(a, 3, 1);
    CHECK(s == r + 100);
    CHECK(hk_arena_alloc_aligned(a, 8, 3) == NULL && errno == EINVAL);
    int *z = hk_arena_calloc(a, 100, sizeof(int));
    REQUIRE(z);
    for (int i = 0; i < 100; i++) CHECK(z[i] == 0);
    CHECK(hk_arena_calloc(a, SIZE_MAX / 2, 4) == NULL && errno == ENOMEM);
    char *d = hk_arena_strdup(a, "heapkit arena");
    CHECK(d && strcmp(d, "heapkit arena") == 0);
    hk_arena_stats_t st;
    CHECK_EQ(hk_arena_stats(a, &st), 0);
    CHECK_EQ(st.bytes_allocated, 10 + 10 + 100 + 3 + 400 + 14);
    CHECK_EQ(st.chunks, 1);
    CHECK_EQ(st.bytes_reserved, 65536);
    CHECK_EQ(hk_arena_destroy(a), 0);
}

static void test_doubling_and_huge(void)
{
    hk_arena_t *a = hk_arena_create(4096);
    REQUIRE(a);
    /* Fill several chunks with small objects: sizes 4K, 8K, 16K, 32K... */
    size_t total = 0;
    while (total < 200000) { char *p = hk_arena_alloc(a, 1000); REQUIRE(p); memset(p, 7, 1000); total += 1000; }
    hk_arena_stats_t st;
    hk_arena_stats(a, &st);
    CHECK(st.chunks >= 5 && st.chunks <= 7);
    CHECK_EQ(st.huge_chunks, 0);
    CHECK(st.bytes_reserved < 2 * 262144 + 65536);
    char *before = hk_arena_alloc(a, 16);
    char *big = hk_arena_alloc(a, 10 << 20);  /* far over the next chunk: its own */
    REQUIRE(big);
    memset(big, 1, 10 << 20);
    char *after = hk_arena_alloc(a, 16);
    CHECK(after == before + 16);             /* bump chunk untouched by the huge one */
    hk_arena_stats(a, &st);
    CHECK_EQ(st.huge_chunks, 1);
    CHECK(st.bytes_reserved >= (10u << 20));
    hk_arena_destroy(a);
}

static void test_mark_restore(void)
{
    hk_arena_t *a = hk_arena_create(4096);
    REQUIRE(a);
    char *keep = hk_arena_strdup(a, "keep me");
    hk_arena_stats_t st0, st;
    hk_arena_stats(a, &st0);
    hk_arena_mark_t m = hk_arena_mark(a);
    char *first_tmp = hk_arena_alloc(a, 64);
    for (int i = 0; i < 100; i++) REQUIRE(hk_arena_alloc(a, 3000));
    REQUIRE(hk_arena_alloc(a, 1 << 20));
    hk_arena_mark_t inner = hk_arena_mark(a);
    REQUIRE(hk_arena_alloc(a, 100));
    hk_arena_stats(a, &st);
    CHECK(st.chunks > st0.chunks);
    CHECK_EQ(hk_arena_restore(a, inner), 0);
    CHECK_EQ(hk_arena_restore(a, m), 0);
    hk_arena_stats(a, &st);
    CHECK_EQ(st.bytes_allocated, st0.bytes_allocated);
    /* The huge chunk went back at once; ordinary ones wait as spares. */
    CHECK_EQ(st.huge_chunks, 0);
    CHECK(st.chunks > st0.chunks);
    CHECK(st.bytes_reserved < st0.bytes_reserved + (1 << 20));
    CHECK(strcmp(keep, "keep me") == 0);
    CHECK(hk_arena_alloc(a, 64) == first_tmp);  /* same space again */
    /* inner was undone by restoring m: stale now. */
#if HK_DEBUG < 1
    CHECK_EQ(hk_arena_restore(a, inner), EINVAL);
    hk_arena_t *b = hk_arena_create(0);
    CHECK_EQ(hk_arena_restore(b, m), EINVAL);  /* another arena's mark */
    hk_arena_destroy(b);
#endif
    /* Repeated scratch use does not grow the reservation. */
    hk_arena_stats(a, &st0);
    for (int round = 0; round < 50; round++) {
        hk_arena_mark_t s = hk_arena_mark(a);
        for (int i = 0; i < 20; i++) REQUIRE(hk_arena_alloc(a, 4000));
        CHECK_EQ(hk_arena_restore(a, s), 0);
    }
    hk_arena_stats(a, &st);
    CHECK_EQ(st.peak_reserved, st0.peak_reserved);
    CHECK_EQ(hk_arena_trim(a), 0);
    hk_arena_stats(a, &st);
    CHECK_EQ(st.chunks, 1);                  /* only the bump chunk is left */
    hk_arena_destroy(a);
}

static void test_reset(void)
{
    hk_arena_t *a = hk_arena_create(0);
    REQUIRE(a);
    for (int i = 0; i < 5000; i++) REQUIRE(hk_arena_alloc(a, 500));
    REQUIRE(hk_arena_alloc(a, 8 << 20));
    hk_arena_mark_t old = hk_arena_mark(a);
    hk_arena_stats_t st;
    hk_arena_stats(a, &st);
    size_t largest = 65536;
    while (largest * 2 <= st.bytes_reserved - (8 << 20)) largest *= 2;
    size_t ordinary = st.chunks - 1, ordinary_bytes = st.bytes_reserved - st.huge_chunks * 0;
    (void)ordinary_bytes;
    CHECK_EQ(hk_arena_reset(a), 0);
    hk_arena_stats(a, &st);
    CHECK_EQ(st.chunks, ordinary);           /* kept for reuse; the huge one is gone */
    CHECK_EQ(st.bytes_allocated, 0);
    CHECK_EQ(st.huge_chunks, 0);
    size_t reserved = st.bytes_reserved;
    for (int i = 0; i < 5000; i++) REQUIRE(hk_arena_alloc(a, 500));
    hk_arena_stats(a, &st);
    CHECK_EQ(st.bytes_reserved, reserved);   /* refilled from the kept chunks */
    CHECK_EQ(hk_arena_reset(a), 0);
    CHECK_EQ(hk_arena_trim(a), 0);
    hk_arena_stats(a, &st);
    CHECK_EQ(st.chunks, 1);                  /* only the largest, now current */
    CHECK_EQ(st.bytes_reserved, largest);
#if HK_DEBUG < 1
    CHECK_EQ(hk_arena_restore(a, old), EINVAL);
#else
    (void)old;
#endif
    int *z = hk_arena_calloc(a, 1000, sizeof(int));
    REQUIRE(z);
    for (int i = 0; i < 1000; i++) CHECK(z[i] == 0);  /* reused memory is zeroed by calloc */
    hk_arena_destroy(a);
}

/* A checked arena keeps its bump range outside the inline fast path's
 * fields, so every call goes out of line; it must hand out exactly the
 * same layout as a release arena, through growth, mark/restore and reset. */
static void test_checked_same_layout(void)
{
    hk_arena_t *a[2] = { hk_arena_create(4096), hk_arena_create_ex(4096, HK_POOL_CHECKED) };
    REQUIRE(a[0] && a[1]);
    char *first[2];
    size_t off[2][64];
    for (int k = 0; k < 2; k++) {
        first[k] = hk_arena_alloc(a[k], 24);
        REQUIRE(first[k]);
        hk_arena_mark_t m = hk_arena_mark(a[k]);
        int j = 0;
        for (int i = 0; i < 40; i++) {        /* 40 x up to 600 bytes: past the 4 KiB first chunk */
            char *p = hk_arena_alloc(a[k], (size_t)(1 + i * 15));
            REQUIRE(p);
            CHECK(((uintptr_t)p & 15) == 0);
            memset(p, k, (size_t)(1 + i * 15));
            if (i % 4 == 0) off[k][j++] = (size_t)((uintptr_t)p & 4095);
        }
        CHECK_EQ(hk_arena_restore(a[k], m), 0);
        off[k][j++] = (size_t)((char *)hk_arena_alloc(a[k], 1) - first[k]);   /* rewound next to first */
        CHECK_EQ(hk_arena_reset(a[k]), 0);
        off[k][j++] = (size_t)((uintptr_t)hk_arena_alloc(a[k], 8) & 4095);
        CHECK_EQ(j, 12);
    }
    for (int j = 0; j < 12; j++) CHECK_EQ(off[0][j], off[1][j]);
    CHECK_EQ(off[0][10], 32);
    hk_arena_stats_t s0, s1;
    CHECK_EQ(hk_arena_stats(a[0], &s0), 0);
    CHECK_EQ(hk_arena_stats(a[1], &s1), 0);
    CHECK_EQ(s0.bytes_allocated, 8);
    CHECK_EQ(s1.bytes_allocated, 8);
    CHECK_EQ(s0.chunks, s1.chunks);
    for (int k = 0; k < 2; k++) CHECK_EQ(hk_arena_destroy(a[k]), 0);
}

static void test_destroy_rss(void)
{
    size_t before = rss_kb();
    hk_arena_t *a = hk_arena_create(0);
    REQUIRE(a);
    for (int i = 0; i < 100000; i++) { char *p = hk_arena_alloc(a, 1000); REQUIRE(p); p[0] = 1; p[999] = 1; }
    size_t peak = rss_kb();
    CHECK(peak > before + 90 * 1024);
    CHECK_EQ(hk_arena_destroy(a), 0);
    CHECK(rss_kb() < before + 4 * 1024);
}

int main(void)
{
    RUN(test_bump);
    RUN(test_doubling_and_huge);
    RUN(test_mark_restore);
    RUN(test_reset);
    RUN(test_checked_same_layout);
    RUN(test_destroy_rss);
    return t_finish();
}
