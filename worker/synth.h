// synth.h — the synthetic:D model's gradient kernel (model.c): one pass that
// reads x and a small noise table and writes g, for a cheap memory-bound
// stand-in of a real backward pass at BERT-Base size.
//
//   g[j] = 0.01f * x[j] + 0.01f * tab[(j + o) & (WR_SYNTH_TABLE - 1)]
//   (two fp32 products, one add, no FMA)
//
// and the sum of g[j]^2 in one fixed order, so every version returns the same
// double: elements [0, d - d % 32) go in blocks of WR_SYNTH_BLOCK; within a
// block, float lane l (0..31) sums (g[j] * g[j]) for j % 32 == l in order of j;
// at the end of a block the 32 lane sums are added to the double total in lane
// order. The last d % 32 elements then add (double)(g[j] * g[j]) one by one.
//
// tab holds WR_SYNTH_TABLE + WR_SYNTH_PAD floats, the last WR_SYNTH_PAD a copy
// of the first (so a vector read never wraps). x, tab and g must not overlap;
// no alignment required. When g is 64-byte aligned and larger than
// WR_SYNTH_STREAM_BYTES, g is written with streaming stores (fenced before
// return): it is read back in full by the codec, so the read-for-ownership
// pass is pure waste. d may be 0. Pure, thread-safe, no errors.
#ifndef WR_SYNTH_H
#define WR_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#define WR_SYNTH_TABLE 65536u  // power of two
#define WR_SYNTH_PAD 32u       // wrap copy past the table
#define WR_SYNTH_BLOCK 65536u  // elements per float accumulation block
#define WR_SYNTH_STREAM_BYTES ((size_t)32 << 20)

// Dispatches on wr_cpu_level(): AVX-512, else the SSE2 version (baseline x86-64).
double wr_synth_grad(const float *x, const float *tab, uint32_t o, size_t d, float *g);

// The scalar definition, the SSE2 version and the AVX-512 one (call only when
// wr_cpu_max_level() reports AVX-512). Same g floats and same return bits.
double wr_synth_grad_ref(const float *x, const float *tab, uint32_t o, size_t d, float *g);
double wr_synth_grad_sse2(const float *x, const float *tab, uint32_t o, size_t d, float *g);
double wr_synth_grad_avx512(const float *x, const float *tab, uint32_t o, size_t d, float *g);

#endif
