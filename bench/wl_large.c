/* Workload (f): large (64 KiB..1 MiB) and huge (8..64 MiB) blocks, the way
 * buffers, images and hash tables use them: allocate, touch every page,
 * free in random order. Allocators that return and re-map memory on every
 * free pay page faults here; those that cache pay in RSS. */
#include "bench.h"

#define WINDOW 16

static void touch(unsigned char *p, size_t n, unsigned char v)
{
    for (size_t i = 0; i < n; i += 4096) p[i] = v;
    p[n - 1] = v;
}

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse(argc, argv, 1);
    size_t large_ops = bench_scaled(&a, 12000), huge_ops = bench_scaled(&a, 30);
    bench_rng_t r = { 4096 };
    unsigned char *slot[WINDOW] = { 0 };
    size_t len[WINDOW] = { 0 };
    uint64_t sum = 0;

    for (size_t i = 0; i < large_ops; i++) {
        size_t k = bench_rand(&r) % WINDOW;
        if (slot[k]) {
            if (slot[k][0] != (unsigned char)k || slot[k][len[k] - 1] != (unsigned char)k) bench_fail("large: payload");
            sum += len[k] >> 12;
            free(slot[k]);
        }
        /* touch only the head for most, like a buffer that is only partly filled */
        len[k] = bench_range(&r, 64 << 10, 1 << 20);
        slot[k] = bench_xmalloc(len[k]);
        if (i % 8 == 0) touch(slot[k], len[k], (unsigned char)k);
        else { memset(slot[k], (int)k, 4096); slot[k][len[k] - 1] = (unsigned char)k; }
    }
    for (int k = 0; k < WINDOW; k++) { free(slot[k]); slot[k] = NULL; }

    for (size_t i = 0; i < huge_ops; i++) {
        size_t k = bench_rand(&r) % 4;
        if (slot[k]) {
            if (slot[k][len[k] / 2 / 4096 * 4096] != (unsigned char)(k + 1)) bench_fail("huge: payload");
            free(slot[k]);
        }
        len[k] = bench_range(&r, 8u << 20, 64u << 20);
        slot[k] = bench_xmalloc(len[k]);
        touch(slot[k], len[k], (unsigned char)(k + 1));
        sum += len[k] >> 20;
    }
    for (int k = 0; k < 4; k++) free(slot[k]);
    printf("large large_ops=%zu huge_ops=%zu sum=%llu\n", large_ops, huge_ops, (unsigned long long)sum);
    return 0;
}
