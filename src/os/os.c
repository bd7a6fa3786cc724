/* The only place heapkit makes memory system calls. Thin, checked wrappers
 * over mmap/mprotect/madvise/munmap that return errno values rather than
 * setting errno, so callers can keep errno intact for their own callers. */
#define _GNU_SOURCE
#include "heapkit/vm.h"
#include "../util/internal.h"
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <errno.h>
#include <fcntl.h>

/* The memory system calls are made directly on x86-64 and AArch64, not
 * through libc's wrappers. Each wrapper is code in libc's text, and the
 * first call of one maps the 64 KiB of libc around it: a program on
 * glibc's malloc that never calls mmap or madvise keeps those pages out
 * of its resident set, and so should one on heapkit (docs/allocator.md,
 * "What the preloaded library itself keeps resident"). They also leave
 * errno alone. Sanitizer builds go through libc: its interceptors track
 * what is mapped. */
#if (defined(__x86_64__) || defined(__aarch64__)) && !defined(HK_SANITIZE_BUILD)
#define SYS_RAW 1
static inline long sys6(long nr, long a, long b, long c, long d, long e, long f)
{
#if defined(__x86_64__)
    register long r10 __asm__("r10") = d, r8 __asm__("r8") = e, r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
#else
    register long x8 __asm__("x8") = nr, x0 __asm__("x0") = a, x1 __asm__("x1") = b, x2 __asm__("x2") = c,
                  x3 __asm__("x3") = d, x4 __asm__("x4") = e, x5 __asm__("x5") = f;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
    return x0;
#endif
}
/* The kernel returns -errno in [-4095, -1]. */
static void *os_mmap(void *addr, size_t len, int prot, int flags, int *err)
{
    long r = sys6(SYS_mmap, (long)addr, (long)len, prot, flags, -1, 0);
    if ((unsigned long)r > -4096UL) { *err = (int)-r; return MAP_FAILED; }
    return (void *)r;
}
static int os_call(long nr, void *addr, size_t len, long arg)
{
    long r = sys6(nr, (long)addr, (long)len, arg, 0, 0, 0);
    return (unsigned long)r > -4096UL ? (int)-r : 0;
}
#else
static void *os_mmap(void *addr, size_t len, int prot, int flags, int *err)
{
    int saved = errno;
    void *p = mmap(addr, len, prot, flags, -1, 0);
    if (p == MAP_FAILED) *err = errno ? errno : ENOMEM;
    errno = saved;
    return p;
}
static int os_call(long nr, void *addr, size_t len, long arg)
{
    int saved = errno, r;
    if (nr == SYS_munmap) r = munmap(addr, len);
    else if (nr == SYS_mprotect) r = mprotect(addr, len, (int)arg);
    else r = madvise(addr, len, (int)arg);
    r = r == 0 ? 0 : errno;
    errno = saved;
    return r;
}
#endif
#define os_munmap(a, n)      os_call(SYS_munmap, (a), (n), 0)
#define os_mprotect(a, n, p) os_call(SYS_mprotect, (a), (n), (p))
#define os_madvise(a, n, m)  os_call(SYS_madvise, (a), (n), (m))

/* ------------------------------------------------------------ page size and clock */

/* The page size and the coarse monotonic clock come from the kernel
 * without libc's sysconf and clock_gettime, for the same reason as above
 * (together they took 55 KiB of libc's code into a one-threaded program's
 * resident set, `bench/small`, mean of 15 runs): the auxiliary vector,
 * read once from /proc/self/auxv, gives the page size and the vDSO, whose
 * clock_gettime is then called directly. Where /proc cannot be read, or in
 * sanitizer builds, libc's functions answer. */
#if defined(SYS_RAW)
#include <elf.h>
#include <time.h>

typedef int (*vdso_clock_t)(clockid_t, struct timespec *);
static size_t g_aux_page_size;
static vdso_clock_t g_vdso_clock;
static int g_aux_state;        /* 0 not read, 1 reading, 2 read */

/* The address of a function the vDSO at `base` exports, or 0. Only the
 * SysV hash table is used for the symbol count: the x86-64 and AArch64
 * vDSOs are linked with it. */
static uintptr_t vdso_sym(const char *base, const char *name)
{
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)base;
    if (eh->e_ident[EI_MAG0] != ELFMAG0 || eh->e_ident[EI_MAG1] != ELFMAG1 || eh->e_ident[EI_CLASS] != ELFCLASS64)
        return 0;
    const Elf64_Phdr *ph = (const Elf64_Phdr *)(base + eh->e_phoff);
    const Elf64_Dyn *dyn = NULL;
    uintptr_t bias = 0;
    int have_load = 0;
    for (unsigned i = 0; i < eh->e_phnum; i++) {
        if (ph[i].p_type == PT_LOAD && !have_load) { bias = (uintptr_t)base + ph[i].p_offset - ph[i].p_vaddr; have_load = 1; }
        else if (ph[i].p_type == PT_DYNAMIC) dyn = (const Elf64_Dyn *)(base + ph[i].p_offset);
    }
    if (!dyn || !have_load) return 0;
    const Elf64_Sym *sym = NULL;
    const char *str = NULL;
    const Elf32_Word *hash = NULL;
    for (; dyn->d_tag != DT_NULL; dyn++) {
        if (dyn->d_tag == DT_SYMTAB) sym = (const Elf64_Sym *)(bias + dyn->d_un.d_ptr);
        else if (dyn->d_tag == DT_STRTAB) str = (const char *)(bias + dyn->d_un.d_ptr);
        else if (dyn->d_tag == DT_HASH) hash = (const Elf32_Word *)(bias + dyn->d_un.d_ptr);
    }
    if (!sym || !str || !hash) return 0;
    for (Elf32_Word i = 0; i < hash[1]; i++) {
        if (ELF64_ST_TYPE(sym[i].st_info) != STT_FUNC || sym[i].st_shndx == SHN_UNDEF) continue;
        const char *a = str + sym[i].st_name, *b = name;
        while (*a && *a == *b) { a++; b++; }
        if (*a == *b) return bias + sym[i].st_value;
    }
    return 0;
}

static void aux_read(void)
{
    int expect = 0;
    if (!__atomic_compare_exchange_n(&g_aux_state, &expect, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        while (__atomic_load_n(&g_aux_state, __ATOMIC_ACQUIRE) != 2) {}
        return;
    }
    Elf64_auxv_t aux[64];
    size_t got = 0;
    long fd = sys6(SYS_openat, AT_FDCWD, (long)"/proc/self/auxv", O_RDONLY | O_CLOEXEC, 0, 0, 0);
    if (fd >= 0) {
        for (;;) {
            long n = sys6(SYS_read, fd, (long)((char *)aux + got), (long)(sizeof aux - got), 0, 0, 0);
            if (n <= 0 || (got += (size_t)n) == sizeof aux) break;
        }
        (void)sys6(SYS_close, fd, 0, 0, 0, 0, 0);
    }
    const char *vdso = NULL;
    for (size_t i = 0; i < got / sizeof aux[0] && aux[i].a_type != AT_NULL; i++) {
        if (aux[i].a_type == AT_PAGESZ && hk__is_pow2((size_t)aux[i].a_un.a_val)) g_aux_page_size = (size_t)aux[i].a_un.a_val;
        else if (aux[i].a_type == AT_SYSINFO_EHDR) vdso = (const char *)aux[i].a_un.a_val;
    }
#if defined(__x86_64__)
    if (vdso) g_vdso_clock = (vdso_clock_t)vdso_sym(vdso, "__vdso_clock_gettime");
#else
    if (vdso) g_vdso_clock = (vdso_clock_t)vdso_sym(vdso, "__kernel_clock_gettime");
#endif
    __atomic_store_n(&g_aux_state, 2, __ATOMIC_RELEASE);
}

static size_t os_page_size(void)
{
    if (__atomic_load_n(&g_aux_state, __ATOMIC_ACQUIRE) != 2) aux_read();
    return g_aux_page_size ? g_aux_page_size : (size_t)sysconf(_SC_PAGESIZE);
}

uint64_t hk__os_now_ms(void)
{
    if (hk_unlikely(__atomic_load_n(&g_aux_state, __ATOMIC_ACQUIRE) != 2)) aux_read();
    struct timespec ts;
    if (!g_vdso_clock || g_vdso_clock(CLOCK_MONOTONIC_COARSE, &ts) != 0) clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
#else
#include <time.h>
static size_t os_page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }

uint64_t hk__os_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
#endif

static size_t g_page_size;

size_t hk_vm_page_size(void)
{
    size_t p = __atomic_load_n(&g_page_size, __ATOMIC_RELAXED);
    if (hk_unlikely(p == 0)) {
        size_t v = os_page_size();
        p = (v > 0 && hk__is_pow2(v)) ? v : 4096;
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
    int err = ENOMEM;
    if (align <= ps) {
        void *p = os_mmap(NULL, size, prot, flags, &err);
        if (p == MAP_FAILED) return err;
        *out = p;
        return 0;
    }
    /* Over-reserve and trim both ends to get the alignment. */
    if (size + align < size) return ENOMEM;
    size_t span = size + align - ps;
    char *p = os_mmap(NULL, span, prot, flags, &err);
    if (p == MAP_FAILED) return err;
    char *a = (char *)hk__align_up((uintptr_t)p, align);
    size_t head = (size_t)(a - p), tail = span - head - size;
    if (head) (void)os_munmap(p, head);
    if (tail) (void)os_munmap(a + size, tail);
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
    return os_mprotect(addr, size, PROT_READ | PROT_WRITE);
}

int hk_vm_decommit(void *addr, size_t size)
{
    int e = check_range(addr, size);
    if (e) return e;
    /* Replacing the mapping drops the pages and their commit charge at once. */
    int err = ENOMEM;
    void *p = os_mmap(addr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, &err);
    return p == MAP_FAILED ? err : 0;
}

int hk_vm_purge(void *addr, size_t size)
{
    int e = check_range(addr, size);
    if (e) return e;
    return os_madvise(addr, size, MADV_DONTNEED);
}

int hk_vm_advise_huge(void *addr, size_t size)
{
    int e = check_range(addr, size);
    if (e) return e;
#ifdef MADV_HUGEPAGE
    return os_madvise(addr, size, MADV_HUGEPAGE);     /* leaves errno alone */
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
    e = os_madvise(addr, size, MADV_POPULATE_WRITE);
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
    return os_munmap(addr, size);
}

int hk_vm_protect(void *addr, size_t size, int prot)
{
    int e = check_range(addr, size);
    if (e) return e;
    int p = (prot & HK_PROT_READ ? PROT_READ : 0) | (prot & HK_PROT_WRITE ? PROT_WRITE : 0);
    if (prot & ~HK_PROT_RW) return EINVAL;
    return os_mprotect(addr, size, p);
}
