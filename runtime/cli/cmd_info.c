#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* ---- info -------------------------------------------------------------- */

static const char *INFO_HELP =
    "usage: glowrt info MODEL [--verify] [--size S|HxW]\n"
    "\n"
    "Print a model's architecture: metadata, level shapes, parameter count,\n"
    "FLOPs per image per direction, and the kernels that run it.\n"
    "\n"
    "  --verify       also check every tensor's CRC32C and that all values are finite\n"
    "  --size S|HxW   describe the model at another image size\n";

int cmd_info(int argc, char **argv) {
    static const struct option opts[] = {
        {"verify", no_argument, 0, OPT_VERIFY}, {"size", required_argument, 0, OPT_SIZE}, {"help", no_argument, 0, 'h'}, {0}};
    int verify = 0, h = 0, w = 0, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == OPT_VERIFY) verify = 1;
        else if (c == OPT_SIZE) parse_size(optarg, &h, &w);
        else if (c == 'h') { fputs(INFO_HELP, stdout); return 0; }
        else bad_option(argv);
    }
    if (optind != argc - 1) die("expects one MODEL (see glowrt info --help)");
    glowrt_model *m = load_model(argv[optind], 0);
    glowrt_info info;
    glowrt_model_info(m, &info);
    char err[GLOWRT_ERR_LEN];
    if (!h) { h = info.height; w = info.width; }
    if (glowrt_check_size(m, h, w, err)) die("%s", err);
    glowrt_model_describe(m, h, w, stdout);
    if (verify) {
        if (glowrt_model_verify(m, err)) die("%s", err);
        printf("verify     ok: header, metadata and every tensor's CRC32C match; all values finite\n");
    }
    glowrt_model_free(m);
    return 0;
}

