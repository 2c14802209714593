// layers_bf16.h — a dense GEMM with AVX-512 BF16 dot products for an HFP8
// linear layer's dX = alpha dZq Wq^T: both operands are decoded FP8 values
// (3 or 4 significant bits), exact in bf16, so every product is exact in fp32
// and VDPBF16PS does twice the multiply-adds of an fp32 FMA per instruction.
//
//   C (rows r0..r1-1 of M x N, row stride N) = alpha A B^T
//   A: M x K fp32 (row stride lda), B: N x K fp32 (row stride ldb), K even.
//
// Both operands are first packed into 32-bit words, each the bf16 pair (top
// 16 bits of the fp32 values) of columns 2p (low half) and 2p + 1:
// wr_bf16_pairs (row-major: A's rows) and wr_bf16_pack_nt (B transposed to K/2
// x N words, 16 columns per vector). Every output is then acc summed over the
// pairs p in order from +0 as Intel documents VDPBF16PS: acc += a[2p+1]
// b[2p+1]; acc += a[2p] b[2p] (each product exact, each add rounded to nearest
// even; denormal inputs read as zero and denormal sums flushed, which decoded
// FP8 values, all normal, never meet), then alpha * acc. The reference
// wr_bf16_gemm_nt_ref does the two rounded adds; the tests hold the kernel to
// it bit for bit where the sums are exact and within the fp32 summation bound
// elsewhere (room for a CPU that rounds a pair once), for normal inputs. The
// row split (threads) does not change a bit.
#ifndef WR_LAYERS_BF16_H
#define WR_LAYERS_BF16_H

#include <stddef.h>
#include <stdint.h>

// 1 where the BF16 kernels (this GEMM, the conv's, layers_thin.h) can run: the
// AVX-512 level on a CPU with AVX512_BF16.
int wr_bf16_level(void);
// 1 if the kernel takes this shape here: AVX-512 level on a CPU with
// AVX512_BF16 (Zen 4/5; not Zen 3), N a positive multiple of 16, K even and > 0.
int wr_bf16_nt_ok(int N, int K);

// w[r (K/2) + p] = pair p of row r of A (rows x K, row stride lda), K even.
void wr_bf16_pairs(const float *A, int rows, int K, int lda, uint32_t *w);
// bp[p N + n] = pair p of row n of B (N x K, row stride ldb); tmp holds N K/2
// words (B's pairs row-major before the transpose).
void wr_bf16_pack_nt(const float *B, int N, int K, int ldb, uint32_t *tmp, uint32_t *bp);

// C rows r0..r1-1 (see above) from A's pairs aw (row stride K/2 words) and
// B's packed pairs bp. Requires wr_bf16_nt_ok(N, K).
void wr_bf16_gemm_nt(int N, int K, float alpha, const uint32_t *aw, const uint32_t *bp, float *C, int r0,
                     int r1);
void wr_bf16_gemm_nt_avx512(int N, int K, float alpha, const uint32_t *aw, const uint32_t *bp, float *C,
                            int r0, int r1);
// The scalar reference on the fp32 operands (any N, K even).
void wr_bf16_gemm_nt_ref(int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                         float *C, int ldc);

#endif
