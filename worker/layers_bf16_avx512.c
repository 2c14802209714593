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
// With plain (a constant at each call), at a0[i rs + 2p] and offs unused: RB
// rows of a plain matrix (the NT GEMM).
// wp: K/2 rows of N words; C: row stride N.
BF16_INLINE void bf16_rows(const uint16_t *a0, int rs, const int *offs, const uint16_t *wp, int K,
                           float alpha, float *C, int N, const int RB, const int NV, const int plain) {
    __m512 acc[8][2];
#pragma GCC unroll 8
    for (int i = 0; i < RB; i++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();
    for (int p = 0; p < K / 2; p++) {
        __m512i b[2];
        const uint16_t *a = a0 + (plain ? 2 * p : offs[2 * p]);
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
                    bf16_rows(a0 + (size_t)ow * C, C, g->offs, wp, g->K, alpha, yr + (size_t)ow * N, N, 1, NV,
                              0);
                continue;
            }
            for (int ow = 0; ow < g->OW; ow += RB) {  // a partial last block is recomputed
                int o = ow + RB <= g->OW ? ow : g->OW - RB;
                bf16_rows(a0 + (size_t)o * C, C, g->offs, wp, g->K, alpha, yr + (size_t)o * N, N, RB, NV, 0);
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

// Rows of 8 (then the rest) for NV vectors of columns at j: the conv's tile
// over A's pair words (row stride P words = K bf16).
BF16_INLINE void nt_cols(int N, int K, float alpha, const uint32_t *aw, const uint32_t *bp, float *C, int r0,
                         int r1, int j, const int NV) {
    const int P = K / 2;
    const uint16_t *b = (const uint16_t *)(bp + j);
    int r = r0;
    for (; r + 8 <= r1; r += 8)
        bf16_rows((const uint16_t *)(aw + (size_t)r * P), K, NULL, b, K, alpha, C + (size_t)r * N + j, N, 8,
                  NV, 1);
    const uint16_t *a = (const uint16_t *)(aw + (size_t)r * P);
    float *c = C + (size_t)r * N + j;
    switch (r1 - r) {
    case 7: bf16_rows(a, K, NULL, b, K, alpha, c, N, 7, NV, 1); break;
    case 6: bf16_rows(a, K, NULL, b, K, alpha, c, N, 6, NV, 1); break;
    case 5: bf16_rows(a, K, NULL, b, K, alpha, c, N, 5, NV, 1); break;
    case 4: bf16_rows(a, K, NULL, b, K, alpha, c, N, 4, NV, 1); break;
    case 3: bf16_rows(a, K, NULL, b, K, alpha, c, N, 3, NV, 1); break;
    case 2: bf16_rows(a, K, NULL, b, K, alpha, c, N, 2, NV, 1); break;
    case 1: bf16_rows(a, K, NULL, b, K, alpha, c, N, 1, NV, 1); break;
    default: break;
    }
}

// Panels of 32 columns (B's K/2 x 32 words, 16 KiB at K = 256, stay in L1
// while every row block passes), then a last one of 16.
BF16_TARGET void wr_bf16_gemm_nt_avx512(int N, int K, float alpha, const uint32_t *aw, const uint32_t *bp,
                                        float *C, int r0, int r1) {
    int j = 0;
    for (; j + 32 <= N; j += 32) nt_cols(N, K, alpha, aw, bp, C, r0, r1, j, 2);
    if (j < N) nt_cols(N, K, alpha, aw, bp, C, r0, r1, j, 1);
}
