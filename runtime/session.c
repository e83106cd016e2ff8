/* Executing the plan: forward (density, encode) and reverse (decode,
 * sample). One image at a time through the whole plan, in two ping-pong
 * buffers the size of the image plus the coupling network's scratch: memory
 * does not depend on the model's depth, and no image's result depends on
 * what else is in the batch. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conv.h"
#include "kernels/kernels.h"
#include "model.h"

/* Where the time goes (glowrt bench --profile): fixed labels, then one
 * per convolution shape. */
enum { PROF_AFFINE, PROF_SQUEEZE, PROF_COUPLING, PROF_PRIOR, PROF_LAYOUT, PROF_NOISE, PROF_FIXED };
static const char *const PROF_NAMES[PROF_FIXED] = {
    "affine (actnorm + 1x1 invertible conv)", "squeeze / unsqueeze", "coupling update (scale, shift, log-det)",
    "priors (Gaussian log-density / draw)", "layout changes (blocked <-> plain)", "sampling noise"};

/* A convolution split into output-channel chunks of a fixed size. Each
 * chunk runs single-threaded, on whichever thread: the chunks, and so the
 * arithmetic, depend only on the model, never on threads or batch. */
#define CONV_CHUNK 64
/* A narrow convolution (one output chunk) over many input channels, with no
 * ReLU, is also split into input-channel pieces of this size whose partial
 * outputs are summed in a fixed order: the coupling network's last layer
 * would otherwise run on one thread. */
#define CONV_PIECE 256

typedef struct conv_plan {
    int label;             /* profile label */
    int cin, cout, k, n_chunks;
    int n_pieces, piece;   /* input-channel pieces (1: none) of piece channels */
    gt_conv *full, *tail;  /* chunk primitives: CONV_CHUNK outputs, and the rest */
    int cin_p;             /* a piece's channels, padded to the block for a blocked source */
    int copy_weights;      /* pieces or padding: weights go through a copy before packing */
    int64_t out_floats;    /* size of the output, for summing the pieces */
    float *zero_bias;      /* bias of the pieces after the first */
    int pack_on_use;       /* packing pads every chunk's weights: pack into scratch at each use */
    int tail_on_use;       /* only the tail chunk's packing pads: that chunk is packed at each use, */
    float *tail_src;       /* from this copy of its plain weights (in the arena) */
    char *packed;          /* weights packed once for the primitives (in the arena) */
    size_t packed_stride;  /* bytes between chunks of packed weights */
    size_t packed_total;
    struct conv_plan *tap; /* a narrow 3x3 layer run as a 1x1 conv to its 9 taps (see plan_taps) */
    int h, w, block;       /* a tap plan's (or an edge plan's) image size and channel block */
    const float *edge;     /* a blocked first layer's edge table [9][cout] (the session's copy, see
                            * keep_small), added with the ReLU by one pass over each output chunk
                            * (see edge_pass) */
    int accumulate;        /* dst += conv (before the ReLU) */
    struct conv_plan *rest; /* a first layer split at its last whole block (see plan_split) */
    float *own_weights;    /* this plan's own copy of its plain weights (a tap plan's
                            * [9*cout][cin], a split layer's parts), when packed at
                            * each use; mapped (see map_floats) */
    size_t own_bytes;
} conv_plan;

/* Shape and convolutions of one plan op at this session's size. */
typedef struct {
    int C, H, W;           /* input shape of the op (forward direction) */
    int64_t eps_off;       /* where its latents start in eps (SPLIT, TOP_PRIOR) */
    conv_plan conv[3];     /* COUPLING: the network; SPLIT: conv[0] is the prior */
    int blocked;           /* COUPLING: hidden activations in oneDNN's blocked layout */
    int blocked_in;        /* COUPLING: the network's input blocked too */
} op_state;

typedef struct {
    int cin, cout, h, w, ksz, relu, src_blocked, dst_blocked, accumulate;
    gt_conv *conv;
} conv_entry;

/* Everything one image in flight needs. */
typedef struct {
    const gt_kernels *k;   /* the session's kernel table */
    float *cur, *nxt;      /* [D] each, ping-pong */
    float *h1, *h2, *hout; /* coupling network / prior activations */
    float *hblk;           /* the network's output in the blocked layout */
    float *xblk;           /* its input in the blocked layout */
    double *prof;          /* seconds per profile label, when profiling */
    char *wpack;           /* weights packed at each use */
    float *wpad;           /* and their zero-padded plain copy, one per thread */
    size_t pad_stride;
    double *part;          /* per-channel partial sums */
    float *pieces;         /* partial outputs of a convolution's input pieces */
    float *taps;           /* the 9 taps of a narrow 3x3 layer, blocked */
    void **scratch;        /* one oneDNN scratchpad per thread */
    int failed;
    char err[GLOWRT_ERR_LEN];
} worker;

struct glowrt_session {
    const glowrt_model *m;
    const gt_kernels *k;
    int max_batch, H, W, threads;
    int block;             /* channel block of the blocked layout, 0: none */
    int split_image;       /* an image is big enough to share among threads */
    int64_t D;
    op_state *ops;
    conv_entry *convs;     /* distinct primitives, shared between ops of one shape */
    int n_convs;
    size_t scratch_size;
    size_t pack_size;      /* bytes for weights packed at each use */
    size_t pad_size;       /* floats for their zero-padded plain copy */
    int64_t pieces_size;   /* floats for the partial outputs of input pieces */
    int64_t taps_size;     /* floats for the taps of a narrow 3x3 layer */
    worker *workers;       /* one per thread */
    char (*labels)[80];    /* profile labels: the fixed ones, then one per conv shape */
    int n_labels;
    struct arena_block *arena; /* what holds the weights the session keeps (arena_alloc) */
    const float **tdata;   /* where the run reads each model tensor (see keep_small) */
    float *top;            /* the top prior's mean / log_sd, [2C][H*W] */
    float *zeros;          /* for an N(0, I) top prior */
};

/* The weights a session keeps (packed ones, tails' plain copies) are cut,
 * 64-byte aligned, from large mapped blocks: hundreds of them then cost no
 * allocator overhead or page rounding each, and memory stays the weights
 * themselves (pages of a block count only once written). */
#define ARENA_BLOCK ((size_t)64 << 20)
typedef struct arena_block {
    struct arena_block *next;
    size_t size, used;
} arena_block;

static void *arena_alloc(glowrt_session *s, size_t n) {
    n = (n + 63) & ~(size_t)63;
    arena_block *b = s->arena;
    if (!b || b->size - b->used < n) {
        const size_t size = n + 64 > ARENA_BLOCK ? n + 64 : ARENA_BLOCK;
        void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) return NULL;
        b = m;
        b->next = s->arena;
        b->size = size;
        b->used = 64;  /* the header, padded to the alignment */
        s->arena = b;
    }
    void *p = (char *)b + b->used;
    b->used += n;
    return p;
}

/* Where the run reads tensor t: weights from the mapping (packed copies
 * aside), the small tensors it reads at each use (biases, edge tables, the
 * affine maps) from the session's own copies. A run that touched the mapped
 * file for a bias would fault in the page cache's whole folio around it
 * (large folios: up to hundreds of KB), weights released after packing
 * included, and the process would hold them again (celeba64: +150 MB). */
static inline const float *T(const glowrt_session *s, const gt_tensor *t) {
    return t ? s->tdata[t - s->m->tensors] : NULL;
}

/* Copies small tensor t (if any) into the arena for the run, and releases its pages in the mapping. */
static int keep_small(glowrt_session *s, const gt_tensor *t, char *err) {
    if (!t) return 0;
    float *copy = arena_alloc(s, (size_t)t->nbytes);
    if (!copy) {
        snprintf(err, GLOWRT_ERR_LEN, "out of memory");
        return 1;
    }
    memcpy(copy, t->data, (size_t)t->nbytes);
    s->tdata[t - s->m->tensors] = copy;
    model_release(s->m, t);
    return 0;
}

/* Where the arena stands, and a return there (what was cut since is reused). */
typedef struct {
    arena_block *block;
    size_t used;
} arena_mark;

static arena_mark arena_here(const glowrt_session *s) {
    return (arena_mark){s->arena, s->arena ? s->arena->used : 0};
}

static void arena_back(glowrt_session *s, arena_mark m) {
    while (s->arena && s->arena != m.block) {
        arena_block *next = s->arena->next;
        munmap(s->arena, s->arena->size);
        s->arena = next;
    }
    if (s->arena) s->arena->used = m.used;
}

static void arena_free(glowrt_session *s) {
    while (s->arena) {
        arena_block *next = s->arena->next;
        munmap(s->arena, s->arena->size);
        s->arena = next;
    }
}

static const gt_kernels *g_kernels;
static const char *g_kernels_err;
static pthread_once_t g_kernels_once = PTHREAD_ONCE_INIT;
static void pick_kernels(void) { g_kernels = kernels_select(&g_kernels_err); }

const char *glowrt_isa(void) {
    pthread_once(&g_kernels_once, pick_kernels);
    return g_kernels ? g_kernels->name : g_kernels_err ? g_kernels_err : "none";
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
static int get_conv(glowrt_session *s, const conv_entry *want, gt_conv **out, char *err) {
    for (int i = 0; i < s->n_convs; i++) {
        const conv_entry *e = &s->convs[i];
        if (e->cin == want->cin && e->cout == want->cout && e->h == want->h && e->w == want->w &&
            e->ksz == want->ksz && e->relu == want->relu && e->src_blocked == want->src_blocked &&
            e->dst_blocked == want->dst_blocked && e->accumulate == want->accumulate) {
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
    conv_entry *e = &s->convs[s->n_convs];
    *e = *want;
    const int rc = want->src_blocked || want->dst_blocked
                       ? conv_create_blocked(e->cin, e->cout, e->h, e->w, e->ksz, e->relu, e->src_blocked,
                                             e->dst_blocked, e->accumulate, s->threads, &e->conv, err)
                       : conv_create(e->cin, e->cout, e->h, e->w, e->ksz, e->relu, s->threads, &e->conv, err);
    if (rc) return 1;
    *out = s->convs[s->n_convs++].conv;
    if (conv_scratch_size(*out) > s->scratch_size) s->scratch_size = conv_scratch_size(*out);
    return 0;
}

static int64_t round_up(int64_t v, int64_t to) { return to ? (v + to - 1) / to * to : v; }

/* Packs item (output chunk j, input piece q) into dst (the item's own
 * place) from the chunk's plain weights [rows][cin][k][k]; a piece or a
 * padded input goes through pad (a CONV_CHUNK x cin_p x k x k buffer,
 * zero-padding the input channels). */
static int pack_chunk(const conv_plan *p, int j, int q, const float *src, char *dst, float *pad, char *err) {
    gt_conv *c = (j + 1) * CONV_CHUNK <= p->cout ? p->full : p->tail;
    const int64_t kk = (int64_t)p->k * p->k;
    if (p->copy_weights) {
        const int rows = (j + 1) * CONV_CHUNK <= p->cout ? CONV_CHUNK : p->cout % CONV_CHUNK;
        memset(pad, 0, sizeof(float) * (size_t)(rows * p->cin_p * kk));
        for (int o = 0; o < rows; o++)
            memcpy(pad + (int64_t)o * p->cin_p * kk, src + (int64_t)o * p->cin * kk + (int64_t)q * p->piece * kk,
                   sizeof(float) * (size_t)(p->piece * kk));
        src = pad;
    }
    return conv_pack_weights(c, src, dst, err);
}

/* The profile label's index, added when new; -1 when out of memory. */
static int plan_label(glowrt_session *s, const char *label, char *err) {
    for (int i = PROF_FIXED; i < s->n_labels; i++)
        if (!strcmp(s->labels[i], label)) return i;
    char (*grown)[80] = realloc(s->labels, (size_t)(s->n_labels + 1) * sizeof *grown);
    if (!grown) {
        snprintf(err, GLOWRT_ERR_LEN, "out of memory");
        return -1;
    }
    s->labels = grown;
    snprintf(s->labels[s->n_labels], sizeof s->labels[0], "%s", label);
    return s->n_labels++;
}

static void plan_free(conv_plan *p) {
    if (p->tap) {
        plan_free(p->tap);
        free(p->tap);
    }
    if (p->rest) {
        plan_free(p->rest);
        free(p->rest);
    }
    if (p->own_weights) munmap(p->own_weights, p->own_bytes);
    free(p->zero_bias);
    memset(p, 0, sizeof *p);
}

static int plan_conv(glowrt_session *s, conv_plan *p, const float *weights, int cin, int cout, int h, int w, int ksz,
                     int relu, int src_blocked, int dst_blocked, int accumulate, char *err);

/* Plain weights of output chunk j, from the layer's weights or, for a tail
 * packed at each use, from the plan's own copy. */
static const float *chunk_src(const conv_plan *p, const float *weights, int j) {
    if (p->tail_src && j == p->n_chunks - 1) return p->tail_src;
    return weights + (int64_t)j * CONV_CHUNK * p->cin * p->k * p->k;
}

/* Creates the packing primitives of the chunks from j0 on, those packed at
 * each use, now rather than in a parallel region: packs zero weights (with a
 * pad buffer of their own) into a buffer that is thrown away. */
static int probe_packing(const conv_plan *p, int j0, size_t pad_floats, char *err) {
    const size_t w_floats = (size_t)p->cout * (size_t)p->cin * (size_t)(p->k * p->k);
    float *probe = calloc(w_floats + pad_floats, sizeof(float));
    char *dst = NULL;
    int rc = !probe || posix_memalign((void **)&dst, 64, p->packed_stride + 64);  /* one item at a time */
    if (rc) snprintf(err, GLOWRT_ERR_LEN, "out of memory");
    for (int j = j0; j < p->n_chunks && !rc; j++)
        for (int q = 0; q < p->n_pieces && !rc; q++)
            rc = pack_chunk(p, j, q, chunk_src(p, probe, j), dst, probe + w_floats, err);
    free(probe);
    free(dst);
    return rc;
}

/* A narrow 3x3 layer over many channels (a coupling network's last layer,
 * 512 -> 12 say) pads its few outputs to a whole block and runs well below
 * the speed of the 1x1 layers. It runs instead as a 1x1 conv to its 9 taps,
 * T[t*cout + c] = sum_ci W[c][ci][t] x[ci], then
 * out[c](y, x) = b[c] + sum_t T[t*cout + c](y + ky - 1, x + kx - 1) (zero
 * outside): the wide 1x1 output pads little and runs on the fast kernels,
 * and the shifted sums cost 1/cin of the work. Sums in a fixed order, as
 * everywhere: the result does not depend on threads or batch. */
#define TAP_MIN_CIN 256
#define TAP_MAX_COUT 64

/* A buffer as big as a layer's weights, mapped rather than malloc'ed: one
 * freed goes back to the system at once, where malloc would keep freed ones
 * between kept ones, and peak memory would grow with the model's depth. */
static float *map_floats(size_t n) {
    void *p = mmap(NULL, n * sizeof(float), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* A copy of plain weights made for plan p stays with it only where they are
 * packed at each use (p NULL: the planning failed); otherwise it goes. */
static void keep_own(conv_plan *p, float *copy, size_t bytes) {
    if (p && p->pack_on_use) {
        p->own_weights = copy;
        p->own_bytes = bytes;
    } else if (copy) {
        munmap(copy, bytes);
    }
}

static int plan_taps(glowrt_session *s, conv_plan *p, const float *weights, int cin, int cout, int h, int w,
                     char *err) {
    char label[80];
    snprintf(label, sizeof label, "conv 3x3 %4d -> %-4d at %dx%d, tap sums", cin, cout, h, w);
    if ((p->label = plan_label(s, label, err)) < 0) return 1;
    p->cin = p->piece = cin;
    p->cout = cout;
    p->k = 3;
    p->n_pieces = 1;
    p->h = h;
    p->w = w;
    p->block = s->block;
    const int nt = 9 * cout;
    const size_t wt_bytes = sizeof(float) * (size_t)nt * (size_t)cin;
    float *wt = map_floats((size_t)nt * (size_t)cin);
    p->tap = calloc(1, sizeof *p->tap);
    p->zero_bias = calloc((size_t)nt, sizeof(float));
    if (!wt || !p->tap || !p->zero_bias) {
        if (wt) munmap(wt, wt_bytes);
        snprintf(err, GLOWRT_ERR_LEN, "out of memory");
        return 1;
    }
    for (int c = 0; c < cout; c++)
        for (int ci = 0; ci < cin; ci++)
            for (int t = 0; t < 9; t++)
                wt[((int64_t)t * cout + c) * cin + ci] = weights[((int64_t)c * cin + ci) * 9 + t];
    const int rc = plan_conv(s, p->tap, wt, cin, nt, h, w, 1, 0, 1, 1, 0, err);
    keep_own(rc ? NULL : p->tap, wt, wt_bytes);
    if (rc) return 1;
    const int64_t need = round_up(nt, s->block) * h * w;
    if (need > s->taps_size) s->taps_size = need;
    return 0;
}

/* Plans conv weights [cout][cin][k][k]: plain ones are used in place from
 * the mapped file (but for glowrt's own convolution on aarch64, which takes
 * them packed, as a blocked one does: conv_plain_packs). Blocked primitives
 * want them packed: once, here, when the packing only reorders them (the
 * session then holds them instead of the file's pages); where it pads them
 * (a channel count that is not a multiple of the block), at each use into
 * scratch, so that memory never grows with
 * the model's depth beyond the weights themselves. Padded input channels pad
 * every chunk; padded output channels only the tail chunk, and only that
 * chunk is then packed at each use. */
static int plan_conv(glowrt_session *s, conv_plan *p, const float *weights, int cin, int cout, int h, int w, int ksz,
                     int relu, int src_blocked, int dst_blocked, int accumulate, char *err) {
    memset(p, 0, sizeof *p);
    p->accumulate = accumulate;
    if (ksz == 3 && !relu && src_blocked && dst_blocked && cin >= TAP_MIN_CIN && cin % s->block == 0 &&
        cout <= TAP_MAX_COUT && !getenv("GLOWRT_NO_TAPS"))
        return plan_taps(s, p, weights, cin, cout, h, w, err);
    p->n_pieces = src_blocked && dst_blocked && !relu && cout <= CONV_CHUNK && cin >= 2 * CONV_PIECE &&
                          cin % CONV_PIECE == 0 && CONV_PIECE % s->block == 0
                      ? cin / CONV_PIECE
                      : 1;
    p->piece = p->n_pieces > 1 ? CONV_PIECE : cin;
    /* A blocked source has whole blocks: the piece's channels padded. */
    const int cin_p = src_blocked ? (int)round_up(p->piece, s->block) : p->piece;
    char label[80];
    snprintf(label, sizeof label, "conv %dx%d %4d -> %-4d at %dx%d, %s", ksz, ksz, cin, cout, h, w,
             src_blocked || dst_blocked ? "blocked" : "plain");
    if ((p->label = plan_label(s, label, err)) < 0) return 1;
    p->cin = cin;
    p->cin_p = cin_p;
    p->copy_weights = cin_p != cin;
    p->cout = cout;
    p->k = ksz;
    p->n_chunks = (cout + CONV_CHUNK - 1) / CONV_CHUNK;
    p->out_floats = round_up(cout, dst_blocked ? s->block : 1) * h * w;
    if (p->n_pieces > 1) {
        if (!(p->zero_bias = calloc((size_t)cout, sizeof(float)))) {
            snprintf(err, GLOWRT_ERR_LEN, "out of memory");
            return 1;
        }
        if (p->n_pieces * p->out_floats > s->pieces_size) s->pieces_size = p->n_pieces * p->out_floats;
    }
    conv_entry e = {cin_p, CONV_CHUNK, h, w, ksz, relu, src_blocked, dst_blocked, accumulate, NULL};
    if (cout >= CONV_CHUNK && get_conv(s, &e, &p->full, err)) return 1;
    e.cout = cout % CONV_CHUNK;
    if (cout % CONV_CHUNK && get_conv(s, &e, &p->tail, err)) return 1;
    if (!src_blocked && !dst_blocked && !conv_plain_packs(p->full ? p->full : p->tail)) return 0;
    const size_t full = p->full ? conv_packed_size(p->full) : 0, tail = p->tail ? conv_packed_size(p->tail) : 0;
    p->packed_stride = full ? full : tail;  /* the tail chunk is the last */
    p->packed_total = (full * (size_t)(cout / CONV_CHUNK) + tail) * (size_t)p->n_pieces;
    p->pack_on_use = full != sizeof(float) * (size_t)CONV_CHUNK * (size_t)cin * (size_t)(ksz * ksz) &&
                     p->packed_total != sizeof(float) * (size_t)cout * (size_t)cin * (size_t)(ksz * ksz);
    /* (cin_p: an input piece's channels; it equals cin when nothing pads, as pack_on_use is set otherwise) */
    p->tail_on_use = !p->pack_on_use && tail &&
                     tail != sizeof(float) * (size_t)(cout % CONV_CHUNK) * (size_t)cin_p * (size_t)(ksz * ksz);
    const size_t pad_floats = (size_t)CONV_CHUNK * (size_t)cin_p * (size_t)(ksz * ksz);
    if (p->copy_weights && pad_floats > s->pad_size) s->pad_size = pad_floats;
    if (p->tail_on_use) {
        /* The tail's pieces may be packed at once by different threads. */
        p->packed_total = full * (size_t)(cout / CONV_CHUNK) * (size_t)p->n_pieces;
        const size_t need = p->packed_stride * (size_t)p->n_pieces;
        if (need > s->pack_size) s->pack_size = need;
        /* The tail keeps a copy of its plain weights (the layer's are
         * released once the other chunks are packed), and its packing
         * primitive is created now, not in a parallel region. */
        const size_t t_floats = (size_t)(cout % CONV_CHUNK) * (size_t)cin * (size_t)(ksz * ksz);
        if (!(p->tail_src = arena_alloc(s, sizeof(float) * t_floats))) {
            snprintf(err, GLOWRT_ERR_LEN, "out of memory");
            return 1;
        }
        memcpy(p->tail_src, weights + (int64_t)(cout / CONV_CHUNK) * CONV_CHUNK * cin * ksz * ksz, sizeof(float) * t_floats);
        if (probe_packing(p, p->n_chunks - 1, pad_floats, err)) return 1;
    }
    if (p->pack_on_use) {
        if (p->packed_total > s->pack_size) s->pack_size = p->packed_total;
        return probe_packing(p, 0, pad_floats, err);
    }
    if (!(p->packed = arena_alloc(s, p->packed_total + 64))) {
        snprintf(err, GLOWRT_ERR_LEN, "out of memory");
        return 1;
    }
    float *pad = p->copy_weights ? calloc(pad_floats, sizeof(float)) : NULL;
    int rc = p->copy_weights && !pad;
    if (rc) snprintf(err, GLOWRT_ERR_LEN, "out of memory");
    const int n_once = p->tail_on_use ? p->n_chunks - 1 : p->n_chunks;
    for (int j = 0; j < n_once && !rc; j++)
        for (int q = 0; q < p->n_pieces && !rc; q++)
            rc = pack_chunk(p, j, q, chunk_src(p, weights, j), p->packed + (size_t)(j * p->n_pieces + q) * p->packed_stride,
                            pad, err);
    free(pad);
    return rc;
}

/* A first layer over channels that are not whole blocks (24 with blocks of
 * 16, say) would pad its blocked input, and so its packed weights, to whole
 * blocks, and be packed at each use. It runs instead as two convolutions
 * into one output: the whole blocks from the blocked input (with the bias,
 * no ReLU), then the last cin % block channels from the plain input, added
 * to it (oneDNN's sum post-op; the ReLU after the sum). Neither pads, both
 * are packed once; the order of the sum is fixed. */
static int plan_split(glowrt_session *s, conv_plan *p, const float *weights, int cin, int cout, int h, int w,
                      int relu, char *err) {
    const int rest = cin % s->block, whole = cin - rest;
    const size_t kk = 9, w_bytes = sizeof(float) * (size_t)cout * (size_t)whole * kk,
                 r_bytes = sizeof(float) * (size_t)cout * (size_t)rest * kk;
    float *ww = map_floats(w_bytes / sizeof(float)), *wr = map_floats(r_bytes / sizeof(float));
    conv_plan *pr = calloc(1, sizeof *pr);
    int rc = !ww || !wr || !pr;
    if (rc) snprintf(err, GLOWRT_ERR_LEN, "out of memory");
    for (int o = 0; o < cout && !rc; o++) {
        memcpy(ww + (size_t)o * whole * kk, weights + (size_t)o * cin * kk, sizeof(float) * whole * kk);
        memcpy(wr + (size_t)o * rest * kk, weights + ((size_t)o * cin + whole) * kk, sizeof(float) * rest * kk);
    }
    if (!rc) rc = plan_conv(s, p, ww, whole, cout, h, w, 3, 0, 1, 1, 0, err);
    if (!rc && (p->tap || p->n_pieces > 1)) {  /* the caller rules these out */
        snprintf(err, GLOWRT_ERR_LEN, "internal: a split layer planned as taps or input pieces");
        rc = 1;
    }
    if (!rc) {
        p->rest = pr;  /* plan_free frees it from here on */
        rc = plan_conv(s, pr, wr, rest, cout, h, w, 3, relu, 0, 1, 1, err);
        if (!rc && !(pr->zero_bias = calloc((size_t)cout, sizeof(float)))) {
            snprintf(err, GLOWRT_ERR_LEN, "out of memory");
            rc = 1;
        }
    } else {
        free(pr);
    }
    keep_own(rc ? NULL : p, ww, w_bytes);
    keep_own(rc ? NULL : pr, wr, r_bytes);
    if (rc) return 1;
    char label[80];
    snprintf(label, sizeof label, "conv 3x3 %4d -> %-4d at %dx%d, blocked %d + plain %d", cin, cout, h, w, whole, rest);
    if ((p->label = plan_label(s, label, err)) < 0) return 1;
    pr->label = p->label;
    return 0;
}

/* True when oneDNN fell back to its reference code for a plan: far slower
 * than the plain GEMM-based path. */
static int plan_is_slow(const conv_plan *p) {
    if (p->tap) return plan_is_slow(p->tap);
    if (p->rest && plan_is_slow(p->rest)) return 1;
    return (p->full && !strncmp(conv_impl(p->full), "ref", 3)) || (p->tail && !strncmp(conv_impl(p->tail), "ref", 3));
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

static void worker_free(worker *w, int threads) {
    free(w->cur);
    free(w->nxt);
    free(w->h1);
    free(w->h2);
    free(w->hout);
    free(w->hblk);
    free(w->xblk);
    free(w->wpack);
    free(w->pieces);
    free(w->taps);
    free(w->wpad);
    free(w->part);
    free(w->prof);
    for (int t = 0; w->scratch && t < threads; t++) free(w->scratch[t]);
    free(w->scratch);
}

/* The working memory a session is about to allocate, checked against a cap
 * before anything big is allocated: GLOWRT_MAX_SESSION_BYTES, or by default
 * the smaller of 64 GiB and the machine's physical memory. */
static int check_working_memory(const glowrt_session *s, int64_t hid_max, int64_t out_max, char *err) {
    const int workers = s->threads < s->max_batch ? s->threads : s->max_batch;
    const double per_worker = 4.0 * (2.0 * (double)s->D + 2.0 * (double)hid_max + 3.0 * (double)out_max +
                                     (double)s->pieces_size + (double)s->taps_size + (double)s->pad_size) +
                              (double)s->pack_size;
    const double need = workers * per_worker + (double)s->threads * ((double)s->scratch_size + 4.0 * s->pad_size);
    double cap = 64.0 * (1 << 30);
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0 && (double)pages * (double)page < cap) cap = (double)pages * (double)page;
    const char *env = getenv("GLOWRT_MAX_SESSION_BYTES");
    if (env && *env) {
        char *end;
        const double v = strtod(env, &end);
        if (*end || !(v > 0)) {
            snprintf(err, GLOWRT_ERR_LEN, "GLOWRT_MAX_SESSION_BYTES='%.40s' is not a positive number of bytes", env);
            return 1;
        }
        cap = v;
    }
    if (need > cap) {
        snprintf(err, GLOWRT_ERR_LEN,
                 "%dx%d images with %d worker(s) need %.1f MiB of working memory, over the cap of %.1f MiB "
                 "(GLOWRT_MAX_SESSION_BYTES)",
                 s->H, s->W, workers, need / (1 << 20), cap / (1 << 20));
        return 1;
    }
    return 0;
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
    if (s->threads > 1024) s->threads = 1024;
    s->D = glowrt_dim(m, height, width);
    /* Below ~0.5 GFLOP an image is done before a thread team pays off. */
    s->split_image = s->threads > 1 && glowrt_flops(m, height, width) >= 5e8;
    s->block = getenv("GLOWRT_PLAIN_CONV") ? 0 : conv_block();
    s->labels = calloc(PROF_FIXED, sizeof *s->labels);
    if (!s->labels) goto oom;
    for (int i = 0; i < PROF_FIXED; i++) snprintf(s->labels[i], sizeof s->labels[i], "%s", PROF_NAMES[i]);
    s->n_labels = PROF_FIXED;
    s->ops = calloc((size_t)m->n_ops, sizeof *s->ops);
    s->workers = calloc((size_t)s->threads, sizeof *s->workers);
    if (!s->ops || !s->workers) goto oom;

    if (!(s->tdata = calloc((size_t)m->n_tensors + 1, sizeof *s->tdata))) goto oom;
    for (int i = 0; i < m->n_tensors; i++) s->tdata[i] = m->tensors[i].data;
    int C = m->in_c, H = height, W = width;
    int64_t eps_off = 0, hid_max = 1, out_max = 1, part_max = 1;
    for (int i = 0; i < m->n_ops; i++) {
        const gt_op *op = &m->ops[i];
        op_state *st = &s->ops[i];
        st->C = C;
        st->H = H;
        st->W = W;
        const int64_t hw = (int64_t)H * W;
        /* the small tensors the run reads: AFFINE's maps; the biases and edge tables of COUPLING and SPLIT */
        static const int small[OP_TOP_PRIOR + 1][6] = {
            [OP_SQUEEZE] = {-1}, [OP_AFFINE] = {0, 1, 2, 3, -1}, [OP_COUPLING] = {1, 2, 4, 6, 7, -1},
            [OP_SPLIT] = {1, 2, -1}, [OP_TOP_PRIOR] = {-1}};
        for (int k = 0; op->code >= 0 && op->code <= OP_TOP_PRIOR && small[op->code][k] >= 0; k++)
            if (keep_small(s, op->t[small[op->code][k]], err)) goto fail;
        switch (op->code) {
        case OP_SQUEEZE:
            C *= 4;
            H /= 2;
            W /= 2;
            break;
        case OP_AFFINE: break;
        case OP_COUPLING: {
            const int hid = (int)op->ints[1], co = (int)op->t[5]->dims[0];
            /* The hidden activations stay in oneDNN's blocked layout, where
             * its direct convolutions are fastest; the network's input and
             * output are plain. With a first-layer edge table (openai) the
             * ReLU must wait for the border: that layer runs without its
             * ReLU, and one pass over each output chunk adds the table at
             * the border and applies it (edge_pass). */
            int blk = s->block && CONV_CHUNK % s->block == 0;
            const arena_mark mark = arena_here(s);
            for (;;) {
                st->blocked = blk;
                /* A narrow input stays plain (oneDNN has direct kernels for
                 * that); a wider one is blocked, its channels padded. */
                const int in_blk = blk && C / 2 >= s->block;
                st->blocked_in = in_blk;
                /* (not where the whole blocks' conv, without a ReLU, would itself
                 * become taps or input pieces: wide inputs to a narrow width) */
                const int split = in_blk && (C / 2) % s->block && !getenv("GLOWRT_NO_SPLIT") &&
                                  !(hid <= CONV_CHUNK && (C / 2) / s->block * s->block >= TAP_MIN_CIN);
                if ((split ? plan_split(s, &st->conv[0], op->t[0]->data, C / 2, hid, H, W, op->t[2] == NULL, err)
                           : plan_conv(s, &st->conv[0], op->t[0]->data, C / 2, hid, H, W, 3, op->t[2] == NULL, in_blk,
                                       blk, 0, err)) ||
                    plan_conv(s, &st->conv[1], op->t[3]->data, hid, hid, H, W, 1, 1, blk, blk, 0, err) ||
                    plan_conv(s, &st->conv[2], op->t[5]->data, hid, co, H, W, 3, 0, blk, blk, 0, err))
                    goto fail;
                if (!blk || !(plan_is_slow(&st->conv[0]) || plan_is_slow(&st->conv[1]) || plan_is_slow(&st->conv[2])))
                    break;
                for (int j = 0; j < 3; j++) plan_free(&st->conv[j]);
                arena_back(s, mark);  /* the blocked plans' packed weights */
                blk = 0;
            }
            if (blk && op->t[2]) {
                conv_plan *p = &st->conv[0];
                p->edge = T(s, op->t[2]);
                p->h = H;
                p->w = W;
                p->block = s->block;
            }
            for (int j = 0; j < 3; j++)
                if (st->conv[j].packed || st->conv[j].tap || st->conv[j].rest)
                    model_release(m, op->t[j == 0 ? 0 : j == 1 ? 3 : 5]);
            if (round_up(hid, s->block) * hw > hid_max) hid_max = round_up(hid, s->block) * hw;
            if (round_up(co, s->block) * hw > out_max) out_max = round_up(co, s->block) * hw;
            if (C > part_max) part_max = C;
            break;
        }
        case OP_SPLIT:
            if (plan_conv(s, &st->conv[0], op->t[0]->data, C / 2, C, H, W, 3, 0, 0, 0, 0, err)) goto fail;
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
    if (check_working_memory(s, hid_max, out_max, err)) goto fail;
    /* Only as many workers as images can be in flight at once. */
    for (int t = 0; t < s->threads && t < s->max_batch; t++) {
        worker *w = &s->workers[t];
        w->k = s->k;
        w->cur = alloc_floats(s->D);
        w->nxt = alloc_floats(s->D);
        w->h1 = alloc_floats(hid_max);
        w->h2 = alloc_floats(hid_max);
        w->hout = alloc_floats(out_max);
        w->hblk = alloc_floats(out_max);
        w->xblk = alloc_floats(out_max);
        w->pieces = alloc_floats(s->pieces_size);
        w->taps = alloc_floats(s->taps_size);
        w->wpack = alloc_floats((int64_t)(s->pack_size / sizeof(float)) + 16);
        /* Worker 0 runs one image with all threads: a pad copy per thread. */
        w->pad_stride = s->pad_size;
        w->wpad = alloc_floats((int64_t)s->pad_size * (t == 0 ? s->threads : 1));
        w->part = calloc((size_t)part_max, sizeof(double));
        w->scratch = calloc((size_t)s->threads, sizeof(void *));
        if (!w->cur || !w->nxt || !w->h1 || !w->h2 || !w->hout || !w->hblk || !w->xblk || !w->pieces || !w->taps || !w->wpack || !w->wpad || !w->part || !w->scratch) goto oom;
        for (int u = 0; u < s->threads; u++) {
            /* Worker 0 runs one image with all threads; the others run alone. */
            if (t > 0 && u != t) continue;
            if (s->scratch_size && posix_memalign(&w->scratch[u], 64, s->scratch_size)) goto oom;
        }
    }
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
    for (int i = 0; s->ops && i < s->m->n_ops; i++)
        for (int j = 0; j < 3; j++) plan_free(&s->ops[i].conv[j]);
    for (int i = 0; i < s->n_convs; i++) conv_free(s->convs[i].conv);
    free(s->convs);
    free(s->ops);
    for (int t = 0; s->workers && t < s->threads; t++) worker_free(&s->workers[t], s->threads);
    free(s->workers);
    free(s->labels);
    free(s->tdata);
    free(s->top);
    free(s->zeros);
    arena_free(s);
    free(s);
}

static void swap(worker *w) {
    float *t = w->cur;
    w->cur = w->nxt;
    w->nxt = t;
}

static double sum_parts(const double *part, int n) {
    double acc = 0;
    for (int i = 0; i < n; i++) acc += part[i];
    return acc;
}

/* Profiling: time a block into the worker's counter (the worker's own
 * thread measures; with images in parallel the counters add thread time). */
#define PROF_BEGIN(w) const double prof_t0_ = (w)->prof ? omp_get_wtime() : 0
#define PROF_END(w, id) \
    do {                \
        if ((w)->prof) (w)->prof[id] += omp_get_wtime() - prof_t0_; \
    } while (0)

/* Element-wise work below this many elements runs on one thread: a thread
 * team costs more than it saves there (and far more on a busy machine). */
#define PAR_MIN_ELEMS 65536


/* dst[c] = bias[c] + the sum over taps t = 3*ky + kx of T[t*cout + c]
 * shifted by (ky - 1, kx - 1), zero outside; T and dst blocked
 * [ceil(n/B)][H*W][B], dst's padding channels zeroed. Taps in a fixed order.
 * An output block's channels of one tap are T channels t*cout + c0 ...: at
 * most two runs of lanes of consecutive T blocks, each added contiguously. */
static void sum_taps(const float *T, const float *bias, float *dst, int cout, int H, int W, int B) {
    const int64_t hw = (int64_t)H * W;
    for (int c0 = 0; c0 < cout; c0 += B) {
        float *d = dst + (int64_t)(c0 / B) * hw * B;
        const int nv = cout - c0 < B ? cout - c0 : B;  /* valid lanes of this block */
        for (int64_t i = 0; i < hw; i++)
            for (int l = 0; l < B; l++) d[i * B + l] = l < nv ? bias[c0 + l] : 0.0f;
        for (int t = 0; t < 9; t++) {
            const int dy = t / 3 - 1, dx = t % 3 - 1, s0 = t * cout + c0, off = s0 % B;
            /* lanes [0, n1) from block s0/B at lane off, lanes [n1, nv) from the next at lane 0 */
            const int n1 = B - off < nv ? B - off : nv;
            const float *src1 = T + (int64_t)(s0 / B) * hw * B + off, *src2 = src1 + hw * B - off;
            for (int y = dy < 0 ? 1 : 0; y < (dy > 0 ? H - 1 : H); y++)
                for (int x = dx < 0 ? 1 : 0; x < (dx > 0 ? W - 1 : W); x++) {
                    float *dp = d + ((int64_t)y * W + x) * B;
                    const int64_t sp = ((int64_t)(y + dy) * W + (x + dx)) * B;
                    for (int l = 0; l < n1; l++) dp[l] += src1[sp + l];
                    for (int l = n1; l < nv; l++) dp[l] += src2[sp + l - n1];
                }
        }
    }
}

/* Item it (output chunk j, input piece q) of conv plan p, on thread tid. */
static void run_item(worker *w, const conv_plan *p, int it, int tid, int team, const float *src, const float *weights,
                     const float *bias, float *dst, int64_t hw) {
    const int j = it / p->n_pieces, q = it % p->n_pieces;
    gt_conv *c = (j + 1) * CONV_CHUNK <= p->cout ? p->full : p->tail;
    char err[GLOWRT_ERR_LEN];
    const int64_t o = (int64_t)j * CONV_CHUNK;
    const float *wj = weights ? weights + o * (int64_t)p->cin * p->k * p->k : NULL;
    const int on_use = p->pack_on_use || (p->tail_on_use && j == p->n_chunks - 1);
    if (on_use) {
        /* Items are distinct regions of the worker's buffer (a tail packed
         * alone: its pieces'); the pad copy is only needed by one item at a
         * time per thread. */
        float *pad = w->wpad + (team ? (size_t)tid * w->pad_stride : 0);
        char *at = w->wpack + (size_t)(p->pack_on_use ? it : q) * p->packed_stride;
        if (pack_chunk(p, j, q, chunk_src(p, weights, j), at, pad, err)) {
#pragma omp critical(glowrt_err)
            {
                w->failed = 1;
                memcpy(w->err, err, sizeof err);
            }
            return;
        }
        wj = (const float *)at;
    } else if (p->packed) {
        wj = (const float *)(p->packed + (size_t)it * p->packed_stride);
    }
    /* A piece reads its channels of the blocked source (whole blocks) and
     * writes its own partial output; the bias goes in once. */
    const float *src_q = src + (int64_t)q * p->piece * hw;
    float *dst_j = p->n_pieces > 1 ? w->pieces + q * p->out_floats : dst + o * hw;
    const float *bias_q = q == 0 ? bias + o : p->zero_bias;
    if (conv_run(c, tid, src_q, wj, bias_q, dst_j, w->scratch[tid], err)) {
#pragma omp critical(glowrt_err)
        {
            w->failed = 1;
            memcpy(w->err, err, sizeof err);
        }
    }
}

/* A blocked first layer with an edge table (p->edge), which ran without its
 * ReLU: output chunk j gets the table at the border, then the ReLU, on
 * whichever thread, once the chunk is complete. Element-wise: the bits do
 * not depend on where or when it runs. */
static void edge_pass(const worker *w, const conv_plan *p, float *dst, int j) {
    const int o = j * CONV_CHUNK, n = p->cout - o < CONV_CHUNK ? p->cout - o : CONV_CHUNK;
    /* o is a multiple of the block: its block starts at o * H * W */
    w->k->edge_bias_blocked(dst + (int64_t)o * p->h * p->w, p->edge + o, p->cout, n, p->h, p->w, p->block, 1);
}

/* The items of conv plan p that fall to thread tid of a team of nt (items
 * tid, tid + nt, ...; whatever ran where, each item computes the same), or
 * all of them (nt = 1) on the worker's own thread tid. A split layer
 * (plan_split) adds its rest's chunk j, read from src_rest, right after its
 * own chunk j, on the same thread; then, with an edge table and no input
 * pieces (each item is a whole chunk), the edge pass of the chunk. */
static void conv_items(worker *w, const conv_plan *p, int tid, int nt, int team, const float *src,
                       const float *src_rest, const float *weights, const float *bias, float *dst, int64_t hw) {
    if (p->own_weights) weights = p->own_weights;
    const int items = p->n_chunks * p->n_pieces;
    for (int it = team ? tid : 0; it < items; it += nt) {
        run_item(w, p, it, tid, team, src, weights, bias, dst, hw);
        /* (the rest has the same chunks and no pieces; what it packs at use
         * is its tail, after this thread's own tail, in the same place) */
        if (p->rest)
            run_item(w, p->rest, it, tid, team, src_rest, p->rest->own_weights, p->rest->zero_bias, dst, hw);
        if (p->edge && p->n_pieces == 1) edge_pass(w, p, dst, it);
    }
}

/* The items of a tap layer are its 1x1 conv's, into w->taps. */
static const conv_plan *items_of(const conv_plan *p) { return p->tap ? p->tap : p; }

/* After all items, on one thread: input pieces summed in piece order, then a
 * tap layer's shifted sums; then, for either, the edge pass (the chunks are
 * complete only now). */
static void conv_finish(worker *w, const conv_plan *p, const float *bias, float *dst) {
    const conv_plan *c = items_of(p);
    float *out = p->tap ? w->taps : dst;
    if (c->n_pieces > 1)
        for (int64_t i = 0; i < c->out_floats; i++) {
            float acc = w->pieces[i];
            for (int q = 1; q < c->n_pieces; q++) acc += w->pieces[q * c->out_floats + i];
            out[i] = acc;
        }
    if (p->tap) {
        PROF_BEGIN(w);
        sum_taps(w->taps, bias, dst, p->cout, p->h, p->w, p->block);
        PROF_END(w, p->label);
    }
    if (p->edge && (p->tap || c->n_pieces > 1)) {
        PROF_BEGIN(w);
        for (int j = 0; j * CONV_CHUNK < p->cout; j++) edge_pass(w, p, dst, j);  /* (a tap plan has no n_chunks) */
        PROF_END(w, p->label);
    }
}

/* Arguments of a conv's items: a tap layer's go to its 1x1 conv, whose
 * weights are packed or its own copy (own_weights). */
#define ITEM_ARGS(p, weights, bias, dst) \
    (p)->tap ? NULL : (weights), (p)->tap ? (p)->zero_bias : (bias), (p)->tap ? w->taps : (dst)

/* dst = conv(src); with par, the items go to a thread team. */
static void run_conv(worker *w, int wid, int par, const conv_plan *p, const float *src, const float *src_rest,
                     const float *weights, const float *bias, float *dst, int64_t hw) {
    const conv_plan *c = items_of(p);
    const int team = par && c->n_chunks * c->n_pieces > 1;
    {
        PROF_BEGIN(w);
#pragma omp parallel if (team)
        {
            const int tid = team ? omp_get_thread_num() : wid, nt = team ? omp_get_num_threads() : 1;
            conv_items(w, c, tid, nt, team, src, src_rest, ITEM_ARGS(p, weights, bias, dst), hw);
        }
        PROF_END(w, c->label);
    }
    conv_finish(w, p, bias, dst);
}

/* [ceil(C/B)][hw][B] -> [C][hw] */
static void unblock(const float *src, float *dst, int C, int64_t hw, int B) {
    for (int c = 0; c < C; c++) {
        const float *p = src + (int64_t)(c / B) * hw * B + c % B;
        float *q = dst + (int64_t)c * hw;
        for (int64_t i = 0; i < hw; i++) q[i] = p[i * B];
    }
}

/* [C][hw] -> [ceil(C/B)][hw][B], the padding channels zero. */
static void block(const float *src, float *dst, int C, int64_t hw, int B) {
    const int Cp = (int)round_up(C, B);
    for (int c = 0; c < Cp; c++) {
        float *q = dst + (int64_t)(c / B) * hw * B + c % B;
        if (c < C) {
            const float *p = src + (int64_t)c * hw;
            for (int64_t i = 0; i < hw; i++) q[i * B] = p[i];
        } else {
            for (int64_t i = 0; i < hw; i++) q[i * B] = 0;
        }
    }
}

/* h = NN(xa) of a coupling op into w->hout. */
static void coupling_net(glowrt_session *s, worker *w, int wid, int par, const gt_op *op, const op_state *st,
                         const float *xa) {
    const int64_t hw = (int64_t)st->H * st->W;
    const conv_plan *c0 = &st->conv[0], *c1 = &st->conv[1], *c2 = &st->conv[2];
    const float *xplain = xa;
    if (st->blocked_in) {  /* the whole blocks (all channels, but for a split layer's rest) */
        PROF_BEGIN(w);
        block(xa, w->xblk, c0->cin, hw, s->block);
        xa = w->xblk;
        PROF_END(w, PROF_LAYOUT);
    }
    /* a split layer's rest: the channels after the whole blocks, plain (see plan_split) */
    const float *xrest = c0->rest ? xplain + (int64_t)c0->cin * hw : NULL;
    float *out = st->blocked ? w->hblk : w->hout;
    if (par && (!op->t[2] || st->blocked) && !c0->tap && !c1->tap && c0->n_pieces == 1 && c1->n_pieces == 1) {
        /* One image among the threads: the three layers in one parallel
         * region, a barrier between them, so that the threads are not put
         * to sleep and woken at each layer. (A first layer's edge table is
         * added by each thread to its own chunks, before the barrier.) */
        double t0 = 0, t1 = 0;
#pragma omp parallel num_threads(s->threads)
        {
            const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
            const int timing = tid == 0 && w->prof;
            if (timing) t0 = omp_get_wtime();
            conv_items(w, c0, tid, nt, 1, xa, xrest, op->t[0]->data, T(s, op->t[1]), w->h1, hw);
#pragma omp barrier
            if (timing) {
                t1 = omp_get_wtime();
                w->prof[c0->label] += t1 - t0;
                t0 = t1;
            }
            conv_items(w, c1, tid, nt, 1, w->h1, NULL, op->t[3]->data, T(s, op->t[4]), w->h2, hw);
#pragma omp barrier
            if (timing) {
                t1 = omp_get_wtime();
                w->prof[c1->label] += t1 - t0;
                t0 = t1;
            }
            conv_items(w, items_of(c2), tid, nt, 1, w->h2, NULL, ITEM_ARGS(c2, op->t[5]->data, T(s, op->t[6]), out),
                       hw);
        }
        if (w->prof) w->prof[items_of(c2)->label] += omp_get_wtime() - t0;
        conv_finish(w, c2, T(s, op->t[6]), out);
    } else {
        run_conv(w, wid, par, c0, xa, xrest, op->t[0]->data, T(s, op->t[1]), w->h1, hw);
        if (op->t[2] && !st->blocked) s->k->edge_bias(w->h1, T(s, op->t[2]), c0->cout, st->H, st->W, 1);
        run_conv(w, wid, par, c1, w->h1, NULL, op->t[3]->data, T(s, op->t[4]), w->h2, hw);
        run_conv(w, wid, par, c2, w->h2, NULL, op->t[5]->data, T(s, op->t[6]), out, hw);
    }
    if (st->blocked) {
        PROF_BEGIN(w);
        unblock(w->hblk, w->hout, c2->cout, hw, s->block);
        PROF_END(w, PROF_LAYOUT);
    }
    if (op->t[7]) s->k->edge_bias(w->hout, T(s, op->t[7]), c2->cout, st->H, st->W, 0);
}

/* The split prior's mean / log_sd from z1 into w->hout. */
static void split_prior(glowrt_session *s, worker *w, int wid, int par, const gt_op *op, const op_state *st,
                        const float *z1) {
    run_conv(w, wid, par, &st->conv[0], z1, NULL, op->t[0]->data, T(s, op->t[1]), w->hout, (int64_t)st->H * st->W);
    if (op->t[2]) s->k->edge_bias(w->hout, T(s, op->t[2]), st->C, st->H, st->W, 0);
}

/* log p(z) of half channels of z under prior p [2*half][hw] (or mean = log_sd
 * = zeros when p is NULL), writing eps when asked. */
static double prior_logp(glowrt_session *s, worker *w, int par, int halves, int half, int64_t hw, const float *z,
                         const float *p, float *eps) {
    const gt_kernels *k = s->k;
    PROF_BEGIN(w);
#pragma omp parallel for schedule(static) if (par && (int64_t)half * hw >= PAR_MIN_ELEMS)
    for (int kk = 0; kk < half; kk++) {
        const float *mean = p ? p + prior_mean_ch(halves, half, kk) * hw : s->zeros;
        const float *lsd = p ? p + prior_logsd_ch(halves, half, kk) * hw : s->zeros;
        w->part[kk] = k->gauss_logp(z + kk * hw, mean, lsd, eps ? eps + kk * hw : NULL, hw);
    }
    PROF_END(w, PROF_PRIOR);
    return sum_parts(w->part, half);
}

static void prior_sample(glowrt_session *s, worker *w, int par, int halves, int half, int64_t hw, float *z, const float *p,
                         const float *eps) {
    const gt_kernels *k = s->k;
    PROF_BEGIN(w);
#pragma omp parallel for schedule(static) if (par && (int64_t)half * hw >= PAR_MIN_ELEMS)
    for (int kk = 0; kk < half; kk++) {
        const float *mean = p ? p + prior_mean_ch(halves, half, kk) * hw : s->zeros;
        const float *lsd = p ? p + prior_logsd_ch(halves, half, kk) * hw : s->zeros;
        k->gauss_from_eps(z + kk * hw, mean, lsd, eps + kk * hw, hw);
    }
    PROF_END(w, PROF_PRIOR);
}

/* One image forward: x [D] -> log_p, and eps [D] when asked. par: spread
 * the work of this one image over the thread team. */
static void forward_one(glowrt_session *s, worker *w, int wid, int par, const float *x, double *log_p, float *eps) {
    const glowrt_model *m = s->m;
    const gt_kernels *k = s->k;
    double logdet = 0, logp = 0;
    memcpy(w->cur, x, (size_t)s->D * sizeof(float));
    for (int i = 0; i < m->n_ops && !w->failed; i++) {
        const gt_op *op = &m->ops[i];
        const op_state *st = &s->ops[i];
        const int C = st->C, half = C / 2;
        const int64_t hw = (int64_t)st->H * st->W;
        switch (op->code) {
        case OP_SQUEEZE:
            {
                PROF_BEGIN(w);
                k->squeeze(w->cur, w->nxt, C, st->H, st->W);
                PROF_END(w, PROF_SQUEEZE);
            }
            swap(w);
            break;
        case OP_AFFINE:
            {
                PROF_BEGIN(w);
                k->affine(T(s, op->t[0]), T(s, op->t[1]), C, hw, w->cur, w->nxt);
                PROF_END(w, PROF_AFFINE);
            }
            swap(w);
            logdet += (double)hw * op->f64s[0];
            break;
        case OP_COUPLING: {
            float *xb = w->cur + half * hw;
            coupling_net(s, w, wid, par, op, st, w->cur);
            const int halves = (int)op->ints[3];
            {
                PROF_BEGIN(w);
                if (op->ints[2] == COUPLING_AFFINE) {
#pragma omp parallel for schedule(static) if (par && (int64_t)half * hw >= PAR_MIN_ELEMS)
                    for (int kk = 0; kk < half; kk++)
                        w->part[kk] = k->coupling_fwd(xb + kk * hw, w->hout + coupling_scale_ch(halves, half, kk) * hw,
                                                      w->hout + coupling_shift_ch(halves, half, kk) * hw, hw);
                    logdet += sum_parts(w->part, half);
                } else {
                    k->add(xb, w->hout, half * hw, 1.0f);
                }
                PROF_END(w, PROF_COUPLING);
            }
            break;
        }
        case OP_SPLIT:
            split_prior(s, w, wid, par, op, st, w->cur);
            logp += prior_logp(s, w, par, (int)op->ints[1], half, hw, w->cur + half * hw, w->hout,
                               eps ? eps + st->eps_off : NULL);
            break;
        case OP_TOP_PRIOR:
            logp += prior_logp(s, w, par, (int)op->ints[1], C, hw, w->cur, op->ints[2] ? s->top : NULL,
                               eps ? eps + st->eps_off : NULL);
            break;
        }
    }
    *log_p = logp + logdet;
}

/* One image reverse: eps [D] -> x [D] (x may alias eps). */
static void reverse_one(glowrt_session *s, worker *w, int wid, int par, const float *eps, float *x) {
    const glowrt_model *m = s->m;
    const gt_kernels *k = s->k;
    for (int i = m->n_ops - 1; i >= 0 && !w->failed; i--) {
        const gt_op *op = &m->ops[i];
        const op_state *st = &s->ops[i];
        const int C = st->C, half = C / 2;
        const int64_t hw = (int64_t)st->H * st->W;
        switch (op->code) {
        case OP_TOP_PRIOR:
            prior_sample(s, w, par, (int)op->ints[1], C, hw, w->cur, op->ints[2] ? s->top : NULL, eps + st->eps_off);
            break;
        case OP_SPLIT:
            split_prior(s, w, wid, par, op, st, w->cur);
            prior_sample(s, w, par, (int)op->ints[1], half, hw, w->cur + half * hw, w->hout, eps + st->eps_off);
            break;
        case OP_COUPLING: {
            float *xb = w->cur + half * hw;
            coupling_net(s, w, wid, par, op, st, w->cur);
            const int halves = (int)op->ints[3];
            {
                PROF_BEGIN(w);
                if (op->ints[2] == COUPLING_AFFINE) {
#pragma omp parallel for schedule(static) if (par && (int64_t)half * hw >= PAR_MIN_ELEMS)
                    for (int kk = 0; kk < half; kk++)
                        k->coupling_rev(xb + kk * hw, w->hout + coupling_scale_ch(halves, half, kk) * hw,
                                        w->hout + coupling_shift_ch(halves, half, kk) * hw, hw);
                } else {
                    k->add(xb, w->hout, half * hw, -1.0f);
                }
                PROF_END(w, PROF_COUPLING);
            }
            break;
        }
        case OP_AFFINE:
            {
                PROF_BEGIN(w);
                k->affine(T(s, op->t[2]), T(s, op->t[3]), C, hw, w->cur, w->nxt);
                PROF_END(w, PROF_AFFINE);
            }
            swap(w);
            break;
        case OP_SQUEEZE:
            {
                PROF_BEGIN(w);
                k->unsqueeze(w->cur, w->nxt, C, st->H, st->W);
                PROF_END(w, PROF_SQUEEZE);
            }
            swap(w);
            break;
        }
    }
    memcpy(x, w->cur, (size_t)s->D * sizeof(float));
}

typedef enum { JOB_FORWARD, JOB_REVERSE, JOB_SAMPLE } job_kind;

typedef struct {
    job_kind kind;
    const float *in;     /* x (forward) or eps (reverse) */
    float *out;          /* eps (forward, may be NULL) or x */
    double *log_p;
    uint64_t seed, first;
    float temp;
} job;

static void run_image(glowrt_session *s, const job *j, int i, int wid, int par) {
    worker *w = &s->workers[wid];
    const int64_t off = (int64_t)i * s->D;
    if (j->kind == JOB_FORWARD) {
        double lp = 0;
        forward_one(s, w, wid, par, j->in + off, &lp, j->out ? j->out + off : NULL);
        if (j->log_p) j->log_p[i] = lp;
    } else if (j->kind == JOB_REVERSE) {
        reverse_one(s, w, wid, par, j->in + off, j->out + off);
    } else {
        /* The noise goes through x's slot for this image, then decodes in place. */
        float *xi = j->out + off;
        const int64_t chunk = 4096, n_chunks = (s->D + chunk - 1) / chunk;
        PROF_BEGIN(w);
#pragma omp parallel for schedule(static) if (par && s->D >= PAR_MIN_ELEMS)
        for (int64_t c = 0; c < n_chunks; c++) {
            const int64_t j0 = c * chunk, len = s->D - j0 < chunk ? s->D - j0 : chunk;
            s->k->normal_noise(j->seed, j->first + (uint64_t)i, j0, len, j->temp, xi + j0);
        }
        PROF_END(w, PROF_NOISE);
        reverse_one(s, w, wid, par, xi, xi);
    }
}

/* Images in parallel, one per thread, while there are at least as many
 * images left as threads; the rest one at a time with all threads on each.
 * Either way each image goes through exactly the same arithmetic. */
static int run_job(glowrt_session *s, const job *j, int n, char *err) {
    if (n < 0 || n > s->max_batch) {
        snprintf(err, GLOWRT_ERR_LEN, "%d images given to a session for batches of at most %d", n, s->max_batch);
        return 1;
    }
    const int T = s->threads;
    int done = 0;
    if (T > 1 && n >= T) {
        done = n - n % T;
#pragma omp parallel for num_threads(T) schedule(static, 1)
        for (int i = 0; i < done; i++) run_image(s, j, i, omp_get_thread_num(), 0);
    }
    omp_set_num_threads(T);
    for (int i = done; i < n; i++) run_image(s, j, i, 0, s->split_image);
    for (int t = 0; t < T && t < s->max_batch; t++)
        if (s->workers[t].failed) {
            snprintf(err, GLOWRT_ERR_LEN, "%s", s->workers[t].err);
            s->workers[t].failed = 0;
            return 1;
        }
    return 0;
}

/* The first image of y [n][D] with a value that is not finite, or -1; its
 * largest finite |value| of src [n][src_d] into *max_abs. A float32
 * overflow must not pass for a result. */
static int first_nonfinite(const float *y, int n, int64_t D, const float *src, int64_t src_d, double *max_abs) {
    for (int i = 0; i < n; i++)
        for (int64_t k = 0; k < D; k++)
            if (!isfinite(y[(int64_t)i * D + k])) {
                double m = 0;
                for (int64_t q = 0; src && q < src_d; q++) {
                    const double v = fabs((double)src[(int64_t)i * src_d + q]);
                    if (v > m && isfinite(v)) m = v;
                }
                *max_abs = m;
                return i;
            }
    return -1;
}

int glowrt_encode(glowrt_session *s, const float *x, int n, float *eps, double *log_p, char *err) {
    const job j = {JOB_FORWARD, x, eps, log_p, 0, 0, 0};
    if (run_job(s, &j, n, err)) return 1;
    double m = 0;
    const int bad = eps ? first_nonfinite(eps, n, s->D, x, s->D, &m) : -1;
    if (bad >= 0) {
        snprintf(err, GLOWRT_ERR_LEN,
                 "image %d of the batch: its latents overflow float32 (input values up to |x| = %g; "
                 "images in model space lie in [-0.5, 0.5])", bad, m);
        return 1;
    }
    return 0;
}

int glowrt_log_prob(glowrt_session *s, const float *x, int n, double *log_p, char *err) {
    return glowrt_encode(s, x, n, NULL, log_p, err);
}

int glowrt_decode(glowrt_session *s, const float *eps, int n, float *x, char *err) {
    const job j = {JOB_REVERSE, eps, x, NULL, 0, 0, 0};
    if (run_job(s, &j, n, err)) return 1;
    double m = 0;
    const int bad = first_nonfinite(x, n, s->D, eps, s->D, &m);
    if (bad >= 0) {
        snprintf(err, GLOWRT_ERR_LEN,
                 "image %d of the batch: decoding overflows float32 (latents up to |eps| = %g, "
                 "far from the prior's N(0, 1))", bad, m);
        return 1;
    }
    return 0;
}

int glowrt_sample(glowrt_session *s, uint64_t seed, uint64_t first_index, int n, float temp, float *x, char *err) {
    const job j = {JOB_SAMPLE, NULL, x, NULL, seed, first_index, temp};
    if (run_job(s, &j, n, err)) return 1;
    double m = 0;
    const int bad = first_nonfinite(x, n, s->D, NULL, 0, &m);
    if (bad >= 0) {
        snprintf(err, GLOWRT_ERR_LEN, "sample %llu: decoding overflows float32 at temperature %g",
                 (unsigned long long)(first_index + (uint64_t)bad), (double)temp);
        return 1;
    }
    return 0;
}

int glowrt_session_profile(glowrt_session *s, int on) {
    for (int t = 0; t < s->threads && t < s->max_batch; t++) {
        worker *w = &s->workers[t];
        free(w->prof);
        w->prof = NULL;
        if (on && !(w->prof = calloc((size_t)s->n_labels, sizeof(double)))) return 1;
    }
    return 0;
}

void glowrt_session_profile_print(const glowrt_session *s, void *file) {
    FILE *f = file;
    double *sum = calloc((size_t)s->n_labels, sizeof(double)), total = 0;
    int *order = calloc((size_t)s->n_labels, sizeof(int));
    if (!sum || !order || !s->workers[0].prof) {
        free(sum);
        free(order);
        return;
    }
    for (int t = 0; t < s->threads && t < s->max_batch; t++)
        for (int i = 0; i < s->n_labels; i++) sum[i] += s->workers[t].prof[i];
    for (int i = 0; i < s->n_labels; i++) {
        total += sum[i];
        order[i] = i;
    }
    for (int i = 1; i < s->n_labels; i++)  /* insertion sort, largest first */
        for (int j = i; j > 0 && sum[order[j]] > sum[order[j - 1]]; j--) {
            const int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    fprintf(f, "%10s %6s  %s\n", "ms", "share", "op");
    for (int i = 0; i < s->n_labels; i++)
        if (sum[order[i]] > 0)
            fprintf(f, "%10.2f %5.1f%%  %s\n", 1e3 * sum[order[i]], 100 * sum[order[i]] / total, s->labels[order[i]]);
    fprintf(f, "%10.2f %5.1f%%  total (thread time when images run in parallel)\n", 1e3 * total, 100.0);
    free(sum);
    free(order);
}
