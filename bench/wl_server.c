/* Workload (c): a server. A table of long-lived sessions is built first;
 * worker threads then serve requests: each allocates a request buffer and a
 * few parsed strings (short-lived), and sometimes replaces a session's
 * attribute, freeing a string another thread may have allocated. */
#include "bench.h"

#define SESSIONS 20000
#define STRIPES 64

typedef struct { char *name; char *attr; size_t attr_len; unsigned char *state; } session_t;

static session_t sess[SESSIONS];
static pthread_mutex_t stripe[STRIPES];

typedef struct { int id; size_t requests; uint64_t sum; char pad[64]; } worker_t;

static char *make_string(bench_rng_t *r, size_t lo, size_t hi, size_t *len_out)
{
    size_t n = bench_range(r, lo, hi);
    char *s = bench_xmalloc(n + 1);
    memset(s, 'a' + (int)(n % 26), n);
    s[n] = 0;
    if (len_out) *len_out = n;
    return s;
}

static void *run(void *arg)
{
    worker_t *w = arg;
    bench_rng_t r = { 7000u + (unsigned)w->id };
    for (size_t q = 0; q < w->requests; q++) {
        size_t blen = bench_range(&r, 64, 4096);
        char *buf = bench_xmalloc(blen);
        memset(buf, 'x', blen < 256 ? blen : 256);
        char *parts[6];
        int np = 2 + (int)(bench_rand(&r) % 5);
        for (int i = 0; i < np; i++) parts[i] = make_string(&r, 8, 120, NULL);
        size_t k = bench_rand(&r) % SESSIONS;
        pthread_mutex_t *m = &stripe[k % STRIPES];
        pthread_mutex_lock(m);
        /* only fields no thread changes go into the checksum, so it does not
         * depend on the interleaving */
        w->sum += (unsigned char)sess[k].name[0] + sess[k].state[k % 512];
        if (strlen(sess[k].attr) != sess[k].attr_len) bench_fail("server: attribute");
        if (bench_rand(&r) % 4 == 0) {
            free(sess[k].attr);
            sess[k].attr = make_string(&r, 16, 400, &sess[k].attr_len);
        }
        pthread_mutex_unlock(m);
        for (int i = np - 1; i >= 0; i--) { w->sum += (unsigned char)parts[i][0]; free(parts[i]); }
        free(buf);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    bench_args_t a = bench_parse(argc, argv, 0);
    size_t total = bench_scaled(&a, 1600000);
    bench_rng_t r = { 99 };
    for (int i = 0; i < STRIPES; i++) pthread_mutex_init(&stripe[i], NULL);
    for (size_t k = 0; k < SESSIONS; k++) {
        sess[k].name = make_string(&r, 8, 40, NULL);
        sess[k].attr = make_string(&r, 16, 400, &sess[k].attr_len);
        sess[k].state = bench_xmalloc(512);
        memset(sess[k].state, (int)(k & 0xff), 512);
    }
    worker_t *w = bench_xmalloc(sizeof *w * (size_t)a.threads);
    for (int i = 0; i < a.threads; i++) w[i] = (worker_t){ .id = i, .requests = total / (size_t)a.threads };
    bench_threads(a.threads, run, w, sizeof *w);
    uint64_t sum = 0;
    for (int i = 0; i < a.threads; i++) sum += w[i].sum;
    for (size_t k = 0; k < SESSIONS; k++) { free(sess[k].name); free(sess[k].attr); free(sess[k].state); }
    free(w);
    printf("server threads=%d requests=%zu sum=%llu\n", a.threads, total, (unsigned long long)sum);
    return 0;
}
