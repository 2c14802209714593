// layers_thin_avx2.c — thin GEMMs with AVX2 + FMA (layers_thin.h): one ymm per
// 8 output columns; nn in blocks of 4 (N = 16) or 2 (N = 32) rows, tn in
// blocks of 6 or 3 k's (12 accumulators of the 16 registers).
#include <immintrin.h>

#include "layers_thin.h"

#define V __m256
#define VW 8
#define V_ZERO() _mm256_setzero_ps()
#define V_LOAD(p) _mm256_loadu_ps(p)
#define V_STORE(p, v) _mm256_storeu_ps(p, v)
#define V_BCAST(x) _mm256_set1_ps(x)
#define V_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define V_MUL(a, b) _mm256_mul_ps(a, b)
#define V_ADD(a, b) _mm256_add_ps(a, b)
#include "layers_thin_kernel.h"

void wr_thin_nn_avx2(int M, int N, int K, float alpha, const float *A, int lda, const float *B, float *C) {
    if (N == 16)
        thin_nn_shape(M, K, alpha, A, lda, B, C, 16, 4, 2);
    else
        thin_nn_shape(M, K, alpha, A, lda, B, C, 32, 2, 4);
}

void wr_thin_tn_avx2(int M, int N, int K, float alpha, const float *A, int lda, const float *D, float beta,
                     float *C) {
    if (N == 16)
        thin_tn_shape(M, K, alpha, A, lda, D, beta, C, 16, 6, 2);
    else
        thin_tn_shape(M, K, alpha, A, lda, D, beta, C, 32, 3, 4);
}
