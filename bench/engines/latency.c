/* Per-operation latency of the classic engines as the heap grows: for each
 * engine and each live-block count N, fill a heap to N random-size blocks,
 * churn it once untimed (so the heap reaches its steady size and later
 * operations take no first-touch page faults), then time every operation of
 * a second churn of random frees and mallocs. Prints p50 / p99 / p99.9 /
 * max in nanoseconds. An O(1) engine's percentiles stay flat as N grows; a
 * list-walking engine's grow with N. The max includes the OS (interrupts,
 * preemption): read it next to p99.9. */
#define _GNU_SOURCE
#include "heapkit.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }
static size_t rsize(void) { uint64_t r = next(); return (r & 3) ? 16 + r % 500 : 16 + r % 8000; }

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int churn(hk_engine_t *e, void **live, size_t n, size_t ops, uint64_t *lat)
{
    for (size_t i = 0; i < ops; i++) {
        size_t k = next() % n;
        uint64_t t0 = lat ? now_ns() : 0;
        hk_engine_free(e, live[k]);
        uint64_t t1 = lat ? now_ns() : 0;
        live[k] = hk_engine_malloc(e, rsize());
        uint64_t t2 = lat ? now_ns() : 0;
        if (!live[k]) return -1;
        if (lat) { lat[2 * i] = t1 - t0; lat[2 * i + 1] = t2 - t1; }
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *engines = argc > 1 ? argv[1] : "tlsf,buddy,segregated,hole-index,explicit-addr";
    size_t ops = argc > 2 ? strtoul(argv[2], NULL, 10) : 200000;
    size_t sizes[] = { 1000, 10000, 100000, 400000 };
    uint64_t *lat = malloc(2 * ops * sizeof *lat);
    void **live = malloc(400000 * sizeof *live);
    printf("%-14s %9s %9s %8s %8s %8s %10s\n", "engine", "live", "heap MiB", "p50 ns", "p99 ns", "p99.9 ns", "max ns");
    char list[512];
    snprintf(list, sizeof list, "%s", engines);
    for (char *name = strtok(list, ","); name; name = strtok(NULL, ",")) {
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            size_t n = sizes[s];
            /* List-walking engines get slow on big heaps: cap their ops. */
            size_t my_ops = ops;
            if (strncmp(name, "implicit", 8) == 0 || strncmp(name, "explicit", 8) == 0) my_ops = ops / (n / 1000 + 1) + 1000;
            hk_engine_config_t cfg = { .max_size = (size_t)8 << 30, .flags = 0 };
            hk_engine_t *e = hk_engine_create(name, &cfg);
            if (!e) { fprintf(stderr, "latency: unknown engine %s\n", name); return 2; }
            rng = 0x9e3779b97f4a7c15ull ^ n;
            for (size_t i = 0; i < n; i++) if (!(live[i] = hk_engine_malloc(e, rsize()))) { fprintf(stderr, "latency: out of memory\n"); return 1; }
            if (churn(e, live, n, my_ops, NULL) || churn(e, live, n, my_ops, lat)) { fprintf(stderr, "latency: out of memory\n"); return 1; }
            if (hk_engine_check(e) != 0) { fprintf(stderr, "latency: %s: check() found broken invariants\n", name); return 1; }
            hk_engine_stats_t st;
            hk_engine_stats(e, &st);
            size_t m = 2 * my_ops;
            qsort(lat, m, sizeof *lat, cmp_u64);
            printf("%-14s %9zu %9.1f %8llu %8llu %8llu %10llu\n", name, n, st.peak_footprint / 1048576.0,
                   (unsigned long long)lat[m / 2], (unsigned long long)lat[m * 99 / 100],
                   (unsigned long long)lat[m * 999 / 1000], (unsigned long long)lat[m - 1]);
            hk_engine_destroy(e);
        }
    }
    free(lat);
    free(live);
    return 0;
}
