/* Workload (g): thread churn (the larson pattern). Each of THREADS chains
 * owns an array of live objects. A thread of the chain replaces random
 * objects (free the old one, allocate a new one) for a while, then starts
 * the next thread of its chain, hands it the array and exits: nearly every
 * object is freed by a thread other than the one that allocated it, most
 * often after that thread is gone. Servers that spawn a thread per
 * connection or grow and shrink their thread pools do this. */
#include "bench.h"

#define OBJECTS 2000
#define ROUNDS  4000      /* replacements per thread */

typedef struct {
    unsigned char *obj[OBJECTS];
    size_t len[OBJECTS];
    bench_rng_t r;
    size_t gens_left;
    uint64_t sum;
} chain_t;

static pthread_mutex_t done_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;
static int chains_done;

static size_t pick_size(bench_rng_t *r)
{
    uint64_t x = bench_rand(r) % 100;
    if (x < 80) return bench_range(r, 16, 256);
    if (x < 98) return bench_range(r, 257, 1024);
    return bench_range(r, 1025, 8192);
}

static void fill(unsigned char *p, size_t n)
{
    p[0] = (unsigned char)n;
    p[n - 1] = (unsigned char)(n >> 3);
}

static void *run(void *arg);

static void next_thread(chain_t *c)
{
    pthread_attr_t at;
    pthread_t t;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &at, run, c) != 0) bench_fail("churn: pthread_create");
    pthread_attr_destroy(&at);
}

static void *run(void *arg)
{
    chain_t *c = arg;
    for (int i = 0; i < ROUNDS; i++) {
        size_t k = bench_rand(&c->r) % OBJECTS;
        unsigned char *p = c->obj[k];
        size_t n = c->len[k];
        if (p[0] != (unsigned char)n || p[n - 1] != (unsigned char)(n >> 3)) bench_fail("churn: payload");
        c->sum += n;
        free(p);
        n = pick_size(&c->r);
        c->obj[k] = bench_xmalloc(n);
        c->len[k] = n;
        fill(c->obj[k], n);
    }
    if (--c->gens_left > 0) {
        next_thread(c);
        return NULL;
    }
    pthread_mutex_lock(&done_mu);
    chains_done++;
    pthread_cond_signal(&done_cv);
    pthread_mutex_unlock(&done_mu);
    return NULL;
}

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse(argc, argv, 0);
    size_t gens = bench_scaled(&a, 1200) / (size_t)a.threads;
    if (gens == 0) gens = 1;
    chain_t **c = bench_xmalloc(sizeof *c * (size_t)a.threads);
    for (int i = 0; i < a.threads; i++) {
        c[i] = bench_xmalloc(sizeof **c);
        c[i]->r = (bench_rng_t){ 5000u + (unsigned)i };
        c[i]->gens_left = gens;
        c[i]->sum = 0;
        for (int k = 0; k < OBJECTS; k++) {
            c[i]->len[k] = pick_size(&c[i]->r);
            c[i]->obj[k] = bench_xmalloc(c[i]->len[k]);
            fill(c[i]->obj[k], c[i]->len[k]);
        }
    }
    for (int i = 0; i < a.threads; i++) next_thread(c[i]);
    pthread_mutex_lock(&done_mu);
    while (chains_done < a.threads) pthread_cond_wait(&done_cv, &done_mu);
    pthread_mutex_unlock(&done_mu);
    uint64_t sum = 0;
    for (int i = 0; i < a.threads; i++) {
        for (int k = 0; k < OBJECTS; k++) free(c[i]->obj[k]);
        sum += c[i]->sum;
        free(c[i]);
    }
    free(c);
    printf("churn threads=%d generations=%zu sum=%llu\n", a.threads, gens * (size_t)a.threads, (unsigned long long)sum);
    return 0;
}
