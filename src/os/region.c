/* Address-stable growth: a region reserves its maximum up front and commits
 * pages as it grows; the sbrk-style break on top of it is what the classic
 * engines use as their heap. Memory past the break is decommitted on shrink. */
#include "heapkit/vm.h"
#include "../util/internal.h"
#include <errno.h>
#include <string.h>

int hk_region_reserve(hk_region_t *r, size_t max_size)
{
    if (!r) return EINVAL;
    memset(r, 0, sizeof *r);
    size_t ps = hk_vm_page_size();
    if (max_size == 0 || max_size > ((size_t)1 << 46)) return EINVAL;
    size_t size = hk__align_up(max_size, ps);
    void *p;
    int e = hk_vm_reserve(size, 0, &p);
    if (e) return e;
    r->base = p;
    r->reserved = size;
    return 0;
}

int hk_region_commit_to(hk_region_t *r, size_t size)
{
    if (!r || !r->base) return EINVAL;
    if (size <= r->committed) return 0;
    if (size > r->reserved) return ENOMEM;
    size_t ps = hk_vm_page_size();
    /* Commit in steps of at least 64 KiB and an eighth of what is already
     * committed, so a growing heap makes O(log) mprotect calls, not one per
     * step. Committed but untouched pages cost no memory. */
    size_t want = hk__align_up(size, ps);
    size_t step = hk__align_up(HK_MAX(want - r->committed, HK_MAX((size_t)64 << 10, r->committed / 8)), ps);
    size_t target = HK_MIN(r->committed + step, r->reserved);
    int e = hk_vm_commit(r->base + r->committed, target - r->committed);
    if (e) return e;
    r->committed = target;
    return 0;
}

int hk_region_decommit_from(hk_region_t *r, size_t size)
{
    if (!r || !r->base) return EINVAL;
    size_t keep = hk__align_up(size, hk_vm_page_size());
    if (keep >= r->committed) return 0;
    int e = hk_vm_decommit(r->base + keep, r->committed - keep);
    if (e) return e;
    r->committed = keep;
    return 0;
}

int hk_region_release(hk_region_t *r)
{
    if (!r || !r->base) return EINVAL;
    int e = hk_vm_release(r->base, r->reserved);
    memset(r, 0, sizeof *r);
    return e;
}

int hk_sbrk_init(hk_sbrk_t *s, size_t max_size)
{
    if (!s) return EINVAL;
    s->brk = s->peak = s->dirty = 0;
    return hk_region_reserve(&s->region, max_size);
}

void *hk_sbrk_grow(hk_sbrk_t *s, size_t incr)
{
    if (incr > s->region.reserved - s->brk) { errno = ENOMEM; return NULL; }
    int e = hk_region_commit_to(&s->region, s->brk + incr);
    if (e) { errno = e; return NULL; }
    char *old = s->region.base + s->brk;
    s->brk += incr;
    if (s->brk > s->peak) s->peak = s->brk;
    if (s->brk > s->dirty) s->dirty = s->brk;
    return old;
}

int hk_sbrk_shrink(hk_sbrk_t *s, size_t decr)
{
    if (decr > s->brk) return EINVAL;
    s->brk -= decr;
    /* The pages past the break go back to the OS (RSS drops) but stay
     * committed: a heap that grows again takes page faults only, not an
     * mprotect per step and a split mapping, like brk(2). One 64 KiB of
     * slack keeps a heap oscillating at a boundary from thrashing. */
    size_t slack = (size_t)64 << 10, ps = hk_vm_page_size();
    size_t from = hk__align_up(s->brk + slack, ps);
    size_t upto = HK_MIN(hk__align_up(s->dirty, ps), s->region.committed);
    if (upto > from + slack) {
        int e = hk_vm_purge(s->region.base + from, upto - from);
        if (e) return e;
        s->dirty = from;
    }
    return 0;
}

int hk_sbrk_release(hk_sbrk_t *s)
{
    if (!s) return EINVAL;
    int e = hk_region_release(&s->region);
    s->brk = s->peak = s->dirty = 0;
    return e;
}
