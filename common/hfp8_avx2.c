// hfp8_avx2.c — AVX2 (+F16C) HFP8 kernels, 8 lanes of 32 bits. Bit-identical
// to the scalar references in hfp8.c (tests compare them).
//
// Round to nearest even, per lane:
//   - at or above the target's min normal, add the rounding bias
//     (half - 1 + lowest kept bit) to the fp32 bits and cut the dropped bits:
//     a carry walks into the exponent exactly as a rounding should;
//   - below it, add the float C = 2^(emin - mbits + 23), whose ulp is the
//     target's subnormal spacing: the FPU's own RNE (MXCSR default) rounds |x|
//     once, at the right place, and the bits of the sum minus the bits of C
//     count the steps.
// Stochastic rounding, per lane: the same bit cut with the random bits added in
// place of the bias above the min normal; below it variable shifts extract the
// kept steps and the dropped part as a 32-bit fraction, as the scalar code does.
// Decode goes through the F16C fp16 -> fp32 conversion, which is exact: an
// E5M2 code is the top byte of an fp16, and an E4M3-b11 code put in fp16 bits
// (exponent bias 15) is its value times 2^-4.
// The fake-quantize kernels round in the fp32 domain (same cut, no codes).
// Each kernel is one always-inline body specialised for the two formats (e5 is
// a compile-time constant there, so shifts take immediates).
#include <immintrin.h>
#include <string.h>

#include "hfp8.h"
#include "rng.h"
#include "wr_common.h"

#define INL static inline __attribute__((always_inline))

#define MB(e5) ((e5) ? 2 : 3)
#define EMIN(e5) ((e5) ? -14 : -10)
#define D0(e5) (23 - MB(e5))
#define MAXCODE(e5) ((e5) ? 0x7B : 0x7F)
#define REBIAS(e5) ((127 + EMIN(e5) - 1) << MB(e5))
#define RNE_K(e5) ((int)((1u << (D0(e5) - 1)) - 1u - ((uint32_t)REBIAS(e5) << D0(e5))))
#define FMT(e5) ((e5) ? WR_FP8_E5M2 : WR_FP8_E4M3B11)
#define MAXV(e5) ((e5) ? WR_FP8_E5M2_MAX : WR_FP8_E4M3B11_MAX)

INL float pow2f(int e) {
    uint32_t u = (uint32_t)(e + 127) << 23;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

INL __m256i set1(int v) { return _mm256_set1_epi32(v); }

// Sign, NaN and zero rules on magnitude codes c (32-bit lanes, <= maxcode).
INL __m256i enc_finish(__m256i c, __m256i xb, __m256i a, const int e5) {
    __m256i sign8 = _mm256_and_si256(_mm256_srli_epi32(xb, 24), set1(0x80));
    __m256i isnan = _mm256_cmpgt_epi32(a, set1(0x7F800000));
    if (e5) {
        __m256i r = _mm256_or_si256(c, sign8);
        return _mm256_blendv_epi8(r, _mm256_or_si256(sign8, set1(0x7F)), isnan);
    }
    __m256i nz = _mm256_cmpgt_epi32(c, _mm256_setzero_si256());
    __m256i r = _mm256_or_si256(c, _mm256_and_si256(sign8, nz));
    return _mm256_blendv_epi8(r, set1(0x80), isnan);
}

INL __m256i enc_rne8(__m256 x, const int e5) {
    __m256i xb = _mm256_castps_si256(x);
    __m256i a = _mm256_and_si256(xb, set1(0x7FFFFFFF));
    // Bias and rebias in one constant: (a + lsb + half - 1 - (rebias << d0)) >> d0.
    // It wraps for lanes below the min normal, which take the other path.
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(a, D0(e5)), set1(1));
    __m256i t = _mm256_add_epi32(_mm256_add_epi32(a, lsb), set1(RNE_K(e5)));
    __m256i cn = _mm256_srli_epi32(t, D0(e5));
    __m256 magic = _mm256_set1_ps(pow2f(EMIN(e5) - MB(e5) + 23));
    __m256 s = _mm256_add_ps(_mm256_castsi256_ps(a), magic);
    __m256i cs = _mm256_sub_epi32(_mm256_castps_si256(s), _mm256_castps_si256(magic));
    __m256i is_sub = _mm256_cmpgt_epi32(set1((127 + EMIN(e5)) << 23), a);
    __m256i c = _mm256_blendv_epi8(cn, cs, is_sub);
    c = _mm256_min_epu32(c, set1(MAXCODE(e5)));
    return enc_finish(c, xb, a, e5);
}

// Below the min normal: kept steps (0..2^mbits) plus the stochastic carry.
INL __m256i sr_sub_steps(__m256i a, __m256i r, const int e5) {
    __m256i E = _mm256_srli_epi32(a, 23);
    __m256i has_e = _mm256_cmpgt_epi32(E, _mm256_setzero_si256());
    __m256i sig = _mm256_or_si256(_mm256_and_si256(a, set1(0x007FFFFF)),
                                  _mm256_and_si256(has_e, set1(0x00800000)));
    __m256i eeff = _mm256_max_epi32(E, set1(1));
    __m256i d = _mm256_sub_epi32(set1(D0(e5) + 127 + EMIN(e5)), eeff);  // > d0
    __m256i kept = _mm256_srlv_epi32(sig, d);                           // 0 when d >= 32
    // Shift counts >= 32 (or "negative") give 0, so one of the two terms is the
    // fraction and the other is 0 (both equal sig when d == 32).
    __m256i frac = _mm256_or_si256(_mm256_sllv_epi32(sig, _mm256_sub_epi32(set1(32), d)),
                                   _mm256_srlv_epi32(sig, _mm256_sub_epi32(d, set1(32))));
    __m256i s = _mm256_add_epi32(frac, r);
    __m256i nocarry = _mm256_cmpeq_epi32(_mm256_max_epu32(s, frac), s);
    return _mm256_add_epi32(kept, _mm256_andnot_si256(nocarry, set1(1)));
}

INL __m256i enc_sr8(__m256 x, __m256i r, const int e5) {
    __m256i xb = _mm256_castps_si256(x);
    __m256i a = _mm256_and_si256(xb, set1(0x7FFFFFFF));
    __m256i t = _mm256_add_epi32(a, _mm256_srli_epi32(r, 32 - D0(e5)));
    __m256i cn = _mm256_sub_epi32(_mm256_srli_epi32(t, D0(e5)), set1(REBIAS(e5)));
    __m256i is_sub = _mm256_cmpgt_epi32(set1((127 + EMIN(e5)) << 23), a);
    __m256i c = cn;
    if (!_mm256_testz_si256(is_sub, is_sub))  // rare when the data is scaled to the format
        c = _mm256_blendv_epi8(cn, sr_sub_steps(a, r, e5), is_sub);
    c = _mm256_min_epu32(c, set1(MAXCODE(e5)));
    return enc_finish(c, xb, a, e5);
}

// Sign, NaN and zero rules on rounded magnitudes v (fp32 bits, <= max).
INL __m256 q_finish(__m256i v, __m256i xb, __m256i a, const int e5) {
    __m256i sign = _mm256_and_si256(xb, set1((int)0x80000000u));
    if (!e5) sign = _mm256_and_si256(sign, _mm256_cmpgt_epi32(v, _mm256_setzero_si256()));
    __m256i r = _mm256_or_si256(v, sign);
    __m256i isnan = _mm256_cmpgt_epi32(a, set1(0x7F800000));
    return _mm256_castsi256_ps(_mm256_blendv_epi8(r, set1(0x7FC00000), isnan));
}

INL __m256 q_rne8(__m256 x, const int e5) {
    __m256i xb = _mm256_castps_si256(x);
    __m256i a = _mm256_and_si256(xb, set1(0x7FFFFFFF));
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(a, D0(e5)), set1(1));
    __m256i t = _mm256_add_epi32(a, _mm256_add_epi32(set1((1 << (D0(e5) - 1)) - 1), lsb));
    __m256i vn = _mm256_and_si256(t, set1((int)~((1u << D0(e5)) - 1)));
    __m256 magic = _mm256_set1_ps(pow2f(EMIN(e5) - MB(e5) + 23));
    __m256 vs = _mm256_sub_ps(_mm256_add_ps(_mm256_castsi256_ps(a), magic), magic);
    __m256i is_sub = _mm256_cmpgt_epi32(set1((127 + EMIN(e5)) << 23), a);
    __m256 v = _mm256_blendv_ps(_mm256_castsi256_ps(vn), vs, _mm256_castsi256_ps(is_sub));
    v = _mm256_min_ps(v, _mm256_set1_ps(MAXV(e5)));
    return q_finish(_mm256_castps_si256(v), xb, a, e5);
}

INL __m256 q_sr8(__m256 x, __m256i r, const int e5) {
    __m256i xb = _mm256_castps_si256(x);
    __m256i a = _mm256_and_si256(xb, set1(0x7FFFFFFF));
    __m256i t = _mm256_add_epi32(a, _mm256_srli_epi32(r, 32 - D0(e5)));
    __m256i vn = _mm256_and_si256(t, set1((int)~((1u << D0(e5)) - 1)));
    __m256i is_sub = _mm256_cmpgt_epi32(set1((127 + EMIN(e5)) << 23), a);
    __m256 v = _mm256_castsi256_ps(vn);
    if (!_mm256_testz_si256(is_sub, is_sub)) {
        __m256 vs = _mm256_mul_ps(_mm256_cvtepi32_ps(sr_sub_steps(a, r, e5)),
                                  _mm256_set1_ps(pow2f(EMIN(e5) - MB(e5))));
        v = _mm256_blendv_ps(v, vs, _mm256_castsi256_ps(is_sub));
    }
    v = _mm256_min_ps(v, _mm256_set1_ps(MAXV(e5)));
    return q_finish(_mm256_castps_si256(v), xb, a, e5);
}

// 16 codes (u8) -> 16 floats.
INL void dec16(const uint8_t *in, float *out, const int e5) {
    __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)in));
    __m256i h, isnan;
    if (e5) {
        h = _mm256_slli_epi16(w, 8);
        isnan = _mm256_cmpgt_epi16(_mm256_and_si256(w, _mm256_set1_epi16(0x7F)), _mm256_set1_epi16(0x7C));
    } else {
        h = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(w, _mm256_set1_epi16(0x80)), 8),
                            _mm256_slli_epi16(_mm256_and_si256(w, _mm256_set1_epi16(0x7F)), 7));
        isnan = _mm256_cmpeq_epi16(w, _mm256_set1_epi16(0x80));
    }
    h = _mm256_blendv_epi8(h, _mm256_set1_epi16(0x7E00), isnan);  // fp16 qNaN -> 0x7FC00000
    __m256 lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
    __m256 hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
    if (!e5) {
        lo = _mm256_mul_ps(lo, _mm256_set1_ps(16.0f));
        hi = _mm256_mul_ps(hi, _mm256_set1_ps(16.0f));
    }
    _mm256_storeu_ps(out, lo);
    _mm256_storeu_ps(out + 8, hi);
}

// Four vectors of 32-bit codes -> 32 bytes in order.
INL __m256i pack32(__m256i c0, __m256i c1, __m256i c2, __m256i c3) {
    __m256i p01 = _mm256_packus_epi32(c0, c1);
    __m256i p23 = _mm256_packus_epi32(c2, c3);
    __m256i b = _mm256_packus_epi16(p01, p23);
    return _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// Outputs at least this long (8 Mi codes, past every cache here) are written
// with non-temporal stores: such arrays are not read back soon, and streaming
// saves the read-for-ownership of every output line (~1/6 of the traffic).
#define WR_NT_MIN ((size_t)1 << 23)

// Elements before the first 32-byte boundary of out when streaming (done by the caller).
static inline size_t nt_head(const uint8_t *out, size_t n) {
    size_t h = (32 - ((uintptr_t)out & 31)) & 31;
    return n >= WR_NT_MIN ? WR_MIN(h, n) : 0;
}

INL void store32(uint8_t *out, __m256i b, int nt) {
    if (nt)
        _mm256_stream_si256((__m256i *)out, b);
    else
        _mm256_storeu_si256((__m256i *)out, b);
}

INL __m256i rng8(__m256i ctr, __m256i k0, __m256i k1) {
    __m256i x = _mm256_xor_si256(ctr, k0);
    for (int round = 0; round < 2; round++) {
        x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
        x = _mm256_mullo_epi32(x, set1((int)WR_RNG_M1));
        x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
        x = _mm256_mullo_epi32(x, set1((int)WR_RNG_M2));
        x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
        if (round == 0) x = _mm256_xor_si256(x, k1);
    }
    return x;
}

// ---- loops --------------------------------------------------------------------

// The RNE encode loop; `scaled` (a constant at each call site) multiplies each
// input by s first, as wr_fp8_encode_scaled_array_ref does.
INL void encode_loop(const float *x, uint8_t *out, size_t n, float s, const int scaled, const int e5) {
    const __m256 vs = _mm256_set1_ps(s);
#define LD8(p) (scaled ? _mm256_mul_ps(_mm256_loadu_ps(p), vs) : _mm256_loadu_ps(p))
#define REF(xp, op, m)                                              \
    (scaled ? wr_fp8_encode_scaled_array_ref(xp, op, m, s, FMT(e5)) \
            : wr_fp8_encode_array_ref(xp, op, m, FMT(e5)))
    size_t i = nt_head(out, n);
    const int nt = n >= WR_NT_MIN;
    REF(x, out, i);
    for (; i + 32 <= n; i += 32)
        store32(out + i,
                pack32(enc_rne8(LD8(x + i), e5), enc_rne8(LD8(x + i + 8), e5), enc_rne8(LD8(x + i + 16), e5),
                       enc_rne8(LD8(x + i + 24), e5)),
                nt);
    if (nt) _mm_sfence();
    REF(x + i, out + i, n - i);
#undef LD8
#undef REF
}

void wr_fp8_encode_array_avx2(const float *x, uint8_t *out, size_t n, enum wr_fp8_format f) {
    if (f == WR_FP8_E5M2)
        encode_loop(x, out, n, 1.0f, 0, 1);
    else
        encode_loop(x, out, n, 1.0f, 0, 0);
}

void wr_fp8_encode_scaled_array_avx2(const float *x, uint8_t *out, size_t n, float scale,
                                     enum wr_fp8_format f) {
    if (f == WR_FP8_E5M2)
        encode_loop(x, out, n, scale, 1, 1);
    else
        encode_loop(x, out, n, scale, 1, 0);
}

INL void encode_sr_loop(const float *x, uint8_t *out, size_t n, uint64_t seed, uint64_t offset,
                        const int e5) {
    wr_rng_key key = wr_rng_key_make(seed, 0, 0);
    __m256i k0 = set1((int)key.k0), k1 = set1((int)key.k1);
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    size_t i = nt_head(out, n);
    const int nt = n >= WR_NT_MIN;
    wr_fp8_encode_sr_array_ref(x, out, i, FMT(e5), seed, offset);
    for (; i + 32 <= n; i += 32) {
        __m256i ctr = _mm256_add_epi32(set1((int)(uint32_t)(offset + i)), lane);
        __m256i c[4];
        for (int j = 0; j < 4; j++) {
            __m256i r = rng8(_mm256_add_epi32(ctr, set1(8 * j)), k0, k1);
            c[j] = enc_sr8(_mm256_loadu_ps(x + i + 8 * j), r, e5);
        }
        store32(out + i, pack32(c[0], c[1], c[2], c[3]), nt);
    }
    if (nt) _mm_sfence();
    wr_fp8_encode_sr_array_ref(x + i, out + i, n - i, FMT(e5), seed, offset + i);
}

void wr_fp8_encode_sr_array_avx2(const float *x, uint8_t *out, size_t n, enum wr_fp8_format f, uint64_t seed,
                                 uint64_t offset) {
    if (f == WR_FP8_E5M2)
        encode_sr_loop(x, out, n, seed, offset, 1);
    else
        encode_sr_loop(x, out, n, seed, offset, 0);
}

INL void decode_loop(const uint8_t *in, float *out, size_t n, const int e5) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) dec16(in + i, out + i, e5);
    wr_fp8_decode_array_ref(in + i, out + i, n - i, FMT(e5));
}

void wr_fp8_decode_array_avx2(const uint8_t *in, float *out, size_t n, enum wr_fp8_format f) {
    if (f == WR_FP8_E5M2)
        decode_loop(in, out, n, 1);
    else
        decode_loop(in, out, n, 0);
}

INL void quantize_loop(float *x, size_t n, const int e5) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm256_storeu_ps(x + i, q_rne8(_mm256_loadu_ps(x + i), e5));
        _mm256_storeu_ps(x + i + 8, q_rne8(_mm256_loadu_ps(x + i + 8), e5));
    }
    wr_fp8_quantize_inplace_ref(x + i, n - i, FMT(e5));
}

void wr_fp8_quantize_inplace_avx2(float *x, size_t n, enum wr_fp8_format f) {
    if (f == WR_FP8_E5M2)
        quantize_loop(x, n, 1);
    else
        quantize_loop(x, n, 0);
}

INL void quantize_sr_loop(float *x, size_t n, uint64_t seed, uint64_t offset, const int e5) {
    wr_rng_key key = wr_rng_key_make(seed, 0, 0);
    __m256i k0 = set1((int)key.k0), k1 = set1((int)key.k1);
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i r = rng8(_mm256_add_epi32(set1((int)(uint32_t)(offset + i)), lane), k0, k1);
        _mm256_storeu_ps(x + i, q_sr8(_mm256_loadu_ps(x + i), r, e5));
    }
    wr_fp8_quantize_sr_inplace_ref(x + i, n - i, FMT(e5), seed, offset + i);
}

void wr_fp8_quantize_sr_inplace_avx2(float *x, size_t n, enum wr_fp8_format f, uint64_t seed,
                                     uint64_t offset) {
    if (f == WR_FP8_E5M2)
        quantize_sr_loop(x, n, seed, offset, 1);
    else
        quantize_sr_loop(x, n, seed, offset, 0);
}

float wr_fp8_amax_avx2(const float *x, size_t n) {
    __m256i m0 = _mm256_setzero_si256(), m1 = m0, m2 = m0, m3 = m0;
    __m256i abs = set1(0x7FFFFFFF);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        m0 = _mm256_max_epu32(m0, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + i)), abs));
        m1 = _mm256_max_epu32(m1, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + i + 8)), abs));
        m2 = _mm256_max_epu32(m2, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + i + 16)), abs));
        m3 = _mm256_max_epu32(m3, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + i + 24)), abs));
    }
    m0 = _mm256_max_epu32(_mm256_max_epu32(m0, m1), _mm256_max_epu32(m2, m3));
    uint32_t lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, m0);
    uint32_t m = 0;
    for (int j = 0; j < 8; j++)
        if (lanes[j] > m) m = lanes[j];
    float tail = wr_fp8_amax_ref(x + i, n - i);
    uint32_t t;
    memcpy(&t, &tail, sizeof t);
    if (t > m) m = t;
    float r;
    memcpy(&r, &m, sizeof r);
    return r;
}
