/* heapkit private heaps: a set of blocks created, used and destroyed as a
 * unit. Destroy releases every block at once (the heap's memory goes back to
 * the OS in one step; no walk over the blocks); reset empties the heap and
 * keeps it usable. The engine behind a heap is any classic engine (see
 * heapkit/engine.h) or "general", the thread-caching allocator.
 *
 * Example:
 *     hk_heap_options_t o = HK_HEAP_OPTIONS_INIT;
 *     o.engine = "tlsf";
 *     o.max_size = 64 << 20;            // requests past 64 MiB return NULL
 *     hk_heap_t *h = hk_heap_new(&o);
 *     struct node *n = hk_heap_malloc(h, sizeof *n);
 *     ...
 *     hk_free(n);                       // hk_free finds the heap of a block
 *     hk_heap_destroy(h);               // every block still in h is gone
 */
#ifndef HEAPKIT_HEAP_H
#define HEAPKIT_HEAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Exported from libheapkit.so although the library builds with hidden visibility. */
#pragma GCC visibility push(default)

typedef struct hk_heap hk_heap_t;

/* No locking at all: only one thread may use the heap at a time. */
#define HK_HEAP_SINGLE_THREADED 1u
/* Back the heap with transparent huge pages (where the kernel has them):
 * for big heaps that are filled and destroyed as a unit. A destroy then
 * frees 2 MiB pages instead of 4 KiB ones (about 20x less kernel time for
 * a heap of 80 MiB here), and filling takes fewer page faults; the cost
 * is resident memory in 2 MiB steps, so a small heap can use up to 2 MiB
 * more than it touches. Its memory is never shared with other heaps. */
#define HK_HEAP_HUGE_PAGES 2u

typedef struct hk_heap_options {
    uint32_t size;          /* sizeof(hk_heap_options_t), for versioning */
    const char *engine;     /* NULL or "general": the thread-caching allocator; else a classic engine name */
    size_t max_size;        /* 0: no cap beyond the engine's default (1 GiB for classic engines) */
    unsigned flags;         /* HK_HEAP_SINGLE_THREADED, HK_HEAP_HUGE_PAGES; others: EINVAL */
    size_t initial_commit;  /* bytes to map and fault in at creation (<= max_size when both are set) */
} hk_heap_options_t;

#define HK_HEAP_OPTIONS_INIT { sizeof(hk_heap_options_t), NULL, 0, 0, 0 }

/* NULL options means the defaults. NULL with errno EINVAL for a bad option
 * (unknown engine, wrong size field), ENOMEM when no memory. */
hk_heap_t *hk_heap_new(const hk_heap_options_t *opts);
/* Release the heap and every block in it. Pointers into it become invalid. */
void  hk_heap_destroy(hk_heap_t *h);
/* Free every block but keep the heap usable. */
int   hk_heap_reset(hk_heap_t *h);

void *hk_heap_malloc(hk_heap_t *h, size_t size);
void *hk_heap_calloc(hk_heap_t *h, size_t n, size_t size);
void *hk_heap_realloc(hk_heap_t *h, void *p, size_t size);
void *hk_heap_memalign(hk_heap_t *h, size_t align, size_t size);
/* 0, or a negative HK_E* code (see heapkit/engine.h) for a pointer that is
 * not a live block of this heap. */
int   hk_heap_free(hk_heap_t *h, void *p);
size_t hk_heap_usable_size(hk_heap_t *h, const void *p);

/* The private heap holding p, or NULL. */
hk_heap_t *hk_heap_of(const void *p);

typedef struct hk_heap_stats {
    uint32_t version, size;
    size_t live_bytes, live_blocks;
    size_t footprint, peak_footprint;
    size_t max_size;
} hk_heap_stats_t;
void hk_heap_stats(hk_heap_t *h, hk_heap_stats_t *out);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif
