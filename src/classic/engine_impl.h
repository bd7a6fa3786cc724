/* The operations table every classic engine fills in. An engine's state is
 * a struct whose first member is `struct hk_engine`, so the generic layer
 * (engine.c) can allocate it, check arguments and dispatch. */
#ifndef HK_ENGINE_IMPL_H
#define HK_ENGINE_IMPL_H

#include "heapkit/engine.h"
#include "heapkit/vm.h"
#include "../util/internal.h"

typedef struct hk_engine_ops {
    const char *name;
    const char *description;
    size_t state_size;                   /* sizeof the engine's struct */
    /* Called once with `e` zeroed except for ops/cfg; the region is not yet
     * reserved (engines call hk_sbrk_init on e->heap themselves). */
    int    (*init)(hk_engine_t *e);
    void   (*fini)(hk_engine_t *e);      /* may be NULL: the region is released by the caller */
    void  *(*malloc)(hk_engine_t *e, size_t size);            /* size >= 1 */
    int    (*free)(hk_engine_t *e, void *p);                  /* p != NULL, inside the region */
    void  *(*realloc)(hk_engine_t *e, void *p, size_t size);  /* may be NULL: generic move */
    void  *(*memalign)(hk_engine_t *e, size_t align, size_t size); /* align > engine alignment, pow2 */
    size_t (*usable_size)(hk_engine_t *e, const void *p);     /* 0 when p is not a live block */
    size_t (*check)(hk_engine_t *e);
    void   (*walk)(hk_engine_t *e, hk_walk_fn fn, void *arg);
    void   (*stats)(hk_engine_t *e, hk_engine_stats_t *out);  /* generic layer sets version/size */
    void   (*info)(const hk_engine_t *e, hk_engine_info_t *out); /* generic layer sets name/description */
} hk_engine_ops_t;

struct hk_engine {
    const hk_engine_ops_t *ops;
    hk_engine_config_t cfg;   /* max_size already defaulted */
    size_t mapping_size;      /* bytes mapped for this struct */
    hk_sbrk_t heap;           /* the engine's region; engines that need more keep it in their own struct */
};

/* Misuse handling: returns `code`, or reports and aborts when the engine
 * was created with HK_ENGINE_ABORT_ON_MISUSE. */
int hk__engine_misuse(hk_engine_t *e, int code, const void *p, const char *what) HK_HIDDEN;

/* The engines (one file each under src/classic/). */
extern const hk_engine_ops_t hk__engine_implicit_first HK_HIDDEN;
extern const hk_engine_ops_t hk__engine_implicit_next HK_HIDDEN;
extern const hk_engine_ops_t hk__engine_implicit_best HK_HIDDEN;
extern const hk_engine_ops_t hk__engine_implicit_worst HK_HIDDEN;
extern const hk_engine_ops_t hk__engine_implicit_deferred HK_HIDDEN;
extern const hk_engine_ops_t hk__engine_explicit_lifo HK_HIDDEN;
extern const hk_engine_ops_t hk__engine_explicit_addr HK_HIDDEN;
extern const hk_engine_ops_t hk__engine_segregated HK_HIDDEN;
extern const hk_engine_ops_t hk__engine_buddy HK_HIDDEN;
extern const hk_engine_ops_t hk__engine_tlsf HK_HIDDEN;
extern const hk_engine_ops_t hk__engine_hole_index HK_HIDDEN;

#endif
