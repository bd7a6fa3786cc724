/* The OS layer: reserve/commit/decommit/release, regions and the sbrk break. */
#include "test.h"
#include "heapkit/vm.h"
#include <errno.h>
#include <setjmp.h>
#include <time.h>

uint64_t hk__os_now_ms(void);     /* the OS layer's clock (hidden in the library, linked statically here) */

static size_t rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (f) { if (fscanf(f, "%lu %lu", &size, &res) != 2) res = 0; fclose(f); }
    return res * (size_t)(sysconf(_SC_PAGESIZE) / 1024);
}

static void test_page_size(void)
{
    size_t ps = hk_vm_page_size();
    CHECK(ps >= 4096 && (ps & (ps - 1)) == 0);
    CHECK_EQ(ps, (size_t)sysconf(_SC_PAGESIZE));
    CHECK(hk_vm_granularity() >= ps);
}

static void test_bad_args(void)
{
    void *p = (void *)1;
    CHECK_EQ(hk_vm_reserve(0, 0, &p), EINVAL);
    CHECK(p == NULL);
    CHECK_EQ(hk_vm_reserve(100, 0, &p), EINVAL);
    CHECK_EQ(hk_vm_reserve(4096, 3000, &p), EINVAL);
    CHECK_EQ(hk_vm_commit((void *)0x1001, 4096), EINVAL);
    CHECK_EQ(hk_vm_commit(NULL, 4096), EINVAL);
    CHECK_EQ(hk_vm_decommit((void *)0x1000, 10), EINVAL);
    CHECK_EQ(hk_vm_release((void *)0x1000, 0), EINVAL);
    CHECK_EQ(hk_vm_protect((void *)0x1000, 4096, 8), EINVAL);
}

/* Errors the kernel reports come back as values, and errno is the
 * caller's still (the memory calls go straight to the kernel). */
static void test_kernel_errors_leave_errno(void)
{
    size_t ps = hk_vm_page_size();
    void *p = NULL;
    REQUIRE(hk_vm_reserve(4 * ps, 0, &p) == 0 && p);
    REQUIRE(hk_vm_release(p, 4 * ps) == 0);
    errno = 1234;
    CHECK_EQ(hk_vm_commit(p, ps), ENOMEM);          /* nothing mapped there any more */
    CHECK_EQ(hk_vm_protect(p, ps, HK_PROT_READ), ENOMEM);
    CHECK_EQ(errno, 1234);
    void *q = NULL;
    CHECK_EQ(hk_vm_alloc((size_t)1 << 62, 0, &q), ENOMEM);   /* more than the address space */
    CHECK(q == NULL);
    CHECK_EQ(errno, 1234);
}

/* The coarse monotonic clock read through the vDSO agrees with libc's. */
static void test_clock(void)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &a);
    uint64_t t0 = hk__os_now_ms();
    clock_gettime(CLOCK_MONOTONIC_COARSE, &b);
    uint64_t lo = (uint64_t)a.tv_sec * 1000 + (uint64_t)a.tv_nsec / 1000000;
    uint64_t hi = (uint64_t)b.tv_sec * 1000 + (uint64_t)b.tv_nsec / 1000000;
    CHECK(t0 >= lo && t0 <= hi);
    struct timespec nap = { 0, 30 * 1000000L };
    nanosleep(&nap, NULL);
    uint64_t t1 = hk__os_now_ms();
    CHECK(t1 >= t0 + 20 && t1 < t0 + 10000);
}

static void test_aligned_reserve(void)
{
    size_t ps = hk_vm_page_size();
    for (size_t align = ps; align <= ((size_t)4 << 20); align <<= 3) {
        void *p;
        REQUIRE(hk_vm_alloc(3 * ps, align, &p) == 0);
        CHECK(((uintptr_t)p & (align - 1)) == 0);
        memset(p, 0xab, 3 * ps);
        CHECK_EQ(hk_vm_release(p, 3 * ps), 0);
    }
}

static void test_commit_decommit_rss(void)
{
    size_t ps = hk_vm_page_size(), size = (size_t)64 << 20;
    void *p;
    REQUIRE(hk_vm_reserve(size, 0, &p) == 0);
    size_t before = rss_kb();
    REQUIRE(hk_vm_commit(p, size) == 0);
    memset(p, 1, size);
    size_t touched = rss_kb();
    CHECK(touched >= before + 60 * 1024);
    CHECK_EQ(hk_vm_decommit(p, size), 0);
    size_t after = rss_kb();
    CHECK(after + 60 * 1024 <= touched);
    /* Recommit: contents come back as zero. */
    REQUIRE(hk_vm_commit(p, ps) == 0);
    CHECK_EQ(((unsigned char *)p)[0], 0);
    ((char *)p)[0] = 5;
    CHECK_EQ(hk_vm_purge(p, ps), 0);
    CHECK_EQ(((unsigned char *)p)[0], 0);
    CHECK_EQ(hk_vm_release(p, size), 0);
}

static sigjmp_buf jb;
static void on_segv(int sig) { (void)sig; siglongjmp(jb, 1); }

static void test_protect(void)
{
    size_t ps = hk_vm_page_size();
    void *p;
    REQUIRE(hk_vm_alloc(ps, 0, &p) == 0);
    CHECK_EQ(hk_vm_protect(p, ps, HK_PROT_READ), 0);
    struct sigaction sa = { .sa_handler = on_segv }, old;
    sigaction(SIGSEGV, &sa, &old);
    volatile int faulted = 0;
    if (sigsetjmp(jb, 1) == 0) { *(volatile char *)p = 1; }
    else faulted = 1;
    sigaction(SIGSEGV, &old, NULL);
    CHECK(faulted);
    CHECK_EQ(hk_vm_protect(p, ps, HK_PROT_RW), 0);
    *(volatile char *)p = 1;
    CHECK_EQ(hk_vm_release(p, ps), 0);
}

static void test_region_growth(void)
{
    hk_region_t r;
    REQUIRE(hk_region_reserve(&r, (size_t)256 << 20) == 0);
    char *base = r.base;
    CHECK_EQ(r.committed, 0);
    for (size_t sz = 1000; sz < ((size_t)200 << 20); sz *= 3) {
        REQUIRE(hk_region_commit_to(&r, sz) == 0);
        CHECK(r.base == base);            /* address-stable */
        CHECK(r.committed >= sz);
        memset(r.base + sz - 1000, 7, 1000);
    }
    CHECK_EQ(hk_region_commit_to(&r, r.reserved + 1), ENOMEM);
    CHECK_EQ(hk_region_decommit_from(&r, 4096), 0);
    CHECK_EQ(r.committed, 4096);
    CHECK_EQ(hk_region_release(&r), 0);
    CHECK(r.base == NULL);
}

static void test_sbrk(void)
{
    hk_sbrk_t s;
    REQUIRE(hk_sbrk_init(&s, (size_t)1 << 20) == 0);
    char *a = hk_sbrk_grow(&s, 100);
    REQUIRE(a == hk_sbrk_lo(&s));
    char *b = hk_sbrk_grow(&s, 5000);
    CHECK(b == a + 100);
    memset(a, 3, 5100);
    CHECK(hk_sbrk_hi(&s) == a + 5100);
    errno = 0;
    CHECK(hk_sbrk_grow(&s, (size_t)1 << 20) == NULL);
    CHECK_EQ(errno, ENOMEM);
    CHECK(hk_sbrk_hi(&s) == a + 5100);    /* a failed grow changes nothing */
    CHECK_EQ(hk_sbrk_shrink(&s, 5000), 0);
    CHECK_EQ(s.brk, 100);
    CHECK_EQ(s.peak, 5100);
    CHECK_EQ(a[99], 3);
    CHECK_EQ(hk_sbrk_shrink(&s, 101), EINVAL);
    CHECK_EQ(hk_sbrk_release(&s), 0);
}

int main(void)
{
    RUN(test_page_size);
    RUN(test_bad_args);
    RUN(test_kernel_errors_leave_errno);
    RUN(test_clock);
    RUN(test_aligned_reserve);
    RUN(test_commit_decommit_rss);
    RUN(test_protect);
    RUN(test_region_growth);
    RUN(test_sbrk);
    return t_finish();
}
