/* Threads in tests: a rendezvous (one moves the gate to a phase, the
 * others wait until it gets there), and a function run on a thread of its
 * own. */
#ifndef HK_TEST_GATE_H
#define HK_TEST_GATE_H

#include <pthread.h>
#include <stdbool.h>

typedef struct { pthread_mutex_t mu; pthread_cond_t cv; int phase; } t_gate_t;
#define T_GATE_INIT { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 }

static inline void t_gate_set(t_gate_t *g, int phase)
{
    pthread_mutex_lock(&g->mu);
    g->phase = phase;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static inline void t_gate_wait(t_gate_t *g, int phase)
{
    pthread_mutex_lock(&g->mu);
    while (g->phase != phase) pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

/* fn(arg) on a new thread (so with a thread heap of its own), waited for;
 * false if the thread could not be started or joined. */
static inline bool t_in_thread(void *(*fn)(void *), void *arg)
{
    pthread_t th;
    if (pthread_create(&th, NULL, fn, arg) != 0) return false;
    return pthread_join(th, NULL) == 0;
}

#endif
