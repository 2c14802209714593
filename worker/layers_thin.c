// layers_thin.c — thin GEMM references and dispatch (layers_thin.h).
#include "layers_thin.h"

#include <math.h>
#include <stddef.h>

#include "cpu.h"
#include "wr_common.h"

#define THIN_MAX_K 64

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

void wr_thin_nn(int M, int N, int K, float alpha, const float *A, int lda, const float *B, float *C) {
    WR_CHECK(wr_thin_ok(N, K));
    if (wr_cpu_level() == WR_ISA_AVX512)
        wr_thin_nn_avx512(M, N, K, alpha, A, lda, B, C);
    else
        wr_thin_nn_avx2(M, N, K, alpha, A, lda, B, C);
}

void wr_thin_tn(int M, int N, int K, float alpha, const float *A, int lda, const float *D, float beta,
                float *C) {
    WR_CHECK(wr_thin_ok(N, K));
    if (wr_cpu_level() == WR_ISA_AVX512)
        wr_thin_tn_avx512(M, N, K, alpha, A, lda, D, beta, C);
    else
        wr_thin_tn_avx2(M, N, K, alpha, A, lda, D, beta, C);
}
