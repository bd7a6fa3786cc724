/* Workload (h): memory shrink. Build a big structure of small nodes (about
 * 150 MB), free about nine in ten in random order -- survivors are mostly
 * runs of nodes allocated together, plus a few scattered ones that pin
 * their pages -- then keep working with what is left. What matters is peak
 * RSS and the RSS after the free: does the allocator give free pages back?
 * Prints rss_after_kb for the runner. */
#include "bench.h"

#define KEEP(k) (((k) / 1000) % 10 == 0 || (k) % 4999 == 0)

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
    /* free ~90% in a shuffled order */
    size_t *order = bench_xmalloc(n * sizeof *order);
    for (size_t i = 0; i < n; i++) order[i] = i;
    for (size_t i = n - 1; i > 0; i--) { size_t j = bench_rand(&r) % (i + 1), t = order[i]; order[i] = order[j]; order[j] = t; }
    for (size_t i = 0; i < n; i++) {
        size_t k = order[i];
        if (KEEP(k)) continue;
        if (all[k]->data[0] != (unsigned char)(k & 0xff)) bench_fail("shrink: payload");
        free(all[k]);
        all[k] = NULL;
    }
    free(order);
    /* keep working: a modest churn of small objects next to the survivors */
    uint64_t sum = 0;
    void *win[1024] = { 0 };
    for (size_t i = 0; i < 3 * n; i++) {
        size_t k = i % 1024;
        free(win[k]);
        win[k] = bench_xmalloc(bench_range(&r, 16, 256));
        memset(win[k], 1, 16);
        if (i < n && KEEP(i)) sum += all[i]->data[all[i]->size - 1];
    }
    for (size_t k = 0; k < 1024; k++) free(win[k]);
    long rss_after = bench_rss_kb();
    for (size_t i = 0; i < n; i++) free(all[i]);
    free(all);
    printf("shrink nodes=%zu rss_full_kb=%ld rss_after_kb=%ld sum=%llu\n", n, rss_full, rss_after, (unsigned long long)sum);
    return 0;
}
