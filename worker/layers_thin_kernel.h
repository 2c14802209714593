// layers_thin_kernel.h — the thin GEMM kernels, written once over a vector
// type and included by layers_thin_avx2.c and layers_thin_avx512.c, which
// define V (the vector), VW (its lanes) and V_ZERO, V_LOAD, V_STORE, V_BCAST,
// V_FMA (a * b + c, one rounding), V_MUL, V_ADD, and THIN_NN, THIN_TN (the
// function names). Accumulator blocks have compile-time sizes (RB rows or KB
// k's times NV vectors) so that they live in registers.
#include <stddef.h>

#define THIN_INLINE static inline __attribute__((always_inline))

// C rows r..r+RB-1 (dense, N = NV * VW) of the nn product.
THIN_INLINE void thin_nn_rows(const float *A, int lda, const float *B, int K, float alpha, float *C, int N,
                              const int RB, const int NV) {
    V acc[8][4];
#pragma GCC unroll 8
    for (int i = 0; i < RB; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[i][v] = V_ZERO();
    for (int k = 0; k < K; k++) {
        V b[4];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) b[v] = V_LOAD(B + (size_t)k * N + v * VW);
#pragma GCC unroll 8
        for (int i = 0; i < RB; i++) {
            V a = V_BCAST(A[(size_t)i * lda + k]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[i][v] = V_FMA(a, b[v], acc[i][v]);
        }
    }
    V al = V_BCAST(alpha);
#pragma GCC unroll 8
    for (int i = 0; i < RB; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) V_STORE(C + (size_t)i * N + v * VW, V_MUL(al, acc[i][v]));
}

// Rows in blocks of RB, the rest one at a time.
THIN_INLINE void thin_nn_shape(int M, int K, float alpha, const float *A, int lda, const float *B, float *C,
                               int N, const int RB, const int NV) {
    int r = 0;
    for (; r + RB <= M; r += RB)
        thin_nn_rows(A + (size_t)r * lda, lda, B, K, alpha, C + (size_t)r * N, N, RB, NV);
    for (; r < M; r++) thin_nn_rows(A + (size_t)r * lda, lda, B, K, alpha, C + (size_t)r * N, N, 1, NV);
}

// C rows k0..k0+KB-1 of the tn product: A and C already offset to k0.
THIN_INLINE void thin_tn_block(int M, float alpha, const float *A, int lda, const float *D, float beta,
                               float *C, int N, const int KB, const int NV) {
    V acc[24][4];
#pragma GCC unroll 24
    for (int i = 0; i < KB; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[i][v] = V_ZERO();
    for (int r = 0; r < M; r++) {
        V d[4];
        const float *a = A + (size_t)r * lda;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) d[v] = V_LOAD(D + (size_t)r * N + v * VW);
#pragma GCC unroll 24
        for (int i = 0; i < KB; i++) {
            V av = V_BCAST(a[i]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[i][v] = V_FMA(av, d[v], acc[i][v]);
        }
    }
    V al = V_BCAST(alpha), be = V_BCAST(beta);
#pragma GCC unroll 24
    for (int i = 0; i < KB; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            float *c = C + (size_t)i * N + v * VW;
            V y = V_MUL(al, acc[i][v]);
            V_STORE(c, beta != 0.0f ? V_ADD(y, V_MUL(be, V_LOAD(c))) : y);
        }
}

THIN_INLINE void thin_tn_shape(int M, int K, float alpha, const float *A, int lda, const float *D, float beta,
                               float *C, int N, const int KB, const int NV) {
    int k = 0;
    for (; k + KB <= K; k += KB) thin_tn_block(M, alpha, A + k, lda, D, beta, C + (size_t)k * N, N, KB, NV);
    for (; k < K; k++) thin_tn_block(M, alpha, A + k, lda, D, beta, C + (size_t)k * N, N, 1, NV);
}
