/* Workload (d): false-sharing probes. Phase 1 ("scratch"): the main thread
 * allocates one small object per thread back to back; each thread frees the
 * one it was given, allocates its own and writes it hard. Phase 2
 * ("thrash"): every thread allocates small objects and writes them hard.
 * An allocator that places different threads' objects in one cache line
 * makes the cores fight over that line and the writes crawl. */
#include "bench.h"

typedef struct { int id; size_t writes; void *given; uint64_t sum; char pad[64]; } worker_t;

static void hammer(volatile unsigned char *p, size_t size, size_t writes)
{
    for (size_t i = 0; i < writes; i++) p[i % size]++;
}

static void *scratch(void *arg)
{
    worker_t *w = arg;
    free(w->given);
    for (int round = 0; round < 10; round++) {
        unsigned char *p = bench_xmalloc(8);
        memset(p, 0, 8);
        hammer(p, 8, w->writes / 10);
        w->sum += p[0];
        free(p);
    }
    return NULL;
}

static void *thrash(void *arg)
{
    worker_t *w = arg;
    for (int round = 0; round < 100; round++) {
        unsigned char *p[4];
        for (int i = 0; i < 4; i++) { p[i] = bench_xmalloc(16); memset(p[i], 0, 16); }
        for (int i = 0; i < 4; i++) { hammer(p[i], 16, w->writes / 400); w->sum += p[i][1]; }
        for (int i = 0; i < 4; i++) free(p[i]);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse(argc, argv, 0);
    size_t writes = bench_scaled(&a, 600000000) / (size_t)a.threads;
    worker_t *w = bench_xmalloc(sizeof *w * (size_t)a.threads);
    for (int i = 0; i < a.threads; i++) w[i] = (worker_t){ .id = i, .writes = writes };
    for (int i = 0; i < a.threads; i++) w[i].given = bench_xmalloc(8);
    bench_threads(a.threads, scratch, w, sizeof *w);
    bench_threads(a.threads, thrash, w, sizeof *w);
    uint64_t sum = 0;
    for (int i = 0; i < a.threads; i++) sum += w[i].sum;
    free(w);
    printf("falseshare threads=%d writes=%zu sum=%llu\n", a.threads, writes * (size_t)a.threads, (unsigned long long)sum);
    return 0;
}
