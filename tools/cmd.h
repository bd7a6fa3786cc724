/* Sub-commands of the heapkit command; each lives in its own tools/ file. */
#ifndef HK_TOOLS_CMD_H
#define HK_TOOLS_CMD_H

int hk_cmd_lab(int argc, char **argv);     /* gen the built-in set, replay it on every engine, table + pictures */
int hk_cmd_replay(int argc, char **argv);  /* replay malloc-lab traces */
int hk_cmd_gen(int argc, char **argv);     /* write the built-in trace set */
int hk_cmd_run(int argc, char **argv);     /* run a program on libheapkit.so */

#endif
