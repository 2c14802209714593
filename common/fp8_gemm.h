// fp8_gemm.h — GEMM with FP8 inputs and fp32 accumulation/output.
#ifndef WR_FP8_GEMM_H
#define WR_FP8_GEMM_H

#include <stddef.h>
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
// the scratch budget, 64 MiB by default, per thread — slightly more only for
// degenerate shapes where a 16-wide panel does not fit). Invalid dimensions
// or strides are programming errors (abort through WR_CHECK).
// Thread safety: callable from several threads at once (scratch is per thread).
void wr_fp8_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha,
                 const uint8_t *A, enum wr_fp8_format fa, int lda,
                 const uint8_t *B, enum wr_fp8_format fb, int ldb,
                 float beta, float *C, int ldc);

// Sets the scratch budget in floats for all threads (0 restores the default,
// 16 Mi floats). Smaller budgets cut the problem into more blocks (more
// decoding, same results up to fp32 summation order). Not synchronised: call
// it before any thread uses wr_fp8_gemm (tests use it to exercise blocking).
void wr_fp8_gemm_set_scratch_budget(size_t floats);

// Frees the calling thread's scratch (optional: e.g. before a thread exits, or
// in tests under a leak checker). The next wr_fp8_gemm call re-allocates.
void wr_fp8_gemm_release_scratch(void);

#endif
