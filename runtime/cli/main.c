/* glowrt: the command-line tool. Each subcommand (cmd_*.c) parses its
 * options, loads the model and calls the library; every failure is one line
 * on stderr and exit code 2. */
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
#include <unistd.h>

/* ---- main -------------------------------------------------------------- */

static const char *MAIN_HELP =
    "usage: glowrt COMMAND [ARGS...]   (glowrt COMMAND --help for each)\n"
    "\n"
    "Run Glow-family normalizing flows from a .glow model file, exactly.\n"
    "\n"
    "commands:\n"
    "  info     architecture, shapes, FLOPs, kernels; --verify checks the file\n"
    "  score    exact log-likelihood (nats) and bits/dim of images\n"
    "  encode   images -> standardised latents eps (.npy)\n"
    "  decode   latents -> images (the exact inverse of encode)\n"
    "  sample   draw images at a temperature, seeded and reproducible\n"
    "  bench    throughput on this machine; --profile shows where the time goes\n"
    "  calibrate  a threshold for out-of-distribution flags at a target FPR\n"
    "  eval     AUROC, AUPR, FPR@95%TPR of a score between IN and OUT sets\n"
    "  interp   a strip of images on the line between two images' latents\n"
    "  manipulate  move images along mean eps(pos) - mean eps(neg)\n"
    "\n"
    "Threads spin briefly, then sleep, between parallel regions (GOMP_SPINCOUNT=1000)\n"
    "unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set: OMP_WAIT_POLICY=PASSIVE suits\n"
    "a machine busy with other work, ACTIVE one kept for glowrt.\n"
    "\n"
    "Errors are one line on stderr and exit code 2 (score: 3 when some inputs\n"
    "failed and the others were scored). GLOWRT_ISA=ref forces the\n"
    "reference kernels.\n";

static const struct {
    const char *name;
    int (*run)(int, char **);
} COMMANDS[] = {{"info", cmd_info}, {"score", cmd_score}, {"encode", cmd_encode}, {"decode", cmd_decode},
                {"sample", cmd_sample}, {"bench", cmd_bench},
                {"calibrate", cmd_calibrate}, {"eval", cmd_eval}, {"interp", cmd_interp},
                {"manipulate", cmd_manipulate}};

/* How OpenMP threads wait between parallel regions. libgomp's default spins
 * ~300,000 rounds: on a machine busy with other work that spinning takes the
 * cores from the threads still computing (one image on 2 threads ran several
 * times slower than on one). Sleeping at once (PASSIVE) costs a wake-up per
 * region instead, and one image split among threads runs ~200 regions: 58 ms
 * instead of 44 per CIFAR image on 2 idle cores. A short spin (1,000 rounds,
 * microseconds) catches the next region on an idle machine and gives the core
 * up soon on a busy one (with the other core busy: 102 ms vs PASSIVE's 93).
 * libgomp reads it only at start-up, hence the re-execution; a user's own
 * OMP_WAIT_POLICY or GOMP_SPINCOUNT wins. */
static void prefer_short_spin(char **argv) {
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    if (setenv("GOMP_SPINCOUNT", "1000", 1)) return;
    execvp(argv[0], argv);
    /* Still here: the same program could not be found again; go on as is. */
}

int main(int argc, char **argv) {
    prefer_short_spin(argv);
    if (argc < 2) {
        fputs(MAIN_HELP, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(MAIN_HELP, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("glowrt %s (kernels: %s)\n", GLOWRT_VERSION, glowrt_isa());
        return 0;
    }
    static char progbuf[64];
    snprintf(progbuf, sizeof progbuf, "glowrt %s", cmd);
    prog = progbuf;
    opterr = 0;
    argv[1] = argv[0];
    argc--;
    argv++;
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (!strcmp(cmd, COMMANDS[i].name)) return COMMANDS[i].run(argc, argv);
    prog = "glowrt";
    die("unknown command '%s' (see glowrt --help)", cmd);
    return EXIT_USAGE;
}

