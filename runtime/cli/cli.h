/* Shared pieces of the glowrt command-line tool: one-line errors, option
 * parsing, model and session set-up, input iteration. One file per command
 * (cmd_*.c) uses them. */
#ifndef GLOWRT_CLI_H
#define GLOWRT_CLI_H
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include "glowrt.h"
#include "io.h"

#define EXIT_USAGE 2

extern const char *prog;  /* "glowrt score" etc., for messages */

/* One line on stderr, exit code 2. */
void vline(const char *fmt, va_list ap);
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

long parse_long(const char *opt, const char *s, long lo, long hi);
uint64_t parse_u64(const char *opt, const char *s);
double parse_double(const char *opt, const char *s, double lo, double hi);
void parse_size(const char *s, int *h, int *w);   /* "S" or "HxW" */
void bad_option(char **argv);                      /* after getopt_long returned '?' */

/* Options every computing command takes. */
typedef struct {
    int threads, batch;
    int height, width;    /* 0: the model's default */
    const char *output;
} common_opts;

enum { OPT_THREADS = 1000, OPT_BATCH, OPT_SIZE, OPT_FORMAT, OPT_SEED, OPT_VERIFY, OPT_HELP, OPT_FIRST_FREE };

/* Handles --threads, --batch, --size, -o; returns 0 for other options. */
int common_option(int c, const char *arg, common_opts *o);

glowrt_model *load_model(const char *path, int verify);
glowrt_session *make_session(const glowrt_model *m, const common_opts *o, int h, int w);
/* Reuses *s while the image size stays the same. */
void ensure_session(glowrt_session **s, int *sh, int *sw, const glowrt_model *m, const common_opts *o, int h, int w);

/* Calls fn(images, path, is_array) for every input file that args name. */
typedef void (*input_fn)(const io_images *im, const char *path, int is_array, void *ctx);
void for_each_input(char **args, int n_args, int n_bits, int model_c, input_fn fn, void *ctx);

/* Dies now if out's directory is missing (images: 1 for write_output's
 * outputs, which may be directories). */
void check_output(const char *out, int images);

/* Dies now, before any work, with write_output's own message if it would
 * refuse n images of h x w (a .png/.jpg grid over IO_MAX_DIM a side, say). */
void check_output_size(const glowrt_model *m, const char *out, int64_t n, int h, int w);

/* Writes model-space images as .npy, .png/.jpg (grid) or a directory. */
void write_output(const glowrt_model *m, const char *out, const float *x, int64_t n, int h, int w);

int cmd_info(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_encode(int argc, char **argv);
int cmd_decode(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_interp(int argc, char **argv);
int cmd_manipulate(int argc, char **argv);
#endif
