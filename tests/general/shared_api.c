/* Linked against libheapkit.so: every component's public API is exported
 * from the shared library (it builds with hidden visibility, so this breaks
 * when a public header loses its visibility pragma). */
#include "test.h"
#include "heapkit.h"

static void test_components(void)
{
    CHECK(hk_vm_page_size() >= 4096);
    hk_engine_t *e = hk_engine_create("tlsf", NULL);
    REQUIRE(e);
    void *p = hk_engine_malloc(e, 100);
    CHECK(p != NULL);
    CHECK_EQ(hk_engine_free(e, p), HK_OK);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);

    hk_heap_t *h = hk_heap_new(NULL);
    REQUIRE(h);
    void *q = hk_heap_malloc(h, 64);
    CHECK(q && hk_heap_of(q) == h);
    hk_heap_destroy(h);

    hk_pool_t *pool = hk_pool_create(48, 16, NULL);
    REQUIRE(pool);
    void *o = hk_pool_alloc(pool);
    CHECK(o != NULL);
    CHECK_EQ(hk_pool_free(pool, o), 0);
    hk_pool_destroy(pool);

    hk_arena_t *a = hk_arena_create(0);
    REQUIRE(a);
    CHECK(hk_arena_alloc(a, 10) != NULL);
    hk_arena_destroy(a);

    void *m = hk_malloc(10);
    CHECK(m && hk_malloc_usable_size(m) >= 10);
    hk_free(m);
}

int main(void)
{
    RUN(test_components);
    return t_finish();
}
