/* `heapkit run [--stats] [--lib PATH] -- PROGRAM ARGS...`: run a program on
 * heapkit by putting libheapkit.so first in LD_PRELOAD. The library is
 * $HEAPKIT_LIB, --lib, or libheapkit.so next to this executable. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <limits.h>
#include "cmd.h"

static void run_usage(FILE *f)
{
    fprintf(f, "usage: heapkit run [--stats] [--verbose] [--lib PATH] [--] PROGRAM [ARGS...]\n"
               "  Runs PROGRAM with libheapkit.so preloaded (prepended to LD_PRELOAD).\n"
               "  --stats    print heapkit's statistics to stderr when the program exits\n"
               "  --verbose  warn about misuse such as freeing a pointer heapkit does not own\n"
               "  --lib PATH the library to preload (default: $HEAPKIT_LIB, else libheapkit.so\n"
               "             next to the heapkit executable)\n");
}

static int find_library(const char *given, char *out, size_t cap)
{
    if (!given) given = getenv("HEAPKIT_LIB");
    if (given && *given) {
        if (access(given, R_OK) != 0) {
            fprintf(stderr, "heapkit run: cannot read the library '%s': %s\n", given, strerror(errno));
            return -1;
        }
        if (given[0] == '/') snprintf(out, cap, "%s", given);
        else if (!realpath(given, out)) snprintf(out, cap, "%s", given);
        return 0;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) { fprintf(stderr, "heapkit run: cannot find my own path; set HEAPKIT_LIB\n"); return -1; }
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) slash[1] = 0;
    static const char *const where[] = { "libheapkit.so", "../lib/libheapkit.so" };
    for (size_t i = 0; i < sizeof where / sizeof where[0]; i++) {
        if (strlen(exe) + strlen(where[i]) + 1 > cap) break;
        strcpy(out, exe);
        strcat(out, where[i]);
        if (access(out, R_OK) == 0) return 0;
    }
    fprintf(stderr, "heapkit run: libheapkit.so not found next to %s; build it or set HEAPKIT_LIB\n", exe);
    return -1;
}

int hk_cmd_run(int argc, char **argv)
{
    int stats = 0, verbose = 0, i = 1;
    const char *lib = NULL;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--")) { i++; break; }
        if (!strcmp(argv[i], "--stats")) stats = 1;
        else if (!strcmp(argv[i], "--verbose")) verbose = 1;
        else if (!strcmp(argv[i], "--lib") && i + 1 < argc) lib = argv[++i];
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { run_usage(stdout); return 0; }
        else if (argv[i][0] == '-') { fprintf(stderr, "heapkit run: unknown option '%s'\n", argv[i]); run_usage(stderr); return 2; }
        else break;
    }
    if (i >= argc) { fprintf(stderr, "heapkit run: no program given\n"); run_usage(stderr); return 2; }
    char path[PATH_MAX];
    if (find_library(lib, path, sizeof path) != 0) return 2;
    const char *old = getenv("LD_PRELOAD");
    size_t len = strlen(path) + (old ? strlen(old) : 0) + 2;
    char *pre = malloc(len);
    if (!pre) { fprintf(stderr, "heapkit run: out of memory\n"); return 2; }
    if (old && *old) snprintf(pre, len, "%s:%s", path, old);
    else snprintf(pre, len, "%s", path);
    if (setenv("LD_PRELOAD", pre, 1) != 0 ||
        (stats && setenv("HEAPKIT_SHOW_STATS", "1", 1) != 0) ||
        (verbose && setenv("HEAPKIT_VERBOSE", "1", 1) != 0)) {
        fprintf(stderr, "heapkit run: cannot set the environment: %s\n", strerror(errno));
        return 2;
    }
    free(pre);
    execvp(argv[i], argv + i);
    fprintf(stderr, "heapkit run: cannot run '%s': %s\n", argv[i], strerror(errno));
    return errno == ENOENT ? 127 : 126;
}
