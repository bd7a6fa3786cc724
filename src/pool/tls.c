/* The per-thread registry behind tpools and slab magazines: a small
 * thread-local table maps a handle (and its unique id, so a reused slot
 * never matches) to this thread's cache. One pthread key, whose destructor
 * returns every live cache to its owner's depot when the thread exits. */
#include "pool_internal.h"
#include <pthread.h>

__thread hk__tls_entry_t hk__tls_tab[HK__TLS_SLOTS];

static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;
static __thread bool key_set;

static bool entry_live(const hk__tls_entry_t *e)
{
    return e->owner && hk__handle_magic(e->owner) != HK__MAGIC_DEAD && e->owner->id == e->id;
}

static void thread_exit(void *arg)
{
    (void)arg;
    /* A later destructor that allocates again re-arms the key for another round. */
    key_set = false;
    for (int i = 0; i < HK__TLS_SLOTS; i++) {
        hk__tls_entry_t *e = &hk__tls_tab[i];
        if (!e->owner) continue;
        /* The handle lock keeps destroy from releasing the owner meanwhile. */
        hk__spin_lock(&hk__handle_lock);
        if (entry_live(e)) {
            uint32_t m = hk__handle_magic(e->owner);
            if (m == HK__MAGIC_TPOOL) hk__tpool_thread_exit(e->owner, e->cache);
            else if (m == HK__MAGIC_SLAB) hk__slab_thread_exit(e->owner, e->cache);
        }
        hk__spin_unlock(&hk__handle_lock);
        e->owner = NULL;
        e->cache = NULL;
    }
}

static void make_key(void) { (void)pthread_key_create(&exit_key, thread_exit); }

int hk__tls_register(hk__handle_t *owner, void *cache)
{
    if (!key_set) {
        pthread_once(&exit_once, make_key);
        if (pthread_setspecific(exit_key, (void *)1) == 0) key_set = true;
    }
    int slot = -1;
    hk__spin_lock(&hk__handle_lock);
    for (int i = 0; i < HK__TLS_SLOTS && slot < 0; i++) {
        hk__tls_entry_t *e = &hk__tls_tab[i];
        if (!e->owner || !entry_live(e)) slot = i;  /* a dead owner's cache went with it */
    }
    hk__spin_unlock(&hk__handle_lock);
    if (slot < 0 || !key_set) return ENOMEM;
    hk__tls_tab[slot].owner = owner;
    hk__tls_tab[slot].id = owner->id;
    hk__tls_tab[slot].cache = cache;
    return 0;
}

void *hk__tls_unregister(hk__handle_t *owner)
{
    for (int i = 0; i < HK__TLS_SLOTS; i++) {
        hk__tls_entry_t *e = &hk__tls_tab[i];
        if (e->owner == owner && e->id == owner->id) {
            void *c = e->cache;
            e->owner = NULL;
            e->cache = NULL;
            return c;
        }
    }
    return NULL;
}
