// layers_pool.c — 2x2 stride-2 max-pool, forward and backward (layers.h).
//
// The forward runs over the C channels of one window (NHWC: each of the
// window's four pixels is C contiguous floats) with selects instead of
// branches, so gcc vectorizes it; it gives the bits of the scalar
// wr_pool_forward_ref (same comparisons, same first-maximum rule).
#include <string.h>

#include "layers_internal.h"
#include "wr_common.h"

// y = max over each 2x2 window, arg = the input offset (within the sample) of
// the first maximum in the order (0,0), (0,1), (1,0), (1,1); NaN never wins
// over an earlier value.
void wr_pool_forward_ref(wr_layer *l, const float *x, int B) {
    const int C = l->C, W = l->W;
    for (int b = 0; b < B; b++) {
        const float *xb = x + (size_t)b * l->in_size;
        float *yb = l->y + (size_t)b * l->out_size;
        int32_t *ab = l->arg + (size_t)b * l->out_size;
        for (int oh = 0; oh < l->OH; oh++)
            for (int ow = 0; ow < l->OW; ow++)
                for (int c = 0; c < C; c++) {
                    int32_t o00 = (int32_t)(((2 * oh) * W + 2 * ow) * C + c);
                    int32_t offs[4] = {o00, o00 + C, o00 + W * C, o00 + W * C + C};
                    int32_t best = offs[0];
                    float v = xb[best];
                    for (int i = 1; i < 4; i++)
                        if (xb[offs[i]] > v) {
                            v = xb[offs[i]];
                            best = offs[i];
                        }
                    size_t o = ((size_t)oh * l->OW + ow) * C + c;
                    yb[o] = v;
                    ab[o] = best;
                }
    }
}

// One window row of C channels: the same comparisons as the reference, as selects.
WR_VEC static void pool_window(const float *restrict p00, const float *restrict p01,
                               const float *restrict p10, const float *restrict p11, float *restrict y,
                               int32_t *restrict a, int32_t o00, int32_t C, int32_t WC) {
    for (int32_t c = 0; c < C; c++) {
        float v = p00[c];
        int32_t best = o00 + c;
        best = p01[c] > v ? o00 + C + c : best;
        v = p01[c] > v ? p01[c] : v;
        best = p10[c] > v ? o00 + WC + c : best;
        v = p10[c] > v ? p10[c] : v;
        best = p11[c] > v ? o00 + WC + C + c : best;
        v = p11[c] > v ? p11[c] : v;
        y[c] = v;
        a[c] = best;
    }
}

// Images [b0, b1) of the forward.
static void pool_forward_range(wr_layer *l, const float *x, int b0, int b1) {
    const int C = l->C, W = l->W;
    for (int b = b0; b < b1; b++) {
        const float *xb = x + (size_t)b * l->in_size;
        for (int oh = 0; oh < l->OH; oh++)
            for (int ow = 0; ow < l->OW; ow++) {
                int32_t o00 = (int32_t)(((2 * oh) * W + 2 * ow) * C);
                size_t o = (size_t)b * l->out_size + ((size_t)oh * l->OW + ow) * C;
                pool_window(xb + o00, xb + o00 + C, xb + o00 + W * C, xb + o00 + W * C + C, l->y + o,
                            l->arg + o, o00, C, W * C);
            }
    }
}

// One thread's images: [b0, b1) of the batch; src is x (forward) or dy.
typedef struct {
    wr_layer *l;
    const float *src;
    int b0, b1;
} pool_job;

static void pool_backward_range(wr_layer *l, const float *dy, int b0, int b1);

static void *pool_forward_job(void *p) {
    const pool_job *j = p;
    pool_forward_range(j->l, j->src, j->b0, j->b1);
    return NULL;
}

static void *pool_backward_job(void *p) {
    const pool_job *j = p;
    pool_backward_range(j->l, j->src, j->b0, j->b1);
    return NULL;
}

// The layer's threads take equal ranges of images: each output is one
// thread's, as with one thread.
static void pool_threads(wr_layer *l, void *(*fn)(void *), const float *src, int B) {
    const int T = WR_MAX(1, WR_MIN(l->threads, B));
    pool_job jobs[WR_LAYER_MAX_THREADS];
    for (int t = 0; t < T; t++) jobs[t] = (pool_job){l, src, B * t / T, B * (t + 1) / T};
    wr_layer_run_jobs(fn, jobs, sizeof *jobs, T);
}

void wr_pool_forward(wr_layer *l, const float *x, int B) { pool_threads(l, pool_forward_job, x, B); }

// Images [b0, b1) of dx = dy routed to each window's arg (0 elsewhere).
static void pool_backward_range(wr_layer *l, const float *dy, int b0, int b1) {
    memset(l->dx + (size_t)b0 * l->in_size, 0, sizeof(float) * (size_t)(b1 - b0) * l->in_size);
    for (int b = b0; b < b1; b++) {
        float *xb = l->dx + (size_t)b * l->in_size;
        const float *db = dy + (size_t)b * l->out_size;
        const int32_t *ab = l->arg + (size_t)b * l->out_size;
        for (int o = 0; o < l->out_size; o++) xb[ab[o]] += db[o];
    }
}

// dx = dy routed to each window's arg (0 elsewhere).
void wr_pool_backward_ref(wr_layer *l, const float *dy, int B) { pool_backward_range(l, dy, 0, B); }

// The scatter above is the fastest here: a select version writing each
// window's four inputs measured slower (0.8 vs 0.66 ms for the cnn's first
// pool at B = 128), memset being cheap. On the layer's threads by images.
void wr_pool_backward(wr_layer *l, const float *dy, int B) { pool_threads(l, pool_backward_job, dy, B); }
