// layers_thin.h — direct convolution for conv layers with 16 or 32 output
// channels (both of the cnn's convs), where OpenBLAS sgemm on the im2col is
// slow (the first conv: K = 25 taps, N = 16) or the im2col itself costs.
//
// Stride 1 on zero-padded NHWC images, im2col implicit: xp holds n images of
// Hp x Wp x C (the padding included); output pixel (b, oh, ow) reads its tap
// k = (kh, kw, c) at xp[((b Hp + oh) Wp + ow) C + offs[k]], offs[k] =
// (kh Wp + kw) C + c. Every output is one chain of fused multiply-adds in a
// fixed order, the same in the AVX2 and AVX-512 kernels and in the scalar
// references below (fmaf) applied to the im2col rows A (M x K, stride lda):
//   fwd (nn): C[r, j] = alpha * acc, acc = fma(A[r, k], B[k, j], acc) over
//       k = 0..K-1 from acc = 0 (B: K x N weights; C: M x N).
//   dW (tn): C[k, j] = alpha * acc (+ beta * C[k, j] if beta != 0: a multiply
//       and an add), acc = fma(A[r, k], D[r, j], acc) over the rows r = 0..M-1
//       in order from acc = 0 (D: M x N errors; C: K x N). beta = 0 overwrites
//       C (NaN included).
// Padding reads 0 where im2col writes 0, so the kernels equal the references
// on the im2col bit for bit.
#ifndef WR_LAYERS_THIN_H
#define WR_LAYERS_THIN_H

#include <stddef.h>
#include <stdint.h>

// The direct dW kernel passes over the pixels once per block of KB taps: past
// this many taps sgemm on the im2col is faster (measured on the cnn's second
// conv, K = 400), and the layer uses the direct conv for its forward only.
#define WR_DCONV_DW_MAX_K 64

typedef struct {
    int n, OH, OW, Hp, Wp, C, K, N;  // N: output channels
    const int *offs;                 // K tap offsets
} wr_dconv_geom;

// 1 if the vector kernels take this shape on this CPU: AVX2 or AVX-512 level,
// N 16 or 32, 1 <= K <= 1024. Elsewhere the layer uses im2col + sgemm (the
// references are for tests: fmaf is slow on CPUs without FMA).
int wr_thin_ok(int N, int K);

// y (n OH OW x N, dense) = alpha * conv(xp, w), w: K x N. Dispatches on wr_cpu_level().
void wr_dconv_fwd(const wr_dconv_geom *g, const float *xp, const float *w, float alpha, float *y);
// dw (K x N) = alpha * sum over pixels of tap x dz (+ beta dw), dz: n OH OW x N.
void wr_dconv_dw(const wr_dconv_geom *g, const float *xp, const float *dz, float alpha, float beta,
                 float *dw);
void wr_dconv_fwd_avx2(const wr_dconv_geom *g, const float *xp, const float *w, float alpha, float *y);
void wr_dconv_dw_avx2(const wr_dconv_geom *g, const float *xp, const float *dz, float alpha, float beta,
                      float *dw);
void wr_dconv_fwd_avx512(const wr_dconv_geom *g, const float *xp, const float *w, float alpha, float *y);
void wr_dconv_dw_avx512(const wr_dconv_geom *g, const float *xp, const float *dz, float alpha, float beta,
                        float *dw);

// The scalar references on explicit im2col rows (any N, K).
void wr_thin_nn_ref(int M, int N, int K, float alpha, const float *A, int lda, const float *B, float *C);
void wr_thin_tn_ref(int M, int N, int K, float alpha, const float *A, int lda, const float *D, float beta,
                    float *C);

// ---- BF16 forward (AVX-512 BF16) ------------------------------------------------
// For operands whose every value is exact in bf16 (the decoded FP8 values of
// an HFP8 layer: 4 or 3 significant bits): xp and the weights as bf16 (the
// top 16 bits of the fp32 values), the weights packed in tap pairs
// (wr_bf16_pack_w). y = alpha * acc, acc summed over tap pairs p in order as
// VDPBF16PS does: acc += x[2p+1] w[2p+1]; acc += x[2p] w[2p] (each product
// exact in fp32, each add rounded to nearest even, as Intel documents it). The
// tests hold the kernel to it where the sums are exact and to the fp32
// summation bound otherwise (room for a CPU that rounds a pair once).
// 1 if the BF16 kernel takes this shape here: AVX-512 level with AVX512_BF16,
// N 16 or 32, C even, K <= 1024.
int wr_dconv_bf16_ok(int N, int K, int C);
// wp[(p N + j) 2 + e] = bf16 of w[(2p + e) N + j] (K even).
void wr_bf16_pack_w(const float *w, int K, int N, uint16_t *wp);
// The top 16 bits of each of n floats (exact for values with <= 8 significant bits).
void wr_bf16_from_f32(const float *x, uint16_t *out, size_t n);
void wr_dconv_fwd_bf16(const wr_dconv_geom *g, const uint16_t *xp, const uint16_t *wp, float alpha, float *y);
void wr_dconv_fwd_bf16_avx512(const wr_dconv_geom *g, const uint16_t *xp, const uint16_t *wp, float alpha,
                              float *y);
void wr_dconv_fwd_bf16_ref(const wr_dconv_geom *g, const uint16_t *xp, const uint16_t *wp, float alpha,
                           float *y);

#endif
