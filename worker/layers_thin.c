// layers_thin.c — direct conv dispatch and the scalar references (layers_thin.h).
#include "layers_thin.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "cpu.h"
#include "layers_bf16.h"
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

int wr_dconv_bf16_ok(int N, int K, int C) {
    return wr_bf16_level() && (N == 16 || N == 32) && C % 2 == 0 && K >= 2 && K <= THIN_MAX_K;
}

static float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

void wr_bf16_from_f32(const float *x, uint16_t *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, sizeof u);
        out[i] = (uint16_t)(u >> 16);
    }
}

void wr_bf16_pack_w(const float *w, int K, int N, uint16_t *wp) {
    for (int p = 0; p < K / 2; p++)
        for (int j = 0; j < N; j++)
            for (int e = 0; e < 2; e++)
                wr_bf16_from_f32(w + (size_t)(2 * p + e) * N + j, wp + ((size_t)p * N + j) * 2 + e, 1);
}

void wr_dconv_fwd_bf16_ref(const wr_dconv_geom *g, const uint16_t *xp, const uint16_t *wp, float alpha,
                           float *y) {
    const int C = g->C, N = g->N;
    for (int b = 0; b < g->n; b++)
        for (int oh = 0; oh < g->OH; oh++)
            for (int ow = 0; ow < g->OW; ow++) {
                const uint16_t *a = xp + (((size_t)b * g->Hp + oh) * g->Wp + ow) * C;
                float *yr = y + (((size_t)b * g->OH + oh) * g->OW + ow) * N;
                for (int j = 0; j < N; j++) {
                    float acc = 0.0f;
                    for (int p = 0; p < g->K / 2; p++) {
                        const uint16_t *q = a + g->offs[2 * p], *w2 = wp + ((size_t)p * N + j) * 2;
                        acc = acc + bf16_to_f32(q[1]) * bf16_to_f32(w2[1]);
                        acc = acc + bf16_to_f32(q[0]) * bf16_to_f32(w2[0]);
                    }
                    yr[j] = alpha * acc;
                }
            }
}

void wr_dconv_fwd_bf16(const wr_dconv_geom *g, const uint16_t *xp, const uint16_t *wp, float alpha,
                       float *y) {
    WR_CHECK(wr_dconv_bf16_ok(g->N, g->K, g->C));
    wr_dconv_fwd_bf16_avx512(g, xp, wp, alpha, y);
}
