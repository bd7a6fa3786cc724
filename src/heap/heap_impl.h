/* Internal hooks between private heaps and the general allocator. */
#ifndef HK_HEAP_IMPL_H
#define HK_HEAP_IMPL_H

#include "heapkit/heap.h"
#include "heapkit/engine.h"
#include "../util/internal.h"

/* The engine used when hk_heap_options_t.engine is NULL: the general
 * allocator's per-heap segments. */
#define HK_HEAP_DEFAULT_ENGINE "general"

/* Called by hk_free for a pointer outside the general allocator's
 * segments: frees it in its private heap and returns true, or false when
 * no private heap holds it. */
bool hk__heap_free_foreign(void *p) HK_HIDDEN;
/* hk_realloc / hk_malloc_usable_size of such a pointer: done in its
 * private heap; a pointer no heap holds is reported (realloc: NULL, ENOMEM)
 * or answers 0. */
void *hk__heap_realloc_foreign(void *p, size_t size) HK_HIDDEN;
size_t hk__heap_usable_foreign(const void *p) HK_HIDDEN;

#endif
