/* Pool, slab, tpool and arena throughput against malloc/free doing the same
 * job. One run = one (job, allocator) pair in a fresh process, so peak RSS
 * (VmHWM) is the job's own; bench/pools/run.sh repeats, interleaves, takes
 * medians and runs the malloc baseline under glibc and mimalloc.
 *
 *   bench_pools JOB IMPL      JOB: batch | churn | burst | mt | arena   IMPL: malloc | pool | tpool | slab | arena | none
 * none (burst and churn only) is no allocator at all: every alloc returns the
 * same object and free does nothing. It measures the job's own loop (the
 * writes and reads of the objects), which bounds the ratio any allocator
 * can reach against malloc.
 * Each allocator is called the way a program calls it: the job loops are
 * instantiated once per allocator with direct calls, so the pools' inline
 * fast paths are inlined (as in any program that includes heapkit/pool.h)
 * and malloc/free are ordinary calls into the C library.
 * prints: JOB IMPL ops_per_s peak_rss_kib rss_start_kib rss_after_kib */
#define _GNU_SOURCE
#include "heapkit/pool.h"
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>

enum { OBJ = 64, N = 100000, ROUNDS = 100, LIVE = 10000, CHURN = 20000000, ARENA_N = 100000, ARENA_ROUNDS = 200 };

static size_t statm_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long sz = 0, res = 0;
    if (f) { if (fscanf(f, "%lu %lu", &sz, &res) != 2) res = 0; fclose(f); }
    return res * (size_t)(sysconf(_SC_PAGESIZE) / 1024);
}
static size_t hwm_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t v = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %zu", &v) == 1) break;
    if (f) fclose(f);
    return v;
}
static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);  /* CPU time: fair on a shared, loaded machine */
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

typedef struct impl {
    void *(*alloc)(void *h);
    int (*free)(void *h, void *p);
    void *h;
} impl_t;

static void *m_alloc(void *h) { (void)h; return malloc(OBJ); }
static int m_free(void *h, void *p) { (void)h; free(p); return 0; }
static uint64_t none_obj[8] __attribute__((aligned(64)));
static void *z_alloc(void *h) { (void)h; return none_obj; }
static int z_free(void *h, void *p) { (void)h; (void)p; return 0; }
static void *p_alloc(void *h) { return hk_pool_alloc(h); }
static int p_free(void *h, void *p) { return hk_pool_free(h, p); }
static void *t_alloc(void *h) { return hk_tpool_alloc(h); }
static int t_free(void *h, void *p) { return hk_tpool_free(h, p); }
static void *s_alloc(void *h) { return hk_slab_alloc(h); }
static int s_free(void *h, void *p) { return hk_slab_free(h, p); }

static void **ptrs;
static uint32_t *perm;
static volatile uint64_t sink;

/* The same work for every allocator. The jobs are always_inline and each
 * allocator gets its own copy with constant function pointers (below), so
 * the compiler turns every call into a direct one. */
#define JOB static inline __attribute__((always_inline)) double
JOB job_batch(const impl_t *im)
{
    double t0 = now();
    for (int r = 0; r < ROUNDS; r++) {
        for (uint32_t i = 0; i < N; i++) {
            uint64_t *p = im->alloc(im->h);
            p[0] = i;
            ptrs[i] = p;
        }
        for (uint32_t i = 0; i < N; i++) {
            uint64_t *p = ptrs[perm[i]];
            sink += p[0];
            im->free(im->h, p);
        }
    }
    double t = now() - t0;
    return 2.0 * N * ROUNDS / t;
}

JOB job_churn(const impl_t *im)
{
    for (int i = 0; i < LIVE; i++) ptrs[i] = im->alloc(im->h);
    uint64_t s = 88172645463325252ull;
    double t0 = now();
    for (int i = 0; i < CHURN; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        uint32_t k = (uint32_t)(s % LIVE);
        im->free(im->h, ptrs[k]);
        uint64_t *p = im->alloc(im->h);
        p[0] = s;
        ptrs[k] = p;
    }
    double t = now() - t0;
    for (int i = 0; i < LIVE; i++) im->free(im->h, ptrs[i]);
    return 2.0 * CHURN / t;
}

/* Request-style bursts: 64 objects allocated, used, freed; memory stays hot,
 * so this measures the allocator itself rather than cache misses. */
JOB job_burst(const impl_t *im)
{
    enum { B = 64, BURSTS = 500000 };
    double t0 = now();
    for (int r = 0; r < BURSTS; r++) {
        for (int i = 0; i < B; i++) {
            uint64_t *p = im->alloc(im->h);
            p[0] = (uint64_t)i;
            ptrs[i] = p;
        }
        for (int i = 0; i < B; i++) {
            uint64_t *p = ptrs[(i * 37) % B];
            sink += p[0];
            im->free(im->h, p);
        }
    }
    double t = now() - t0;
    return 2.0 * B * BURSTS / t;
}

/* Two threads doing bursts on one shared allocator (the pool with its lock,
 * the tpool with its caches); half of each burst is freed by the other
 * thread through a hand-off slot. Rate is ops per summed thread CPU-second,
 * so time burned spinning on a lock counts against it. */
enum { MT_THREADS = 2, MT_B = 64, MT_BURSTS = 200000 };
typedef struct mt_arg { const impl_t *im; double cpu; void *handoff[MT_B]; volatile int ready; struct mt_arg *peer; } mt_arg_t;

static inline __attribute__((always_inline)) void mt_worker(mt_arg_t *a, const impl_t *im)
{
    void *mine[MT_B];
    double t0 = now();
    for (int r = 0; r < MT_BURSTS; r++) {
        for (int i = 0; i < MT_B; i++) { uint64_t *p = im->alloc(im->h); p[0] = (uint64_t)i; mine[i] = p; }
        for (int i = 0; i < MT_B / 2; i++) im->free(im->h, mine[i]);
        /* Hand the other half to the peer if its slot is free, else free locally. */
        if (!__atomic_load_n(&a->peer->ready, __ATOMIC_ACQUIRE)) {
            for (int i = MT_B / 2; i < MT_B; i++) a->peer->handoff[i] = mine[i];
            __atomic_store_n(&a->peer->ready, 1, __ATOMIC_RELEASE);
        } else {
            for (int i = MT_B / 2; i < MT_B; i++) im->free(im->h, mine[i]);
        }
        if (__atomic_load_n(&a->ready, __ATOMIC_ACQUIRE)) {
            for (int i = MT_B / 2; i < MT_B; i++) im->free(im->h, a->handoff[i]);
            __atomic_store_n(&a->ready, 0, __ATOMIC_RELEASE);
        }
    }
    a->cpu = now() - t0;
}

static double job_mt(const impl_t *im, void *(*worker)(void *))
{
    static mt_arg_t args[MT_THREADS];
    pthread_t th[MT_THREADS];
    for (int i = 0; i < MT_THREADS; i++) args[i] = (mt_arg_t){ .im = im, .peer = &args[(i + 1) % MT_THREADS] };
    for (int i = 0; i < MT_THREADS; i++) pthread_create(&th[i], NULL, worker, &args[i]);
    for (int i = 0; i < MT_THREADS; i++) pthread_join(th[i], NULL);
    double cpu = 0;
    for (int i = 0; i < MT_THREADS; i++) {
        cpu += args[i].cpu;
        if (args[i].ready) for (int k = MT_B / 2; k < MT_B; k++) im->free(im->h, args[i].handoff[k]);
    }
    return 2.0 * MT_B * MT_BURSTS * MT_THREADS / cpu;
}

/* One copy of every job per allocator, with its functions as constants. */
#define INSTANTIATE(tag, A, F) \
    static double batch_##tag(void *h) { const impl_t im = { A, F, h }; return job_batch(&im); } \
    static double churn_##tag(void *h) { const impl_t im = { A, F, h }; return job_churn(&im); } \
    static double burst_##tag(void *h) { const impl_t im = { A, F, h }; return job_burst(&im); } \
    static void *mtw_##tag(void *v) { const impl_t im = { A, F, ((mt_arg_t *)v)->im->h }; mt_worker(v, &im); return NULL; } \
    static double mt_##tag(void *h) { const impl_t im = { A, F, h }; return job_mt(&im, mtw_##tag); }
INSTANTIATE(m, m_alloc, m_free)
INSTANTIATE(z, z_alloc, z_free)
INSTANTIATE(p, p_alloc, p_free)
INSTANTIATE(t, t_alloc, t_free)
INSTANTIATE(s, s_alloc, s_free)
typedef struct jobs { double (*batch)(void *), (*churn)(void *), (*burst)(void *), (*mt)(void *); } jobs_t;
#define JOBS(tag) (jobs_t){ batch_##tag, churn_##tag, burst_##tag, mt_##tag }

/* Many small objects of mixed sizes that all die together. */
static double job_arena(int use_arena)
{
    hk_arena_t *a = use_arena ? hk_arena_create(0) : NULL;
    double t0 = now();
    for (int r = 0; r < ARENA_ROUNDS; r++) {
        for (uint32_t i = 0; i < ARENA_N; i++) {
            size_t sz = 16 + (i * 7 % 8) * 16;
            uint64_t *p = use_arena ? hk_arena_alloc(a, sz) : malloc(sz);
            p[0] = i;
            if (!use_arena) ptrs[i] = p;
        }
        if (use_arena) hk_arena_reset(a);
        else for (uint32_t i = 0; i < ARENA_N; i++) free(ptrs[i]);
    }
    double t = now() - t0;
    if (a) hk_arena_destroy(a);
    return (double)ARENA_N * ARENA_ROUNDS / t;
}

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: %s batch|churn|arena malloc|pool|tpool|slab|arena\n", argv[0]); return 2; }
    const char *job = argv[1], *which = argv[2];
    ptrs = malloc(sizeof(void *) * (ARENA_N > N ? ARENA_N : N));
    perm = malloc(sizeof(uint32_t) * N);
    /* A fixed scattered order: i * 7919 mod N visits every slot (gcd = 1). */
    for (uint32_t i = 0; i < N; i++) perm[i] = (uint32_t)((uint64_t)i * 7919 % N);
    memset(ptrs, 0, sizeof(void *) * (ARENA_N > N ? ARENA_N : N));
    size_t start = statm_kib();
    double ops;
    if (!strcmp(job, "arena")) {
        ops = job_arena(!strcmp(which, "arena"));
    } else {
        void *h = NULL;
        jobs_t jobs = JOBS(m);
        hk_pool_options_t locked = { .flags = HK_POOL_THREAD_SAFE };
        if (!strcmp(which, "none")) {
            if (strcmp(job, "burst") && strcmp(job, "churn")) { fprintf(stderr, "none: burst and churn only\n"); return 2; }
            jobs = JOBS(z);
            h = none_obj;
        } else if (!strcmp(which, "pool")) { jobs = JOBS(p); h = hk_pool_create(OBJ, 0, !strcmp(job, "mt") ? &locked : NULL); }
        else if (!strcmp(which, "tpool")) { jobs = JOBS(t); h = hk_tpool_create(OBJ, 0, NULL); }
        else if (!strcmp(which, "slab")) { jobs = JOBS(s); h = hk_slab_cache_create("bench", OBJ, 0, NULL, NULL, NULL); }
        else if (strcmp(which, "malloc")) { fprintf(stderr, "unknown allocator %s\n", which); return 2; }
        if (strcmp(which, "malloc") && strcmp(which, "none") && !h) { perror("create"); return 1; }
        ops = !strcmp(job, "batch") ? jobs.batch(h) : !strcmp(job, "burst") ? jobs.burst(h) :
              !strcmp(job, "mt") ? jobs.mt(h) : jobs.churn(h);
        if (!strcmp(which, "pool")) hk_pool_destroy(h);
        else if (!strcmp(which, "tpool")) hk_tpool_destroy(h);
        else if (!strcmp(which, "slab")) hk_slab_cache_destroy(h);
    }
    size_t after = statm_kib();
    printf("%s %s %.0f %zu %zu %zu\n", job, which, ops, hwm_kib(), start, after);
    return 0;
}
