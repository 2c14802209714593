// fp8_gemm.c — FP8 GEMM as OpenBLAS sgemm over exactly decoded fp32 blocks.
//
// Decoding is O(MK + KN) against O(MNK) for the product, so it only has to be
// done once per element: K is cut into blocks, and for each block the A columns
// (M x kb) and B rows (kb x N) are decoded with the vector kernel into the
// calling thread's scratch and handed to sgemm, the first block with the
// caller's beta and the others with beta = 1. With the default budget the whole
// problem is one block up to M + N = 16384 at K = 1024, so the usual layer
// sizes decode every code exactly once and call sgemm once; only C is re-read
// per extra block, which is negligible next to kb >= 256 multiply-adds.
// A hand kernel would have to beat OpenBLAS' own blocking and micro-kernels;
// decode-then-sgemm keeps the ratio to sgemm near 1 instead (see bench_fp8_gemm).
#include "fp8_gemm.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "wr_common.h"

// Scratch budget in floats (64 MiB); a block is never thinner than WR_KB_MIN in K.
#define WR_SCRATCH_FLOATS ((size_t)16 << 20)
#define WR_KB_MIN 256

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

    size_t mn = (size_t)M + (size_t)N;
    size_t kb = (size_t)K;
    if (kb * mn > WR_SCRATCH_FLOATS) {
        kb = WR_SCRATCH_FLOATS / mn;
        kb = kb < WR_KB_MIN ? WR_KB_MIN : kb & ~(size_t)15;
        if (kb > (size_t)K) kb = (size_t)K;
    }
    size_t a_floats = WR_DIV_UP((size_t)M * kb, 16) * 16;  // B part stays 64-byte aligned
    float *sa = scratch_get(a_floats + kb * (size_t)N);
    float *sb = sa + a_floats;

    for (size_t k0 = 0; k0 < (size_t)K; k0 += kb) {
        int k = (int)WR_MIN(kb, (size_t)K - k0);
        int lda_blk, ldb_blk;
        if (!trans_a) {  // A is M x K: columns k0.. of every row
            decode_block(A + k0, lda, M, k, fa, sa);
            lda_blk = k;
        } else {  // A is K x M: rows k0..
            decode_block(A + k0 * (size_t)lda, lda, k, M, fa, sa);
            lda_blk = M;
        }
        if (!trans_b) {  // B is K x N: rows k0..
            decode_block(B + k0 * (size_t)ldb, ldb, k, N, fb, sb);
            ldb_blk = N;
        } else {  // B is N x K: columns k0.. of every row
            decode_block(B + k0, ldb, N, k, fb, sb);
            ldb_blk = k;
        }
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                    trans_b ? CblasTrans : CblasNoTrans, M, N, k, alpha, sa, lda_blk, sb,
                    ldb_blk, k0 == 0 ? beta : 1.0f, C, ldc);
    }
}
