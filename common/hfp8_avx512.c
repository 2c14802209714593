// hfp8_avx512.c — AVX-512 (F/BW/DQ/VL) HFP8 kernels, 16 lanes of 32 bits.
// Same algorithms as hfp8_avx2.c (see the comment there), with mask registers
// for the lane selections; bit-identical to the scalar references in hfp8.c.
#include <immintrin.h>
#include <string.h>

#include "wr_common.h"

#include "hfp8.h"
#include "rng.h"

#define INL static inline __attribute__((always_inline))

#define MB(e5) ((e5) ? 2 : 3)
#define EMIN(e5) ((e5) ? -14 : -10)
#define D0(e5) (23 - MB(e5))
#define MAXCODE(e5) ((e5) ? 0x7B : 0x7F)
#define MAXV(e5) ((e5) ? WR_FP8_E5M2_MAX : WR_FP8_E4M3B11_MAX)
#define REBIAS(e5) ((127 + EMIN(e5) - 1) << MB(e5))
#define RNE_K(e5) ((int)((1u << (D0(e5) - 1)) - 1u - ((uint32_t)REBIAS(e5) << D0(e5))))
#define FMT(e5) ((e5) ? WR_FP8_E5M2 : WR_FP8_E4M3B11)

INL float pow2f(int e) {
    uint32_t u = (uint32_t)(e + 127) << 23;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

INL __m512i set1(int v) { return _mm512_set1_epi32(v); }

// Sign, NaN and zero rules on magnitude codes c (<= maxcode).
INL __m512i enc_finish(__m512i c, __m512i xb, __m512i a, const int e5) {
    // c | (xb >> 24 & 0x80) in one ternary-logic op (A | (B & C) = 0xF8).
    __m512i top = _mm512_srli_epi32(xb, 24);
    __mmask16 isnan = _mm512_cmpgt_epu32_mask(a, set1(0x7F800000));
    if (e5) {
        __m512i nanc = _mm512_mask_mov_epi32(c, isnan, set1(0x7F));
        return _mm512_ternarylogic_epi32(nanc, top, set1(0x80), 0xF8);
    }
    __mmask16 nz = _mm512_test_epi32_mask(c, c);  // no -0
    __m512i r = _mm512_mask_ternarylogic_epi32(c, nz, top, set1(0x80), 0xF8);
    return _mm512_mask_mov_epi32(r, isnan, set1(0x80));
}

INL __m512i enc_rne16(__m512 x, const int e5) {
    __m512i xb = _mm512_castps_si512(x);
    __m512i a = _mm512_and_si512(xb, set1(0x7FFFFFFF));
    // Bias and rebias in one constant: (a + lsb + half - 1 - (rebias << d0)) >> d0.
    // It wraps for lanes below the min normal, which take the other path.
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(a, D0(e5)), set1(1));
    __m512i t = _mm512_add_epi32(_mm512_add_epi32(a, lsb), set1(RNE_K(e5)));
    __m512i cn = _mm512_srli_epi32(t, D0(e5));
    __m512 magic = _mm512_set1_ps(pow2f(EMIN(e5) - MB(e5) + 23));
    __m512 s = _mm512_add_ps(_mm512_castsi512_ps(a), magic);
    __m512i cs = _mm512_sub_epi32(_mm512_castps_si512(s), _mm512_castps_si512(magic));
    __mmask16 is_sub = _mm512_cmplt_epu32_mask(a, set1((127 + EMIN(e5)) << 23));
    __m512i c = _mm512_mask_mov_epi32(cn, is_sub, cs);
    c = _mm512_min_epu32(c, set1(MAXCODE(e5)));
    return enc_finish(c, xb, a, e5);
}

// Below the min normal: kept steps (0..2^mbits) plus the stochastic carry.
INL __m512i sr_sub_steps(__m512i a, __m512i r, const int e5) {
    __m512i E = _mm512_srli_epi32(a, 23);
    __mmask16 has_e = _mm512_test_epi32_mask(E, E);
    __m512i man = _mm512_and_si512(a, set1(0x007FFFFF));
    __m512i sig = _mm512_mask_or_epi32(man, has_e, man, set1(0x00800000));
    __m512i eeff = _mm512_max_epi32(E, set1(1));
    __m512i d = _mm512_sub_epi32(set1(D0(e5) + 127 + EMIN(e5)), eeff);
    __m512i kept = _mm512_srlv_epi32(sig, d);
    __m512i frac = _mm512_or_si512(_mm512_sllv_epi32(sig, _mm512_sub_epi32(set1(32), d)),
                                   _mm512_srlv_epi32(sig, _mm512_sub_epi32(d, set1(32))));
    __m512i s = _mm512_add_epi32(frac, r);
    __mmask16 carry = _mm512_cmplt_epu32_mask(s, frac);
    return _mm512_mask_add_epi32(kept, carry, kept, set1(1));
}

INL __m512i enc_sr16(__m512 x, __m512i r, const int e5) {
    __m512i xb = _mm512_castps_si512(x);
    __m512i a = _mm512_and_si512(xb, set1(0x7FFFFFFF));
    __m512i t = _mm512_add_epi32(a, _mm512_srli_epi32(r, 32 - D0(e5)));
    __m512i cn = _mm512_sub_epi32(_mm512_srli_epi32(t, D0(e5)), set1(REBIAS(e5)));
    __mmask16 is_sub = _mm512_cmplt_epu32_mask(a, set1((127 + EMIN(e5)) << 23));
    __m512i c = cn;
    if (is_sub) c = _mm512_mask_mov_epi32(cn, is_sub, sr_sub_steps(a, r, e5));  // rare when scaled
    c = _mm512_min_epu32(c, set1(MAXCODE(e5)));
    return enc_finish(c, xb, a, e5);
}

// Sign, NaN and zero rules on rounded magnitudes v (fp32 bits, <= max).
INL __m512 q_finish(__m512i v, __m512i xb, __m512i a, const int e5) {
    __m512i sign = _mm512_and_si512(xb, set1((int)0x80000000u));
    __m512i r = e5 ? _mm512_or_si512(v, sign)
                   : _mm512_mask_or_epi32(v, _mm512_test_epi32_mask(v, v), v, sign);
    __mmask16 isnan = _mm512_cmpgt_epu32_mask(a, set1(0x7F800000));
    return _mm512_castsi512_ps(_mm512_mask_mov_epi32(r, isnan, set1(0x7FC00000)));
}

INL __m512 q_rne16(__m512 x, const int e5) {
    __m512i xb = _mm512_castps_si512(x);
    __m512i a = _mm512_and_si512(xb, set1(0x7FFFFFFF));
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(a, D0(e5)), set1(1));
    __m512i t = _mm512_add_epi32(a, _mm512_add_epi32(set1((1 << (D0(e5) - 1)) - 1), lsb));
    __m512i vn = _mm512_and_si512(t, set1((int)~((1u << D0(e5)) - 1)));
    __m512 magic = _mm512_set1_ps(pow2f(EMIN(e5) - MB(e5) + 23));
    __m512 vs = _mm512_sub_ps(_mm512_add_ps(_mm512_castsi512_ps(a), magic), magic);
    __mmask16 is_sub = _mm512_cmplt_epu32_mask(a, set1((127 + EMIN(e5)) << 23));
    __m512 v = _mm512_mask_mov_ps(_mm512_castsi512_ps(vn), is_sub, vs);
    v = _mm512_min_ps(v, _mm512_set1_ps(MAXV(e5)));
    return q_finish(_mm512_castps_si512(v), xb, a, e5);
}

INL __m512 q_sr16(__m512 x, __m512i r, const int e5) {
    __m512i xb = _mm512_castps_si512(x);
    __m512i a = _mm512_and_si512(xb, set1(0x7FFFFFFF));
    __m512i t = _mm512_add_epi32(a, _mm512_srli_epi32(r, 32 - D0(e5)));
    __m512i vn = _mm512_and_si512(t, set1((int)~((1u << D0(e5)) - 1)));
    __mmask16 is_sub = _mm512_cmplt_epu32_mask(a, set1((127 + EMIN(e5)) << 23));
    __m512 v = _mm512_castsi512_ps(vn);
    if (is_sub) {
        __m512 vs = _mm512_mul_ps(_mm512_cvtepi32_ps(sr_sub_steps(a, r, e5)),
                                  _mm512_set1_ps(pow2f(EMIN(e5) - MB(e5))));
        v = _mm512_mask_mov_ps(v, is_sub, vs);
    }
    v = _mm512_min_ps(v, _mm512_set1_ps(MAXV(e5)));
    return q_finish(_mm512_castps_si512(v), xb, a, e5);
}

// 32 codes (u8) -> 32 floats.
INL void dec32(const uint8_t *in, float *out, const int e5) {
    __m512i w = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)in));
    __m512i h;
    __mmask32 isnan;
    if (e5) {
        h = _mm512_slli_epi16(w, 8);
        isnan = _mm512_cmpgt_epu16_mask(_mm512_and_si512(w, _mm512_set1_epi16(0x7F)),
                                        _mm512_set1_epi16(0x7C));
    } else {
        h = _mm512_or_si512(_mm512_slli_epi16(_mm512_and_si512(w, _mm512_set1_epi16(0x80)), 8),
                            _mm512_slli_epi16(_mm512_and_si512(w, _mm512_set1_epi16(0x7F)), 7));
        isnan = _mm512_cmpeq_epu16_mask(w, _mm512_set1_epi16(0x80));
    }
    h = _mm512_mask_mov_epi16(h, isnan, _mm512_set1_epi16(0x7E00));  // -> 0x7FC00000
    __m512 lo = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
    __m512 hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
    if (!e5) {
        lo = _mm512_mul_ps(lo, _mm512_set1_ps(16.0f));
        hi = _mm512_mul_ps(hi, _mm512_set1_ps(16.0f));
    }
    _mm512_storeu_ps(out, lo);
    _mm512_storeu_ps(out + 16, hi);
}

INL __m512i rng16(__m512i ctr, __m512i k0, __m512i k1) {
    __m512i x = _mm512_xor_si512(ctr, k0);
    for (int round = 0; round < 2; round++) {
        x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
        x = _mm512_mullo_epi32(x, set1((int)WR_RNG_M1));
        x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
        x = _mm512_mullo_epi32(x, set1((int)WR_RNG_M2));
        x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
        if (round == 0) x = _mm512_xor_si512(x, k1);
    }
    return x;
}

// ---- loops --------------------------------------------------------------------

// Outputs at least this long (8 Mi codes, past every cache here) are written
// with non-temporal stores: such arrays are not read back soon, and streaming
// saves the read-for-ownership of every output line (~1/6 of the traffic).
#define WR_NT_MIN ((size_t)1 << 23)

INL __m512i pack64(__m512i c0, __m512i c1, __m512i c2, __m512i c3) {
    __m256i lo = _mm256_set_m128i(_mm512_cvtepi32_epi8(c1), _mm512_cvtepi32_epi8(c0));
    __m256i hi = _mm256_set_m128i(_mm512_cvtepi32_epi8(c3), _mm512_cvtepi32_epi8(c2));
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

// Elements before the first 64-byte boundary of out when streaming (done by the caller).
static inline size_t nt_head(const uint8_t *out, size_t n) {
    size_t h = (64 - ((uintptr_t)out & 63)) & 63;
    return n >= WR_NT_MIN ? WR_MIN(h, n) : 0;
}

// The RNE encode loop; `scaled` (a constant at each call site) multiplies each
// input by s first, as wr_fp8_encode_scaled_array_ref does.
INL void encode_loop(const float *x, uint8_t *out, size_t n, float s, const int scaled, const int e5) {
    const __m512 vs = _mm512_set1_ps(s);
#define LD16(p) (scaled ? _mm512_mul_ps(_mm512_loadu_ps(p), vs) : _mm512_loadu_ps(p))
#define REF(xp, op, m)                                              \
    (scaled ? wr_fp8_encode_scaled_array_ref(xp, op, m, s, FMT(e5)) \
            : wr_fp8_encode_array_ref(xp, op, m, FMT(e5)))
    size_t i = nt_head(out, n);
    const int nt = n >= WR_NT_MIN;
    REF(x, out, i);
    for (; i + 64 <= n; i += 64) {
        __m512i b = pack64(enc_rne16(LD16(x + i), e5), enc_rne16(LD16(x + i + 16), e5),
                           enc_rne16(LD16(x + i + 32), e5), enc_rne16(LD16(x + i + 48), e5));
        if (nt)
            _mm512_stream_si512((void *)(out + i), b);
        else
            _mm512_storeu_si512((void *)(out + i), b);
    }
    if (nt) _mm_sfence();
    for (; i + 16 <= n; i += 16)
        _mm_storeu_si128((__m128i *)(out + i), _mm512_cvtepi32_epi8(enc_rne16(LD16(x + i), e5)));
    REF(x + i, out + i, n - i);
#undef LD16
#undef REF
}

void wr_fp8_encode_array_avx512(const float *x, uint8_t *out, size_t n, enum wr_fp8_format f) {
    if (f == WR_FP8_E5M2)
        encode_loop(x, out, n, 1.0f, 0, 1);
    else
        encode_loop(x, out, n, 1.0f, 0, 0);
}

void wr_fp8_encode_scaled_array_avx512(const float *x, uint8_t *out, size_t n, float scale,
                                       enum wr_fp8_format f) {
    if (f == WR_FP8_E5M2)
        encode_loop(x, out, n, scale, 1, 1);
    else
        encode_loop(x, out, n, scale, 1, 0);
}

INL void encode_sr_loop(const float *x, uint8_t *out, size_t n, uint64_t seed, uint64_t offset,
                        const int e5) {
    wr_rng_key key = wr_rng_key_make(seed, 0, 0);
    __m512i k0 = set1((int)key.k0), k1 = set1((int)key.k1);
    __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    size_t i = nt_head(out, n);
    const int nt = n >= WR_NT_MIN;
    wr_fp8_encode_sr_array_ref(x, out, i, FMT(e5), seed, offset);
    for (; i + 64 <= n; i += 64) {
        __m512i ctr = _mm512_add_epi32(set1((int)(uint32_t)(offset + i)), lane);
        __m512i c[4];
        for (int j = 0; j < 4; j++) {
            __m512i r = rng16(_mm512_add_epi32(ctr, set1(16 * j)), k0, k1);
            c[j] = enc_sr16(_mm512_loadu_ps(x + i + 16 * j), r, e5);
        }
        __m512i b = pack64(c[0], c[1], c[2], c[3]);
        if (nt)
            _mm512_stream_si512((void *)(out + i), b);
        else
            _mm512_storeu_si512((void *)(out + i), b);
    }
    if (nt) _mm_sfence();
    for (; i + 16 <= n; i += 16) {
        __m512i r = rng16(_mm512_add_epi32(set1((int)(uint32_t)(offset + i)), lane), k0, k1);
        _mm_storeu_si128((__m128i *)(out + i), _mm512_cvtepi32_epi8(enc_sr16(_mm512_loadu_ps(x + i), r, e5)));
    }
    wr_fp8_encode_sr_array_ref(x + i, out + i, n - i, FMT(e5), seed, offset + i);
}

void wr_fp8_encode_sr_array_avx512(const float *x, uint8_t *out, size_t n, enum wr_fp8_format f,
                                   uint64_t seed, uint64_t offset) {
    if (f == WR_FP8_E5M2)
        encode_sr_loop(x, out, n, seed, offset, 1);
    else
        encode_sr_loop(x, out, n, seed, offset, 0);
}

INL void decode_loop(const uint8_t *in, float *out, size_t n, const int e5) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) dec32(in + i, out + i, e5);
    wr_fp8_decode_array_ref(in + i, out + i, n - i, FMT(e5));
}

void wr_fp8_decode_array_avx512(const uint8_t *in, float *out, size_t n, enum wr_fp8_format f) {
    if (f == WR_FP8_E5M2)
        decode_loop(in, out, n, 1);
    else
        decode_loop(in, out, n, 0);
}

INL void quantize_loop(float *x, size_t n, const int e5) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        _mm512_storeu_ps(x + i, q_rne16(_mm512_loadu_ps(x + i), e5));
        _mm512_storeu_ps(x + i + 16, q_rne16(_mm512_loadu_ps(x + i + 16), e5));
    }
    wr_fp8_quantize_inplace_ref(x + i, n - i, FMT(e5));
}

void wr_fp8_quantize_inplace_avx512(float *x, size_t n, enum wr_fp8_format f) {
    if (f == WR_FP8_E5M2)
        quantize_loop(x, n, 1);
    else
        quantize_loop(x, n, 0);
}

INL void quantize_sr_loop(float *x, size_t n, uint64_t seed, uint64_t offset, const int e5) {
    wr_rng_key key = wr_rng_key_make(seed, 0, 0);
    __m512i k0 = set1((int)key.k0), k1 = set1((int)key.k1);
    __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i r = rng16(_mm512_add_epi32(set1((int)(uint32_t)(offset + i)), lane), k0, k1);
        _mm512_storeu_ps(x + i, q_sr16(_mm512_loadu_ps(x + i), r, e5));
    }
    wr_fp8_quantize_sr_inplace_ref(x + i, n - i, FMT(e5), seed, offset + i);
}

void wr_fp8_quantize_sr_inplace_avx512(float *x, size_t n, enum wr_fp8_format f, uint64_t seed,
                                       uint64_t offset) {
    if (f == WR_FP8_E5M2)
        quantize_sr_loop(x, n, seed, offset, 1);
    else
        quantize_sr_loop(x, n, seed, offset, 0);
}

float wr_fp8_amax_avx512(const float *x, size_t n) {
    __m512i m0 = _mm512_setzero_si512(), m1 = m0, m2 = m0, m3 = m0;
    __m512i abs = set1(0x7FFFFFFF);
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        m0 = _mm512_max_epu32(m0, _mm512_and_si512(_mm512_loadu_si512(x + i), abs));
        m1 = _mm512_max_epu32(m1, _mm512_and_si512(_mm512_loadu_si512(x + i + 16), abs));
        m2 = _mm512_max_epu32(m2, _mm512_and_si512(_mm512_loadu_si512(x + i + 32), abs));
        m3 = _mm512_max_epu32(m3, _mm512_and_si512(_mm512_loadu_si512(x + i + 48), abs));
    }
    m0 = _mm512_max_epu32(_mm512_max_epu32(m0, m1), _mm512_max_epu32(m2, m3));
    uint32_t m = _mm512_reduce_max_epu32(m0);
    float tail = wr_fp8_amax_ref(x + i, n - i);
    uint32_t t;
    memcpy(&t, &tail, sizeof t);
    if (t > m) m = t;
    float r;
    memcpy(&r, &m, sizeof r);
    return r;
}
