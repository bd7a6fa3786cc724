/* The general allocator through the hk_ names: size classes, alignment,
 * zero sizes, overflow, bad alignments, realloc across classes and huge
 * blocks, calloc zeroing, misuse tolerance, options and the stats JSON. */
#include "test.h"
#include "heapkit.h"
#include <errno.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

/* Patterns on the first 256 bytes, every 61st byte and the last one: cheap
 * enough for big blocks, dense enough to catch a lost or shifted copy. */
#define PAT_NEXT(i) ((i) < 256 ? (i) + 1 : (i) + 61 - (i) % 61)
static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i = PAT_NEXT(i)) p[i] = (unsigned char)(seed + i * 7);
    if (n) p[n - 1] = (unsigned char)(seed + (n - 1) * 7);
}
static int same(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i = PAT_NEXT(i)) if (p[i] != (unsigned char)(seed + i * 7)) return 0;
    return 1;
}

/* The size classes worked out here from their definition (16-byte steps
 * to 128, then four per power of two): for every size up to 8 KiB the
 * usable size is its class's size, through the lookup table (up to 4 KiB)
 * and the bit arithmetic beyond it alike. */
static size_t expected_class_size(size_t s)
{
    if (s <= 16) return 16;
    if (s <= 128) return (s + 15) & ~(size_t)15;
    unsigned b = 63u - (unsigned)__builtin_clzl(s - 1);
    size_t q = (size_t)1 << (b - 2);
    return ((s - 1) / q + 1) * q;
}

static void test_usable_is_the_class_size(void)
{
    size_t bad = 0;
    for (size_t s = 0; s <= 8192; s++) {
        void *p = hk_malloc(s);
        REQUIRE(p != NULL);
        if (hk_malloc_usable_size(p) != expected_class_size(s)) {
            if (bad++ < 5) fprintf(stderr, "  size %zu: usable %zu, class %zu\n", s, hk_malloc_usable_size(p), expected_class_size(s));
        }
        hk_free(p);
    }
    CHECK_EQ(bad, 0);
}

static void test_every_size_class(void)
{
    /* Usable sizes grow with the request: the lookup table and the bit
     * arithmetic above 1 KiB agree on class boundaries. */
    for (size_t s = 1; s <= 2048; s++) {
        void *a = hk_malloc(s), *b = hk_malloc(s - 1);
        CHECK(hk_malloc_usable_size(a) >= hk_malloc_usable_size(b));
        CHECK(hk_malloc_usable_size(a) >= s);
        hk_free(a);
        hk_free(b);
    }
    size_t prev_usable = 0;
    for (size_t s = 0; s <= 2300 * 1024; s += (s < 4096 ? 1 : s < 65536 ? 61 : s < 600 * 1024 ? 997 : 9973)) {
        unsigned char *p = hk_malloc(s);
        REQUIRE(p != NULL);
        CHECK(((uintptr_t)p & 15) == 0);
        size_t u = hk_malloc_usable_size(p);
        CHECK(u >= s);
        if (s <= 2 * 1024 * 1024) CHECK(u <= s + s / 4 + 16);   /* >= 4 classes per power of two */
        if (s > 0 && s <= 2 * 1024 * 1024) CHECK(u >= prev_usable || u >= s);
        prev_usable = u;
        memset(p, 0xa5, u);
        hk_free(p);
    }
}

static void test_zero_size(void)
{
    void *a = hk_malloc(0), *b = hk_malloc(0);
    CHECK(a != NULL && b != NULL && a != b);
    CHECK(hk_malloc_usable_size(a) >= 1);
    void *c = hk_calloc(0, 100), *d = hk_calloc(100, 0);
    CHECK(c != NULL && d != NULL);
    hk_free(a); hk_free(b); hk_free(c); hk_free(d);
    hk_free(NULL);
    CHECK_EQ(hk_malloc_usable_size(NULL), 0);
}

static void test_overflow(void)
{
    volatile size_t big = SIZE_MAX, half = SIZE_MAX / 2, quarter = SIZE_MAX / 4;   /* hide them from the compiler's checks */
    errno = 0;
    CHECK(hk_calloc(half, 3) == NULL);
    CHECK_EQ(errno, ENOMEM);
    errno = 0;
    CHECK(hk_malloc(big) == NULL);
    CHECK_EQ(errno, ENOMEM);
    errno = 0;
    CHECK(hk_malloc(half + 1) == NULL);
    CHECK_EQ(errno, ENOMEM);
    void *p = hk_malloc(10);
    errno = 0;
    CHECK(hk_reallocarray(p, quarter, 8) == NULL);
    CHECK_EQ(errno, ENOMEM);
    p = hk_reallocarray(p, 10, 10);       /* the original block survives the failure */
    CHECK(p != NULL && hk_malloc_usable_size(p) >= 100);
    hk_free(p);
}

static void test_bad_alignment(void)
{
    void *p = (void *)1;
    errno = 1234;
    CHECK_EQ(hk_posix_memalign(&p, 3, 10), EINVAL);
    CHECK_EQ(hk_posix_memalign(&p, 0, 10), EINVAL);
    CHECK_EQ(hk_posix_memalign(&p, 4, 10), EINVAL);     /* not a multiple of sizeof(void *) */
    CHECK_EQ(hk_posix_memalign(&p, 48, 10), EINVAL);
    CHECK_EQ(errno, 1234);                              /* posix_memalign leaves errno alone */
    CHECK(p == (void *)1);
    errno = 0;
    CHECK(hk_aligned_alloc(24, 48) == NULL);
    CHECK_EQ(errno, EINVAL);
    errno = 0;
    CHECK(hk_memalign(100, 10) == NULL);
    CHECK_EQ(errno, EINVAL);
    errno = 1234;
    CHECK_EQ(hk_posix_memalign(&p, 64, SIZE_MAX - 100), ENOMEM);
    CHECK_EQ(errno, 1234);
}

static void test_memalign(void)
{
    static const size_t sizes[] = { 1, 24, 100, 4000, 5000, 70000, 300000, 700000, 3 << 20 };
    for (size_t align = 8; align <= ((size_t)1 << 20); align <<= 1) {
        void *keep[sizeof sizes / sizeof sizes[0]];
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            void *p = NULL;
            REQUIRE(hk_posix_memalign(&p, align, sizes[i]) == 0);
            CHECK(((uintptr_t)p & (align - 1)) == 0);
            CHECK(hk_malloc_usable_size(p) >= sizes[i]);
            fill(p, sizes[i], (unsigned)i);
            keep[i] = p;
        }
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            CHECK(same(keep[i], sizes[i], (unsigned)i));
            hk_free(keep[i]);
        }
        void *a = hk_aligned_alloc(align, 3 * align);
        void *m = hk_memalign(align, 33);
        CHECK(a && ((uintptr_t)a & (align - 1)) == 0);
        CHECK(m && ((uintptr_t)m & (align - 1)) == 0);
        hk_free_aligned_sized(a, align, 3 * align);
        hk_free(m);
    }
    size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    void *v = hk_valloc(10), *pv = hk_pvalloc(ps + 1), *pz = hk_pvalloc(0);
    CHECK(v && ((uintptr_t)v & (ps - 1)) == 0);
    CHECK(pv && ((uintptr_t)pv & (ps - 1)) == 0 && hk_malloc_usable_size(pv) >= 2 * ps);
    CHECK(pz && hk_malloc_usable_size(pz) >= ps);
    hk_free(v); hk_free(pv); hk_free(pz);
    /* Interior pointers of an aligned page still free and reuse cleanly. */
    void *ptrs[200];
    for (int i = 0; i < 200; i++) { REQUIRE(hk_posix_memalign(&ptrs[i], 256, 40) == 0); memset(ptrs[i], i, 40); }
    for (int i = 0; i < 200; i++) { CHECK(((unsigned char *)ptrs[i])[39] == (unsigned char)i); hk_free(ptrs[i]); }
}

static void test_realloc(void)
{
    size_t n = 1;
    unsigned char *p = hk_malloc(n);
    REQUIRE(p);
    fill(p, n, 5);
    while (n < ((size_t)12 << 20)) {           /* through every class into huge */
        size_t m = n * 3 / 2 + 1;
        p = hk_realloc(p, m);
        REQUIRE(p);
        CHECK(same(p, n, 5));
        fill(p, m, 5);
        n = m;
    }
    while (n > 1) {                            /* and back down */
        size_t m = n / 3;
        p = hk_realloc(p, m);
        REQUIRE(p);
        CHECK(same(p, m, 5));
        n = m;
    }
    hk_free(p);
    /* Growing within the usable size stays in place. */
    p = hk_malloc(100);
    size_t u = hk_malloc_usable_size(p);
    CHECK(hk_realloc(p, u) == p);
    hk_free(p);
    /* Shrinking into the same class stays in place, even below half. */
    p = hk_malloc(16);
    REQUIRE(p);
    CHECK(hk_realloc(p, 5) == p);
    hk_free(p);
    /* Growth by one byte at a time: each move takes at least a quarter
     * more than the block had, and the contents come along. */
    size_t len = 1, moves = 0;
    p = hk_malloc(len);
    REQUIRE(p);
    p[0] = 0;
    while (len < 70000) {
        size_t before = hk_malloc_usable_size(p);
        unsigned char *q = hk_realloc(p, len + 1);
        REQUIRE(q);
        if (q != p) {
            moves++;
            CHECK(hk_malloc_usable_size(q) >= before + before / 4);
        }
        q[len] = (unsigned char)len;
        p = q;
        len++;
    }
    for (size_t i = 0; i < len; i++) if (p[i] != (unsigned char)i) { CHECK(p[i] == (unsigned char)i); break; }
    CHECK(moves > 10 && moves < 40);
    hk_free(p);
    p = hk_realloc(NULL, 50);
    CHECK(p != NULL);
    errno = 0;
    CHECK(hk_realloc(p, 0) == NULL);
    hk_free(hk_realloc(hk_malloc(8), 600 * 1024));
}

static void test_calloc_zeroes(void)
{
    static const size_t sizes[] = { 8, 200, 3000, 40000, 400000, 1 << 20, 3 << 20, 9 << 20 };
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            unsigned char *d = hk_malloc(sizes[i]);
            memset(d, 0xff, sizes[i]);
            hk_free(d);
            unsigned char *z = hk_calloc(1, sizes[i]);
            REQUIRE(z);
            size_t bad = 0;
            for (size_t k = 0; k < sizes[i]; k++) bad += z[k] != 0;
            CHECK_EQ(bad, 0);
            hk_free(z);
        }
    }
}

static void test_huge(void)
{
    hk_stats_t before, during;
    hk_stats_get(&before);
    size_t sz = (size_t)40 << 20;
    unsigned char *p = hk_malloc(sz);
    REQUIRE(p);
    CHECK(hk_malloc_usable_size(p) >= sz);
    p[0] = 1; p[sz - 1] = 2;
    hk_stats_get(&during);
    CHECK_EQ(during.huge_blocks, before.huge_blocks + 1);
    CHECK(during.huge_bytes >= before.huge_bytes + sz);
    p = hk_realloc(p, sz / 4);                 /* shrinks in place */
    CHECK(p && p[0] == 1);
    hk_free(p);
    hk_stats_get(&during);
    CHECK_EQ(during.huge_blocks, before.huge_blocks);
}

static void test_random_ops(void)
{
    enum { SLOTS = 2000, OPS = 200000 };
    static unsigned char *slot[SLOTS];
    static size_t len[SLOTS];
    for (int i = 0; i < OPS; i++) {
        size_t k = next_rand() % SLOTS;
        if (slot[k]) {
            CHECK(same(slot[k], len[k], (unsigned)k));
            if (next_rand() & 1) { hk_free(slot[k]); slot[k] = NULL; continue; }
        }
        uint64_t r = next_rand();
        size_t n = (r & 0xf) == 0 ? (size_t)(r >> 8) % 200000 : (size_t)(r >> 8) % 600;
        unsigned char *p = slot[k] ? hk_realloc(slot[k], n) : hk_malloc(n);
        if (n == 0 && slot[k]) { slot[k] = NULL; if (!p) continue; }
        REQUIRE(p);
        slot[k] = p;
        len[k] = n;
        fill(p, n, (unsigned)k);
    }
    for (int k = 0; k < SLOTS; k++) { if (slot[k]) CHECK(same(slot[k], len[k], (unsigned)k)); hk_free(slot[k]); slot[k] = NULL; }
}

static void test_foreign_pointers(void)
{
    int on_stack = 0;
    void *sys = malloc(64);                    /* glibc's: not ours */
    hk_free(&on_stack);
    hk_free(sys);                              /* ignored, no crash */
    CHECK_EQ(hk_malloc_usable_size(sys), 0);
    CHECK_EQ(hk_malloc_usable_size(&on_stack), 0);
    hk_free((void *)(uintptr_t)0xdead0000beef0000ull);   /* beyond 47 bits */
    free(sys);
    void *p = hk_malloc(100);
    CHECK(p != NULL);
    hk_free(p);
}

static int some_int;
static void free_foreign(void) { hk_free(&some_int); }
static void print_stats(void) { hk_stats_print(); }

static void test_verbose_and_print(void)
{
    char buf[4096];
    CHECK_EQ(t_capture_stderr(free_foreign, buf, sizeof buf), 0);    /* quiet by default */
    REQUIRE(hk_option_set(HK_OPTION_VERBOSE, 1) == 0);
    t_capture_stderr(free_foreign, buf, sizeof buf);
    CHECK(strstr(buf, "heapkit: warning: free(") != NULL);
    CHECK(strstr(buf, "not allocated by heapkit") != NULL);
    hk_option_set(HK_OPTION_VERBOSE, 0);
    t_capture_stderr(print_stats, buf, sizeof buf);
    CHECK(strstr(buf, "heapkit statistics") != NULL);
    CHECK(strstr(buf, "segments:") != NULL);
}

static void test_options(void)
{
    long d = hk_option_get(HK_OPTION_PURGE_DELAY);
    CHECK(d >= -1);
    CHECK_EQ(hk_option_set(HK_OPTION_PURGE_DELAY, 25), 0);
    CHECK_EQ(hk_option_get(HK_OPTION_PURGE_DELAY), 25);
    CHECK_EQ(hk_option_set(HK_OPTION_PURGE_DELAY, -5), EINVAL);
    CHECK_EQ(hk_option_set((hk_option_t)99, 1), EINVAL);
    CHECK_EQ(hk_option_get((hk_option_t)99), -1);
    CHECK_EQ(hk_option_set(HK_OPTION_PURGE_DELAY, d), 0);
    CHECK_EQ(hk_option_get(HK_OPTION_VERBOSE), 0);
}

/* Options from the environment, read at the first call into heapkit: this
 * test program run again with variables set (`--options` prints what it
 * then reads); a value out of range is ignored (the default stays). */
static int print_options(void)
{
    printf("%ld %ld %ld %ld\n", hk_option_get(HK_OPTION_BIG_CACHE), hk_option_get(HK_OPTION_BIG_CACHE_TOTAL),
           hk_option_get(HK_OPTION_PARKED_HEAPS), hk_option_get(HK_OPTION_PURGE_DELAY));
    return 0;
}

static void test_options_from_environment(void)
{
    char self[4096], cmd[4400], out[128] = "";
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    REQUIRE(n > 0);
    self[n] = 0;
    snprintf(cmd, sizeof cmd, "HEAPKIT_BIG_CACHE=3 HEAPKIT_BIG_CACHE_TOTAL=7 HEAPKIT_PARKED_HEAPS=2 "
             "HEAPKIT_PURGE_DELAY=4000000 '%s' --options", self);
    FILE *f = popen(cmd, "r");
    REQUIRE(f != NULL);
    if (!fgets(out, sizeof out, f)) out[0] = 0;
    CHECK_EQ(pclose(f), 0);
    fprintf(stderr, "  child read: %s", out);
    CHECK(strcmp(out, "3 7 2 10\n") == 0);   /* the delay's 4,000,000 ms is over the 3,600,000 bound */
}

/* A small JSON check: one flat object of "key":unsigned pairs. */
static int json_flat_ok(const char *s, int *pairs)
{
    *pairs = 0;
    if (*s++ != '{') return 0;
    for (;;) {
        if (*s++ != '"') return 0;
        while (*s && *s != '"') s++;
        if (*s++ != '"' || *s++ != ':') return 0;
        if (*s < '0' || *s > '9') return 0;
        while (*s >= '0' && *s <= '9') s++;
        (*pairs)++;
        if (*s == ',') { s++; continue; }
        return s[0] == '}' && s[1] == 0;
    }
}

static unsigned long long json_get(const char *s, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(s, pat);
    return p ? strtoull(p + strlen(pat), NULL, 10) : ~0ull;
}

static void test_stats_json(void)
{
    char buf[2048];
    void *keep = hk_malloc(100000);
    size_t n = hk_stats_json(buf, sizeof buf);
    CHECK_EQ(n, strlen(buf));
    int pairs;
    CHECK(json_flat_ok(buf, &pairs));
    CHECK(pairs >= 15);
    CHECK_EQ(json_get(buf, "version"), HK_STATS_VERSION);
    CHECK(json_get(buf, "allocated") >= 100000);
    CHECK(json_get(buf, "segments") >= 1);
    CHECK(json_get(buf, "heaps") >= 1);
    char small[16];
    CHECK(hk_stats_json(small, sizeof small) > sizeof small);
    CHECK_EQ(strlen(small), sizeof small - 1);
    hk_stats_t st;
    hk_stats_get(&st);
    CHECK_EQ(st.version, HK_STATS_VERSION);
    CHECK_EQ(st.size, sizeof st);
    CHECK(st.committed <= st.reserved);
    hk_free(keep);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--options") == 0) return print_options();
    RUN(test_options_from_environment);
    RUN(test_every_size_class);
    RUN(test_usable_is_the_class_size);
    RUN(test_zero_size);
    RUN(test_overflow);
    RUN(test_bad_alignment);
    RUN(test_memalign);
    RUN(test_realloc);
    RUN(test_calloc_zeroes);
    RUN(test_huge);
    RUN(test_random_ops);
    RUN(test_foreign_pointers);
    RUN(test_verbose_and_print);
    RUN(test_options);
    RUN(test_stats_json);
    return t_finish();
}
