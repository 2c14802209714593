// layers_sparse_avx2.c — the sparse-left-operand GEMM with AVX2 + FMA: ymm, blocks of 64 columns (layers_sparse.h).
#include <immintrin.h>
#include <stdint.h>

#include "layers_sparse.h"

#define V __m256
#define VW 8
#define V_ZERO() _mm256_setzero_ps()
#define V_LOAD(p) _mm256_loadu_ps(p)
#define V_STORE(p, v) _mm256_storeu_ps(p, v)
#define V_BCAST(x) _mm256_set1_ps(x)
#define V_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define V_MUL(a, b) _mm256_mul_ps(a, b)
#define LIST_W 8
#define LIST_CHUNK list8
static inline int list8(const float *a, int c, int m, float *val, int32_t *idx);
#include "layers_sparse_kernel.h"

void wr_spmm_avx2(const wr_sprows *s, const float *B, int ldb, int N, float alpha, float *C, int ldc, int r0,
                  int r1) {
    spmm_all(s, B, ldb, N, alpha, C, ldc, r0, r1);
}

// For each 8-bit mask, the lane numbers of its set bits packed to the front,
// one byte each (a table, not pdep/pext: those are microcoded and slow on Zen
// 1 and 2, AVX2 CPUs too). Filled once before main.
static uint64_t compress_lut[256];

__attribute__((constructor)) static void compress_lut_init(void) {
    for (unsigned m = 0; m < 256; m++) {
        uint64_t lanes = 0;
        for (unsigned l = 0, n = 0; l < 8; l++)
            if (m >> l & 1) lanes |= (uint64_t)l << (8 * n++);
        compress_lut[m] = lanes;
    }
}

// The permutation that moves mask's lanes to the front, as 32-bit indices.
static inline __m256i compress_perm(unsigned mask) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)&compress_lut[mask]));
}

// The non-zero lanes among m <= 8 columns (unordered compare: NaN kept),
// permuted to the front; the full vectors are stored.
static inline int list8(const float *a, int c, int m, float *val, int32_t *idx) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i in = _mm256_cmpgt_epi32(_mm256_set1_epi32(m), lane);
    const __m256 v = _mm256_maskload_ps(a + c, in);
    const unsigned nz = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_NEQ_UQ)) &
                        ((1u << m) - 1);
    const __m256i perm = compress_perm(nz);
    _mm256_storeu_ps(val, _mm256_permutevar8x32_ps(v, perm));
    _mm256_storeu_si256((__m256i *)idx, _mm256_add_epi32(_mm256_set1_epi32(c), perm));
    return __builtin_popcount(nz);
}

void wr_sprows_rows_avx2(wr_sprows *s, const float *A, int lda) { sprows_rows(s, A, lda); }

// One 8 x 8 tile: rows i..i+7, columns j..j+7 of a (row stride N) into rows
// j..j+7, columns i..i+7 of t (row stride M), through registers.
static inline void tile8(const float *a, int M, int N, float *t, int i, int j) {
    const float *p = a + (size_t)i * N + j;
    __m256 r[8], u[8], s[8];
    for (int k = 0; k < 8; k++) r[k] = _mm256_loadu_ps(p + (size_t)k * N);
    for (int k = 0; k < 8; k += 2) {
        u[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
        u[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
    }
    for (int k = 0; k < 8; k += 4) {
        s[k] = _mm256_shuffle_ps(u[k], u[k + 2], 0x44);
        s[k + 1] = _mm256_shuffle_ps(u[k], u[k + 2], 0xEE);
        s[k + 2] = _mm256_shuffle_ps(u[k + 1], u[k + 3], 0x44);
        s[k + 3] = _mm256_shuffle_ps(u[k + 1], u[k + 3], 0xEE);
    }
    float *q = t + (size_t)j * M + i;
    for (int k = 0; k < 4; k++) {
        _mm256_storeu_ps(q + (size_t)k * M, _mm256_permute2f128_ps(s[k], s[k + 4], 0x20));
        _mm256_storeu_ps(q + (size_t)(k + 4) * M, _mm256_permute2f128_ps(s[k], s[k + 4], 0x31));
    }
}

// Strips of 16 rows, so each store pair fills t's 64-byte lines whole (a
// half-written line would be fetched again after the strip evicted it: the
// row strides are powers of two, few L1 sets); the edges scalar.
void wr_transpose_avx2(const float *a, int M, int N, float *t) {
    int i = 0;
    for (; i + 16 <= M; i += 16) {
        int j = 0;
        for (; j + 8 <= N; j += 8) {
            tile8(a, M, N, t, i, j);
            tile8(a, M, N, t, i + 8, j);
        }
        for (; j < N; j++)
            for (int k = 0; k < 16; k++) t[(size_t)j * M + i + k] = a[(size_t)(i + k) * N + j];
    }
    for (; i + 8 <= M; i += 8) {
        int j = 0;
        for (; j + 8 <= N; j += 8) tile8(a, M, N, t, i, j);
        for (; j < N; j++)
            for (int k = 0; k < 8; k++) t[(size_t)j * M + i + k] = a[(size_t)(i + k) * N + j];
    }
    for (; i < M; i++)
        for (int j = 0; j < N; j++) t[(size_t)j * M + i] = a[(size_t)i * N + j];
}
