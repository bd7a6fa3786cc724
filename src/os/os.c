/* The only place heapkit makes memory system calls. Thin, checked wrappers
 * over mmap/mprotect/madvise/munmap that return errno values rather than
 * setting errno, so callers can keep errno intact for their own callers. */
#define _GNU_SOURCE
#include "heapkit/vm.h"
#include "../util/internal.h"
#include <sys/mman.h>
#include <unistd.h>
#include <errno.h>

static size_t g_page_size;

size_t hk_vm_page_size(void)
{
    size_t p = __atomic_load_n(&g_page_size, __ATOMIC_RELAXED);
    if (hk_unlikely(p == 0)) {
        long v = sysconf(_SC_PAGESIZE);
        p = (v > 0 && hk__is_pow2((size_t)v)) ? (size_t)v : 4096;
        __atomic_store_n(&g_page_size, p, __ATOMIC_RELAXED);
    }
    return p;
}

size_t hk_vm_granularity(void) { return hk_vm_page_size(); }

static int check_range(const void *addr, size_t size)
{
    size_t ps = hk_vm_page_size();
    if (!addr || size == 0 || !hk__is_aligned(addr, ps) || (size & (ps - 1))) return EINVAL;
    return 0;
}

static int map_aligned(size_t size, size_t align, int prot, int extra, void **out)
{
    size_t ps = hk_vm_page_size();
    *out = NULL;
    if (size == 0 || (size & (ps - 1))) return EINVAL;
    if (align == 0) align = ps;
    if (!hk__is_pow2(align)) return EINVAL;
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | extra;
    if (align <= ps) {
        void *p = mmap(NULL, size, prot, flags, -1, 0);
        if (p == MAP_FAILED) return errno ? errno : ENOMEM;
        *out = p;
        return 0;
    }
    /* Over-reserve and trim both ends to get the alignment. */
    if (size + align < size) return ENOMEM;
    size_t span = size + align - ps;
    char *p = mmap(NULL, span, prot, flags, -1, 0);
    if (p == MAP_FAILED) return errno ? errno : ENOMEM;
    char *a = (char *)hk__align_up((uintptr_t)p, align);
    size_t head = (size_t)(a - p), tail = span - head - size;
    if (head) munmap(p, head);
    if (tail) munmap(a + size, tail);
    *out = a;
    return 0;
}

int hk_vm_reserve(size_t size, size_t align, void **out)
{
    return map_aligned(size, align, PROT_NONE, MAP_NORESERVE, out);
}

int hk_vm_alloc(size_t size, size_t align, void **out)
{
    return map_aligned(size, align, PROT_READ | PROT_WRITE, 0, out);
}

int hk_vm_commit(void *addr, size_t size)
{
    int e = check_range(addr, size);
    if (e) return e;
    return mprotect(addr, size, PROT_READ | PROT_WRITE) == 0 ? 0 : errno;
}

int hk_vm_decommit(void *addr, size_t size)
{
    int e = check_range(addr, size);
    if (e) return e;
    /* Replacing the mapping drops the pages and their commit charge at once. */
    void *p = mmap(addr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? errno : 0;
}

int hk_vm_purge(void *addr, size_t size)
{
    int e = check_range(addr, size);
    if (e) return e;
    return madvise(addr, size, MADV_DONTNEED) == 0 ? 0 : errno;
}

int hk_vm_advise_huge(void *addr, size_t size)
{
    int e = check_range(addr, size);
    if (e) return e;
#ifdef MADV_HUGEPAGE
    int saved = errno;     /* advice on a malloc path: leave the caller's errno alone */
    e = madvise(addr, size, MADV_HUGEPAGE) == 0 ? 0 : errno;
    errno = saved;
    return e;
#else
    return EINVAL;
#endif
}

int hk_vm_populate(void *addr, size_t size)
{
    int e = check_range(addr, size);
    if (e) return e;
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23      /* Linux 5.14 */
#endif
    int saved = errno;
    e = madvise(addr, size, MADV_POPULATE_WRITE) == 0 ? 0 : errno;
    errno = saved;
    if (e != EINVAL) return e;
    size_t ps = hk_vm_page_size();      /* a kernel before 5.14: touch each page */
    for (size_t off = 0; off < size; off += ps) {
        volatile char *c = (volatile char *)addr + off;
        *c = *c;
    }
    return 0;
}

int hk_vm_release(void *addr, size_t size)
{
    int e = check_range(addr, size);
    if (e) return e;
    return munmap(addr, size) == 0 ? 0 : errno;
}

int hk_vm_protect(void *addr, size_t size, int prot)
{
    int e = check_range(addr, size);
    if (e) return e;
    int p = (prot & HK_PROT_READ ? PROT_READ : 0) | (prot & HK_PROT_WRITE ? PROT_WRITE : 0);
    if (prot & ~HK_PROT_RW) return EINVAL;
    return mprotect(addr, size, p) == 0 ? 0 : errno;
}
