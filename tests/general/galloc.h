/* The allocator under test, by name: the standard names (heapkit linked in
 * as libheapkit.a, or preloaded) or, with HK_TEST_HK_NAMES, the hk_ names
 * linked from heapkit_base -- the form that runs under the sanitizers,
 * whose runtimes own malloc themselves. */
#ifndef HK_GALLOC_H
#define HK_GALLOC_H

#include <stdlib.h>
#include <malloc.h>

#ifdef HK_TEST_HK_NAMES
#include <heapkit/alloc.h>
#define g_malloc hk_malloc
#define g_calloc hk_calloc
#define g_realloc hk_realloc
#define g_free hk_free
#define g_usable hk_malloc_usable_size
#define g_memalign hk_memalign
#define g_check hk_check          /* broken invariants in the calling thread's heap */
#else
#define g_malloc malloc
#define g_calloc calloc
#define g_realloc realloc
#define g_free free
#define g_usable malloc_usable_size
#define g_memalign memalign
#define g_check() ((size_t)0)     /* (the allocator may be any: preloaded) */
#endif

#endif
