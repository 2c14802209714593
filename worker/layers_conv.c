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
#include <pthread.h>
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

// Tap offsets of a k x k kernel over C channels in padded rows of Wp pixels.
static int *tap_offsets(int k, int Wp, int C) {
    int *offs = wr_alloc_vec((size_t)k * k * C * sizeof(int));
    for (int kh = 0, i = 0; kh < k; kh++)
        for (int kw = 0; kw < k; kw++)
            for (int c = 0; c < C; c++) offs[i++] = (kh * Wp + kw) * C + c;
    return offs;
}

static float *zeroed(size_t n) {
    float *p = wr_alloc_vec(n * sizeof(float));
    memset(p, 0, n * sizeof(float));
    return p;
}

// The padded buffers' borders stay 0 (only interiors are written). dX is the
// forward conv of dz padded by k-1-pad with the flipped, transposed weights.
static void conv_direct_alloc(wr_layer *l) {
    const int k = l->k, K = k * k * l->C, Kt = k * k * l->O, pt = k - 1 - l->pad;
    if (!((l->O == 16 || l->O == 32) && K <= 1024)) return;
    const int Hp = l->H + 2 * l->pad, Wp = l->W + 2 * l->pad, T = WR_LAYER_MAX_THREADS;
    l->xpad_n = (size_t)l->conv_chunk * Hp * Wp * l->C;
    l->xpad = zeroed(T * l->xpad_n);
    l->offs = tap_offsets(k, Wp, l->C);
    if (!l->need_dx || !(l->C == 16 || l->C == 32) || pt < 0 || Kt > 1024) return;
    const int Hq = l->OH + 2 * pt, Wq = l->OW + 2 * pt;
    l->dzpad_n = (size_t)l->conv_chunk * Hq * Wq * l->O;
    l->dzpad = zeroed(T * l->dzpad_n);
    l->offs_t = tap_offsets(k, Wq, l->O);
    l->wt = wr_alloc_vec((size_t)Kt * l->C * sizeof(float));
}

static uint16_t *zeroed16(size_t n) {
    uint16_t *p = wr_alloc_vec(n * sizeof(uint16_t));
    memset(p, 0, n * sizeof(uint16_t));
    return p;
}

// bf16 twins of the padded chunks and weights for an fp8 layer (C, O even);
// like xpad and dzpad, one chunk buffer per thread (WR_LAYER_MAX_THREADS).
static void conv_bf16_init(wr_layer *l) {
    const int k = l->k, T = WR_LAYER_MAX_THREADS;
    if (!l->fp8 || !l->xpad || l->C % 2) return;
    l->xpad16 = zeroed16(T * l->xpad_n);
    l->w16 = wr_alloc_vec((size_t)k * k * l->C * l->O * sizeof(uint16_t));
    if (!l->dzpad) return;
    l->dzpad16 = zeroed16(T * l->dzpad_n);
    l->wt16 = wr_alloc_vec((size_t)k * k * l->O * l->C * sizeof(uint16_t));
}

void wr_conv_direct_init(wr_layer *l) {
    conv_direct_alloc(l);
    conv_bf16_init(l);
}

// Copies n images (H x W x C) of src into the interiors of dst (padded by p).
static void pad_images(const float *src, float *dst, int n, int H, int W, int C, int p) {
    const int Hp = H + 2 * p, Wp = W + 2 * p;
    for (int b = 0; b < n; b++)
        for (int h = 0; h < H; h++)
            memcpy(dst + (((size_t)b * Hp + h + p) * Wp + p) * C, src + ((size_t)b * H + h) * W * C,
                   sizeof(float) * (size_t)W * C);
}

// The same into a bf16 buffer (the top halves: exact for FP8 values).
static void pad_images16(const float *src, uint16_t *dst, int n, int H, int W, int C, int p) {
    const int Hp = H + 2 * p, Wp = W + 2 * p;
    for (int b = 0; b < n; b++)
        for (int h = 0; h < H; h++)
            wr_bf16_from_f32(src + ((size_t)b * H + h) * W * C, dst + (((size_t)b * Hp + h + p) * Wp + p) * C,
                             (size_t)W * C);
}

static wr_dconv_geom conv_geom(const wr_layer *l, int n) {
    wr_dconv_geom g = {n,    l->OH,  l->OW, l->H + 2 * l->pad, l->W + 2 * l->pad, l->C, l->k * l->k * l->C,
                       l->O, l->offs};
    return g;
}

// wt[(kh, kw, o), c] = w[(k-1-kh, k-1-kw, c), o]: dX's weights.
static void flip_weights(const wr_layer *l, const float *w) {
    const int k = l->k, C = l->C, O = l->O;
    for (int kh = 0; kh < k; kh++)
        for (int kw = 0; kw < k; kw++)
            for (int o = 0; o < O; o++)
                for (int c = 0; c < C; c++)
                    l->wt[(((size_t)kh * k + kw) * O + o) * C + c] =
                        w[(((size_t)(k - 1 - kh) * k + (k - 1 - kw)) * C + c) * O + o];
}

void wr_layer_set_threads(wr_layer *l, int threads) {
    l->threads = WR_MAX(1, WR_MIN(threads, WR_LAYER_MAX_THREADS));
}

// A parallel region: job t (t < T) of `jobs` (each `size` bytes) on thread t,
// job 0 on the caller. A thread that cannot be started runs inline after.
void wr_layer_run_jobs(void *(*fn)(void *), void *jobs, size_t size, int T) {
    pthread_t th[WR_LAYER_MAX_THREADS];
    int started[WR_LAYER_MAX_THREADS] = {0};
    for (int t = 1; t < T; t++) started[t] = pthread_create(&th[t], NULL, fn, (char *)jobs + t * size) == 0;
    fn(jobs);
    for (int t = 1; t < T; t++) {
        if (started[t])
            pthread_join(th[t], NULL);
        else
            fn((char *)jobs + t * size);
    }
}

// What one thread of a conv region does: chunks t, t + T, ... (forward, dX),
// taps [k0, k1) over all chunks (direct dW) or image groups t, t + T, ...
// (im2col + sgemm dW), with thread t's padded buffers or col.
typedef struct {
    wr_layer *l;
    const float *x, *w, *dz;
    float alpha;
    int B, mode, t, T, k0, k1;
} conv_job;

// One chunk's forward product into y: BF16 direct (mode 2), fp32 direct (1) or
// im2col + sgemm (0, one thread only: col is shared).
static void conv_chunk_fwd(const conv_job *j, int b0, int n) {
    wr_layer *l = j->l;
    const int K = l->k * l->k * l->C, O = l->O;
    const float *x = j->x + (size_t)b0 * l->in_size;
    float *y = l->y + (size_t)b0 * l->out_size;
    wr_dconv_geom g = conv_geom(l, n);
    if (j->mode == 2) {
        uint16_t *xp = l->xpad16 + j->t * l->xpad_n;
        pad_images16(x, xp, n, l->H, l->W, l->C, l->pad);
        wr_dconv_fwd_bf16(&g, xp, l->w16, j->alpha, y);
    } else if (j->mode == 1) {
        float *xp = l->xpad + j->t * l->xpad_n;
        pad_images(x, xp, n, l->H, l->W, l->C, l->pad);
        wr_dconv_fwd(&g, xp, j->w, j->alpha, y);
    } else {
        wr_conv_im2col(l, x, l->col, n);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n * l->OH * l->OW, O, K, j->alpha, l->col, K,
                    j->w, O, 0.0f, y, O);
    }
    wr_layer_bias_act(y, l->b, (size_t)n * l->OH * l->OW, O, l->relu);
}

static void *fwd_job(void *p) {
    const conv_job *j = p;
    const int ch = j->l->conv_chunk;
    for (int b0 = j->t * ch; b0 < j->B; b0 += j->T * ch) conv_chunk_fwd(j, b0, WR_MIN(ch, j->B - b0));
    return NULL;
}

// bf16: the operands are an fp8 layer's decoded values (exact in bf16).
static void conv_forward(wr_layer *l, const float *x, const float *w, float alpha, int B, int bf16) {
    const int K = l->k * l->k * l->C, O = l->O;
    int mode = l->xpad && wr_thin_ok(O, K) ? 1 : 0;
    if (bf16 && l->xpad16 && wr_dconv_bf16_ok(O, K, l->C)) {
        mode = 2;
        wr_bf16_pack_w(w, K, O, l->w16);
    }
    int T = mode ? WR_MIN(l->threads, WR_DIV_UP(B, l->conv_chunk)) : 1;
    conv_job jobs[WR_LAYER_MAX_THREADS];
    for (int t = 0; t < T; t++) jobs[t] = (conv_job){l, x, w, NULL, alpha, B, mode, t, T, 0, 0};
    wr_layer_run_jobs(fwd_job, jobs, sizeof *jobs, WR_MAX(T, 1));
}

void wr_conv_forward(wr_layer *l, const float *x, const float *w, float alpha, int B) {
    conv_forward(l, x, w, alpha, B, 0);
}

void wr_conv_forward_fp8(wr_layer *l, const float *xq, const float *wq, float alpha, int B) {
    conv_forward(l, xq, wq, alpha, B, 1);
}

// Direct dW for taps [k0, k1): every chunk in order, beta 1 after the first.
static void *dw_job(void *p) {
    const conv_job *j = p;
    wr_layer *l = j->l;
    float *xp = l->xpad + j->t * l->xpad_n;
    for (int b0 = 0; b0 < j->B; b0 += l->conv_chunk) {
        int n = WR_MIN(l->conv_chunk, j->B - b0);
        wr_dconv_geom g = conv_geom(l, n);
        g.K = j->k1 - j->k0;
        g.offs = l->offs + j->k0;
        pad_images(j->x + (size_t)b0 * l->in_size, xp, n, l->H, l->W, l->C, l->pad);
        wr_dconv_dw(&g, xp, j->dz + (size_t)b0 * l->out_size, j->alpha, b0 ? 1.0f : 0.0f,
                    l->dw + (size_t)j->k0 * l->O);
    }
    return NULL;
}

int wr_conv_dw_direct(const wr_layer *l) {
    const int K = l->k * l->k * l->C;
    return l->xpad && wr_thin_ok(l->O, K) && K <= WR_DCONV_DW_MAX_K;
}

// Group g's images: [B g / G, B (g + 1) / G) (empty ones only when B < G).
static int group_start(int B, int g) { return (int)((int64_t)B * g / WR_CONV_DW_GROUPS); }

// Thread t of the grouped dW: groups t, t + T, ..., each the sum over its
// chunks of alpha_w col^T dZ (im2col + sgemm in thread t's col) into its
// partial.
static void *dw_groups_job(void *p) {
    const conv_job *j = p;
    wr_layer *l = j->l;
    const int K = l->k * l->k * l->C, O = l->O;
    float *col = l->col + (size_t)j->t * l->col_n;
    for (int g = j->t; g < WR_CONV_DW_GROUPS; g += j->T) {
        const int g0 = group_start(j->B, g), g1 = group_start(j->B, g + 1);
        for (int b0 = g0; b0 < g1; b0 += l->conv_chunk) {
            int n = WR_MIN(l->conv_chunk, g1 - b0);
            wr_conv_im2col(l, j->x + (size_t)b0 * l->in_size, col, n);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, O, n * l->OH * l->OW, j->alpha, col, K,
                        j->dz + (size_t)b0 * l->out_size, O, b0 > g0 ? 1.0f : 0.0f,
                        l->dw_part + (size_t)g * K * O, O);
        }
    }
    return NULL;
}

// dw = the groups' partials added in group order.
WR_VEC static void sum_groups(const wr_layer *l, int B, size_t n) {
    float *restrict dw = l->dw;
    memset(dw, 0, n * sizeof(float));
    for (int g = 0; g < WR_CONV_DW_GROUPS; g++) {
        if (group_start(B, g) == group_start(B, g + 1)) continue;
        const float *restrict part = l->dw_part + (size_t)g * n;
        for (size_t i = 0; i < n; i++) dw[i] = dw[i] + part[i];
    }
}

// dW (+)= alpha_w col^T dZ: direct (taps split over threads), or im2col +
// sgemm per chunk in WR_CONV_DW_GROUPS fixed groups of images spread over
// the threads and added in group order: the groups, not the threads, fix
// the sums, so every thread count gives the same bits.
static void conv_dw(wr_layer *l, const float *x, const float *dz, float alpha_w, int B) {
    const int K = l->k * l->k * l->C, O = l->O;
    conv_job jobs[WR_LAYER_MAX_THREADS];
    if (wr_conv_dw_direct(l)) {
        int T = WR_MIN(l->threads, K);
        for (int t = 0; t < T; t++)
            jobs[t] = (conv_job){l, x, NULL, dz, alpha_w, B, 1, t, T, K * t / T, K * (t + 1) / T};
        wr_layer_run_jobs(dw_job, jobs, sizeof *jobs, T);
        return;
    }
    int T = WR_MIN(l->threads, WR_CONV_DW_GROUPS);
    for (int t = 0; t < T; t++) jobs[t] = (conv_job){l, x, NULL, dz, alpha_w, B, 0, t, T, 0, 0};
    wr_layer_run_jobs(dw_groups_job, jobs, sizeof *jobs, T);
    sum_groups(l, B, (size_t)K * O);
}

// dx of one chunk: the direct conv of its padded dz with the flipped weights
// (BF16 in mode 2, fp32 in mode 1), or (mode 0) the dX sgemm into col and col2im.
static void conv_chunk_dx(const conv_job *j, int b0, int n) {
    wr_layer *l = j->l;
    const int pt = l->k - 1 - l->pad, K = l->k * l->k * l->C;
    const float *dz = j->dz + (size_t)b0 * l->out_size;
    float *dx = l->dx + (size_t)b0 * l->in_size;
    wr_dconv_geom g = {n,    l->H,     l->W, l->OH + 2 * pt, l->OW + 2 * pt, l->O, l->k * l->k * l->O,
                       l->C, l->offs_t};
    if (j->mode == 2) {
        uint16_t *zp = l->dzpad16 + j->t * l->dzpad_n;
        pad_images16(dz, zp, n, l->OH, l->OW, l->O, pt);
        wr_dconv_fwd_bf16(&g, zp, l->wt16, j->alpha, dx);
    } else if (j->mode == 1) {
        float *zp = l->dzpad + j->t * l->dzpad_n;
        pad_images(dz, zp, n, l->OH, l->OW, l->O, pt);
        wr_dconv_fwd(&g, zp, l->wt, j->alpha, dx);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n * l->OH * l->OW, K, l->O, j->alpha, dz, l->O,
                    j->w, l->O, 0.0f, l->col, K);
        wr_conv_col2im(l, l->col, dx, n);
    }
}

static void *dx_job(void *p) {
    const conv_job *j = p;
    const int ch = j->l->conv_chunk;
    for (int b0 = j->t * ch; b0 < j->B; b0 += j->T * ch) conv_chunk_dx(j, b0, WR_MIN(ch, j->B - b0));
    return NULL;
}

static void conv_backward(wr_layer *l, const float *x, const float *dz, const float *w, float alpha_w,
                          float alpha_x, int B, int bf16) {
    const int O = l->O, Kt = l->k * l->k * O;
    conv_dw(l, x, dz, alpha_w, B);
    if (!l->need_dx) return;
    int mode = l->dzpad && wr_thin_ok(l->C, Kt) ? 1 : 0;
    if (mode) flip_weights(l, w);
    if (mode && bf16 && l->dzpad16 && wr_dconv_bf16_ok(l->C, Kt, O)) {
        mode = 2;
        wr_bf16_pack_w(l->wt, Kt, l->C, l->wt16);
    }
    int T = mode ? WR_MIN(l->threads, WR_DIV_UP(B, l->conv_chunk)) : 1;
    conv_job jobs[WR_LAYER_MAX_THREADS];
    for (int t = 0; t < T; t++) jobs[t] = (conv_job){l, NULL, w, dz, alpha_x, B, mode, t, T, 0, 0};
    wr_layer_run_jobs(dx_job, jobs, sizeof *jobs, WR_MAX(T, 1));
}

void wr_conv_backward(wr_layer *l, const float *x, const float *dz, const float *w, float alpha_w,
                      float alpha_x, int B) {
    conv_backward(l, x, dz, w, alpha_w, alpha_x, B, 0);
}

void wr_conv_backward_fp8(wr_layer *l, const float *xq, const float *dzq, const float *wq, float alpha_w,
                          float alpha_x, int B) {
    conv_backward(l, xq, dzq, wq, alpha_w, alpha_x, B, 1);
}
