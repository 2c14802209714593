// hfp8.h — the two HFP8 8-bit floating-point formats (ALGORITHMS.md section 2)
// and their conversion kernels.
//
//   WR_FP8_E4M3B11  forward (weights, activations): 1-4-3, exponent bias 11,
//                   no inf, no -0, 0x80 is the only NaN, max 30 (0x7F),
//                   min normal 2^-10, min subnormal 2^-13.
//   WR_FP8_E5M2     backward (errors, gradients): 1-5-2, bias 15, IEEE-like
//                   (e=31: inf / NaN), max 57344 (0x7B), min subnormal 2^-16.
//
// Conversion from fp32 (all kernels here, scalar and vector, give the same bits):
//   - round to nearest, ties to even, subnormals of the target included, one
//     rounding straight from fp32 (never through fp16);
//   - saturating: anything at or past the RNE overflow threshold, +-inf
//     included, gives +-max;
//   - NaN gives NaN: 0x80 for E4M3-b11; (sign << 7) | 0x7F for E5M2;
//   - zero: E4M3-b11 has no -0, so -0.0 and negative values that round to zero
//     give 0x00; E5M2 keeps the sign (0x80 for -0.0 and negative underflow).
//
// Stochastic rounding (the *_sr kernels): the magnitude is truncated to the
// target's precision at the input's exponent (subnormal spacing below the
// min normal); the dropped part, as a 32-bit binary fraction f (exact whenever
// at most 32 bits are dropped, i.e. |x| >= 2^-22 for E4M3-b11 and >= 2^-25 for
// E5M2; truncated below that), rounds the magnitude up one step iff
// f + r >= 2^32, r being 32 random bits. So P(up) = (|x| - lo) / (hi - lo).
// Saturation, NaN and zero rules are those above. The random bits of element i
// of an array are
//     r = wr_rng_u32(wr_rng_key_make(seed, 0, 0), (uint32_t)(offset + i))
// so a call replays exactly from (seed, offset), and splitting an array into
// pieces with matching offsets gives the same codes as one call. The counter
// is 32 bits: it wraps modulo 2^32, so elements whose global index (offset + i)
// differs by a multiple of 2^32 reuse the same random bits; use a fresh seed
// (e.g. derived from the step) rather than offsets past 2^32 if that matters.
//
// Array kernels pick scalar, AVX2 or AVX-512 code at run time (wr_cpu_level());
// every one has a *_ref scalar twin that gives bit-identical results (tests
// compare them). No kernel allocates, blocks or fails; x and out may alias
// only in the *_inplace forms. n = 0 is allowed (no-op).
#ifndef WR_HFP8_H
#define WR_HFP8_H

#include <stddef.h>
#include <stdint.h>

enum wr_fp8_format { WR_FP8_E4M3B11, WR_FP8_E5M2 };

#define WR_FP8_E4M3B11_MAX 30.0f
#define WR_FP8_E5M2_MAX 57344.0f
#define WR_FP8_E4M3B11_NAN 0x80u  // the only NaN code of E4M3-b11
#define WR_FP8_E5M2_NAN 0x7Fu     // canonical positive E5M2 NaN (negative NaN: 0xFF)

// Largest finite magnitude of the format (30 or 57344).
float wr_fp8_max(enum wr_fp8_format f);
// Name for logs: "e4m3b11" or "e5m2".
const char *wr_fp8_format_name(enum wr_fp8_format f);

// ---- scalar conversions ------------------------------------------------------

// fp32 -> code, round to nearest even (rules above).
uint8_t wr_fp8_encode(float x, enum wr_fp8_format f);
// fp32 -> code, stochastic rounding with the given 32 random bits r.
uint8_t wr_fp8_encode_sr(float x, enum wr_fp8_format f, uint32_t r);
// code -> fp32 (exact). E4M3-b11 0x80 and the E5M2 NaN codes give the quiet
// NaN 0x7FC00000 (so the fake-quantize kernels also return that NaN).
float wr_fp8_decode(uint8_t code, enum wr_fp8_format f);
// The 256-entry decode table of a format (static storage, never freed).
const float *wr_fp8_decode_table(enum wr_fp8_format f);

// ---- array kernels (run-time dispatch) ----------------------------------------

// out[i] = wr_fp8_encode(x[i], f), i < n.
void wr_fp8_encode_array(const float *x, uint8_t *out, size_t n, enum wr_fp8_format f);
// out[i] = wr_fp8_encode(x[i] * scale, f), i < n: the fp32 product (one IEEE
// multiply, as a separate x*s loop would do) and the encode in one pass, for
// tensors scaled by a per-tensor factor (the layers' power-of-two scales).
void wr_fp8_encode_scaled_array(const float *x, uint8_t *out, size_t n, float scale, enum wr_fp8_format f);
// out[i] = wr_fp8_decode(in[i], f), i < n.
void wr_fp8_decode_array(const uint8_t *in, float *out, size_t n, enum wr_fp8_format f);
// "Fake quantize": x[i] = decode(encode(x[i])) in place, round to nearest even.
void wr_fp8_quantize_inplace(float *x, size_t n, enum wr_fp8_format f);
// out[i] = wr_fp8_encode_sr(x[i], f, r_i) with r_i the bits of element offset+i (above).
void wr_fp8_encode_sr_array(const float *x, uint8_t *out, size_t n, enum wr_fp8_format f, uint64_t seed,
                            uint64_t offset);
// x[i] = decode(encode_sr(x[i])) in place, same random bits as wr_fp8_encode_sr_array.
void wr_fp8_quantize_sr_inplace(float *x, size_t n, enum wr_fp8_format f, uint64_t seed, uint64_t offset);
// Largest |x[i]|, i < n (0 for n = 0). inf if any +-inf; NaN if any NaN (so a
// loss scaler sees overflow). Exact and independent of order.
float wr_fp8_amax(const float *x, size_t n);

// ---- variants of the array kernels, one list declared per suffix -------------
// *_ref: the scalar references (same results, plain loops; for tests and
// benches). *_avx2 / *_avx512: the ISA kernels behind the dispatchers
// (hfp8_avx2.c, hfp8_avx512.c); call the dispatching functions above instead:
// these need the CPU feature. NaN from decode is always the quiet NaN 0x7FC00000.
#define WR_FP8_VARIANTS(sfx)                                                                       \
    void wr_fp8_encode_array##sfx(const float *x, uint8_t *out, size_t n, enum wr_fp8_format f);   \
    void wr_fp8_encode_scaled_array##sfx(const float *x, uint8_t *out, size_t n, float scale,      \
                                         enum wr_fp8_format f);                                    \
    void wr_fp8_decode_array##sfx(const uint8_t *in, float *out, size_t n, enum wr_fp8_format f);  \
    void wr_fp8_quantize_inplace##sfx(float *x, size_t n, enum wr_fp8_format f);                   \
    void wr_fp8_encode_sr_array##sfx(const float *x, uint8_t *out, size_t n, enum wr_fp8_format f, \
                                     uint64_t seed, uint64_t offset);                              \
    void wr_fp8_quantize_sr_inplace##sfx(float *x, size_t n, enum wr_fp8_format f, uint64_t seed,  \
                                         uint64_t offset);                                         \
    float wr_fp8_amax##sfx(const float *x, size_t n);

WR_FP8_VARIANTS(_ref)
WR_FP8_VARIANTS(_avx2)
WR_FP8_VARIANTS(_avx512)

#endif
