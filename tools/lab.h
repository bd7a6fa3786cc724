/* The trace lab: malloc-lab traces in memory, the built-in generator, the
 * replayer that checks and times every engine (and the system malloc) on
 * them, and the SVG pictures. Shared by the lab_*.c files of the command. */
#ifndef HK_TOOLS_LAB_H
#define HK_TOOLS_LAB_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>

/* Largest size a trace may ask for; anything above is called absurd. */
#define LAB_MAX_SIZE ((size_t)1 << 30)
/* Largest number of ids / ops a header may announce. */
#define LAB_MAX_IDS  ((size_t)1 << 24)
#define LAB_MAX_OPS  ((size_t)1 << 26)

typedef enum { OP_ALLOC = 'a', OP_REALLOC = 'r', OP_FREE = 'f' } lab_op_kind_t;

typedef struct lab_op {
    uint32_t kind;   /* lab_op_kind_t */
    uint32_t id;
    size_t size;     /* 0 for free */
} lab_op_t;

typedef struct lab_trace {
    char *path;           /* as given */
    char *name;           /* file name without folder and .rep */
    size_t n_ids;
    size_t n_ops;
    lab_op_t *ops;
    size_t peak_live;     /* peak over the run of live requested bytes */
    size_t max_size;      /* largest single request */
} lab_trace_t;

/* Reads a trace; on a bad trace prints "heapkit: FILE:LINE: what" to
 * stderr and returns -1. */
int  lab_trace_load(const char *path, lab_trace_t *t);
void lab_trace_free(lab_trace_t *t);

/* The built-in trace set. */
typedef struct lab_gen {
    const char *name;
    const char *what;
    void (*fn)(uint64_t seed, FILE *out);
} lab_gen_t;
extern const lab_gen_t lab_generators[];
extern const size_t lab_n_generators;
/* Writes every built-in trace into dir (created if missing); the paths
 * written are appended to *paths (malloc'd strings). Returns 0 or -1. */
int lab_gen_all(const char *dir, uint64_t seed, char ***paths, size_t *n_paths);
int lab_mkdir_p(const char *dir);

/* One (engine, trace) result. */
typedef struct lab_result {
    char engine[32];
    char trace[64];
    bool ok;
    char error[200];       /* first problem found, when !ok */
    double utilization;    /* 0..1 */
    double seconds;        /* median of the timed reps */
    double ops_per_sec;
    uint64_t max_op_ns;
    size_t peak_live;
    size_t peak_footprint;
    size_t check_every;    /* 1 = check() after every op */
    size_t checks;         /* number of check() calls made */
} lab_result_t;

typedef struct lab_opts {
    int reps;
    const char *svg_dir;   /* NULL: no pictures */
    size_t check_every;    /* 0: automatic */
    bool fork;             /* isolate every run in a child process */
} lab_opts_t;

/* Replays t on the engine (or "system"); fills *r. Never exits. */
void lab_replay_one(const char *engine, const lab_trace_t *t, const lab_opts_t *o, lab_result_t *r);

/* Pictures (lab_svg.c). */
typedef struct lab_span {
    size_t off, size;      /* offset from the heap base, bytes */
    size_t payload;        /* requested bytes inside (used blocks) */
    size_t pay_off;        /* where they start, from the block start */
    bool in_use;
} lab_span_t;
int lab_svg_heapmap(const char *path, const char *engine, const char *trace,
                    const lab_span_t *spans, size_t n, size_t footprint, double util);
int lab_svg_chart(const char *path, const lab_result_t *res, size_t n_res,
                  const char *const *engines, size_t n_engines);

/* A small seeded generator (splitmix64): the same numbers on every run. */
static inline uint64_t lab_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
/* Uniform in [lo, hi]. */
static inline uint64_t lab_range(uint64_t *s, uint64_t lo, uint64_t hi)
{
    return lo + lab_rand(s) % (hi - lo + 1);
}

#endif
