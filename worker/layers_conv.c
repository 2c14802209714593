// layers_conv.c — conv2d forward and backward as im2col + sgemm in chunks of
// images (layers.h).
//
// A whole-batch column buffer is B*OH*OW x k*k*C floats (40 MB for the cnn's
// second conv at B = 128): writing it, reading it for the GEMMs and folding
// it back with col2im ran at memory speed and cost more than the GEMMs.
// Here a chunk of l->conv_chunk images is im2col'ed into a buffer that stays
// in L2, multiplied at once, and (backward) the same buffer takes the dX
// GEMM's output, which col2im folds into the chunk's own dx images. Bias and
// ReLU are applied to the chunk's output rows while they are in cache.
// Layers with 16 or 32 output channels (both of the cnn's) run the forward as
// the direct conv of layers_thin.h on a zero-padded copy of the chunk (no
// im2col), and the dW product too when the taps are few (the first conv).
#include <cblas.h>
#include <string.h>

#include "layers_internal.h"
#include "layers_thin.h"
#include "wr_common.h"

// col[(b,oh,ow), (kh,kw,c)] = x[b, oh+kh-pad, ow+kw-pad, c] (0 outside) for
// the n images of x. In NHWC the k*C values of one kernel row are one
// contiguous span of x (clipped at the borders), so each (row, kh) is one
// short copy.
WR_VEC void wr_conv_im2col(const wr_layer *l, const float *restrict x, float *restrict col, int n) {
    const int C = l->C, k = l->k, pad = l->pad, kC = k * C;
    const size_t K = (size_t)k * kC;
    float *restrict dst = col;
    for (int b = 0; b < n; b++) {
        const float *xb = x + (size_t)b * l->in_size;
        for (int oh = 0; oh < l->OH; oh++)
            for (int ow = 0; ow < l->OW; ow++, dst += K) {
                int kw0 = WR_MAX(0, pad - ow), kw1 = WR_MIN(k, l->W + pad - ow);
                for (int kh = 0; kh < k; kh++) {
                    float *restrict d = dst + (size_t)kh * kC;
                    int ih = oh + kh - pad;
                    if (ih < 0 || ih >= l->H || kw1 <= kw0) {
                        for (int i = 0; i < kC; i++) d[i] = 0.0f;
                        continue;
                    }
                    const float *restrict s = xb + ((size_t)ih * l->W + (ow + kw0 - pad)) * C;
                    for (int i = 0; i < kw0 * C; i++) d[i] = 0.0f;
                    int m = (kw1 - kw0) * C;
                    for (int i = 0; i < m; i++) d[kw0 * C + i] = s[i];
                    for (int i = kw1 * C; i < kC; i++) d[i] = 0.0f;
                }
            }
    }
}

// dx = the sum of the col entries that read each input element (the adjoint
// of im2col) for n images; dx is overwritten.
WR_VEC void wr_conv_col2im(const wr_layer *l, const float *restrict dcol, float *restrict dx, int n) {
    const int C = l->C, k = l->k, pad = l->pad, kC = k * C;
    const size_t K = (size_t)k * kC;
    memset(dx, 0, sizeof(float) * (size_t)n * l->in_size);
    const float *restrict src = dcol;
    for (int b = 0; b < n; b++) {
        float *xb = dx + (size_t)b * l->in_size;
        for (int oh = 0; oh < l->OH; oh++)
            for (int ow = 0; ow < l->OW; ow++, src += K) {
                int kw0 = WR_MAX(0, pad - ow), kw1 = WR_MIN(k, l->W + pad - ow);
                if (kw1 <= kw0) continue;
                int m = (kw1 - kw0) * C;
                for (int kh = 0; kh < k; kh++) {
                    int ih = oh + kh - pad;
                    if (ih < 0 || ih >= l->H) continue;
                    const float *restrict s = src + (size_t)kh * kC + kw0 * C;
                    float *restrict d = xb + ((size_t)ih * l->W + (ow + kw0 - pad)) * C;
                    for (int i = 0; i < m; i++) d[i] = d[i] + s[i];
                }
            }
    }
}

// Copies n images of x into the interiors of l->xpad (the borders are 0).
static void conv_pad(const wr_layer *l, const float *x, int n) {
    const int Hp = l->H + 2 * l->pad, Wp = l->W + 2 * l->pad, C = l->C;
    for (int b = 0; b < n; b++)
        for (int h = 0; h < l->H; h++)
            memcpy(l->xpad + (((size_t)b * Hp + h + l->pad) * Wp + l->pad) * C,
                   x + ((size_t)b * l->H + h) * l->W * C, sizeof(float) * (size_t)l->W * C);
}

static wr_dconv_geom conv_geom(const wr_layer *l, int n) {
    wr_dconv_geom g = {n,    l->OH,  l->OW, l->H + 2 * l->pad, l->W + 2 * l->pad, l->C, l->k * l->k * l->C,
                       l->O, l->offs};
    return g;
}

void wr_conv_forward(wr_layer *l, const float *x, const float *w, float alpha, int B) {
    const int K = l->k * l->k * l->C, O = l->O, per = l->OH * l->OW, direct = l->xpad && wr_thin_ok(O, K);
    for (int b0 = 0; b0 < B; b0 += l->conv_chunk) {
        int n = WR_MIN(l->conv_chunk, B - b0), rows = n * per;
        float *y = l->y + (size_t)b0 * l->out_size;
        if (direct) {
            wr_dconv_geom g = conv_geom(l, n);
            conv_pad(l, x + (size_t)b0 * l->in_size, n);
            wr_dconv_fwd(&g, l->xpad, w, alpha, y);
        } else {
            wr_conv_im2col(l, x + (size_t)b0 * l->in_size, l->col, n);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, O, K, alpha, l->col, K, w, O, 0.0f,
                        y, O);
        }
        wr_layer_bias_act(y, l->b, (size_t)rows, O, l->relu);
    }
}

void wr_conv_backward(wr_layer *l, const float *x, const float *dz, const float *w, float alpha_w,
                      float alpha_x, int B) {
    const int K = l->k * l->k * l->C, O = l->O, per = l->OH * l->OW;
    // With many taps the direct dW passes over the chunk K/KB times: sgemm is faster there.
    const int direct = l->xpad && wr_thin_ok(O, K) && K <= WR_DCONV_DW_MAX_K;
    for (int b0 = 0; b0 < B; b0 += l->conv_chunk) {
        int n = WR_MIN(l->conv_chunk, B - b0), rows = n * per;
        const float *dzb = dz + (size_t)b0 * l->out_size;
        // dW (+)= alpha_w col^T dZ: chunks accumulate in order (beta 1 after the first)
        if (direct) {
            wr_dconv_geom g = conv_geom(l, n);
            conv_pad(l, x + (size_t)b0 * l->in_size, n);
            wr_dconv_dw(&g, l->xpad, dzb, alpha_w, b0 ? 1.0f : 0.0f, l->dw);
        } else {
            wr_conv_im2col(l, x + (size_t)b0 * l->in_size, l->col, n);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, O, rows, alpha_w, l->col, K, dzb, O,
                        b0 ? 1.0f : 0.0f, l->dw, O);
        }
        if (!l->need_dx) continue;
        // dcol = alpha_x dZ W^T, into col (dW has read it), folded into dx
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, K, O, alpha_x, dzb, O, w, O, 0.0f, l->col,
                    K);
        wr_conv_col2im(l, l->col, l->dx + (size_t)b0 * l->in_size, n);
    }
}
