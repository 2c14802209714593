// layers_bf16_avx512.c — the direct conv forward (layers_thin.h) and the dense
// NT GEMM (layers_bf16.h) with AVX-512 BF16 dot products: VDPBF16PS adds two
// bf16 x bf16 products (each exact in fp32) to each fp32 lane, twice the
// multiply-adds of an fp32 FMA. Built with the AVX-512 flags; the BF16
// instructions are enabled per function.
#include <immintrin.h>
#include <string.h>

#include "layers_bf16.h"
#include "layers_thin.h"

#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))
#define BF16_INLINE static inline __attribute__((always_inline)) BF16_TARGET

// RB pixels ow.. of one output row; pair p of taps (2p, 2p+1) is read as one
// 32-bit word at a0[i rs + offs[2p]] (C even: a pair never straddles a tap).
BF16_INLINE void bf16_rows(const uint16_t *a0, int rs, const int *offs, const uint16_t *wp, int K,
                           float alpha, float *C, int N, const int RB, const int NV) {
    __m512 acc[8][2];
#pragma GCC unroll 8
    for (int i = 0; i < RB; i++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();
    for (int p = 0; p < K / 2; p++) {
        __m512i b[2];
        const uint16_t *a = a0 + offs[2 * p];
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) b[v] = _mm512_loadu_si512(wp + ((size_t)p * N + v * 16) * 2);
#pragma GCC unroll 8
        for (int i = 0; i < RB; i++) {
            int32_t pair;
            memcpy(&pair, a + (size_t)i * rs, sizeof pair);
            __m512i av = _mm512_set1_epi32(pair);
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++)
                acc[i][v] = _mm512_dpbf16_ps(acc[i][v], (__m512bh)av, (__m512bh)b[v]);
        }
    }
    __m512 al = _mm512_set1_ps(alpha);
#pragma GCC unroll 8
    for (int i = 0; i < RB; i++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++)
            _mm512_storeu_ps(C + (size_t)i * N + v * 16, _mm512_mul_ps(al, acc[i][v]));
}

BF16_INLINE void bf16_shape(const wr_dconv_geom *g, const uint16_t *xp, const uint16_t *wp, float alpha,
                            float *y, const int NV) {
    const int C = g->C, N = g->N, RB = 8;
    for (int b = 0; b < g->n; b++)
        for (int oh = 0; oh < g->OH; oh++) {
            const uint16_t *a0 = xp + ((size_t)b * g->Hp + oh) * g->Wp * C;
            float *yr = y + ((size_t)b * g->OH + oh) * g->OW * N;
            if (g->OW < RB) {
                for (int ow = 0; ow < g->OW; ow++)
                    bf16_rows(a0 + (size_t)ow * C, C, g->offs, wp, g->K, alpha, yr + (size_t)ow * N, N, 1,
                              NV);
                continue;
            }
            for (int ow = 0; ow < g->OW; ow += RB) {  // a partial last block is recomputed
                int o = ow + RB <= g->OW ? ow : g->OW - RB;
                bf16_rows(a0 + (size_t)o * C, C, g->offs, wp, g->K, alpha, yr + (size_t)o * N, N, RB, NV);
            }
        }
}

BF16_TARGET void wr_dconv_fwd_bf16_avx512(const wr_dconv_geom *g, const uint16_t *xp, const uint16_t *wp,
                                          float alpha, float *y) {
    if (g->N == 16)
        bf16_shape(g, xp, wp, alpha, y, 1);
    else
        bf16_shape(g, xp, wp, alpha, y, 2);
}

// Rows 0..RB-1 (A's pairs aw, row stride P words) times NV vectors of B's
// packed pairs (bp: this tile's first column, row stride N words) into C.
BF16_INLINE void nt_tile(const uint32_t *aw, int P, const uint32_t *bp, int N, float alpha, float *C, int ldc,
                         const int RB, const int NV) {
    __m512 acc[8][2];
#pragma GCC unroll 8
    for (int i = 0; i < RB; i++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();
    for (int p = 0; p < P; p++) {
        __m512i b[2];
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) b[v] = _mm512_loadu_si512(bp + (size_t)p * N + v * 16);
#pragma GCC unroll 8
        for (int i = 0; i < RB; i++) {
            const __m512i a = _mm512_set1_epi32((int)aw[(size_t)i * P + p]);
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], (__m512bh)a, (__m512bh)b[v]);
        }
    }
    const __m512 al = _mm512_set1_ps(alpha);
#pragma GCC unroll 8
    for (int i = 0; i < RB; i++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++)
            _mm512_storeu_ps(C + (size_t)i * ldc + v * 16, _mm512_mul_ps(al, acc[i][v]));
}

// Rows of 8 (then the rest) for NV vectors of columns at j.
BF16_INLINE void nt_cols(int N, int P, float alpha, const uint32_t *aw, const uint32_t *bp, float *C, int ldc,
                         int r0, int r1, int j, const int NV) {
    int r = r0;
    for (; r + 8 <= r1; r += 8)
        nt_tile(aw + (size_t)r * P, P, bp + j, N, alpha, C + (size_t)r * ldc + j, ldc, 8, NV);
    const uint32_t *a = aw + (size_t)r * P;
    float *c = C + (size_t)r * ldc + j;
    switch (r1 - r) {
    case 7: nt_tile(a, P, bp + j, N, alpha, c, ldc, 7, NV); break;
    case 6: nt_tile(a, P, bp + j, N, alpha, c, ldc, 6, NV); break;
    case 5: nt_tile(a, P, bp + j, N, alpha, c, ldc, 5, NV); break;
    case 4: nt_tile(a, P, bp + j, N, alpha, c, ldc, 4, NV); break;
    case 3: nt_tile(a, P, bp + j, N, alpha, c, ldc, 3, NV); break;
    case 2: nt_tile(a, P, bp + j, N, alpha, c, ldc, 2, NV); break;
    case 1: nt_tile(a, P, bp + j, N, alpha, c, ldc, 1, NV); break;
    default: break;
    }
}

// Panels of 32 columns (B's P x 32 words, 16 KiB at K = 256, stay in L1
// while every row block passes), then a last one of 16.
BF16_TARGET void wr_bf16_gemm_nt_avx512(int N, int K, float alpha, const uint32_t *aw, const uint32_t *bp,
                                        float *C, int ldc, int r0, int r1) {
    const int P = K / 2;
    int j = 0;
    for (; j + 32 <= N; j += 32) nt_cols(N, P, alpha, aw, bp, C, ldc, r0, r1, j, 2);
    if (j < N) nt_cols(N, P, alpha, aw, bp, C, ldc, r0, r1, j, 1);
}
