/* The general allocator's internal picture and its inline fast paths.
 * Memory comes in 4 MiB segments aligned to their size, so a pointer masks
 * to its segment header; a segment is cut into 64 KiB pages (or runs of
 * pages, "spans"), each serving one size class for one thread heap. Every
 * page keeps two free lists: `free` (malloc pops, the owner's frees push:
 * the block freed last is the next one out) and the atomic `thread_free`
 * (other threads' frees, CAS-pushed with their count, taken in when `free`
 * runs dry). */
#ifndef HK_CORE_H
#define HK_CORE_H

#include "../util/internal.h"
#include "heapkit/alloc.h"
#include "heapkit/vm.h"
#include <pthread.h>

#define HK_SEG_SHIFT   22
#define HK_SEG_SIZE    ((size_t)1 << HK_SEG_SHIFT)
#define HK_SEG_MASK    (HK_SEG_SIZE - 1)
#define HK_PAGE_SHIFT  16
#define HK_PAGE_SIZE   ((size_t)1 << HK_PAGE_SHIFT)
#define HK_SEG_PAGES   (HK_SEG_SIZE / HK_PAGE_SIZE)
#define HK_TAIL_UNIT   4096                      /* a reused span's unused tail is purged in these */
#define HK_TAIL_LOOK   16                        /* resident runs compared for the least to purge */
#define HK_NCLASS      65
#define HK_SMALL_MAX   ((size_t)2 << 20)        /* largest size class: 2 MiB */
#define HK_HUGE_OFF    64                        /* huge block offset in its mapping */
#define HK_SEG_MAGIC   0x68656170u              /* "heap" */
#define HK_ADDR_BITS   47

_Static_assert(HK_SEG_PAGES == 64, "the page bitmaps are one 64-bit word");

/* A page's thread_free is one word: the list's first block in the low
 * HK_TF_SHIFT bits (segments lie below 2^HK_ADDR_BITS: hk__segment_map
 * refuses others), the number of blocks on the list above them (at most
 * the page's `reserved`, under 2^16). The owner takes list and count with
 * one exchange, so it never walks the blocks another core just wrote: in
 * `prodcons 4` that walk, one dependent cache miss per block, was a fifth
 * of the run's samples. */
#define HK_TF_SHIFT    48
_Static_assert(HK_ADDR_BITS <= HK_TF_SHIFT && sizeof(uintptr_t) == 8, "a block address fits below the count");
HK_INLINE struct hk_block *hk__tf_list(uintptr_t w) { return (struct hk_block *)(w & (((uintptr_t)1 << HK_TF_SHIFT) - 1)); }
HK_INLINE uint32_t hk__tf_count(uintptr_t w) { return (uint32_t)(w >> HK_TF_SHIFT); }

/* A free block: the list link, and a tag that marks it free (every block
 * is at least 16 bytes). malloc clears the tag, free sets it; a free that
 * finds it set looks for the block in the lists before it goes on, so a
 * double free is caught instead of linking a block into a list twice. */
typedef struct hk_block { struct hk_block *next; uintptr_t tag; } hk_block_t;
#define HK_FREE_TAG(pg) ((uintptr_t)(pg) ^ (uintptr_t)0x5bd1e9955bd1e995ull)
struct hk_theap;

/* Page flags (read by any thread with __atomic, written by the owner):
 * any set flag takes the owner's free off its first fast path; a free
 * into a thread's block cache only minds flags above HK_PF_MIXED (hence
 * FULL and MIXED are the lowest bits: one compare tests "nothing else"). */
enum {
    HK_PF_FULL    = 1,   /* page sits in the heap's full list */
    HK_PF_MIXED   = 2,   /* frees go to a block cache: the owner heap is mixed (classes up
                          * to 1 KiB, see hk_theap_t.mixed), or a big class of a thread
                          * heap (see HK_XBIG_FIRST) */
    HK_PF_ALIGNED = 4,   /* some pointers handed out are inside blocks (memalign) */
    HK_PF_FREE    = 8,   /* page not in use: a free into it is misuse */
    /* room for the checking modes: canaries, quarantine, encoded lists */
    HK_PF_CHECKED = 16,
    HK_PF_TRIMMED = 32,  /* some 4 KiB pages of free blocks went back to the OS (see `trimmed`) */
    HK_PF_SPAN_TAIL = 64,/* not the head of its span (`back` pages after it): the free fast
                          * path, which does not follow `back`, must go the slow way */
};
#define HK_PF_CACHEABLE (HK_PF_FULL | HK_PF_MIXED)

typedef struct hk_page {
    /* First line: read by every thread that frees into the page, written
     * by the owner only on slow paths (plus the remote frees' CAS). */
    uint32_t flags;
    uint32_t block_size;
    uint8_t  cls;
    uint8_t  span;             /* pages in this span (head only) */
    uint8_t  back;             /* distance back to the span head */
    uint8_t  lone;             /* free page: it was a span of one page (see purge_over_budget) */
    uint16_t reserved;         /* blocks that fit in the span */
    uint16_t trimmed;          /* owner only: bit k, the k-th 4 KiB of a one-page span went back
                                * to the OS; the free blocks that touch it are off the lists */
    char *start;               /* first block */
    uintptr_t thread_free;     /* atomic: other threads' frees, a list and its length (hk__tf_list) */
    struct hk_theap *heap;      /* atomic: owner heap (NULL when abandoned) */
    uint64_t inv;              /* 2^44 / block_size + 1: block index of an offset without a division */
    uint32_t dmagic;           /* block_size = d0 << dshift, d0 odd: the inverse of d0 mod 2^32 */
    uint8_t  dshift;           /* (see hk__is_block) */
    uintptr_t owner;           /* atomic: a page in use, its heap's owner thread (the segment's
                                * thread_id, copied here so that the free fast path reads this
                                * line and not the segment's first, which shares its cache set
                                * with every page's first block); 0 if none */
    /* Second line: the owner's hot fields, so that other threads reading
     * the first line never steal the line malloc and free write. */
    hk_block_t *free __attribute__((aligned(64)));   /* malloc pops, owner frees push */
    uint32_t used;             /* blocks out (remote frees count once collected) */
    uint16_t capacity;         /* blocks carved out so far */
    uint8_t  clean;            /* free page, not purged: 4 KiB units at the end of this 64 KiB
                                  * page that no block reached since it was last purged (0 when
                                  * not known: a cached segment's cleared descriptor) */
    uint64_t free_time;        /* ms when the span was given back to the segment; in an
                                  * empty page its class keeps, the heap's spans_made (high
                                  * 32 bits) and purge_epoch (low) when it emptied */
    uint32_t sparse_since;     /* owner only: ms (low 32 bits, | 1) when a purge first found the
                                  * page sparse, 0 when the last look found it busy (trimming) */
    uint16_t dirty_end;        /* owner only, span head in use: where the memory an earlier class
                                  * left resident ends, in 4 KiB units from the span's base, when
                                  * that is past this class's blocks (0: none); the next purge gives
                                  * the excess back (see hk__segment_alloc_span) */
    struct hk_page *next, *prev;   /* owner only: the page's queue */
} hk_page_t;
_Static_assert(sizeof(hk_page_t) == 128, "a page is two cache lines");

enum { HK_SEG_SMALL = 1, HK_SEG_HUGE = 2, HK_SEG_CACHED = 3 };
enum { HK_SL_NONE = 0, HK_SL_RES = 1, HK_SL_PUR = 2 };   /* hk_segment_t.slist */

typedef struct hk_segment {
    /* The first 64 bytes are shared with huge blocks' headers. */
    uint32_t magic;
    uint16_t kind;
    uint16_t huge_shift;       /* huge blocks: the block starts 2^huge_shift bytes in (64 or its alignment) */
    uintptr_t thread_id;       /* atomic: owner thread, 0 if none (abandoned, huge) */
    size_t map_size;
    struct hk_theap *heap;
    struct hk_segment *next, *prev;
    uint64_t cache_time;       /* ms when it entered the cache (or, in a heap, became empty) */
    uint64_t purged_mask;      /* bit i: page i unused and given back to the OS (huge blocks too) */
    /* small segments only */
    uint64_t free_mask;        /* bit i: page i free */
    uint32_t used_pages;
    uint32_t thp;              /* small segments of a heap with HK_HEAP_HUGE_PAGES: never cached, released whole */
    uint32_t abandoned;        /* on the abandoned list (read and written under its lock) */
    uint64_t full_remote;      /* atomic: bit i, page i is full and a remote free reached it since
                                * its owner last looked (see collect_full in page.c) */
    /* Small segments of a heap: the heap's list of segments with a free
     * page that is resident (HK_SL_RES), or with free pages all purged
     * (HK_SL_PUR), or neither (HK_SL_NONE: no free page), so that taking a
     * span and purging walk those and not every segment (see seg_file). */
    struct hk_segment *snext, *sprev;
    uint8_t slist;
    uint8_t in_heap;           /* on its heap's lists (segment_link) */
    uint8_t tails;             /* a page in use has a dirty tail (dirty_end) for the next purge */
    hk_page_t pages[HK_SEG_PAGES];
} hk_segment_t;

#define HK_SEG_HDR  (((sizeof(hk_segment_t)) + 4095) & ~(size_t)4095)

/* The two words that identify a segment or huge block. Left to itself,
 * GCC merges the two constant stores into one load from .rodata, the only
 * read a running program would make there (its fault brings in the pages
 * around it too): the asm hides the constants. */
HK_INLINE void hk__segment_stamp(hk_segment_t *seg, uint16_t kind)
{
    uint32_t m = HK_SEG_MAGIC;
    __asm__("" : "+r"(m), "+r"(kind));
    seg->magic = m;
    seg->kind = kind;
}
/* The list (hk_segment_t.slist) a heap's segment belongs on: a free page
 * resident, free pages all purged, or no free page (segment.c seg_file). */
HK_INLINE unsigned hk__seg_state(const hk_segment_t *seg)
{
    if (seg->free_mask & ~seg->purged_mask) return HK_SL_RES;
    return seg->free_mask ? HK_SL_PUR : HK_SL_NONE;
}
_Static_assert(__builtin_offsetof(hk_segment_t, pages) == 128, "the header fits the first two lines (free's fast path adds 128)");
_Static_assert(__builtin_offsetof(hk_segment_t, free_mask) <= HK_HUGE_OFF, "huge header fits");
_Static_assert(__builtin_offsetof(hk_segment_t, purged_mask) + 8 <= HK_HUGE_OFF, "huge blocks keep the purge bitmap");

/* A spin lock that yields; only slow paths take locks. */
typedef struct { int v; } hk_lock_t;

typedef struct hk_page_queue { hk_page_t *first, *last; } hk_page_queue_t;

/* The foreign-block cache: per class (blocks up to 1 KiB), a stack of
 * pointers to blocks of other live threads' pages that this thread freed,
 * and in a mixed heap (hk__heap_turn_mixed) to its own freed blocks too;
 * its mallocs pop from it before they look at a page (rules in
 * hk__free_cached and hk__free_generic). The blocks stay counted as used
 * in their pages until they go back (the older half when a class fills
 * up; all of them at a purge, hk_collect and thread exit). */
#define HK_XCLASSES    21
#define HK_XCACHE_BYTES 4096      /* per class, in block bytes */
#define HK_XCACHE_MAX   32        /* per class, in blocks */

/* The big-block cache: the classes of 6 KiB to 64 KiB blocks (requests
 * over 5 KiB), whose 64 KiB pages hold one to ten blocks, so that nearly
 * every free of such a block would empty or unfull its page and nearly
 * every malloc take a new span (`midsize`: a slow path for most of its
 * mallocs and frees, and the page faults of memory given back and touched
 * again). A thread heap's frees of these classes (its own blocks and other
 * live threads') go on a stack per class, rows of the same array and
 * counts of the same xc[] as the foreign-block cache, so the fast paths
 * push and pop them as they do small blocks (since session 20): malloc
 * pops before it looks at the class's first page. The class's bound
 * (both xc[c].cap, 0 until the class first misses) grows by one with each
 * malloc that finds the class empty (cache and first page), up to
 * HK_XBIG_MAX, and frees that find it full bring it down (see
 * xbig_over); the bounds of all classes together, in bytes, stay within
 * HEAPKIT_BIG_CACHE MiB (HK_OPTION_BIG_CACHE, 16 by default; 0 turns the
 * cache off), so the blocks held do too, and the bounds of all thread
 * heaps together within HEAPKIT_BIG_CACHE_TOTAL MiB (64 by default). A
 * purge empties a class that did not change since the purge before and
 * closes its bound. */
#define HK_XBIG_FIRST  30          /* 6 KiB (the comments said 10 KiB until session 17) */
#define HK_XBIG_LAST   44          /* 64 KiB */
#define HK_XBIG_N      (HK_XBIG_LAST - HK_XBIG_FIRST + 1)
#define HK_XBIG_MAX    HK_XCACHE_MAX
#define HK_XBIG_SHRINK 4
HK_INLINE bool hk__class_big(size_t c) { return c >= HK_XBIG_FIRST && c <= HK_XBIG_LAST; }

typedef struct hk_theap_stats {
    uint64_t malloc_bytes, free_bytes;
} hk_theap_stats_t;

/* A thread heap. A private heap over the general allocator is the same
 * structure owned by a handle instead of a thread (`owner` set, thread_id 0):
 * segments never mix heaps, and every free into its pages takes the atomic
 * thread_free path, so it needs no lock. */
typedef struct hk_theap {
    /* Page-list mallocs left before the next look at the clock (see
     * hk__heap_tick): the owner's frees go back on the list malloc pops,
     * so a program can run on fast paths alone for good. */
    uint32_t tick;
    hk_page_queue_t queues[HK_NCLASS];
    hk_page_queue_t full;
    /* The block caches, per class: blocks in it, and how many it may
     * hold of the heap's own blocks and of other threads' (cap[0],
     * cap[1]). The foreign-block cache (classes below HK_XCLASSES): cap[0]
     * 0 until the heap is mixed, then up to 8; cap[1] 0 for blocks under
     * 64 bytes until the thread has freed 64 of them (see
     * hk__free_generic). The big-block cache (HK_XBIG_FIRST..LAST): both
     * the class's adaptive bound. Kept for every class, the bounds 0 in
     * the classes between and above, in private heaps and in the empty
     * heap (an exiting thread's TLS points there before its heap goes):
     * the fast paths test neither the class nor the heap. */
    struct hk_xclass { uint16_t n, cap[2], pad; } xc[HK_NCLASS];   /* cap[0]: own blocks, cap[1]: other threads';
                                                                    * 8 bytes, so malloc indexes it with the class */
    uint8_t xforeign[HK_XCLASSES];    /* other threads' blocks < 64 B freed so far (up to 64) */
    /* A heap whose thread frees other threads' blocks (see hk__heap_turn_mixed):
     * its own frees go to the block cache too, cap[0] open, its pages of
     * classes up to 1 KiB HK_PF_MIXED. Once mixed, always (also parked). */
    uint8_t mixed;
    uintptr_t thread_id;
    size_t full_pending;              /* atomic: remote frees hit full pages (which: the
                                       * segments' full_remote) */
    hk_segment_t *segments;           /* owned small segments */
    /* The segments with a resident free page, and those with free pages
     * all purged (hk_segment_t.slist); the pages in use in all segments. */
    hk_segment_t *seg_res, *seg_pur;
    uint32_t used_pages;
    uint32_t nsegs;                   /* segments on `segments` (collect_full's pace) */
    /* Set when a segment with no page in use joined seg_pur (a purge then
     * looks through that list too), and when more segments have dirty
     * tails than `tails` holds (a purge then walks every segment). */
    uint8_t pur_empty, tails_all;
    uint8_t ntails;
    hk_segment_t *tails[8];           /* segments whose `tails` is set */
    uint64_t purge_due;               /* ms; 0: nothing waits to be purged */
    uint32_t no_purge;                /* >0 while a page walk is running: no purge from retires */
    uint32_t purge_tick;              /* malloc slow paths since the last look at the clock */
    uint32_t purge_epoch;             /* purges so far: stamps the empty pages a class keeps */
    uint32_t freed_pages;             /* one-page spans given back since the last budget check */
    uint32_t used_hwm;                /* most pages in use seen by a budget check */
    uint32_t trim_next;               /* class where the next purge's page trimming starts */
    uint32_t spans_made;              /* spans this heap took for its classes: the age of a kept empty page */
    uint64_t purge_since;             /* ms when purge_due was set after the last purge: caps the pushback */
    uintptr_t key;                    /* reserved: heap key for the checking modes */
    struct hk_theap *next_heap, *prev_heap;
    struct hk_theap *parked_next;     /* on the parked list (see hk__heap_park) */
    uint64_t parked_at;               /* atomic: ms | 1 while parked, else 0 */
    uint32_t parked_frees;            /* frees into parked heaps' segments (a clock look every 64th) */
    /* The big-block cache (see HK_XBIG_FIRST; blocks and bounds in xc[]):
     * per class the frees over its bound since it last came down, and its
     * count and top block at the last purge (unchanged at the next: the
     * class is idle); the bounds of all classes in bytes. */
    struct hk_xbclass { const hk_block_t *seen_top; uint16_t seen_n; uint8_t over; } xb[HK_XBIG_N];
    size_t xb_capbytes;
    hk_theap_stats_t st;
    /* Pages (spans) this thread heap took (+) and gave back (-), and their
     * bytes, not yet added to hk__gstats.pages / page_bytes: added 16
     * pages at a time (hk__page_stats_flush), so the counters that every
     * thread shares are not written on every span taken and given back.
     * Written by the owner, read by hk_stats_get (atomics, relaxed).
     * Private heaps add theirs at once. */
    int64_t pages_delta, page_bytes_delta;
    /* private heaps only (zero in thread heaps) */
    void *owner;                      /* the hk_heap_t handle */
    size_t max_size;                  /* 0: no cap on `reserved` */
    size_t reserved, reserved_peak;   /* atomic: bytes of its pages in use and huge blocks (the cap counts these) */
    hk_segment_t *huge;               /* its huge blocks, linked through their headers */
    hk_lock_t huge_lock;              /* guards `huge`: a huge block is freed by any thread */
    bool huge_pages;                  /* HK_HEAP_HUGE_PAGES: fresh segments on transparent huge pages */
    /* The block caches' stacks, a row of 32 pointers a class up to
     * HK_XBIG_LAST (11.5 KiB; the rows of classes 21-29 are never used):
     * the foreign-block cache's, then the big-block cache's. A flexible
     * array: heaps from the pool have room for it (HK_THEAP_BYTES), the
     * static empty heap does not (it never caches), and neither it in
     * .data nor a cleared new heap touches pages for it. */
    hk_block_t *xcache[][HK_XCACHE_MAX];
} __attribute__((aligned(64))) hk_theap_t;
#define HK_THEAP_BYTES ((sizeof(hk_theap_t) + (HK_XBIG_LAST + 1) * sizeof(hk_block_t *[HK_XCACHE_MAX]) + 63) & ~(size_t)63)

/* Globals (hidden). */
extern __thread hk_theap_t *hk__tls_heap HK_HIDDEN;
extern hk_theap_t hk__heap_empty HK_HIDDEN;
extern hk_page_t hk__page_empty HK_HIDDEN;
extern uint64_t hk__segmap[((size_t)1 << (HK_ADDR_BITS - HK_SEG_SHIFT)) / 64] HK_HIDDEN;
extern uint64_t hk__smallmap[((size_t)1 << (HK_ADDR_BITS - HK_SEG_SHIFT)) / 64] HK_HIDDEN;
extern long hk__opt[HK_OPTION_COUNT] HK_HIDDEN;
extern uint32_t hk__class_size[HK_NCLASS] HK_HIDDEN;
#define HK_OPT(o) __atomic_load_n(&hk__opt[o], __ATOMIC_RELAXED)

/* Global statistics kept with atomics on slow paths. */
typedef struct hk_gstats {
    uint64_t reserved, committed, committed_peak;
    uint64_t segments, segments_peak, segments_cached, segments_abandoned;
    uint64_t pages, pages_peak, page_bytes;
    uint64_t huge_blocks, huge_bytes;
    uint64_t purges, purged_bytes;
    uint64_t heaps, heaps_parked;
    uint64_t dead_malloc_bytes, dead_free_bytes;   /* from exited heaps */
} hk_gstats_t;
extern hk_gstats_t hk__gstats HK_HIDDEN;

#define HK_ATOMIC_ADD(p, n) ((void)__atomic_fetch_add((p), (n), __ATOMIC_RELAXED))
#define HK_ATOMIC_SUB(p, n) ((void)__atomic_fetch_sub((p), (n), __ATOMIC_RELAXED))
/* Per-block byte counters cost ~7% of a malloc/free pair, so they are
 * compiled in only with -DHK_STATS_BLOCKS=1; by default "allocated" is kept
 * at page granularity on slow paths. Owner-only counters read by others:
 * plain add, but atomic for TSan. */
#ifndef HK_STATS_BLOCKS
#define HK_STATS_BLOCKS 0
#endif
#if HK_STATS_BLOCKS
#define HK_STAT_ADD(p, n) __atomic_store_n((p), __atomic_load_n((p), __ATOMIC_RELAXED) + (n), __ATOMIC_RELAXED)
#else
#define HK_STAT_ADD(p, n) ((void)0)
#endif
void hk__stat_max(uint64_t *peak, uint64_t v) HK_HIDDEN;

void hk__lock(hk_lock_t *l) HK_HIDDEN;
HK_INLINE void hk__unlock(hk_lock_t *l) { __atomic_store_n(&l->v, 0, __ATOMIC_RELEASE); }

HK_INLINE uintptr_t hk__thread_id(void)
{
#if defined(__x86_64__)
    uintptr_t t;
    __asm__("mov %%fs:0, %0" : "=r"(t));
    return t;
#else
    return (uintptr_t)pthread_self();
#endif
}

HK_INLINE size_t hk__size_class_calc(size_t size)
{
    if (size <= 128) return (size + 15) >> 4;          /* class 0 (size 0) is a 16-byte class too */
    size_t s1 = size - 1;
    unsigned b = 63u - (unsigned)__builtin_clzl(s1);
    return 9 + (b - 7) * 4 + ((s1 >> (b - 2)) & 3);
}

/* Sizes up to 4 KiB map through a 257-byte table. */
#define HK_CLASS_TABLE_MAX 4096
#define HK_CLASS_TABLE (HK_CLASS_TABLE_MAX / 16 + 1)
extern uint8_t hk__class_small[HK_CLASS_TABLE] HK_HIDDEN;

HK_INLINE size_t hk__size_class(size_t size)
{
    if (hk_likely(size <= HK_CLASS_TABLE_MAX)) return hk__class_small[(size + 15) >> 4];
    return hk__size_class_calc(size);
}

HK_INLINE hk_segment_t *hk__segment_of(const void *p)
{
    return (hk_segment_t *)((uintptr_t)p & ~(uintptr_t)HK_SEG_MASK);
}

/* seg's bit in a segment bitmap (one bit per 4 MiB of address space;
 * addresses past 2^HK_ADDR_BITS have none). */
HK_INLINE bool hk__map_has(const uint64_t *map, const void *seg)
{
    uintptr_t i = (uintptr_t)seg >> HK_SEG_SHIFT;
    if (hk_unlikely(i >> (HK_ADDR_BITS - HK_SEG_SHIFT))) return false;
    return (__atomic_load_n(&map[i >> 6], __ATOMIC_RELAXED) >> (i & 63)) & 1;
}

/* Is `seg` a segment heapkit mapped? */
HK_INLINE bool hk__segmap_has(const void *seg) { return hk__map_has(hk__segmap, seg); }

/* Is `seg` a small segment (kind HK_SEG_SMALL)? Then its header holds page
 * descriptors, and the free fast path may read them; a huge block's
 * mapping holds the program's data there. */
HK_INLINE bool hk__smallmap_has(const void *seg) { return hk__map_has(hk__smallmap, seg); }

/* The descriptor of the 64 KiB page that holds p, without following a
 * span to its head: for the free fast path, where a page inside a span of
 * several (blocks over 64 KiB) carries HK_PF_SPAN_TAIL and goes the slow
 * way. The descriptor's offset in `pages` is the page index times 128,
 * taken from p with one shift and one mask (indexing the array made GCC
 * compute the index, then two addresses from it: four instructions more
 * on every free). */
HK_INLINE hk_page_t *hk__page_at(hk_segment_t *seg, const void *p)
{
    uintptr_t off = ((uintptr_t)p >> (HK_PAGE_SHIFT - 7)) & ((uintptr_t)(HK_SEG_PAGES - 1) << 7);
    return (hk_page_t *)((char *)seg->pages + off);
}

/* Bytes from the base of a span that starts at page i to where its first
 * block may start: the segment header, in page 0. */
HK_INLINE size_t hk__span_lead(size_t i) { return i == 0 ? HK_SEG_HDR : 0; }

/* Bytes from a span's base to its first block (the segment header, in
 * page 0). */
HK_INLINE size_t hk__page_lead(const hk_page_t *pg)
{
    return (size_t)((uintptr_t)pg->start & (HK_PAGE_SIZE - 1));
}

HK_INLINE hk_page_t *hk__page_of(hk_segment_t *seg, const void *p)
{
    hk_page_t *pg = hk__page_at(seg, p);
    return pg - pg->back;
}

/* Is p the start of one of pg's blocks? One multiply and a rotate answer
 * "is the offset a multiple of the size, and is the quotient below
 * `reserved`" at once (the divisibility test of Granlund and Montgomery):
 * with the size d = d0 * 2^k (d0 odd) and x the offset mod 2^32,
 * ror32(x * d0^-1, k) is x / d when d divides x, and otherwise at least
 * 2^32 / d, which no span's block count reaches (a span is at most a 4 MiB
 * segment). A pointer below `start` wraps to an x of 2^32 - 4 MiB or more,
 * whose quotient, if d divides it, is as far out of range. A page not in
 * use reads dmagic 0 (a cleared descriptor) or its last class's values;
 * the flags send either to the slow path, as before. */
HK_INLINE bool hk__is_block(const hk_page_t *pg, const void *p)
{
    uint32_t x = (uint32_t)((uintptr_t)p - (uintptr_t)pg->start) * pg->dmagic;
    unsigned k = pg->dshift;
    return ((x >> k) | (x << ((32 - k) & 31))) < pg->reserved;
}

/* The class a page serves: block size, class, and the constants of the
 * index and hk__is_block (set when a page is initialised or its one block
 * grows). */
void hk__page_set_class(hk_page_t *pg, size_t cls) HK_HIDDEN;

/* Slow paths. */
void *hk__malloc_generic(hk_theap_t *heap, size_t size) HK_HIDDEN HK_NOINLINE;
#define HK_TICK_MALLOCS 65536
#define HK_KEPT_IDLE_SPANS 8      /* see retire_kept in page.c */
/* Returns b, so that the fast path tail-calls it. */
void *hk__heap_tick(hk_theap_t *heap, void *b) HK_HIDDEN HK_NOINLINE;
void  hk__free_generic(void *p) HK_HIDDEN HK_NOINLINE;
void  hk__free_cached(void *p, hk_page_t *pg) HK_HIDDEN HK_NOINLINE;
void  hk__free_nonsmall(void *p) HK_HIDDEN HK_NOINLINE;
void  hk__page_now_empty(hk_page_t *pg) HK_HIDDEN HK_NOINLINE;
void *hk__malloc_aligned(size_t align, size_t size) HK_HIDDEN;
void *hk__page_mark_aligned(void *block, void *p) HK_HIDDEN;
void *hk__calloc(size_t n, size_t size) HK_HIDDEN;
void *hk__realloc(void *p, size_t size) HK_HIDDEN;
/* realloc of a live heapkit block; one that must move gets its new block
 * from `heap` (NULL: the calling thread's heap). */
void *hk__realloc_in(hk_theap_t *heap, void *p, size_t size) HK_HIDDEN;
size_t hk__usable_size(const void *p) HK_HIDDEN;
/* The same; *freed tells a block already freed from a pointer that never was one. */
size_t hk__usable_size_ex(const void *p, bool *freed) HK_HIDDEN;

/* check.c and page.c: hk_check's parts. hk__check_bad counts a broken
 * invariant and reports the first few on stderr. */
typedef struct hk_checker { size_t bad; } hk_checker_t;
void hk__check_bad(hk_checker_t *ck, const char *what, const void *where) HK_HIDDEN;
void hk__page_check(hk_checker_t *ck, const hk_theap_t *heap, hk_page_t *pg) HK_HIDDEN;
void hk__cached_check(hk_checker_t *ck, const hk_block_t *b, unsigned c) HK_HIDDEN;

/* heap.c */
hk_theap_t *hk__heap_init_thread(void) HK_HIDDEN;
void hk__process_init(void) HK_HIDDEN;
void hk__heap_abandon(hk_theap_t *heap) HK_HIDDEN;
bool hk__heap_park(hk_theap_t *heap) HK_HIDDEN;
void hk__parked_expire(uint64_t now, bool force) HK_HIDDEN;
void hk__parked_foreach(void (*fn)(hk_theap_t *, void *), void *arg) HK_HIDDEN;
bool hk__parked_expire_heap(hk_theap_t *heap, uint64_t now) HK_HIDDEN;
void hk__segment_park(hk_segment_t *seg) HK_HIDDEN;
void hk__segment_cool(hk_segment_t *seg) HK_HIDDEN;
void hk__segment_set_thread(hk_segment_t *seg, uintptr_t tid) HK_HIDDEN;
hk_segment_t *hk__abandoned_pop(void) HK_HIDDEN;
/* Take seg off the abandoned list; false if it is not on it (any more). */
bool hk__abandoned_take(hk_segment_t *seg) HK_HIDDEN;
void hk__heaps_foreach(void (*fn)(hk_theap_t *, void *), void *arg) HK_HIDDEN;

/* segment.c */
uint64_t hk__now_ms(void) HK_HIDDEN;
hk_segment_t *hk__segment_new(hk_theap_t *heap) HK_HIDDEN;
/* A run of n free pages that holds at least one block of `block` bytes
 * (resident_only: one whose pages are all resident), or NULL. */
hk_page_t *hk__segment_alloc_span(hk_segment_t *seg, unsigned n, size_t block, bool resident_only) HK_HIDDEN;
hk_page_t *hk__heap_alloc_span(hk_theap_t *heap, unsigned n, size_t block, bool resident_only) HK_HIDDEN;
bool hk__segment_free_span(hk_theap_t *heap, hk_page_t *pg) HK_HIDDEN;
bool hk__segment_adopt(hk_theap_t *heap, hk_segment_t *seg) HK_HIDDEN;
void hk__segment_abandon(hk_theap_t *heap, hk_segment_t *seg) HK_HIDDEN;
void hk__segment_take_for_huge(hk_segment_t *seg, size_t bytes) HK_HIDDEN;
uint64_t hk__purged_now(void) HK_HIDDEN;
/* Memory back to the OS (MADV_DONTNEED), counted in purges / purged_bytes. */
void hk__purge_range(void *start, size_t bytes) HK_HIDDEN;
/* Give back what waited its delay (all of it when forced), trimming sparse
 * pages up to trim_walk of their free blocks (HK_TRIM_WALK: a purge's
 * share; hk_collect(1) passes UINT32_MAX). */
#define HK_TRIM_WALK 16384
void hk__heap_purge(hk_theap_t *heap, uint64_t now, bool force, uint32_t trim_walk) HK_HIDDEN;
/* A purge one delay from now unless one is due already (a span of `heap`
 * has a dirty tail: see hk_page_t.dirty_end). */
void hk__heap_purge_later(hk_theap_t *heap) HK_HIDDEN;
/* Trim the sparse pages of a thread heap that have been sparse for min_age
 * ms, looking at up to `walk` blocks. Returns HK_TRIM_YOUNG if it saw
 * sparse pages too young to trim yet, HK_TRIM_MORE if it stopped on the
 * budget after trimming (more may wait). */
enum { HK_TRIM_YOUNG = 1, HK_TRIM_MORE = 2 };
unsigned hk__heap_trim(hk_theap_t *heap, uint32_t walk, uint64_t now, uint32_t min_age) HK_HIDDEN;
/* A free segment from the cache, or a fresh mapping; with huge_pages always
 * a fresh one, advised to use transparent huge pages (seg->thp says if it took). */
void *hk__segment_map(bool *fresh, unsigned want_pages, bool huge_pages) HK_HIDDEN;
void hk__segment_prefault(hk_segment_t *seg, size_t bytes) HK_HIDDEN;
void hk__segment_unmap_or_cache(hk_segment_t *seg) HK_HIDDEN;
uint64_t hk__cache_purge(uint64_t now, bool force) HK_HIDDEN;
void hk__segments_lock_all(void) HK_HIDDEN;
void hk__segments_unlock_all(bool child) HK_HIDDEN;

/* page.c */
void hk__page_collect(hk_page_t *pg) HK_HIDDEN;
/* Give back the 4 KiB pages that only free blocks of a sparse page cover,
 * if the page has been sparse for min_age ms (0: now); returns the blocks
 * it looked at (0: the page did not qualify) and sets *young when the page
 * is sparse but not yet for long enough. */
uint32_t hk__page_trim(hk_page_t *pg, uint64_t now, uint32_t min_age, bool *young) HK_HIDDEN;
void hk__purged_add(int64_t bytes) HK_HIDDEN;
/* The heap's pages_delta and page_bytes_delta into hk__gstats (and its
 * pages_peak). */
void hk__page_stats_flush(hk_theap_t *heap) HK_HIDDEN;
void hk__xcache_flush(hk_theap_t *heap) HK_HIDDEN;
void hk__xcache_purge(hk_theap_t *heap, bool force) HK_HIDDEN;
bool hk__xbig_held(const hk_theap_t *heap) HK_HIDDEN;
void hk__xbig_fork_child(const hk_theap_t *heap) HK_HIDDEN;
size_t hk__xbig_total(void) HK_HIDDEN;
/* The cache's bound for class c (< HK_XCLASSES). */
uint16_t hk__xcache_cap(unsigned c) HK_HIDDEN;
bool hk__page_retire(hk_theap_t *heap, hk_page_t *pg) HK_HIDDEN;
void hk__heap_turn_mixed(hk_theap_t *heap) HK_HIDDEN;
void hk__segment_release_empty(hk_theap_t *heap, hk_segment_t *seg, bool purge) HK_HIDDEN;
void hk__queue_push_back(hk_page_queue_t *q, hk_page_t *pg) HK_HIDDEN;
void hk__queue_remove(hk_page_queue_t *q, hk_page_t *pg) HK_HIDDEN;

/* huge.c */
void *hk__huge_alloc(size_t size, size_t align, bool *zeroed) HK_HIDDEN;
void  hk__huge_free(hk_segment_t *seg) HK_HIDDEN;
size_t hk__huge_usable(hk_segment_t *seg, const void *p) HK_HIDDEN;
/* Is p the block of huge mapping seg (not a pointer inside it)? */
HK_INLINE bool hk__huge_is_block(const hk_segment_t *seg, const void *p)
{
    return (const char *)p == (const char *)seg + ((size_t)1 << seg->huge_shift);
}
bool  hk__huge_shrink(hk_segment_t *seg, const void *p, size_t size) HK_HIDDEN;

/* private.c: private heaps over the general allocator (src/heap/heap.c) */
hk_theap_t *hk__theap_private_new(void *owner, size_t max_size, bool huge_pages) HK_HIDDEN;
void  hk__theap_private_free(hk_theap_t *heap) HK_HIDDEN;
void  hk__theap_release_all(hk_theap_t *heap) HK_HIDDEN;
/* Map and fault in segments for `bytes` of blocks up front; 0 or ENOMEM. */
int   hk__theap_commit(hk_theap_t *heap, size_t bytes) HK_HIDDEN;
void  hk__theap_reset(hk_theap_t *heap) HK_HIDDEN;
void *hk__theap_malloc_aligned(hk_theap_t *heap, size_t align, size_t size) HK_HIDDEN;
void  hk__theap_collect(hk_theap_t *heap, size_t *live_blocks, size_t *live_bytes) HK_HIDDEN;
hk_theap_t *hk__theap_of(const void *p) HK_HIDDEN;
bool  hk__segment_extend_span(hk_segment_t *seg, hk_page_t *head, unsigned n) HK_HIDDEN;
bool  hk__page_grow_in_place(void *p, size_t size) HK_HIDDEN;
bool  hk__cap_take(hk_theap_t *heap, size_t bytes) HK_HIDDEN;
void  hk__cap_give(hk_theap_t *heap, size_t bytes) HK_HIDDEN;
void *hk__huge_alloc_in(hk_theap_t *heap, size_t size, size_t align, bool *zeroed) HK_HIDDEN;
/* A pointer outside heapkit's segments: a private heap's block, or misuse. */
void  hk__free_outside(void *p) HK_HIDDEN HK_NOINLINE HK_COLD;

/* stats.c */
void hk__options_init(void) HK_HIDDEN;
void hk__invalid_free(const void *p, const char *why) HK_HIDDEN;

/* The empty page class c keeps as its only page (see
 * hk__page_now_empty: no block out, no remote free waiting), or NULL. Its
 * free_time holds the heap's spans_made (high 32 bits) and purge_epoch
 * (low) from when it emptied. */
HK_INLINE hk_page_t *hk__kept_page(const hk_theap_t *heap, unsigned c)
{
    hk_page_t *pg = heap->queues[c].last;
    if (!pg || pg != heap->queues[c].first || pg->used != 0 ||
        __atomic_load_n(&pg->thread_free, __ATOMIC_RELAXED) != 0) return NULL;
    return pg;
}

/* The mode flag a page of class cls has in heap (HK_PF_MIXED or 0). */
HK_INLINE uint32_t hk__page_mode(const hk_theap_t *heap, unsigned cls)
{
    bool cached = cls < HK_XCLASSES ? heap->mixed : hk__class_big(cls) && !heap->owner;
    return cached ? HK_PF_MIXED : 0;
}

/* ---------------------------------------------------------------- fast paths */

/* The owner's free of b onto its page's list, last in, first out: the next
 * malloc of the class takes it, its line still in the cache. */
HK_INLINE void hk__page_push_own(hk_segment_t *seg, hk_page_t *pg, hk_block_t *b)
{
    b->next = pg->free;
    b->tag = HK_FREE_TAG(pg);
    pg->free = b;
    HK_STAT_ADD(&seg->heap->st.free_bytes, pg->block_size);
    (void)seg;
    if (hk_unlikely(--pg->used == 0)) hk__page_now_empty(pg);
}

/* Push b (of page pg, class c with a cache row, room checked) on the cache. */
HK_INLINE void hk__xcache_push(hk_theap_t *me, const hk_page_t *pg, unsigned c, hk_block_t *b)
{
    unsigned n = me->xc[c].n;
    b->tag = HK_FREE_TAG(pg);
    me->xcache[c][n] = b;
    me->xc[c].n = (uint16_t)(n + 1);
}

/* The allocation fast path on a given heap: the calling thread's, or a
 * private heap's (whose lock the caller then holds). The cache pop reads
 * no block memory (only the tag store touches the block), so a run of
 * mallocs of blocks gone cold does not wait on one miss after another the
 * way a free-list pop does. */
HK_INLINE void *hk__theap_malloc(hk_theap_t *heap, size_t size)
{
    /* Sizes up to 4 KiB (most) take the class table after one compare:
     * the bound on small sizes is tested only above the table's range (and
     * GCC folds hk__size_class's own test of that range into this one). */
    if (hk_unlikely(size > HK_CLASS_TABLE_MAX) && size > HK_SMALL_MAX) return hk__malloc_generic(heap, size);
    size_t c = hk__size_class(size);
    unsigned n = heap->xc[c].n;   /* 0 in classes with no cache row */
    if (n != 0) {
        hk_block_t *x = heap->xcache[c][n - 1];
        heap->xc[c].n = (uint16_t)(n - 1);
        x->tag = 0;
        return x;
    }
    hk_page_t *pg = heap->queues[c].first;
    hk_block_t *b = pg->free;
    if (hk_likely(b != NULL)) {
        pg->free = b->next;
        b->tag = 0;
        pg->used++;
        HK_STAT_ADD(&heap->st.malloc_bytes, pg->block_size);
        if (hk_unlikely(--heap->tick == 0)) return hk__heap_tick(heap, b);
        return b;
    }
    return hk__malloc_generic(heap, size);
}

HK_INLINE void *hk__malloc(size_t size) { return hk__theap_malloc(hk__tls_heap, size); }

HK_INLINE void hk__free(void *p)
{
    hk_segment_t *seg = hk__segment_of(p);
    if (hk_unlikely(!hk__smallmap_has(seg))) {
        if (p) hk__free_nonsmall(p);   /* a huge block, or not heapkit's */
        return;
    }
    /* Only pages in use in small segments of live thread heaps have an
     * owner thread. */
    hk_page_t *pg = hk__page_at(seg, p);
    uintptr_t tid = __atomic_load_n(&pg->owner, __ATOMIC_RELAXED);
    if (hk_likely(tid != 0)) {
        hk_block_t *b = (hk_block_t *)p;
        /* Flags (aligned, full or free page), a pointer that is not the
         * start of a block, or a block tagged free: the slow path sorts
         * them out. The block is checked before its tag is read (the slack
         * after a page's last block may end the mapping). */
        if (hk_likely(hk__is_block(pg, p) && b->tag != HK_FREE_TAG(pg))) {
            uint32_t flags = __atomic_load_n(&pg->flags, __ATOMIC_RELAXED);
            uintptr_t other = tid ^ hk__thread_id();   /* 0: the owner frees */
            /* The owner of a page with no flag (a heap that is not mixed):
             * one test for both. */
            if (hk_likely((flags | other) == 0)) {
                hk__page_push_own(seg, pg, b);
                return;
            }
            /* Into this thread's block cache while the class has room:
             * another live thread's block (cap[1]), or in a mixed heap its
             * own (cap[0]; 0 in a heap that is not mixed). The bound is
             * picked by index, not by a branch: in a thread that frees its
             * own and other threads' blocks by turns, which one comes next
             * is a coin toss. Big classes: the same test, both bounds
             * equal. A full class goes out of line. */
            if (flags <= HK_PF_CACHEABLE) {
                hk_theap_t *me = hk__tls_heap;
                unsigned c = pg->cls;
                if (hk_likely(me->xc[c].n < me->xc[c].cap[other != 0])) {
                    hk__xcache_push(me, pg, c, b);
                    return;
                }
                hk__free_cached(p, pg);
                return;
            }
        }
    }
    hk__free_generic(p);
}

#endif
