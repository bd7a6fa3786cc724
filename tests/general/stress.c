/* Multithreaded stress with cross-thread frees: threads swap blocks in and
 * out of a shared slot table with atomic exchanges, so most blocks are
 * freed by a thread other than their allocator. Every block carries a
 * pattern derived from its size and owner, checked before it is freed.
 * Fixed seeds; sizes mostly small with some medium and a few large. */
#include "test.h"
#include "galloc.h"
#include <pthread.h>
#include <stdatomic.h>

#define THREADS 4
#define SLOTS 4096
#ifdef HK_SANITIZE_BUILD
#define OPS 30000
#else
#define OPS 250000
#endif

typedef struct { uint32_t size, tag; } hdr_t;   /* at the start of each block */

static _Atomic(unsigned char *) slot[SLOTS];
static atomic_int bad;

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17;
    return *s;
}

static size_t pick(uint64_t *s)
{
    uint64_t x = rnd(s) % 1000;
    if (x < 900) return 8 + rnd(s) % 248;
    if (x < 995) return 256 + rnd(s) % 32000;
    return 64000 + rnd(s) % 600000;
}

static unsigned char *make(size_t n, uint32_t tag)
{
    if (n < sizeof(hdr_t) + 1) n = sizeof(hdr_t) + 1;
    unsigned char *p = g_malloc(n);
    if (!p) return NULL;
    hdr_t h = { (uint32_t)n, tag };
    memcpy(p, &h, sizeof h);
    p[n - 1] = (unsigned char)tag;
    return p;
}

static void check_and_free(unsigned char *p)
{
    if (!p) return;
    hdr_t h;
    memcpy(&h, p, sizeof h);
    if (h.size < sizeof h + 1 || p[h.size - 1] != (unsigned char)h.tag || g_usable(p) < h.size) atomic_fetch_add(&bad, 1);
    g_free(p);
}

static void *worker(void *arg)
{
    uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(uintptr_t)arg + 1;
    for (uint32_t i = 0; i < OPS; i++) {
        size_t k = rnd(&s) % SLOTS;
        unsigned char *p;
        if (rnd(&s) % 16 == 0) {
            /* take a block (maybe another thread's), grow or shrink it, put it back */
            p = atomic_exchange(&slot[k], NULL);
            if (p) {
                hdr_t h;
                memcpy(&h, p, sizeof h);
                size_t n = pick(&s) + sizeof h + 1;
                unsigned char *q = g_realloc(p, n);
                if (!q) { atomic_fetch_add(&bad, 1); continue; }
                if (q[(n < h.size ? n : h.size) - 1] != (unsigned char)h.tag && n >= h.size) atomic_fetch_add(&bad, 1);
                h.size = (uint32_t)n;
                memcpy(q, &h, sizeof h);
                q[n - 1] = (unsigned char)h.tag;
                p = atomic_exchange(&slot[k], q);
                check_and_free(p);
            }
            continue;
        }
        p = make(pick(&s), (uint32_t)((uintptr_t)arg * 1000003u + i));
        if (!p) { atomic_fetch_add(&bad, 1); continue; }
        check_and_free(atomic_exchange(&slot[k], p));
    }
    /* The other threads still free into this thread's pages meanwhile. */
    if (g_check() != 0) atomic_fetch_add(&bad, 1);
    return NULL;
}

static void test_cross_thread_stress(void)
{
    pthread_t t[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++) REQUIRE(pthread_create(&t[i], NULL, worker, (void *)(i + 1)) == 0);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    for (size_t k = 0; k < SLOTS; k++) check_and_free(atomic_exchange(&slot[k], NULL));
    CHECK_EQ(atomic_load(&bad), 0);
}

static void test_second_round_reuses_memory(void)
{
    /* the same again after everything was freed: exercises reuse of
     * pages that other threads emptied */
    atomic_store(&bad, 0);
    test_cross_thread_stress();
}

int main(void)
{
    RUN(test_cross_thread_stress);
    RUN(test_second_round_reuses_memory);
    return t_finish();
}
