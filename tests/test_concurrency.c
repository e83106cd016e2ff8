/* Criterion tests: a loaded model is immutable and shareable.
 *
 *  threads    one glowrt_model, several pthreads at once, each with its own
 *             session (threads 1 and 2 alternating, batch 1 and 3): log_p,
 *             encode, decode and sample are bit-identical to the same
 *             session run alone;
 *  processes  two processes load (mmap) the same .glow file and score the
 *             same images at the same moment: bit-identical to one alone.
 *
 * The model: $GLOWRT_TEST_MODEL (the ctest fixture writes a small random
 * Glow with tests/make_model.py). */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "glowrt.h"

#define N_IMG 6
#define N_THREADS 6
#define ROUNDS 3

typedef struct {
    double log_p[N_IMG];
    float *eps, *dec, *smp;
} results;

static const char *model_path(void) {
    const char *p = getenv("GLOWRT_TEST_MODEL");
    cr_assert(p && *p, "GLOWRT_TEST_MODEL is not set (ctest sets it)");
    return p;
}

/* Deterministic model-space images in [-0.5, 0.5). */
static float *make_images(int64_t D) {
    float *x = malloc(sizeof(float) * (size_t)(N_IMG * D));
    uint64_t s = 0x9E3779B97F4A7C15u;
    for (int64_t i = 0; i < N_IMG * D; i++) {
        s = s * 6364136223846793005u + 1442695040888963407u;
        x[i] = (float)((s >> 40) & 0xFF) / 256.0f - 0.5f + 0.5f / 256.0f;
    }
    return x;
}

static void results_alloc(results *r, int64_t D) {
    r->eps = malloc(sizeof(float) * (size_t)(N_IMG * D));
    r->dec = malloc(sizeof(float) * (size_t)(N_IMG * D));
    r->smp = malloc(sizeof(float) * (size_t)(N_IMG * D));
}
static void results_free(results *r) {
    free(r->eps);
    free(r->dec);
    free(r->smp);
}

/* Everything one session computes on the images, in batches of `batch`. */
static int compute(const glowrt_model *m, int threads, int batch, const float *x, int64_t D, results *r,
                   char *err) {
    glowrt_session *s;
    if (glowrt_session_create(m, batch, 0, 0, threads, &s, err)) return 1;
    double lp2[N_IMG];
    int rc = 0;
    for (int i = 0; i < N_IMG && !rc; i += batch) {
        const int n = N_IMG - i < batch ? N_IMG - i : batch;
        rc = glowrt_log_prob(s, x + i * D, n, r->log_p + i, err) ||
             glowrt_encode(s, x + i * D, n, r->eps + i * D, lp2 + i, err) ||
             glowrt_decode(s, r->eps + i * D, n, r->dec + i * D, err) ||
             glowrt_sample(s, 42, (uint64_t)i, n, 0.7f, r->smp + i * D, err);
    }
    for (int i = 0; i < N_IMG && !rc; i++)
        if (memcmp(&lp2[i], &r->log_p[i], sizeof(double))) {
            snprintf(err, GLOWRT_ERR_LEN, "encode's log_p differs from log_prob's");
            rc = 1;
        }
    glowrt_session_free(s);
    return rc;
}

static int same(const results *a, const results *b, int64_t D) {
    return !memcmp(a->log_p, b->log_p, sizeof a->log_p) && !memcmp(a->eps, b->eps, sizeof(float) * (size_t)(N_IMG * D)) &&
           !memcmp(a->dec, b->dec, sizeof(float) * (size_t)(N_IMG * D)) &&
           !memcmp(a->smp, b->smp, sizeof(float) * (size_t)(N_IMG * D));
}

typedef struct {
    const glowrt_model *m;
    const float *x;
    int64_t D;
    int threads, batch;
    const results *ref;
    pthread_barrier_t *start;
    int mismatches, failed;
    char err[GLOWRT_ERR_LEN];
} worker_arg;

static void *worker(void *p) {
    worker_arg *a = p;
    results r;
    results_alloc(&r, a->D);
    pthread_barrier_wait(a->start);
    for (int k = 0; k < ROUNDS; k++) {
        if (compute(a->m, a->threads, a->batch, a->x, a->D, &r, a->err)) {
            a->failed = 1;
            break;
        }
        if (!same(&r, a->ref, a->D)) a->mismatches++;
    }
    results_free(&r);
    return NULL;
}

Test(concurrency, sessions_in_threads_share_one_model) {
    char err[GLOWRT_ERR_LEN];
    glowrt_model *m;
    cr_assert_eq(glowrt_model_load(model_path(), &m, err), 0, "%s", err);
    cr_assert_eq(glowrt_model_verify(m, err), 0, "%s", err);
    glowrt_info info;
    glowrt_model_info(m, &info);
    const int64_t D = glowrt_dim(m, info.height, info.width);
    float *x = make_images(D);
    /* Alone: threads 1, batch 1; then alone at threads 2 / batch 3 (the API
     * promises the same bits whatever the threads and batch). */
    results ref, alone;
    results_alloc(&ref, D);
    results_alloc(&alone, D);
    cr_assert_eq(compute(m, 1, 1, x, D, &ref, err), 0, "%s", err);
    for (int i = 0; i < N_IMG; i++) cr_assert(isfinite(ref.log_p[i]), "log_p[%d] = %g", i, ref.log_p[i]);
    cr_assert_eq(compute(m, 2, 3, x, D, &alone, err), 0, "%s", err);
    cr_assert(same(&ref, &alone, D), "threads 2 / batch 3 alone differs from threads 1 / batch 1");

    pthread_t th[N_THREADS];
    worker_arg args[N_THREADS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N_THREADS);
    for (int t = 0; t < N_THREADS; t++) {
        args[t] = (worker_arg){m, x, D, 1 + t % 2, t % 4 < 2 ? 1 : 3, &ref, &start, 0, 0, ""};
        cr_assert_eq(pthread_create(&th[t], NULL, worker, &args[t]), 0);
    }
    for (int t = 0; t < N_THREADS; t++) pthread_join(th[t], NULL);
    pthread_barrier_destroy(&start);
    for (int t = 0; t < N_THREADS; t++) {
        cr_expect_eq(args[t].failed, 0, "thread %d (threads %d, batch %d): %s", t, args[t].threads, args[t].batch,
                     args[t].err);
        cr_expect_eq(args[t].mismatches, 0, "thread %d (threads %d, batch %d): %d of %d rounds differ from alone", t,
                     args[t].threads, args[t].batch, args[t].mismatches, ROUNDS);
    }
    results_free(&ref);
    results_free(&alone);
    free(x);
    glowrt_model_free(m);
}

/* Scores the images in a fresh process (its own mmap of the file) once the
 * parent says go; writes log_p to fd. */
static void child_score(int go_fd, int out_fd) {
    char err[GLOWRT_ERR_LEN], c;
    glowrt_model *m;
    glowrt_session *s;
    if (glowrt_model_load(model_path(), &m, err) || glowrt_session_create(m, N_IMG, 0, 0, 1, &s, err)) _exit(3);
    glowrt_info info;
    glowrt_model_info(m, &info);
    const int64_t D = glowrt_dim(m, info.height, info.width);
    float *x = make_images(D);
    double lp[N_IMG];
    if (read(go_fd, &c, 1) != 1) _exit(4);
    for (int k = 0; k < 20; k++)  /* long enough to overlap with the other */
        if (glowrt_log_prob(s, x, N_IMG, lp, err)) _exit(5);
    if (write(out_fd, lp, sizeof lp) != (ssize_t)sizeof lp) _exit(6);
    _exit(0);
}

Test(concurrency, two_processes_score_one_mapped_file) {
    /* Fork before this process starts any OpenMP or oneDNN threads. */
    int go[2], out[2][2];
    pid_t pid[2];
    cr_assert_eq(pipe(go), 0);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(pipe(out[i]), 0);
        pid[i] = fork();
        cr_assert_neq(pid[i], -1);
        if (pid[i] == 0) child_score(go[0], out[i][1]);
        close(out[i][1]);
    }
    nanosleep(&(struct timespec){0, 200000000}, NULL);
    cr_assert_eq(write(go[1], "gg", 2), 2);  /* both start at once */
    double lp[2][N_IMG];
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(read(out[i][0], lp[i], sizeof lp[i]), (ssize_t)sizeof lp[i], "child %d gave no result", i);
        int st;
        cr_assert_eq(waitpid(pid[i], &st, 0), pid[i]);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d failed (status %d)", i, st);
    }
    /* And alone, here. */
    char err[GLOWRT_ERR_LEN];
    glowrt_model *m;
    glowrt_session *s;
    cr_assert_eq(glowrt_model_load(model_path(), &m, err), 0, "%s", err);
    cr_assert_eq(glowrt_session_create(m, 1, 0, 0, 1, &s, err), 0, "%s", err);
    glowrt_info info;
    glowrt_model_info(m, &info);
    const int64_t D = glowrt_dim(m, info.height, info.width);
    float *x = make_images(D);
    double ref[N_IMG];
    for (int i = 0; i < N_IMG; i++) cr_assert_eq(glowrt_log_prob(s, x + i * D, 1, &ref[i], err), 0, "%s", err);
    for (int i = 0; i < 2; i++)
        cr_expect_eq(memcmp(lp[i], ref, sizeof ref), 0, "process %d's log_p differs from one process alone", i);
    free(x);
    glowrt_session_free(s);
    glowrt_model_free(m);
}
