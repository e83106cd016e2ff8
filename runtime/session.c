/* Executing the plan: forward (density, encode) and reverse (decode,
 * sample). One image at a time through the whole plan, in two ping-pong
 * buffers the size of the image plus the coupling network's scratch: memory
 * does not depend on the model's depth, and no image's result depends on
 * what else is in the batch. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv.h"
#include "kernels/kernels.h"
#include "model.h"

/* Shape and scratch bookkeeping of one plan op at this session's size. */
typedef struct {
    int C, H, W;         /* input shape of the op (forward direction) */
    int64_t eps_off;     /* where its latents start in eps (SPLIT, TOP_PRIOR) */
    gt_conv *conv[3];    /* COUPLING: net convs; SPLIT: conv[0] is the prior */
} op_state;

typedef struct {
    int cin, cout, h, w, ksz, relu;
    gt_conv *conv;
} conv_entry;

struct glowrt_session {
    const glowrt_model *m;
    const gt_kernels *k;
    int max_batch, H, W, threads;
    int64_t D;
    op_state *ops;
    conv_entry *convs;   /* distinct primitives, shared between ops of one shape */
    int n_convs;
    float *cur, *nxt;    /* [D] each */
    float *h1, *h2, *hout;
    double *part;        /* per-channel partial sums */
    float *top;          /* the top prior's mean / log_sd, [2C][H*W] */
    float *zeros;        /* for an N(0, I) top prior */
};

static const gt_kernels *g_kernels;
static const char *g_kernels_err;
static pthread_once_t g_kernels_once = PTHREAD_ONCE_INIT;
static void pick_kernels(void) { g_kernels = kernels_select(&g_kernels_err); }

const char *glowrt_isa(void) {
    pthread_once(&g_kernels_once, pick_kernels);
    return g_kernels ? g_kernels->name : "none";
}

double glowrt_bpd(double log_p, int64_t dim, int n_bits) {
    const double d = (double)dim;
    return -(log_p - d * log((double)(1 << n_bits))) / (d * log(2.0));
}

void glowrt_sample_noise(uint64_t seed, uint64_t first_index, int n, int64_t dim, float temp, float *eps) {
    const gt_kernels *k;
    pthread_once(&g_kernels_once, pick_kernels);
    k = g_kernels ? g_kernels : &gt_kernels_ref;
    for (int i = 0; i < n; i++) {
        float *e = eps + (int64_t)i * dim;
        const int64_t chunk = 4096, n_chunks = (dim + chunk - 1) / chunk;
#pragma omp parallel for schedule(static)
        for (int64_t c = 0; c < n_chunks; c++) {
            const int64_t j0 = c * chunk, len = dim - j0 < chunk ? dim - j0 : chunk;
            k->normal_noise(seed, first_index + (uint64_t)i, j0, len, temp, e + j0);
        }
    }
}

/* Primitives hold no weights, so ops of one shape share one. */
static int get_conv(glowrt_session *s, int cin, int cout, int h, int w, int ksz, int relu, gt_conv **out, char *err) {
    const conv_entry want = {cin, cout, h, w, ksz, relu, NULL};
    for (int i = 0; i < s->n_convs; i++) {
        const conv_entry *e = &s->convs[i];
        if (e->cin == cin && e->cout == cout && e->h == h && e->w == w && e->ksz == ksz && e->relu == relu) {
            *out = e->conv;
            return 0;
        }
    }
    conv_entry *grown = realloc(s->convs, (size_t)(s->n_convs + 1) * sizeof *grown);
    if (!grown) {
        snprintf(err, GLOWRT_ERR_LEN, "out of memory");
        return 1;
    }
    s->convs = grown;
    s->convs[s->n_convs] = want;
    if (conv_create(cin, cout, h, w, ksz, relu, &s->convs[s->n_convs].conv, err)) return 1;
    *out = s->convs[s->n_convs++].conv;
    return 0;
}

/* Channel of the first / second role in an output of 2*half channels:
 * contiguous halves [a..., b...] or interleaved [b0, a0, b1, a1, ...] where
 * role a is log_s (coupling) and role b is t; for priors role a is the mean
 * and contiguous [mean..., log_sd...], interleaved [mean0, log_sd0, ...]. */
static inline int64_t coupling_scale_ch(int halves, int half, int kk) { (void)half; return halves ? 2 * kk + 1 : kk; }
static inline int64_t coupling_shift_ch(int halves, int half, int kk) { return halves ? 2 * kk : half + kk; }
static inline int64_t prior_mean_ch(int halves, int half, int kk) { (void)half; return halves ? 2 * kk : kk; }
static inline int64_t prior_logsd_ch(int halves, int half, int kk) { return halves ? 2 * kk + 1 : half + kk; }

static void *alloc_floats(int64_t n) {
    void *p = NULL;
    if (n < 1) n = 1;
    if (posix_memalign(&p, 64, (size_t)n * sizeof(float))) return NULL;
    memset(p, 0, (size_t)n * sizeof(float));
    return p;
}

int glowrt_session_create(const glowrt_model *m, int max_batch, int height, int width, int threads,
                          glowrt_session **out, char *err) {
    *out = NULL;
    pthread_once(&g_kernels_once, pick_kernels);
    if (!g_kernels) {
        snprintf(err, GLOWRT_ERR_LEN, "%s", g_kernels_err);
        return 1;
    }
    if (height == 0 && width == 0) {
        height = m->height;
        width = m->width;
    }
    if (glowrt_check_size(m, height, width, err)) return 1;
    if (max_batch < 1 || max_batch > (1 << 20)) {
        snprintf(err, GLOWRT_ERR_LEN, "batch size %d is out of range (1..1048576)", max_batch);
        return 1;
    }
    glowrt_session *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, GLOWRT_ERR_LEN, "out of memory");
        return 1;
    }
    s->m = m;
    s->k = g_kernels;
    s->max_batch = max_batch;
    s->H = height;
    s->W = width;
    s->threads = threads > 0 ? threads : omp_get_num_procs();
    s->D = glowrt_dim(m, height, width);
    s->ops = calloc((size_t)m->n_ops, sizeof *s->ops);
    if (!s->ops) goto oom;
    omp_set_num_threads(s->threads);

    int C = m->in_c, H = height, W = width;
    int64_t eps_off = 0, hid_max = 1, out_max = 1, part_max = 1;
    for (int i = 0; i < m->n_ops; i++) {
        const gt_op *op = &m->ops[i];
        op_state *st = &s->ops[i];
        st->C = C;
        st->H = H;
        st->W = W;
        const int64_t hw = (int64_t)H * W;
        switch (op->code) {
        case OP_SQUEEZE:
            C *= 4;
            H /= 2;
            W /= 2;
            break;
        case OP_AFFINE: break;
        case OP_COUPLING: {
            const int hid = (int)op->ints[1], co = (int)op->t[5]->dims[0];
            if (get_conv(s, C / 2, hid, H, W, 3, op->t[2] == NULL, &st->conv[0], err) ||
                get_conv(s, hid, hid, H, W, 1, 1, &st->conv[1], err) ||
                get_conv(s, hid, co, H, W, 3, 0, &st->conv[2], err))
                goto fail;
            if (hid * hw > hid_max) hid_max = hid * hw;
            if (co * hw > out_max) out_max = co * hw;
            if (C > part_max) part_max = C;
            break;
        }
        case OP_SPLIT:
            if (get_conv(s, C / 2, C, H, W, 3, 0, &st->conv[0], err)) goto fail;
            if (C * hw > out_max) out_max = C * hw;
            if (C > part_max) part_max = C;
            st->eps_off = eps_off;
            eps_off += (C / 2) * hw;
            C /= 2;
            break;
        case OP_TOP_PRIOR:
            st->eps_off = eps_off;
            if (C > part_max) part_max = C;
            s->top = alloc_floats(2 * C * hw);
            s->zeros = alloc_floats(C * hw);
            if (!s->top || !s->zeros) goto oom;
            if (op->ints[2]) {
                /* The learned top prior is a zero-conv applied to zeros:
                 * its bias everywhere, plus the edge table at the border. */
                for (int c = 0; c < 2 * C; c++)
                    for (int64_t p = 0; p < hw; p++) s->top[c * hw + p] = op->t[0]->data[c];
                if (op->t[1]) s->k->edge_bias(s->top, op->t[1]->data, 2 * C, H, W, 0);
            }
            break;
        }
    }
    s->cur = alloc_floats(s->D);
    s->nxt = alloc_floats(s->D);
    s->h1 = alloc_floats(hid_max);
    s->h2 = alloc_floats(hid_max);
    s->hout = alloc_floats(out_max);
    s->part = calloc((size_t)part_max, sizeof(double));
    if (!s->cur || !s->nxt || !s->h1 || !s->h2 || !s->hout || !s->part) goto oom;
    *out = s;
    return 0;
oom:
    snprintf(err, GLOWRT_ERR_LEN, "out of memory");
fail:
    glowrt_session_free(s);
    return 1;
}

void glowrt_session_free(glowrt_session *s) {
    if (!s) return;
    for (int i = 0; i < s->n_convs; i++) conv_free(s->convs[i].conv);
    free(s->convs);
    free(s->ops);
    free(s->cur);
    free(s->nxt);
    free(s->h1);
    free(s->h2);
    free(s->hout);
    free(s->part);
    free(s->top);
    free(s->zeros);
    free(s);
}

static void swap(glowrt_session *s) {
    float *t = s->cur;
    s->cur = s->nxt;
    s->nxt = t;
}

static double sum_parts(const double *part, int n) {
    double acc = 0;
    for (int i = 0; i < n; i++) acc += part[i];
    return acc;
}

/* h = NN(xa) of a coupling op into s->hout. */
static int coupling_net(glowrt_session *s, const gt_op *op, const op_state *st, const float *xa, char *err) {
    const int hid = (int)op->ints[1], co = (int)op->t[5]->dims[0];
    if (conv_run(st->conv[0], xa, op->t[0]->data, op->t[1]->data, s->h1, err)) return 1;
    if (op->t[2]) s->k->edge_bias(s->h1, op->t[2]->data, hid, st->H, st->W, 1);
    if (conv_run(st->conv[1], s->h1, op->t[3]->data, op->t[4]->data, s->h2, err)) return 1;
    if (conv_run(st->conv[2], s->h2, op->t[5]->data, op->t[6]->data, s->hout, err)) return 1;
    if (op->t[7]) s->k->edge_bias(s->hout, op->t[7]->data, co, st->H, st->W, 0);
    return 0;
}

/* The split prior's mean / log_sd from z1 into s->hout. */
static int split_prior(glowrt_session *s, const gt_op *op, const op_state *st, const float *z1, char *err) {
    if (conv_run(st->conv[0], z1, op->t[0]->data, op->t[1]->data, s->hout, err)) return 1;
    if (op->t[2]) s->k->edge_bias(s->hout, op->t[2]->data, st->C, st->H, st->W, 0);
    return 0;
}

/* log p(z) of half channels of z under prior p [2*half][hw] (or mean = log_sd
 * = zeros when p is NULL), writing eps when asked. */
static double prior_logp(glowrt_session *s, int halves, int half, int64_t hw, const float *z, const float *p, float *eps) {
    const gt_kernels *k = s->k;
#pragma omp parallel for schedule(static)
    for (int kk = 0; kk < half; kk++) {
        const float *mean = p ? p + prior_mean_ch(halves, half, kk) * hw : s->zeros;
        const float *lsd = p ? p + prior_logsd_ch(halves, half, kk) * hw : s->zeros;
        s->part[kk] = k->gauss_logp(z + kk * hw, mean, lsd, eps ? eps + kk * hw : NULL, hw);
    }
    return sum_parts(s->part, half);
}

static void prior_sample(glowrt_session *s, int halves, int half, int64_t hw, float *z, const float *p, const float *eps) {
    const gt_kernels *k = s->k;
#pragma omp parallel for schedule(static)
    for (int kk = 0; kk < half; kk++) {
        const float *mean = p ? p + prior_mean_ch(halves, half, kk) * hw : s->zeros;
        const float *lsd = p ? p + prior_logsd_ch(halves, half, kk) * hw : s->zeros;
        k->gauss_from_eps(z + kk * hw, mean, lsd, eps + kk * hw, hw);
    }
}

/* One image forward: x [D] -> log_p, and eps [D] when asked. */
static int forward_one(glowrt_session *s, const float *x, double *log_p, float *eps, char *err) {
    const glowrt_model *m = s->m;
    const gt_kernels *k = s->k;
    double logdet = 0, logp = 0;
    memcpy(s->cur, x, (size_t)s->D * sizeof(float));
    for (int i = 0; i < m->n_ops; i++) {
        const gt_op *op = &m->ops[i];
        const op_state *st = &s->ops[i];
        const int C = st->C, half = C / 2;
        const int64_t hw = (int64_t)st->H * st->W;
        switch (op->code) {
        case OP_SQUEEZE:
            k->squeeze(s->cur, s->nxt, C, st->H, st->W);
            swap(s);
            break;
        case OP_AFFINE:
            k->affine(op->t[0]->data, op->t[1]->data, C, hw, s->cur, s->nxt);
            swap(s);
            logdet += (double)hw * op->f64s[0];
            break;
        case OP_COUPLING: {
            float *xb = s->cur + half * hw;
            if (coupling_net(s, op, st, s->cur, err)) return 1;
            const int halves = (int)op->ints[3];
            if (op->ints[2] == COUPLING_AFFINE) {
#pragma omp parallel for schedule(static)
                for (int kk = 0; kk < half; kk++)
                    s->part[kk] = k->coupling_fwd(xb + kk * hw, s->hout + coupling_scale_ch(halves, half, kk) * hw,
                                                  s->hout + coupling_shift_ch(halves, half, kk) * hw, hw);
                logdet += sum_parts(s->part, half);
            } else {
#pragma omp parallel for schedule(static)
                for (int kk = 0; kk < half; kk++) k->add(xb + kk * hw, s->hout + kk * hw, hw, 1.0f);
            }
            break;
        }
        case OP_SPLIT:
            if (split_prior(s, op, st, s->cur, err)) return 1;
            logp += prior_logp(s, (int)op->ints[1], half, hw, s->cur + half * hw, s->hout, eps ? eps + st->eps_off : NULL);
            break;
        case OP_TOP_PRIOR:
            logp += prior_logp(s, (int)op->ints[1], C, hw, s->cur, op->ints[2] ? s->top : NULL,
                               eps ? eps + st->eps_off : NULL);
            break;
        }
    }
    *log_p = logp + logdet;
    return 0;
}

/* One image reverse: eps [D] -> x [D]. */
static int reverse_one(glowrt_session *s, const float *eps, float *x, char *err) {
    const glowrt_model *m = s->m;
    const gt_kernels *k = s->k;
    for (int i = m->n_ops - 1; i >= 0; i--) {
        const gt_op *op = &m->ops[i];
        const op_state *st = &s->ops[i];
        const int C = st->C, half = C / 2;
        const int64_t hw = (int64_t)st->H * st->W;
        switch (op->code) {
        case OP_TOP_PRIOR:
            prior_sample(s, (int)op->ints[1], C, hw, s->cur, op->ints[2] ? s->top : NULL, eps + st->eps_off);
            break;
        case OP_SPLIT:
            if (split_prior(s, op, st, s->cur, err)) return 1;
            prior_sample(s, (int)op->ints[1], half, hw, s->cur + half * hw, s->hout, eps + st->eps_off);
            break;
        case OP_COUPLING: {
            float *xb = s->cur + half * hw;
            if (coupling_net(s, op, st, s->cur, err)) return 1;
            const int halves = (int)op->ints[3];
            if (op->ints[2] == COUPLING_AFFINE) {
#pragma omp parallel for schedule(static)
                for (int kk = 0; kk < half; kk++)
                    k->coupling_rev(xb + kk * hw, s->hout + coupling_scale_ch(halves, half, kk) * hw,
                                    s->hout + coupling_shift_ch(halves, half, kk) * hw, hw);
            } else {
#pragma omp parallel for schedule(static)
                for (int kk = 0; kk < half; kk++) k->add(xb + kk * hw, s->hout + kk * hw, hw, -1.0f);
            }
            break;
        }
        case OP_AFFINE:
            k->affine(op->t[2]->data, op->t[3]->data, C, hw, s->cur, s->nxt);
            swap(s);
            break;
        case OP_SQUEEZE:
            k->unsqueeze(s->cur, s->nxt, C, st->H, st->W);
            swap(s);
            break;
        }
    }
    memcpy(x, s->cur, (size_t)s->D * sizeof(float));
    return 0;
}

static int check_n(const glowrt_session *s, int n, char *err) {
    if (n < 0 || n > s->max_batch) {
        snprintf(err, GLOWRT_ERR_LEN, "%d images given to a session for batches of at most %d", n, s->max_batch);
        return 1;
    }
    omp_set_num_threads(s->threads);
    return 0;
}

int glowrt_encode(glowrt_session *s, const float *x, int n, float *eps, double *log_p, char *err) {
    if (check_n(s, n, err)) return 1;
    for (int i = 0; i < n; i++) {
        double lp;
        if (forward_one(s, x + (int64_t)i * s->D, &lp, eps ? eps + (int64_t)i * s->D : NULL, err)) return 1;
        if (log_p) log_p[i] = lp;
    }
    return 0;
}

int glowrt_log_prob(glowrt_session *s, const float *x, int n, double *log_p, char *err) {
    return glowrt_encode(s, x, n, NULL, log_p, err);
}

int glowrt_decode(glowrt_session *s, const float *eps, int n, float *x, char *err) {
    if (check_n(s, n, err)) return 1;
    for (int i = 0; i < n; i++)
        if (reverse_one(s, eps + (int64_t)i * s->D, x + (int64_t)i * s->D, err)) return 1;
    return 0;
}

int glowrt_sample(glowrt_session *s, uint64_t seed, uint64_t first_index, int n, float temp, float *x, char *err) {
    if (check_n(s, n, err)) return 1;
    for (int i = 0; i < n; i++) {
        /* The noise goes through x's slot for this image, then decodes in place. */
        float *xi = x + (int64_t)i * s->D;
        glowrt_sample_noise(seed, first_index + (uint64_t)i, 1, s->D, temp, xi);
        if (reverse_one(s, xi, xi, err)) return 1;
    }
    return 0;
}
