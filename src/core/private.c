/* The general allocator's side of private heaps (src/heap/heap.c): a theap
 * owned by a handle instead of a thread. Its segments have no owner thread
 * (thread_id 0), so every free into them, from any thread, takes the atomic
 * thread_free path; malloc runs under the handle's lock. Destroy hands each
 * segment and huge block straight back to the OS, never visiting a block. */
#include "core.h"
#include "../heap/heap_impl.h"
#include <errno.h>

size_t hk__segment_forget(hk_segment_t *seg) HK_HIDDEN;

/* Unmaps for a heap's destroy, adjacent mappings joined: a heap's segments
 * usually lie next to each other, and one munmap of a run costs the kernel
 * less than one per 4 MiB segment. */
typedef struct { char *lo, *hi; } unmap_run_t;

HK_RARE_CODE static void run_add(unmap_run_t *r, void *p, size_t n)
{
    char *a = p;
    if (r->lo && a == r->hi) { r->hi = a + n; return; }
    if (r->lo && a + n == r->lo) { r->lo = a; return; }
    if (r->lo) (void)hk_vm_release(r->lo, (size_t)(r->hi - r->lo));
    r->lo = a;
    r->hi = a + n;
}

HK_RARE_CODE static void run_flush(unmap_run_t *r)
{
    if (r->lo) (void)hk_vm_release(r->lo, (size_t)(r->hi - r->lo));
    r->lo = r->hi = NULL;
}

/* Charge `bytes` to a private heap's cap; thread heaps have none. */
bool hk__cap_take(hk_theap_t *heap, size_t bytes)
{
    if (!heap->owner) return true;
    size_t now = __atomic_add_fetch(&heap->reserved, bytes, __ATOMIC_RELAXED);
    if (heap->max_size && now > heap->max_size) {
        __atomic_fetch_sub(&heap->reserved, bytes, __ATOMIC_RELAXED);
        return false;
    }
    size_t peak = __atomic_load_n(&heap->reserved_peak, __ATOMIC_RELAXED);
    while (peak < now && !__atomic_compare_exchange_n(&heap->reserved_peak, &peak, now, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    return true;
}

void hk__cap_give(hk_theap_t *heap, size_t bytes)
{
    if (heap->owner) __atomic_fetch_sub(&heap->reserved, bytes, __ATOMIC_RELAXED);
}

/* Cost: one unmap per segment and per huge block. The caller holds the
 * heap's lock; a free racing with destroy is the caller's bug. */
HK_RARE_CODE void hk__theap_release_all(hk_theap_t *heap)
{
    unmap_run_t run = { NULL, NULL };
    while (heap->segments) {
        hk_segment_t *seg = heap->segments;
        heap->segments = seg->next;
        run_add(&run, seg, hk__segment_forget(seg));
    }
    heap->seg_res = heap->seg_pur = NULL;
    heap->used_pages = heap->nsegs = 0;
    heap->pur_empty = heap->tails_all = 0;
    heap->ntails = 0;
    hk__lock(&heap->huge_lock);
    hk_segment_t *huge = heap->huge;
    heap->huge = NULL;
    hk__unlock(&heap->huge_lock);
    while (huge) {
        hk_segment_t *next = huge->next;
        run_add(&run, huge, hk__segment_forget(huge));
        huge = next;
    }
    run_flush(&run);
    __atomic_store_n(&heap->reserved, 0, __ATOMIC_RELAXED);
}

HK_RARE_CODE int hk__theap_commit(hk_theap_t *heap, size_t bytes)
{
    const size_t per = HK_SEG_SIZE - HK_SEG_HDR;
    while (bytes) {
        hk_segment_t *seg = hk__segment_new(heap);
        if (!seg) return ENOMEM;
        size_t n = bytes < per ? bytes : per;
        hk__segment_prefault(seg, n);
        bytes -= n;
    }
    return 0;
}

/* The heap of a block of a private heap, or NULL (thread heaps' blocks,
 * abandoned or cached segments, pointers heapkit does not own). */
hk_theap_t *hk__theap_of(const void *p)
{
    hk_segment_t *seg = hk__segment_of(p);
    if (!p || !hk__segmap_has(seg) || seg->magic != HK_SEG_MAGIC) return NULL;
    if (seg->kind != HK_SEG_SMALL && seg->kind != HK_SEG_HUGE) return NULL;
    if (__atomic_load_n(&seg->thread_id, __ATOMIC_ACQUIRE) != 0) return NULL;
    /* Atomic: a parked heap's segment (thread_id 0) loses its heap when
     * another thread abandons that heap meanwhile. */
    hk_theap_t *heap = __atomic_load_n(&seg->heap, __ATOMIC_ACQUIRE);
    return heap && heap->owner ? heap : NULL;
}

HK_RARE_CODE void *hk__theap_malloc_aligned(hk_theap_t *heap, size_t align, size_t size)
{
    if (align <= 16) return hk__theap_malloc(heap, size);
    if (size > (size_t)PTRDIFF_MAX) { errno = ENOMEM; return NULL; }
    if (align <= HK_PAGE_SIZE && size + align - 16 <= HK_SMALL_MAX) {
        void *b = hk__theap_malloc(heap, size + align - 16);
        if (!b) return NULL;
        return hk__page_mark_aligned(b, (void *)hk__align_up((uintptr_t)b, align));
    }
    if (align > HK_SEG_SIZE / 2) { errno = ENOMEM; return NULL; }
    return hk__huge_alloc_in(heap, size, align, NULL);
}

/* Take in every remote free, give back pages that became empty, and count
 * what is still live. Exact as long as no free runs at the same time. */
HK_RARE_CODE void hk__theap_collect(hk_theap_t *heap, size_t *live_blocks, size_t *live_bytes)
{
    heap->no_purge++;
    __atomic_store_n(&heap->full_pending, 0, __ATOMIC_SEQ_CST);
    hk_page_t *pg, *next;
    for (pg = heap->full.last ? heap->full.first : NULL; pg; pg = next) {
        next = pg->next;
        hk__page_collect(pg);
        if (!pg->free && pg->capacity == pg->reserved) continue;
        hk__queue_remove(&heap->full, pg);
        __atomic_store_n(&pg->flags, pg->flags & ~(uint32_t)HK_PF_FULL, __ATOMIC_SEQ_CST);
        hk__queue_push_back(&heap->queues[pg->cls], pg);
    }
    for (unsigned c = 0; c < HK_NCLASS; c++) {
        for (pg = heap->queues[c].last ? heap->queues[c].first : NULL; pg; pg = next) {
            next = pg->next;
            hk__page_collect(pg);
            if (pg->used == 0) { hk__queue_remove(&heap->queues[c], pg); hk__page_retire(heap, pg); }
        }
    }
    heap->no_purge--;
    size_t blocks = 0, bytes = 0;
    for (hk_segment_t *seg = heap->segments; seg; seg = seg->next) {
        for (unsigned i = 0; i < HK_SEG_PAGES; i++) {
            const hk_page_t *p = &seg->pages[i];
            if ((seg->free_mask >> i) & 1 || p->back) continue;
            blocks += p->used;
            bytes += (size_t)p->used * p->block_size;
        }
    }
    hk__lock(&heap->huge_lock);
    for (hk_segment_t *seg = heap->huge; seg; seg = seg->next) { blocks++; bytes += seg->map_size - HK_HUGE_OFF; }
    hk__unlock(&heap->huge_lock);
    *live_blocks = blocks;
    *live_bytes = bytes;
}

/* The cold branch of hk__free: a pointer outside heapkit's segments may be
 * a block of a private heap over a classic engine. */
HK_RARE_CODE void hk__free_outside(void *p)
{
    if (!hk__heap_free_foreign(p)) hk__invalid_free(p, "not allocated by heapkit");
}
