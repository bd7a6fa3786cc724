/* Options (read once from HEAPKIT_* variables, settable at run time) and
 * statistics (per-heap counters merged on demand with the global ones),
 * printed with write(2) so they work inside malloc and at exit. */
#include "core.h"
#include <stdlib.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

long hk__opt[HK_OPTION_COUNT] = { 0, 10, 0, 8, 4, 16, 64 };
static const long opt_min[HK_OPTION_COUNT] = { 0, -1, 0, 0, 0, 0, 0 };   /* read only when a variable is set */
static const long opt_max[HK_OPTION_COUNT] = { 1, 3600000, 2, 64, 64, 64, 65536 };
/* The names are read at every start-up: writable data (already resident),
 * not .rodata, like hk__class_small. */
static char opt_env[HK_OPTION_COUNT][24] = {
    "HEAPKIT_SHOW_STATS", "HEAPKIT_PURGE_DELAY", "HEAPKIT_VERBOSE", "HEAPKIT_SEGMENT_CACHE",
    "HEAPKIT_PARKED_HEAPS", "HEAPKIT_BIG_CACHE", "HEAPKIT_BIG_CACHE_TOTAL",
};
static int g_opt_state;             /* 0 unread, 1 reading, 2 read */
static unsigned g_opt_explicit;     /* bit per option set by hk_option_set */
static int g_stats_fd = 2;          /* a private copy of stderr when stats print at exit */

static bool parse_long(const char *s, long *out)
{
    bool neg = false;
    long v = 0;
    if (*s == '-') { neg = true; s++; }
    if (!*s) return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > 100000000) return false;
        v = v * 10 + (*s - '0');
    }
    *out = neg ? -v : v;
    return true;
}

void hk__options_init(void)
{
    if (__atomic_load_n(&g_opt_state, __ATOMIC_ACQUIRE) == 2) return;
    int expect = 0;
    if (!__atomic_compare_exchange_n(&g_opt_state, &expect, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        while (__atomic_load_n(&g_opt_state, __ATOMIC_ACQUIRE) != 2) {}
        return;
    }
    for (int i = 0; i < HK_OPTION_COUNT; i++) {
        const char *s = getenv(opt_env[i]);     /* getenv does not allocate */
        long v;
        if (!s || (g_opt_explicit >> i) & 1) continue;
        if (parse_long(s, &v) && v >= opt_min[i] && v <= opt_max[i]) hk__opt[i] = v;
        else hk__report("heapkit: warning: ignoring %s=%s (expected a number in %d..%d)\n", opt_env[i], s,
                        (int)opt_min[i], (int)opt_max[i]);
    }
    /* Programs such as coreutils close stderr in an atexit handler, before
     * library destructors run: keep our own descriptor for the exit report. */
    if (hk__opt[HK_OPTION_SHOW_STATS]) {
        int fd = fcntl(2, F_DUPFD_CLOEXEC, 64);
        if (fd >= 0) g_stats_fd = fd;
    }
    __atomic_store_n(&g_opt_state, 2, __ATOMIC_RELEASE);
}

long hk_option_get(hk_option_t opt)
{
    hk__options_init();
    if ((unsigned)opt >= HK_OPTION_COUNT) return -1;
    return __atomic_load_n(&hk__opt[opt], __ATOMIC_RELAXED);
}

int hk_option_set(hk_option_t opt, long value)
{
    hk__options_init();
    if ((unsigned)opt >= HK_OPTION_COUNT || value < opt_min[opt] || value > opt_max[opt]) return EINVAL;
    __atomic_fetch_or(&g_opt_explicit, 1u << opt, __ATOMIC_RELAXED);
    __atomic_store_n(&hk__opt[opt], value, __ATOMIC_RELAXED);
    if (opt == HK_OPTION_PURGE_DELAY || opt == HK_OPTION_SEGMENT_CACHE) {
        /* Act on the new setting now for this thread's heap and the cache. */
        hk_theap_t *h = hk__tls_heap;
        uint64_t now = hk__now_ms();
        if (h != &hk__heap_empty && value >= 0) hk__heap_purge(h, now, false, HK_TRIM_WALK);
        else hk__cache_purge(now, false);
    }
    if ((opt == HK_OPTION_BIG_CACHE || opt == HK_OPTION_BIG_CACHE_TOTAL) && hk__tls_heap != &hk__heap_empty)
        hk__xcache_flush(hk__tls_heap);   /* this thread's caches start over under the new bound */
    if (opt == HK_OPTION_PARKED_HEAPS || (opt == HK_OPTION_PURGE_DELAY && value == 0))
        hk__parked_expire(hk__now_ms(), value == 0);   /* fewer may wait now, or none */
    return 0;
}

HK_RARE_CODE void hk__invalid_free(const void *p, const char *why)
{
    if (HK_OPT(HK_OPTION_VERBOSE)) hk__report("heapkit: warning: free(%p): %s; ignored\n", p, why);
}

/* ------------------------------------------------------------ statistics */

HK_RARE_CODE static void add_heap(hk_theap_t *h, void *arg)
{
    uint64_t *sum = arg;
    sum[0] += __atomic_load_n(&h->st.malloc_bytes, __ATOMIC_RELAXED);
    sum[1] += __atomic_load_n(&h->st.free_bytes, __ATOMIC_RELAXED);
    /* page counts not yet added to the totals (hk__page_stats_flush) */
    sum[2] += (uint64_t)__atomic_load_n(&h->pages_delta, __ATOMIC_RELAXED);
    sum[3] += (uint64_t)__atomic_load_n(&h->page_bytes_delta, __ATOMIC_RELAXED);
}

#define LD(f) __atomic_load_n(&hk__gstats.f, __ATOMIC_RELAXED)

HK_RARE_CODE void hk_stats_get(hk_stats_t *out)
{
    uint64_t sum[4] = { 0, 0, 0, 0 };
    hk__heaps_foreach(add_heap, sum);
    sum[0] += LD(dead_malloc_bytes);
    sum[1] += LD(dead_free_bytes);
    hk_stats_t s = { 0 };
    s.version = HK_STATS_VERSION;
    s.size = sizeof s;
    s.huge_blocks = LD(huge_blocks);
    s.huge_bytes = LD(huge_bytes);
    s.allocated_total = sum[0];
    s.freed_total = sum[1];
#if HK_STATS_BLOCKS
    s.allocated = (sum[0] > sum[1] ? sum[0] - sum[1] : 0) + s.huge_bytes;
#else
    s.allocated = LD(page_bytes) + sum[3] + s.huge_bytes;   /* pages in use: an upper bound */
#endif
    s.reserved = LD(reserved);
    uint64_t purged = hk__purged_now();
    s.committed = s.reserved > purged ? s.reserved - purged : 0;
    s.committed_peak = LD(committed_peak);
    if (s.committed_peak < s.committed) s.committed_peak = s.committed;
    s.segments = LD(segments);
    s.segments_peak = LD(segments_peak);
    s.segments_cached = LD(segments_cached);
    s.segments_abandoned = LD(segments_abandoned);
    s.pages = LD(pages) + sum[2];
    s.pages_peak = LD(pages_peak);     /* as of the heaps' last flush: up to 15 pages a heap short */
    if (s.pages_peak < s.pages) s.pages_peak = s.pages;
    s.purges = LD(purges);
    s.purged_bytes = LD(purged_bytes);
    s.heaps = LD(heaps);
    s.heaps_parked = LD(heaps_parked);
    *out = s;
}

#define HK_STAT_FIELDS(X) \
    X(allocated) X(allocated_total) X(freed_total) X(reserved) X(committed) X(committed_peak) \
    X(segments) X(segments_peak) X(segments_cached) X(segments_abandoned) X(pages) X(pages_peak) \
    X(huge_blocks) X(huge_bytes) X(purges) X(purged_bytes) X(heaps) X(heaps_parked)

HK_RARE_CODE static void stats_write(int fd)
{
    hk_stats_t s;
    hk_stats_get(&s);
    char buf[2048];
    size_t n = hk__snprintf(buf, sizeof buf, "heapkit statistics (version %u)\n", s.version);
#define X(f) if (n < sizeof buf) n += hk__snprintf(buf + n, sizeof buf - n, "  %s: %zu\n", #f, (size_t)s.f);
    HK_STAT_FIELDS(X)
#undef X
    if (n >= sizeof buf) n = sizeof buf - 1;
    for (size_t o = 0; o < n;) {
        ssize_t w = write(fd, buf + o, n - o);
        if (w < 0) { if (errno == EINTR) continue; break; }
        o += (size_t)w;
    }
}

HK_RARE_CODE void hk_stats_print(void)
{
    int saved = errno;
    stats_write(2);
    errno = saved;
}

HK_RARE_CODE size_t hk_stats_json(char *buf, size_t cap)
{
    hk_stats_t s;
    hk_stats_get(&s);
    char tmp[64];
    size_t n = 0;
#define PUT(str) do { const char *s_ = (str); for (; *s_; s_++, n++) if (n + 1 < cap) buf[n] = *s_; } while (0)
    PUT("{\"version\":");
    hk__snprintf(tmp, sizeof tmp, "%u", s.version);
    PUT(tmp);
#define X(f) PUT(",\"" #f "\":"); hk__snprintf(tmp, sizeof tmp, "%zu", (size_t)s.f); PUT(tmp);
    HK_STAT_FIELDS(X)
#undef X
    PUT("}");
#undef PUT
    if (cap) buf[n < cap ? n : cap - 1] = '\0';
    return n;
}

__attribute__((destructor)) static void hk__stats_at_exit(void)
{
    hk__options_init();
    if (HK_OPT(HK_OPTION_SHOW_STATS)) stats_write(g_stats_fd);
}
