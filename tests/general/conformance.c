/* Conformance of the standard malloc family as heapkit exports it: run
 * linked against libheapkit.a (HK_LINKED) or with libheapkit.so preloaded
 * (HK_EXPECT_HEAPKIT=1 in the environment); either way it first proves
 * heapkit is the allocator answering, then checks what C and POSIX promise. */
#include "test.h"
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#ifdef HK_LINKED
#include <heapkit/alloc.h>
#endif

/* Sizes come through a volatile so the compiler cannot fold or warn about
 * the deliberately absurd requests. */
static volatile size_t v_huge = SIZE_MAX;
static size_t vsz(size_t n) { volatile size_t v = n; return v; }
/* Through pointers, so gcc does not flag reading a block after a realloc
 * that failed (and so left it alone) as a use after free. */
static void *(*volatile malloc_fn)(size_t) = malloc;
static void *(*volatile calloc_fn)(size_t, size_t) = calloc;
static void *(*volatile realloc_fn)(void *, size_t) = realloc;
static void *(*volatile reallocarray_fn)(void *, size_t, size_t) = reallocarray;

static size_t min_align(size_t n)
{
    /* the fundamental alignment an object of n bytes can need */
    size_t a = 1;
    while (a < 16 && a * 2 <= n) a *= 2;
    return a;
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(seed + i * 7);
}

static int same(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) if (p[i] != (unsigned char)(seed + i * 7)) return 0;
    return 1;
}

static void test_heapkit_is_the_allocator(void)
{
    void *p = malloc(100);
    REQUIRE(p != NULL);
    memset(p, 0, 100);   /* gcc: a const void * argument counts as a read */
#ifdef HK_LINKED
    CHECK(hk_malloc_usable_size(p) >= 100);
    CHECK_EQ(hk_malloc_usable_size(p), malloc_usable_size(p));
#else
    const char *want = getenv("HK_EXPECT_HEAPKIT");
    void *sym = dlsym(RTLD_DEFAULT, "hk_malloc_usable_size");
    if (want && *want == '1') {
        REQUIRE(sym != NULL);
        size_t (*usable)(const void *);
        *(void **)&usable = sym;
        CHECK(usable(p) >= 100);
        CHECK_EQ(usable(p), malloc_usable_size(p));
    }
#endif
    free(p);
}

static void test_every_small_size(void)
{
    enum { N = 4096 };
    static unsigned char *blk[N + 1];
    for (size_t n = 1; n <= N; n++) {
        blk[n] = malloc(n);
        REQUIRE(blk[n] != NULL);
        CHECK((uintptr_t)blk[n] % min_align(n) == 0);
        CHECK(malloc_usable_size(blk[n]) >= n);
        fill(blk[n], n, (unsigned)n);
    }
    /* all live at once: overlapping blocks would have clobbered patterns */
    for (size_t n = 1; n <= N; n++) CHECK(same(blk[n], n, (unsigned)n));
    for (size_t n = 1; n <= N; n += 2) free(blk[n]);
    for (size_t n = 2; n <= N; n += 2) { CHECK(same(blk[n], n, (unsigned)n)); free(blk[n]); }
}

static void test_powers_of_two_and_neighbours(void)
{
    for (int k = 4; k <= 26; k++) {
        for (int d = -1; d <= 1; d++) {
            size_t n = ((size_t)1 << k) + (size_t)(ptrdiff_t)d;
            unsigned char *p = malloc(vsz(n));
            REQUIRE(p != NULL);
            CHECK((uintptr_t)p % 16 == 0);
            CHECK(malloc_usable_size(p) >= n);
            /* touch every page and both ends */
            p[n - 1] = 0x5a;
            for (size_t i = 0; i < n - 1; i += 4096) p[i] = (unsigned char)(i >> 12 | 1);
            CHECK(p[n - 1] == 0x5a);
            for (size_t i = 0; i < n - 1; i += 4096) if (p[i] != (unsigned char)(i >> 12 | 1)) { CHECK(0); break; }
            free(p);
        }
    }
}

static void test_zero_and_null(void)
{
    void *a = malloc(0), *b = malloc(0);
    /* either NULL or a unique pointer that free accepts */
    if (a && b) CHECK(a != b);
    free(a);
    free(b);
    free(NULL);
    CHECK_EQ(malloc_usable_size(NULL), 0);
    void *c = realloc(NULL, 32);
    REQUIRE(c != NULL);
    CHECK(malloc_usable_size(c) >= 32);
    free(c);
    void *z = calloc(0, 16);
    free(z);
}

static void test_overflow_and_huge_requests(void)
{
    errno = 0;
    CHECK(malloc_fn(v_huge) == NULL);
    CHECK_EQ(errno, ENOMEM);
    errno = 0;
    CHECK(malloc_fn(v_huge / 2 + 1) == NULL);
    CHECK_EQ(errno, ENOMEM);
    errno = 0;
    CHECK(calloc_fn(v_huge / 2, vsz(3)) == NULL);
    CHECK_EQ(errno, ENOMEM);
    errno = 0;
    CHECK(calloc_fn(vsz((size_t)1 << 33), vsz((size_t)1 << 33)) == NULL);
    CHECK_EQ(errno, ENOMEM);

    unsigned char *p = malloc(64);
    REQUIRE(p != NULL);
    fill(p, 64, 9);
    errno = 0;
    CHECK(reallocarray_fn(p, v_huge / 4, vsz(8)) == NULL);
    CHECK_EQ(errno, ENOMEM);
    CHECK(same(p, 64, 9));               /* the old block is untouched */
    errno = 0;
    CHECK(realloc_fn(p, v_huge) == NULL);
    CHECK_EQ(errno, ENOMEM);
    CHECK(same(p, 64, 9));
    unsigned char *q = reallocarray_fn(p, vsz(100), vsz(4));
    REQUIRE(q != NULL);
    CHECK(same(q, 64, 9));
    free(q);
}

static void test_calloc_zeroes(void)
{
    size_t sizes[] = { 1, 16, 24, 100, 512, 4000, 40000, 300000, 3u << 20, 20u << 20 };
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        /* dirty a block of the same size first so recycled memory is tested */
        unsigned char *d = malloc(n);
        REQUIRE(d != NULL);
        memset(d, 0xee, n);
        free(d);
        unsigned char *p = calloc(vsz(n), 1);
        REQUIRE(p != NULL);
        size_t bad = 0;
        for (size_t j = 0; j < n; j++) bad += p[j] != 0;
        CHECK_EQ(bad, 0);
        free(p);
    }
}

static void test_posix_memalign(void)
{
    void *p = (void *)1;
    CHECK_EQ(posix_memalign(&p, 0, 16), EINVAL);
    CHECK_EQ(posix_memalign(&p, 3, 16), EINVAL);
    CHECK_EQ(posix_memalign(&p, 24, 16), EINVAL);
    CHECK_EQ(posix_memalign(&p, sizeof(void *) / 2, 16), EINVAL);
    CHECK(p == (void *)1);               /* untouched on failure */
    CHECK_EQ(posix_memalign(&p, 64, v_huge - 100), ENOMEM);
    for (size_t al = sizeof(void *); al <= ((size_t)1 << 21); al *= 2) {
        size_t sizes[] = { 1, al - 1, al, al + 1, 3 * al };
        for (size_t i = 0; i < 5; i++) {
            void *q = NULL;
            REQUIRE(posix_memalign(&q, al, sizes[i] ? sizes[i] : 1) == 0);
            REQUIRE(q != NULL);
            if ((uintptr_t)q % al) fprintf(stderr, "  posix_memalign(%zu, %zu) misaligned\n", al, sizes[i]);
            CHECK((uintptr_t)q % al == 0);
            CHECK(malloc_usable_size(q) >= sizes[i]);
            memset(q, 1, sizes[i]);
            free(q);
        }
    }
}

static void test_aligned_alloc_memalign_valloc(void)
{
    long page = sysconf(_SC_PAGESIZE);
    for (size_t al = 16; al <= ((size_t)1 << 20); al *= 2) {
        void *a = aligned_alloc(al, al * 2);
        REQUIRE(a != NULL);
        if ((uintptr_t)a % al) fprintf(stderr, "  aligned_alloc(%zu) misaligned\n", al);
        CHECK((uintptr_t)a % al == 0);
        memset(a, 2, al * 2);
        void *m = memalign(al, 100);
        REQUIRE(m != NULL);
        CHECK((uintptr_t)m % al == 0);
        CHECK(malloc_usable_size(m) >= 100);
        free(a);
        free(m);
    }
    void *v = valloc(100);
    REQUIRE(v != NULL);
    CHECK((uintptr_t)v % (uintptr_t)page == 0);
    free(v);
    void *pv = pvalloc(100);
    REQUIRE(pv != NULL);
    CHECK((uintptr_t)pv % (uintptr_t)page == 0);
    CHECK(malloc_usable_size(pv) >= (size_t)page);
    memset(pv, 3, (size_t)page);
    free(pv);
}

static void test_realloc_preserves_data(void)
{
    /* grow 1 -> 32 MiB through every class boundary region, then shrink */
    size_t n = 1;
    unsigned char *p = malloc(1);
    REQUIRE(p != NULL);
    fill(p, 1, 77);
    while (n < ((size_t)32 << 20)) {
        size_t m = n + n / 3 + 1;
        unsigned char *q = realloc(p, m);
        REQUIRE(q != NULL);
        REQUIRE(same(q, n, 77));
        fill(q, m, 77);
        p = q;
        n = m;
    }
    while (n > 1) {
        size_t m = n / 2;
        unsigned char *q = realloc(p, m);
        REQUIRE(q != NULL);
        REQUIRE(same(q, m, 77));
        CHECK(malloc_usable_size(q) >= m);
        p = q;
        n = m;
    }
    free(p);
    /* and in-place candidates: realloc to the same and slightly smaller size */
    p = malloc(1000);
    REQUIRE(p != NULL);
    fill(p, 1000, 5);
    p = realloc(p, 1000);
    REQUIRE(p != NULL);
    p = realloc(p, 990);
    REQUIRE(p != NULL);
    CHECK(same(p, 990, 5));
    free(p);
}

int main(void)
{
    RUN(test_heapkit_is_the_allocator);
    RUN(test_every_small_size);
    RUN(test_powers_of_two_and_neighbours);
    RUN(test_zero_and_null);
    RUN(test_overflow_and_huge_requests);
    RUN(test_calloc_zeroes);
    RUN(test_posix_memalign);
    RUN(test_aligned_alloc_memalign_valloc);
    RUN(test_realloc_preserves_data);
    return t_finish();
}
