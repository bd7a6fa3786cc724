/* Workload (j): mid-size blocks (the rptest pattern). Each thread keeps
 * 2000 live slots and replaces a random one per step with a block of
 * 16 B-64 KiB, sizes log-uniform (every power of two as likely, so most of
 * the bytes are in blocks of 4-64 KiB: I/O buffers, decoded records,
 * documents), writing the first 64 bytes and the last one. One replaced
 * block in eight goes into a shared exchange instead, and the block it
 * displaces there (most often another thread's) is freed: cross-thread
 * frees of mid-size blocks, which come back to pages that hold only a few
 * of them. */
#include "bench.h"

#define SLOTS 2000
#define XN    1024

typedef struct { int id; size_t ops; uint64_t sum; char pad[64]; } worker_t;

static unsigned char *xch[XN];
static size_t xlen[XN];
static pthread_mutex_t xlock = PTHREAD_MUTEX_INITIALIZER;

static void fill(unsigned char *p, size_t n)
{
    memset(p, (int)(n & 0xff), n < 64 ? n : 64);
    p[n - 1] = (unsigned char)((n >> 8) ^ 0x5a);
}

static void check(const unsigned char *p, size_t n)
{
    if (p[0] != (unsigned char)(n & 0xff) || p[n - 1] != (unsigned char)((n >> 8) ^ 0x5a)) bench_fail("midsize: payload");
}

static size_t pick_size(bench_rng_t *r)
{
    unsigned e = 4 + (unsigned)(bench_rand(r) % 12);      /* 16 B .. 64 KiB - 1 */
    return ((size_t)1 << e) + (size_t)(bench_rand(r) & (((size_t)1 << e) - 1));
}

static void *run(void *arg)
{
    worker_t *w = arg;
    bench_rng_t r = { 5000u + (unsigned)w->id };
    unsigned char **slot = bench_xmalloc(SLOTS * sizeof *slot);
    size_t *len = bench_xmalloc(SLOTS * sizeof *len);
    memset(slot, 0, SLOTS * sizeof *slot);
    for (size_t op = 0; op < w->ops; op++) {
        size_t i = bench_rand(&r) % SLOTS;
        if (slot[i]) {
            /* the checksum counts only this thread's own blocks: it does not
             * depend on how the threads interleave at the exchange */
            check(slot[i], len[i]);
            w->sum += len[i];
            if (bench_rand(&r) % 8 == 0) {
                size_t k = bench_rand(&r) % XN;
                pthread_mutex_lock(&xlock);
                unsigned char *old = xch[k];
                size_t oldlen = xlen[k];
                xch[k] = slot[i];
                xlen[k] = len[i];
                pthread_mutex_unlock(&xlock);
                if (old) { check(old, oldlen); free(old); }
            } else {
                free(slot[i]);
            }
        }
        len[i] = pick_size(&r);
        slot[i] = bench_xmalloc(len[i]);
        fill(slot[i], len[i]);
    }
    for (size_t i = 0; i < SLOTS; i++)
        if (slot[i]) { check(slot[i], len[i]); w->sum += len[i]; free(slot[i]); }
    free(slot);
    free(len);
    return NULL;
}

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse(argc, argv, 0);
    size_t total = bench_scaled(&a, 3000000);
    worker_t *w = bench_xmalloc(sizeof *w * (size_t)a.threads);
    for (int i = 0; i < a.threads; i++) w[i] = (worker_t){ .id = i, .ops = total / (size_t)a.threads };
    bench_threads(a.threads, run, w, sizeof *w);
    for (size_t k = 0; k < XN; k++)
        if (xch[k]) { check(xch[k], xlen[k]); free(xch[k]); }
    uint64_t sum = 0;
    for (int i = 0; i < a.threads; i++) sum += w[i].sum;
    free(w);
    printf("midsize threads=%d ops=%zu sum=%llu\n", a.threads, total / (size_t)a.threads * (size_t)a.threads, (unsigned long long)sum);
    return 0;
}
