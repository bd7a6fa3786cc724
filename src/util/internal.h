/* Internal basics shared by every heapkit source file: attribute macros,
 * branch hints, tiered assertions and the raw write(2) reporting helpers.
 * Nothing here allocates or touches stdio, so it is safe during start-up. */
#ifndef HK_INTERNAL_H
#define HK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define hk_likely(x)   __builtin_expect(!!(x), 1)
#define hk_unlikely(x) __builtin_expect(!!(x), 0)

#define HK_INLINE      static inline __attribute__((always_inline))
#define HK_NOINLINE    __attribute__((noinline))
#define HK_COLD        __attribute__((cold, noinline))
#define HK_NORETURN    __attribute__((noreturn))
#define HK_HIDDEN      __attribute__((visibility("hidden")))
/* Code of the general allocator that a running program does not normally
 * reach (statistics reports, private heaps' set-up and tear-down, misuse
 * warnings): libheapkit.so maps it apart from the code every program runs
 * (src/override/layout.ld), so that code takes fewer resident pages. */
#define HK_RARE_CODE   __attribute__((section(".text.hk_rare")))
#define HK_UNUSED      __attribute__((unused))

#define HK_MIN(a, b) ((a) < (b) ? (a) : (b))
#define HK_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Power-of-two rounding; `a` must be a power of two. */
HK_INLINE size_t hk__align_up(size_t x, size_t a)   { return (x + a - 1) & ~(a - 1); }
HK_INLINE size_t hk__align_down(size_t x, size_t a) { return x & ~(a - 1); }
HK_INLINE bool   hk__is_pow2(size_t x)              { return x && !(x & (x - 1)); }
HK_INLINE bool   hk__is_aligned(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }
/* Bits set in x. Not __builtin_popcountll: without -mpopcnt that calls
 * libgcc's __popcountdi2, linked at the far end of the library's code,
 * whose page (and the pages faulted in around it) would stay resident in
 * every process that preloads heapkit. */
HK_INLINE unsigned hk__popcount64(uint64_t x)
{
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
    return (unsigned)((x * 0x0101010101010101ull) >> 56);
}

/* Raw output: write(2) on fd 2, no buffering, no allocation. */
void hk__write_str(const char *s) HK_HIDDEN;
/* A tiny formatter: %s %d %u %zu %zx %p %x %% only; output capped at 512 bytes. */
void hk__report(const char *fmt, ...) HK_HIDDEN __attribute__((format(printf, 1, 2)));
size_t hk__snprintf(char *buf, size_t cap, const char *fmt, ...) HK_HIDDEN __attribute__((format(printf, 3, 4)));
HK_NORETURN HK_COLD void hk__fatal(const char *fmt, ...) HK_HIDDEN __attribute__((format(printf, 1, 2)));
HK_NORETURN HK_COLD void hk__assert_fail(const char *expr, const char *file, int line) HK_HIDDEN;

/* The OS layer's coarse monotonic clock in ms (src/os/os.c). */
uint64_t hk__os_now_ms(void) HK_HIDDEN;

/* Assertion tiers: HK_DEBUG >= 1 enables hk_assert, >= 2 hk_assert_internal,
 * >= 3 hk_assert_expensive (whole-structure checks). */
#ifndef HK_DEBUG
#define HK_DEBUG 0
#endif
#if HK_DEBUG >= 1
#define hk_assert(e) (hk_likely(e) ? (void)0 : hk__assert_fail(#e, __FILE__, __LINE__))
#else
#define hk_assert(e) ((void)0)
#endif
#if HK_DEBUG >= 2
#define hk_assert_internal(e) hk_assert(e)
#else
#define hk_assert_internal(e) ((void)0)
#endif
#if HK_DEBUG >= 3
#define hk_assert_expensive(e) hk_assert(e)
#else
#define hk_assert_expensive(e) ((void)0)
#endif

#endif
