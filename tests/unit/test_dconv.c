// test_dconv.c — the direct conv kernels (worker/layers_thin.h) at every ISA
// level this CPU has, bit for bit against the scalar references (fmaf chains)
// on an explicit im2col: forward and dW (beta 0 over NaN, beta != 0), shapes
// of the cnn and odd ones (C 1-16, k 3 and 5, pad 0-2, rows shorter than a
// pixel block, K past a tap block), N 16 and 32; wr_thin_ok's rules.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "layers_thin.h"
#include "rng.h"
#include "wr_common.h"

static uint32_t g_ctr;
static float urand(float lo, float hi) {
    uint32_t r = wr_rng_u32(wr_rng_key_make(11, 3, 5), g_ctr++);
    return lo + (hi - lo) * (float)(r >> 8) * (1.0f / 16777216.0f);
}

typedef struct {
    int n, H, W, C, k, pad, N;
} shape;

static void run_shape(const shape *s) {
    const int Hp = s->H + 2 * s->pad, Wp = s->W + 2 * s->pad, OH = Hp - s->k + 1, OW = Wp - s->k + 1;
    const int K = s->k * s->k * s->C, N = s->N, M = s->n * OH * OW;
    float *x = malloc(sizeof(float) * s->n * s->H * s->W * s->C);
    float *xp = calloc((size_t)s->n * Hp * Wp * s->C, sizeof(float));
    float *col = malloc(sizeof(float) * (size_t)M * K), *w = malloc(sizeof(float) * K * N);
    float *dz = malloc(sizeof(float) * (size_t)M * N), *y = malloc(sizeof(float) * (size_t)M * N);
    float *yr = malloc(sizeof(float) * (size_t)M * N), *dw = malloc(sizeof(float) * K * N);
    float *dwr = malloc(sizeof(float) * K * N);
    int *offs = malloc(sizeof(int) * K);
    for (int i = 0; i < s->n * s->H * s->W * s->C; i++) x[i] = urand(0, 1) < 0.2f ? 0.0f : urand(-2, 2);
    for (int i = 0; i < K * N; i++) w[i] = urand(-0.5f, 0.5f);
    for (int i = 0; i < M * N; i++) dz[i] = urand(-100, 100);
    for (int b = 0; b < s->n; b++)  // padded copy and explicit im2col
        for (int h = 0; h < s->H; h++)
            memcpy(xp + (((size_t)b * Hp + h + s->pad) * Wp + s->pad) * s->C,
                   x + (((size_t)b * s->H + h) * s->W) * s->C, sizeof(float) * s->W * s->C);
    for (int b = 0, r = 0; b < s->n; b++)
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++, r++)
                for (int kh = 0, q = 0; kh < s->k; kh++)
                    for (int kw = 0; kw < s->k; kw++)
                        for (int c = 0; c < s->C; c++, q++) {
                            int ih = oh + kh - s->pad, iw = ow + kw - s->pad;
                            int in = ih >= 0 && iw >= 0 && ih < s->H && iw < s->W;
                            col[(size_t)r * K + q] = in ? x[(((size_t)b * s->H + ih) * s->W + iw) * s->C + c]
                                                        : 0.0f;
                            offs[q] = (kh * Wp + kw) * s->C + c;
                        }
    wr_dconv_geom g = {s->n, OH, OW, Hp, Wp, s->C, K, N, offs};
    const float alpha = 0.375f, beta = 1.5f;
    wr_thin_nn_ref(M, N, K, alpha, col, K, w, yr);
    for (int lvl = WR_ISA_AVX2; lvl <= (int)wr_cpu_max_level(); lvl++) {
        wr_cpu_force_level(lvl);
        assert_true(wr_thin_ok(N, K));
        memset(y, 0xff, sizeof(float) * (size_t)M * N);
        wr_dconv_fwd(&g, xp, w, alpha, y);
        assert_memory_equal(y, yr, sizeof(float) * (size_t)M * N);
        for (int i = 0; i < K * N; i++) dw[i] = NAN, dwr[i] = NAN;  // beta 0 overwrites NaN
        wr_thin_tn_ref(M, N, K, alpha, col, K, dz, 0.0f, dwr);
        wr_dconv_dw(&g, xp, dz, alpha, 0.0f, dw);
        assert_memory_equal(dw, dwr, sizeof(float) * K * N);
        for (int i = 0; i < K * N; i++) dw[i] = dwr[i] = urand(-1, 1);
        wr_thin_tn_ref(M, N, K, alpha, col, K, dz, beta, dwr);
        wr_dconv_dw(&g, xp, dz, alpha, beta, dw);
        assert_memory_equal(dw, dwr, sizeof(float) * K * N);
    }
    wr_cpu_force_level(-1);
    free(x), free(xp), free(col), free(w), free(dz), free(y), free(yr), free(dw), free(dwr), free(offs);
}

static void test_dconv_vs_ref(void **st) {
    (void)st;
    if (wr_cpu_max_level() < WR_ISA_AVX2) skip();
    const shape shapes[] = {
        {3, 28, 28, 1, 5, 2, 16},   // the cnn's first conv
        {2, 14, 14, 16, 5, 2, 32},  // the second (K = 400: many tap blocks)
        {2, 7, 6, 3, 3, 1, 16},     // rows of 6 pixels: shorter than an AVX-512 block
        {3, 5, 9, 2, 3, 0, 32},     // no padding
        {1, 6, 5, 4, 5, 2, 16},     // K = 100
        {2, 9, 11, 1, 3, 1, 32},    // K = 9
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) run_shape(&shapes[i]);
}

// The BF16 forward on FP8-like values (<= 4 significant bits, exact in bf16):
// bit for bit against its reference where every partial sum is exact (small
// integers times powers of two), within the fp32 summation bound on random
// values (the CPU may round a pair once), and against the fp32 direct conv
// within the same bound.
static float fp8ish(int exact) {
    float m = (float)(int)urand(-15.99f, 16.0f);  // 4 significant bits
    return exact ? m : ldexpf(m, (int)urand(-12.0f, 2.0f));
}

static void bf16_shape(const shape *s, int exact) {
    const int Hp = s->H + 2 * s->pad, Wp = s->W + 2 * s->pad, OH = Hp - s->k + 1, OW = Wp - s->k + 1;
    const int K = s->k * s->k * s->C, N = s->N, M = s->n * OH * OW;
    size_t nxp = (size_t)s->n * Hp * Wp * s->C;
    float *xp = calloc(nxp, sizeof(float)), *w = malloc(sizeof(float) * K * N);
    float *y = malloc(sizeof(float) * (size_t)M * N), *yr = malloc(sizeof(float) * (size_t)M * N);
    float *y32 = malloc(sizeof(float) * (size_t)M * N), *mag = malloc(sizeof(float) * (size_t)M * N);
    uint16_t *xh = malloc(2 * nxp), *wp = malloc(2 * (size_t)K * N);
    int *offs = malloc(sizeof(int) * K);
    for (int b = 0; b < s->n; b++)
        for (int h = 0; h < s->H; h++)
            for (int i = 0; i < s->W * s->C; i++)
                xp[(((size_t)b * Hp + h + s->pad) * Wp + s->pad) * s->C + i] = fp8ish(exact);
    for (int i = 0; i < K * N; i++) w[i] = fp8ish(exact);
    for (int kh = 0, q = 0; kh < s->k; kh++)
        for (int kw = 0; kw < s->k; kw++)
            for (int c = 0; c < s->C; c++) offs[q++] = (kh * Wp + kw) * s->C + c;
    wr_bf16_from_f32(xp, xh, nxp);
    wr_bf16_pack_w(w, K, N, wp);
    wr_dconv_geom g = {s->n, OH, OW, Hp, Wp, s->C, K, N, offs};
    wr_dconv_fwd_bf16_ref(&g, xh, wp, 0.25f, yr);
    wr_dconv_fwd(&g, xp, w, 0.25f, y32);
    float *absx = malloc(sizeof(float) * nxp), *absw = malloc(sizeof(float) * K * N);
    for (size_t i = 0; i < nxp; i++) absx[i] = fabsf(xp[i]);
    for (int i = 0; i < K * N; i++) absw[i] = fabsf(w[i]);
    wr_dconv_fwd(&g, absx, absw, 0.25f, mag);  // sum of |products|: the error bound's scale
    for (size_t i = 0; i < (size_t)M * N; i++) {
        double tol = (K + 2) * 0x1p-24 * mag[i];
        if (fabs(yr[i] - y32[i]) > tol) fail_msg("bf16 ref %zu: %g vs fp32 %g", i, yr[i], y32[i]);
    }
    if (wr_dconv_bf16_ok(N, K, s->C)) {
        memset(y, 0xff, sizeof(float) * (size_t)M * N);
        wr_dconv_fwd_bf16(&g, xh, wp, 0.25f, y);
        if (exact) assert_memory_equal(y, yr, sizeof(float) * (size_t)M * N);
        for (size_t i = 0; i < (size_t)M * N; i++) {
            double tol = (K + 2) * 0x1p-24 * mag[i];
            if (fabs(y[i] - yr[i]) > tol) fail_msg("bf16 %zu: %g vs ref %g", i, y[i], yr[i]);
        }
    }
    free(xp), free(w), free(y), free(yr), free(y32), free(mag), free(xh), free(wp), free(offs), free(absx),
        free(absw);
}

static void test_dconv_bf16(void **st) {
    (void)st;
    if (wr_cpu_max_level() < WR_ISA_AVX2) skip();
    const shape shapes[] = {
        {2, 14, 14, 16, 5, 2, 32},  // the cnn's second conv (HFP8)
        {2, 14, 14, 32, 5, 2, 16},  // its dX (the padded dz, flipped weights)
        {2, 7, 6, 2, 3, 1, 16},     // rows shorter than a pixel block
        {1, 5, 9, 4, 3, 0, 32},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        bf16_shape(&shapes[i], 1);
        bf16_shape(&shapes[i], 0);
    }
    wr_cpu_force_level(WR_ISA_AVX2);
    assert_false(wr_dconv_bf16_ok(16, 400, 16));
    wr_cpu_force_level(-1);
    assert_false(wr_dconv_bf16_ok(16, 75, 3));  // odd C: pairs would straddle taps
}

static void test_thin_ok(void **st) {
    (void)st;
    wr_cpu_force_level(WR_ISA_SCALAR);
    assert_false(wr_thin_ok(16, 25));  // no vector kernels: the caller uses sgemm
    wr_cpu_force_level(-1);
    if (wr_cpu_max_level() < WR_ISA_AVX2) return;
    assert_true(wr_thin_ok(16, 25) && wr_thin_ok(32, 400) && wr_thin_ok(16, 1) && wr_thin_ok(32, 1024));
    assert_false(wr_thin_ok(8, 25) || wr_thin_ok(24, 25) || wr_thin_ok(64, 25) || wr_thin_ok(16, 0) ||
                 wr_thin_ok(16, 1025));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dconv_vs_ref),
        cmocka_unit_test(test_dconv_bf16),
        cmocka_unit_test(test_thin_ok),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
