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
void wr_fp8_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const uint8_t *A,
                 enum wr_fp8_format fa, int lda, const uint8_t *B, enum wr_fp8_format fb, int ldb, float beta,
                 float *C, int ldc);

// Sets the scratch budget in floats for all threads (0 restores the default,
// 16 Mi floats). Smaller budgets cut the problem into more blocks (more
// decoding, same results up to fp32 summation order). Not synchronised: call
// it before any thread uses wr_fp8_gemm (tests use it to exercise blocking).
void wr_fp8_gemm_set_scratch_budget(size_t floats);

// ---- decoded-operand cache ------------------------------------------------------
// A caller-owned cache of one decoded operand, so a caller that multiplies the
// same codes several times (a layer: W in the forward and the dX GEMM, X in the
// forward and the dW GEMM, dZ in the dW and dX GEMMs) decodes them once.
// Key: the codes pointer, the caller's generation number, the format, the
// stored shape (rows x cols) and the stride. CONTRACT: a caller that changes
// the codes behind a pointer must pass a new generation (e.g. bump a counter
// each time it re-encodes); same pointer + same generation is taken to mean
// same codes, without looking at them. The cache holds the whole stored
// operand decoded densely (rows x cols floats), whatever the scratch budget.
typedef struct {
    float *buf;          // decoded values (owned; 64-byte aligned)
    size_t cap;          // floats allocated in buf
    const uint8_t *src;  // key of what buf holds (valid != 0)
    uint64_t gen;
    int fmt, rows, cols, ld;
    int valid;
    uint64_t decodes;  // statistics: times the operand was (re)decoded
} wr_fp8_cache;

// Zeroes c and, if floats > 0, allocates buf for that many floats up front (so
// a caller that sizes it for its largest operand never allocates later).
void wr_fp8_cache_init(wr_fp8_cache *c, size_t floats);
// Frees buf and zeroes c (NULL allowed).
void wr_fp8_cache_free(wr_fp8_cache *c);
// Forgets what c holds (the next use decodes).
void wr_fp8_cache_invalidate(wr_fp8_cache *c);
// The dense decoding (rows x cols floats, row stride cols) of the codes src
// (rows x cols, row stride ld, format f): c->buf as is when c holds the key
// (src, gen, f, rows, cols, ld), else decoded into c first (growing c->buf if
// it is too small; counts in c->decodes). For callers that multiply decoded
// operands themselves (the conv layer's chunked GEMMs); same contract on gen.
const float *wr_fp8_cache_get(wr_fp8_cache *c, const uint8_t *src, uint64_t gen, enum wr_fp8_format f,
                              int rows, int cols, int ld);

// wr_fp8_gemm with optional caches for A and B: ca (cb) NULL decodes A (B) into
// scratch as wr_fp8_gemm does; otherwise the stored A (K x M if trans_a, else
// M x K, stride lda) is decoded whole into ca unless ca already holds the
// decoding of (A, gen_a, fa, that shape, lda), growing ca->buf if it is too
// small (the only allocation). Results: identical bits to wr_fp8_gemm when
// the problem fits the scratch budget (same single sgemm call on the same
// values); otherwise equal up to fp32 summation order. The caches must not be
// shared between threads without locking; everything else as wr_fp8_gemm.
void wr_fp8_gemm_cached(int trans_a, int trans_b, int M, int N, int K, float alpha, const uint8_t *A,
                        enum wr_fp8_format fa, int lda, wr_fp8_cache *ca, uint64_t gen_a, const uint8_t *B,
                        enum wr_fp8_format fb, int ldb, wr_fp8_cache *cb, uint64_t gen_b, float beta,
                        float *C, int ldc);

// Frees the calling thread's scratch (optional: e.g. before a thread exits, or
// in tests under a leak checker). The next wr_fp8_gemm call re-allocates.
void wr_fp8_gemm_release_scratch(void);

#endif
