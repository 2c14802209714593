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
#define LIST_W 16
#define LIST_CHUNK list16
static inline int list16(const float *a, int c, int m, float *val, int32_t *idx);
#include "layers_sparse_kernel.h"

void wr_spmm_avx512(const wr_sprows *s, const float *B, int ldb, int N, float alpha, float *C, int ldc,
                    int r0, int r1) {
    spmm_all(s, B, ldb, N, alpha, C, ldc, r0, r1);
}

// The non-zero lanes among m <= 16 columns (unordered compare: NaN kept),
// compressed to the front; the full vectors are stored.
static inline int list16(const float *a, int c, int m, float *val, int32_t *idx) {
    const __mmask16 in = m >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << m) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(in, a + c);
    const __mmask16 nz = _mm512_mask_cmp_ps_mask(in, v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
    const __m512i ci = _mm512_add_epi32(
        _mm512_set1_epi32(c), _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    _mm512_storeu_ps(val, _mm512_maskz_compress_ps(nz, v));
    _mm512_storeu_si512(idx, _mm512_maskz_compress_epi32(nz, ci));
    return __builtin_popcount((unsigned)nz);
}

void wr_sprows_rows_avx512(wr_sprows *s, const float *A, int lda) { sprows_rows(s, A, lda); }
