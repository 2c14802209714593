// test_layers.c — fp32 layers against double-precision references and finite
// differences; HFP8 layers against fp32 within bounds that follow from the
// formats; the layer's codes and FP8 GEMMs against wr_fp8_gemm on codes encoded
// here and against the fake-quantize emulation (sgemm / double on rounded fp32
// values); the decoded-operand caches (same bits as without, one decode per
// operand per step, invalidated by new weights); overflow detection.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cblas.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fp8_gemm.h"
#include "hfp8.h"
#include "cpu.h"
#include "layers.h"
#include "layers_bf16.h"
#include "layers_sparse.h"
#include "layers_internal.h"
#include "rng.h"
#include "wr_common.h"

static uint32_t g_ctr;
static float urand(float lo, float hi) {  // deterministic uniform
    uint32_t r = wr_rng_u32(wr_rng_key_make(7, 1, 2), g_ctr++);
    return lo + (hi - lo) * (float)(r >> 8) * (1.0f / 16777216.0f);
}
static void fill(float *a, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) a[i] = urand(lo, hi);
}

// ---- double-precision references of the forward passes ------------------------
typedef struct {
    int kind, in, out, H, W, C, O, k, pad, relu;
} geom;

static void ref_forward(const geom *g, const double *x, const double *w, const double *b, int B, double *y) {
    if (g->kind == WR_LAYER_LINEAR) {
        for (int s = 0; s < B; s++)
            for (int j = 0; j < g->out; j++) {
                double acc = b[j];
                for (int i = 0; i < g->in; i++) acc += x[s * g->in + i] * w[i * g->out + j];
                y[s * g->out + j] = g->relu && acc < 0 ? 0 : acc;
            }
    } else if (g->kind == WR_LAYER_CONV) {
        int OH = g->H + 2 * g->pad - g->k + 1, OW = g->W + 2 * g->pad - g->k + 1;
        for (int s = 0; s < B; s++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++)
                    for (int o = 0; o < g->O; o++) {
                        double acc = b[o];
                        for (int kh = 0; kh < g->k; kh++)
                            for (int kw = 0; kw < g->k; kw++)
                                for (int c = 0; c < g->C; c++) {
                                    int ih = oh + kh - g->pad, iw = ow + kw - g->pad;
                                    if (ih < 0 || iw < 0 || ih >= g->H || iw >= g->W) continue;
                                    acc += x[((s * g->H + ih) * g->W + iw) * g->C + c] *
                                           w[((kh * g->k + kw) * g->C + c) * g->O + o];
                                }
                        y[((s * OH + oh) * OW + ow) * g->O + o] = g->relu && acc < 0 ? 0 : acc;
                    }
    } else {
        int OH = g->H / 2, OW = g->W / 2;
        for (int s = 0; s < B; s++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++)
                    for (int c = 0; c < g->C; c++) {
                        double m = -INFINITY;
                        for (int i = 0; i < 2; i++)
                            for (int j = 0; j < 2; j++) {
                                double v = x[((s * g->H + 2 * oh + i) * g->W + 2 * ow + j) * g->C + c];
                                m = v > m ? v : m;
                            }
                        y[((s * OH + oh) * OW + ow) * g->C + c] = m;
                    }
    }
}

static void make_layer(wr_layer *l, const geom *g, int fp8, int need_dx, int B) {
    if (g->kind == WR_LAYER_LINEAR)
        wr_layer_linear_init(l, g->in, g->out, g->relu, fp8, need_dx, B);
    else if (g->kind == WR_LAYER_CONV)
        wr_layer_conv_init(l, g->H, g->W, g->C, g->O, g->k, g->pad, g->relu, fp8, need_dx, B);
    else
        wr_layer_pool_init(l, g->H, g->W, g->C, need_dx, B);
}

static double ref_loss(const geom *g, const double *xd, const double *wd, const double *bd, int B, double *yd,
                       const float *R, size_t ny) {
    ref_forward(g, xd, wd, bd, B, yd);
    double s = 0;
    for (size_t q = 0; q < ny; q++) s += (double)R[q] * yd[q];
    return s;
}

// L = sum(R . y). Checks y against the double reference and dw, db, dx against
// central differences of the double reference (h = 1e-6).
// chunk > 0 sets a conv's images per im2col + GEMM (several chunks per batch).
static void grad_check_chunk(const geom *g, int B, int chunk) {
    wr_layer l;
    make_layer(&l, g, 0, 1, B);
    if (chunk > 0 && chunk < l.conv_chunk) l.conv_chunk = chunk;
    size_t np = l.n_w + l.n_b, nx = (size_t)B * l.in_size, ny = (size_t)B * l.out_size;
    float *p = wr_alloc_vec((np + 1) * 4), *gr = wr_alloc_vec((np + 1) * 4);
    float *x = wr_alloc_vec(nx * 4), *R = wr_alloc_vec(ny * 4), *dy = wr_alloc_vec(ny * 4);
    wr_layer_bind(&l, p, gr);
    fill(p, np, -0.5f, 0.5f);
    fill(x, nx, -1.0f, 1.0f);
    fill(R, ny, -1.0f, 1.0f);
    const float S = 8.0f;  // a loss scale: dw, db come back divided by it, dx not
    for (size_t i = 0; i < ny; i++) dy[i] = R[i] * S;
    wr_layer_forward(&l, x, B);
    assert_int_equal(wr_layer_backward(&l, dy, B, S), 0);

    double *xd = malloc(nx * 8), *pd = malloc((np + 1) * 8), *yd = malloc(ny * 8);
    for (size_t i = 0; i < nx; i++) xd[i] = x[i];
    for (size_t i = 0; i < np; i++) pd[i] = p[i];
    double *wd = pd, *bd = pd + l.n_w;
    ref_forward(g, xd, wd, bd, B, yd);
    for (size_t i = 0; i < ny; i++) {
        double tol = 1e-5 * (1.0 + fabs(yd[i])) * (g->kind == WR_LAYER_POOL ? 0.0 : 1.0);
        if (fabs(l.y[i] - yd[i]) > tol) fail_msg("y[%zu] = %g, reference %g", i, l.y[i], yd[i]);
    }
    const double h = 1e-6;
    for (size_t i = 0; i < np; i++) {
        double keep = pd[i], lp, lm;
        pd[i] = keep + h;
        lp = ref_loss(g, xd, wd, bd, B, yd, R, ny);
        pd[i] = keep - h;
        lm = ref_loss(g, xd, wd, bd, B, yd, R, ny);
        pd[i] = keep;
        double fd = (lp - lm) / (2 * h);
        if (fabs(gr[i] - fd) > 1e-4 * (1.0 + fabs(fd)))
            fail_msg("kind %d param %zu: analytic %g, finite difference %g", g->kind, i, gr[i], fd);
    }
    for (size_t i = 0; i < nx; i++) {
        double keep = xd[i], lp, lm;
        xd[i] = keep + h;
        lp = ref_loss(g, xd, wd, bd, B, yd, R, ny);
        xd[i] = keep - h;
        lm = ref_loss(g, xd, wd, bd, B, yd, R, ny);
        xd[i] = keep;
        double fd = (lp - lm) / (2 * h);
        if (fabs(l.dx[i] / S - fd) > 1e-4 * (1.0 + fabs(fd)))
            fail_msg("kind %d dx[%zu]: analytic %g, finite difference %g", g->kind, i, l.dx[i] / S, fd);
    }
    wr_layer_free(&l);
    free(p), free(gr), free(x), free(R), free(dy), free(xd), free(pd), free(yd);
}

static void grad_check(const geom *g, int B) { grad_check_chunk(g, B, 0); }

static void test_grad_linear(void **st) {
    (void)st;
    geom a = {WR_LAYER_LINEAR, 13, 7, 0, 0, 0, 0, 0, 0, 0};
    grad_check(&a, 5);
    a.relu = 1;
    grad_check(&a, 5);
}

static void test_grad_conv(void **st) {
    (void)st;
    geom a = {WR_LAYER_CONV, 0, 0, 6, 5, 3, 4, 3, 1, 1};  // 6x5x3 -> 6x5x4, pad 1, ReLU
    grad_check(&a, 2);
    geom b = {WR_LAYER_CONV, 0, 0, 7, 7, 2, 3, 5, 2, 0};  // 5x5 pad 2 like the cnn, no ReLU
    grad_check(&b, 2);
    geom c = {WR_LAYER_CONV, 0, 0, 6, 6, 1, 2, 3, 0, 0};  // no padding: 4x4 output
    grad_check(&c, 3);
    // chunks of 1 and 2 images: dW summed over chunks, dx folded per chunk
    grad_check_chunk(&a, 3, 1);
    grad_check_chunk(&b, 3, 2);
    // 16 / 32 channels: the direct conv (layers_thin.h) on AVX2 / AVX-512 CPUs;
    // K = 27 and 50 also take its dW, K = 100 only its forward
    geom d = {WR_LAYER_CONV, 0, 0, 6, 5, 3, 16, 3, 1, 1};
    grad_check_chunk(&d, 3, 2);
    geom e = {WR_LAYER_CONV, 0, 0, 5, 5, 2, 32, 5, 2, 0};
    grad_check(&e, 2);
    geom f = {WR_LAYER_CONV, 0, 0, 4, 4, 4, 16, 5, 2, 1};
    grad_check_chunk(&f, 2, 1);
    // 16 input channels: dX as the direct conv of the padded dz (pad 1 and 0)
    geom h = {WR_LAYER_CONV, 0, 0, 4, 5, 16, 16, 3, 1, 0};
    grad_check_chunk(&h, 2, 1);
    geom i = {WR_LAYER_CONV, 0, 0, 5, 4, 16, 32, 3, 0, 1};
    grad_check(&i, 1);
}

static void test_grad_pool(void **st) {
    (void)st;
    geom a = {WR_LAYER_POOL, 0, 0, 6, 4, 3, 0, 0, 0, 0};
    grad_check(&a, 3);
    geom b = {WR_LAYER_POOL, 0, 0, 5, 5, 2, 0, 0, 0, 0};  // odd size: last row/col unused
    grad_check(&b, 2);
}

static void test_softmax_xent(void **st) {
    (void)st;
    const int B = 4, C = 10;
    float z[40], dz[40];
    uint8_t lab[4] = {0, 3, 9, 3};
    fill(z, 40, -3.0f, 3.0f);
    z[10 + 7] = 50.0f;  // large logit: no overflow thanks to the max shift
    int correct;
    float L = wr_softmax_xent(z, lab, B, C, 2.0f, dz, &correct);
    double Ld = 0;
    int hits = 0;
    double zd[40];
    for (int i = 0; i < 40; i++) zd[i] = z[i];
#define XENT(out)                                                           \
    ({                                                                      \
        double t_ = 0;                                                      \
        for (int b_ = 0; b_ < B; b_++) {                                    \
            double m_ = -1e300, s_ = 0;                                     \
            for (int c_ = 0; c_ < C; c_++) m_ = fmax(m_, zd[b_ * C + c_]);  \
            for (int c_ = 0; c_ < C; c_++) s_ += exp(zd[b_ * C + c_] - m_); \
            t_ += log(s_) + m_ - zd[b_ * C + lab[b_]];                      \
        }                                                                   \
        out = t_ / B;                                                       \
    })
    XENT(Ld);
    assert_true(fabs(L - Ld) < 1e-5 * (1 + Ld));
    for (int b = 0; b < B; b++) {
        int am = 0;
        for (int c = 1; c < C; c++)
            if (z[b * C + c] > z[b * C + am]) am = c;
        hits += am == lab[b];
    }
    assert_int_equal(correct, hits);
    for (int i = 0; i < 40; i++) {
        double keep = zd[i], lp, lm;
        zd[i] = keep + 1e-6;
        XENT(lp);
        zd[i] = keep - 1e-6;
        XENT(lm);
        zd[i] = keep;
        double fd = (lp - lm) / 2e-6;
        if (fabs(dz[i] / 2.0 - fd) > 1e-5) fail_msg("dlogit %d: %g vs %g", i, dz[i] / 2.0, fd);
    }
#undef XENT
    // NULL gradient is allowed
    float L2 = wr_softmax_xent(z, lab, B, C, 1.0f, NULL, NULL);
    assert_true(L2 == L);
}

static void test_relu(void **st) {
    (void)st;
    float x[6] = {-1, 0, 2, -0.0f, 3, -5}, y[6], dy[6] = {1, 2, 3, 4, 5, 6}, dx[6];
    wr_relu_forward(x, y, 6);
    wr_relu_backward(y, dy, dx, 6);
    float ey[6] = {0, 0, 2, 0, 3, 0}, edx[6] = {0, 0, 3, 0, 5, 0};
    assert_memory_equal(y, ey, sizeof ey);
    assert_memory_equal(dx, edx, sizeof edx);
}

static void test_pow2_scale(void **st) {
    (void)st;
    assert_true(wr_layer_pow2_scale(1.0f) == 8.0f);
    assert_true(wr_layer_pow2_scale(0.0f) == 1.0f);
    assert_true(wr_layer_pow2_scale(INFINITY) == 1.0f);
    assert_true(wr_layer_pow2_scale(NAN) == 1.0f);
    for (int i = 0; i < 1000; i++) {
        float a = ldexpf(urand(0.5f, 1.0f), (int)urand(-40, 40));
        float s = wr_layer_pow2_scale(a);
        int e;
        assert_true(frexpf(s, &e) == 0.5f);  // a power of two
        assert_true(a * s >= 8.0f && a * s < 16.0f);
    }
    // quantize: values are E4M3 codes of x*s, and the scale is returned
    float x[5] = {0.01f, -0.02f, 0.003f, 0.0f, 1e-9f}, q[5];
    float s = wr_layer_quantize_e4m3(x, q, 5);
    assert_true(s == 512.0f);  // 0.02 * 512 = 10.24
    for (int i = 0; i < 5; i++)
        assert_true(q[i] == wr_fp8_decode(wr_fp8_encode(x[i] * s, WR_FP8_E4M3B11), WR_FP8_E4M3B11));
    assert_true(q[4] == 0.0f);  // 1e-9 * 512 is below E4M3's min subnormal
}

// Error bound of one rounding to a format with `mbits` mantissa bits, relative.
#define REL(mbits) ldexp(1.0, -(mbits)-1)

// HFP8 forward/backward vs fp32 on the same weights; bounds from the formats:
// each E4M3 rounding moves a value by <= 2^-4 relative (+ half the subnormal
// step 2^-14/s absolute), each E5M2 rounding by <= 2^-3 relative + 2^-17 absolute.
static void hfp8_vs_fp32(const geom *g, int B) {
    wr_layer a, q;
    make_layer(&a, g, 0, 1, B);
    make_layer(&q, g, 1, 1, B);
    size_t np = a.n_w + a.n_b, nx = (size_t)B * a.in_size, ny = (size_t)B * a.out_size;
    float *p = wr_alloc_vec(np * 4), *ga = wr_alloc_vec(np * 4), *gq = wr_alloc_vec(np * 4);
    float *x = wr_alloc_vec(nx * 4), *dy = wr_alloc_vec(ny * 4);
    wr_layer_bind(&a, p, ga);
    wr_layer_bind(&q, p, gq);
    fill(p, a.n_w, -0.1f, 0.1f);
    fill(p + a.n_w, a.n_b, -0.1f, 0.1f);
    fill(x, nx, 0.0f, 2.0f);
    const float S = 4096.0f;
    fill(dy, ny, -0.01f, 0.01f);
    for (size_t i = 0; i < ny; i++) dy[i] *= S;
    wr_layer_forward(&a, x, B);
    wr_layer_forward(&q, x, B);
    // conv: the fp32 im2col of the whole batch (the layer keeps one chunk)
    float *col = NULL;
    if (g->kind == WR_LAYER_CONV) {
        col = malloc((size_t)B * a.OH * a.OW * g->k * g->k * g->C * 4);
        wr_conv_im2col(&a, x, col, B);
    }
    assert_int_equal(wr_layer_backward(&a, dy, B, S), 0);
    assert_int_equal(wr_layer_backward(&q, dy, B, S), 0);
    // forward: |y8 - y32| <= sum_k |x||w| (2 REL(3) + REL(3)^2) + abs terms (pre-ReLU; ReLU is 1-Lipschitz)
    const double ex = ldexp(1.0, -14) / q.sx, ew = ldexp(1.0, -14) / q.sw;
    int K = g->kind == WR_LAYER_LINEAR ? g->in : g->k * g->k * g->C;
    int cols = g->kind == WR_LAYER_LINEAR ? g->out : g->O;
    size_t rows = ny / cols;
    // |x| <= 2 and |w| <= 0.1: a per-output bound from the sum of magnitudes
    int differ = 0;
    for (size_t r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++) {
            double sxw = 0, sw = 0, sx = 0;
            // gather the inputs that feed this output through the layer's own col/x buffers
            const float *xin = g->kind == WR_LAYER_LINEAR ? x + r * K : col + r * K;
            for (int k = 0; k < K; k++) {
                sxw += fabs(xin[k]) * fabs(p[k * cols + j]);
                sw += fabs(p[k * cols + j]);
                sx += fabs(xin[k]);
            }
            double tol = sxw * (2 * REL(3) + REL(3) * REL(3)) + sw * ex + sx * ew + 1e-6;
            double diff = fabs(q.y[r * cols + j] - a.y[r * cols + j]);
            if (diff > tol)
                fail_msg("y[%zu,%d]: fp8 %g fp32 %g tol %g", r, j, q.y[r * cols + j], a.y[r * cols + j], tol);
            differ += diff > 0;
        }
    assert_true(differ > 0);  // the FP8 path does round
    if (g->relu) goto done;   // ReLU masks may differ where |y| is within the bound of 0
    // dW: sum over rows of |x||dz|, with dz rounded to E5M2 and x to E4M3
    const double edz = ldexp(1.0, -17) / S;
    for (int k = 0; k < K; k++)
        for (int j = 0; j < cols; j++) {
            double sxd = 0, sd = 0, sx = 0;
            for (size_t r = 0; r < rows; r++) {
                const float *xin = g->kind == WR_LAYER_LINEAR ? x + r * K : col + r * K;
                double dzv = fabs(a.dz[r * cols + j]) / S;
                sxd += fabs(xin[k]) * dzv;
                sd += dzv;
                sx += fabs(xin[k]);
            }
            double tol = sxd * (REL(2) + REL(3) + REL(2) * REL(3)) + sd * ex + sx * edz + 1e-7;
            double diff = fabs(gq[(size_t)k * cols + j] - ga[(size_t)k * cols + j]);
            if (diff > tol)
                fail_msg("dW[%d,%d]: fp8 %g fp32 %g tol %g", k, j, gq[(size_t)k * cols + j],
                         ga[(size_t)k * cols + j], tol);
        }
    // dx (linear: exact bound; conv: dcol summed by col2im, checked through the sum)
    if (g->kind == WR_LAYER_LINEAR) {
        for (int b = 0; b < B; b++)
            for (int k = 0; k < K; k++) {
                double sdw = 0, sd = 0, sw = 0;
                for (int j = 0; j < cols; j++) {
                    double dzv = fabs(a.dz[b * cols + j]);
                    sdw += dzv * fabs(p[k * cols + j]);
                    sd += dzv;
                    sw += fabs(p[k * cols + j]);
                }
                double tol = sdw * (REL(2) + REL(3) + REL(2) * REL(3)) + sd * ew + sw * ldexp(1.0, -17) +
                             1e-6;
                double diff = fabs(q.dx[b * K + k] - a.dx[b * K + k]);
                if (diff > tol)
                    fail_msg("dx[%d,%d]: fp8 %g fp32 %g tol %g", b, k, q.dx[b * K + k], a.dx[b * K + k], tol);
            }
    } else {
        double num = 0, den = 0;
        for (size_t i = 0; i < nx; i++) {
            num += fabs(q.dx[i] - a.dx[i]);
            den += fabs(a.dx[i]);
        }
        assert_true(num <= (REL(2) + REL(3) + 0.01) * den);
    }
    // biases are fp32 from the unrounded error: identical
    assert_memory_equal(gq + a.n_w, ga + a.n_w, a.n_b * 4);
done:
    free(col);
    wr_layer_free(&a);
    wr_layer_free(&q);
    free(p), free(ga), free(gq), free(x), free(dy);
}

static void test_hfp8_linear(void **st) {
    (void)st;
    geom a = {WR_LAYER_LINEAR, 100, 30, 0, 0, 0, 0, 0, 0, 0};
    hfp8_vs_fp32(&a, 16);
    a.relu = 1;
    hfp8_vs_fp32(&a, 16);
}

static void test_hfp8_conv(void **st) {
    (void)st;
    geom a = {WR_LAYER_CONV, 0, 0, 8, 8, 3, 5, 5, 2, 0};
    hfp8_vs_fp32(&a, 3);
    a.relu = 1;
    hfp8_vs_fp32(&a, 3);
    // 16 channels in and out: the direct conv (BF16 forward and dX where the CPU has it)
    geom b = {WR_LAYER_CONV, 0, 0, 6, 6, 16, 16, 3, 1, 0};
    hfp8_vs_fp32(&b, 2);
}

// The layer's codes are the E4M3-b11 / E5M2 encodings of sx x, sw w and dz, and
// its three GEMMs are wr_fp8_gemm on them, bit for bit (same single sgemm on the
// same decoded values, the same power-of-two alphas). They also equal sgemm on
// the fake-quantized fp32 values (the former emulation) up to summation order.
static void test_matches_fp8_gemm(void **st) {
    (void)st;
    const int B = 9, IN = 40, OUT = 12;
    wr_layer l;
    wr_layer_linear_init(&l, IN, OUT, 0, 1, 1, B);
    size_t np = (size_t)IN * OUT + OUT;
    float *p = wr_alloc_vec(np * 4), *gr = wr_alloc_vec(np * 4), *x = wr_alloc_vec(B * IN * 4);
    float *dy = wr_alloc_vec(B * OUT * 4);
    wr_layer_bind(&l, p, gr);
    fill(p, (size_t)IN * OUT, -0.2f, 0.2f);
    memset(p + IN * OUT, 0, OUT * 4);
    fill(x, (size_t)B * IN, 0.0f, 3.0f);
    const float S = 1024;
    fill(dy, (size_t)B * OUT, -0.05f * S, 0.05f * S);
    wr_layer_forward(&l, x, B);
    assert_int_equal(wr_layer_backward(&l, dy, B, S), 0);
    uint8_t *xc = malloc(B * IN), *wc = malloc(IN * OUT), *dc = malloc(B * OUT);
    float *tmp = malloc(sizeof(float) * IN * OUT);
    for (int i = 0; i < B * IN; i++) tmp[i] = x[i] * l.sx;
    wr_fp8_encode_array(tmp, xc, (size_t)B * IN, WR_FP8_E4M3B11);
    for (int i = 0; i < IN * OUT; i++) tmp[i] = p[i] * l.sw;
    wr_fp8_encode_array(tmp, wc, (size_t)IN * OUT, WR_FP8_E4M3B11);
    wr_fp8_encode_array(dy, dc, (size_t)B * OUT, WR_FP8_E5M2);  // no ReLU: dz = dy
    assert_memory_equal(l.xc, xc, (size_t)B * IN);
    assert_memory_equal(l.wc, wc, (size_t)IN * OUT);
    assert_memory_equal(l.dzc, dc, (size_t)B * OUT);
    float *y = malloc(sizeof(float) * B * OUT), *dw = malloc(sizeof(float) * IN * OUT),
          *dx = malloc(sizeof(float) * B * IN);
    wr_fp8_gemm(0, 0, B, OUT, IN, 1.0f / (l.sx * l.sw), xc, WR_FP8_E4M3B11, IN, wc, WR_FP8_E4M3B11, OUT, 0.0f,
                y, OUT);
    wr_fp8_gemm(1, 0, IN, OUT, B, 1.0f / (S * l.sx), xc, WR_FP8_E4M3B11, IN, dc, WR_FP8_E5M2, OUT, 0.0f, dw,
                OUT);
    wr_fp8_gemm(0, 1, B, IN, OUT, 1.0f / l.sw, dc, WR_FP8_E5M2, OUT, wc, WR_FP8_E4M3B11, OUT, 0.0f, dx, IN);
    assert_memory_equal(y, l.y, sizeof(float) * B * OUT);  // biases are 0
    assert_memory_equal(dw, gr, sizeof(float) * IN * OUT);
    assert_memory_equal(dx, l.dx, sizeof(float) * B * IN);
    // The emulation: sgemm on fake-quantized fp32 values, same alphas.
    float *xq = malloc(sizeof(float) * B * IN), *wq = malloc(sizeof(float) * IN * OUT),
          *dq = malloc(sizeof(float) * B * OUT);
    assert_true(wr_layer_quantize_e4m3(x, xq, (size_t)B * IN) == l.sx);
    assert_true(wr_layer_quantize_e4m3(p, wq, (size_t)IN * OUT) == l.sw);
    memcpy(dq, dy, sizeof(float) * B * OUT);
    wr_fp8_quantize_inplace(dq, (size_t)B * OUT, WR_FP8_E5M2);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, OUT, IN, 1.0f / (l.sx * l.sw), xq, IN, wq, OUT,
                0.0f, y, OUT);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, IN, OUT, B, 1.0f / (S * l.sx), xq, IN, dq, OUT, 0.0f,
                dw, OUT);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, IN, OUT, 1.0f / l.sw, dq, OUT, wq, OUT, 0.0f, dx,
                IN);
    for (int i = 0; i < B * OUT; i++) assert_true(fabsf(y[i] - l.y[i]) <= 1e-5f * (1 + fabsf(y[i])));
    for (int i = 0; i < IN * OUT; i++) assert_true(fabsf(dw[i] - gr[i]) <= 1e-5f * (1 + fabsf(dw[i])));
    for (int i = 0; i < B * IN; i++) assert_true(fabsf(dx[i] - l.dx[i]) <= 1e-5f * (1 + fabsf(dx[i])));
    wr_layer_free(&l);
    free(p), free(gr), free(x), free(dy), free(xc), free(wc), free(dc), free(tmp), free(y), free(dw),
        free(dx);
    free(xq), free(wq), free(dq);
}

// conv HFP8 forward (im2col on the codes, padding = code 0) against the double
// product of the fake-quantized input and weights, within fp32 summation error.
static void conv_fp8_emulation_case(geom g) {
    const int B = 2;
    wr_layer l;
    make_layer(&l, &g, 1, 1, B);
    size_t np = l.n_w + l.n_b, nx = (size_t)B * l.in_size, ny = (size_t)B * l.out_size;
    float *p = wr_alloc_vec(np * 4), *gr = wr_alloc_vec(np * 4), *x = wr_alloc_vec(nx * 4);
    float *xq = malloc(nx * 4), *wq = malloc(l.n_w * 4);
    wr_layer_bind(&l, p, gr);
    fill(p, np, -0.3f, 0.3f);
    fill(x, nx, -1.0f, 2.0f);
    wr_layer_forward(&l, x, B);
    float sx = wr_layer_quantize_e4m3(x, xq, nx), sw = wr_layer_quantize_e4m3(p, wq, l.n_w);
    assert_true(sx == l.sx && sw == l.sw);
    double *xd = calloc(nx, 8), *wd = calloc(l.n_w, 8), *bd = calloc(l.n_b, 8), *yd = malloc(ny * 8),
           *ad = malloc(ny * 8), *one = malloc(nx * 8);
    for (size_t i = 0; i < nx; i++) xd[i] = xq[i], one[i] = fabs(xq[i]);
    for (size_t i = 0; i < l.n_w; i++) wd[i] = wq[i];
    ref_forward(&g, xd, wd, bd, B, yd);  // sum of exact products
    for (size_t i = 0; i < l.n_w; i++) wd[i] = fabs(wq[i]);
    ref_forward(&g, one, wd, bd, B, ad);  // sum of |products|
    const int K = g.k * g.k * g.C, O = g.O;
    for (size_t i = 0; i < ny; i++) {
        double want = yd[i] / ((double)sx * sw) + p[l.n_w + i % O];
        double tol = (K + 4) * 0x1p-24 * (ad[i] / ((double)sx * sw) + fabs(p[l.n_w + i % O])) + 1e-30;
        if (!(fabs(l.y[i] - want) <= tol)) fail_msg("y[%zu] = %.9g, emulation %.9g", i, l.y[i], want);
    }
    wr_layer_free(&l);
    free(p), free(gr), free(x), free(xq), free(wq), free(xd), free(wd), free(bd), free(yd), free(ad),
        free(one);
}

static void test_conv_fp8_matches_emulation(void **st) {
    (void)st;
    conv_fp8_emulation_case((geom){WR_LAYER_CONV, 0, 0, 7, 6, 3, 5, 3, 1, 0});    // im2col + sgemm
    conv_fp8_emulation_case((geom){WR_LAYER_CONV, 0, 0, 7, 6, 3, 16, 3, 1, 0});   // fp32 direct conv
    conv_fp8_emulation_case((geom){WR_LAYER_CONV, 0, 0, 9, 8, 16, 32, 5, 2, 0});  // BF16 direct conv
}

// The decoded-operand caches: two steps with new weights and new inputs in
// between give the same bits with fp8_cache on and off (so stale decodings are
// never used), and each operand (X or col, W, dZ) is decoded once per step.
static void cache_case(const geom *g, int B) {
    wr_layer a, c;  // a: caches off, c: caches on
    make_layer(&a, g, 1, 1, B);
    make_layer(&c, g, 1, 1, B);
    a.fp8_cache = 0;
    size_t np = a.n_w + a.n_b, nx = (size_t)B * a.in_size, ny = (size_t)B * a.out_size;
    float *p = wr_alloc_vec(np * 4), *ga = wr_alloc_vec(np * 4), *gc = wr_alloc_vec(np * 4);
    float *x = wr_alloc_vec(nx * 4), *dy = wr_alloc_vec(ny * 4);
    wr_layer_bind(&a, p, ga);
    wr_layer_bind(&c, p, gc);
    for (int step = 0; step < 3; step++) {
        fill(p, np, -0.2f, 0.2f);  // an optimizer step in place: same pointer
        fill(x, nx, 0.0f, 2.0f);
        fill(dy, ny, -50.0f, 50.0f);
        uint64_t d0[3] = {c.cx.decodes, c.cw.decodes, c.cdz.decodes};
        wr_layer_forward(&a, x, B);
        wr_layer_forward(&c, x, B);
        assert_memory_equal(a.y, c.y, ny * 4);
        assert_int_equal(wr_layer_backward(&a, dy, B, 64.0f), 0);
        assert_int_equal(wr_layer_backward(&c, dy, B, 64.0f), 0);
        assert_memory_equal(ga, gc, np * 4);
        assert_memory_equal(a.dx, c.dx, nx * 4);
        assert_true(c.cx.decodes == d0[0] + 1 && c.cw.decodes == d0[1] + 1 && c.cdz.decodes == d0[2] + 1);
        if (g->kind == WR_LAYER_LINEAR)
            assert_true(a.cx.decodes == 0 && a.cw.decodes == 0 && a.cdz.decodes == 0);
        else  // a conv always decodes into its caches (its chunks read them)
            assert_true(a.cx.decodes == c.cx.decodes && a.cdz.decodes == c.cdz.decodes);
    }
    // A smaller batch changes the X/dZ shapes: decoded again, still equal.
    wr_layer_forward(&a, x, B - 1);
    wr_layer_forward(&c, x, B - 1);
    assert_memory_equal(a.y, c.y, (size_t)(B - 1) * a.out_size * 4);
    wr_layer_free(&a);
    wr_layer_free(&c);
    free(p), free(ga), free(gc), free(x), free(dy);
}

static void test_fp8_cache(void **st) {
    (void)st;
    geom a = {WR_LAYER_LINEAR, 70, 33, 0, 0, 0, 0, 0, 0, 1};
    cache_case(&a, 11);
    geom b = {WR_LAYER_CONV, 0, 0, 8, 7, 3, 4, 3, 1, 1};
    cache_case(&b, 3);
}

// Chunked conv (fp32 and HFP8): chunks of 1 and 2 images give the outputs of
// one whole-batch chunk within fp32 summation error (the rows of y and dx are
// the same dot products; dW sums the chunks' partial products in order).
static void conv_chunks_case(int fp8, int O, int C) {
    geom g = {WR_LAYER_CONV, 0, 0, 7, 6, C, O, 3, 1, 1};
    const int B = 5;
    wr_layer l[3];
    for (int i = 0; i < 3; i++) make_layer(&l[i], &g, fp8, 1, B);
    assert_int_equal(l[0].conv_chunk, B);
    l[1].conv_chunk = 1;
    l[2].conv_chunk = 2;
    size_t np = l[0].n_w + l[0].n_b, nx = (size_t)B * l[0].in_size, ny = (size_t)B * l[0].out_size;
    float *p = wr_alloc_vec(np * 4), *gr[3], *x = wr_alloc_vec(nx * 4), *dy = wr_alloc_vec(ny * 4);
    fill(p, np, -0.3f, 0.3f);
    fill(x, nx, -1.0f, 2.0f);
    fill(dy, ny, -50.0f, 50.0f);
    for (int i = 0; i < 3; i++) {
        gr[i] = wr_alloc_vec(np * 4);
        wr_layer_bind(&l[i], p, gr[i]);
        wr_layer_forward(&l[i], x, B);
        assert_int_equal(wr_layer_backward(&l[i], dy, B, 64.0f), 0);
    }
    for (int i = 1; i < 3; i++) {
        for (size_t j = 0; j < ny; j++)
            assert_true(fabsf(l[i].y[j] - l[0].y[j]) <= 1e-5f * (1 + fabsf(l[0].y[j])));
        for (size_t j = 0; j < nx; j++)
            assert_true(fabsf(l[i].dx[j] - l[0].dx[j]) <= 1e-5f * (1 + fabsf(l[0].dx[j])));
        for (size_t j = 0; j < np; j++)
            assert_true(fabsf(gr[i][j] - gr[0][j]) <= 1e-5f * (1 + fabsf(gr[0][j])));
    }
    for (int i = 0; i < 3; i++) wr_layer_free(&l[i]), free(gr[i]);
    free(p), free(x), free(dy);
}

static void test_conv_chunks(void **st) {
    (void)st;
    conv_chunks_case(0, 5, 3);  // im2col + sgemm
    conv_chunks_case(1, 5, 3);
    conv_chunks_case(0, 16, 3);  // the direct conv where the CPU has AVX2
    conv_chunks_case(1, 32, 3);
    conv_chunks_case(1, 16, 16);  // HFP8: BF16 forward and dX where the CPU has AVX512_BF16
    conv_chunks_case(0, 32, 16);  // fp32: direct dX
}

// Max-pool: the vectorized forward/backward give the bits of the scalar
// references (y, arg, dx) on ties, NaN, +-0 and odd sizes, for several C,
// on 3 threads (ranges of images).
static void pool_case(int H, int W, int C, int B) {
    wr_layer v, r;
    wr_layer_pool_init(&v, H, W, C, 1, B);
    wr_layer_set_threads(&v, 3);
    wr_layer_pool_init(&r, H, W, C, 1, B);
    size_t nx = (size_t)B * v.in_size, ny = (size_t)B * v.out_size;
    float *x = wr_alloc_vec(nx * 4), *dy = wr_alloc_vec(ny * 4);
    for (size_t i = 0; i < nx; i++) {
        float u = urand(0.0f, 1.0f);
        x[i] = u < 0.3f ? (float)(int)urand(-2.0f, 2.0f) : urand(-1.0f, 1.0f);  // many ties
        if (u > 0.97f) x[i] = NAN;
        if (u > 0.95f && u <= 0.97f) x[i] = -0.0f;
    }
    for (size_t i = 0; i < ny; i++) dy[i] = urand(0.0f, 1.0f) < 0.05f ? -0.0f : urand(-3.0f, 3.0f);
    wr_pool_forward(&v, x, B);
    wr_pool_forward_ref(&r, x, B);
    assert_memory_equal(v.y, r.y, ny * 4);
    assert_memory_equal(v.arg, r.arg, ny * 4);
    memset(v.dx, 0x7f, nx * 4);  // garbage: the backward must overwrite all of dx
    wr_pool_backward(&v, dy, B);
    wr_pool_backward_ref(&r, dy, B);
    assert_memory_equal(v.dx, r.dx, nx * 4);
    wr_layer_free(&v);
    wr_layer_free(&r);
    free(x), free(dy);
}

static void test_pool_vs_ref(void **st) {
    (void)st;
    pool_case(28, 28, 16, 3);
    pool_case(14, 14, 32, 2);
    pool_case(6, 4, 3, 2);
    pool_case(5, 7, 1, 3);
    pool_case(9, 8, 17, 2);
}

// A conv's threads: 2 and 3 threads give the bits of one (forward y, dW, dx),
// fp32 (direct forward, dX; dW as im2col + sgemm in 4 groups of images: K =
// 144) and HFP8 (BF16 where the CPU has it). B = 3: one of the dW groups is
// empty; B = 16 in chunks of 1: each group sums 4 chunks.
static void conv_threads_case(int fp8, int B, int chunk) {
    geom g = {WR_LAYER_CONV, 0, 0, 6, 7, 16, 16, 3, 1, 1};
    wr_layer l[3];
    size_t np = 0, nx = 0, ny = 0;
    float *gr[3], *p = NULL, *x = NULL, *dy = NULL;
    for (int i = 0; i < 3; i++) {
        make_layer(&l[i], &g, fp8, 1, B);
        l[i].conv_chunk = chunk;
        wr_layer_set_threads(&l[i], i + 1);
    }
    assert_int_equal(l[2].threads, 3);
    assert_false(wr_conv_dw_direct(&l[0]));
    np = l[0].n_w + l[0].n_b, nx = (size_t)B * l[0].in_size, ny = (size_t)B * l[0].out_size;
    p = wr_alloc_vec(np * 4), x = wr_alloc_vec(nx * 4), dy = wr_alloc_vec(ny * 4);
    fill(p, np, -0.3f, 0.3f);
    fill(x, nx, -1.0f, 2.0f);
    fill(dy, ny, -50.0f, 50.0f);
    for (int i = 0; i < 3; i++) {
        gr[i] = wr_alloc_vec(np * 4);
        wr_layer_bind(&l[i], p, gr[i]);
        wr_layer_forward(&l[i], x, B);
        assert_int_equal(wr_layer_backward(&l[i], dy, B, 64.0f), 0);
    }
    for (int i = 1; i < 3; i++) {
        assert_memory_equal(l[i].y, l[0].y, ny * 4);
        assert_memory_equal(gr[i], gr[0], np * 4);
        assert_memory_equal(l[i].dx, l[0].dx, nx * 4);
    }
    for (int i = 0; i < 3; i++) wr_layer_free(&l[i]), free(gr[i]);
    free(p), free(x), free(dy);
}

static void test_conv_threads(void **st) {
    (void)st;
    conv_threads_case(0, 7, 2);
    conv_threads_case(1, 7, 2);
    conv_threads_case(0, 3, 2);
    conv_threads_case(1, 3, 2);
    conv_threads_case(0, 16, 1);
    wr_layer l;  // clamped
    make_layer(&l, &(geom){WR_LAYER_CONV, 0, 0, 6, 7, 16, 16, 3, 1, 1}, 0, 1, 2);
    wr_layer_set_threads(&l, 99);
    assert_int_equal(l.threads, WR_LAYER_MAX_THREADS);
    wr_layer_set_threads(&l, 0);
    assert_int_equal(l.threads, 1);
    wr_layer_free(&l);
}

// The layer's dX is the BF16 kernel's on its decoded caches, bit for bit (so
// the layer took that path, not the FP8 GEMM, whose sums stay within the same
// bound).
static void bf16_dx_is_kernel(const wr_layer *l, int B) {
    const int IN = l->in_size, OUT = l->out_size;
    uint32_t *aw = malloc(4 * (size_t)B * OUT / 2), *tmp = malloc(4 * (size_t)IN * OUT / 2),
             *bp = malloc(4 * (size_t)IN * OUT / 2);
    float *dx = malloc(sizeof(float) * B * IN);
    wr_bf16_pairs(l->cdz.buf, B, OUT, OUT, aw);
    wr_bf16_pack_nt(l->cw.buf, IN, OUT, OUT, tmp, bp);
    wr_bf16_gemm_nt(IN, OUT, 1.0f / l->sw, aw, bp, dx, 0, B);
    assert_memory_equal(dx, l->dx, sizeof(float) * B * IN);
    free(aw), free(tmp), free(bp), free(dx);
}

// Linear layers on the sparse GEMMs (layers_sparse.h; N = 48, a multiple of
// 16): fp32 y and dW equal the scalar reference's chains bit for bit at every
// vector level the CPU has (dense and sparse X and dZ), dX is sgemm's (fp32),
// or for HFP8 on an AVX512_BF16 CPU at the AVX-512 level the BF16 GEMM's
// (layers_bf16.h, against its reference); 2 and 3 threads give the bits of
// one (fp32 and HFP8).
static void linear_sparse_case(int fp8, float zx, float zdz) {
    const int B = 64, IN = 64, OUT = 48;
    const float S = 64.0f;
    wr_layer l[3];
    size_t np = (size_t)IN * OUT + OUT;
    float *p = wr_alloc_vec(np * 4), *x = wr_alloc_vec((size_t)B * IN * 4), *dy = wr_alloc_vec(B * OUT * 4);
    float *gr[3], *ref = malloc(sizeof(float) * IN * OUT);
    fill(p, np, -0.3f, 0.3f);
    memset(p + IN * OUT, 0, OUT * 4);  // zero biases: y is the product
    fill(x, (size_t)B * IN, 0.0f, 2.0f);
    fill(dy, (size_t)B * OUT, -50.0f, 50.0f);
    for (int i = 0; i < B * IN; i++) x[i] = (i * 2654435761u) % 1000 < zx * 1000 ? 0.0f : x[i];
    for (int i = 0; i < B * OUT; i++) dy[i] = (i * 2246822519u) % 1000 < zdz * 1000 ? 0.0f : dy[i];
    for (int i = 0; i < 3; i++) {
        wr_layer_linear_init(&l[i], IN, OUT, 0, fp8, 1, B);
        assert_non_null(l[i].sp);
        wr_layer_set_threads(&l[i], i + 1);
        gr[i] = wr_alloc_vec(np * 4);
        wr_layer_bind(&l[i], p, gr[i]);
        wr_layer_forward(&l[i], x, B);
        assert_int_equal(wr_layer_backward(&l[i], dy, B, S), 0);
    }
    for (int i = 1; i < 3; i++) {
        assert_memory_equal(l[i].y, l[0].y, sizeof(float) * B * OUT);
        assert_memory_equal(gr[i], gr[0], np * 4);
        assert_memory_equal(l[i].dx, l[0].dx, sizeof(float) * B * IN);
    }
    if (!fp8) {
        float *y = malloc(sizeof(float) * B * OUT), *dx = malloc(sizeof(float) * B * IN);
        wr_spmm_ref(0, B, IN, x, IN, p, OUT, OUT, 1.0f, y, OUT);
        wr_spmm_ref(1, IN, B, x, IN, dy, OUT, OUT, 1.0f / S, ref, OUT);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, IN, OUT, 1.0f, dy, OUT, p, OUT, 0.0f, dx, IN);
        assert_memory_equal(y, l[0].y, sizeof(float) * B * OUT);
        assert_memory_equal(ref, gr[0], sizeof(float) * IN * OUT);
        assert_memory_equal(dx, l[0].dx, sizeof(float) * B * IN);
        free(y), free(dx);
    } else {  // HFP8: y and dW are the reference chains on the decoded caches, alphas as the layer's
        float *y = malloc(sizeof(float) * B * OUT);
        assert_true(l[0].cx.valid && l[0].cw.valid && l[0].cdz.valid);
        wr_spmm_ref(0, B, IN, l[0].cx.buf, IN, l[0].cw.buf, OUT, OUT, 1.0f / (l[0].sx * l[0].sw), y, OUT);
        wr_spmm_ref(1, IN, B, l[0].cx.buf, IN, l[0].cdz.buf, OUT, OUT, (1.0f / S) / l[0].sx, ref, OUT);
        assert_memory_equal(y, l[0].y, sizeof(float) * B * OUT);
        assert_memory_equal(ref, gr[0], sizeof(float) * IN * OUT);
        if (wr_bf16_nt_ok(IN, OUT)) {  // dX with BF16 dot products: the kernel's bits, its reference's bound
            float *dx = malloc(sizeof(float) * B * IN);
            assert_non_null(l[0].dz2);
            bf16_dx_is_kernel(&l[0], B);
            wr_bf16_gemm_nt_ref(B, IN, OUT, 1.0f / l[0].sw, l[0].cdz.buf, OUT, l[0].cw.buf, OUT, dx, IN);
            for (int r = 0; r < B; r++)
                for (int c = 0; c < IN; c++) {
                    double mag = 0;
                    for (int k = 0; k < OUT; k++)
                        mag += fabs((double)l[0].cdz.buf[r * OUT + k] * l[0].cw.buf[c * OUT + k]);
                    assert_true(fabs(dx[r * IN + c] - l[0].dx[r * IN + c]) <=
                                (OUT + 2) * 0x1p-24 * mag / l[0].sw);
                }
            free(dx);
        } else {
            assert_null(l[0].dz2);
        }
        free(y);
    }
    for (int i = 0; i < 3; i++) wr_layer_free(&l[i]), free(gr[i]);
    free(p), free(x), free(dy), free(ref);
}

// An HFP8 layer whose shape takes the BF16 dX one way only (N = in = 32 a
// multiple of 16, K = out = 250 even; not the other way round): at the AVX-512
// level of an AVX512_BF16 CPU its dX is the kernel's, elsewhere no pairs are
// allocated and the FP8 GEMM runs. The sums are long enough that sgemm's
// order gives other bits (checked), so the FP8 GEMM's dX could not pass.
static void test_bf16_dx_layer(void **st) {
    (void)st;
    const int B = 19, IN = 32, OUT = 250;
    g_ctr = 1u << 20;  // data of its own, not what the tests before it left
    wr_layer l;
    wr_layer_linear_init(&l, IN, OUT, 1, 1, 1, B);
    size_t np = (size_t)IN * OUT + OUT;
    float *p = wr_alloc_vec(np * 4), *g = wr_alloc_vec(np * 4), *x = wr_alloc_vec(B * IN * 4);
    float *dy = wr_alloc_vec(B * OUT * 4);
    fill(p, np, -0.3f, 0.3f);
    fill(x, (size_t)B * IN, 0.0f, 2.0f);
    fill(dy, (size_t)B * OUT, -40.0f, 40.0f);
    // FP8 products have few bits: over a narrow range of magnitudes a sum is
    // exact in any order. 12 binades of dy make sgemm's order show.
    for (int i = 0; i < B * OUT; i++) dy[i] = ldexpf(dy[i], i % 12 - 10);
    wr_layer_bind(&l, p, g);
    wr_layer_forward(&l, x, B);
    assert_int_equal(wr_layer_backward(&l, dy, B, 64.0f), 0);
    const int on = wr_bf16_nt_ok(IN, OUT);
    assert_false(wr_bf16_nt_ok(OUT, IN));
    if (on) {
        bf16_dx_is_kernel(&l, B);
        float *alt = malloc(sizeof(float) * B * IN);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, IN, OUT, 1.0f / l.sw, l.cdz.buf, OUT,
                    l.cw.buf, OUT, 0.0f, alt, IN);
        assert_true(memcmp(alt, l.dx, sizeof(float) * B * IN) != 0);
        free(alt);
    } else {
        assert_null(l.dz2);
    }
    wr_layer_free(&l);
    free(p), free(g), free(x), free(dy);
    if (!on) skip();
}

static void test_linear_sparse(void **st) {
    (void)st;
    int ran = 0;
    for (int lvl = WR_ISA_AVX2; lvl <= (int)wr_cpu_max_level(); lvl++) {
        wr_cpu_force_level(lvl);
        if ((int)wr_cpu_level() != lvl) continue;  // WREN_SIMD caps it lower
        ran++;
        for (int fp8 = 0; fp8 < 2; fp8++) {
            linear_sparse_case(fp8, 0.5f, 0.1f);
            linear_sparse_case(fp8, 0.1f, 0.7f);
        }
    }
    // below AVX2 no lists are allocated (they would never be used): sgemm
    wr_cpu_force_level(WR_ISA_SCALAR);
    wr_layer ls;
    wr_layer_linear_init(&ls, 64, 48, 0, 0, 1, 8);
    assert_null(ls.sp);
    wr_layer_free(&ls);
    wr_cpu_force_level(-1);
    if (!ran) skip();
}

static void test_overflow(void **st) {
    (void)st;
    const int B = 4, IN = 8, OUT = 5;
    wr_layer l;
    wr_layer_linear_init(&l, IN, OUT, 0, 1, 1, B);
    float p[45], gr[45], x[32], dy[20];
    wr_layer_bind(&l, p, gr);
    fill(p, 45, -0.3f, 0.3f);
    fill(x, 32, 0.0f, 1.0f);
    fill(dy, 20, -1.0f, 1.0f);
    wr_layer_forward(&l, x, B);
    assert_int_equal(wr_layer_backward(&l, dy, B, 1.0f), 0);
    dy[7] = 60000.0f;  // past the E5M2 max
    assert_int_equal(wr_layer_backward(&l, dy, B, 1.0f), 1);
    dy[7] = NAN;
    assert_int_equal(wr_layer_backward(&l, dy, B, 1.0f), 1);
    dy[7] = INFINITY;
    assert_int_equal(wr_layer_backward(&l, dy, B, 1.0f), 1);
    dy[7] = 57344.0f;  // the max itself is fine
    assert_int_equal(wr_layer_backward(&l, dy, B, 1.0f), 0);
    wr_layer_free(&l);
}

int main(void) {
    // as the worker runs the layers (model.h): their threads call sgemm at once
    openblas_set_num_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grad_linear),
        cmocka_unit_test(test_grad_conv),
        cmocka_unit_test(test_grad_pool),
        cmocka_unit_test(test_softmax_xent),
        cmocka_unit_test(test_relu),
        cmocka_unit_test(test_pow2_scale),
        cmocka_unit_test(test_hfp8_linear),
        cmocka_unit_test(test_hfp8_conv),
        cmocka_unit_test(test_matches_fp8_gemm),
        cmocka_unit_test(test_conv_fp8_matches_emulation),
        cmocka_unit_test(test_fp8_cache),
        cmocka_unit_test(test_conv_chunks),
        cmocka_unit_test(test_pool_vs_ref),
        cmocka_unit_test(test_conv_threads),
        cmocka_unit_test(test_linear_sparse),
        cmocka_unit_test(test_bf16_dx_layer),
        cmocka_unit_test(test_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
