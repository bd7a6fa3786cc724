/* fork from a multithreaded parent: while several threads allocate and
 * free (so allocator locks may be held at the moment of the fork), the
 * parent forks; each child allocates and frees a lot -- also from a new
 * thread -- and must exit 0. A hang here means a lock was inherited held. */
#include "test.h"
#include "galloc.h"
#include <pthread.h>
#include <stdatomic.h>

#define THREADS 4

/* TSan dies when a child of a multithreaded parent starts threads; ASan
 * (GCC 12's) does not take its allocator's locks around fork, so a child's
 * new thread can block forever on one a parent thread held (seen: calloc
 * in ASan's thread start-up). Sanitizer builds skip the child's thread;
 * the plain builds run it. */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define CHILD_THREAD 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define CHILD_THREAD 0
#endif
#endif
#ifndef CHILD_THREAD
#define CHILD_THREAD 1
#endif
#define FORKS 12

static atomic_int stop;

static void *churn(void *arg)
{
    uint64_t s = (uintptr_t)arg * 2654435761u + 1;
    void *keep[256] = { 0 };
    while (!atomic_load(&stop)) {
        for (int i = 0; i < 256; i++) {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            g_free(keep[i]);
            size_t n = (s % 8 == 0) ? 1000 + s % 300000 : 8 + s % 500;
            keep[i] = g_malloc(n);
            if (keep[i]) memset(keep[i], 1, n < 64 ? n : 64);
        }
    }
    for (int i = 0; i < 256; i++) g_free(keep[i]);
    return NULL;
}

static int child_work(void)
{
    int ok = 1;
    for (int round = 0; round < 20; round++) {
        enum { N = 2000 };
        unsigned char *p[N];
        for (int i = 0; i < N; i++) {
            size_t n = 1 + (size_t)(i * 37 % 4000);
            p[i] = g_malloc(n);
            if (!p[i]) return 0;
            p[i][0] = (unsigned char)i;
            p[i][n - 1] = (unsigned char)(i + 1);
        }
        for (int i = 0; i < N; i++) {
            size_t n = 1 + (size_t)(i * 37 % 4000);
            if (p[i][0] != (unsigned char)i && n > 1) ok = 0;
            if (p[i][n - 1] != (unsigned char)(i + 1)) ok = 0;
            g_free(p[i]);
        }
    }
    void *big = g_malloc(20u << 20);
    if (!big) return 0;
    memset(big, 7, 20u << 20);
    g_free(big);
    return ok;
}

static void *child_thread(void *arg)
{
    *(int *)arg = child_work();
    return NULL;
}

static void test_fork_while_threads_allocate(void)
{
    pthread_t t[THREADS];
    atomic_store(&stop, 0);
    for (uintptr_t i = 0; i < THREADS; i++) REQUIRE(pthread_create(&t[i], NULL, churn, (void *)(i + 1)) == 0);
    for (int f = 0; f < FORKS; f++) {
        usleep(2000);
        fflush(NULL);
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            alarm(20);                   /* a deadlocked child dies instead of hanging the suite */
            int ok = child_work();
            int tok = 1;
            if (CHILD_THREAD) {
                pthread_t ct;
                if (pthread_create(&ct, NULL, child_thread, &tok) != 0) _exit(3);
                pthread_join(ct, NULL);
            }
            /* _exit: nothing at-exit runs in the child (under ASan, LeakSanitizer's
             * exit check in a fork of a multithreaded parent can stall past the alarm). */
            _exit(ok && tok ? 0 : 1);
        }
        int st = 0;
        REQUIRE(waitpid(pid, &st, 0) == pid);
        if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) fprintf(stderr, "  child %d: status 0x%x\n", f, st);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    /* and the parent still works */
    CHECK(child_work());
}

int main(void)
{
    RUN(test_fork_while_threads_allocate);
    return t_finish();
}
