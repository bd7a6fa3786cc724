/* fork() from a multithreaded parent while other threads allocate: the
 * child must be able to allocate and free (heapkit's locks are taken
 * around fork by pthread_atfork handlers). */
#include "test.h"
#include "heapkit.h"
#include "core/core.h"
#include <pthread.h>

static volatile int stop;

static void *churn(void *arg)
{
    (void)arg;
    void *v[64] = { 0 };
    unsigned i = 0;
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
        unsigned k = i++ % 64;
        hk_free(v[k]);
        /* Large sizes too, so segment-level locks are in use at fork time,
         * and 8-40 KiB blocks, so the big-block caches hold some. */
        size_t n = i % 7 == 0 ? (size_t)(1 + i % 5) << 20 : i % 3 == 0 ? 8192 + (size_t)(i % 4) * 8192 : 16 + i % 3000;
        v[k] = hk_malloc(n);
    }
    for (unsigned k = 0; k < 64; k++) hk_free(v[k]);
    return NULL;
}

static int child_work(void)
{
    /* Only this thread's heap lives on: the total of the big-block
     * caches' bounds is its own, not the siblings' too. */
    if (hk__xbig_total() != hk__tls_heap->xb_capbytes) return 3;
    void *v[1000];
    for (int i = 0; i < 1000; i++) { v[i] = hk_malloc((size_t)(i * 131) % 70000 + 1); if (!v[i]) return 1; memset(v[i], 7, 1); }
    for (int i = 0; i < 1000; i++) hk_free(v[i]);
    if (hk_check() != 0) return 4;
    void *h = hk_malloc(8 << 20);
    if (!h) return 2;
    hk_free(h);
    return 0;
}

static void test_fork_multithreaded(void)
{
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, churn, NULL);
    for (int round = 0; round < 20; round++) {
        void *mine = hk_malloc(100);
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            int rc = child_work();
            hk_free(mine);
            _exit(rc);
        }
        REQUIRE(pid > 0);
        int st = 0;
        waitpid(pid, &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        hk_free(mine);
    }
    __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
}

int main(void)
{
    RUN(test_fork_multithreaded);
    return t_finish();
}
