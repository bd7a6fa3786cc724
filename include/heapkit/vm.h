/* heapkit virtual memory control: reserve, commit, decommit, release,
 * protect; a reserved region that commits as it grows; an sbrk-style
 * growable region. Every function returns 0 or an errno value.
 *
 * Example:
 *     hk_region_t r;
 *     if (hk_region_reserve(&r, 1 << 30) == 0) {      // 1 GiB of address space
 *         hk_region_commit_to(&r, 1 << 20);           // first MiB usable
 *         memset(r.base, 0, 1 << 20);
 *         hk_region_release(&r);
 *     }
 */
#ifndef HEAPKIT_VM_H
#define HEAPKIT_VM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Exported from libheapkit.so although the library builds with hidden visibility. */
#pragma GCC visibility push(default)

enum { HK_PROT_NONE = 0, HK_PROT_READ = 1, HK_PROT_WRITE = 2, HK_PROT_RW = 3 };

/* Page size and mapping granularity (both powers of two). */
size_t hk_vm_page_size(void);
size_t hk_vm_granularity(void);

/* Reserve `size` bytes of address space (no access, no memory charged),
 * aligned to `align` (a power of two; 0 means the page size). Size must be
 * a multiple of the page size. *out receives the address. */
int hk_vm_reserve(size_t size, size_t align, void **out);
/* Make [addr, addr+size) readable and writable. Page-aligned arguments. */
int hk_vm_commit(void *addr, size_t size);
/* Give the pages back to the OS and make the range inaccessible; the
 * address range stays reserved. */
int hk_vm_decommit(void *addr, size_t size);
/* Give the pages back but keep them accessible (they read as zero later). */
int hk_vm_purge(void *addr, size_t size);
/* Ask for transparent huge pages (2 MiB on x86-64) in the range: fewer page
 * faults when it fills, and far less kernel work when it is released.
 * EINVAL where the kernel has no THP; the range works either way. */
int hk_vm_advise_huge(void *addr, size_t size);
/* Make committed pages resident now (write-fault them in) without changing
 * their contents: MADV_POPULATE_WRITE where the kernel has it, else one
 * read-and-write-back per page (so nobody else may write the range). */
int hk_vm_populate(void *addr, size_t size);
/* Unmap a range obtained from hk_vm_reserve or hk_vm_alloc. */
int hk_vm_release(void *addr, size_t size);
/* Change access: HK_PROT_NONE, HK_PROT_READ or HK_PROT_RW. */
int hk_vm_protect(void *addr, size_t size, int prot);
/* Reserve and commit in one step (read/write, zero-filled). */
int hk_vm_alloc(size_t size, size_t align, void **out);

/* A region reserves its maximum once and commits pages on demand, so its
 * base address never moves as it grows. Fields are read-only to users. */
typedef struct hk_region {
    char  *base;       /* start of the reservation */
    size_t reserved;   /* bytes of address space reserved */
    size_t committed;  /* bytes from base that are readable/writable */
} hk_region_t;

int  hk_region_reserve(hk_region_t *r, size_t max_size);
/* Ensure at least `size` bytes from base are committed (ENOMEM past max). */
int  hk_region_commit_to(hk_region_t *r, size_t size);
/* Decommit everything beyond `size` bytes (rounded up to a page). */
int  hk_region_decommit_from(hk_region_t *r, size_t size);
int  hk_region_release(hk_region_t *r);

/* An sbrk-style break over a region: grow returns the old break. */
typedef struct hk_sbrk {
    hk_region_t region;
    size_t brk;        /* bytes in use from region.base */
    size_t peak;       /* high-water mark of brk */
    size_t dirty;      /* bytes from base that may be resident (purged back to brk on shrink) */
} hk_sbrk_t;

int   hk_sbrk_init(hk_sbrk_t *s, size_t max_size);
/* Move the break up by `incr` bytes; returns the old break, or NULL with
 * errno = ENOMEM when the region's maximum would be passed. */
void *hk_sbrk_grow(hk_sbrk_t *s, size_t incr);
/* Move the break down by `decr` bytes; whole pages past it go back to the
 * OS (they read as zero when the break grows over them again). */
int   hk_sbrk_shrink(hk_sbrk_t *s, size_t decr);
static inline char *hk_sbrk_lo(const hk_sbrk_t *s) { return s->region.base; }
static inline char *hk_sbrk_hi(const hk_sbrk_t *s) { return s->region.base + s->brk; }
int   hk_sbrk_release(hk_sbrk_t *s);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif
