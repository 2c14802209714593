// fp8_gemm.h — GEMM with FP8 inputs and fp32 accumulation/output.
#ifndef WR_FP8_GEMM_H
#define WR_FP8_GEMM_H

#include <stdint.h>

#include "hfp8.h"

// C = alpha * op(A) * op(B) + beta * C, all row-major (as
// cblas_sgemm(CblasRowMajor, ...)). op(A) is M x K, op(B) is K x N, C is M x N.
//   trans_a = 0: A is stored M x K with row stride lda (>= K);
//   trans_a != 0: A is stored K x M, lda >= M (op(A) = A^T). Same for B
//   (K x N / N x K, ldb). ldc >= N. A and B hold FP8 codes of formats fa, fb.
// The product is computed in fp32 on the exactly decoded values (OpenBLAS
// sgemm over decoded blocks), so the result equals sgemm of the dequantized
// inputs up to fp32 rounding of the sums. beta = 0 overwrites C (NaNs in C
// are not propagated), as BLAS does. M, N or K = 0 is allowed (K = 0 or
// alpha = 0 scales C by beta).
// Blocking: synchronous; uses OpenBLAS threads (openblas_set_num_threads).
// Memory: decoded blocks go to scratch owned by the calling thread, grown on
// demand and reused by later calls (no allocation per call once warm; at most
// about 64 MiB per thread plus what small K needs). Invalid dimensions or
// strides are programming errors (abort through WR_CHECK).
// Thread safety: callable from several threads at once (scratch is per thread).
void wr_fp8_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha,
                 const uint8_t *A, enum wr_fp8_format fa, int lda,
                 const uint8_t *B, enum wr_fp8_format fb, int ldb,
                 float beta, float *C, int ldc);

// Frees the calling thread's scratch (optional: e.g. before a thread exits, or
// in tests under a leak checker). The next wr_fp8_gemm call re-allocates.
void wr_fp8_gemm_release_scratch(void);

#endif
