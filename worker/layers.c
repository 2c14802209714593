// layers.c — linear, conv2d (im2col), max-pool, softmax-xent; fp32 and HFP8 (layers.h).
#include "layers.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "fp8_gemm.h"
#include "hfp8.h"
#include "layers_bf16.h"
#include "layers_internal.h"
#include "wr_common.h"

#define QCHUNK 4096  // scale + round in L1-sized pieces: one pass over memory
// A conv's im2col chunk (floats): a 1 MiB column buffer stays in L2 between
// im2col and the GEMMs that read it.
#define CONV_CHUNK_FLOATS ((size_t)256 * 1024)

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
// fp8 layer whose X operand has xrows x K entries.
static void fp8_init(wr_layer *l, size_t xrows, size_t K) {
    size_t B = (size_t)l->max_batch;
    l->xc = wr_alloc_vec(B * l->in_size);
    l->wc = wr_alloc_vec(l->n_w);
    l->dzc = wr_alloc_vec(B * l->out_size);
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
    l->threads = 1;
}

void wr_layer_linear_init(wr_layer *l, int in, int out, int relu, int fp8, int need_dx, int max_batch) {
    WR_CHECK(in > 0 && out > 0);
    common_init(l, WR_LAYER_LINEAR, relu, fp8, need_dx, max_batch);
    l->in_size = in;
    l->out_size = out;
    l->n_w = (size_t)in * out;
    l->n_b = (size_t)out;
    l->db_part = alloc_f(WR_COLSUM_GROUPS * l->n_b);
    size_t B = (size_t)max_batch;
    l->y = alloc_f(B * out);
    l->dz = alloc_f(B * out);
    if (need_dx) l->dx = alloc_f(B * in);
    if (fp8) fp8_init(l, B, (size_t)in);
    l->sp = wr_linear_sparse_new(l);
    if (fp8 && need_dx && wr_bf16_nt_ok(in, out)) {  // the BF16 dX's pairs (2 bytes per value)
        l->dz2 = wr_alloc_vec(B * (size_t)(out / 2) * sizeof(uint32_t));
        l->w2 = wr_alloc_vec(l->n_w / 2 * sizeof(uint32_t));
        l->w2t = wr_alloc_vec(l->n_w / 2 * sizeof(uint32_t));
    }
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
    size_t K = (size_t)k * k * C, per = (size_t)l->OH * l->OW;
    l->n_w = K * O;
    l->n_b = (size_t)O;
    l->db_part = alloc_f(WR_COLSUM_GROUPS * l->n_b);
    l->y = alloc_f((size_t)max_batch * l->out_size);
    l->dz = alloc_f((size_t)max_batch * l->out_size);
    if (need_dx) l->dx = alloc_f((size_t)max_batch * l->in_size);
    // Chunk: as many images as fit ~CONV_CHUNK_FLOATS of col (at least one).
    l->conv_chunk = (int)WR_MAX((size_t)1, WR_MIN((size_t)max_batch, CONV_CHUNK_FLOATS / (per * K)));
    l->col_n = (size_t)l->conv_chunk * per * K;
    // a col per thread and the groups' partial sums for the im2col + sgemm dW
    // (layers_conv.c): any conv may take it (the direct dW depends on the CPU level)
    l->col = alloc_f(l->col_n * WR_LAYER_MAX_THREADS);
    l->dw_part = alloc_f((size_t)WR_CONV_DW_GROUPS * l->n_w);
    wr_conv_direct_init(l);
    // fp8: X is decoded whole (B x in_size) once per step, im2col reads that
    if (fp8) fp8_init(l, (size_t)max_batch, (size_t)l->in_size);
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
    free(l->dw_part);
    free(l->db_part);
    free(l->xpad);
    free(l->offs);
    free(l->dzpad);
    free(l->offs_t);
    free(l->wt);
    free(l->xpad16);
    free(l->dzpad16);
    free(l->w16);
    free(l->wt16);
    free(l->dz2);
    free(l->w2);
    free(l->w2t);
    free(l->dz);
    free(l->arg);
    free(l->xc);
    free(l->wc);
    free(l->dzc);
    wr_fp8_cache_free(&l->cx);
    wr_fp8_cache_free(&l->cw);
    wr_fp8_cache_free(&l->cdz);
    wr_linear_sparse_free(l->sp);
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

// y[r, j] = y[r, j] + b[j], then ReLU if asked (layers_internal.h).
WR_VEC void wr_layer_bias_act(float *restrict y, const float *restrict b, size_t rows, int cols, int relu) {
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

// dz = dy masked by the ReLU (y > 0 iff the pre-activation was > 0) for rows
// [r0, r1), and their column sums into db (overwritten).
WR_VEC static void mask_colsum(const float *restrict dy, const float *restrict y, float *restrict dz,
                               float *restrict db, size_t r0, size_t r1, int cols, int relu) {
    for (int j = 0; j < cols; j++) db[j] = 0.0f;
    for (size_t r = r0; r < r1; r++) {
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

// Rows of group g of WR_COLSUM_GROUPS: [rows g / G, rows (g + 1) / G).
static size_t colsum_row(size_t rows, int g) { return rows * (size_t)g / WR_COLSUM_GROUPS; }

typedef struct {
    const wr_layer *l;
    const float *dy;
    size_t rows;
    int cols, t, T;
} colsum_job;

static void *colsum_run(void *p) {
    const colsum_job *j = p;
    const wr_layer *l = j->l;
    for (int g = j->t; g < WR_COLSUM_GROUPS; g += j->T)
        mask_colsum(j->dy, l->y, l->dz, l->db_part + (size_t)g * j->cols, colsum_row(j->rows, g),
                    colsum_row(j->rows, g + 1), j->cols, l->relu);
    return NULL;
}

// dz and db. A large dz (the convs': 10^5 rows of 16 or 32 channels) in
// WR_COLSUM_GROUPS fixed groups of rows, spread over the layer's threads,
// the groups' sums added in group order: the groups, not the threads, fix
// db's sums (the bits of one thread); a small one on the calling thread.
static void mask_and_db(const wr_layer *l, const float *dy, size_t rows, int cols) {
    if (rows * (size_t)cols < ((size_t)1 << 18) || rows < WR_COLSUM_GROUPS) {
        mask_colsum(dy, l->y, l->dz, l->db, 0, rows, cols, l->relu);
        return;
    }
    const int T = WR_MIN(l->threads, WR_COLSUM_GROUPS);
    colsum_job jobs[WR_LAYER_MAX_THREADS];
    for (int t = 0; t < T; t++) jobs[t] = (colsum_job){l, dy, rows, cols, t, T};
    wr_layer_run_jobs(colsum_run, jobs, sizeof *jobs, T);
    for (int j = 0; j < cols; j++) l->db[j] = l->db_part[j];
    for (int g = 1; g < WR_COLSUM_GROUPS; g++)
        for (int j = 0; j < cols; j++) l->db[j] = l->db[j] + l->db_part[(size_t)g * cols + j];
}

// The HFP8 forward: codes of sw*w and sx*x, the scales in alpha. Linear: one
// FP8 GEMM. Conv: both operands decoded once (into cx, cw; the backward reuses
// them), then the chunked im2col + sgemm of the fp32 path on those values.
static void fp8_forward(wr_layer *l, const float *x, int B) {
    l->fwd_gen++;
    l->sw = wr_layer_encode_e4m3(l->w, l->wc, l->n_w);
    l->sx = wr_layer_encode_e4m3(x, l->xc, (size_t)B * l->in_size);
    const float alpha = 1.0f / (l->sx * l->sw);
    const enum wr_fp8_format E4 = WR_FP8_E4M3B11;
    if (l->kind == WR_LAYER_CONV) {
        const int K = l->k * l->k * l->C;
        const float *wq = wr_fp8_cache_get(&l->cw, l->wc, l->fwd_gen, E4, K, l->O, l->O);
        const float *xq = wr_fp8_cache_get(&l->cx, l->xc, l->fwd_gen, E4, B, l->in_size, l->in_size);
        wr_conv_forward_fp8(l, xq, wq, alpha, B);
        return;
    }
    wr_fp8_cache *cx = l->fp8_cache ? &l->cx : NULL, *cw = l->fp8_cache ? &l->cw : NULL;
    if (!(cx && l->sp && wr_spmm_ok(l->out_size)))
        wr_fp8_gemm_cached(0, 0, B, l->out_size, l->in_size, alpha, l->xc, E4, l->in_size, cx, l->fwd_gen,
                           l->wc, E4, l->out_size, cw, l->fwd_gen, 0.0f, l->y, l->out_size);
    else {  // the sparse GEMM on the decoded values (exact products; sums in k order, not sgemm's)
        const float *xq = wr_fp8_cache_get(cx, l->xc, l->fwd_gen, E4, B, l->in_size, l->in_size);
        const float *wq = wr_fp8_cache_get(cw, l->wc, l->fwd_gen, E4, l->in_size, l->out_size, l->out_size);
        wr_linear_sparse_fwd(l, xq, wq, alpha, B);
    }
    wr_layer_bias_act(l->y, l->b, (size_t)B, l->out_size, l->relu);
}

void wr_layer_forward(wr_layer *l, const float *x, int B) {
    WR_CHECK(B >= 1 && B <= l->max_batch);
    l->x = x;
    if (l->kind == WR_LAYER_POOL) {
        wr_pool_forward(l, x, B);
        return;
    }
    if (l->fp8) {
        fp8_forward(l, x, B);
        return;
    }
    if (l->kind == WR_LAYER_CONV) {
        wr_conv_forward(l, x, l->w, 1.0f, B);
        return;
    }
    if (!wr_linear_sparse_fwd(l, x, l->w, 1.0f, B))
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, l->out_size, l->in_size, 1.0f, x,
                    l->in_size, l->w, l->out_size, 0.0f, l->y, l->out_size);
    wr_layer_bias_act(l->y, l->b, (size_t)B, l->out_size, l->relu);
}

// The HFP8 backward's FP8 GEMMs (wr_fp8_gemm_cached) that the sparse path did
// not take: dW if do_dw, dX if do_dx.
static void fp8_gemms_left(wr_layer *l, size_t rows, int cols, int K, float inv_s, int do_dw, int do_dx) {
    const enum wr_fp8_format E4 = WR_FP8_E4M3B11, E5 = WR_FP8_E5M2;
    wr_fp8_cache *cx = l->fp8_cache ? &l->cx : NULL, *cw = l->fp8_cache ? &l->cw : NULL;
    wr_fp8_cache *cdz = l->fp8_cache ? &l->cdz : NULL;
    if (do_dw)
        wr_fp8_gemm_cached(1, 0, K, cols, (int)rows, inv_s / l->sx, l->xc, E4, K, cx, l->fwd_gen, l->dzc, E5,
                           cols, cdz, l->bwd_gen, 0.0f, l->dw, cols);
    if (do_dx)
        wr_fp8_gemm_cached(0, 1, (int)rows, K, cols, 1.0f / l->sw, l->dzc, E5, cols, cdz, l->bwd_gen, l->wc,
                           E4, cols, cw, l->fwd_gen, 0.0f, l->dx, K);
}

// The HFP8 backward's GEMMs on the E5M2 codes of dz (encoded by the caller).
// Linear: dW = 1/(S sx) Xq^T dZq, dX = 1/sw dZq Wq^T as FP8 GEMMs. Conv: dZq
// decoded once, then the chunked fp32 backward on Xq, Wq decoded by the forward.
static void fp8_backward_gemms(wr_layer *l, int B, size_t rows, int cols, int K, float inv_s) {
    const enum wr_fp8_format E4 = WR_FP8_E4M3B11, E5 = WR_FP8_E5M2;
    if (l->kind == WR_LAYER_CONV) {
        const float *dzq = wr_fp8_cache_get(&l->cdz, l->dzc, l->bwd_gen, E5, (int)rows, cols, cols);
        const float *wq = wr_fp8_cache_get(&l->cw, l->wc, l->fwd_gen, E4, K, cols, cols);
        const float *xq = wr_fp8_cache_get(&l->cx, l->xc, l->fwd_gen, E4, B, l->in_size, l->in_size);
        wr_conv_backward_fp8(l, xq, dzq, wq, inv_s / l->sx, 1.0f / l->sw, B);
        return;
    }
    int dw_done = 0, dx_done = 0;
    if (l->fp8_cache && l->sp && wr_spmm_ok(cols)) {  // the sparse dW on the decoded values
        const float *xq = wr_fp8_cache_get(&l->cx, l->xc, l->fwd_gen, E4, B, K, K);
        const float *dzq = wr_fp8_cache_get(&l->cdz, l->dzc, l->bwd_gen, E5, (int)rows, cols, cols);
        dw_done = wr_linear_sparse_dw(l, xq, dzq, inv_s / l->sx, B);
    }
    if (l->need_dx && l->fp8_cache && l->dz2 && wr_bf16_nt_ok(K, cols)) {  // dX with BF16 dot products
        const float *dzq = wr_fp8_cache_get(&l->cdz, l->dzc, l->bwd_gen, E5, (int)rows, cols, cols);
        const float *wq = wr_fp8_cache_get(&l->cw, l->wc, l->fwd_gen, E4, K, cols, cols);
        wr_linear_bf16_dx(l, dzq, wq, 1.0f / l->sw, B);
        dx_done = 1;
    }
    fp8_gemms_left(l, rows, cols, K, inv_s, !dw_done, l->need_dx && !dx_done);
}

int wr_layer_backward(wr_layer *l, const float *dy, int B, float loss_scale) {
    WR_CHECK(B >= 1 && B <= l->max_batch);
    if (l->kind == WR_LAYER_POOL) {
        if (l->need_dx) wr_pool_backward(l, dy, B);
        return 0;
    }
    const int cols = l->kind == WR_LAYER_LINEAR ? l->out_size : l->O;
    const int K = l->kind == WR_LAYER_LINEAR ? l->in_size : l->k * l->k * l->C;
    const size_t rows = (size_t)B * l->out_size / (size_t)cols;
    const float inv_s = 1.0f / loss_scale;
    float *dz = l->dz, *db = l->db;
    mask_and_db(l, dy, rows, cols);
    for (int j = 0; j < cols; j++) db[j] *= inv_s;
    if (l->fp8) {
        size_t n = rows * (size_t)cols;
        float amax = wr_fp8_amax(dz, n);
        if (!(amax <= WR_FP8_E5M2_MAX)) return 1;  // overflow, inf or NaN
        l->bwd_gen++;
        wr_fp8_encode_array(dz, l->dzc, n, WR_FP8_E5M2);
        fp8_backward_gemms(l, B, rows, cols, K, inv_s);
        return 0;
    }
    if (l->kind == WR_LAYER_CONV) {
        wr_conv_backward(l, l->x, dz, l->w, inv_s, 1.0f, B);
        return 0;
    }
    // dW = X^T dZ (K x cols) over the `rows` rows; dX = dZ W^T (rows x K)
    if (!wr_linear_sparse_dw(l, l->x, dz, inv_s, B))
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, cols, (int)rows, inv_s, l->x, K, dz, cols,
                    0.0f, l->dw, cols);
    if (!l->need_dx) return 0;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, K, cols, 1.0f, dz, cols, l->w, cols, 0.0f,
                l->dx, K);
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
