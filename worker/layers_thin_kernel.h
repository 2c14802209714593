// layers_thin_kernel.h — the direct conv kernels, written once over a vector
// type and included by layers_thin_avx2.c and layers_thin_avx512.c, which
// define V (the vector), VW (its lanes) and V_ZERO, V_LOAD, V_STORE, V_BCAST,
// V_FMA (a * b + c, one rounding), V_MUL, V_ADD. Accumulator blocks have
// compile-time sizes (RB pixels or KB taps times NV vectors, after inlining)
// so that they live in registers.
// Without V (included on its own, e.g. by scripts/check-layering) it is empty.
#ifdef V
#include <stddef.h>

#define THIN_INLINE static inline __attribute__((always_inline))

// Row i of the block reads A's element k at a0[i * rs + offs[k]]: the output
// pixels ow..ow+RB-1 of one output row of a zero-padded image.
THIN_INLINE void dconv_rows(const float *a0, int rs, const int *offs, const float *B, int K, float alpha,
                            float *C, int N, const int RB, const int NV) {
    V acc[8][4];
#pragma GCC unroll 8
    for (int i = 0; i < RB; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[i][v] = V_ZERO();
    for (int k = 0; k < K; k++) {
        V b[4];
        const float *a = a0 + offs[k];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) b[v] = V_LOAD(B + (size_t)k * N + v * VW);
#pragma GCC unroll 8
        for (int i = 0; i < RB; i++) {
            V av = V_BCAST(a[(size_t)i * rs]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[i][v] = V_FMA(av, b[v], acc[i][v]);
        }
    }
    V al = V_BCAST(alpha);
#pragma GCC unroll 8
    for (int i = 0; i < RB; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) V_STORE(C + (size_t)i * N + v * VW, V_MUL(al, acc[i][v]));
}

// Every output row: blocks of RB pixels; a last partial block is recomputed
// as the row's last RB pixels (the same values written twice).
THIN_INLINE void dconv_fwd_shape(const wr_dconv_geom *g, const float *xp, const float *w, float alpha,
                                 float *y, const int RB, const int NV) {
    const int C = g->C, N = g->N;
    for (int b = 0; b < g->n; b++)
        for (int oh = 0; oh < g->OH; oh++) {
            const float *a0 = xp + ((size_t)b * g->Hp + oh) * g->Wp * C;
            float *yr = y + ((size_t)b * g->OH + oh) * g->OW * N;
            if (g->OW < RB) {
                for (int ow = 0; ow < g->OW; ow++)
                    dconv_rows(a0 + (size_t)ow * C, C, g->offs, w, g->K, alpha, yr + (size_t)ow * N, N, 1,
                               NV);
                continue;
            }
            for (int ow = 0; ow < g->OW; ow += RB) {
                int o = ow + RB <= g->OW ? ow : g->OW - RB;
                dconv_rows(a0 + (size_t)o * C, C, g->offs, w, g->K, alpha, yr + (size_t)o * N, N, RB, NV);
            }
        }
}

// dW rows k0..k0+KB-1 (offs and C already offset to k0), summed over every
// output pixel in (b, oh, ow) order.
THIN_INLINE void dconv_dw_block(const wr_dconv_geom *g, const int *offs, const float *xp, const float *dz,
                                float alpha, float beta, float *C, const int KB, const int NV) {
    const int N = g->N;
    V acc[24][4];
#pragma GCC unroll 24
    for (int i = 0; i < KB; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[i][v] = V_ZERO();
    const float *d = dz;
    for (int b = 0; b < g->n; b++)
        for (int oh = 0; oh < g->OH; oh++) {
            const float *a = xp + ((size_t)b * g->Hp + oh) * g->Wp * g->C;
            for (int ow = 0; ow < g->OW; ow++, a += g->C, d += N) {
                V dv[4];
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) dv[v] = V_LOAD(d + v * VW);
#pragma GCC unroll 24
                for (int i = 0; i < KB; i++) {
                    V av = V_BCAST(a[offs[i]]);
#pragma GCC unroll 4
                    for (int v = 0; v < NV; v++) acc[i][v] = V_FMA(av, dv[v], acc[i][v]);
                }
            }
        }
    V al = V_BCAST(alpha), be = V_BCAST(beta);
#pragma GCC unroll 24
    for (int i = 0; i < KB; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            float *c = C + (size_t)i * N + v * VW;
            V yv = V_MUL(al, acc[i][v]);
            V_STORE(c, beta != 0.0f ? V_ADD(yv, V_MUL(be, V_LOAD(c))) : yv);
        }
}

THIN_INLINE void dconv_dw_shape(const wr_dconv_geom *g, const float *xp, const float *dz, float alpha,
                                float beta, float *dw, const int KB, const int NV) {
    int k = 0;
    for (; k + KB <= g->K; k += KB)
        dconv_dw_block(g, g->offs + k, xp, dz, alpha, beta, dw + (size_t)k * g->N, KB, NV);
    for (; k < g->K; k++) dconv_dw_block(g, g->offs + k, xp, dz, alpha, beta, dw + (size_t)k * g->N, 1, NV);
}

#endif  // V
