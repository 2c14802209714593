// layers_sparse_avx2.c — the sparse-left-operand GEMM with AVX2 + FMA: ymm, blocks of 64 columns (layers_sparse.h).
#include <immintrin.h>

#include "layers_sparse.h"

#define V __m256
#define VW 8
#define V_ZERO() _mm256_setzero_ps()
#define V_LOAD(p) _mm256_loadu_ps(p)
#define V_STORE(p, v) _mm256_storeu_ps(p, v)
#define V_BCAST(x) _mm256_set1_ps(x)
#define V_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define V_MUL(a, b) _mm256_mul_ps(a, b)
#include "layers_sparse_kernel.h"

void wr_spmm_avx2(const wr_sprows *s, const float *B, int ldb, int N, float alpha, float *C, int ldc, int r0,
                  int r1) {
    spmm_all(s, B, ldb, N, alpha, C, ldc, r0, r1);
}
