/* Workload (b): producer/consumer. Every thread allocates batches of blocks
 * and hands them to the next thread in a ring, which checks and frees them:
 * every block is freed by a thread other than the one that allocated it
 * (with one thread the ring is the thread itself). */
#include "bench.h"
#include <sched.h>

#define BATCH 64
#define MAX_QUEUED 32

typedef struct batch { struct batch *next; int n; unsigned char *p[BATCH]; size_t len[BATCH]; } batch_t;

typedef struct {
    pthread_mutex_t lock;
    batch_t *head, *tail;
    int queued;
    char pad[64];
} inbox_t;

typedef struct { int id, nthreads; size_t batches; uint64_t sum; char pad[64]; } worker_t;

static inbox_t *inbox;

static batch_t *take(inbox_t *b)
{
    pthread_mutex_lock(&b->lock);
    batch_t *x = b->head;
    if (x) { b->head = x->next; if (!b->head) b->tail = NULL; b->queued--; }
    pthread_mutex_unlock(&b->lock);
    return x;
}

static int put(inbox_t *b, batch_t *x)
{
    pthread_mutex_lock(&b->lock);
    int ok = b->queued < MAX_QUEUED;
    if (ok) {
        x->next = NULL;
        if (b->tail) b->tail->next = x; else b->head = x;
        b->tail = x;
        b->queued++;
    }
    pthread_mutex_unlock(&b->lock);
    return ok;
}

static size_t consume(worker_t *w)
{
    batch_t *x = take(&inbox[w->id]);
    if (!x) return 0;
    for (int i = 0; i < x->n; i++) {
        if (x->p[i][0] != (unsigned char)x->len[i] || x->p[i][x->len[i] - 1] != 0xab) bench_fail("prodcons: payload");
        w->sum += x->len[i];
        free(x->p[i]);
    }
    free(x);
    return 1;
}

static void *run(void *arg)
{
    worker_t *w = arg;
    bench_rng_t r = { 1000u + (unsigned)w->id };
    inbox_t *next = &inbox[(w->id + 1) % w->nthreads];
    size_t made = 0, eaten = 0;
    while (made < w->batches || eaten < w->batches) {
        if (made < w->batches) {
            batch_t *x = bench_xmalloc(sizeof *x);
            x->n = BATCH;
            for (int i = 0; i < BATCH; i++) {
                size_t n = bench_range(&r, 16, 256);
                x->p[i] = bench_xmalloc(n);
                x->len[i] = n;
                x->p[i][0] = (unsigned char)n;
                x->p[i][n - 1] = 0xab;
            }
            while (!put(next, x)) {
                size_t got = consume(w);
                eaten += got;
                if (!got) sched_yield();
            }
            made++;
        }
        size_t got = consume(w);
        eaten += got;
        if (!got && made >= w->batches) sched_yield();
    }
    return NULL;
}

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse(argc, argv, 0);
    size_t total = bench_scaled(&a, 60000);   /* batches over all threads */
    worker_t *w = bench_xmalloc(sizeof *w * (size_t)a.threads);
    inbox = bench_xmalloc(sizeof *inbox * (size_t)a.threads);
    for (int i = 0; i < a.threads; i++) {
        pthread_mutex_init(&inbox[i].lock, NULL);
        inbox[i].head = inbox[i].tail = NULL;
        inbox[i].queued = 0;
        w[i] = (worker_t){ .id = i, .nthreads = a.threads, .batches = total / (size_t)a.threads, .sum = 0 };
    }
    bench_threads(a.threads, run, w, sizeof *w);
    uint64_t sum = 0;
    for (int i = 0; i < a.threads; i++) sum += w[i].sum;
    printf("prodcons threads=%d blocks=%zu sum=%llu\n", a.threads, total / (size_t)a.threads * (size_t)a.threads * BATCH,
           (unsigned long long)sum);
    free(w);
    free(inbox);
    return 0;
}
