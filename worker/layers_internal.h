// layers_internal.h — what layers.c and layers_conv.c share (not a public API).
#ifndef WR_LAYERS_INTERNAL_H
#define WR_LAYERS_INTERNAL_H

#include <stddef.h>

#include "layers.h"

// The element loops of the layers are plain C written so that gcc vectorizes
// them (restrict, no branches); -O2's default "very cheap" cost model refuses
// loops that need a remainder, hence the attribute. Vectorized or not, every
// element gets the same fp32 operations, so results do not depend on it.
// (clang has no such attribute and vectorizes these at -O2 anyway.)
#if defined(__clang__)
#define WR_VEC
#else
#define WR_VEC __attribute__((optimize("tree-vectorize", "vect-cost-model=dynamic")))
#endif

// y[r, j] = y[r, j] + b[j] for rows x cols, then ReLU if relu.
void wr_layer_bias_act(float *y, const float *b, size_t rows, int cols, int relu);

// Conv (layers_conv.c). im2col of n images of x into col ((n*OH*OW) x
// k*k*C, rows (b,oh,ow), columns (kh,kw,c), 0 outside the image); col2im is
// its adjoint, overwriting the n images of dx.
void wr_conv_im2col(const wr_layer *l, const float *x, float *col, int n);
void wr_conv_col2im(const wr_layer *l, const float *dcol, float *dx, int n);
// Allocates the direct conv's buffers (layers_thin.h) where the shape allows
// it: xpad/offs for O = 16 or 32, and dzpad/offs_t/wt for dX where C = 16 or 32.
void wr_conv_direct_init(wr_layer *l);
// l->y = act(alpha x * w + b) for B images, l->conv_chunk images per im2col +
// sgemm. x, w: fp32 values (an fp8 layer passes its decoded codes).
void wr_conv_forward(wr_layer *l, const float *x, const float *w, float alpha, int B);
// The same for an fp8 layer's decoded values (all exact in bf16): the BF16
// kernel where the CPU has it (and the backward's direct dX likewise).
void wr_conv_forward_fp8(wr_layer *l, const float *xq, const float *wq, float alpha, int B);
void wr_conv_backward_fp8(wr_layer *l, const float *xq, const float *dzq, const float *wq, float alpha_w,
                          float alpha_x, int B);
// l->dw = alpha_w col(x)^T dz (summed over chunks in order) and, if
// l->need_dx, l->dx = col2im(alpha_x dz w^T). l->db is the caller's.
void wr_conv_backward(wr_layer *l, const float *x, const float *dz, const float *w, float alpha_w,
                      float alpha_x, int B);

// Max-pool 2x2 stride 2 (layers_pool.c): l->y, l->arg from x; l->dx from dy
// and l->arg. wr_pool_forward is vectorized and gives the bits of its *_ref;
// wr_pool_backward is its *_ref (the scatter is the fastest).
void wr_pool_forward(wr_layer *l, const float *x, int B);
void wr_pool_forward_ref(wr_layer *l, const float *x, int B);
void wr_pool_backward(wr_layer *l, const float *dy, int B);
void wr_pool_backward_ref(wr_layer *l, const float *dy, int B);

#endif
