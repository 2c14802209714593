// layers_pool.c — 2x2 stride-2 max-pool, forward and backward (layers.h).
//
// The vector versions run over the C channels of one window (NHWC: each of
// the window's four pixels is C contiguous floats) with selects instead of
// branches, so gcc vectorizes them; they give the bits of the scalar *_ref
// versions (same comparisons, same first-maximum rule, same sums).
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

void wr_pool_forward(wr_layer *l, const float *x, int B) {
    const int C = l->C, W = l->W;
    for (int b = 0; b < B; b++) {
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

// dx = dy routed to each window's arg (0 elsewhere).
void wr_pool_backward_ref(wr_layer *l, const float *dy, int B) {
    memset(l->dx, 0, sizeof(float) * (size_t)B * l->in_size);
    for (int b = 0; b < B; b++) {
        float *xb = l->dx + (size_t)b * l->in_size;
        const float *db = dy + (size_t)b * l->out_size;
        const int32_t *ab = l->arg + (size_t)b * l->out_size;
        for (int o = 0; o < l->out_size; o++) xb[ab[o]] += db[o];
    }
}

// Windows do not overlap: each input element gets dy or 0 by a select. The
// selected value is 0.0f + d, the reference's sum into zeroed dx (-0.0 -> +0.0).
WR_VEC static void unpool_window(float *restrict p00, float *restrict p01, float *restrict p10,
                                 float *restrict p11, const float *restrict d, const int32_t *restrict a,
                                 int32_t o00, int32_t C, int32_t WC) {
    for (int32_t c = 0; c < C; c++) {
        float g = 0.0f + d[c];
        int32_t k = a[c] - o00 - c;  // 0, C, WC or WC + C
        p00[c] = k == 0 ? g : 0.0f;
        p01[c] = k == C ? g : 0.0f;
        p10[c] = k == WC ? g : 0.0f;
        p11[c] = k == WC + C ? g : 0.0f;
    }
}

void wr_pool_backward(wr_layer *l, const float *dy, int B) {
    const int C = l->C, W = l->W;
    // odd H or W: the last row / column is in no window
    if ((l->H | l->W) & 1) memset(l->dx, 0, sizeof(float) * (size_t)B * l->in_size);
    for (int b = 0; b < B; b++) {
        float *xb = l->dx + (size_t)b * l->in_size;
        for (int oh = 0; oh < l->OH; oh++)
            for (int ow = 0; ow < l->OW; ow++) {
                int32_t o00 = (int32_t)(((2 * oh) * W + 2 * ow) * C);
                size_t o = (size_t)b * l->out_size + ((size_t)oh * l->OW + ow) * C;
                unpool_window(xb + o00, xb + o00 + C, xb + o00 + W * C, xb + o00 + W * C + C, dy + o,
                              l->arg + o, o00, C, W * C);
            }
    }
}
