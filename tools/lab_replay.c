/* Replaying one trace on one engine (or the system malloc), in passes:
 * a verification pass (alignment, payload patterns, check() and the
 * footprint high-water mark), a latency pass (clock around every op), timed
 * passes (no checks, median of N) and, for pictures, a pass that stops at
 * the op where the footprint peaked and walks the heap. Each run happens in
 * a child process so a crashing engine becomes a FAIL row, not a dead lab. */
#define _GNU_SOURCE
#include "lab.h"
#include "classic/engine_impl.h"
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

/* ---- the allocator under test: an engine, or the system malloc (e == NULL) */

typedef struct backend {
    hk_engine_t *e;
    size_t sys_base;      /* system: mallinfo2 footprint before the run */
} backend_t;

static inline void *be_malloc(backend_t *b, size_t n)
{
    return b->e ? hk_engine_malloc(b->e, n) : malloc(n ? n : 1);
}
static inline void *be_realloc(backend_t *b, void *p, size_t n)
{
    /* realloc(p, 0) frees in glibc; the lab means "a block of 0 bytes". */
    return b->e ? hk_engine_realloc(b->e, p, n) : realloc(p, n ? n : 1);
}
static inline int be_free(backend_t *b, void *p)
{
    if (b->e) return hk_engine_free(b->e, p);
    free(p);
    return 0;
}

static size_t sys_footprint(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.arena + mi.hblkhd;
}

static int be_open(backend_t *b, const char *engine)
{
    memset(b, 0, sizeof *b);
    if (!strcmp(engine, "system")) {
        /* The footprint charged to the trace is what the C library holds
         * from the OS less what the lab itself has allocated: free space
         * the arena already had counts, as glibc took it for the program. */
        malloc_trim(0);
        struct mallinfo2 mi = mallinfo2();
        b->sys_base = mi.uordblks + mi.hblkhd;
        return 0;
    }
    hk_engine_config_t cfg = { .max_size = (size_t)8 << 30, .flags = 0 };
    b->e = hk_engine_create(engine, &cfg);
    return b->e ? 0 : -1;
}

static void be_close(backend_t *b)
{
    if (b->e) hk_engine_destroy(b->e);
    b->e = NULL;
}

/* ---- payload patterns: a word sequence seeded by (block id, generation),
 * so a stale copy of an earlier block with the same id does not pass. */

static inline uint64_t pat_seed(uint32_t id, uint32_t gen)
{
    uint64_t s = ((uint64_t)gen << 32 | id) + 0x632BE59BD9B4E019ull;
    return lab_rand(&s);
}
static inline uint64_t pat_word(uint64_t seed, size_t i) { return seed + i * 0x9E3779B97F4A7C15ull; }
static inline unsigned char pat_byte(uint64_t seed, size_t off) { return (unsigned char)(pat_word(seed, off / 8) >> (off % 8 * 8)); }

static void pat_write(unsigned char *p, uint64_t seed, size_t from, size_t to)
{
    size_t off = from;
    for (; off < to && off % 8; off++) p[off] = pat_byte(seed, off);
    for (; off + 8 <= to; off += 8) { uint64_t w = pat_word(seed, off / 8); memcpy(p + off, &w, 8); }
    for (; off < to; off++) p[off] = pat_byte(seed, off);
}

/* Offset of the first wrong byte in [0, n), or SIZE_MAX when all are right. */
static size_t pat_verify(const unsigned char *p, uint64_t seed, size_t n)
{
    size_t off = 0;
    for (; off + 8 <= n; off += 8) {
        uint64_t w;
        memcpy(&w, p + off, 8);
        if (w != pat_word(seed, off / 8)) break;
    }
    for (; off < n; off++) if (p[off] != pat_byte(seed, off)) return off;
    return SIZE_MAX;
}

/* ---- per-run state */

typedef struct run {
    const lab_trace_t *t;
    void **ptr;
    size_t *size;
    uint32_t *gen;
    lab_result_t *r;
} run_t;

static void fail(run_t *run, size_t k, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(run_t *run, size_t k, const char *fmt, ...)
{
    if (!run->r->ok) return;    /* keep the first problem: later ones follow from it */
    run->r->ok = false;
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Ops start on line 5 of a trace whose header has one field per line. */
    snprintf(run->r->error, sizeof run->r->error, "op %zu (line %zu): %s", k + 1, k + 5, msg);
}

static void run_reset(run_t *run)
{
    memset(run->ptr, 0, run->t->n_ids * sizeof *run->ptr);
    memset(run->size, 0, run->t->n_ids * sizeof *run->size);
}

/* Frees whatever a trace left allocated, so the next pass starts clean. */
static void free_leftovers(run_t *run, backend_t *b)
{
    for (size_t i = 0; i < run->t->n_ids; i++)
        if (run->ptr[i]) { be_free(b, run->ptr[i]); run->ptr[i] = NULL; }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static size_t auto_check_every(const lab_trace_t *t)
{
    /* check() walks the whole heap: every op costs O(ops * blocks). Up to
     * about 30M block visits we check every op, beyond that every K ops. */
    size_t work = t->n_ops * (t->n_ids < 4096 ? t->n_ids : 4096);
    size_t k = work / 30000000 + 1;
    return k;
}

static size_t peak_of(backend_t *b)
{
    if (!b->e) {
        size_t f = sys_footprint();
        return f > b->sys_base ? f - b->sys_base : 0;
    }
    return b->e->heap.peak;
}

/* The verification pass. Returns the index of the op after which the
 * footprint reached its final peak (for the heap map). */
static size_t pass_verify(run_t *run, backend_t *b, size_t check_every)
{
    const lab_trace_t *t = run->t;
    lab_result_t *r = run->r;
    size_t align = 16;
    if (b->e) { hk_engine_info_t info; hk_engine_info(b->e, &info); align = info.alignment ? info.alignment : 16; }
    size_t peak = peak_of(b), peak_op = 0, sys_peak = peak;
    for (size_t k = 0; k < t->n_ops && r->ok; k++) {
        const lab_op_t *o = &t->ops[k];
        uint32_t id = o->id;
        if (o->kind == OP_ALLOC) {
            unsigned char *p = be_malloc(b, o->size);
            if (!p) { fail(run, k, "allocation of %zu bytes failed", o->size); break; }
            run->ptr[id] = p; run->size[id] = o->size; run->gen[id]++;
            pat_write(p, pat_seed(id, run->gen[id]), 0, o->size);
        } else if (o->kind == OP_REALLOC) {
            size_t old = run->size[id];
            unsigned char *p = be_realloc(b, run->ptr[id], o->size);
            if (!p) { fail(run, k, "realloc of id %u to %zu bytes failed", id, o->size); break; }
            uint64_t seed = pat_seed(id, run->gen[id]);
            size_t bad = pat_verify(p, seed, old < o->size ? old : o->size);
            if (bad != SIZE_MAX) { fail(run, k, "realloc of id %u lost its contents (byte %zu differs)", id, bad); break; }
            run->ptr[id] = p; run->size[id] = o->size;
            if (o->size > old) pat_write(p, seed, old, o->size);
        } else {
            size_t bad = pat_verify(run->ptr[id], pat_seed(id, run->gen[id]), run->size[id]);
            if (bad != SIZE_MAX) { fail(run, k, "block id %u was overwritten before its free (byte %zu of %zu differs)", id, bad, run->size[id]); break; }
            int rc = be_free(b, run->ptr[id]);
            if (rc) { fail(run, k, "free of id %u returned %d", id, rc); break; }
            run->ptr[id] = NULL; run->size[id] = 0;
        }
        if (o->kind != OP_FREE) {
            void *p = run->ptr[id];
            if ((uintptr_t)p % align) { fail(run, k, "pointer %p for id %u is not %zu-byte aligned", p, id, align); break; }
            size_t us = b->e ? hk_engine_usable_size(b->e, p) : malloc_usable_size(p);
            if (us < o->size) { fail(run, k, "usable size %zu of id %u is less than the %zu bytes asked", us, id, o->size); break; }
        }
        if (b->e && ((k + 1) % check_every == 0 || k + 1 == t->n_ops)) {
            size_t bad = hk_engine_check(b->e);
            r->checks++;
            if (bad) { fail(run, k, "check() found %zu broken invariants", bad); break; }
        }
        size_t pk = peak_of(b);
        if (b->e) {
            if (pk > peak) { peak = pk; peak_op = k; }
        } else if (pk > sys_peak) {
            sys_peak = pk; peak_op = k;
        }
    }
    if (b->e) {
        hk_engine_stats_t st;
        hk_engine_stats(b->e, &st);
        r->peak_footprint = st.peak_footprint > peak ? st.peak_footprint : peak;
    } else {
        r->peak_footprint = sys_peak;
    }
    free_leftovers(run, b);
    if (b->e && r->ok) {
        size_t bad = hk_engine_check(b->e);
        if (bad) fail(run, t->n_ops ? t->n_ops - 1 : 0, "check() found %zu broken invariants after freeing everything", bad);
    }
    return peak_op;
}

/* Replays the ops [0, n) without checks; returns the seconds taken, or
 * -1 when an allocation failed (the verification pass reports why). When
 * max_ns is given, every op is timed on its own. */
static double pass_plain(run_t *run, backend_t *b, size_t n, uint64_t *max_ns)
{
    const lab_trace_t *t = run->t;
    double t0 = now_s();
    uint64_t worst = 0;
    for (size_t k = 0; k < n; k++) {
        const lab_op_t *o = &t->ops[k];
        struct timespec a, z;
        if (max_ns) clock_gettime(CLOCK_MONOTONIC, &a);
        if (o->kind == OP_ALLOC) {
            if (!(run->ptr[o->id] = be_malloc(b, o->size))) return -1;
        } else if (o->kind == OP_REALLOC) {
            void *p = be_realloc(b, run->ptr[o->id], o->size);
            if (!p) return -1;
            run->ptr[o->id] = p;
        } else {
            be_free(b, run->ptr[o->id]);
            run->ptr[o->id] = NULL;
        }
        if (max_ns) {
            clock_gettime(CLOCK_MONOTONIC, &z);
            uint64_t ns = (uint64_t)(z.tv_sec - a.tv_sec) * 1000000000u + (uint64_t)z.tv_nsec - (uint64_t)a.tv_nsec;
            if (ns > worst) worst = ns;
        }
    }
    double dt = now_s() - t0;
    if (max_ns) *max_ns = worst;
    return dt;
}

/* ---- the heap map: replay up to the peak, then walk */

typedef struct walk_ctx {
    lab_span_t *spans;
    size_t n, cap;
    const char *base;
} walk_ctx_t;

static void walk_cb(void *arg, void *block, size_t size, bool in_use)
{
    walk_ctx_t *w = arg;
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 1024;
        lab_span_t *s = realloc(w->spans, w->cap * sizeof *s);
        if (!s) return;
        w->spans = s;
    }
    w->spans[w->n++] = (lab_span_t){ .off = (size_t)((const char *)block - w->base), .size = size, .in_use = in_use };
}

typedef struct live_blk { uintptr_t p; size_t size; } live_blk_t;
static int cmp_live(const void *a, const void *b)
{
    uintptr_t x = ((const live_blk_t *)a)->p, y = ((const live_blk_t *)b)->p;
    return x < y ? -1 : x > y;
}

static void draw_heapmap(run_t *run, const char *engine, size_t peak_op, const char *dir)
{
    const lab_trace_t *t = run->t;
    backend_t b;
    if (be_open(&b, engine) || !b.e) return;
    run_reset(run);
    size_t n = t->n_ops ? peak_op + 1 : 0;
    if (pass_plain(run, &b, n, NULL) < 0) { free_leftovers(run, &b); be_close(&b); return; }
    walk_ctx_t w = { .base = hk_sbrk_lo(&b.e->heap) };
    hk_engine_walk(b.e, walk_cb, &w);
    /* Match each used block with the request inside it: the rest is overhead. */
    live_blk_t *lv = malloc((t->n_ids + 1) * sizeof *lv);
    size_t nl = 0, live_bytes = 0;
    if (lv) {
        /* pass_plain does not track sizes; take them from the trace. */
        memset(run->size, 0, t->n_ids * sizeof *run->size);
        for (size_t k = 0; k < n; k++) run->size[t->ops[k].id] = t->ops[k].kind == OP_FREE ? 0 : t->ops[k].size;
        for (size_t i = 0; i < t->n_ids; i++)
            if (run->ptr[i]) { lv[nl++] = (live_blk_t){ (uintptr_t)run->ptr[i], run->size[i] }; live_bytes += run->size[i]; }
        qsort(lv, nl, sizeof *lv, cmp_live);
        size_t j = 0;
        for (size_t i = 0; i < w.n; i++) {
            lab_span_t *s = &w.spans[i];
            uintptr_t lo = (uintptr_t)w.base + s->off, hi = lo + s->size;
            while (j < nl && lv[j].p < lo) j++;
            if (s->in_use && j < nl && lv[j].p < hi) {
                s->pay_off = (size_t)(lv[j].p - lo);
                s->payload = HK_MIN(lv[j].size, s->size - s->pay_off);
            }
        }
    }
    hk_engine_stats_t st;
    hk_engine_stats(b.e, &st);
    size_t fp = st.footprint;
    char path[4096];
    snprintf(path, sizeof path, "%s/heapmap-%s-%s.svg", dir, engine, t->name);
    lab_svg_heapmap(path, engine, t->name, w.spans, w.n, fp, fp ? (double)live_bytes / (double)fp : 0);
    free(lv);
    free(w.spans);
    free_leftovers(run, &b);
    be_close(&b);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void replay_inproc(const char *engine, const lab_trace_t *t, const lab_opts_t *o, lab_result_t *r)
{
    run_t run = { .t = t, .r = r };
    size_t n = t->n_ids ? t->n_ids : 1;
    run.ptr = calloc(n, sizeof *run.ptr);
    run.size = calloc(n, sizeof *run.size);
    run.gen = calloc(n, sizeof *run.gen);
    if (!run.ptr || !run.size || !run.gen) { r->ok = false; snprintf(r->error, sizeof r->error, "out of memory"); goto out; }
    r->check_every = o->check_every ? o->check_every : auto_check_every(t);

    backend_t b;
    if (be_open(&b, engine)) { r->ok = false; snprintf(r->error, sizeof r->error, "cannot create engine: %s", strerror(errno)); goto out; }
    size_t peak_op = pass_verify(&run, &b, r->check_every);
    be_close(&b);
    if (!r->ok) goto out;
    r->utilization = r->peak_footprint ? (double)t->peak_live / (double)r->peak_footprint : 0;

    /* Timed and latency passes run on one engine that has replayed the
     * trace once untimed. The system malloc is already warm from the
     * verification pass in this process; a fresh engine per rep would charge
     * the engines, and not the system, with first-touch page faults, which
     * belong to neither algorithm. */
    int reps = o->reps > 0 ? o->reps : 1;
    double *times = calloc((size_t)reps, sizeof *times);
    if (!times || be_open(&b, engine)) { r->ok = false; snprintf(r->error, sizeof r->error, "cannot create engine for the timed passes"); free(times); goto out; }
    for (int i = -1; i <= reps && r->ok; i++) {
        run_reset(&run);
        /* i == -1: warm-up; 0..reps-1: timed; reps: per-op latency */
        double dt = pass_plain(&run, &b, t->n_ops, i == reps ? &r->max_op_ns : NULL);
        if (dt < 0) { r->ok = false; snprintf(r->error, sizeof r->error, "allocation failed in a timed pass"); }
        else if (i >= 0 && i < reps) times[i] = dt;
        free_leftovers(&run, &b);
    }
    be_close(&b);
    if (times && r->ok) {
        qsort(times, (size_t)reps, sizeof *times, cmp_double);
        r->seconds = times[reps / 2];
        r->ops_per_sec = r->seconds > 0 ? (double)t->n_ops / r->seconds : 0;
    }
    free(times);
    if (r->ok && o->svg_dir && strcmp(engine, "system")) draw_heapmap(&run, engine, peak_op, o->svg_dir);
out:
    free(run.ptr); free(run.size); free(run.gen);
}

void lab_replay_one(const char *engine, const lab_trace_t *t, const lab_opts_t *o, lab_result_t *r)
{
    memset(r, 0, sizeof *r);
    snprintf(r->engine, sizeof r->engine, "%s", engine);
    snprintf(r->trace, sizeof r->trace, "%s", t->name);
    r->ok = true;
    r->peak_live = t->peak_live;
    if (!o->fork) { replay_inproc(engine, t, o, r); return; }

    int pfd[2];
    if (pipe(pfd)) { replay_inproc(engine, t, o, r); return; }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) { close(pfd[0]); close(pfd[1]); replay_inproc(engine, t, o, r); return; }
    if (pid == 0) {
        close(pfd[0]);
        replay_inproc(engine, t, o, r);
        const char *p = (const char *)r;
        size_t left = sizeof *r;
        while (left) {
            ssize_t w = write(pfd[1], p, left);
            if (w <= 0) _exit(3);
            p += w; left -= (size_t)w;
        }
        _exit(0);
    }
    close(pfd[1]);
    lab_result_t got;
    size_t have = 0;
    while (have < sizeof got) {
        ssize_t n = read(pfd[0], (char *)&got + have, sizeof got - have);
        if (n <= 0) { if (n < 0 && errno == EINTR) continue; break; }
        have += (size_t)n;
    }
    close(pfd[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (have == sizeof got && WIFEXITED(st) && WEXITSTATUS(st) == 0) { *r = got; return; }
    r->ok = false;
    if (WIFSIGNALED(st))
        snprintf(r->error, sizeof r->error, "crashed: %s (signal %d)", strsignal(WTERMSIG(st)), WTERMSIG(st));
    else
        snprintf(r->error, sizeof r->error, "the replay process exited with status %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}
