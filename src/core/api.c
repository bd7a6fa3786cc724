/* The public hk_ malloc family: thin wrappers over the inline fast paths
 * in core.h, plus calloc/realloc/aligned allocation with their C/POSIX
 * error rules. The override layer wraps the same inline paths. */
#include "core.h"
#include "../heap/heap_impl.h"
#include <errno.h>
#include <string.h>

void *hk__page_mark_aligned(void *block, void *p) HK_HIDDEN;

void *hk__calloc(size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) { errno = ENOMEM; return NULL; }
    if (total > HK_SMALL_MAX) {
        bool zeroed = false;
        void *p = hk__huge_alloc(total, 0, &zeroed);
        if (p && !zeroed) memset(p, 0, total);
        return p;
    }
    void *p = hk__malloc(total);
    if (p) memset(p, 0, total);
    return p;
}

/* A block of `usable` bytes that a realloc to `size` (<= usable) keeps:
 * shrinking by less than half, or into the same class. */
static inline bool realloc_stays(size_t size, size_t usable)
{
    return size >= usable / 2 || hk__class_size[hk__size_class(size)] >= usable;
}

void *hk__realloc_in(hk_theap_t *heap, void *p, size_t size)
{
    if (size == 0) { hk__free(p); return NULL; }
    bool freed;
    size_t usable = hk__usable_size_ex(p, &freed);
    if (hk_unlikely(usable == 0)) {
        /* As free would: growing it would free it a second time, and
         * keeping it would hand out a block that sits on a free list. */
        if (freed) hk__fatal("heapkit: realloc(%p): block already freed (double free)\n", p);
        hk__invalid_free(p, "realloc of a pointer heapkit does not own");
        errno = ENOMEM;
        return NULL;
    }
    if (size <= usable) {
        hk_segment_t *seg = hk__segment_of(p);
        if (seg->kind == HK_SEG_HUGE) {
            if (size > HK_SMALL_MAX) { hk__huge_shrink(seg, p, size); return p; }
        } else if (realloc_stays(size, usable)) {
            return p;
        }
    }
    if (!heap && usable > HK_SMALL_MAX / 64 && size <= HK_SMALL_MAX && hk__page_grow_in_place(p, size)) return p;
    /* Growing: at least a quarter more than the block had, so a buffer
     * grown by small appends moves at most every other class step. */
    size_t want = size;
    if (size > usable && size <= HK_SMALL_MAX && size < usable + usable / 4) want = usable + usable / 4;
    void *q = heap ? hk__theap_malloc(heap, want) : hk__malloc(want);
    if (!q && want != size) q = heap ? hk__theap_malloc(heap, size) : hk__malloc(size);   /* a capped heap */
    if (!q) return NULL;
    memcpy(q, p, size < usable ? size : usable);
    /* The block a buffer grew out of goes to its page, not to the
     * big-block cache (hk__free_generic does not cache them): the next
     * malloc of its class is no likelier than of any other. */
    if (hk__class_big(hk__size_class(usable))) hk__free_generic(p);
    else hk__free(p);
    return q;
}

void *hk__realloc(void *p, size_t size)
{
    if (!p) return hk__malloc(size);
    hk_segment_t *seg = hk__segment_of(p);
    if (hk_unlikely(!hk__segmap_has(seg))) return hk__heap_realloc_foreign(p, size);
    /* A private heap's block stays in its heap, under the heap's lock. */
    if (hk_unlikely(__atomic_load_n(&seg->thread_id, __ATOMIC_RELAXED) == 0)) {
        hk_theap_t *ph = hk__theap_of(p);
        if (ph) return hk_heap_realloc((hk_heap_t *)ph->owner, p, size);
    } else if (hk_likely(size != 0)) {
        /* A thread heap's small block that stays where it is (a buffer
         * grown by small appends): the checks of the free fast path (a
         * live block's start, no flag but FULL), then hk__realloc_in's
         * rule for staying. Anything else takes the full path. */
        hk_page_t *pg = hk__page_at(seg, p);
        uint32_t flags = __atomic_load_n(&pg->flags, __ATOMIC_RELAXED);
        if (hk_likely(flags <= HK_PF_CACHEABLE && hk__is_block(pg, p) && ((hk_block_t *)p)->tag != HK_FREE_TAG(pg)) &&
            size <= pg->block_size && realloc_stays(size, pg->block_size))
            return p;
    }
    return hk__realloc_in(NULL, p, size);
}

void *hk__malloc_aligned(size_t align, size_t size)
{
    if (align <= 16) return hk__malloc(size);
    if (size > (size_t)PTRDIFF_MAX) { errno = ENOMEM; return NULL; }
    if (align <= HK_PAGE_SIZE && size + align - 16 <= HK_SMALL_MAX) {
        void *p = hk__malloc(size);
        if (!p || hk__is_aligned(p, align)) return p;
        hk__free(p);
        void *b = hk__malloc(size + align - 16);
        if (!b) return NULL;
        return hk__page_mark_aligned(b, (void *)hk__align_up((uintptr_t)b, align));
    }
    if (align > HK_SEG_SIZE / 2) { errno = ENOMEM; return NULL; }
    return hk__huge_alloc(size, align, NULL);
}

void *hk_malloc(size_t size) { return hk__malloc(size); }
void  hk_free(void *p) { hk__free(p); }
HK_API void *hk__calloc_alias(size_t n, size_t size) __asm__("hk_calloc") __attribute__((alias("hk__calloc")));   /* one copy */
HK_API void *hk__realloc_alias(void *p, size_t size) __asm__("hk_realloc") __attribute__((alias("hk__realloc")));   /* one copy */

void *hk_reallocarray(void *p, size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) { errno = ENOMEM; return NULL; }
    return hk__realloc(p, total);
}

int hk_posix_memalign(void **out, size_t align, size_t size)
{
    if (!hk__is_pow2(align) || align % sizeof(void *)) return EINVAL;
    int saved = errno;
    void *p = hk__malloc_aligned(align, size);
    if (!p) { errno = saved; return ENOMEM; }
    *out = p;
    return 0;
}

void *hk_aligned_alloc(size_t align, size_t size)
{
    if (!hk__is_pow2(align)) { errno = EINVAL; return NULL; }
    return hk__malloc_aligned(align, size);
}

void *hk_memalign(size_t align, size_t size)
{
    if (!hk__is_pow2(align)) { errno = EINVAL; return NULL; }
    return hk__malloc_aligned(align, size);
}

void *hk_valloc(size_t size) { return hk__malloc_aligned(hk_vm_page_size(), size); }

void *hk_pvalloc(size_t size)
{
    size_t ps = hk_vm_page_size();
    if (size > SIZE_MAX - ps) { errno = ENOMEM; return NULL; }
    size_t r = size ? hk__align_up(size, ps) : ps;
    return hk__malloc_aligned(ps, r);
}

size_t hk_malloc_usable_size(const void *p) { return hk__usable_size(p); }
/* Aliases of hk_free, under other C names: the size and alignment are
 * not read (the calling convention allows that), and one copy of the free
 * fast path serves all three. */
HK_API void hk__free_sized_alias(void *p) __asm__("hk_free_sized") __attribute__((alias("hk_free"), weak));
HK_API void hk__free_aligned_sized_alias(void *p) __asm__("hk_free_aligned_sized") __attribute__((alias("hk_free"), weak));

void hk_collect(int force)
{
    hk_theap_t *heap = hk__tls_heap;
    uint64_t now = hk__now_ms();
    if (heap != &hk__heap_empty) {
        hk__xcache_flush(heap);
        /* Pages emptied but kept as their class's last page go back too. */
        heap->no_purge++;
        for (unsigned c = 0; c < HK_NCLASS; c++) {
            hk_page_t *pg = heap->queues[c].last ? heap->queues[c].first : NULL;
            while (pg) {
                hk_page_t *next = pg->next;
                hk__page_collect(pg);
                if (pg->used == 0) { hk__queue_remove(&heap->queues[c], pg); hk__page_retire(heap, pg); }
                pg = next;
            }
        }
        heap->no_purge--;
        /* Forced: every sparse page is trimmed, not a purge's share. */
        hk__heap_purge(heap, now, force != 0, force ? UINT32_MAX : HK_TRIM_WALK);
    } else {
        hk__cache_purge(now, force != 0);
    }
}
