/* Reading malloc-lab traces: a four-line header (heap size hint, number of
 * ids, number of ops, weight) and one "a ID SIZE" / "r ID SIZE" / "f ID" per
 * line. The reader is strict so that a broken trace is reported with its
 * FILE:LINE instead of crashing or silently skewing a measurement. */
#include "lab.h"
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct reader {
    FILE *f;
    const char *path;
    size_t line;
    char *buf;
    size_t cap;
} reader_t;

static void bad(const reader_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bad(const reader_t *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "heapkit: %s:%zu: ", r->path, r->line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Next line that is not blank; NULL at end of file. */
static char *next_line(reader_t *r)
{
    for (;;) {
        ssize_t n = getline(&r->buf, &r->cap, r->f);
        if (n < 0) return NULL;
        r->line++;
        if (memchr(r->buf, '\0', (size_t)n)) return r->buf; /* binary junk: caller reports it */
        char *s = r->buf;
        while (isspace((unsigned char)*s)) s++;
        if (*s) return s;
    }
}

/* Parses one unsigned decimal field; distinguishes the failures a user
 * wants to hear about (missing, negative, not a number, too large). */
static int field(const reader_t *r, char **s, const char *what, unsigned long long max, unsigned long long *out)
{
    char *p = *s;
    while (*p == ' ' || *p == '\t') p++;
    if (!*p || *p == '\n' || *p == '\r') { bad(r, "missing %s", what); return -1; }
    if (*p == '-') { bad(r, "negative %s", what); return -1; }
    if (!isdigit((unsigned char)*p)) { bad(r, "%s is not a number", what); return -1; }
    errno = 0;
    char *end;
    unsigned long long v = strtoull(p, &end, 10);
    if (*end && !isspace((unsigned char)*end)) { bad(r, "%s is not a number", what); return -1; }
    if (errno == ERANGE || v > max) { bad(r, "%s is absurdly large (at most %llu)", what, max); return -1; }
    *out = v;
    *s = end;
    return 0;
}

static int line_end(const reader_t *r, char *s)
{
    while (isspace((unsigned char)*s)) s++;
    if (*s) { bad(r, "unexpected text after the operation"); return -1; }
    return 0;
}

static char *basename_noext(const char *path)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    char *n = strdup(b);
    size_t len = strlen(n);
    if (len > 4 && !strcmp(n + len - 4, ".rep")) n[len - 4] = 0;
    return n;
}

int lab_trace_load(const char *path, lab_trace_t *t)
{
    memset(t, 0, sizeof *t);
    reader_t r = { .path = path };
    r.f = fopen(path, "r");
    if (!r.f) { fprintf(stderr, "heapkit: %s: %s\n", path, strerror(errno)); return -1; }
    unsigned char *live = NULL;
    size_t *sizes = NULL;
    int rc = -1;
    static const char *const hdr[4] = { "heap size hint", "number of ids", "number of operations", "weight" };
    unsigned long long h[4];
    for (int i = 0; i < 4; i++) {
        char *s = next_line(&r);
        if (!s) { r.line++; bad(&r, "bad header: file ends before the %s", hdr[i]); goto out; }
        unsigned long long max = i == 1 ? LAB_MAX_IDS : i == 2 ? LAB_MAX_OPS : ~0ull;
        char what[64];
        snprintf(what, sizeof what, "bad header: %s", hdr[i]);
        if (field(&r, &s, what, max, &h[i]) || line_end(&r, s)) goto out;
    }
    t->path = strdup(path);
    t->name = basename_noext(path);
    t->n_ids = (size_t)h[1];
    t->n_ops = (size_t)h[2];
    t->ops = calloc(t->n_ops ? t->n_ops : 1, sizeof *t->ops);
    live = calloc(t->n_ids ? t->n_ids : 1, 1);
    sizes = calloc(t->n_ids ? t->n_ids : 1, sizeof *sizes);
    if (!t->ops || !live || !sizes) { fprintf(stderr, "heapkit: %s: out of memory\n", path); goto out; }
    size_t cur = 0;
    for (size_t k = 0; k < t->n_ops; k++) {
        char *s = next_line(&r);
        if (!s) { r.line++; bad(&r, "trace ends after %zu of the %zu operations its header announces", k, t->n_ops); goto out; }
        char op = *s++;
        if (op != 'a' && op != 'r' && op != 'f') {
            if (isprint((unsigned char)op)) bad(&r, "unknown operation '%c' (expected a, r or f)", op);
            else bad(&r, "unknown operation (byte 0x%02x; expected a, r or f)", (unsigned char)op);
            goto out;
        }
        if (*s && !isspace((unsigned char)*s)) { bad(&r, "unknown operation (expected a, r or f)"); goto out; }
        unsigned long long id, size = 0;
        if (field(&r, &s, "id", ~0ull, &id)) goto out;
        if (id >= t->n_ids) { bad(&r, "id %llu out of range (the header declares %zu ids)", id, t->n_ids); goto out; }
        if (op != 'f' && field(&r, &s, "size", LAB_MAX_SIZE, &size)) goto out;
        if (line_end(&r, s)) goto out;
        if (op == 'a' && live[id]) { bad(&r, "allocation of id %llu, which is already allocated", id); goto out; }
        if (op == 'r' && !live[id]) { bad(&r, "realloc of id %llu, which is not allocated", id); goto out; }
        if (op == 'f' && !live[id]) { bad(&r, "free of id %llu, which is not allocated", id); goto out; }
        t->ops[k] = (lab_op_t){ .kind = (uint32_t)op, .id = (uint32_t)id, .size = (size_t)size };
        if (op == 'f') { cur -= sizes[id]; live[id] = 0; sizes[id] = 0; }
        else { cur = cur - sizes[id] + (size_t)size; live[id] = 1; sizes[id] = (size_t)size; }
        if (cur > t->peak_live) t->peak_live = cur;
        if (size > t->max_size) t->max_size = (size_t)size;
    }
    if (next_line(&r)) { bad(&r, "more operations than the %zu its header announces", t->n_ops); goto out; }
    rc = 0;
out:
    free(live);
    free(sizes);
    free(r.buf);
    fclose(r.f);
    if (rc) lab_trace_free(t);
    return rc;
}

void lab_trace_free(lab_trace_t *t)
{
    free(t->path);
    free(t->name);
    free(t->ops);
    memset(t, 0, sizeof *t);
}
