/* The descriptor table: every pool, arena, tpool and slab cache handle is a
 * slot in one reserved range that is never unmapped. A destroyed handle keeps
 * the DEAD magic, so double destroy and use after destroy read valid memory;
 * dead slots are reused only once every fresh slot has been handed out. */
#include "pool_internal.h"
#include <string.h>
#include <stddef.h>
#include <sched.h>

#define HK__HANDLE_MAX 65536u

hk__spin_t hk__handle_lock;
static hk_region_t table;            /* guarded by hk__handle_lock */
size_t hk__handle_fresh;             /* slots handed out from the top */
char *hk__handle_base;               /* table.base, readable without the lock */
static hk__handle_t *dead_head, *dead_tail;
static uint64_t next_id = 1;

void hk__spin_lock_slow(hk__spin_t *l)
{
    for (unsigned spins = 0;; spins++) {
        while (__atomic_load_n(&l->v, __ATOMIC_RELAXED)) {
            if (++spins < 100) __builtin_ia32_pause();
            else sched_yield();
        }
        if (!__atomic_exchange_n(&l->v, 1, __ATOMIC_ACQUIRE)) return;
    }
}

bool hk__handle_in_table(const void *h)
{
    /* base and size are written once, under the lock, before any handle exists. */
    char *base = __atomic_load_n(&hk__handle_base, __ATOMIC_ACQUIRE);
    if (!base) return false;
    uintptr_t off = (uintptr_t)h - (uintptr_t)base;
    return (uintptr_t)h >= (uintptr_t)base && off < (uintptr_t)HK__HANDLE_MAX * HK__HANDLE_SLOT &&
           off % HK__HANDLE_SLOT == 0 && off < __atomic_load_n(&hk__handle_fresh, __ATOMIC_ACQUIRE) * HK__HANDLE_SLOT;
}

void *hk__handle_new(uint32_t magic, unsigned flags, const char *name)
{
    hk__handle_t *h = NULL;
    hk__spin_lock(&hk__handle_lock);
    if (!table.base) {
        hk_region_t r;
        if (hk_region_reserve(&r, (size_t)HK__HANDLE_MAX * HK__HANDLE_SLOT) != 0) goto out;
        table.reserved = r.reserved;
        table.committed = 0;
        table.base = r.base;
        __atomic_store_n(&hk__handle_base, r.base, __ATOMIC_RELEASE);
    }
    size_t fresh = hk__handle_fresh;
    if (fresh < HK__HANDLE_MAX) {
        if (hk_region_commit_to(&table, (fresh + 1) * HK__HANDLE_SLOT) != 0) goto out;
        h = (hk__handle_t *)(table.base + fresh * HK__HANDLE_SLOT);
    } else if (dead_head) {
        h = dead_head;
        dead_head = h->next_free;
        if (!dead_head) dead_tail = NULL;
    }
    if (h) {
        /* Everything but magic: a stale reader of a reused slot still sees a valid magic word. */
        size_t mo = offsetof(hk__handle_t, magic);
        memset(h, 0, mo);
        memset((char *)h + mo + sizeof(uint32_t), 0, HK__HANDLE_SLOT - mo - sizeof(uint32_t));
        h->flags = flags;
        h->id = next_id++;
        const char *n = name ? name : "";
        size_t i = 0;
        for (; i < sizeof h->name - 1 && n[i]; i++) h->name[i] = n[i];
        h->name[i] = 0;
        __atomic_store_n(&h->magic, magic, __ATOMIC_RELEASE);
        if (fresh < HK__HANDLE_MAX) __atomic_store_n(&hk__handle_fresh, fresh + 1, __ATOMIC_RELEASE);
    }
out:
    hk__spin_unlock(&hk__handle_lock);
    if (!h) errno = ENOMEM;
    return h;
}

void hk__handle_discard(void *h)
{
    hk__spin_lock(&hk__handle_lock);
    hk__handle_kill(h);
    hk__spin_unlock(&hk__handle_lock);
}

void hk__handle_kill(void *hv)
{
    hk__handle_t *h = hv;
    __atomic_store_n(&h->magic, HK__MAGIC_DEAD, __ATOMIC_RELEASE);
    /* Turn the inline fast paths off: every later call goes out of line and is reported. */
    __atomic_store_n(&h->hot.tpool_key, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&h->hot.slab_key, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&h->hot.ncache, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&h->hot.shome, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&h->hot.limit, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&h->hot.aend, NULL, __ATOMIC_RELAXED);
    __atomic_store_n(&h->hot.aptr, NULL, __ATOMIC_RELAXED);
    __atomic_store_n(&h->hot.tlimit, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&h->hot.tbase, NULL, __ATOMIC_RELAXED);
    hk__tls_index_free(h);
    h->next_free = NULL;
    if (dead_tail) dead_tail->next_free = h; else dead_head = h;
    dead_tail = h;
}

static const char *kind_name(uint32_t m)
{
    switch (m) {
    case HK__MAGIC_POOL: return "pool";
    case HK__MAGIC_ARENA: return "arena";
    case HK__MAGIC_TPOOL: return "tpool";
    case HK__MAGIC_SLAB: return "slab cache";
    default: return "handle";
    }
}

int hk__handle_check_slow(const void *hv, uint32_t magic, const char *op, const char *kind)
{
    if (!hv || !hk__handle_in_table(hv)) {
        if (HK_DEBUG >= 1) hk__fatal("heapkit: %s: %p is not a heapkit %s\n", op, hv, kind);
        return EINVAL;
    }
    const hk__handle_t *h = hv;
    uint32_t m = hk__handle_magic(h);
    if (hk_likely(m == magic)) return 0;
    if (m == HK__MAGIC_DEAD) {
        if (hk__checked(h)) hk__fatal("heapkit: %s: %s '%s' at %p was already destroyed\n", op, kind, h->name, hv);
    } else if (hk__checked(h)) {
        hk__fatal("heapkit: %s: %p is a %s, not a %s\n", op, hv, kind_name(m), kind);
    }
    return EINVAL;
}
