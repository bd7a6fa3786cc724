/* `heapkit replay` and `heapkit lab`: argument handling, the results
 * table (rows engines, columns traces) and its JSON twin. The measuring
 * itself is in lab_replay.c, the pictures in lab_svg.c. */
#define _GNU_SOURCE
#include "lab.h"
#include "cmd.h"
#include "heapkit.h"
#include "heapkit/engine.h"
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct cfg {
    const char **engines;
    size_t n_engines;
    lab_opts_t opts;
    bool json;
    bool list;
} cfg_t;

static bool engine_known(const char *name)
{
    if (!strcmp(name, "system")) return true;
    for (const char *const *n = hk_engine_names(); *n; n++) if (!strcmp(*n, name)) return true;
    return false;
}

static void all_engines(cfg_t *c)
{
    size_t n = 0;
    for (const char *const *p = hk_engine_names(); *p; p++) n++;
    c->engines = calloc(n + 1, sizeof *c->engines);
    c->n_engines = 0;
    for (const char *const *p = hk_engine_names(); *p; p++) c->engines[c->n_engines++] = *p;
    c->engines[c->n_engines++] = "system";
}

static void valid_names(FILE *f)
{
    fputs("valid engines:", f);
    for (const char *const *n = hk_engine_names(); *n; n++) fprintf(f, " %s", *n);
    fputs(" system\n", f);
}

/* "a,b,c" or "all". Returns -1 (after saying why) on an unknown name. */
static int parse_engines(cfg_t *c, const char *list)
{
    if (!strcmp(list, "all")) { free(c->engines); all_engines(c); return 0; }
    char *copy = strdup(list);
    size_t cap = 1;
    for (const char *s = list; *s; s++) cap += *s == ',';
    free(c->engines);
    c->engines = calloc(cap + 1, sizeof *c->engines);
    c->n_engines = 0;
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (!engine_known(tok)) {
            fprintf(stderr, "heapkit: unknown engine '%s'; ", tok);
            valid_names(stderr);
            free(copy);
            return -1;
        }
        const char *name = !strcmp(tok, "system") ? "system" : NULL;
        for (const char *const *n = hk_engine_names(); !name && *n; n++) if (!strcmp(*n, tok)) name = *n;
        c->engines[c->n_engines++] = name;
    }
    free(copy);
    if (!c->n_engines) { fprintf(stderr, "heapkit: --engine needs at least one name; "); valid_names(stderr); return -1; }
    return 0;
}

static void list_engines(void)
{
    printf("%-18s %5s %9s %9s  %s\n", "engine", "align", "overhead", "min block", "description");
    for (const char *const *n = hk_engine_names(); *n; n++) {
        hk_engine_t *e = hk_engine_create(*n, NULL);
        if (!e) { printf("%-18s (cannot be created: %s)\n", *n, strerror(errno)); continue; }
        hk_engine_info_t in;
        hk_engine_info(e, &in);
        printf("%-18s %5zu %9zu %9zu  %s\n", *n, in.alignment, in.overhead, in.min_block, in.description ? in.description : "");
        hk_engine_destroy(e);
    }
    printf("%-18s %5d %9s %9s  %s\n", "system", 16, "-", "-", "the C library's malloc (footprint from mallinfo2: arena + mmapped)");
}

static void print_json(const lab_result_t *res, size_t n)
{
    printf("[\n");
    for (size_t i = 0; i < n; i++) {
        const lab_result_t *r = &res[i];
        printf("  {\"engine\": \"%s\", \"trace\": \"", r->engine);
        for (const char *s = r->trace; *s; s++) {
            if (*s == '"' || *s == '\\') putchar('\\');
            if ((unsigned char)*s >= 0x20) putchar(*s);
        }
        printf("\", \"utilization\": %.6f, \"ops_per_sec\": %.1f, \"max_op_ns\": %llu, \"ok\": %s, "
               "\"peak_live\": %zu, \"peak_footprint\": %zu, \"check_every\": %zu",
               r->utilization, r->ops_per_sec, (unsigned long long)r->max_op_ns, r->ok ? "true" : "false",
               r->peak_live, r->peak_footprint, r->check_every);
        if (!r->ok) {
            printf(", \"error\": \"");
            for (const char *s = r->error; *s; s++) {
                if (*s == '"' || *s == '\\') putchar('\\');
                if ((unsigned char)*s >= 0x20) putchar(*s);
            }
            putchar('"');
        }
        printf("}%s\n", i + 1 < n ? "," : "");
    }
    printf("]\n");
}

/* Rows engines, columns traces: what a student puts in a report. */
static void print_table(const lab_result_t *res, const cfg_t *c, lab_trace_t *traces, size_t n_traces)
{
    enum { CW = 9 };
    printf("\nspace utilization (peak live requested bytes / peak footprint), %%\n\n%-18s", "engine");
    for (size_t t = 0; t < n_traces; t++) printf(" %*.*s", CW, CW, traces[t].name);
    printf(" %8s %9s %10s\n", "avg util", "Kops/s", "max op us");
    for (size_t e = 0; e < c->n_engines; e++) {
        printf("%-18s", c->engines[e]);
        double su = 0, secs = 0, ops = 0;
        int nu = 0;
        uint64_t worst = 0;
        bool all_ok = true;
        for (size_t t = 0; t < n_traces; t++) {
            const lab_result_t *r = &res[e * n_traces + t];
            if (!r->ok) { printf(" %*s", CW, "FAIL"); all_ok = false; continue; }
            printf(" %*.1f", CW, r->utilization * 100);
            su += r->utilization; nu++;
            secs += r->seconds; ops += (double)traces[t].n_ops;
            if (r->max_op_ns > worst) worst = r->max_op_ns;
        }
        printf(" %7.1f%s %9.0f %10.1f\n", nu ? su / nu * 100 : 0, all_ok ? " " : "*",
               secs > 0 ? ops / secs / 1000 : 0, (double)worst / 1000);
    }
    printf("\navg util: mean over the traces; Kops/s: all ops / all time (median of the timed runs);\n"
           "max op us: the slowest single operation seen. * = some traces failed (left out of the mean).\n");
    bool any = false;
    for (size_t i = 0; i < c->n_engines * n_traces; i++) {
        if (res[i].ok) continue;
        if (!any) printf("\nfailures:\n");
        any = true;
        printf("  %s on %s: %s\n", res[i].engine, res[i].trace, res[i].error);
    }
    size_t every_op = 0, sampled = 0;
    for (size_t i = 0; i < c->n_engines * n_traces; i++) {
        if (!strcmp(res[i].engine, "system")) continue;
        if (res[i].check_every <= 1) every_op++; else sampled++;
    }
    printf("\nverification: payload patterns on every op; check() after every op on %zu runs", every_op);
    if (sampled) printf(", every K ops (and at the end) on %zu larger runs", sampled);
    printf(".\n");
}

/* Replays every trace on every engine; prints; returns the exit status. */
static int replay_all(cfg_t *c, char **paths, size_t n_paths)
{
    lab_trace_t *traces = calloc(n_paths ? n_paths : 1, sizeof *traces);
    for (size_t i = 0; i < n_paths; i++)
        if (lab_trace_load(paths[i], &traces[i])) {
            for (size_t k = 0; k < i; k++) lab_trace_free(&traces[k]);
            free(traces);
            return 1;
        }
    if (c->opts.svg_dir && lab_mkdir_p(c->opts.svg_dir)) {
        fprintf(stderr, "heapkit: cannot create %s: %s\n", c->opts.svg_dir, strerror(errno));
        return 1;
    }
    lab_result_t *res = calloc(c->n_engines * n_paths + 1, sizeof *res);
    int status = 0;
    for (size_t e = 0; e < c->n_engines; e++)
        for (size_t t = 0; t < n_paths; t++) {
            lab_result_t *r = &res[e * n_paths + t];
            lab_replay_one(c->engines[e], &traces[t], &c->opts, r);
            if (!r->ok) status = 1;
        }
    if (c->json) print_json(res, c->n_engines * n_paths);
    else print_table(res, c, traces, n_paths);
    if (c->opts.svg_dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/chart.svg", c->opts.svg_dir);
        if (lab_svg_chart(path, res, c->n_engines * n_paths, c->engines, c->n_engines))
            fprintf(stderr, "heapkit: cannot write %s\n", path);
        else if (!c->json)
            printf("\npictures: %s (chart) and %s/heapmap-ENGINE-TRACE.svg (heap at peak footprint)\n", path, c->opts.svg_dir);
    }
    for (size_t i = 0; i < n_paths; i++) lab_trace_free(&traces[i]);
    free(traces);
    free(res);
    return status;
}

/* Options both commands share; returns 1 when argv[*i] was one of them,
 * -1 on a bad value. */
static int common_opt(cfg_t *c, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    bool has = *i + 1 < argc;
    if (!strcmp(a, "--engine") || !strcmp(a, "-e")) {
        if (!has) { fprintf(stderr, "heapkit: %s needs a list of engines\n", a); return -1; }
        return parse_engines(c, argv[++*i]) ? -1 : 1;
    }
    if (!strcmp(a, "--reps") || !strcmp(a, "--check-every")) {
        char *end;
        long v = has ? strtol(argv[*i + 1], &end, 10) : -1;
        if (!has || *end || v < (a[2] == 'r' ? 1 : 0) || v > 1000000) { fprintf(stderr, "heapkit: %s needs a number\n", a); return -1; }
        ++*i;
        if (a[2] == 'r') c->opts.reps = (int)v; else c->opts.check_every = (size_t)v;
        return 1;
    }
    if (!strcmp(a, "--json")) { c->json = true; return 1; }
    if (!strcmp(a, "--no-fork")) { c->opts.fork = false; return 1; }
    return 0;
}

static const char REPLAY_HELP[] =
    "usage: heapkit replay [--engine LIST] [--json] [--svg DIR] [--reps N] [--check-every K] TRACE...\n"
    "       heapkit replay --list\n\n"
    "Replays malloc-lab traces on each engine (default: every engine and \"system\",\n"
    "the C library's malloc). Each run is checked (alignment, payload patterns,\n"
    "the engine's check()) and then timed (median of N runs, default 11).\n\n"
    "  --engine LIST    comma-separated engine names, or \"all\" (see --list)\n"
    "  --json           print the results as a JSON array instead of the table\n"
    "  --svg DIR        write heap maps (at peak footprint) and a chart into DIR\n"
    "  --reps N         timed repetitions (the median is reported)\n"
    "  --check-every K  call check() every K ops (default: every op, sampled on big traces)\n"
    "  --no-fork        run in this process (a crashing engine then ends the command)\n";

int hk_cmd_replay(int argc, char **argv)
{
    cfg_t c = { .opts = { .reps = 11, .fork = true } };
    all_engines(&c);
    char **paths = calloc((size_t)argc + 1, sizeof *paths);
    size_t n = 0;
    int rc = 2;
    for (int i = 1; i < argc; i++) {
        int k = common_opt(&c, argc, argv, &i);
        if (k < 0) goto out;
        if (k) continue;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { fputs(REPLAY_HELP, stdout); rc = 0; goto out; }
        if (!strcmp(argv[i], "--list")) { c.list = true; continue; }
        if (!strcmp(argv[i], "--svg")) {
            if (i + 1 >= argc) { fprintf(stderr, "heapkit: --svg needs a folder\n"); goto out; }
            c.opts.svg_dir = argv[++i];
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1]) { fprintf(stderr, "heapkit: replay: unknown option '%s' (try --help)\n", argv[i]); goto out; }
        paths[n++] = argv[i];
    }
    if (c.list) { list_engines(); rc = 0; goto out; }
    if (!n) { fprintf(stderr, "heapkit: replay: no trace given (try --help)\n"); goto out; }
    rc = replay_all(&c, paths, n);
out:
    free(paths);
    free(c.engines);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The *.rep files of a folder, sorted by name. */
static int list_traces(const char *dir, char ***paths, size_t *n)
{
    DIR *d = opendir(dir);
    if (!d) { fprintf(stderr, "heapkit: %s: %s\n", dir, strerror(errno)); return -1; }
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len < 5 || strcmp(de->d_name + len - 4, ".rep")) continue;
        char *p = malloc(strlen(dir) + len + 2);
        sprintf(p, "%s/%s", dir, de->d_name);
        *paths = realloc(*paths, (*n + 1) * sizeof **paths);
        (*paths)[(*n)++] = p;
    }
    closedir(d);
    if (!*n) { fprintf(stderr, "heapkit: %s holds no .rep traces\n", dir); return -1; }
    qsort(*paths, *n, sizeof **paths, cmp_str);
    return 0;
}

int hk_cmd_lab(int argc, char **argv)
{
    cfg_t c = { .opts = { .reps = 11, .fork = true } };
    all_engines(&c);
    const char *out = "lab-out", *tdir = NULL;
    int rc = 2;
    char **paths = NULL;
    size_t n = 0;
    for (int i = 1; i < argc; i++) {
        int k = common_opt(&c, argc, argv, &i);
        if (k < 0) goto done;
        if (k) continue;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: heapkit lab [--out DIR] [--traces DIR|shared] [--engine LIST] [--reps N] [--json]\n\n"
                   "Generates the built-in traces into DIR/traces (default DIR: ./lab-out), replays\n"
                   "them on every engine and the system malloc, prints the table and writes the\n"
                   "heap maps and the chart into DIR. --traces replays the .rep files of another\n"
                   "folder instead (\"shared\": the project's shared trace set, %s,\n"
                   "or $HK_SHARED_TRACES).\n", HK_SHARED_TRACES);
            rc = 0;
            goto done;
        }
        if (!strcmp(argv[i], "--out") && i + 1 < argc) { out = argv[++i]; continue; }
        if (!strcmp(argv[i], "--traces") && i + 1 < argc) { tdir = argv[++i]; continue; }
        fprintf(stderr, "heapkit: lab: unknown argument '%s' (try --help)\n", argv[i]);
        goto done;
    }
    rc = 1;
    if (tdir && !strcmp(tdir, "shared")) tdir = getenv("HK_SHARED_TRACES") ? getenv("HK_SHARED_TRACES") : HK_SHARED_TRACES;
    if (tdir) {
        if (list_traces(tdir, &paths, &n)) goto done;
    } else {
        char gdir[4096];
        snprintf(gdir, sizeof gdir, "%s/traces", out);
        if (lab_gen_all(gdir, 1, &paths, &n)) goto done;
        if (!c.json) printf("heapkit lab: %zu built-in traces written to %s\n", n, gdir);
    }
    if (lab_mkdir_p(out)) { fprintf(stderr, "heapkit: cannot create %s: %s\n", out, strerror(errno)); goto done; }
    c.opts.svg_dir = out;
    if (!c.json) {
        printf("replaying %zu traces on %zu allocators (", n, c.n_engines);
        for (size_t e = 0; e < c.n_engines; e++) printf("%s%s", e ? ", " : "", c.engines[e]);
        printf(")...\n");
        fflush(stdout);
    }
    rc = replay_all(&c, paths, n);
done:
    for (size_t i = 0; i < n; i++) free(paths[i]);
    free(paths);
    free(c.engines);
    return rc;
}
