// layers_thin.c — direct conv dispatch and the scalar references (layers_thin.h).
#include "layers_thin.h"

#include <math.h>
#include <stddef.h>

#include "cpu.h"
#include "wr_common.h"

#define THIN_MAX_K 1024

int wr_thin_ok(int N, int K) {
    return wr_cpu_level() >= WR_ISA_AVX2 && (N == 16 || N == 32) && K >= 1 && K <= THIN_MAX_K;
}

void wr_thin_nn_ref(int M, int N, int K, float alpha, const float *A, int lda, const float *B, float *C) {
    for (int r = 0; r < M; r++)
        for (int j = 0; j < N; j++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++) acc = fmaf(A[(size_t)r * lda + k], B[(size_t)k * N + j], acc);
            C[(size_t)r * N + j] = alpha * acc;
        }
}

void wr_thin_tn_ref(int M, int N, int K, float alpha, const float *A, int lda, const float *D, float beta,
                    float *C) {
    for (int k = 0; k < K; k++)
        for (int j = 0; j < N; j++) {
            float acc = 0.0f;
            for (int r = 0; r < M; r++) acc = fmaf(A[(size_t)r * lda + k], D[(size_t)r * N + j], acc);
            float *c = C + (size_t)k * N + j;
            *c = beta != 0.0f ? alpha * acc + beta * *c : alpha * acc;
        }
}

void wr_dconv_fwd(const wr_dconv_geom *g, const float *xp, const float *w, float alpha, float *y) {
    WR_CHECK(wr_thin_ok(g->N, g->K));
    if (wr_cpu_level() == WR_ISA_AVX512)
        wr_dconv_fwd_avx512(g, xp, w, alpha, y);
    else
        wr_dconv_fwd_avx2(g, xp, w, alpha, y);
}

void wr_dconv_dw(const wr_dconv_geom *g, const float *xp, const float *dz, float alpha, float beta,
                 float *dw) {
    WR_CHECK(wr_thin_ok(g->N, g->K));
    if (wr_cpu_level() == WR_ISA_AVX512)
        wr_dconv_dw_avx512(g, xp, dz, alpha, beta, dw);
    else
        wr_dconv_dw_avx2(g, xp, dz, alpha, beta, dw);
}
