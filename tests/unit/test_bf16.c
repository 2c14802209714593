// test_bf16.c — the BF16 NT GEMM (worker/layers_bf16.h) for an HFP8 linear
// layer's dX: the pair packing's layout; the AVX-512 BF16 kernel bit for bit
// against its reference where every partial sum is exact (small integers
// times powers of two) and within the fp32 summation bound on FP8-like values
// of any scale (room for a CPU that rounds a pair's two adds once); row ranges
// (threads) give the same bits; the reference against a double-precision sum;
// wr_bf16_nt_ok's rule. The kernel parts skip where the CPU has no AVX512_BF16.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "layers_bf16.h"
#include "rng.h"

static uint32_t g_ctr;
static float urand(float lo, float hi) {
    uint32_t r = wr_rng_u32(wr_rng_key_make(23, 5, 1), g_ctr++);
    return lo + (hi - lo) * (float)(r >> 8) * (1.0f / 16777216.0f);
}

// A value with <= 4 significant bits (exact in bf16, as decoded FP8 is); an
// integer when exact (sums of a few hundred such products stay exact in fp32).
static float fp8ish(int exact) {
    float m = (float)(int)urand(-15.99f, 16.0f);
    return exact ? m : ldexpf(m, (int)urand(-14.0f, 3.0f));
}

static void test_pack_layout(void **st) {
    (void)st;
    // B is 2 x 4 (N = 2 rows, K = 4): pairs (b[n][2p], b[n][2p+1])
    const float B[2 * 5] = {1.0f, 2.0f, 3.0f, 4.0f, 99.0f, -1.0f, -2.0f, 0.5f, 0.25f, 99.0f};
    uint32_t tmp[4], bp[4], aw[4];
    wr_bf16_pack_nt(B, 2, 4, 5, tmp, bp);
    // bf16 of 1 = 0x3F80, 2 = 0x4000, 3 = 0x4040, 4 = 0x4080, -1 = 0xBF80, -2 = 0xC000, 0.5 = 0x3F00, 0.25 = 0x3E80
    assert_int_equal(bp[0], 0x40003F80u);  // p 0, n 0: (1, 2)
    assert_int_equal(bp[1], 0xC000BF80u);  // p 0, n 1: (-1, -2)
    assert_int_equal(bp[2], 0x40804040u);  // p 1, n 0: (3, 4)
    assert_int_equal(bp[3], 0x3E803F00u);  // p 1, n 1: (0.5, 0.25)
    wr_bf16_pairs(B, 2, 4, 5, aw);
    assert_int_equal(aw[0], 0x40003F80u);
    assert_int_equal(aw[1], 0x40804040u);
    assert_int_equal(aw[2], 0xC000BF80u);
    assert_int_equal(aw[3], 0x3E803F00u);
}

// C = alpha A B^T for A M x K, B N x K (strides K + 2): the kernel in 1 and 3
// row ranges against the reference (exact: equal; else within the bound).
static void one_case(int M, int N, int K, int exact) {
    const int lda = K + 2, ldb = K + 2, ldc = N, P = K / 2;
    float *A = malloc(sizeof(float) * M * lda), *B = malloc(sizeof(float) * N * ldb);
    float *C = malloc(sizeof(float) * M * ldc), *R = malloc(sizeof(float) * M * ldc);
    uint32_t *aw = malloc(4 * (size_t)M * P), *tmp = malloc(4 * (size_t)N * P),
             *bp = malloc(4 * (size_t)N * P);
    for (int i = 0; i < M * lda; i++) A[i] = fp8ish(exact);
    for (int i = 0; i < N * ldb; i++) B[i] = fp8ish(exact);
    const float alpha = 0.375f;
    wr_bf16_gemm_nt_ref(M, N, K, alpha, A, lda, B, ldb, R, ldc);
    for (int m = 0; m < M; m++)  // the reference against a double sum
        for (int n = 0; n < N; n++) {
            double s = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                double t = (double)A[(size_t)m * lda + k] * B[(size_t)n * ldb + k];
                s += t, mag += fabs(t);
            }
            double tol = (K + 2) * 0x1p-24 * mag * alpha;
            if (fabs(R[(size_t)m * ldc + n] - alpha * s) > tol)
                fail_msg("ref %dx%dx%d (%d, %d): %g vs %g", M, N, K, m, n, R[(size_t)m * ldc + n], alpha * s);
        }
    if (!wr_bf16_nt_ok(N, K)) goto out;
    wr_bf16_pairs(A, M, K, lda, aw);
    wr_bf16_pack_nt(B, N, K, ldb, tmp, bp);
    for (int parts = 1; parts <= 3; parts += 2) {
        for (int i = 0; i < M * ldc; i++) C[i] = NAN;
        for (int t = 0; t < parts; t++)
            wr_bf16_gemm_nt(N, K, alpha, aw, bp, C, M * t / parts, M * (t + 1) / parts);
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) {
                const float c = C[(size_t)m * ldc + n], r = R[(size_t)m * ldc + n];
                if (exact && memcmp(&c, &r, sizeof c) != 0)
                    fail_msg("exact %dx%dx%d (%d, %d): %g vs ref %g", M, N, K, m, n, c, r);
                double mag = 0;
                for (int k = 0; k < K; k++)
                    mag += fabs((double)A[(size_t)m * lda + k] * B[(size_t)n * ldb + k]);
                if (fabs(c - r) > (K + 2) * 0x1p-24 * mag * alpha)
                    fail_msg("%dx%dx%d (%d, %d): %g vs ref %g", M, N, K, m, n, c, r);
            }
    }
out:
    free(A), free(B), free(C), free(R), free(aw), free(tmp), free(bp);
}

static void test_gemm_vs_ref(void **st) {
    (void)st;
    static const int shapes[][3] = {{1, 16, 2},    {7, 32, 10},     {8, 48, 40},
                                    {19, 16, 256}, {128, 512, 256}, {9, 80, 6}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int exact = 0; exact < 2; exact++) one_case(shapes[i][0], shapes[i][1], shapes[i][2], exact);
    if (!wr_bf16_nt_ok(16, 2)) skip();  // the reference parts ran
}

static void test_ok_rule(void **st) {
    (void)st;
    wr_cpu_force_level(WR_ISA_AVX2);
    assert_false(wr_bf16_nt_ok(512, 256));
    wr_cpu_force_level(-1);
    if (!wr_bf16_nt_ok(512, 256)) skip();
    assert_true(wr_bf16_nt_ok(16, 2));
    assert_false(wr_bf16_nt_ok(0, 2) || wr_bf16_nt_ok(24, 2) || wr_bf16_nt_ok(16, 3) || wr_bf16_nt_ok(16, 0));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_layout),
        cmocka_unit_test(test_gemm_vs_ref),
        cmocka_unit_test(test_ok_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
