/* Thread exit: many short-lived threads allocate blocks and exit while the
 * blocks are still live; the blocks are then freed by other threads (and by
 * main) after their owner is gone, while new threads keep allocating -- the
 * paths where a dead thread's heap waits parked and a new thread takes it
 * (up to HEAPKIT_PARKED_HEAPS of them) or is abandoned and adopted. */
#include "test.h"
#include "galloc.h"
#include <pthread.h>
#include <stdatomic.h>

#define ROUNDS 12
#define PER_ROUND 16
#define BLOCKS 800

typedef struct { unsigned char *p[BLOCKS]; size_t n[BLOCKS]; unsigned id; } batch_t;

static batch_t batches[PER_ROUND];
static atomic_int bad;

static void *allocate_and_exit(void *arg)
{
    batch_t *b = arg;
    for (int i = 0; i < BLOCKS; i++) {
        size_t n = 1 + (size_t)((b->id * 131u + (unsigned)i * 97u) % (i % 50 == 0 ? 200000u : 1000u));
        b->p[i] = g_malloc(n);
        if (!b->p[i]) { atomic_fetch_add(&bad, 1); continue; }
        b->n[i] = n;
        memset(b->p[i], (int)(b->id & 0xff), n < 256 ? n : 256);
        b->p[i][n - 1] = (unsigned char)b->id;
    }
    /* free a few of its own before exiting, so the heap has holes */
    for (int i = 0; i < BLOCKS; i += 7) { g_free(b->p[i]); b->p[i] = NULL; }
    return NULL;
}

static void *free_batch(void *arg)
{
    batch_t *b = arg;
    for (int i = 0; i < BLOCKS; i++) {
        if (!b->p[i]) continue;
        if (b->p[i][0] != (unsigned char)(b->id & 0xff) || b->p[i][b->n[i] - 1] != (unsigned char)b->id)
            atomic_fetch_add(&bad, 1);
        g_free(b->p[i]);
        b->p[i] = NULL;
    }
    return NULL;
}

static void test_blocks_outlive_their_threads(void)
{
    for (unsigned round = 0; round < ROUNDS; round++) {
        pthread_t t[PER_ROUND];
        for (unsigned i = 0; i < PER_ROUND; i++) {
            batches[i].id = round * PER_ROUND + i + 1;
            REQUIRE(pthread_create(&t[i], NULL, allocate_and_exit, &batches[i]) == 0);
        }
        for (int i = 0; i < PER_ROUND; i++) pthread_join(t[i], NULL);
        /* half the batches are freed by new threads (which also allocate),
         * the other half by main, all after their owners exited */
        pthread_t f[PER_ROUND / 2];
        for (int i = 0; i < PER_ROUND / 2; i++) REQUIRE(pthread_create(&f[i], NULL, free_batch, &batches[i]) == 0);
        for (int i = PER_ROUND / 2; i < PER_ROUND; i++) free_batch(&batches[i]);
        for (int i = 0; i < PER_ROUND / 2; i++) pthread_join(f[i], NULL);
    }
    CHECK_EQ(atomic_load(&bad), 0);
}

static void test_main_allocates_after_many_exits(void)
{
    /* adoption must leave the heap usable: a burst of allocation in main */
    enum { N = 20000 };
    static unsigned char *p[N];
    for (int i = 0; i < N; i++) { p[i] = g_malloc((size_t)(16 + i % 300)); REQUIRE(p[i] != NULL); p[i][0] = (unsigned char)i; }
    for (int i = 0; i < N; i++) { CHECK(p[i][0] == (unsigned char)i); g_free(p[i]); }
}

int main(void)
{
    RUN(test_blocks_outlive_their_threads);
    RUN(test_main_allocates_after_many_exits);
    return t_finish();
}
