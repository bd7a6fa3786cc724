/* The generic engine layer: the registry of engines by name, argument
 * checks shared by all of them (NULL, zero sizes, overflow, alignment,
 * pointers outside the region), and the fallbacks an engine may omit. */
#include "engine_impl.h"
#include <errno.h>
#include <string.h>

static const hk_engine_ops_t *const g_engines[] = {
    &hk__engine_implicit_first,
    &hk__engine_implicit_next,
    &hk__engine_implicit_best,
    &hk__engine_implicit_worst,
    &hk__engine_implicit_deferred,
    &hk__engine_explicit_lifo,
    &hk__engine_explicit_addr,
    &hk__engine_segregated,
    &hk__engine_buddy,
    &hk__engine_tlsf,
    &hk__engine_hole_index,
};
#define N_ENGINES (sizeof g_engines / sizeof g_engines[0])

const char *const *hk_engine_names(void)
{
    static const char *names[N_ENGINES + 1];
    if (!names[0]) {
        for (size_t i = 0; i < N_ENGINES; i++) names[i] = g_engines[i]->name;
        names[N_ENGINES] = NULL;
    }
    return names;
}

hk_engine_t *hk_engine_create(const char *name, const hk_engine_config_t *cfg)
{
    const hk_engine_ops_t *ops = NULL;
    for (size_t i = 0; name && i < N_ENGINES; i++)
        if (strcmp(g_engines[i]->name, name) == 0) { ops = g_engines[i]; break; }
    if (!ops) { errno = EINVAL; return NULL; }
    size_t sz = hk__align_up(ops->state_size, hk_vm_page_size());
    void *mem;
    int err = hk_vm_alloc(sz, 0, &mem);
    if (err) { errno = err; return NULL; }
    hk_engine_t *e = mem;
    e->ops = ops;
    if (cfg) e->cfg = *cfg;
    if (e->cfg.max_size == 0) e->cfg.max_size = (size_t)1 << 30;
    e->mapping_size = sz;
    err = ops->init(e);
    if (err) {
        if (e->heap.region.base) hk_sbrk_release(&e->heap);
        hk_vm_release(mem, sz);
        errno = err;
        return NULL;
    }
    return e;
}

void hk_engine_destroy(hk_engine_t *e)
{
    if (!e) return;
    if (e->ops->fini) e->ops->fini(e);
    if (e->heap.region.base) hk_sbrk_release(&e->heap);
    hk_vm_release(e, e->mapping_size);
}

const char *hk_engine_name(const hk_engine_t *e) { return e->ops->name; }

bool hk_engine_owns(const hk_engine_t *e, const void *p)
{
    const char *c = p;
    return c >= hk_sbrk_lo(&e->heap) && c < hk_sbrk_hi(&e->heap);
}

int hk__engine_misuse(hk_engine_t *e, int code, const void *p, const char *what)
{
    if (e->cfg.flags & HK_ENGINE_ABORT_ON_MISUSE) {
        const char *kind = code == HK_EDOUBLEFREE ? "double free"
                         : code == HK_ECORRUPT ? "heap corruption" : "invalid pointer";
        hk__fatal("heapkit: %s engine: %s of %p (%s)\n", e->ops->name, kind, p, what ? what : "");
    }
    return code;
}

void *hk_engine_malloc(hk_engine_t *e, size_t size)
{
    if (size == 0) size = 1;
    void *p = e->ops->malloc(e, size);
    if (!p) errno = ENOMEM;
    return p;
}

void *hk_engine_calloc(hk_engine_t *e, size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) { errno = ENOMEM; return NULL; }
    void *p = hk_engine_malloc(e, total);
    if (p) memset(p, 0, total);
    return p;
}

int hk_engine_free(hk_engine_t *e, void *p)
{
    if (!p) return HK_OK;
    if (!hk_engine_owns(e, p) || !hk__is_aligned(p, sizeof(void *)))
        return hk__engine_misuse(e, HK_EINVALID, p, "not inside this engine's heap");
    return e->ops->free(e, p);
}

size_t hk_engine_usable_size(hk_engine_t *e, const void *p)
{
    if (!p || !hk_engine_owns(e, p)) return 0;
    return e->ops->usable_size(e, p);
}

void *hk_engine_realloc(hk_engine_t *e, void *p, size_t size)
{
    if (!p) return hk_engine_malloc(e, size);
    if (size == 0) size = 1;
    if (!hk_engine_owns(e, p)) {
        hk__engine_misuse(e, HK_EINVALID, p, "realloc of a pointer not inside this engine's heap");
        errno = EINVAL;
        return NULL;
    }
    if (e->ops->realloc) {
        void *q = e->ops->realloc(e, p, size);
        if (!q) errno = ENOMEM;
        return q;
    }
    size_t old = e->ops->usable_size(e, p);
    if (old == 0) {
        hk__engine_misuse(e, HK_EINVALID, p, "realloc of a block that is not allocated");
        errno = EINVAL;
        return NULL;
    }
    if (size <= old && size >= old / 2) return p;
    void *q = hk_engine_malloc(e, size);
    if (!q) return NULL;
    memcpy(q, p, HK_MIN(old, size));
    e->ops->free(e, p);
    return q;
}

void *hk_engine_memalign(hk_engine_t *e, size_t align, size_t size)
{
    if (!hk__is_pow2(align)) { errno = EINVAL; return NULL; }
    if (size == 0) size = 1;
    hk_engine_info_t info;
    hk_engine_info(e, &info);
    void *p = align <= info.alignment ? e->ops->malloc(e, size) : e->ops->memalign(e, align, size);
    if (!p) errno = ENOMEM;
    return p;
}

size_t hk_engine_check(hk_engine_t *e) { return e->ops->check(e); }

void hk_engine_walk(hk_engine_t *e, hk_walk_fn fn, void *arg) { e->ops->walk(e, fn, arg); }

void hk_engine_stats(hk_engine_t *e, hk_engine_stats_t *out)
{
    memset(out, 0, sizeof *out);
    e->ops->stats(e, out);
    out->version = HK_ENGINE_STATS_VERSION;
    out->size = sizeof *out;
    if (out->peak_footprint < out->footprint) out->peak_footprint = out->footprint;
    out->fragmentation = out->free_bytes ? 1.0 - (double)out->largest_free / (double)out->free_bytes : 0.0;
}

void hk_engine_info(const hk_engine_t *e, hk_engine_info_t *out)
{
    memset(out, 0, sizeof *out);
    e->ops->info(e, out);
    out->name = e->ops->name;
    out->description = e->ops->description;
}
