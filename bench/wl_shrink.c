/* Workload (h): memory shrink. Build a big linked structure of small nodes
 * (about 150 MB), free nine in ten of them in random order, then keep
 * working with what is left. What matters is peak RSS and the RSS after
 * the free: does the allocator give the pages back (despite the survivors
 * scattered through them)? Prints rss_after_kb for the runner. */
#include "bench.h"

typedef struct node { struct node *next; size_t size; unsigned char data[]; } node_t;

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse(argc, argv, 1);
    size_t n = bench_scaled(&a, 1000000);
    bench_rng_t r = { 31337 };
    node_t **all = bench_xmalloc(n * sizeof *all);
    for (size_t i = 0; i < n; i++) {
        size_t sz = bench_range(&r, 16, 240);
        all[i] = bench_xmalloc(sizeof(node_t) + sz);
        all[i]->size = sz;
        memset(all[i]->data, (int)(i & 0xff), sz);
        all[i]->next = i ? all[i - 1] : NULL;
    }
    long rss_full = bench_rss_kb();
    /* free 90% in a shuffled order, keep every tenth */
    size_t *order = bench_xmalloc(n * sizeof *order);
    for (size_t i = 0; i < n; i++) order[i] = i;
    for (size_t i = n - 1; i > 0; i--) { size_t j = bench_rand(&r) % (i + 1), t = order[i]; order[i] = order[j]; order[j] = t; }
    for (size_t i = 0; i < n; i++) {
        size_t k = order[i];
        if (k % 10 == 0) continue;
        if (all[k]->data[0] != (unsigned char)(k & 0xff)) bench_fail("shrink: payload");
        free(all[k]);
        all[k] = NULL;
    }
    free(order);
    /* keep working: a modest churn of small objects next to the survivors */
    uint64_t sum = 0;
    void *win[1024] = { 0 };
    for (size_t i = 0; i < n; i++) {
        size_t k = i % 1024;
        free(win[k]);
        win[k] = bench_xmalloc(bench_range(&r, 16, 256));
        memset(win[k], 1, 16);
        if (i % 10 == 0) sum += all[i]->data[all[i]->size - 1];
    }
    for (size_t k = 0; k < 1024; k++) free(win[k]);
    long rss_after = bench_rss_kb();
    for (size_t i = 0; i < n; i += 10) free(all[i]);
    free(all);
    printf("shrink nodes=%zu rss_full_kb=%ld rss_after_kb=%ld sum=%llu\n", n, rss_full, rss_after, (unsigned long long)sum);
    return 0;
}
