// layers_sparse_avx512.c — the sparse-left-operand GEMM with AVX-512: zmm, blocks of 128 columns (layers_sparse.h).
#include <immintrin.h>

#include "layers_sparse.h"

#define V __m512
#define VW 16
#define V_ZERO() _mm512_setzero_ps()
#define V_LOAD(p) _mm512_loadu_ps(p)
#define V_STORE(p, v) _mm512_storeu_ps(p, v)
#define V_BCAST(x) _mm512_set1_ps(x)
#define V_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define V_MUL(a, b) _mm512_mul_ps(a, b)
#include "layers_sparse_kernel.h"

void wr_spmm_avx512(const wr_sprows *s, const float *B, int ldb, int N, float alpha, float *C, int ldc, int r0,
                  int r1) {
    spmm_all(s, B, ldb, N, alpha, C, ldc, r0, r1);
}
