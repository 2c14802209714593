// birder.h — the Birder 1-bit codec (ALGORITHMS.md section 1): the worker's fused
// momentum + stochastic sign kernel, the shard's popcount aggregation into
// bit-planes, the shard's 1-bit re-quantization, and the parameter update applied
// straight from either broadcast encoding.
//
// Pure kernels: no allocation, no I/O, no errors to report. Each public function
// dispatches at run time (wr_cpu_level()) to an AVX-512, AVX2 or scalar version
// (requantize also needs AES instructions: see wr_birder_requantize_variant);
// the `*_ref` scalar twins define the results, and every version gives exactly
// the same bits and floats (replicas on CPUs with different ISA levels must stay
// bit-identical). Arguments are trusted (sizes come from the caller's own
// validated configuration); broken invariants abort via WR_CHECK. n may be 0 (then
// no memory is touched). Kernels read and write exactly the documented words and
// floats (masked vector tails), never past them. Thread-safe: no shared state.
//
// ---- Bit layout (ALGORITHMS.md 1.2) -------------------------------------------
// Bit 1 means +1. Element j -> 64-bit word j/64, bit j%64 (LSB first). A vector
// of n elements is wr_birder_words(n) = ceil(n/64) words. Writers zero the tail
// bits past n; readers ignore them (mask them off).
// Bit-planes of counts c_j in [0, n_workers]: P = wr_birder_planes(n_workers)
// planes, plane-major: planes[p * words + w] holds bit p of c_j for the 64
// elements of word w. This array is the `exact` broadcast payload as is.
//
// ---- Exact arithmetic (all fp32, IEEE round-to-nearest, no FMA anywhere) -------
// encode, per element (omb = 1.0f - beta computed once in fp32):
//     m' = (beta * m) + (omb * g)           two products, then one add
//     b' = (beta * b) + (omb * fabsf(g))
//     z  = m' / b'                          true division (not a reciprocal)
//     z  = 0 if !(b' > 0) or z is NaN;  else clamped to [-1, 1]
//     T  = (uint32_t)((1.0f + z) * 8388608.0f)      in [0, 2^24]; truncation
//     r24 = wr_rng_u32(key, (uint32_t)(first_index + j)) >> 8
//     bit = r24 < T            so P(+1) = T / 2^24 = (1+z)/2 within 2^-23
// count: c_j = number of the n_workers input vectors with bit j set.
// u from a count (`exact`):  u = (float)(2c - n) / (float)n   (both operands
//     exact integers in fp32, one correctly rounded division).
// requantize (`1bit`): P(+1) = c/n with an integer threshold, no float:
//     r24 = wr_rng_aes_r24(key, (uint32_t)(first_index + j))    (rng_aes.h)
//     bit = (uint64_t)r24 * n < (uint64_t)c << 24
//     i.e. P(+1) = ceil(c * 2^24 / n) / 2^24, within 2^-24 of c/n; c = n always
//     gives +1, c = 0 always -1. (E[Q(u)] = u for u = (2c-n)/n.)
//     r24 = hi8 << 16 | lo16 comes from AES rounds on counter blocks (rng_aes.h), not
//     from wr_rng_u32: hi8 from one block per 16 elements, lo16 from one per 8. The
//     kernels compare hi8 with T(c) >> 16, T(c) = ceil(c * 2^24 / n), and read lo16
//     only on a tie (2^-8 per element): the same predicate, so the same bits.
// apply (decoupled weight decay), per element with u as above:
//     t = wd * x;  t = u + t;  t = lr * t;  x = x - t      four separate fp32 ops
// Counters are 32-bit (rng.h): element indices wrap modulo 2^32.
// Scalar and vector code both follow MXCSR; replicas must run with the default
// (round to nearest, FTZ/DAZ off), which nothing in wren changes.
#ifndef WR_BIRDER_H
#define WR_BIRDER_H

#include <stddef.h>
#include <stdint.h>

#include "rng.h"
#include "rng_aes.h"

// Number of 64-bit words holding n bits.
static inline size_t wr_birder_words(size_t n) { return (n + 63) / 64; }

// Worker fused kernel, one pass over memory. For j in [0, n):
//   m[j] = beta*m[j] + (1-beta)*g[j];  b[j] = beta*b[j] + (1-beta)*|g[j]|;
//   z = m[j]/b[j] (0 where b[j] <= 0 or NaN, clamped to [-1,1]); bit j = Q(z)
//   with rng counter first_index + j.
// bits: wr_birder_words(n) words written (tail bits zero). first_index must be a
// multiple of 64 (shard ranges are 64-aligned) so local and global layout agree
// (aborts otherwise). m and b are updated in place; g, m, b, bits must not overlap.
void wr_birder_encode(const float *g, float *m, float *b, size_t n, float beta, wr_rng_key key,
                      uint64_t first_index, uint64_t *bits);

// ceil(log2(n_workers + 1)): bit-planes needed for counts in [0, n_workers].
// 1 -> 1, 2..3 -> 2, 4..7 -> 3, ..., 255 -> 8. n_workers must be in [1, 65535].
int wr_birder_planes(int n_workers);

// Shard: counts the +1 bits of n_workers vectors bits[0..n_workers-1] (each
// wr_birder_words(n) words; their tail bits are ignored) and writes the counts as
// bit-planes: wr_birder_planes(n_workers) * wr_birder_words(n) words, plane-major,
// tail bits zero. 1 <= n_workers <= 65535.
void wr_birder_count_planes(const uint64_t *const *bits, int n_workers, size_t n, uint64_t *planes);

// The counts as uint16 (n values), for tests and debugging.
void wr_birder_counts(const uint64_t *const *bits, int n_workers, size_t n, uint16_t *counts);

// Shard `1bit` broadcast: re-quantizes u = (2c-n)/n to one bit with P(+1) = c/n
// (integer threshold above). Reads planes as written by wr_birder_count_planes;
// counts above n_workers (impossible from count_planes) give +1. The shard keys it
// with wr_rng_key_make(seed, 0xB0000000 + shard, step); counter = first_index + j.
// first_index must be a multiple of 64. Writes wr_birder_words(n) words, tail zero.
void wr_birder_requantize(const uint64_t *planes, int n_workers, size_t n, wr_rng_key key,
                          uint64_t first_index, uint64_t *bits_out);

// The `1bit` aggregation of the shards and of a node in the hierarchical
// all-reduce: the bits of wr_birder_count_planes then wr_birder_requantize into
// bits_out (wr_birder_words(n) words, tail zero). planes (wr_birder_planes(n_workers)
// * wr_birder_words(n) words) is scratch: its contents afterwards are unspecified
// (the fused AVX-512 and AVX2+VAES kernels keep the counts in registers and leave
// it untouched).
void wr_birder_aggregate(const uint64_t *const *bits, int n_workers, size_t n, wr_rng_key key,
                         uint64_t first_index, uint64_t *planes, uint64_t *bits_out);

// x -= lr * (u + wd * x) from the broadcast encoding without materialising u.
// In place; identical floats at every ISA level (the formula in the header comment).
// apply_bits: u = +1 where the bit is set, -1 elsewhere.
void wr_birder_apply_bits(float *x, const uint64_t *bits, size_t n, float lr, float wd);
// apply_planes: u = (2c - n_workers) / n_workers from the bit-planes. The planes are
// any bits (a count above n_workers, which count_planes never writes, just gives u > 1).
void wr_birder_apply_planes(float *x, const uint64_t *planes, int n_workers, size_t n, float lr, float wd);

// Decoders: bits -> u in {-1.0f, +1.0f}; planes -> u = (float)(2c-n)/(float)n.
void wr_birder_decode_bits(const uint64_t *bits, size_t n, float *u);
void wr_birder_decode_planes(const uint64_t *planes, int n_workers, size_t n, float *u);

// ---- Implementation variants (for tests and benchmarks; same contracts) -------
// *_ref: the scalar definitions. *_avx2 / *_avx512: only call them when
// wr_cpu_max_level() reports that level. One list, declared per suffix.
#define WR_BIRDER_VARIANTS(sfx)                                                                           \
    void wr_birder_encode##sfx(const float *g, float *m, float *b, size_t n, float beta, wr_rng_key key,  \
                               uint64_t first_index, uint64_t *bits);                                     \
    void wr_birder_count_planes##sfx(const uint64_t *const *bits, int n_workers, size_t n,                \
                                     uint64_t *planes);                                                   \
    void wr_birder_requantize##sfx(const uint64_t *planes, int n_workers, size_t n, wr_rng_key key,       \
                                   uint64_t first_index, uint64_t *bits_out);                             \
    void wr_birder_apply_bits##sfx(float *x, const uint64_t *bits, size_t n, float lr, float wd);         \
    void wr_birder_apply_planes##sfx(float *x, const uint64_t *planes, int n_workers, size_t n, float lr, \
                                     float wd);                                                           \
    void wr_birder_decode_bits##sfx(const uint64_t *bits, size_t n, float *u);                            \
    void wr_birder_decode_planes##sfx(const uint64_t *planes, int n_workers, size_t n, float *u);

// Kernels whose inputs and outputs together pass this many bytes write their output
// with non-temporal (streaming) stores: it would not stay cached for the next kernel
// anyway, and streaming skips the read-for-ownership of every output line.
#define WR_BIRDER_STREAM_BYTES ((size_t)16 << 20)
static inline int wr_birder_stream_out(size_t bytes_touched) {
    return bytes_touched >= WR_BIRDER_STREAM_BYTES;
}

WR_BIRDER_VARIANTS(_ref)
WR_BIRDER_VARIANTS(_avx2)
WR_BIRDER_VARIANTS(_avx512)
void wr_birder_counts_ref(const uint64_t *const *bits, int n_workers, size_t n, uint16_t *counts);
// Requantize needs AES instructions on top of the level: _avx512 also needs VAES,
// AVX512-VBMI and GFNI, _avx2 VAES; _aesni is the AVX2 code with AES-NI on xmm (AVX2 + AES-NI).
void wr_birder_requantize_aesni(const uint64_t *planes, int n_workers, size_t n, wr_rng_key key,
                                uint64_t first_index, uint64_t *bits_out);
// Aggregate variants: _ref is count_planes_ref + requantize_ref; _avx512 and _avx2
// (the CPU needs of requantize_avx512 / _avx2) fuse the two for n_workers <= 127 / 31.
void wr_birder_aggregate_ref(const uint64_t *const *bits, int n_workers, size_t n, wr_rng_key key,
                             uint64_t first_index, uint64_t *planes, uint64_t *bits_out);
void wr_birder_aggregate_avx512(const uint64_t *const *bits, int n_workers, size_t n, wr_rng_key key,
                                uint64_t first_index, uint64_t *planes, uint64_t *bits_out);
void wr_birder_aggregate_avx2(const uint64_t *const *bits, int n_workers, size_t n, wr_rng_key key,
                              uint64_t first_index, uint64_t *planes, uint64_t *bits_out);
enum wr_birder_rq_variant { WR_BIRDER_RQ_REF, WR_BIRDER_RQ_AESNI, WR_BIRDER_RQ_AVX2, WR_BIRDER_RQ_AVX512 };
// Which requantize kernel wr_birder_requantize runs here (wr_cpu_level() and the AES
// instructions): "scalar", "avx2+aesni", "avx2+vaes" or "avx512+vaes" (benchmarks, logs).
const char *wr_birder_requantize_variant(void);

#endif
