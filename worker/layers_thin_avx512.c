// layers_thin_avx512.c — the direct conv with AVX-512 (layers_thin.h): one zmm
// per 16 output channels; the forward in blocks of 8 pixels, dW in blocks of
// 24 (N = 16) or 12 (N = 32) taps.
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

void wr_dconv_fwd_avx512(const wr_dconv_geom *g, const float *xp, const float *w, float alpha, float *y) {
    if (g->N == 16)
        dconv_fwd_shape(g, xp, w, alpha, y, 8, 1);
    else
        dconv_fwd_shape(g, xp, w, alpha, y, 8, 2);
}

void wr_dconv_dw_avx512(const wr_dconv_geom *g, const float *xp, const float *dz, float alpha, float beta,
                        float *dw) {
    if (g->N == 16)
        dconv_dw_shape(g, xp, dz, alpha, beta, dw, 24, 1);
    else
        dconv_dw_shape(g, xp, dz, alpha, beta, dw, 12, 2);
}
