/* The segregated-fit engine: API behaviour, a seeded random sequence with
 * check() after every step, misuse detection, corruption detection, and the
 * policies that make it space-efficient (best fit, coalescing, in-place
 * realloc, heap growth by only what is lacking, shrinking the top). */
#define ENGINE "segregated"
#define TT_REALLOC_MERGES_BACK
#include "engine_tagged_tests.h"

/* Small requests are carved from the high end of a free block, so a small
 * block allocated into a large hole does not split it in the middle. */
static void test_small_blocks_go_high(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    char *big = hk_engine_malloc(e, 4000), *guard = hk_engine_malloc(e, 16);
    REQUIRE(big && guard);
    CHECK_EQ(hk_engine_free(e, big), HK_OK);
    char *s = hk_engine_malloc(e, 24);
    CHECK(s > big && s < guard);
    CHECK(s + 24 + 8 >= guard - 8);
    char *l = hk_engine_malloc(e, 3000);
    CHECK(l == big);
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_destroy(e);
}

int main(void)
{
    RUN(test_info_and_basics);
    RUN(test_random_sequence);
    RUN(test_misuse_codes);
    RUN(test_abort_mode);
    RUN(test_interior_pointers);
    RUN(test_corruption_detected);
    RUN(test_coalescing_and_best_fit);
    RUN(test_realloc_in_place);
    RUN(test_heap_growth_and_shrink);
    RUN(test_small_blocks_go_high);
    RUN(test_out_of_memory);
    return t_finish();
}
