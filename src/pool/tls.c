/* The per-thread registry behind tpools and slab magazines: each tpool or
 * slab cache owns a small index into the thread-local hk__tls_slots array,
 * so the inline fast path finds its stack with one indexed load and an id
 * compare. One pthread key, whose destructor returns every live slot to its
 * owner's depot when the thread exits. */
#include "pool_internal.h"
#include <pthread.h>
#include <string.h>

/* Slot 0 belongs to no one: its id never equals a handle's key (0, or
 * id << 7 | i with i > 0); the other slots' id 0 matches no key either. No
 * fast path writes a slot whose id does not match, so the shared start-up
 * array is never written (it lives in read-only memory). */
static const hk__tls_slot_t tls_empty[HK__TLS_SLOTS] = { [0] = { .id = UINT64_MAX } };
__thread hk__tls_slot_t *hk__tls_slots = (hk__tls_slot_t *)tls_empty;
#define TLS_ARRAY_BYTES (HK__TLS_SLOTS * sizeof(hk__tls_slot_t))

static hk__handle_t *owners[HK__TLS_SLOTS];    /* guarded by hk__handle_lock */
static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;
static __thread bool key_set;

void hk__tls_index_new(hk__handle_t *owner)
{
    hk__spin_lock(&hk__handle_lock);
    for (uint32_t i = 1; i < HK__TLS_SLOTS; i++)
        if (!owners[i]) {
            owners[i] = owner;
            owner->tidx = i;
            owner->tkey = owner->id << 7 | i;
            break;
        }
    hk__spin_unlock(&hk__handle_lock);
}

void hk__tls_index_free(hk__handle_t *owner)
{
    if (owner->tidx && owners[owner->tidx] == owner) owners[owner->tidx] = NULL;
    owner->tidx = 0;
}

static void thread_exit(void *arg)
{
    (void)arg;
    /* A later destructor that allocates again re-arms the key for another round. */
    key_set = false;
    hk__tls_slot_t *arr = hk__tls_slots;
    if (arr == tls_empty) return;
    for (uint32_t i = 1; i < HK__TLS_SLOTS; i++) {
        hk__tls_slot_t *s = &hk__tls_slots[i];
        if (!s->id) continue;
        /* The handle lock keeps destroy from releasing the owner meanwhile. */
        hk__spin_lock(&hk__handle_lock);
        hk__handle_t *o = owners[i];
        if (o && o->tkey == s->id) {
            uint32_t m = hk__handle_magic(o);
            if (m == HK__MAGIC_TPOOL) hk__tpool_thread_exit(o, s);
            else if (m == HK__MAGIC_SLAB) hk__slab_thread_exit(o, s);
        }
        hk__spin_unlock(&hk__handle_lock);
        memset(s, 0, sizeof *s);
    }
    hk__tls_slots = (hk__tls_slot_t *)tls_empty;
    hk_vm_release(arr, hk__align_up(TLS_ARRAY_BYTES, hk_vm_page_size()));
}

static void make_key(void) { (void)pthread_key_create(&exit_key, thread_exit); }

int hk__tls_register(hk__handle_t *owner, hk__objstack_t *top, size_t cap, void *ext)
{
    if (!owner->tidx) return ENOMEM;
    if (!key_set) {
        pthread_once(&exit_once, make_key);
        if (pthread_setspecific(exit_key, (void *)1) == 0) key_set = true;
        if (!key_set) return ENOMEM;
    }
    if (hk__tls_slots == tls_empty) {
        void *mem;
        if (hk_vm_alloc(hk__align_up(TLS_ARRAY_BYTES, hk_vm_page_size()), 0, &mem) != 0) return ENOMEM;
        memcpy(mem, tls_empty, TLS_ARRAY_BYTES);
        hk__tls_slots = mem;
    }
    hk__tls_slot_t *s = &hk__tls_slots[owner->tidx];
    hk__slot_load(s, top, cap);
    s->ext = ext;
    s->allocs = s->frees = 0;
    __atomic_store_n(&s->id, owner->tkey, __ATOMIC_RELAXED);
    return 0;
}

void hk__tls_unregister(hk__handle_t *owner)
{
    hk__tls_slot_t *s = hk__tls_mine(owner);
    if (s) memset(s, 0, sizeof *s);
}
