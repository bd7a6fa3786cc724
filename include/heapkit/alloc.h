/* heapkit's general-purpose allocator: a thread-caching malloc family.
 * libheapkit.so / libheapkit.a also export the standard names (malloc,
 * free, operator new ...) forwarding here; these hk_ names always exist.
 *
 * Example:
 *     char *s = hk_malloc(100);
 *     s = hk_realloc(s, 4000);
 *     hk_free(s);
 *     hk_option_set(HK_OPTION_PURGE_DELAY, 0);   // give memory back at once
 */
#ifndef HEAPKIT_ALLOC_H
#define HEAPKIT_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Exported from libheapkit.so although the library builds with hidden visibility. */
#pragma GCC visibility push(default)

#define HK_API __attribute__((visibility("default")))
#define HK_MALLOC_ATTR __attribute__((malloc, warn_unused_result))

/* The malloc family. Errors follow C/POSIX: NULL with errno = ENOMEM, or
 * EINVAL for a bad alignment; hk_posix_memalign returns the code. */
HK_API void  *hk_malloc(size_t size) HK_MALLOC_ATTR __attribute__((alloc_size(1)));
HK_API void   hk_free(void *p);
HK_API void  *hk_calloc(size_t n, size_t size) HK_MALLOC_ATTR __attribute__((alloc_size(1, 2)));
/* realloc(p, 0) frees p and returns NULL (glibc's behaviour). */
HK_API void  *hk_realloc(void *p, size_t size) __attribute__((warn_unused_result, alloc_size(2)));
HK_API void  *hk_reallocarray(void *p, size_t n, size_t size) __attribute__((warn_unused_result, alloc_size(2, 3)));
HK_API int    hk_posix_memalign(void **out, size_t align, size_t size);
HK_API void  *hk_aligned_alloc(size_t align, size_t size) HK_MALLOC_ATTR __attribute__((alloc_size(2)));
HK_API void  *hk_memalign(size_t align, size_t size) HK_MALLOC_ATTR __attribute__((alloc_size(2)));
HK_API void  *hk_valloc(size_t size) HK_MALLOC_ATTR;
HK_API void  *hk_pvalloc(size_t size) HK_MALLOC_ATTR;
/* Bytes usable in the block (>= the size asked for); 0 for NULL or a
 * pointer heapkit does not own. */
HK_API size_t hk_malloc_usable_size(const void *p);
HK_API void   hk_free_sized(void *p, size_t size);
HK_API void   hk_free_aligned_sized(void *p, size_t align, size_t size);

/* Give free memory back to the OS now: pages of this thread's heap and the
 * segment cache that passed the purge delay, or all of them with force. */
HK_API void   hk_collect(int force);
/* Check the calling thread's heap, and the heaps of exited threads that
 * wait parked for the next thread, against the allocator's invariants
 * (segments, page lists, free lists and block caches: a free block written
 * after its free, a wild list link, counts that do not add up). Returns
 * the number of broken invariants found, 0 when consistent; the first 16
 * are described on stderr. Takes time in proportion to the heap's pages
 * and free blocks: for tests and debugging. */
HK_API size_t hk_check(void);

/* Statistics, merged over all thread heaps on demand. */
#define HK_STATS_VERSION 2
typedef struct hk_stats {
    uint32_t version;          /* HK_STATS_VERSION */
    uint32_t size;             /* sizeof(hk_stats_t) */
    uint64_t allocated;        /* bytes in use: pages serving blocks + huge mappings (exact
                                  block bytes when built with HK_STATS_BLOCKS=1) */
    uint64_t allocated_total;  /* bytes ever handed out (only with HK_STATS_BLOCKS=1, else 0) */
    uint64_t freed_total;      /* bytes ever given back (only with HK_STATS_BLOCKS=1, else 0) */
    uint64_t reserved;         /* address space mapped for segments and huge blocks */
    uint64_t committed;        /* of that, memory not purged (upper bound of resident) */
    uint64_t committed_peak;
    uint64_t segments;         /* live segments (in use, abandoned or cached) */
    uint64_t segments_peak;
    uint64_t segments_cached;
    uint64_t segments_abandoned;
    uint64_t pages;            /* pages in use by some size class */
    uint64_t pages_peak;
    uint64_t huge_blocks;      /* live huge (directly mapped) blocks */
    uint64_t huge_bytes;
    uint64_t purges;           /* madvise calls that gave memory back */
    uint64_t purged_bytes;
    uint64_t heaps;            /* live thread heaps */
    uint64_t heaps_parked;     /* exited threads' heaps waiting for a new thread (version 2) */
} hk_stats_t;

/* Fill *out (version and size are set by the call). */
HK_API void   hk_stats_get(hk_stats_t *out);
/* Human-readable statistics on stderr (write(2); never allocates). */
HK_API void   hk_stats_print(void);
/* The statistics as one JSON object into buf (NUL-terminated when cap > 0);
 * returns the length the whole text needs, like snprintf. */
HK_API size_t hk_stats_json(char *buf, size_t cap);

/* Run-time options; each also read once from the environment variable
 * named in docs/allocator.md (HEAPKIT_SHOW_STATS, ...). */
typedef enum hk_option {
    HK_OPTION_SHOW_STATS = 0,   /* 1: print statistics to stderr at exit */
    HK_OPTION_PURGE_DELAY,      /* ms before free pages go back to the OS (0: at once, -1: never) */
    HK_OPTION_VERBOSE,          /* 1: warn about misuse (freeing a pointer heapkit does not own) */
    HK_OPTION_SEGMENT_CACHE,    /* free segments kept mapped for reuse (0..64) */
    HK_OPTION_PARKED_HEAPS,     /* exited threads' heaps kept for new threads (0..64, default 4; 0: none) */
    HK_OPTION_BIG_CACHE,        /* MiB of freed 6-64 KiB blocks a thread may keep for reuse, as the sum of its classes' bounds (0..64, default 16; 0: none) */
    HK_OPTION_BIG_CACHE_TOTAL,  /* MiB that the big-block caches of all threads may keep together (0..65536, default 64) */
    HK_OPTION_COUNT
} hk_option_t;

HK_API long hk_option_get(hk_option_t opt);
/* 0, or EINVAL for an unknown option or a value out of range. */
HK_API int  hk_option_set(hk_option_t opt, long value);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif
