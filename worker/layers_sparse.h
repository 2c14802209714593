// layers_sparse.h — GEMMs of a linear layer whose left operand is mostly
// zeros: the images (half of Fashion-MNIST's pixels are 0) and ReLU outputs,
// in the forward (X W) and dW (X^T dZ). Only the non-zero entries of the left
// operand are multiplied, so the work follows the density, not the shape.
//
// The left operand op(A) (rows x cols) is first listed (wr_sprows_build): per
// row its non-zero entries (column, value) in increasing column order, cut
// into blocks of kb columns (kb: wr_spmm_kb(), so a block of B's rows stays in
// L1). Then, for rows r0..r1-1 (threads take row ranges: no sum is split),
//   C[r, j] = alpha * acc,  acc = fma(op(A)[r, k], B[k, j], acc)
// over the row's non-zero k in increasing order from acc = +0 (B: cols x N,
// row stride ldb; C: rows x N, row stride ldc). A term whose A entry is +-0 is
// skipped (by the reference too). Against the dense chain that changes
// nothing except (1) where B[k, j] is inf or NaN: the dense term is NaN (an
// HFP8 dZ like that is an overflow caught before the GEMM; an fp32 dZ or a W
// like that means the step already diverged), and (2) the sign of a zero:
// an accumulator that an underflowing product made -0 stays -0 where the
// dense chain's +0 * (B >= 0) term would make it +0. Every element is one fixed chain of fused
// multiply-adds, so the AVX2 and AVX-512 kernels and the scalar reference
// wr_spmm_ref (fmaf) give the same bits, whatever the row split.
#ifndef WR_LAYERS_SPARSE_H
#define WR_LAYERS_SPARSE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int rows, cols;      // op(A) as last built
    int kb, nkb;         // column blocks: nkb = max(1, ceil(cols / kb))
    int32_t *bstart;     // rows x (nkb + 1): row r's entries of block b are [bstart[r (nkb+1) + b], .. + 1)
    int32_t *idx;        // column of each entry (row r's slot starts at r * cols)
    float *val;          // value of each entry
    int32_t *cnt;        // scratch: entries per row while building the transposed list
    size_t cap_entries;  // max_rows * max_cols
    int max_rows, max_cols, max_nkb;
} wr_sprows;

// 1 if the vector kernels take N output columns on this CPU: AVX2 or AVX-512
// level and N a positive multiple of 16 (the same test on both levels, so the
// choice of path does not depend on which of the two the CPU has). Elsewhere
// a linear layer uses OpenBLAS sgemm.
int wr_spmm_ok(int N);
// The column block of the lists for this CPU's kernel (64 at AVX-512, 96 at
// AVX2): a block of B's rows, 8 vectors wide, copied densely, is 32 or 24 KiB
// (L1). The kernel's fixed cost per row and block (~55 cycles on Zen 4) is
// spread over more entries the longer the block: 64 measured 3-4% faster than
// 48 at AVX-512 on Zen 4 (32 KiB L1), 96 and 128 slower (the copy leaves L1).
int wr_spmm_kb(void);
#define WR_SPMM_PACK_FLOATS \
    (64 * 128)  // the kernels' copy of a block (kb <= wr_spmm_kb(): 64 at AVX-512, 96 at AVX2)

// Allocates lists for op(A) up to max_rows x max_cols (any kb >= 1; 16 entries
// of padding for the vector listers). Aborts on
// out-of-memory (wr_alloc_vec). wr_sprows_free frees and zeroes (NULL allowed).
void wr_sprows_alloc(wr_sprows *s, int max_rows, int max_cols);
void wr_sprows_free(wr_sprows *s);

// Lists the non-zero entries of op(A): trans = 0: A is rows x cols with row
// stride lda; trans != 0: op(A) = A^T, A stored cols x rows with row stride
// lda. rows, cols within the allocation; kb >= 1.
void wr_sprows_build(wr_sprows *s, const float *A, int lda, int rows, int cols, int trans, int kb);

// wr_sprows_build's rows (trans = 0) with AVX-512 compress (kb a multiple of
// 16) or an AVX2 permute (kb a multiple of 8): the lists of the scalar lister.
void wr_sprows_rows_avx512(wr_sprows *s, const float *A, int lda);
void wr_sprows_rows_avx2(wr_sprows *s, const float *A, int lda);

// C rows r0..r1-1 = alpha * op(A) B as above (s built with kb <= wr_spmm_kb()).
// Requires wr_spmm_ok(N). Dispatches on wr_cpu_level().
void wr_spmm(const wr_sprows *s, const float *B, int ldb, int N, float alpha, float *C, int ldc, int r0,
             int r1);
void wr_spmm_avx2(const wr_sprows *s, const float *B, int ldb, int N, float alpha, float *C, int ldc, int r0,
                  int r1);
void wr_spmm_avx512(const wr_sprows *s, const float *B, int ldb, int N, float alpha, float *C, int ldc,
                    int r0, int r1);

// The scalar reference on the dense operand (no lists; any N): C = alpha *
// op(A) B with the chains above (zero A entries skipped, fmaf).
void wr_spmm_ref(int trans, int rows, int cols, const float *A, int lda, const float *B, int ldb, int N,
                 float alpha, float *C, int ldc);

// t (N x M, row stride M) = the transpose of a (M x N, row stride N), in
// cache-sized tiles (dX = dZ W^T reads W^T by rows).
void wr_transpose(const float *a, int M, int N, float *t);
void wr_transpose_avx2(const float *a, int M, int N, float *t);

#endif
