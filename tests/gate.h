/* A rendezvous for a test's threads: one moves the gate to a phase, the
 * others wait until it gets there. */
#ifndef HK_TEST_GATE_H
#define HK_TEST_GATE_H

#include <pthread.h>

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

#endif
