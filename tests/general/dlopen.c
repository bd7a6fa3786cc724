/* libheapkit.so loaded late with dlopen (RTLD_LOCAL, so the program keeps
 * glibc's malloc): it must load (its static TLS must fit the surplus glibc
 * keeps for dlopen), start up on first use, and serve threads that existed
 * before it was loaded as well as new ones. */
#include "test.h"
#include <dlfcn.h>
#include <pthread.h>

static void *(*p_malloc)(size_t);
static void (*p_free)(void *);
static size_t (*p_usable)(void *);
static const char *lib_path;

static pthread_barrier_t loaded;

static void *worker(void *arg)
{
    if (arg) pthread_barrier_wait(&loaded);      /* an old thread: started before dlopen */
    for (int round = 0; round < 200; round++) {
        void *b[64];
        for (int i = 0; i < 64; i++) {
            b[i] = p_malloc((size_t)(i * 37 % 3000) + 1);
            if (!b[i] || p_usable(b[i]) < (size_t)(i * 37 % 3000) + 1) return (void *)1;
            memset(b[i], i, (size_t)(i * 37 % 3000) + 1);
        }
        for (int i = 0; i < 64; i++) p_free(b[i]);
    }
    return NULL;
}

static void test_dlopen_late(void)
{
    pthread_t old;
    pthread_barrier_init(&loaded, NULL, 2);
    REQUIRE(pthread_create(&old, NULL, worker, (void *)1) == 0);
    void *plain = malloc(100);                   /* glibc's, before the load */
    void *h = dlopen(lib_path, RTLD_NOW | RTLD_LOCAL);
    if (!h) fprintf(stderr, "  dlopen: %s\n", dlerror());
    REQUIRE(h != NULL);
    /* POSIX's way to store dlsym's result in a function pointer. */
    void *sym;
    sym = dlsym(h, "hk_malloc");             memcpy(&p_malloc, &sym, sizeof sym);
    sym = dlsym(h, "hk_free");               memcpy(&p_free, &sym, sizeof sym);
    sym = dlsym(h, "hk_malloc_usable_size"); memcpy(&p_usable, &sym, sizeof sym);
    REQUIRE(p_malloc && p_free && p_usable);
    pthread_barrier_wait(&loaded);
    pthread_t fresh[3];
    for (int i = 0; i < 3; i++) REQUIRE(pthread_create(&fresh[i], NULL, worker, NULL) == 0);
    CHECK(worker(NULL) == NULL);
    void *r;
    for (int i = 0; i < 3; i++) { pthread_join(fresh[i], &r); CHECK(r == NULL); }
    pthread_join(old, &r);
    CHECK(r == NULL);
    CHECK_EQ(p_usable(plain), 0);                /* not heapkit's: it says so, no crash */
    free(plain);
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: %s LIBHEAPKIT_SO\n", argv[0]); return 2; }
    lib_path = argv[1];
    RUN(test_dlopen_late);
    return t_finish();
}
