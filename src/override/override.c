/* The standard allocation names, exported from libheapkit.so / .a, each a
 * direct wrapper of the inline fast paths (no PLT hop to hk_malloc). The
 * core needs no constructor, dlsym or stdio, so the very first malloc of
 * a process (even from the dynamic loader's early users) just works. */
#define _GNU_SOURCE
#include "../core/core.h"
#include <stdlib.h>
#include <malloc.h>
#include <errno.h>

#define HK_EXPORT __attribute__((visibility("default")))

HK_EXPORT void *malloc(size_t size) { return hk__malloc(size); }
HK_EXPORT void free(void *p) { hk__free(p); }
HK_EXPORT void *calloc(size_t n, size_t size) { return hk__calloc(n, size); }
HK_EXPORT void *realloc(void *p, size_t size) { return hk__realloc(p, size); }
HK_EXPORT void *reallocarray(void *p, size_t n, size_t size) { return hk_reallocarray(p, n, size); }
HK_EXPORT int posix_memalign(void **out, size_t align, size_t size) { return hk_posix_memalign(out, align, size); }
HK_EXPORT void *aligned_alloc(size_t align, size_t size) { return hk_aligned_alloc(align, size); }
HK_EXPORT void *memalign(size_t align, size_t size) { return hk_memalign(align, size); }
HK_EXPORT void *valloc(size_t size) { return hk_valloc(size); }
HK_EXPORT void *pvalloc(size_t size) { return hk_pvalloc(size); }
HK_EXPORT size_t malloc_usable_size(void *p) { return hk__usable_size(p); }
HK_EXPORT void malloc_stats(void) { hk_stats_print(); }

/* C23's free_sized and free_aligned_sized, and the old glibc name cfree
 * some programs still call: aliases of free (one copy of its fast path;
 * the size and alignment arguments are not read, which the calling
 * convention allows). Declared under other C names so that a libc header
 * that declares the C23 functions does not clash with free's type; weak,
 * so that profilers name the shared code `free` (perf picks the global
 * symbol among aliases, else the longest name). */
HK_EXPORT void hk_free_sized_alias(void *p) __asm__("free_sized") __attribute__((alias("free"), weak, nothrow, leaf));
HK_EXPORT void hk_free_aligned_sized_alias(void *p) __asm__("free_aligned_sized") __attribute__((alias("free"), weak, nothrow, leaf));
HK_EXPORT void hk_cfree_alias(void *p) __asm__("cfree") __attribute__((alias("free"), weak, nothrow, leaf));
