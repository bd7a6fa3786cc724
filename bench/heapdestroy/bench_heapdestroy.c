/* Releasing 1 M small blocks: hk_heap_destroy of a private heap (general
 * engine, with and without HK_HEAP_HUGE_PAGES, and tlsf for comparison)
 * against freeing the same blocks one by one with hk_free, and glibc free
 * of blocks from glibc malloc, in allocation order and in a random order
 * (fixed seed). Reps are interleaved; medians are printed with resident
 * sizes around the release.
 *
 *   bench_heapdestroy [REPS] [BLOCKS] */
#define _GNU_SOURCE
#include "heapkit.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>
#include <malloc.h>
#include <sys/resource.h>

static size_t rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long sz = 0, res = 0;
    if (f) { if (fscanf(f, "%lu %lu", &sz, &res) != 2) res = 0; fclose(f); }
    return res * (size_t)(sysconf(_SC_PAGESIZE) / 1024);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);   /* wall: destroy's cost is mostly munmap in the kernel */
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double cpu(int sys)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    struct timeval tv = sys ? ru.ru_stime : ru.ru_utime;
    return (double)tv.tv_sec + (double)tv.tv_usec * 1e-6;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double median(double *v, int n) { qsort(v, (size_t)n, sizeof *v, cmp); return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2; }

enum { KINDS = 8 };
static const char *const kind_name[KINDS] = {
    "hk_heap_destroy (general)", "hk_heap_destroy (general, huge pg)",
    "hk_free each (general heap)", "hk_free each, random (gen. heap)",
    "hk_free each (hk_malloc)", "glibc free each (glibc malloc)",
    "glibc free each, random", "hk_heap_destroy (tlsf)",
};
enum { K_DESTROY, K_DESTROY_HUGE, K_HEAP_FREE, K_HEAP_FREE_RANDOM, K_HK_FREE, K_GLIBC_FREE, K_GLIBC_FREE_RANDOM, K_TLSF };

static size_t *sizes, *order;
static void **ptr;

/* Fills the blocks (sizes 16..128, fixed seed), then releases them the
 * kind's way; returns the release time and the RSS around it. */
static double run(int kind, size_t n, size_t *rss_start, size_t *rss_full, size_t *rss_after, double *user, double *sys)
{
    hk_heap_t *h = NULL;
    bool glibc = kind == K_GLIBC_FREE || kind == K_GLIBC_FREE_RANDOM;
    if (kind != K_HK_FREE && !glibc) {
        hk_heap_options_t o = HK_HEAP_OPTIONS_INIT;
        o.engine = kind == K_TLSF ? "tlsf" : "general";
        o.max_size = (size_t)1 << 30;
        o.flags = HK_HEAP_SINGLE_THREADED | (kind == K_DESTROY_HUGE ? HK_HEAP_HUGE_PAGES : 0);
        h = hk_heap_new(&o);
        if (!h) { perror("hk_heap_new"); exit(1); }
    }
    *rss_start = rss_kib();
    for (size_t i = 0; i < n; i++) {
        void *p = h ? hk_heap_malloc(h, sizes[i]) : glibc ? malloc(sizes[i]) : hk_malloc(sizes[i]);
        if (!p) { perror("malloc"); exit(1); }
        memset(p, (int)i, 16);
        ptr[i] = p;
    }
    *rss_full = rss_kib();
    double u0 = cpu(0), s0 = cpu(1), t0 = now();
    switch (kind) {
    case K_DESTROY: case K_DESTROY_HUGE: case K_TLSF: hk_heap_destroy(h); break;
    case K_HEAP_FREE: case K_HK_FREE: for (size_t i = 0; i < n; i++) hk_free(ptr[i]); break;
    case K_HEAP_FREE_RANDOM: for (size_t i = 0; i < n; i++) hk_free(ptr[order[i]]); break;
    case K_GLIBC_FREE: for (size_t i = 0; i < n; i++) free(ptr[i]); break;
    case K_GLIBC_FREE_RANDOM: for (size_t i = 0; i < n; i++) free(ptr[order[i]]); break;
    }
    double t = now() - t0;
    *user = cpu(0) - u0;
    *sys = cpu(1) - s0;
    if (kind == K_HEAP_FREE || kind == K_HEAP_FREE_RANDOM) hk_heap_destroy(h);   /* empty by now; not timed */
    if (kind == K_HK_FREE) hk_collect(1);
    if (glibc) malloc_trim(0);
    *rss_after = rss_kib();
    return t;
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 7;
    size_t n = argc > 2 ? (size_t)atoll(argv[2]) : 1000000;
    if (reps < 1 || reps > 100 || n < 1) { fprintf(stderr, "usage: bench_heapdestroy [REPS] [BLOCKS]\n"); return 2; }
    hk_option_set(HK_OPTION_PURGE_DELAY, 0);
    sizes = malloc(n * sizeof *sizes);
    order = malloc(n * sizeof *order);
    ptr = malloc(n * sizeof *ptr);
    if (!sizes || !order || !ptr) return 1;
    unsigned long long x = 42;
    for (size_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        sizes[i] = 16 + (size_t)((x >> 33) % 113);
        ptr[i] = NULL;
        order[i] = i;
    }
    for (size_t i = n - 1; i > 0; i--) {      /* Fisher-Yates, same seed every run */
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        size_t j = (size_t)((x >> 33) % (i + 1)), tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    double t[KINDS][100], us[KINDS][100], sy[KINDS][100];
    size_t rs[KINDS][100], rf[KINDS][100], ra[KINDS][100];
    for (int r = 0; r < reps; r++)
        for (int k = 0; k < KINDS; k++) t[k][r] = run(k, n, &rs[k][r], &rf[k][r], &ra[k][r], &us[k][r], &sy[k][r]);
    double med[KINDS];
    for (int k = 0; k < KINDS; k++) med[k] = median(t[k], reps);
    printf("releasing %zu blocks of 16..128 bytes (one by one: in allocation order, or random where the row says), median of %d reps\n", n, reps);
    printf("%-34s %9s %9s %9s %9s %9s %10s %10s %10s\n", "how", "wall ms", "x destroy", "x huge pg", "user ms", "sys ms", "RSS start", "RSS full", "RSS after");
    for (int k = 0; k < KINDS; k++) {
        double s[100], f[100], a[100];
        for (int r = 0; r < reps; r++) { s[r] = (double)rs[k][r]; f[r] = (double)rf[k][r]; a[r] = (double)ra[k][r]; }
        double u = median(us[k], reps), sysm = median(sy[k], reps);
        printf("%-34s %9.3f %9.1f %9.1f %9.3f %9.3f %9.1fM %9.1fM %9.1fM\n", kind_name[k], med[k] * 1e3, med[k] / med[K_DESTROY],
               med[k] / med[K_DESTROY_HUGE], u * 1e3, sysm * 1e3, median(s, reps) / 1024, median(f, reps) / 1024, median(a, reps) / 1024);
    }
    printf("(x destroy, x huge pg: wall time / the wall time of hk_heap_destroy (general), without and with HK_HEAP_HUGE_PAGES;\n"
           " sys: kernel time, for destroy almost all of it is munmap freeing the resident pages;\n");
    printf(" purge delay 0, so hk_free each also gives emptied pages back at once; RSS after: after the release, plus hk_collect(1) / malloc_trim(0) for the one-by-one rows)\n");
    return 0;
}
