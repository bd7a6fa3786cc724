/* heapkit classic engines behind one interface: implicit free list (first,
 * next, best, worst fit; immediate or deferred coalescing), explicit free
 * lists (LIFO, address-ordered), segregated fit, binary buddy, TLSF and the
 * hole-index heap. Every engine manages its own address-stable region.
 *
 * Example:
 *     hk_engine_t *e = hk_engine_create("tlsf", NULL);
 *     char *p = hk_engine_malloc(e, 100);
 *     hk_engine_free(e, p);                 // 0, or HK_EINVALID / HK_EDOUBLEFREE
 *     assert(hk_engine_check(e) == 0);      // number of broken invariants
 *     hk_engine_destroy(e);
 */
#ifndef HEAPKIT_ENGINE_H
#define HEAPKIT_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Exported from libheapkit.so although the library builds with hidden visibility. */
#pragma GCC visibility push(default)

typedef struct hk_engine hk_engine_t;

/* Results of hk_engine_free and other checked operations. */
enum {
    HK_OK          = 0,
    HK_EINVALID    = -1,  /* pointer not owned by this engine, or not a block start */
    HK_EDOUBLEFREE = -2,  /* block is already free */
    HK_ECORRUPT    = -3,  /* heap metadata around the block is damaged */
};

typedef struct hk_engine_config {
    size_t max_size;      /* bytes of address space to reserve; 0 = 1 GiB */
    unsigned flags;       /* HK_ENGINE_ABORT_ON_MISUSE: report and abort instead of returning an error */
} hk_engine_config_t;

#define HK_ENGINE_ABORT_ON_MISUSE 1u

typedef struct hk_engine_info {
    const char *name;
    const char *description;
    size_t overhead;      /* bytes of metadata per allocated block */
    size_t min_block;     /* smallest block the engine hands out, metadata included */
    size_t alignment;     /* alignment of every returned pointer */
    size_t max_request;   /* largest request it can serve */
} hk_engine_info_t;

typedef struct hk_engine_stats {
    uint32_t version;     /* HK_ENGINE_STATS_VERSION */
    uint32_t size;        /* sizeof(hk_engine_stats_t) */
    size_t live_bytes;    /* usable bytes of allocated blocks */
    size_t live_blocks;
    size_t footprint;     /* bytes of the region in use now (heap size) */
    size_t peak_footprint;/* high-water mark of footprint */
    size_t free_bytes;    /* bytes in free blocks (headers included) */
    size_t free_blocks;
    size_t largest_free;
    double fragmentation; /* 1 - largest_free / free_bytes, 0 when nothing is free */
} hk_engine_stats_t;
#define HK_ENGINE_STATS_VERSION 1u

/* Called by walk for every block in address order. */
typedef void (*hk_walk_fn)(void *arg, void *block, size_t size, bool in_use);

/* NULL-terminated list of engine names, in a stable order. */
const char *const *hk_engine_names(void);
/* Create an engine by name; NULL with errno = EINVAL for an unknown name. */
hk_engine_t *hk_engine_create(const char *name, const hk_engine_config_t *cfg);
/* Release the engine and every block it holds at once. */
void   hk_engine_destroy(hk_engine_t *e);
const char *hk_engine_name(const hk_engine_t *e);

void  *hk_engine_malloc(hk_engine_t *e, size_t size);
void  *hk_engine_calloc(hk_engine_t *e, size_t n, size_t size);
void  *hk_engine_realloc(hk_engine_t *e, void *p, size_t size);
/* align must be a power of two; EINVAL otherwise. */
void  *hk_engine_memalign(hk_engine_t *e, size_t align, size_t size);
int    hk_engine_free(hk_engine_t *e, void *p);
size_t hk_engine_usable_size(hk_engine_t *e, const void *p);
/* Number of broken invariants found (0 = consistent). */
size_t hk_engine_check(hk_engine_t *e);
void   hk_engine_walk(hk_engine_t *e, hk_walk_fn fn, void *arg);
void   hk_engine_stats(hk_engine_t *e, hk_engine_stats_t *out);
void   hk_engine_info(const hk_engine_t *e, hk_engine_info_t *out);
/* True when p lies inside the engine's region (it may still be invalid). */
bool   hk_engine_owns(const hk_engine_t *e, const void *p);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif
