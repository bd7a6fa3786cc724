/* The TLSF engine: API behaviour, a seeded random sequence with check()
 * after every step (check() also verifies both bitmap levels against the
 * lists), misuse and corruption detection, the two-level class mapping, good
 * fit without list walks, coalescing with both neighbours, in-place realloc. */
#define ENGINE "tlsf"
#include "engine_tagged_tests.h"

void hk__tlsf_mapping_insert(size_t size, unsigned *fl, unsigned *sl);
void hk__tlsf_mapping_search(size_t size, unsigned *fl, unsigned *sl);

/* Smallest block size of list (fl, sl): 16-byte steps below 512, then 32
 * lists per power of two. */
static size_t list_min(unsigned fl, unsigned sl)
{
    return fl == 0 ? (size_t)sl * 16 : ((size_t)32 + sl) << (fl + 3);
}

static void test_mapping(void)
{
    static const struct { size_t size; unsigned fl, sl; } ins[] = {
        {32, 0, 2}, {48, 0, 3}, {496, 0, 31}, {512, 1, 0}, {528, 1, 1}, {1008, 1, 31},
        {1024, 2, 0}, {1040, 2, 0}, {1056, 2, 1}, {4096, 4, 0}, {4224, 4, 1},
        {8176, 4, 31}, {(size_t)1 << 20, 12, 0}, {((size_t)1 << 30) + ((size_t)3 << 25), 22, 3},
    };
    for (size_t i = 0; i < sizeof ins / sizeof ins[0]; i++) {
        unsigned fl = 99, sl = 99;
        hk__tlsf_mapping_insert(ins[i].size, &fl, &sl);
        if (fl != ins[i].fl || sl != ins[i].sl)
            fprintf(stderr, "  insert(%zu) = (%u,%u), want (%u,%u)\n", ins[i].size, fl, sl, ins[i].fl, ins[i].sl);
        CHECK(fl == ins[i].fl && sl == ins[i].sl);
    }
    static const struct { size_t size; unsigned fl, sl; } srch[] = {
        {32, 0, 2}, {496, 0, 31}, {512, 1, 0}, {528, 1, 1}, {1024, 2, 0}, {1040, 2, 1},
        {1056, 2, 1}, {1072, 2, 2}, {4112, 4, 1}, {8176, 5, 0},
    };
    for (size_t i = 0; i < sizeof srch / sizeof srch[0]; i++) {
        unsigned fl = 99, sl = 99;
        hk__tlsf_mapping_search(srch[i].size, &fl, &sl);
        if (fl != srch[i].fl || sl != srch[i].sl)
            fprintf(stderr, "  search(%zu) = (%u,%u), want (%u,%u)\n", srch[i].size, fl, sl, srch[i].fl, srch[i].sl);
        CHECK(fl == srch[i].fl && sl == srch[i].sl);
    }
    /* every block size: insert puts it in a list whose range holds it; search
     * gives the first list whose smallest block is still large enough */
    int bad = 0;
    for (size_t s = 32; s < ((size_t)1 << 22) && bad < 5; s += (s < 65536 ? 16 : 16 * (rnd() % 64 + 1))) {
        unsigned fl, sl, f2, s2;
        hk__tlsf_mapping_insert(s, &fl, &sl);
        size_t lo = list_min(fl, sl);
        size_t hi = sl + 1 < 32 ? list_min(fl, sl + 1) : list_min(fl + 1, 0);
        if (!(lo <= s && s < hi)) { bad++; fprintf(stderr, "  insert(%zu) -> [%zu,%zu)\n", s, lo, hi); }
        hk__tlsf_mapping_search(s, &f2, &s2);
        size_t m = list_min(f2, s2);
        if (m < s) { bad++; fprintf(stderr, "  search(%zu) -> list of %zu\n", s, m); }
        if (m != s && (f2 * 32 + s2) != (fl * 32 + sl) + 1) { bad++; fprintf(stderr, "  search(%zu) skips a list\n", s); }
    }
    CHECK_EQ(bad, 0);
}

/* malloc never walks a list: a fitting block that is not at the head of its
 * list is not found, the heap grows instead, and the structure stays sound. */
static void test_good_fit_without_list_walk(void)
{
    hk_engine_t *e = mk(0);
    REQUIRE(e);
    /* block sizes 1040 and 1024 share list (2,0) */
    char *big = hk_engine_malloc(e, 1032), *g1 = hk_engine_malloc(e, 16);
    char *small = hk_engine_malloc(e, 1016), *g2 = hk_engine_malloc(e, 16);
    REQUIRE(big && g1 && small && g2);
    CHECK_EQ(hk_engine_usable_size(e, big), 1032);
    CHECK_EQ(hk_engine_free(e, big), HK_OK);
    CHECK_EQ(hk_engine_free(e, small), HK_OK);   /* head of the list now: too small */
    size_t fp = footprint(e);
    char *p = hk_engine_malloc(e, 1032);
    REQUIRE(p);
    CHECK(p != big);
    CHECK(footprint(e) > fp);
    CHECK_EQ(hk_engine_check(e), 0);
    /* with the fitting block at the head, the one look finds it */
    char *q = hk_engine_malloc(e, 1016);
    CHECK(q == small);
    char *r = hk_engine_malloc(e, 1032);
    CHECK(r == big);
    /* a request that rounds up takes the head of a larger list and splits it */
    char *h = hk_engine_malloc(e, 5000), *g3 = hk_engine_malloc(e, 16);
    REQUIRE(h && g3);
    CHECK_EQ(hk_engine_free(e, h), HK_OK);
    char *s = hk_engine_malloc(e, 2000);
    CHECK(s == h);
    walk_t w = walk(e);
    CHECK_EQ(w.n_free, 1);
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
    RUN(test_mapping);
    RUN(test_good_fit_without_list_walk);
    RUN(test_out_of_memory);
    return t_finish();
}
