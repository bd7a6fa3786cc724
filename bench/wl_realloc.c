/* Workload (e): realloc growth. Strings grow by small appends with an
 * exact-size realloc each time (naive string builders), vectors grow by
 * doubling; many grow at once, so their blocks interleave in the heap. */
#include "bench.h"

#define LIVE 64

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse(argc, argv, 1);
    size_t rounds = bench_scaled(&a, 60000);
    bench_rng_t r = { 2024 };
    char *s[LIVE] = { 0 };
    size_t len[LIVE] = { 0 }, target[LIVE] = { 0 };
    uint64_t *v[LIVE] = { 0 };
    size_t vlen[LIVE] = { 0 }, vcap[LIVE] = { 0 };
    uint64_t sum = 0;

    for (size_t round = 0; round < rounds; round++) {
        for (int i = 0; i < LIVE; i++) {
            if (!s[i]) { target[i] = bench_range(&r, 16, bench_rand(&r) % 8 ? 2048 : 65536); len[i] = 0; }
            size_t add = bench_range(&r, 1, 64);
            char *n = realloc(s[i], len[i] + add + 1);
            if (!n) bench_fail("realloc: out of memory");
            s[i] = n;
            memset(s[i] + len[i], 'a' + (int)(len[i] % 26), add);
            len[i] += add;
            s[i][len[i]] = 0;
            if (len[i] >= target[i]) {
                /* the first byte was written when the string was empty */
                if (s[i][0] != 'a') bench_fail("realloc: string lost its data");
                sum += len[i];
                free(s[i]);
                s[i] = NULL;
            }
            /* vectors: push a few elements, doubling the capacity */
            for (int k = 0; k < 4; k++) {
                if (vlen[i] == vcap[i]) {
                    vcap[i] = vcap[i] ? vcap[i] * 2 : 4;
                    uint64_t *nv = realloc(v[i], vcap[i] * sizeof *nv);
                    if (!nv) bench_fail("realloc: out of memory");
                    v[i] = nv;
                }
                v[i][vlen[i]] = vlen[i];
                vlen[i]++;
            }
            if (vlen[i] >= 16384 || bench_rand(&r) % 512 == 0) {
                if (v[i][vlen[i] - 1] != vlen[i] - 1 || v[i][0] != 0) bench_fail("realloc: vector lost its data");
                sum += vlen[i];
                free(v[i]);
                v[i] = NULL;
                vlen[i] = vcap[i] = 0;
            }
        }
    }
    for (int i = 0; i < LIVE; i++) { free(s[i]); free(v[i]); }
    printf("realloc rounds=%zu sum=%llu\n", rounds, (unsigned long long)sum);
    return 0;
}
