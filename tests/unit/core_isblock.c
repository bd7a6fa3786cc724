/* hk__is_block, the free path's "is p the start of one of this page's
 * blocks" test (one multiply and a rotate, see core.h), against the
 * definition: the offset from the first block is a multiple of the block
 * size and the quotient is below the page's block count. For every size
 * class, with the block counts a span of that class has (also in a
 * segment's first page, after the header) and at their largest, at every
 * offset from 4 MiB below the first block to 4 MiB above it: one 4 MiB
 * segment is the farthest a pointer can be from its page's first block. */
#include "test.h"
#include "core/core.h"

static int reference(uint64_t off, uint32_t size, uint32_t reserved, int below)
{
    return !below && off % size == 0 && off / size < reserved;
}

static void check_class(unsigned cls, uint32_t reserved, size_t *bad)
{
    static char arena[16];
    hk_page_t pg;
    memset(&pg, 0, sizeof pg);
    hk__page_set_class(&pg, cls);
    pg.reserved = (uint16_t)reserved;
    /* A start address far from zero, so that offsets below it stay valid
     * pointers' arithmetic (the test never dereferences). */
    uintptr_t start = ((uintptr_t)arena & ~(uintptr_t)15) + ((uintptr_t)1 << 30);
    pg.start = (char *)start;
    uint32_t size = pg.block_size;
    const uint64_t span = (uint64_t)HK_SEG_SIZE;
    /* Every 16-byte step over the whole range, every byte near the first
     * blocks, the last block and the end. */
    for (uint64_t d = 0; d < 2 * span; d += 16) {
        uintptr_t p = start - span + d;
        int below = p < start;
        uint64_t off = below ? start - p : p - start;
        if (hk__is_block(&pg, (void *)p) != reference(off, size, reserved, below) && (*bad)++ < 8)
            fprintf(stderr, "  class %u (size %u, %u blocks): offset %s%llu\n", cls, size, reserved, below ? "-" : "",
                    (unsigned long long)off);
    }
    uint64_t marks[3] = { 0, (uint64_t)(reserved ? reserved - 1 : 0) * size, (uint64_t)reserved * size };
    for (int m = 0; m < 3; m++)
        for (uint64_t o = marks[m] > 64 ? marks[m] - 64 : 0; o < marks[m] + 64; o++) {
            uintptr_t p = start + o;
            if (hk__is_block(&pg, (void *)p) != reference(o, size, reserved, 0) && (*bad)++ < 8)
                fprintf(stderr, "  class %u (size %u, %u blocks): offset %llu\n", cls, size, reserved, (unsigned long long)o);
        }
}

static void test_is_block_matches_the_definition(void)
{
    size_t bad = 0, cases = 0;
    for (unsigned c = 0; c < HK_NCLASS; c++) {
        uint32_t size = hk__class_size[c];
        size_t pages = size < HK_PAGE_SIZE ? 1 : (size + HK_PAGE_SIZE - 1) / HK_PAGE_SIZE;
        uint32_t counts[4] = {
            (uint32_t)(pages * HK_PAGE_SIZE / size),                      /* a span of the class */
            size <= HK_PAGE_SIZE - HK_SEG_HDR ? (uint32_t)((pages * HK_PAGE_SIZE - HK_SEG_HDR) / size) : 0,   /* in page 0 */
            1,
            (uint32_t)(HK_SEG_SIZE / size < 65535 ? HK_SEG_SIZE / size : 65535),   /* the most a field can say */
        };
        for (int k = 0; k < 4; k++) { check_class(c, counts[k], &bad); cases++; }
    }
    fprintf(stderr, "  %zu class/count cases, %zu disagreements\n", cases, bad);
    CHECK_EQ(bad, 0);
}

/* A descriptor never set (zeroed: a fresh segment's page not in use)
 * takes no pointer for a block. */
static void test_cleared_page_takes_nothing(void)
{
    hk_page_t pg;
    memset(&pg, 0, sizeof pg);
    size_t yes = 0;
    for (uintptr_t p = 0; p < ((uintptr_t)1 << 24); p += 8) yes += hk__is_block(&pg, (void *)(((uintptr_t)1 << 40) + p));
    CHECK_EQ(yes, 0);
}

int main(void)
{
    RUN(test_is_block_matches_the_definition);
    RUN(test_cleared_page_takes_nothing);
    return t_finish();
}
