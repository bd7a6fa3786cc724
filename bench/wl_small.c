/* Workload (a): many small short-lived objects in one thread, sizes 8..512
 * skewed to the small end the way compilers and interpreters allocate; a
 * window of live objects makes lifetimes short but not zero. */
#include "bench.h"

#define WINDOW 4096

static size_t pick_size(bench_rng_t *r)
{
    uint64_t x = bench_rand(r) % 100;
    if (x < 70) return bench_range(r, 8, 64);
    if (x < 95) return bench_range(r, 65, 256);
    return bench_range(r, 257, 512);
}

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse(argc, argv, 1);
    size_t ops = bench_scaled(&a, 12000000);
    bench_rng_t r = { 42 };
    unsigned char *slot[WINDOW] = { 0 };
    size_t len[WINDOW] = { 0 };
    uint64_t sum = 0;

    for (size_t i = 0; i < ops; i++) {
        size_t k = bench_rand(&r) % WINDOW;
        if (slot[k]) {
            if (slot[k][0] != (unsigned char)k || slot[k][len[k] - 1] != (unsigned char)len[k]) bench_fail("small: payload");
            sum += slot[k][0];
            free(slot[k]);
        }
        /* every few ops a burst of temporaries, freed at once (LIFO) */
        if ((i & 15) == 0) {
            void *tmp[8];
            for (int j = 0; j < 8; j++) { tmp[j] = bench_xmalloc(16 + 8 * (size_t)j); memset(tmp[j], j, 16); }
            for (int j = 7; j >= 0; j--) free(tmp[j]);
        }
        len[k] = pick_size(&r);
        slot[k] = bench_xmalloc(len[k]);
        slot[k][0] = (unsigned char)k;
        slot[k][len[k] - 1] = (unsigned char)len[k];
    }
    for (size_t k = 0; k < WINDOW; k++) free(slot[k]);
    printf("small ops=%zu sum=%llu\n", ops, (unsigned long long)sum);
    return 0;
}
