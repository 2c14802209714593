// layers_thin_avx2.c — the direct conv with AVX2 + FMA (layers_thin.h): one ymm
// per 8 output channels; the forward in blocks of 4 (N = 16) or 2 (N = 32)
// pixels, dW in blocks of 6 or 3 taps (12 accumulators of the 16 registers).
#include <immintrin.h>

#include "layers_thin.h"

#define V __m256
#define VW 8
#define V_ZERO() _mm256_setzero_ps()
#define V_LOAD(p) _mm256_loadu_ps(p)
#define V_STORE(p, v) _mm256_storeu_ps(p, v)
#define V_BCAST(x) _mm256_set1_ps(x)
#define V_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define V_MUL(a, b) _mm256_mul_ps(a, b)
#define V_ADD(a, b) _mm256_add_ps(a, b)
#include "layers_thin_kernel.h"

void wr_dconv_fwd_avx2(const wr_dconv_geom *g, const float *xp, const float *w, float alpha, float *y) {
    if (g->N == 16)
        dconv_fwd_shape(g, xp, w, alpha, y, 4, 2);
    else
        dconv_fwd_shape(g, xp, w, alpha, y, 2, 4);
}

void wr_dconv_dw_avx2(const wr_dconv_geom *g, const float *xp, const float *dz, float alpha, float beta,
                      float *dw) {
    if (g->N == 16)
        dconv_dw_shape(g, xp, dz, alpha, beta, dw, 6, 2);
    else
        dconv_dw_shape(g, xp, dz, alpha, beta, dw, 3, 4);
}
