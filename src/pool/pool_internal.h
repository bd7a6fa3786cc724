/* Shared internals of the pool family: a spinlock with backoff, the
 * descriptor table that makes stale handles safe to inspect, and the
 * thread-local registry that finds a thread's cache for a tpool or slab. */
#ifndef HK_POOL_INTERNAL_H
#define HK_POOL_INTERNAL_H

#include "heapkit/pool.h"
#include "heapkit/vm.h"
#include "../util/internal.h"
#include <errno.h>
#include <stddef.h>

/* ---- spinlock: test-and-test-and-set, pause, then yield (2-core boxes) ---- */
typedef struct { int v; } hk__spin_t;
void hk__spin_lock_slow(hk__spin_t *l) HK_HIDDEN HK_COLD;
HK_INLINE void hk__spin_lock(hk__spin_t *l)
{
    if (hk_likely(!__atomic_exchange_n(&l->v, 1, __ATOMIC_ACQUIRE))) return;
    hk__spin_lock_slow(l);
}
HK_INLINE void hk__spin_unlock(hk__spin_t *l) { __atomic_store_n(&l->v, 0, __ATOMIC_RELEASE); }

/* ---- descriptors ---- */
enum {
    HK__MAGIC_POOL  = 0x504f4f4c,  /* "POOL" */
    HK__MAGIC_ARENA = 0x4152454e,  /* "AREN" */
    HK__MAGIC_TPOOL = 0x54504f4c,  /* "TPOL" */
    HK__MAGIC_SLAB  = 0x534c4142,  /* "SLAB" */
    HK__MAGIC_DEAD  = 0x44454144,  /* "DEAD" */
};
#define HK__HANDLE_SLOT 1024u      /* every descriptor fits in one slot */

/* The head of every descriptor. hot comes first and is what the inline
 * fast paths in heapkit/pool.h read. magic is read atomically because a
 * thread-exit flush may inspect a handle another thread is destroying. */
typedef struct hk__handle {
    hk__hot_t hot;
    uint32_t magic;
    uint32_t flags;
    uint64_t id;                   /* unique over the process lifetime, never 0 */
    struct hk__handle *next_free;
    uint32_t tidx;                 /* tpool/slab: index in hk__tls_slots (0: none) */
    uint64_t tkey;                 /* id << 7 | tidx: what its slots hold */
    char name[32];
} hk__handle_t;
_Static_assert(sizeof(hk__hot_t) == 128, "the hot block is two cache lines");
_Static_assert(offsetof(hk__hot_t, tbase) == 64, "the pool fast path reads line 0 only, the others line 1");
_Static_assert(HK__TLS_SLOTS == 128, "the keys keep 7 index bits");

/* A zeroed slot with magic set and a fresh id; NULL+ENOMEM when full. */
void *hk__handle_new(uint32_t magic, unsigned flags, const char *name) HK_HIDDEN;
/* Mark dead and queue for (late) reuse. Caller holds hk__handle_lock. */
void  hk__handle_kill(void *h) HK_HIDDEN;
/* Give back a handle whose creation failed half-way (takes the lock). */
void  hk__handle_discard(void *h) HK_HIDDEN;
/* True when h points into the descriptor table (so reading it is safe). */
bool  hk__handle_in_table(const void *h) HK_HIDDEN;
extern hk__spin_t hk__handle_lock HK_HIDDEN;

HK_INLINE uint32_t hk__handle_magic(const void *h)
{
    return __atomic_load_n(&((const hk__handle_t *)h)->magic, __ATOMIC_ACQUIRE);
}
HK_INLINE bool hk__checked(const hk__handle_t *h)
{
    return HK_DEBUG >= 1 || (h->flags & HK_POOL_CHECKED);
}
/* Validate a handle for an operation: 0, or EINVAL (after a fatal report
 * in checked mode). Never reads outside the table or unmapped memory. The
 * inline part is the common "live handle of the right kind" case. */
int hk__handle_check_slow(const void *h, uint32_t magic, const char *op, const char *kind) HK_HIDDEN HK_COLD;
extern char *hk__handle_base HK_HIDDEN;
extern size_t hk__handle_fresh HK_HIDDEN;
HK_INLINE int hk__handle_check(const void *h, uint32_t magic, const char *op, const char *kind)
{
    _Static_assert((HK__HANDLE_SLOT & (HK__HANDLE_SLOT - 1)) == 0, "slot size is a power of two");
    uintptr_t off = (uintptr_t)h - (uintptr_t)__atomic_load_n(&hk__handle_base, __ATOMIC_RELAXED);
    if (hk_likely(off < __atomic_load_n(&hk__handle_fresh, __ATOMIC_ACQUIRE) * HK__HANDLE_SLOT &&
                  (off & (HK__HANDLE_SLOT - 1)) == 0 && hk__handle_magic(h) == magic))
        return 0;
    return hk__handle_check_slow(h, magic, op, kind);
}

/* ---- per-thread cache registry ----
 * A tpool or slab cache gets a small index at create time; each thread's
 * hk__tls_slots[index] holds its stack for that owner, tagged with the
 * owner's id so a slot left by a destroyed owner never matches. */
/* Give owner an index (0 when all are taken: it then works without caches). */
void hk__tls_index_new(hk__handle_t *owner) HK_HIDDEN;
/* Free owner's index; caller holds hk__handle_lock. */
void hk__tls_index_free(hk__handle_t *owner) HK_HIDDEN;
/* This thread's slot for owner, or NULL. */
HK_INLINE hk__tls_slot_t *hk__tls_mine(const hk__handle_t *owner)
{
    hk__tls_slot_t *s = &hk__tls_slots[owner->tidx];
    return owner->tidx && s->id == owner->tkey ? s : NULL;
}
/* top's count lives in the slot while top is loaded: write it back before
 * top is read or swapped out, and load a stack into the slot after. */
HK_INLINE void hk__slot_unload(hk__tls_slot_t *s) { s->top->n = (size_t)(s->cur - s->lo); }
HK_INLINE void hk__slot_load(hk__tls_slot_t *s, hk__objstack_t *top, size_t cap)
{
    s->top = top;
    s->lo = top->obj;
    s->hi = top->obj + cap;
    s->cur = top->obj + top->n;
}
/* Claim this thread's slot for owner: 0, or ENOMEM (no index or no key). */
int  hk__tls_register(hk__handle_t *owner, hk__objstack_t *top, size_t cap, void *ext) HK_HIDDEN;
/* Release this thread's slot for owner (the caller has its contents). */
void hk__tls_unregister(hk__handle_t *owner) HK_HIDDEN;
/* Called at thread exit, with hk__handle_lock held and owner alive. */
void hk__tpool_thread_exit(hk__handle_t *owner, hk__tls_slot_t *slot) HK_HIDDEN;
void hk__slab_thread_exit(hk__handle_t *owner, hk__tls_slot_t *slot) HK_HIDDEN;

/* ---- pool internals used by tpool and slab ---- */
size_t hk__pool_alloc_batch(hk_pool_t *p, void **out, size_t n) HK_HIDDEN;
void   hk__pool_free_batch(hk_pool_t *p, void *const *objs, size_t n) HK_HIDDEN;
/* 0 if obj is on an object boundary inside p's reserved range, else 1 (foreign) or 2 (boundary). */
int    hk__pool_locate(hk_pool_t *p, const void *obj) HK_HIDDEN;
size_t hk__pool_stride(const hk_pool_t *p) HK_HIDDEN;
char  *hk__pool_base(const hk_pool_t *p) HK_HIDDEN;
size_t hk__pool_reserved_objs(const hk_pool_t *p) HK_HIDDEN;

#endif
