/* hk_check: the calling thread's heap, and the parked heaps of exited
 * threads, against the allocator's invariants. It walks what only the
 * owner writes (segments, page queues, free lists and block caches): the
 * calling thread's heap with no lock, the parked ones under the parked
 * list's lock (no thread owns them, and the lock keeps a starting thread
 * from taking one meanwhile); other threads may go on freeing into their
 * pages (such frees touch only the atomic thread_free lists, which it
 * does not walk). Other live threads' heaps are not checked: their owners
 * change them without a lock. For tests and debugging: O(pages + listed
 * blocks). */
#include "core.h"

#define HK_CHECK_REPORTS 16

void hk__check_bad(hk_checker_t *ck, const char *what, const void *where)
{
    if (ck->bad++ < HK_CHECK_REPORTS) hk__report("heapkit: check: %s (at %p)\n", what, where);
}

/* The pages of one queue (c: its class, HK_NCLASS for the full list):
 * linked both ways, each a page in use of this heap, of class c (in the
 * full list: FULL), and each page's own check; *pages counts them. */
static void check_queue(hk_checker_t *ck, const hk_theap_t *heap, const hk_page_queue_t *q, size_t c, size_t limit, size_t *pages)
{
    if ((q->last == NULL) != (q->first == NULL || q->first == &hk__page_empty)) {
        hk__check_bad(ck, "queue's first and last disagree", q);
        return;
    }
    hk_page_t *prev = NULL;
    for (hk_page_t *pg = q->last ? q->first : NULL; pg; prev = pg, pg = pg->next) {
        if (++*pages > limit) { hk__check_bad(ck, "queue longer than the heap's pages (a cycle?)", q); return; }
        hk_segment_t *seg = hk__segment_of(pg);
        if (!hk__smallmap_has(seg) || seg->heap != heap) { hk__check_bad(ck, "queue holds a page of another heap's segment", pg); return; }
        if (pg->prev != prev) hk__check_bad(ck, "page's prev link is not the page before it", pg);
        bool full = (__atomic_load_n(&pg->flags, __ATOMIC_RELAXED) & HK_PF_FULL) != 0;
        if (c == HK_NCLASS && !full) hk__check_bad(ck, "page in the full list without FULL", pg);
        if (c != HK_NCLASS && full) hk__check_bad(ck, "FULL page in a class queue", pg);
        if (c != HK_NCLASS && pg->cls != c) hk__check_bad(ck, "page in another class's queue", pg);
        hk__page_check(ck, heap, pg);
    }
    if (prev != q->last) hk__check_bad(ck, "queue's last is not its last page", q);
}

/* A segment of the heap: a small segment owned by it and its thread, on
 * both segment maps, its page count agreeing with its free map, free pages
 * marked free, every span in use headed by a page with tail pages that
 * point back to it. *heads counts the spans in use. */
static void check_segment(hk_checker_t *ck, const hk_theap_t *heap, hk_segment_t *seg, size_t *heads)
{
    if (seg->magic != HK_SEG_MAGIC || seg->kind != HK_SEG_SMALL) { hk__check_bad(ck, "heap's segment is not a small segment", seg); return; }
    if (!hk__smallmap_has(seg) || !hk__segmap_has(seg)) hk__check_bad(ck, "heap's segment missing from the segment maps", seg);
    if (seg->heap != heap) hk__check_bad(ck, "segment on the heap's list names another heap", seg);
    if (__atomic_load_n(&seg->thread_id, __ATOMIC_RELAXED) != heap->thread_id) hk__check_bad(ck, "segment's thread is not its heap's", seg);
    if (seg->used_pages != HK_SEG_PAGES - hk__popcount64(seg->free_mask)) hk__check_bad(ck, "segment's page count disagrees with its free map", seg);
    for (unsigned i = 0; i < HK_SEG_PAGES; ) {
        hk_page_t *pg = &seg->pages[i];
        uint32_t flags = __atomic_load_n(&pg->flags, __ATOMIC_RELAXED);
        if ((seg->free_mask >> i) & 1) {
            /* (a fresh segment's descriptors stay zero until first used) */
            if (flags != HK_PF_FREE && !(flags == 0 && pg->block_size == 0)) hk__check_bad(ck, "free page not marked free", pg);
            i++;
            continue;
        }
        if (pg->back != 0 || pg->span == 0 || i + pg->span > HK_SEG_PAGES) { hk__check_bad(ck, "page in use is no span's head", pg); return; }
        for (unsigned j = 1; j < pg->span; j++) {
            hk_page_t *t = &seg->pages[i + j];
            if (((seg->free_mask >> (i + j)) & 1) || t->back != j || __atomic_load_n(&t->flags, __ATOMIC_RELAXED) != HK_PF_SPAN_TAIL)
                hk__check_bad(ck, "span's tail page does not point back to its head", t);
        }
        ++*heads;
        i += pg->span;
    }
}

/* The heap's segment lists (seg_file in segment.c): each segment filed by
 * its free pages, each list linked both ways and holding only the heap's
 * segments, the heap's page count the sum of its segments', and every
 * segment with a dirty tail where the next purge will find it. */
static void check_segment_lists(hk_checker_t *ck, const hk_theap_t *heap, size_t nseg)
{
    size_t on[3] = { 0, 0, 0 };
    uint64_t used = 0;
    for (hk_segment_t *seg = heap->segments; seg; seg = seg->next) {
        if (!seg->in_heap) hk__check_bad(ck, "heap's segment not marked as on its lists", seg);
        if (seg->slist != hk__seg_state(seg)) hk__check_bad(ck, "segment filed on the wrong list for its free pages", seg);
        if (seg->slist < 3) on[seg->slist]++;
        used += seg->used_pages;
        if (seg->tails && !heap->tails_all) {
            bool found = false;
            for (unsigned k = 0; k < heap->ntails; k++) found |= heap->tails[k] == seg;
            if (!found) hk__check_bad(ck, "segment with a dirty tail that no purge would visit", seg);
        }
    }
    if (used != heap->used_pages) hk__check_bad(ck, "heap's page count is not its segments' sum", heap);
    if (nseg != heap->nsegs) hk__check_bad(ck, "heap's segment count disagrees with its list", heap);
    const unsigned lists[2] = { HK_SL_RES, HK_SL_PUR };
    for (unsigned l = 0; l < 2; l++) {
        size_t n = 0;
        hk_segment_t *prev = NULL;
        for (hk_segment_t *seg = l == 0 ? heap->seg_res : heap->seg_pur; seg; prev = seg, seg = seg->snext) {
            if (++n > nseg) { hk__check_bad(ck, "segment list longer than the heap's segments (a cycle?)", heap); break; }
            if (seg->heap != heap || !seg->in_heap) hk__check_bad(ck, "segment list holds another heap's segment", seg);
            if (seg->slist != lists[l]) hk__check_bad(ck, "segment on a list it is not filed for", seg);
            if (seg->sprev != prev) hk__check_bad(ck, "segment's list prev link is not the segment before it", seg);
        }
        if (n != on[lists[l]]) hk__check_bad(ck, "segment list and the segments filed on it differ in number", heap);
    }
}

/* One heap: the calling thread's, or a parked one (under the parked
 * list's lock, which keeps it parked). */
static void check_heap(hk_checker_t *ck, const hk_theap_t *heap)
{
    size_t heads = 0, pages = 0, nseg = 0;
    for (hk_segment_t *seg = heap->segments; seg; seg = seg->next) {
        if (++nseg > ((size_t)1 << (HK_ADDR_BITS - HK_SEG_SHIFT))) { hk__check_bad(ck, "segment list does not end", heap); return; }
        check_segment(ck, heap, seg, &heads);
    }
    check_segment_lists(ck, heap, nseg);
    size_t limit = nseg * HK_SEG_PAGES;
    for (size_t c = 0; c < HK_NCLASS; c++) check_queue(ck, heap, &heap->queues[c], c, limit, &pages);
    check_queue(ck, heap, &heap->full, HK_NCLASS, limit, &pages);
    if (pages != heads) hk__check_bad(ck, "spans in use and pages in the queues differ in number", heap);
    /* The block caches: within their bounds, each block a free block of
     * its class; a big class's two bounds equal and their byte count
     * exact (within the budget but for a lower one set since by another
     * thread: the next miss closes them); no bound in other classes. */
    size_t bytes = 0;
    for (unsigned c = 0; c < HK_NCLASS; c++) {
        const struct hk_xclass *x = &heap->xc[c];
        bool big = hk__class_big(c);
        unsigned most = big ? x->cap[0] : HK_XCACHE_MAX;
        if (c >= HK_XCLASSES && !big) {
            if (x->n || x->cap[0] || x->cap[1]) hk__check_bad(ck, "block cache bound in a class that has no cache", x);
            continue;
        }
        if (big && (x->cap[0] != x->cap[1] || x->cap[0] > HK_XBIG_MAX)) { hk__check_bad(ck, "big-block cache bounds disagree", x); continue; }
        if (x->n > most) { hk__check_bad(ck, big ? "big-block cache class over its bound" : "foreign-block cache class over its size", x); continue; }
        for (unsigned k = 0; k < x->n; k++) hk__cached_check(ck, heap->xcache[c][k], c);
        if (big) bytes += (size_t)x->cap[0] * hk__class_size[c];
    }
    if (bytes != heap->xb_capbytes) hk__check_bad(ck, "big-block cache's bound bytes are off", heap);
    else if (bytes > hk__xbig_total()) hk__check_bad(ck, "big-block caches' total is below one heap's bounds", heap);
}

static void check_parked(hk_theap_t *heap, void *arg)
{
    hk_checker_t *ck = arg;
    if (heap->thread_id != 0) hk__check_bad(ck, "parked heap has an owner thread", heap);
    check_heap(ck, heap);
}

/* The calling thread's heap (if it ever allocated), then the heaps of
 * exited threads that wait parked (since session 20). */
size_t hk_check(void)
{
    hk_checker_t ck = { 0 };
    hk_theap_t *heap = hk__tls_heap;
    if (heap != &hk__heap_empty) check_heap(&ck, heap);
    hk__parked_foreach(check_parked, &ck);
    return ck.bad;
}
