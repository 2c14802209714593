// model.c — mlp, cnn and synthetic:D over one flat parameter vector (model.h).
#include "model.h"

#include <cblas.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "hfp8.h"
#include "layers.h"
#include "rng.h"
#include "synth.h"
#include "wr_common.h"

#define MAX_LAYERS 8
#define SCALE_INIT 32768.0f
#define SCALE_MAX 16777216.0f
#define SCALE_GROW_AFTER 1000
#define SYNTH_TABLE WR_SYNTH_TABLE
#define SYNTH_PAD WR_SYNTH_PAD

enum { KIND_MLP = 0, KIND_CNN = 1, KIND_SYNTH = 2 };

struct wr_model {
    int kind;
    wr_model_opts o;
    size_t d;
    float *x, *g;
    int nl;
    wr_layer L[MAX_LAYERS];
    float *dlogits;
    float scale;
    int dynamic;
    int clean;
    uint64_t step;
    int rank;
    float *noise;  // synthetic: SYNTH_TABLE noise values (+ SYNTH_PAD wrap copy)
};

// Parses a spec: kind and, for synthetic, D. Errors name the spec.
static int parse_spec(const char *spec, int *kind, uint64_t *D, char *err) {
    if (!spec) spec = "";
    if (strcmp(spec, "mlp") == 0) {
        *kind = KIND_MLP;
        return WR_OK;
    }
    if (strcmp(spec, "cnn") == 0) {
        *kind = KIND_CNN;
        return WR_OK;
    }
    if (strncmp(spec, "synthetic:", 10) == 0) {
        const char *p = spec + 10;
        uint64_t v = 0;
        int nd = 0;
        for (; *p >= '0' && *p <= '9'; p++, nd++) {
            v = v * 10 + (uint64_t)(*p - '0');
            if (v > WR_MAX_SYNTH_PARAMS) break;
        }
        if (nd == 0 || *p != '\0' || v < 1 || v > WR_MAX_SYNTH_PARAMS)
            return wr_err(err, WR_ERR, "model spec '%s': synthetic:D needs D a decimal integer in [1, %llu]",
                          spec, (unsigned long long)WR_MAX_SYNTH_PARAMS);
        *kind = KIND_SYNTH;
        *D = v;
        return WR_OK;
    }
    return wr_err(err, WR_ERR, "model spec '%s' is not one of mlp, cnn, synthetic:D", spec);
}

// The layer stack of a data model (fp8 decided per layer by the caller).
typedef struct {
    int kind, a, b, c, d, k, pad, relu;
} layer_spec;

static const layer_spec MLP[] = {
    {WR_LAYER_LINEAR, 784, 512, 0, 0, 0, 0, 1},
    {WR_LAYER_LINEAR, 512, 256, 0, 0, 0, 0, 1},
    {WR_LAYER_LINEAR, 256, 10, 0, 0, 0, 0, 0},
};
// conv: a=H b=W c=C d=O
static const layer_spec CNN[] = {
    {WR_LAYER_CONV, 28, 28, 1, 16, 5, 2, 1},     {WR_LAYER_POOL, 28, 28, 16, 0, 0, 0, 0},
    {WR_LAYER_CONV, 14, 14, 16, 32, 5, 2, 1},    {WR_LAYER_POOL, 14, 14, 32, 0, 0, 0, 0},
    {WR_LAYER_LINEAR, 1568, 128, 0, 0, 0, 0, 1}, {WR_LAYER_LINEAR, 128, 10, 0, 0, 0, 0, 0},
};

static size_t spec_params(const layer_spec *s, int n) {
    size_t d = 0;
    for (int i = 0; i < n; i++) {
        if (s[i].kind == WR_LAYER_LINEAR) d += (size_t)s[i].a * s[i].b + s[i].b;
        if (s[i].kind == WR_LAYER_CONV) d += (size_t)s[i].k * s[i].k * s[i].c * s[i].d + s[i].d;
    }
    return d;
}

size_t wr_model_num_params_for_spec(const char *spec, char *err) {
    int kind;
    uint64_t D = 0;
    if (parse_spec(spec, &kind, &D, err) != WR_OK) return 0;
    if (kind == KIND_MLP) return spec_params(MLP, 3);
    if (kind == KIND_CNN) return spec_params(CNN, 6);
    return (size_t)D;
}

// Kaiming-uniform weights, zero biases; layer li's stream is (seed, 0x1A7E0000 + li).
static void init_layer(wr_layer *l, int li, uint64_t seed) {
    int fan_in = l->kind == WR_LAYER_LINEAR ? l->in_size : l->k * l->k * l->C;
    float bound = sqrtf(6.0f / (float)fan_in);
    wr_rng_key key = wr_rng_key_make(seed, 0x1A7E0000u + (uint64_t)li, 0);
    for (size_t i = 0; i < l->n_w; i++) {
        float u = (float)(wr_rng_u32(key, (uint32_t)i) >> 8) * (1.0f / 16777216.0f);
        l->w[i] = bound * (2.0f * u - 1.0f);
    }
    memset(l->b, 0, l->n_b * sizeof(float));
}

static void synth_init(float *x, size_t d, uint64_t seed) {
    wr_rng_key key = wr_rng_key_make(seed, 0x5E000000u, 0);
    for (size_t j = 0; j < d; j++) {
        float u = (float)(wr_rng_u32(key, (uint32_t)j) >> 8) * (1.0f / 16777216.0f);
        x[j] = 0.01f * (2.0f * u - 1.0f);
    }
}

int wr_model_create(const char *spec, const wr_model_opts *o, wr_model **out, char *err) {
    *out = NULL;
    int kind;
    uint64_t D = 0;
    if (parse_spec(spec, &kind, &D, err) != WR_OK) return WR_ERR;
    if (!o) return wr_err(err, WR_ERR, "model '%s': no options", spec);
    if (o->max_batch < 1 || o->max_batch > (1 << 20))
        return wr_err(err, WR_ERR, "model '%s': max_batch %d outside [1, 2^20]", spec, o->max_batch);
    if (!(o->loss_scale >= 0.0f) || !isfinite(o->loss_scale))
        return wr_err(err, WR_ERR, "model '%s': loss_scale %g must be 0 (dynamic) or positive", spec,
                      (double)o->loss_scale);
    if (o->threads < 0) return wr_err(err, WR_ERR, "model '%s': threads %d < 0", spec, o->threads);
    wr_model *m = wr_calloc(1, sizeof *m);
    m->kind = kind;
    m->o = *o;
    // The step's threads are the layers' own (bit-identical to one thread);
    // OpenBLAS stays at one: its workers spin between calls and took the cores
    // from the layers' threads (mlp at 2 threads: 8 ms per step instead of 4).
    if (o->threads > 0) openblas_set_num_threads(1);
    m->dynamic = o->hfp8 && o->loss_scale == 0.0f;
    m->scale = !o->hfp8 ? 1.0f : (o->loss_scale > 0.0f ? o->loss_scale : SCALE_INIT);
    if (kind == KIND_SYNTH) {
        // x and g are touched in full: refuse what cannot fit in RAM rather than
        // let the OOM killer end the process later.
        long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
        double need = 2.0 * 4.0 * (double)D, have = (double)pages * (double)psz;
        if (pages > 0 && psz > 0 && need > 0.9 * have) {
            wr_model_free(m);
            return wr_err(err, WR_ERR, "model '%s': x and g need %.1f GiB, more than this machine's %.1f GiB",
                          spec, need / 1073741824.0, have / 1073741824.0);
        }
        m->d = (size_t)D;
        m->x = wr_try_alloc_huge(m->d * sizeof(float));
        m->g = wr_try_alloc_huge(m->d * sizeof(float));
        if (!m->x || !m->g) {
            wr_model_free(m);
            return wr_err(err, WR_ERR, "model '%s': cannot allocate 2 x %zu floats", spec, (size_t)D);
        }
        synth_init(m->x, m->d, o->seed);
        m->noise = wr_alloc_vec((SYNTH_TABLE + SYNTH_PAD) * sizeof(float));
        wr_rng_key nk = wr_rng_key_make(o->seed, 0x5E000001u, 0);
        for (uint32_t i = 0; i < SYNTH_TABLE; i++)
            m->noise[i] = (float)(wr_rng_u32(nk, i) >> 8) * (2.0f / 16777216.0f) - 1.0f;
        memcpy(m->noise + SYNTH_TABLE, m->noise, SYNTH_PAD * sizeof(float));
        *out = m;
        return WR_OK;
    }
    const layer_spec *s = kind == KIND_MLP ? MLP : CNN;
    int n = kind == KIND_MLP ? 3 : 6;
    m->nl = n;
    m->d = spec_params(s, n);
    m->x = wr_alloc_vec(m->d * sizeof(float));
    m->g = wr_alloc_vec(m->d * sizeof(float));
    m->dlogits = wr_alloc_vec((size_t)o->max_batch * WR_NUM_CLASSES * sizeof(float));
    size_t off = 0;
    int first = -1, last = -1, li = 0;
    for (int i = 0; i < n; i++)
        if (s[i].kind != WR_LAYER_POOL) {
            if (first < 0) first = i;
            last = i;
        }
    for (int i = 0; i < n; i++) {
        int fp8 = o->hfp8 && (o->fp8_first_last || (i != first && i != last));
        int need_dx = i > 0;
        wr_layer *l = &m->L[i];
        if (s[i].kind == WR_LAYER_LINEAR)
            wr_layer_linear_init(l, s[i].a, s[i].b, s[i].relu, fp8, need_dx, o->max_batch);
        else if (s[i].kind == WR_LAYER_CONV)
            wr_layer_conv_init(l, s[i].a, s[i].b, s[i].c, s[i].d, s[i].k, s[i].pad, s[i].relu, fp8, need_dx,
                               o->max_batch);
        else
            wr_layer_pool_init(l, s[i].a, s[i].b, s[i].c, need_dx, o->max_batch);
        wr_layer_set_threads(l, o->threads > 0 ? o->threads : 1);
        size_t used = wr_layer_bind(l, m->x + off, m->g + off);
        if (used) init_layer(l, li++, o->seed);
        off += used;
    }
    WR_CHECK(off == m->d);
    WR_CHECK(m->L[n - 1].out_size == WR_NUM_CLASSES);
    *out = m;
    return WR_OK;
}

void wr_model_free(wr_model *m) {
    if (!m) return;
    for (int i = 0; i < m->nl; i++) wr_layer_free(&m->L[i]);
    free(m->x);
    free(m->g);
    free(m->dlogits);
    free(m->noise);
    free(m);
}

size_t wr_model_num_params(const wr_model *m) { return m->d; }
float *wr_model_params(wr_model *m) { return m->x; }
float *wr_model_grads(wr_model *m) { return m->g; }
float wr_model_loss_scale(const wr_model *m) { return m->scale; }

void wr_model_scaler_state(const wr_model *m, float *scale, int *clean) {
    *scale = m->scale;
    *clean = m->clean;
}

void wr_model_set_scaler_state(wr_model *m, float scale, int clean) {
    if (!m->dynamic || !(scale > 0.0f) || !isfinite(scale) || clean < 0) return;
    m->scale = scale;
    m->clean = clean;
}

void wr_model_reset_loss_scale(wr_model *m) {
    m->scale = !m->o.hfp8 ? 1.0f : (m->o.loss_scale > 0.0f ? m->o.loss_scale : SCALE_INIT);
    m->clean = 0;
}
void wr_model_set_rank(wr_model *m, int rank) { m->rank = rank; }
void wr_model_set_step(wr_model *m, uint64_t step) { m->step = step; }
const char *wr_model_kind(const wr_model *m) {
    return m->kind == KIND_MLP ? "mlp" : m->kind == KIND_CNN ? "cnn" : "synthetic";
}

// g_j = 0.01 x_j + 0.01 u_j. The noise u comes from a table of SYNTH_TABLE
// values uniform in [-1, 1) (drawn once from the seed, L2-resident), read at
// j + o, o a 32-bit offset drawn from (seed, rank, step): one pass over x and g
// with no hashing per element (synth.h: vector kernel, streaming stores).
// Returns mean(g^2).
static float synth_step(wr_model *m) {
    wr_rng_key key = wr_rng_key_make(m->o.seed ^ 0x5E5E5E5Eull, 0x5E000000u + (uint64_t)m->rank, m->step);
    const uint32_t o = wr_rng_u32(key, 0) & (SYNTH_TABLE - 1);
    double total = wr_synth_grad(m->x, m->noise, o, m->d, m->g);
    return (float)(total / (double)m->d);
}

static void forward(wr_model *m, const float *x, int B) {
    const float *in = x;
    for (int i = 0; i < m->nl; i++) {
        wr_layer_forward(&m->L[i], in, B);
        in = m->L[i].y;
    }
}

int wr_model_step(wr_model *m, const float *x_batch, const uint8_t *labels, int B, float *loss, int *correct,
                  int *overflow, char *err) {
    if (B < 1 || B > m->o.max_batch)
        return wr_err(err, WR_ERR, "model step: batch %d outside [1, max_batch %d]", B, m->o.max_batch);
    float l = 0.0f;
    int hits = 0, ovf = 0;
    if (m->kind == KIND_SYNTH) {
        l = synth_step(m);
    } else {
        if (!x_batch || !labels) return wr_err(err, WR_ERR, "model step: no batch data");
        for (int b = 0; b < B; b++)
            if (labels[b] >= WR_NUM_CLASSES)
                return wr_err(err, WR_ERR, "model step: label %u of sample %d is >= %d", labels[b], b,
                              WR_NUM_CLASSES);
        forward(m, x_batch, B);
        const float S = m->scale;
        l = wr_softmax_xent(m->L[m->nl - 1].y, labels, B, WR_NUM_CLASSES, S, m->dlogits, &hits);
        const float *dy = m->dlogits;
        for (int i = m->nl - 1; i >= 0; i--) {
            if (wr_layer_backward(&m->L[i], dy, B, S)) {
                ovf = 1;
                break;
            }
            dy = m->L[i].dx;
        }
        if (!ovf && !(wr_fp8_amax(m->g, m->d) <= FLT_MAX)) ovf = 1;
    }
    m->step++;
    if (ovf) {
        memset(m->g, 0, m->d * sizeof(float));
        if (m->dynamic) m->scale = WR_MAX(1.0f, m->scale * 0.5f);
        m->clean = 0;
    } else if (m->dynamic && ++m->clean >= SCALE_GROW_AFTER) {
        m->scale = WR_MIN(SCALE_MAX, m->scale * 2.0f);
        m->clean = 0;
    }
    if (loss) *loss = l;
    if (correct) *correct = hits;
    if (overflow) *overflow = ovf;
    return WR_OK;
}

double wr_model_evaluate(wr_model *m, const wr_dataset *test) {
    if (m->kind == KIND_SYNTH || !test || test->n < 1) return 0.0;
    long hits = 0;
    for (int off = 0; off < test->n; off += m->o.max_batch) {
        int B = WR_MIN(m->o.max_batch, test->n - off);
        forward(m, test->images + (size_t)off * test->dim, B);
        int h = 0;
        wr_softmax_xent(m->L[m->nl - 1].y, test->labels + off, B, WR_NUM_CLASSES, 1.0f, NULL, &h);
        hits += h;
    }
    return (double)hits / (double)test->n;
}
