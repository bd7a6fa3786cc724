/* Page-level policies of the general allocator that decide how much memory
 * stays resident: freed blocks in any page of a class are reused before a
 * page carves fresh memory, and realloc grows a block that is alone in its
 * span in place. Each case runs in a fresh thread, so it starts from a
 * thread heap of its own. */
#include "test.h"
#include "heapkit.h"
#include <pthread.h>
#include <string.h>

#define PAGE ((uintptr_t)64 * 1024)
static uintptr_t page_of(const void *p) { return (uintptr_t)p / PAGE; }

typedef struct { void (*fn)(void); } job_t;
static void *thread_main(void *arg)
{
    ((job_t *)arg)->fn();
    return NULL;
}

static void run_in_thread(void (*fn)(void))
{
    job_t job = { fn };
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, thread_main, &job) == 0);
    REQUIRE(pthread_join(t, NULL) == 0);
}

/* Fill page A of the 256-byte class until a block lands in a second page
 * B, free all of A but one block, then keep allocating. B has carved one
 * 4 KiB run (16 blocks); once those are out, the next block must come
 * from A's freed ones instead of B carving more. */
enum { MAXB = 1024 };
static void reuse_worker(void)
{
    static void *a[MAXB];
    size_t n = 0;
    a[n++] = hk_malloc(256);
    uintptr_t pa = page_of(a[0]);
    void *first_b = NULL;
    while (n < MAXB) {
        void *p = hk_malloc(256);
        CHECK(p != NULL);
        if (page_of(p) != pa) { first_b = p; break; }
        a[n++] = p;
    }
    REQUIRE(first_b != NULL);
    CHECK(n > 100);                        /* A held a page's worth of blocks */
    uintptr_t pb = page_of(first_b);
    for (size_t i = 1; i < n; i++) hk_free(a[i]);
    static void *b[MAXB];
    size_t nb = 0, in_b = 1;
    void *other = NULL;
    while (nb < MAXB) {
        void *p = hk_malloc(256);
        CHECK(p != NULL);
        b[nb++] = p;
        if (page_of(p) != pb) { other = p; break; }
        in_b++;
    }
    REQUIRE(other != NULL);
    CHECK_EQ(page_of(other), pa);          /* A's freed blocks, not a third page */
    CHECK(in_b <= 16);                     /* B carved no more than its first run */
    for (size_t i = 0; i < nb; i++) hk_free(b[i]);
    hk_free(first_b);
    hk_free(a[0]);
}

static void test_freed_blocks_before_fresh_memory(void) { run_in_thread(reuse_worker); }

static void fill(unsigned char *p, size_t n, unsigned seed) { for (size_t i = 0; i < n; i += 97) p[i] = (unsigned char)(seed + i); }
static int same(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i += 97) if (p[i] != (unsigned char)(seed + i)) return 0;
    return 1;
}

/* A block of `from` bytes, filled (seed), realloc'd to `to`: it must stay
 * where it is, with its data, and is then filled anew (seed + 1). *out is
 * the block (NULL when the malloc failed). */
static void grown_in_place(unsigned char **out, size_t from, size_t to, unsigned seed)
{
    *out = NULL;
    unsigned char *p = hk_malloc(from);
    REQUIRE(p != NULL);
    fill(p, from, seed);
    unsigned char *q = hk_realloc(p, to);
    CHECK(q == p);
    CHECK(hk_malloc_usable_size(q) >= to);
    CHECK(same(q, from, seed));
    fill(q, to, seed + 1);
    *out = q;
}

static void grow_worker(void)
{
    /* One block a page (40 KiB class): a bigger class within the page. */
    unsigned char *q, *t;
    grown_in_place(&q, 40 * 1024, 44 * 1024, 1);
    REQUIRE(q != NULL);
    /* A span that grows into the free pages after it (a fresh heap has them). */
    grown_in_place(&t, 100 * 1024, 200 * 1024, 3);
    REQUIRE(t != NULL);
    /* Its memory really is its own: a block allocated now lies elsewhere. */
    unsigned char *u = hk_malloc(64 * 1024);
    REQUIRE(u != NULL);
    CHECK((uintptr_t)u + 64 * 1024 <= (uintptr_t)t || (uintptr_t)u >= (uintptr_t)t + 200 * 1024);
    fill(u, 64 * 1024, 5);
    CHECK(same(t, 200 * 1024, 4));
    /* Growing again past what is free after it moves the block, data kept. */
    unsigned char *v = hk_realloc(t, 1900 * 1024);
    REQUIRE(v != NULL);
    CHECK(same(v, 200 * 1024, 4));
    CHECK(same(u, 64 * 1024, 5));
    CHECK(same(q, 44 * 1024, 2));

    hk_free(q);
    hk_free(u);
    hk_free(v);
}

static void test_realloc_grows_in_place(void) { run_in_thread(grow_worker); }

/* A thread that does not own the block's page never changes it: its
 * realloc moves the block into its own heap. */
static unsigned char *shared_block;
static void foreign_grow(void)
{
    unsigned char *q = hk_realloc(shared_block, 48 * 1024);
    CHECK(q != NULL && q != shared_block);
    CHECK(same(q, 40 * 1024, 7));
    shared_block = q;
}

static void test_realloc_by_other_thread_moves(void)
{
    shared_block = hk_malloc(40 * 1024);
    REQUIRE(shared_block != NULL);
    fill(shared_block, 40 * 1024, 7);
    run_in_thread(foreign_grow);
    CHECK(same(shared_block, 40 * 1024, 7));
    hk_free(shared_block);
}

int main(void)
{
    RUN(test_freed_blocks_before_fresh_memory);
    RUN(test_realloc_grows_in_place);
    RUN(test_realloc_by_other_thread_moves);
    return t_finish();
}
