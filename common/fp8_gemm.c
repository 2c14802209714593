// fp8_gemm.c — FP8 GEMM as OpenBLAS sgemm over exactly decoded fp32 blocks.
//
// Decoding is O(MK + KN) against O(MNK) for the product, so it is done once
// per element wherever the scratch budget allows: with the default budget
// (16 Mi floats = 64 MiB) any problem with K (M + N) <= 16 Mi — every size up to
// M = N = K = 2048 and the usual layer shapes — decodes A and B whole with the
// vector kernel and makes a single sgemm call. Larger problems are cut into
// K blocks (only when K itself is huge), N panels of op(B) and M panels of
// op(A): each B panel is decoded once per K block and each A panel once per
// (K block, N panel) pair, and a panel is at least thousands wide in the
// default budget, so the extra decoding stays a small fraction of the
// multiply-adds. K blocks after the first accumulate into C with beta = 1.
// A hand kernel would have to beat OpenBLAS' own packing and micro-kernels;
// decode-then-sgemm keeps the ratio to sgemm near 1 instead (bench_fp8_gemm).
#include "fp8_gemm.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "wr_common.h"

#define WR_SCRATCH_FLOATS_DEFAULT ((size_t)16 << 20)
#define WR_PANEL_MIN 16

static size_t g_budget = WR_SCRATCH_FLOATS_DEFAULT;

void wr_fp8_gemm_set_scratch_budget(size_t floats) {
    g_budget = floats ? floats : WR_SCRATCH_FLOATS_DEFAULT;
}

static __thread float *t_scratch;
static __thread size_t t_cap;  // in floats

static float *scratch_get(size_t nfloats) {
    if (nfloats > t_cap) {
        free(t_scratch);
        t_scratch = wr_alloc_vec(nfloats * sizeof(float));
        t_cap = nfloats;
    }
    return t_scratch;
}

void wr_fp8_gemm_release_scratch(void) {
    free(t_scratch);
    t_scratch = NULL;
    t_cap = 0;
}

// Decodes rows x cols codes (row stride ld) into a dense rows x cols array.
static void decode_block(const uint8_t *src, int ld, int rows, int cols, enum wr_fp8_format f,
                         float *dst) {
    if (ld == cols) {
        wr_fp8_decode_array(src, dst, (size_t)rows * (size_t)cols, f);
        return;
    }
    for (int r = 0; r < rows; r++)
        wr_fp8_decode_array(src + (size_t)r * (size_t)ld, dst + (size_t)r * (size_t)cols,
                            (size_t)cols, f);
}

static void scale_c(int M, int N, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++) {
        float *row = C + (size_t)i * (size_t)ldc;
        if (beta == 0.0f)
            memset(row, 0, (size_t)N * sizeof(float));
        else if (beta != 1.0f)
            for (int j = 0; j < N; j++) row[j] *= beta;
    }
}

void wr_fp8_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha,
                 const uint8_t *A, enum wr_fp8_format fa, int lda,
                 const uint8_t *B, enum wr_fp8_format fb, int ldb,
                 float beta, float *C, int ldc) {
    WR_CHECK(M >= 0 && N >= 0 && K >= 0);
    WR_CHECK(ldc >= WR_MAX(1, N));
    WR_CHECK(lda >= WR_MAX(1, trans_a ? M : K));
    WR_CHECK(ldb >= WR_MAX(1, trans_b ? K : N));
    if (M == 0 || N == 0) return;
    if (K == 0 || alpha == 0.0f) {
        scale_c(M, N, beta, C, ldc);
        return;
    }
    WR_CHECK(A != NULL && B != NULL && C != NULL);

    // Block sizes: everything at once if it fits the budget; otherwise full K
    // (unless K alone is huge), an N panel of half the budget, M panels of the rest.
    const size_t budget = g_budget, Ms = (size_t)M, Ns = (size_t)N, Ks = (size_t)K;
    size_t kb = Ks, nb = Ns, mb = Ms;
    if (Ks * (Ms + Ns) > budget) {
        size_t kmax = WR_MAX(budget / (4 * WR_PANEL_MIN), (size_t)WR_PANEL_MIN);
        kb = WR_MIN(Ks, kmax);
        nb = WR_MIN(Ns, WR_MAX(budget / 2 / kb, (size_t)WR_PANEL_MIN));
        mb = WR_MIN(Ms, WR_MAX((budget - WR_MIN(budget, kb * nb)) / kb, (size_t)WR_PANEL_MIN));
    }
    size_t b_floats = WR_DIV_UP(kb * nb, 16) * 16;  // A part stays 64-byte aligned
    float *sb = scratch_get(b_floats + kb * mb);
    float *sa = sb + b_floats;

    for (size_t k0 = 0; k0 < Ks; k0 += kb) {
        int k = (int)WR_MIN(kb, Ks - k0);
        float beta_k = k0 == 0 ? beta : 1.0f;
        for (size_t n0 = 0; n0 < Ns; n0 += nb) {
            int n = (int)WR_MIN(nb, Ns - n0);
            int ldb_blk;
            if (!trans_b) {  // B is K x N: rows k0.., columns n0..
                decode_block(B + k0 * (size_t)ldb + n0, ldb, k, n, fb, sb);
                ldb_blk = n;
            } else {  // B is N x K: rows n0.., columns k0..
                decode_block(B + n0 * (size_t)ldb + k0, ldb, n, k, fb, sb);
                ldb_blk = k;
            }
            for (size_t m0 = 0; m0 < Ms; m0 += mb) {
                int m = (int)WR_MIN(mb, Ms - m0);
                int lda_blk;
                if (!trans_a) {  // A is M x K: rows m0.., columns k0..
                    decode_block(A + m0 * (size_t)lda + k0, lda, m, k, fa, sa);
                    lda_blk = k;
                } else {  // A is K x M: rows k0.., columns m0..
                    decode_block(A + k0 * (size_t)lda + m0, lda, k, m, fa, sa);
                    lda_blk = m;
                }
                cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                            trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, sa, lda_blk, sb,
                            ldb_blk, beta_k, C + m0 * (size_t)ldc + n0, ldc);
            }
        }
    }
}
