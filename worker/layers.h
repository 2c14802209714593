// layers.h — the layers of the worker's models, fp32 and HFP8 (ALGORITHMS.md 2.2).
//
// Layout: a batch is B samples, each `in_size` floats; images and feature maps
// are NHWC (so "flatten" is a no-op view: a (B, H, W, C) map is the (B, H*W*C)
// matrix the next linear layer reads). Weights of a linear layer are (in, out)
// row-major, of a conv layer (k*k*C, O) with rows ordered (kh, kw, c).
//
// Kinds: linear (+ optional fused ReLU), conv2d k x k stride 1 zero padding
// `pad` (in chunks of images: im2col + sgemm, or the direct conv of
// layers_thin.h for 16 / 32 channels; layers_conv.c; + optional fused ReLU),
// max-pool 2x2 stride 2 (layers_pool.c). Softmax + cross-entropy and a
// stand-alone ReLU are functions.
//
// HFP8 (fp8 = 1): a linear layer's GEMMs run on uint8 FP8 codes with fp32
// accumulation and output: forward and dW as the sparse GEMM of
// layers_sparse.h on the decoded caches where it takes the shape (out a
// multiple of 16, AVX2), else and for dX a common/fp8_gemm.h
// wr_fp8_gemm(_cached) call (fp32 layers likewise: sparse GEMM or sgemm);
// a conv layer decodes its codes once per step
// (wr_fp8_cache_get) and runs its fp32 conv on the decoded values. A forward GEMM input t (weights once per forward,
// activations) is multiplied by a power-of-two s_t = 2^k chosen from its amax
// so that amax*s_t lies in [8, 16) (E4M3-b11's max is 30 and its min subnormal
// 2^-13, so unscaled weights of ~1e-2 would sit near the bottom of the range),
// then encoded to E4M3-b11 (RNE, saturating): codes xc, wc. The backward error dZ (already
// multiplied by the loss scale S) is encoded to E5M2 unscaled: codes dzc. The
// scales are folded into alpha: Y = 1/(s_x s_w) Xq Wq; dW = 1/(S s_x) Xq^T dZq;
// dX = 1/s_w dZq Wq^T, the transposes through the GEMM's trans flags. Every
// FP8 value and every product of two is exact in fp32, so this equals sgemm of
// the fake-quantized values (the emulation the layers used before) up to fp32
// summation order. Each operand's codes are decoded once per step: the layer
// owns one wr_fp8_cache per operand (X, W, dZ), keyed by a generation bumped
// at every re-encode (fwd_gen by the forward, bwd_gen by the backward), so W's
// forward decoding serves dX, X's serves dW, dZ's dW decoding serves dX. Set
// fp8_cache = 0 after init to decode in every call instead (no sparse GEMMs
// then: the same bits where the layer has none; a conv layer always decodes
// into its caches).
// Biases, their gradients (from the unrounded dZ), ReLU masks (from the fp32
// pre-activation), pooling and the loss are fp32.
//
// Buffers: everything a layer needs for batches up to max_batch is allocated by
// its init; forward/backward never allocate. Not thread-safe per layer.
#ifndef WR_LAYERS_H
#define WR_LAYERS_H

#include <stddef.h>
#include <stdint.h>

#include "fp8_gemm.h"

enum wr_layer_kind { WR_LAYER_LINEAR = 0, WR_LAYER_CONV = 1, WR_LAYER_POOL = 2 };

typedef struct {
    int kind;
    int in_size, out_size;  // floats per sample
    int H, W, C;            // conv/pool input geometry (NHWC)
    int O, k, pad;          // conv: output channels, kernel size, padding
    int OH, OW;             // conv/pool output geometry
    int relu;               // fused ReLU on the output
    int fp8;                // HFP8 GEMMs
    int need_dx;            // backward computes dL/dx (0 for a first layer)
    int max_batch;
    size_t n_w, n_b;  // parameter counts (0 for pool)
    float *w, *b;     // parameters (bound by wr_layer_bind; not owned)
    float *dw, *db;   // their gradients (bound; not owned)
    const float *x;   // input of the last forward (the caller keeps it alive)
    float *y;         // (max_batch, out_size) output, owned
    float *dx;        // (max_batch, in_size) backward output (need_dx), owned
    // work buffers (owned; NULL where unused)
    float *col;      // conv: im2col of conv_chunk images, then the dX GEMM's output
                     // (WR_LAYER_MAX_THREADS of col_n floats: the grouped dW's threads)
    size_t col_n;    // conv: floats of one col
    float *dw_part;  // conv, im2col + sgemm dW: WR_CONV_DW_GROUPS partial sums of dW
    float *db_part;  // conv, linear: WR_COLSUM_GROUPS partial sums of db (a large dz's row groups)
    int conv_chunk;  // conv: images per im2col + GEMM (init: col ~1 MiB; tests may lower it)
    float *xpad;     // conv, thin shapes: conv_chunk zero-padded input images (direct conv)
    int *offs;       // conv, thin shapes: tap offsets into xpad (layers_thin.h)
    float *dzpad;    // conv, direct dX: conv_chunk zero-padded dz images
    int *offs_t;     // conv, direct dX: tap offsets into dzpad
    float *wt;       // conv, direct dX: the flipped, transposed weights (k k O x C)
    uint16_t *xpad16, *dzpad16, *w16, *wt16;  // fp8 conv: bf16 copies for the BF16 kernel
    uint32_t *dz2, *w2, *w2t;  // fp8 linear, BF16 dX (layers_bf16.h): dZq's, Wq's and packed Wq's bf16 pairs
    size_t xpad_n, dzpad_n;    // conv: elements of one thread's xpad(16) / dzpad(16)
    int threads;               // the layer's threads (wr_layer_set_threads; 1 at init): see there
    struct wr_linear_sparse *sp;  // linear, out % 16 == 0, AVX2+ at init: sparse lists (owned), else NULL
    float *dz;                    // (max_batch, out_size) error after the ReLU mask
    int32_t *arg;                 // pool: input offset of each output's max
    // fp8 only: codes (owned) and the scales folded into alpha
    uint8_t *xc;                // E4M3-b11 codes of sx * x (max_batch, in_size)
    uint8_t *wc;                // E4M3-b11 codes of sw * w (n_w)
    uint8_t *dzc;               // E5M2 codes of dz (max_batch, out_size)
    float sx, sw;               // power-of-two scales of xc and wc
    int fp8_cache;              // linear: 1 (init) decodes each operand once per step
    uint64_t fwd_gen, bwd_gen;  // generations of xc + wc, and of dzc
    wr_fp8_cache cx, cw, cdz;   // decoded X, W, dZ
} wr_layer;

// Initialisers: validate the geometry (WR_CHECK: these come from the model's
// own constants) and allocate the buffers for max_batch samples.
void wr_layer_linear_init(wr_layer *l, int in, int out, int relu, int fp8, int need_dx, int max_batch);
void wr_layer_conv_init(wr_layer *l, int H, int W, int C, int O, int k, int pad, int relu, int fp8,
                        int need_dx, int max_batch);
void wr_layer_pool_init(wr_layer *l, int H, int W, int C, int need_dx, int max_batch);
void wr_layer_free(wr_layer *l);

// Threads of a layer (clamped to [1, WR_LAYER_MAX_THREADS]): the conv's
// forward and dX split the chunks of images, the direct dW its taps; a linear
// layer's sparse GEMMs split the rows of their output; a pool splits the
// images; so every output is computed as with one thread (same bits). The
// im2col + sgemm dW sums fixed groups of images, and the ReLU mask with the
// bias gradient of a large dz (>= 2^18 elements: the convs') fixed groups of
// rows, one group per thread in turn, the groups added in order (same bits
// again; 4 groups: 3 threads speed these up as 2 do). The other im2col + sgemm paths and the linear
// layers' sgemm calls stay on the calling thread (OpenBLAS's threads:
// model.h sets them to one).
#define WR_LAYER_MAX_THREADS 4
void wr_layer_set_threads(wr_layer *l, int threads);

// Points the layer's w, b at params and dw, db at grads (w first, then b).
// Returns the number of floats used (n_w + n_b).
size_t wr_layer_bind(wr_layer *l, float *params, float *grads);

// Forward on B <= max_batch samples of x (B x in_size), into l->y. x must stay
// unchanged until the backward of this step.
void wr_layer_forward(wr_layer *l, const float *x, int B);

// Backward from dy = dL/dy (B x out_size; for the whole batch, already
// multiplied by the loss scale S). Writes dw, db divided by S (the true
// gradient) and, if need_dx, l->dx = dL/dx still multiplied by S. dy is not
// modified. At most one backward per forward for conv layers (their dX
// overwrites the im2col buffer dW reads). Returns 1 if an E5M2 input overflowed (|S dZ| past 57344, or
// inf/NaN) — the gradients are then garbage and the step must be skipped — else 0.
int wr_layer_backward(wr_layer *l, const float *dy, int B, float loss_scale);

// Softmax + cross-entropy over C classes in fp32. logits (B x C), labels < C.
// dlogits = grad_scale * (softmax - onehot) / B. Returns the mean loss;
// *correct (if not NULL) = number of rows whose argmax is the label (first
// maximum wins).
float wr_softmax_xent(const float *logits, const uint8_t *labels, int B, int C, float grad_scale,
                      float *dlogits, int *correct);

// Stand-alone ReLU: y = max(x, 0); dx = dy where y > 0, else 0. (The layers fuse it.)
void wr_relu_forward(const float *x, float *y, size_t n);
void wr_relu_backward(const float *y, const float *dy, float *dx, size_t n);

// Power-of-two scale s with amax*s in [8, 16) (1 when amax is 0 or not finite).
float wr_layer_pow2_scale(float amax);

// q = E4M3-b11 rounding of x * s with s = wr_layer_pow2_scale(amax(x)); returns s.
float wr_layer_quantize_e4m3(const float *x, float *q, size_t n);

// codes = E4M3-b11 codes of x * s with s = wr_layer_pow2_scale(amax(x)); returns
// s. decode(codes[i]) == q[i] of wr_layer_quantize_e4m3, bit for bit.
float wr_layer_encode_e4m3(const float *x, uint8_t *codes, size_t n);

#endif
