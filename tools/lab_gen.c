/* The built-in trace set and `heapkit gen`. Every trace is produced by a
 * small seeded program (splitmix64, no libc rand), so the same seed gives
 * the same bytes on every machine; each one ends with every block freed.
 * The shapes are the classic malloc-lab ones plus a few program-like mixes. */
#include "lab.h"
#include "cmd.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* A trace under construction: ops are buffered because the header needs
 * their count; ids are handed out once each, as in the malloc-lab sets. */
typedef struct builder {
    lab_op_t *ops;
    size_t n, cap;
    uint32_t next_id;
    size_t *size;          /* by id: current size, 0 when free */
    size_t size_cap;
    uint32_t *live;        /* live ids, unordered */
    size_t n_live, live_cap;
    size_t cur, peak;
    uint64_t rng;
} builder_t;

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q) { fprintf(stderr, "heapkit: out of memory\n"); exit(1); }
    return q;
}

static void push(builder_t *b, uint32_t kind, uint32_t id, size_t size)
{
    if (b->n == b->cap) { b->cap = b->cap ? b->cap * 2 : 1024; b->ops = xrealloc(b->ops, b->cap * sizeof *b->ops); }
    b->ops[b->n++] = (lab_op_t){ kind, id, size };
}

static uint32_t b_alloc(builder_t *b, size_t size)
{
    uint32_t id = b->next_id++;
    if (id >= b->size_cap) { b->size_cap = b->size_cap ? b->size_cap * 2 : 1024; b->size = xrealloc(b->size, b->size_cap * sizeof *b->size); }
    if (b->n_live == b->live_cap) { b->live_cap = b->live_cap ? b->live_cap * 2 : 1024; b->live = xrealloc(b->live, b->live_cap * sizeof *b->live); }
    b->size[id] = size;
    b->live[b->n_live++] = id;
    b->cur += size;
    if (b->cur > b->peak) b->peak = b->cur;
    push(b, OP_ALLOC, id, size);
    return id;
}

static void b_realloc(builder_t *b, uint32_t id, size_t size)
{
    b->cur = b->cur - b->size[id] + size;
    if (b->cur > b->peak) b->peak = b->cur;
    b->size[id] = size;
    push(b, OP_REALLOC, id, size);
}

static void b_free(builder_t *b, uint32_t id)
{
    for (size_t i = b->n_live; i-- > 0;)
        if (b->live[i] == id) { b->live[i] = b->live[--b->n_live]; break; }
    b->cur -= b->size[id];
    b->size[id] = 0;
    push(b, OP_FREE, id, 0);
}

/* Frees a random live block; returns false when none is live. */
static bool b_free_random(builder_t *b)
{
    if (!b->n_live) return false;
    b_free(b, b->live[lab_rand(&b->rng) % b->n_live]);
    return true;
}

static void b_free_all_random(builder_t *b) { while (b_free_random(b)) {} }

/* Sizes spread evenly over powers of two between lo and hi (log-uniform),
 * the way real programs' request sizes spread. */
static size_t log_size(builder_t *b, size_t lo, size_t hi)
{
    int lb = 63 - __builtin_clzll(lo), hb = 63 - __builtin_clzll(hi);
    int bit = (int)lab_range(&b->rng, (uint64_t)lb, (uint64_t)hb);
    size_t a = (size_t)1 << bit, z = a * 2;
    if (a < lo) a = lo;
    if (z > hi) z = hi;
    return (size_t)lab_range(&b->rng, a, z);
}

static void b_write(builder_t *b, FILE *out)
{
    fprintf(out, "%zu\n%u\n%zu\n1\n", b->peak, b->next_id, b->n);
    for (size_t i = 0; i < b->n; i++) {
        const lab_op_t *o = &b->ops[i];
        if (o->kind == OP_FREE) fprintf(out, "f %u\n", o->id);
        else fprintf(out, "%c %u %zu\n", (char)o->kind, o->id, o->size);
    }
    free(b->ops); free(b->size); free(b->live);
}

/* Small objects of mixed sizes with random lifetimes (a structure-heavy program). */
static void gen_mixed_small(uint64_t seed, FILE *out)
{
    builder_t b = { .rng = seed };
    for (int i = 0; i < 6000; i++) {
        size_t sz = lab_range(&b.rng, 0, 9) ? log_size(&b, 8, 128) : log_size(&b, 129, 1024);
        b_alloc(&b, sz);
        if (lab_range(&b.rng, 0, 99) < 45) b_free_random(&b);
    }
    b_free_all_random(&b);
    b_write(&b, out);
}

/* Binary size pairs: small/large alternate, the large die, then requests a
 * bit larger than the freed holes arrive. The holes sit between live small
 * blocks, so no coalescing can reuse them: a test of placement and splitting. */
static void gen_binary_pairs(uint64_t seed, FILE *out)
{
    builder_t b = { .rng = seed };
    enum { N = 2000 };
    uint32_t large[N];
    size_t small_sz = 16 * lab_range(&b.rng, 1, 2), large_sz = 16 * lab_range(&b.rng, 24, 30);
    for (int i = 0; i < N; i++) {
        b_alloc(&b, small_sz + lab_range(&b.rng, 0, 7));
        large[i] = b_alloc(&b, large_sz + lab_range(&b.rng, 0, 15));
    }
    for (int i = 0; i < N; i++) b_free(&b, large[i]);
    for (int i = 0; i < N; i++) b_alloc(&b, large_sz + 64 + lab_range(&b.rng, 0, 31));
    b_free_all_random(&b);
    b_write(&b, out);
}

/* Random sizes up to 32 KiB with random lifetimes. */
static void gen_random(uint64_t seed, FILE *out)
{
    builder_t b = { .rng = seed };
    for (int i = 0; i < 2400; i++) {
        b_alloc(&b, (size_t)lab_range(&b.rng, 1, 32768));
        if (b.n_live > 8 && lab_range(&b.rng, 0, 99) < 48) b_free_random(&b);
    }
    b_free_all_random(&b);
    b_write(&b, out);
}

/* Two growing buffers (think string builder and vector), reallocated in
 * small steps, with short-lived small blocks landing right behind them:
 * an allocator that cannot grow in place copies and leaves holes behind. */
static void gen_realloc_growth(uint64_t seed, FILE *out)
{
    builder_t b = { .rng = seed };
    uint32_t v[2] = { b_alloc(&b, 512), b_alloc(&b, 64) };
    size_t sz[2] = { 512, 64 };
    uint32_t tmp[4] = { 0 };
    bool has[4] = { false };
    for (int i = 0; i < 4800; i++) {
        int w = lab_range(&b.rng, 0, 3) == 0;
        sz[w] += w ? lab_range(&b.rng, 8, 64) : lab_range(&b.rng, 32, 160);
        b_realloc(&b, v[w], sz[w]);
        int k = i & 3;
        if (has[k]) b_free(&b, tmp[k]);
        tmp[k] = b_alloc(&b, (size_t)lab_range(&b.rng, 16, 128));
        has[k] = true;
    }
    b_free_all_random(&b);
    b_write(&b, out);
}

/* Many short-lived objects (freed a few operations after birth) among a
 * sprinkling of long-lived ones that pin holes in place. */
static void gen_short_lived(uint64_t seed, FILE *out)
{
    builder_t b = { .rng = seed };
    enum { W = 8 };
    uint32_t win[W];
    size_t nwin = 0;
    for (int i = 0; i < 8000; i++) {
        if (lab_range(&b.rng, 0, 99) < 8) { b_alloc(&b, log_size(&b, 16, 512)); continue; } /* long-lived */
        uint32_t id = b_alloc(&b, log_size(&b, 16, 256));
        if (nwin == W) {
            size_t j = (size_t)lab_range(&b.rng, 0, W - 1);
            b_free(&b, win[j]);
            win[j] = id;
        } else {
            win[nwin++] = id;
        }
    }
    b_free_all_random(&b);
    b_write(&b, out);
}

/* Coalescing stress: runs of equal blocks die together, then one block as
 * large as the whole run asks for the space back; a heap that does not
 * merge neighbours has to grow every round. */
static void gen_coalescing(uint64_t seed, FILE *out)
{
    builder_t b = { .rng = seed };
    uint32_t run[16];
    uint32_t keep[64];
    size_t n_keep = 0;
    while (b.n < 14000) {
        size_t k = (size_t)lab_range(&b.rng, 2, 16), s = (size_t)lab_range(&b.rng, 1, 32) * 16;
        for (size_t i = 0; i < k; i++) run[i] = b_alloc(&b, s);
        for (size_t i = k; i > 1; i--) { /* die in a shuffled order */
            size_t j = (size_t)lab_range(&b.rng, 0, i - 1);
            uint32_t t = run[i - 1]; run[i - 1] = run[j]; run[j] = t;
        }
        for (size_t i = 0; i < k; i++) b_free(&b, run[i]);
        uint32_t big = b_alloc(&b, k * s);
        b_free(&b, big);
        if (lab_range(&b.rng, 0, 9) == 0) { /* an occasional long-lived separator */
            if (n_keep == 64) { b_free(&b, keep[0]); memmove(keep, keep + 1, 63 * sizeof *keep); n_keep--; }
            keep[n_keep++] = b_alloc(&b, (size_t)lab_range(&b.rng, 16, 256));
        }
    }
    b_free_all_random(&b);
    b_write(&b, out);
}

/* A program with phases: build a large structure of small nodes with some
 * buffers; prune it while strings arrive; load big tables and grow a few;
 * tear down. Each phase changes the size mix the previous one tuned for. */
static void gen_phases(uint64_t seed, FILE *out)
{
    builder_t b = { .rng = seed };
    for (int i = 0; i < 3000; i++)
        b_alloc(&b, lab_range(&b.rng, 0, 19) ? log_size(&b, 16, 96) : log_size(&b, 1024, 4096));
    for (int i = 0; i < 2500; i++) {
        b_free_random(&b);
        if (i & 1) b_alloc(&b, (size_t)lab_range(&b.rng, 100, 600));
    }
    uint32_t tables[40];
    size_t tsz[40];
    for (int i = 0; i < 40; i++) { tsz[i] = log_size(&b, 8192, 65536); tables[i] = b_alloc(&b, tsz[i]); }
    for (int i = 0; i < 1200; i++) {
        int t = (int)lab_range(&b.rng, 0, 39);
        tsz[t] += (size_t)lab_range(&b.rng, 64, 1024);
        if (b.size[tables[t]]) b_realloc(&b, tables[t], tsz[t]);
        else tables[t] = b_alloc(&b, tsz[t]);     /* freed below: a new table takes its place */
        b_alloc(&b, log_size(&b, 16, 128));
        if (lab_range(&b.rng, 0, 2)) b_free_random(&b);
    }
    b_free_all_random(&b);
    b_write(&b, out);
}

/* A message queue: variable-size messages freed in arrival order while the
 * queue length swings between short and long. */
static void gen_fifo_queue(uint64_t seed, FILE *out)
{
    builder_t b = { .rng = seed };
    enum { Q = 1024 };
    uint32_t q[Q];
    size_t head = 0, len = 0;
    for (int i = 0; i < 8000; i++) {
        size_t target = (size_t)(i / 500 % 2 ? 700 : 60) + (size_t)lab_range(&b.rng, 0, 40);
        if (len < target && len < Q) { q[(head + len) % Q] = b_alloc(&b, log_size(&b, 32, 2048)); len++; }
        else if (len) { b_free(&b, q[head]); head = (head + 1) % Q; len--; }
    }
    while (len) { b_free(&b, q[head]); head = (head + 1) % Q; len--; }
    b_write(&b, out);
}

const lab_gen_t lab_generators[] = {
    { "mixed-small",    "small objects of mixed sizes, random lifetimes", gen_mixed_small },
    { "binary-pairs",   "small/large pairs, large freed, larger requested", gen_binary_pairs },
    { "random",         "random sizes up to 32 KiB, random lifetimes", gen_random },
    { "realloc-growth", "two buffers grown by realloc between short-lived blocks", gen_realloc_growth },
    { "short-lived",    "many short-lived objects among a few long-lived ones", gen_short_lived },
    { "coalescing",     "runs of blocks freed together, then one block the size of the run", gen_coalescing },
    { "phases",         "a program with phases: nodes, pruning, big tables grown by realloc", gen_phases },
    { "fifo-queue",     "variable-size messages freed in FIFO order, queue length swings", gen_fifo_queue },
};
const size_t lab_n_generators = sizeof lab_generators / sizeof lab_generators[0];

int lab_mkdir_p(const char *dir)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) { errno = ENAMETOOLONG; return -1; }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0777) && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buf, 0777) && errno != EEXIST) return -1;
    return 0;
}

int lab_gen_all(const char *dir, uint64_t seed, char ***paths, size_t *n_paths)
{
    if (lab_mkdir_p(dir)) { fprintf(stderr, "heapkit: cannot create %s: %s\n", dir, strerror(errno)); return -1; }
    for (size_t i = 0; i < lab_n_generators; i++) {
        size_t len = strlen(dir) + strlen(lab_generators[i].name) + 8;
        char *path = xrealloc(NULL, len);
        snprintf(path, len, "%s/%s.rep", dir, lab_generators[i].name);
        FILE *f = fopen(path, "w");
        if (!f) { fprintf(stderr, "heapkit: cannot write %s: %s\n", path, strerror(errno)); free(path); return -1; }
        /* Each trace has its own stream, so adding a trace never changes the others. */
        uint64_t s = seed * 0x100000001B3ull + i * 0x9E3779B97F4A7C15ull + 1;
        lab_generators[i].fn(s, f);
        if (fclose(f)) { fprintf(stderr, "heapkit: cannot write %s: %s\n", path, strerror(errno)); free(path); return -1; }
        if (paths) {
            *paths = xrealloc(*paths, (*n_paths + 1) * sizeof **paths);
            (*paths)[(*n_paths)++] = path;
        } else {
            free(path);
        }
    }
    return 0;
}

int hk_cmd_gen(int argc, char **argv)
{
    const char *dir = "traces";
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: heapkit gen [--out DIR] [--seed N]\n\n"
                   "Writes heapkit's built-in malloc-lab traces into DIR (default ./traces).\n"
                   "The same seed (default 1) gives the same files on every run.\n\n");
            for (size_t k = 0; k < lab_n_generators; k++)
                printf("  %-15s %s\n", lab_generators[k].name, lab_generators[k].what);
            return 0;
        }
        if (!strcmp(argv[i], "--out") && i + 1 < argc) { dir = argv[++i]; continue; }
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            char *end;
            errno = 0;
            seed = strtoull(argv[++i], &end, 10);
            if (*end || errno || argv[i][0] == '-') { fprintf(stderr, "heapkit: gen: bad seed '%s'\n", argv[i]); return 2; }
            continue;
        }
        fprintf(stderr, "heapkit: gen: unknown argument '%s' (try --help)\n", argv[i]);
        return 2;
    }
    char **paths = NULL;
    size_t n = 0;
    int rc = lab_gen_all(dir, seed, &paths, &n);
    for (size_t i = 0; i < n; i++) { if (!rc) printf("%s\n", paths[i]); free(paths[i]); }
    free(paths);
    return rc ? 1 : 0;
}
