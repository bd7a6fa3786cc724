/* A minimal test harness: CHECK macros that count failures and keep going,
 * a runner that prints one line per case and a closing "N passed, N failed"
 * line, a helper to assert that a function aborts with a message, and one
 * that captures what a function writes to stderr. */
#ifndef HK_TEST_H
#define HK_TEST_H

#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <stdbool.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>
#include <time.h>

static int t_case_failures;
static int t_passed, t_failed;

#define CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    t_case_failures++; } } while (0)
#define CHECK_EQ(a, b) do { long long va_ = (long long)(a), vb_ = (long long)(b); if (va_ != vb_) { \
    fprintf(stderr, "  %s:%d: CHECK_EQ failed: %s == %s (%lld vs %lld)\n", __FILE__, __LINE__, #a, #b, va_, vb_); \
    t_case_failures++; } } while (0)
#define REQUIRE(cond) do { if (!(cond)) { \
    fprintf(stderr, "  %s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond); \
    t_case_failures++; return; } } while (0)

static inline void t_run(const char *name, void (*fn)(void))
{
    t_case_failures = 0;
    fn();
    if (t_case_failures) { t_failed++; printf("FAIL %s\n", name); }
    else { t_passed++; printf("ok   %s\n", name); }
    fflush(stdout);
}
#define RUN(fn) t_run(#fn, fn)
#define RUN_NAMED(name, fn) t_run(name, fn)

/* xorshift64: a seeded sequence for randomised tests (state never 0). */
static inline uint64_t t_rand(uint64_t *s)
{
    *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17;
    return *s;
}

/* A random offset inside a block of `usable` (>= 2) bytes, never 0, on the
 * 16-byte grid half the time: a pointer into a live block that is not its
 * start, for the misuse tests. */
static inline size_t t_inside(size_t usable, uint64_t *s)
{
    size_t off = 1 + t_rand(s) % (usable - 1);
    if (t_rand(s) % 2) off &= ~(size_t)15;
    return off ? off : 1;
}

static inline void t_sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static inline int t_finish(void)
{
    printf("%d passed, %d failed\n", t_passed, t_failed);
    return t_failed ? 1 : 0;
}

/* Run fn with stderr sent to a pipe; return how much it wrote, the text
 * (NUL-terminated, at most cap - 1 bytes) in out. */
static inline size_t t_capture_stderr(void (*fn)(void), char *out, size_t cap)
{
    int pfd[2];
    out[0] = 0;
    if (pipe(pfd) != 0) return 0;
    fflush(stderr);
    int saved = dup(2);
    dup2(pfd[1], 2);
    close(pfd[1]);
    fn();
    dup2(saved, 2);
    close(saved);
    ssize_t n = read(pfd[0], out, cap - 1);
    close(pfd[0]);
    out[n > 0 ? n : 0] = 0;
    return n > 0 ? (size_t)n : 0;
}

/* Run fn in a child; true when it died by `sig` and its stderr contains
 * `needle` (NULL: any message). The child's stderr is captured. */
static inline int t_expect_death(void (*fn)(void *), void *arg, int sig, const char *needle)
{
    int pfd[2];
    if (pipe(pfd) != 0) return 0;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        dup2(pfd[1], 2);
        signal(sig, SIG_DFL);
        fn(arg);
        _exit(0);
    }
    close(pfd[1]);
    char buf[8192];
    size_t n = 0;
    ssize_t r;
    while ((r = read(pfd[0], buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)r;
    buf[n] = 0;
    close(pfd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    int ok = WIFSIGNALED(st) && WTERMSIG(st) == sig && (!needle || strstr(buf, needle));
    if (!ok) fprintf(stderr, "  expected death by signal %d with \"%s\"; status 0x%x, stderr: %s\n",
                     sig, needle ? needle : "", st, buf);
    return ok;
}

#endif
