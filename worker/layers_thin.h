// layers_thin.h — GEMMs with a thin, short right-hand side for the layers'
// small convolutions (the cnn's first conv: K = 25 taps, N = 16 channels),
// where OpenBLAS sgemm runs far below its speed on large shapes.
//
// Row-major, fp32. Every output element is one chain of fused multiply-adds in
// a fixed order, so the scalar reference (fmaf) and the AVX2 and AVX-512
// kernels give the same bits:
//   nn: C[r, j] = alpha * acc, acc = fma(A[r, k], B[k, j], acc) for k = 0..K-1
//       from acc = 0 (A: M x K, row stride lda; B: K x N dense; C: M x N dense).
//   tn: C[k, j] = alpha * acc (+ beta * C[k, j] if beta != 0, a multiply and an
//       add), acc = fma(A[r, k], D[r, j], acc) for r = 0..M-1 from acc = 0
//       (A: M x K, stride lda; D: M x N dense; C: K x N dense). beta = 0
//       overwrites C (NaN included).
#ifndef WR_LAYERS_THIN_H
#define WR_LAYERS_THIN_H

// 1 if the vector kernels take this shape on this CPU (AVX2 or AVX-512 level,
// N 16 or 32, K <= 64); otherwise callers use sgemm (the references are for
// tests: fmaf is slow where the CPU has no FMA).
int wr_thin_ok(int N, int K);

// Dispatching entry points (wr_cpu_level()); the shape must pass wr_thin_ok.
void wr_thin_nn(int M, int N, int K, float alpha, const float *A, int lda, const float *B, float *C);
void wr_thin_tn(int M, int N, int K, float alpha, const float *A, int lda, const float *D, float beta,
                float *C);

// Scalar references (any N, K) and the ISA versions (wr_thin_ok shapes).
void wr_thin_nn_ref(int M, int N, int K, float alpha, const float *A, int lda, const float *B, float *C);
void wr_thin_tn_ref(int M, int N, int K, float alpha, const float *A, int lda, const float *D, float beta,
                    float *C);
void wr_thin_nn_avx2(int M, int N, int K, float alpha, const float *A, int lda, const float *B, float *C);
void wr_thin_tn_avx2(int M, int N, int K, float alpha, const float *A, int lda, const float *D, float beta,
                     float *C);
void wr_thin_nn_avx512(int M, int N, int K, float alpha, const float *A, int lda, const float *B, float *C);
void wr_thin_tn_avx512(int M, int N, int K, float alpha, const float *A, int lda, const float *D, float beta,
                       float *C);

#endif
