/* The heapkit command: a thin dispatcher over the sub-commands. */
#include <stdio.h>
#include <string.h>
#include "cmd.h"
#include "heapkit.h"


static const struct { const char *name; int (*fn)(int, char **); const char *help; } cmds[] = {
    { "lab",    hk_cmd_lab,    "generate the built-in traces, replay them on every engine, print the table, draw the pictures" },
    { "replay", hk_cmd_replay, "replay malloc-lab traces on the engines and the system malloc" },
    { "gen",    hk_cmd_gen,    "write the built-in trace set to a folder" },
    { "run",    hk_cmd_run,    "run a program on heapkit (LD_PRELOAD)" },
};

static void usage(FILE *f)
{
    fprintf(f, "heapkit %s: dynamic memory allocation, seen and compared\n\nusage: heapkit COMMAND [ARGS...]\n\n", HK_VERSION_STRING);
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(f, "  %-8s %s\n", cmds[i].name, cmds[i].help);
    fprintf(f, "\n`heapkit COMMAND --help` describes each command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) { printf("heapkit %s\n", HK_VERSION_STRING); return 0; }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (strcmp(argv[1], cmds[i].name)) continue;
        return cmds[i].fn(argc - 1, argv + 1);
    }
    fprintf(stderr, "heapkit: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
