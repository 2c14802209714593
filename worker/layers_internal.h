// layers_internal.h — what layers.c and layers_conv.c share (not a public API).
#ifndef WR_LAYERS_INTERNAL_H
#define WR_LAYERS_INTERNAL_H

#include <stddef.h>

#include "layers.h"
#include "layers_sparse.h"

// A linear layer's sparse GEMMs (layers_sparse.h; layers_linear.c): used for
// each GEMM whose output width N passes wr_spmm_ok (fp32 layers, and HFP8
// layers with fp8_cache on, on the decoded caches); dX stays sgemm's.
//   forward  y  = alpha X W       lists of X's rows        (N = out)
//   dW       dW = alpha X^T dZ    lists of X^T's rows      (N = out)
typedef struct wr_linear_sparse {
    wr_sprows x, xt;
    float *xtd;  // X^T dense (in x max_batch): dW's lists come from its rows
} wr_linear_sparse;
// The lists for a linear layer with out a multiple of 16 on an AVX2 or
// AVX-512 CPU (wr_cpu_level() at init), else NULL (the layer runs sgemm).
wr_linear_sparse *wr_linear_sparse_new(const wr_layer *l);
void wr_linear_sparse_free(wr_linear_sparse *sp);
// The forward product into l->y (bias and ReLU are the caller's): 1 if the
// sparse path took it, 0 if the caller must run its sgemm. x: fp32 values.
int wr_linear_sparse_fwd(wr_layer *l, const float *x, const float *w, float alpha, int B);
// dW into l->dw (alpha_w X^T dZ): 1 if taken, else 0 (the caller's sgemm).
int wr_linear_sparse_dw(wr_layer *l, const float *x, const float *dz, float alpha_w, int B);

// An HFP8 linear layer's dX = alpha dZq Wq^T (decoded values, B x in) with
// BF16 dot products (layers_bf16.h), rows split over the layer's threads.
// The caller checks l->dz2 and wr_bf16_nt_ok(in, out).
void wr_linear_bf16_dx(wr_layer *l, const float *dzq, const float *wq, float alpha, int B);

// A parallel region: job t (t < T <= WR_LAYER_MAX_THREADS) of `jobs` (each
// `size` bytes) on thread t, job 0 on the caller (layers_conv.c).
void wr_layer_run_jobs(void *(*fn)(void *), void *jobs, size_t size, int T);

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
// 1 where the conv's dW is the direct kernel's (few taps, thin shapes: with
// many taps it passes over each chunk K/KB times and sgemm is faster), else
// im2col + sgemm in WR_CONV_DW_GROUPS fixed groups of images.
int wr_conv_dw_direct(const wr_layer *l);
#define WR_CONV_DW_GROUPS 4
// Row groups of a large dz's ReLU mask and bias gradient (layers.c).
#define WR_COLSUM_GROUPS 4
_Static_assert(WR_COLSUM_GROUPS >= WR_LAYER_MAX_THREADS, "a row group for every thread");
_Static_assert(WR_CONV_DW_GROUPS >= WR_LAYER_MAX_THREADS, "a dW group for every thread");
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
