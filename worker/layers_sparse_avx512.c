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

void wr_spmm_avx512(const wr_sprows *s, const float *B, int ldb, int N, float alpha, float *C, int ldc,
                    int r0, int r1) {
    spmm_all(s, B, ldb, N, alpha, C, ldc, r0, r1);
}

// Row r's entries, 16 columns at a time: the non-zero lanes (NaN included:
// unordered compare) compressed into the row's slot; the full vector is
// stored, so up to 15 entries past the count are scratch (the next row's
// slot, rewritten when that row is listed, or the allocation's padding).
void wr_sprows_rows_avx512(wr_sprows *s, const float *A, int lda) {
    const int cols = s->cols, nkb = s->nkb, kb = s->kb;
    const __m512i step = _mm512_set1_epi32(16);
    for (int r = 0; r < s->rows; r++) {
        const float *a = A + (size_t)r * lda;
        const int32_t base = (int32_t)((size_t)r * cols);
        int32_t *idx = s->idx + base, *bs = s->bstart + (size_t)r * (nkb + 1);
        float *val = s->val + base;
        int n = 0;
        for (int b = 0; b < nkb; b++) {
            bs[b] = base + n;
            const int c1 = cols < (b + 1) * kb ? cols : (b + 1) * kb;
            __m512i ci = _mm512_add_epi32(
                _mm512_set1_epi32(b * kb),
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
            for (int c = b * kb; c < c1; c += 16, ci = _mm512_add_epi32(ci, step)) {
                __mmask16 in = c1 - c >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (c1 - c)) - 1);
                __m512 v = _mm512_maskz_loadu_ps(in, a + c);
                __mmask16 nz = _mm512_mask_cmp_ps_mask(in, v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
                _mm512_storeu_ps(val + n, _mm512_maskz_compress_ps(nz, v));
                _mm512_storeu_si512(idx + n, _mm512_maskz_compress_epi32(nz, ci));
                n += __builtin_popcount((unsigned)nz);
            }
        }
        bs[nkb] = base + n;
    }
}
