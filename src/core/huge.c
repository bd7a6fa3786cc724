/* Huge blocks (larger than the biggest size class): each is its own
 * mapping, aligned to the segment size so the same pointer mask finds its
 * header. Those that fit in one segment reuse the segment cache. */
#include "core.h"
#include <errno.h>
#include <stdint.h>

void hk__segmap_set(void *seg, bool on) HK_HIDDEN;

void *hk__huge_alloc(size_t size, size_t align, bool *zeroed)
{
    return hk__huge_alloc_in(NULL, size, align, zeroed);
}

/* `heap` is a private heap (its blocks are linked in heap->huge so that
 * destroy finds them) or NULL. */
void *hk__huge_alloc_in(hk_theap_t *heap, size_t size, size_t align, bool *zeroed)
{
    hk__process_init();
    size_t off = align > HK_HUGE_OFF ? align : HK_HUGE_OFF;
    if (size > (size_t)PTRDIFF_MAX - 2 * HK_SEG_SIZE || off > HK_SEG_SIZE / 2) { errno = ENOMEM; return NULL; }
    size_t need = hk__align_up(off + size, hk_vm_page_size());
    size_t charge = need <= HK_SEG_SIZE ? HK_SEG_SIZE : need;
    if (heap && !hk__cap_take(heap, charge)) { errno = ENOMEM; return NULL; }
    hk_segment_t *seg;
    bool fresh = true;
    if (need <= HK_SEG_SIZE) {
        seg = hk__segment_map(&fresh, (unsigned)((need + HK_PAGE_SIZE - 1) >> HK_PAGE_SHIFT));
        if (!seg) { if (heap) hk__cap_give(heap, charge); errno = ENOMEM; return NULL; }
        hk__segment_take_for_huge(seg, need);
        need = HK_SEG_SIZE;
    } else {
        void *p;
        if (hk_vm_alloc(need, HK_SEG_SIZE, &p) != 0) { if (heap) hk__cap_give(heap, charge); errno = ENOMEM; return NULL; }
        seg = p;
        HK_ATOMIC_ADD(&hk__gstats.reserved, need);
        hk__segmap_set(seg, true);
    }
    seg->magic = HK_SEG_MAGIC;
    seg->kind = HK_SEG_HUGE;
    seg->map_size = need;
    seg->heap = heap;
    seg->next = seg->prev = NULL;
    if (heap) {
        hk__lock(&heap->huge_lock);
        seg->next = heap->huge;
        if (heap->huge) heap->huge->prev = seg;
        heap->huge = seg;
        hk__unlock(&heap->huge_lock);
    }
    __atomic_store_n(&seg->thread_id, 0, __ATOMIC_RELEASE);
    HK_ATOMIC_ADD(&hk__gstats.huge_blocks, 1);
    HK_ATOMIC_ADD(&hk__gstats.huge_bytes, need);
    if (zeroed) *zeroed = fresh;
    return (char *)seg + off;
}

void hk__huge_free(hk_segment_t *seg)
{
    hk_theap_t *heap = seg->heap;
    if (heap) {
        /* Any thread may free it: unlink under the heap's huge-list lock. */
        hk__lock(&heap->huge_lock);
        if (seg->prev) seg->prev->next = seg->next;
        else heap->huge = seg->next;
        if (seg->next) seg->next->prev = seg->prev;
        hk__unlock(&heap->huge_lock);
        seg->next = seg->prev = NULL;
        seg->heap = NULL;
        hk__cap_give(heap, seg->map_size);
    }
    size_t sz = seg->map_size;
    HK_ATOMIC_SUB(&hk__gstats.huge_blocks, 1);
    HK_ATOMIC_SUB(&hk__gstats.huge_bytes, sz);
    if (sz == HK_SEG_SIZE) { hk__segment_unmap_or_cache(seg); return; }
    seg->magic = 0;
    hk__segmap_set(seg, false);
    HK_ATOMIC_SUB(&hk__gstats.reserved, sz);
    hk_vm_release(seg, sz);
}

size_t hk__huge_usable(hk_segment_t *seg, const void *p)
{
    size_t off = (size_t)((const char *)p - (const char *)seg);
    return off < seg->map_size ? seg->map_size - off : 0;
}

/* Give back the tail of a big mapping when a realloc shrinks it a lot. */
bool hk__huge_shrink(hk_segment_t *seg, const void *p, size_t size)
{
    size_t keep = hk__align_up((size_t)((const char *)p - (const char *)seg) + size, hk_vm_page_size());
    if (seg->map_size <= HK_SEG_SIZE || keep < HK_SEG_SIZE + 1 || seg->map_size - keep < ((size_t)1 << 20)) return false;
    size_t cut = seg->map_size - keep;
    if (hk_vm_release((char *)seg + keep, cut) != 0) return false;
    seg->map_size = keep;
    if (seg->heap) hk__cap_give(seg->heap, cut);
    HK_ATOMIC_SUB(&hk__gstats.reserved, cut);
    HK_ATOMIC_SUB(&hk__gstats.huge_bytes, cut);
    return true;
}
