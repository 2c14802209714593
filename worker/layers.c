// layers.c — linear, conv2d (im2col), max-pool, softmax-xent; fp32 and HFP8 (layers.h).
#include "layers.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "fp8_gemm.h"
#include "hfp8.h"
#include "wr_common.h"

// The element loops here are plain C written so that gcc vectorizes them
// (restrict, no branches); -O2's default "very cheap" cost model refuses loops
// that need a remainder, hence the attribute. Vectorized or not, every element
// gets the same fp32 operations, so results do not depend on it. (clang has no
// such attribute and vectorizes these at -O2 anyway.)
#if defined(__clang__)
#define WR_VEC
#else
#define WR_VEC __attribute__((optimize("tree-vectorize", "vect-cost-model=dynamic")))
#endif

#define QCHUNK 4096  // scale + round in L1-sized pieces: one pass over memory

static float *alloc_f(size_t n) { return wr_alloc_vec((n ? n : 1) * sizeof(float)); }

float wr_layer_pow2_scale(float amax) {
    if (!(amax > 0.0f) || !isfinite(amax)) return 1.0f;
    int e;
    frexpf(amax, &e);  // amax = m 2^e, m in [0.5, 1): amax 2^(4-e) in [8, 16)
    int k = 4 - e;
    if (k > 100) k = 100;
    if (k < -100) k = -100;
    return ldexpf(1.0f, k);
}

WR_VEC static void scale_chunk(const float *restrict x, float *restrict q, size_t m, float s) {
    for (size_t i = 0; i < m; i++) q[i] = x[i] * s;
}

float wr_layer_quantize_e4m3(const float *x, float *q, size_t n) {
    float s = wr_layer_pow2_scale(wr_fp8_amax(x, n));
    for (size_t off = 0; off < n; off += QCHUNK) {
        size_t m = WR_MIN((size_t)QCHUNK, n - off);
        scale_chunk(x + off, q + off, m, s);
        wr_fp8_quantize_inplace(q + off, m, WR_FP8_E4M3B11);
    }
    return s;
}

// One pass over x for the codes (the scale multiply fused into the encoder):
// the same fp32 product and RNE as the fake quantizer above, so decode(codes)
// equals its output bit for bit.
float wr_layer_encode_e4m3(const float *x, uint8_t *codes, size_t n) {
    float s = wr_layer_pow2_scale(wr_fp8_amax(x, n));
    wr_fp8_encode_scaled_array(x, codes, n, s, WR_FP8_E4M3B11);
    return s;
}

// Codes, caches (sized for the largest operands: no allocation per step) of an
// fp8 layer whose X operand (x, or conv's col) has xrows x K entries.
static void fp8_init(wr_layer *l, size_t xrows, size_t K) {
    size_t B = (size_t)l->max_batch;
    l->xc = wr_alloc_vec(B * l->in_size);
    l->wc = wr_alloc_vec(l->n_w);
    l->dzc = wr_alloc_vec(B * l->out_size);
    if (l->kind == WR_LAYER_CONV) l->colc = wr_alloc_vec(xrows * K);
    l->fp8_cache = 1;
    wr_fp8_cache_init(&l->cx, xrows * K);
    wr_fp8_cache_init(&l->cw, l->n_w);
    wr_fp8_cache_init(&l->cdz, B * l->out_size);
}

static void common_init(wr_layer *l, int kind, int relu, int fp8, int need_dx, int max_batch) {
    memset(l, 0, sizeof *l);
    WR_CHECK(max_batch > 0);
    l->kind = kind;
    l->relu = relu;
    l->fp8 = fp8;
    l->need_dx = need_dx;
    l->max_batch = max_batch;
    l->sx = l->sw = 1.0f;
}

void wr_layer_linear_init(wr_layer *l, int in, int out, int relu, int fp8, int need_dx, int max_batch) {
    WR_CHECK(in > 0 && out > 0);
    common_init(l, WR_LAYER_LINEAR, relu, fp8, need_dx, max_batch);
    l->in_size = in;
    l->out_size = out;
    l->n_w = (size_t)in * out;
    l->n_b = (size_t)out;
    size_t B = (size_t)max_batch;
    l->y = alloc_f(B * out);
    l->dz = alloc_f(B * out);
    if (need_dx) l->dx = alloc_f(B * in);
    if (fp8) fp8_init(l, B, (size_t)in);
}

void wr_layer_conv_init(wr_layer *l, int H, int W, int C, int O, int k, int pad, int relu, int fp8,
                        int need_dx, int max_batch) {
    WR_CHECK(H > 0 && W > 0 && C > 0 && O > 0 && k > 0 && pad >= 0);
    WR_CHECK(H + 2 * pad >= k && W + 2 * pad >= k);
    common_init(l, WR_LAYER_CONV, relu, fp8, need_dx, max_batch);
    l->H = H;
    l->W = W;
    l->C = C;
    l->O = O;
    l->k = k;
    l->pad = pad;
    l->OH = H + 2 * pad - k + 1;
    l->OW = W + 2 * pad - k + 1;
    l->in_size = H * W * C;
    l->out_size = l->OH * l->OW * O;
    size_t K = (size_t)k * k * C, rows = (size_t)max_batch * l->OH * l->OW;
    l->n_w = K * O;
    l->n_b = (size_t)O;
    l->y = alloc_f((size_t)max_batch * l->out_size);
    l->dz = alloc_f((size_t)max_batch * l->out_size);
    if (need_dx) l->dx = alloc_f((size_t)max_batch * l->in_size);
    if (!fp8) {
        l->col = alloc_f(rows * K);
        l->dcol = l->col;  // dW has consumed col by the time dX overwrites it
    } else {
        fp8_init(l, rows, K);
        // The decoded col (cache cx, sized rows x K for max_batch, never
        // regrown) has served the dW GEMM by the time dX is written: dcol
        // reuses its memory, and the backward then invalidates cx.
        l->dcol = l->cx.buf;
    }
}

void wr_layer_pool_init(wr_layer *l, int H, int W, int C, int need_dx, int max_batch) {
    WR_CHECK(H >= 2 && W >= 2 && C > 0);
    common_init(l, WR_LAYER_POOL, 0, 0, need_dx, max_batch);
    l->H = H;
    l->W = W;
    l->C = C;
    l->OH = H / 2;
    l->OW = W / 2;
    l->in_size = H * W * C;
    l->out_size = l->OH * l->OW * C;
    l->y = alloc_f((size_t)max_batch * l->out_size);
    l->arg = wr_alloc_vec((size_t)max_batch * l->out_size * sizeof(int32_t));
    if (need_dx) l->dx = alloc_f((size_t)max_batch * l->in_size);
}

void wr_layer_free(wr_layer *l) {
    if (!l) return;
    free(l->y);
    free(l->dx);
    free(l->col);
    free(l->dz);
    free(l->arg);
    free(l->xc);
    free(l->colc);
    free(l->wc);
    free(l->dzc);
    wr_fp8_cache_free(&l->cx);
    wr_fp8_cache_free(&l->cw);
    wr_fp8_cache_free(&l->cdz);
    memset(l, 0, sizeof *l);
}

size_t wr_layer_bind(wr_layer *l, float *params, float *grads) {
    if (l->n_w + l->n_b == 0) return 0;
    l->w = params;
    l->b = params + l->n_w;
    l->dw = grads;
    l->db = grads + l->n_w;
    return l->n_w + l->n_b;
}

// y[r, j] = y[r, j] + b[j], then ReLU if asked.
WR_VEC static void bias_act(float *restrict y, const float *restrict b, size_t rows, int cols, int relu) {
    for (size_t r = 0; r < rows; r++) {
        float *restrict yr = y + r * (size_t)cols;
        if (relu) {
            for (int j = 0; j < cols; j++) {
                float v = yr[j] + b[j];
                yr[j] = v > 0.0f ? v : 0.0f;
            }
        } else {
            for (int j = 0; j < cols; j++) yr[j] = yr[j] + b[j];
        }
    }
}

// dz = dy masked by the ReLU (y > 0 iff the pre-activation was > 0), and the
// column sums of dz into db (zeroed here).
WR_VEC static void mask_colsum(const float *restrict dy, const float *restrict y, float *restrict dz,
                               float *restrict db, size_t rows, int cols, int relu) {
    for (int j = 0; j < cols; j++) db[j] = 0.0f;
    for (size_t r = 0; r < rows; r++) {
        const float *restrict dyr = dy + r * (size_t)cols, *restrict yr = y + r * (size_t)cols;
        float *restrict dzr = dz + r * (size_t)cols;
        if (relu)
            for (int j = 0; j < cols; j++) {
                float d = dyr[j];  // loaded unconditionally: a select, not a branch
                dzr[j] = yr[j] > 0.0f ? d : 0.0f;
            }
        else
            for (int j = 0; j < cols; j++) dzr[j] = dyr[j];
        for (int j = 0; j < cols; j++) db[j] = db[j] + dzr[j];
    }
}

// col[(b,oh,ow), (kh,kw,c)] = x[b, oh+kh-pad, ow+kw-pad, c] (0 outside). In NHWC
// the k*C values of one kernel row are one contiguous span of x (clipped at the
// borders), so each (row, kh) is one short copy. One body for fp32 values and
// for FP8 codes (the code 0x00 is 0.0 in both formats).
#define WR_IM2COL(NAME, T)                                                                     \
    WR_VEC static void NAME(const wr_layer *l, const T *restrict x, T *restrict col, int B) {  \
        const int C = l->C, k = l->k, pad = l->pad, kC = k * C;                                \
        const size_t K = (size_t)k * kC;                                                       \
        T *restrict dst = col;                                                                 \
        for (int b = 0; b < B; b++) {                                                          \
            const T *xb = x + (size_t)b * l->in_size;                                          \
            for (int oh = 0; oh < l->OH; oh++)                                                 \
                for (int ow = 0; ow < l->OW; ow++, dst += K) {                                 \
                    int kw0 = WR_MAX(0, pad - ow), kw1 = WR_MIN(k, l->W + pad - ow);           \
                    for (int kh = 0; kh < k; kh++) {                                           \
                        T *restrict d = dst + (size_t)kh * kC;                                 \
                        int ih = oh + kh - pad;                                                \
                        if (ih < 0 || ih >= l->H || kw1 <= kw0) {                              \
                            for (int i = 0; i < kC; i++) d[i] = 0;                             \
                            continue;                                                          \
                        }                                                                      \
                        const T *restrict s = xb + ((size_t)ih * l->W + (ow + kw0 - pad)) * C; \
                        for (int i = 0; i < kw0 * C; i++) d[i] = 0;                            \
                        int n = (kw1 - kw0) * C;                                               \
                        for (int i = 0; i < n; i++) d[kw0 * C + i] = s[i];                     \
                        for (int i = kw1 * C; i < kC; i++) d[i] = 0;                           \
                    }                                                                          \
                }                                                                              \
        }                                                                                      \
    }
WR_IM2COL(im2col, float)
WR_IM2COL(im2col_u8, uint8_t)
#undef WR_IM2COL

// dx = sum of the col entries that read each input element (the adjoint of im2col).
WR_VEC static void col2im(const wr_layer *l, const float *restrict dcol, float *restrict dx, int B) {
    const int C = l->C, k = l->k, pad = l->pad, kC = k * C;
    const size_t K = (size_t)k * kC;
    memset(dx, 0, sizeof(float) * (size_t)B * l->in_size);
    const float *restrict src = dcol;
    for (int b = 0; b < B; b++) {
        float *xb = dx + (size_t)b * l->in_size;
        for (int oh = 0; oh < l->OH; oh++)
            for (int ow = 0; ow < l->OW; ow++, src += K) {
                int kw0 = WR_MAX(0, pad - ow), kw1 = WR_MIN(k, l->W + pad - ow);
                if (kw1 <= kw0) continue;
                int n = (kw1 - kw0) * C;
                for (int kh = 0; kh < k; kh++) {
                    int ih = oh + kh - pad;
                    if (ih < 0 || ih >= l->H) continue;
                    const float *restrict s = src + (size_t)kh * kC + kw0 * C;
                    float *restrict d = xb + ((size_t)ih * l->W + (ow + kw0 - pad)) * C;
                    for (int i = 0; i < n; i++) d[i] = d[i] + s[i];
                }
            }
    }
}

static void pool_forward(wr_layer *l, const float *x, int B) {
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
                        if (xb[offs[i]] > v) {  // first maximum wins; NaN never wins
                            v = xb[offs[i]];
                            best = offs[i];
                        }
                    size_t o = ((size_t)oh * l->OW + ow) * C + c;
                    yb[o] = v;
                    ab[o] = best;
                }
    }
}

static void pool_backward(wr_layer *l, const float *dy, int B) {
    memset(l->dx, 0, sizeof(float) * (size_t)B * l->in_size);
    for (int b = 0; b < B; b++) {
        float *xb = l->dx + (size_t)b * l->in_size;
        const float *db = dy + (size_t)b * l->out_size;
        const int32_t *ab = l->arg + (size_t)b * l->out_size;
        for (int o = 0; o < l->out_size; o++) xb[ab[o]] += db[o];
    }
}

// The HFP8 forward: codes of sw*w and sx*x (conv: im2col of the codes), one
// FP8 GEMM with the scales in alpha.
static void fp8_forward(wr_layer *l, const float *x, int B) {
    l->fwd_gen++;
    l->sw = wr_layer_encode_e4m3(l->w, l->wc, l->n_w);
    l->sx = wr_layer_encode_e4m3(x, l->xc, (size_t)B * l->in_size);
    const float alpha = 1.0f / (l->sx * l->sw);
    wr_fp8_cache *cx = l->fp8_cache ? &l->cx : NULL, *cw = l->fp8_cache ? &l->cw : NULL;
    const enum wr_fp8_format E4 = WR_FP8_E4M3B11;
    if (l->kind == WR_LAYER_LINEAR) {
        wr_fp8_gemm_cached(0, 0, B, l->out_size, l->in_size, alpha, l->xc, E4, l->in_size, cx, l->fwd_gen,
                           l->wc, E4, l->out_size, cw, l->fwd_gen, 0.0f, l->y, l->out_size);
        bias_act(l->y, l->b, (size_t)B, l->out_size, l->relu);
    } else {
        int rows = B * l->OH * l->OW, K = l->k * l->k * l->C;
        im2col_u8(l, l->xc, l->colc, B);
        wr_fp8_gemm_cached(0, 0, rows, l->O, K, alpha, l->colc, E4, K, cx, l->fwd_gen, l->wc, E4, l->O, cw,
                           l->fwd_gen, 0.0f, l->y, l->O);
        bias_act(l->y, l->b, (size_t)rows, l->O, l->relu);
    }
}

void wr_layer_forward(wr_layer *l, const float *x, int B) {
    WR_CHECK(B >= 1 && B <= l->max_batch);
    l->x = x;
    if (l->kind == WR_LAYER_POOL) {
        pool_forward(l, x, B);
        return;
    }
    if (l->fp8) {
        fp8_forward(l, x, B);
        return;
    }
    if (l->kind == WR_LAYER_LINEAR) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, l->out_size, l->in_size, 1.0f, x,
                    l->in_size, l->w, l->out_size, 0.0f, l->y, l->out_size);
        bias_act(l->y, l->b, (size_t)B, l->out_size, l->relu);
    } else {
        int rows = B * l->OH * l->OW, K = l->k * l->k * l->C;
        im2col(l, x, l->col, B);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, l->O, K, 1.0f, l->col, K, l->w, l->O,
                    0.0f, l->y, l->O);
        bias_act(l->y, l->b, (size_t)rows, l->O, l->relu);
    }
}

int wr_layer_backward(wr_layer *l, const float *dy, int B, float loss_scale) {
    WR_CHECK(B >= 1 && B <= l->max_batch);
    if (l->kind == WR_LAYER_POOL) {
        if (l->need_dx) pool_backward(l, dy, B);
        return 0;
    }
    const int cols = l->kind == WR_LAYER_LINEAR ? l->out_size : l->O;
    const int K = l->kind == WR_LAYER_LINEAR ? l->in_size : l->k * l->k * l->C;
    const size_t rows = (size_t)B * l->out_size / (size_t)cols;
    const float inv_s = 1.0f / loss_scale;
    float *dz = l->dz, *db = l->db;
    float *dst = l->kind == WR_LAYER_LINEAR ? l->dx : l->dcol;  // dX GEMM output
    mask_colsum(dy, l->y, dz, db, rows, cols, l->relu);
    for (int j = 0; j < cols; j++) db[j] *= inv_s;
    if (l->fp8) {
        size_t n = rows * (size_t)cols;
        float amax = wr_fp8_amax(dz, n);
        if (!(amax <= WR_FP8_E5M2_MAX)) return 1;  // overflow, inf or NaN
        l->bwd_gen++;
        wr_fp8_encode_array(dz, l->dzc, n, WR_FP8_E5M2);
        wr_fp8_cache *cx = l->fp8_cache ? &l->cx : NULL, *cw = l->fp8_cache ? &l->cw : NULL;
        wr_fp8_cache *cdz = l->fp8_cache ? &l->cdz : NULL;
        const enum wr_fp8_format E4 = WR_FP8_E4M3B11, E5 = WR_FP8_E5M2;
        const uint8_t *xin = l->kind == WR_LAYER_CONV ? l->colc : l->xc;
        // dW = 1/(S sx) Xq^T dZq (K x cols), over the `rows` rows.
        wr_fp8_gemm_cached(1, 0, K, cols, (int)rows, inv_s / l->sx, xin, E4, K, cx, l->fwd_gen, l->dzc, E5,
                           cols, cdz, l->bwd_gen, 0.0f, l->dw, cols);
        if (!l->need_dx) return 0;
        // dX = 1/sw dZq Wq^T (rows x K)
        wr_fp8_gemm_cached(0, 1, (int)rows, K, cols, 1.0f / l->sw, l->dzc, E5, cols, cdz, l->bwd_gen, l->wc,
                           E4, cols, cw, l->fwd_gen, 0.0f, dst, K);
    } else {
        const float *xin = l->kind == WR_LAYER_CONV ? l->col : l->x;
        // dW = X^T dZ (K x cols), over the `rows` rows.
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, cols, (int)rows, inv_s, xin, K, dz, cols,
                    0.0f, l->dw, cols);
        if (!l->need_dx) return 0;
        // dX = dZ W^T (rows x K)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, K, cols, 1.0f, dz, cols, l->w, cols,
                    0.0f, dst, K);
    }
    if (l->fp8 && l->kind == WR_LAYER_CONV) wr_fp8_cache_invalidate(&l->cx);  // dcol wrote it
    if (l->kind == WR_LAYER_CONV) col2im(l, l->dcol, l->dx, B);               // fold the columns back
    return 0;
}

float wr_softmax_xent(const float *logits, const uint8_t *labels, int B, int C, float grad_scale,
                      float *dlogits, int *correct) {
    double loss = 0.0;
    int hits = 0;
    const float g = grad_scale / (float)B;
    for (int b = 0; b < B; b++) {
        const float *z = logits + (size_t)b * C;
        float *dz = dlogits ? dlogits + (size_t)b * C : NULL;
        int am = 0;
        float mx = z[0];
        for (int c = 1; c < C; c++)
            if (z[c] > mx) {
                mx = z[c];
                am = c;
            }
        hits += am == labels[b];
        float sum = 0.0f;
        for (int c = 0; c < C; c++) sum += expf(z[c] - mx);
        float lse = logf(sum);
        loss += (double)(lse - (z[labels[b]] - mx));
        if (dz) {
            float inv = 1.0f / sum;
            for (int c = 0; c < C; c++) dz[c] = g * (expf(z[c] - mx) * inv - (c == labels[b]));
        }
    }
    if (correct) *correct = hits;
    return (float)(loss / B);
}

void wr_relu_forward(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void wr_relu_backward(const float *y, const float *dy, float *dx, size_t n) {
    for (size_t i = 0; i < n; i++) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}
