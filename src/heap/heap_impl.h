/* Internal hooks between private heaps and the general allocator. */
#ifndef HK_HEAP_IMPL_H
#define HK_HEAP_IMPL_H

#include "heapkit/heap.h"
#include "heapkit/engine.h"
#include "../util/internal.h"

/* The engine used when hk_heap_options_t.engine is NULL. */
#define HK_HEAP_DEFAULT_ENGINE "tlsf"

/* Called by hk_free for a pointer outside the general allocator's
 * segments: frees it in its private heap and returns true, or false when
 * no private heap holds it. */
bool hk__heap_free_foreign(void *p) HK_HIDDEN;

#endif
