// layers_thin_avx512.c — thin GEMMs with AVX-512 (layers_thin.h): one zmm per
// 16 output columns; nn in blocks of 8 rows, tn in blocks of 24 (N = 16) or
// 12 (N = 32) k's.
#include <immintrin.h>

#include "layers_thin.h"

#define V __m512
#define VW 16
#define V_ZERO() _mm512_setzero_ps()
#define V_LOAD(p) _mm512_loadu_ps(p)
#define V_STORE(p, v) _mm512_storeu_ps(p, v)
#define V_BCAST(x) _mm512_set1_ps(x)
#define V_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define V_MUL(a, b) _mm512_mul_ps(a, b)
#define V_ADD(a, b) _mm512_add_ps(a, b)
#include "layers_thin_kernel.h"

void wr_thin_nn_avx512(int M, int N, int K, float alpha, const float *A, int lda, const float *B, float *C) {
    if (N == 16)
        thin_nn_shape(M, K, alpha, A, lda, B, C, 16, 8, 1);
    else
        thin_nn_shape(M, K, alpha, A, lda, B, C, 32, 8, 2);
}

void wr_thin_tn_avx512(int M, int N, int K, float alpha, const float *A, int lda, const float *D, float beta,
                       float *C) {
    if (N == 16)
        thin_tn_shape(M, K, alpha, A, lda, D, beta, C, 16, 24, 1);
    else
        thin_tn_shape(M, K, alpha, A, lda, D, beta, C, 32, 12, 2);
}
