/* Shared helpers for the benchmark workloads: a fixed-seed PRNG, argument
 * parsing (threads, scale) and the one-line result. Workloads call only the
 * standard malloc family so any allocator can be swapped in by LD_PRELOAD. */
#ifndef HK_BENCH_H
#define HK_BENCH_H

#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>

typedef struct { uint64_t s; } bench_rng_t;

static inline uint64_t bench_rand(bench_rng_t *r)
{
    /* splitmix64: tiny state, good enough to pick sizes and victims */
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static inline size_t bench_range(bench_rng_t *r, size_t lo, size_t hi)
{
    return lo + (size_t)(bench_rand(r) % (hi - lo + 1));
}

typedef struct {
    int threads;     /* 0 on the command line: one per online core */
    double scale;    /* multiplies the amount of work; 1.0 is the default run */
} bench_args_t;

/* Usage: workload [THREADS] [SCALE]. THREADS 0 means one per core.
 * Anything else (a flag such as --threads, which atoi would read as 0,
 * text, a third argument) is refused: exit 2 with the usage. */
static inline bench_args_t bench_parse(int argc, char **argv, int default_threads)
{
    bench_args_t a = { default_threads, 1.0 };
    char *end = NULL;
    int bad = argc > 3;
    if (argc > 1) { long t = strtol(argv[1], &end, 10); bad |= end == argv[1] || *end || t < 0 || t > 4096; a.threads = (int)t; }
    if (argc > 2) { a.scale = strtod(argv[2], &end); bad |= end == argv[2] || *end || !(a.scale >= 0); }
    if (bad) {
        fprintf(stderr, "usage: %s [THREADS] [SCALE]  (THREADS 0: one per core; SCALE: work multiplier, default 1)\n", argv[0]);
        exit(2);
    }
    if (a.threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        a.threads = n > 0 ? (int)n : 1;
    }
    if (a.scale <= 0) a.scale = 1.0;
    return a;
}

static inline size_t bench_scaled(const bench_args_t *a, size_t n)
{
    size_t v = (size_t)((double)n * a->scale);
    return v ? v : 1;
}

/* Resident set size now, in KiB, from /proc/self/statm. */
static inline long bench_rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, res = 0;
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &size, &res) != 2) res = -1;
    fclose(f);
    return res < 0 ? -1 : res * (sysconf(_SC_PAGESIZE) / 1024);
}

static inline void *bench_xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) { fprintf(stderr, "out of memory (%zu bytes)\n", n); exit(2); }
    return p;
}

static inline void bench_fail(const char *what)
{
    fprintf(stderr, "workload check failed: %s\n", what);
    exit(3);
}

static inline void bench_threads(int n, void *(*fn)(void *), void *args, size_t argsize)
{
    pthread_t *t = bench_xmalloc(sizeof *t * (size_t)n);
    for (int i = 0; i < n; i++)
        if (pthread_create(&t[i], NULL, fn, (char *)args + (size_t)i * argsize) != 0) bench_fail("pthread_create");
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
    free(t);
}

#endif
