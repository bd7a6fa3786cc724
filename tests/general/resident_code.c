/* Run with libheapkit.so preloaded: the library's code comes in two
 * executable mappings (src/override/layout.ld), the code every program
 * runs and the code a running program does not normally reach (engines,
 * pools, statistics reports, private heap tear-down, misuse warnings).
 * After a workout of the malloc family through the standard names
 * (threads, cross-thread frees, thread exit, realloc growth, aligned and
 * huge blocks, calloc, fork) not one page of the second mapping may be
 * resident: a function of the running paths that landed there (or a rare
 * one that a running path started to call) would fault up to 64 KiB of it
 * into every process. */
#include "test.h"
#include <fcntl.h>
#include <pthread.h>

typedef struct { uintptr_t start, end; } range_t;

/* The mappings of libheapkit.so, in address order: the executable ones
 * (exec), or else the read-only ones. */
static int lib_mappings(bool exec, range_t *out, int cap)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return -1;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        char perm[8];
        if (sscanf(line, "%lx-%lx %7s", &a, &b, perm) != 3) continue;
        bool want = exec ? perm[2] == 'x' : (perm[0] == 'r' && perm[1] == '-' && perm[2] == '-');
        if (!want || !strstr(line, "/libheapkit.so")) continue;
        if (n < cap) out[n] = (range_t){ a, b };
        n++;
    }
    fclose(f);
    return n;
}

static int exec_mappings(range_t *out, int cap) { return lib_mappings(true, out, cap); }

/* The read-only mapping of libheapkit.so that starts at `at` (the rare
 * code's read-only data, after its code), or an empty range. */
static range_t ro_mapping_at(uintptr_t at)
{
    range_t ro[16];
    int n = lib_mappings(false, ro, 16);
    for (int i = 0; i < n && i < 16; i++)
        if (ro[i].start == at) return ro[i];
    return (range_t){ 0, 0 };
}

/* Pages of [r.start, r.end) mapped in this process (pagemap's present bit). */
static long present_pages(range_t r)
{
    int fd = open("/proc/self/pagemap", O_RDONLY);
    if (fd < 0) return -1;
    long n = 0;
    long ps = sysconf(_SC_PAGESIZE);
    for (uintptr_t p = r.start; p < r.end; p += (uintptr_t)ps) {
        uint64_t e = 0;
        if (pread(fd, &e, sizeof e, (off_t)(p / (uintptr_t)ps * sizeof e)) != (ssize_t)sizeof e) { n = -1; break; }
        if (e >> 63) n++;
    }
    close(fd);
    return n;
}

typedef struct { void *blocks[512]; int n; } handoff_t;

static void *producer(void *arg)
{
    handoff_t *h = arg;
    for (int i = 0; i < h->n; i++) {
        size_t sz = (size_t)(i * 97 % 2048) + 1;
        h->blocks[i] = malloc(sz);
        if (h->blocks[i]) memset(h->blocks[i], 0x5a, sz);
    }
    return NULL;
}

static void *churner(void *arg)
{
    (void)arg;
    for (int round = 0; round < 50; round++) {
        void *b[100];
        for (int i = 0; i < 100; i++) b[i] = malloc((size_t)(round * 31 + i * 53) % 9000 + 8);
        for (int i = 0; i < 100; i++) free(b[i]);
    }
    return NULL;
}

static void workout(void)
{
    /* small and medium blocks, frees in another order */
    void *b[4000];
    for (int i = 0; i < 4000; i++) { b[i] = malloc((size_t)(i * 131 % 1500) + 1); CHECK(b[i] != NULL); }
    for (int i = 0; i < 4000; i += 2) free(b[i]);
    for (int i = 1; i < 4000; i += 2) free(b[i]);
    /* realloc growth from 1 byte to 3 MiB, and back */
    char *s = NULL;
    for (size_t n = 1; n <= ((size_t)3 << 20); n += n / 3 + 1) {
        char *t = realloc(s, n);
        REQUIRE(t != NULL);
        s = t;
        s[n - 1] = 1;
    }
    s = realloc(s, 100);
    free(s);
    /* calloc, aligned blocks, a huge block */
    int *z = calloc(50000, sizeof *z);
    REQUIRE(z != NULL);
    CHECK(z[49999] == 0);
    free(z);
    void *a = NULL;
    CHECK(posix_memalign(&a, 4096, 10000) == 0);
    free(a);
    a = aligned_alloc(256, 768);
    CHECK(a != NULL);
    free(a);
    void *huge = malloc((size_t)40 << 20);
    CHECK(huge != NULL);
    if (huge) memset(huge, 1, 1 << 20);
    free(huge);
    /* blocks made by one thread and freed by another, threads that exit */
    static handoff_t h = { .n = 512 };
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, producer, &h) == 0);
    pthread_join(t, NULL);
    for (int i = 0; i < h.n; i++) free(h.blocks[i]);
    pthread_t c[4];
    for (int i = 0; i < 4; i++) REQUIRE(pthread_create(&c[i], NULL, churner, NULL) == 0);
    for (int i = 0; i < 4; i++) pthread_join(c[i], NULL);
    /* a child that allocates */
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        void *x = malloc(1000);
        _exit(x ? 0 : 1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_rare_code_stays_out(void)
{
    range_t m[4];
    int n = exec_mappings(m, 4);
    CHECK_EQ(n, 2);      /* 0: not preloaded; 1: the layout script was not used */
    REQUIRE(n == 2);
    workout();
    long hot = present_pages(m[0]), rare = present_pages(m[1]);
    REQUIRE(hot >= 0 && rare >= 0);
    printf("  running code: %ld of %ld KiB resident; rare code: %ld of %ld KiB\n",
           hot * 4, (long)((m[0].end - m[0].start) >> 10), rare * 4, (long)((m[1].end - m[1].start) >> 10));
    CHECK(hot > 0);
    CHECK_EQ(rare, 0);
    /* Read-only data likewise: the running code's (class tables and a
     * few strings) lies between the two code mappings and is all that
     * faults in; the rare code's comes after its code, with the unwind
     * tables, and stays out. In .rodata with the rest, the pool registry's
     * 8 KiB start-up array made the running code's data 4 resident pages. */
    range_t hot_ro = ro_mapping_at(m[0].end), rare_ro = ro_mapping_at(m[1].end);
    CHECK(hot_ro.end > hot_ro.start && rare_ro.end > rare_ro.start);
    long hot_data = present_pages(hot_ro), rare_data = present_pages(rare_ro);
    printf("  read-only data: running code's %ld of %ld KiB resident, rare code's %ld of %ld KiB\n",
           hot_data * 4, (long)((hot_ro.end - hot_ro.start) >> 10), rare_data * 4, (long)((rare_ro.end - rare_ro.start) >> 10));
    CHECK(hot_data <= 2);
    CHECK_EQ(rare_data, 0);
}

int main(void)
{
    RUN(test_rare_code_stays_out);
    return t_finish();
}
