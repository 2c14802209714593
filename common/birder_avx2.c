// birder_avx2.c — AVX2 versions of the Birder codec (8 lanes). Each op mirrors the
// scalar reference in birder.c exactly (no FMA, true division); movemask packs 8 bits.
#include <immintrin.h>

#include "birder.h"
#include "wr_common.h"

// wr_rng_u32(key, base + lane) >> 8 for 8 lanes, base a multiple of 8 (so base + lane
// == base ^ lane): the first xorshift of (base ^ lane ^ k0) distributes over the
// xors, so the lane/key part is a constant and the base part one broadcast scalar.
typedef struct {
    __m256i c1;  // (lane ^ k0) ^ ((lane ^ k0) >> 16)
    __m256i k1;
} rng8;

static inline rng8 rng8_make(wr_rng_key key) {
    rng8 r;
    __m256i c = _mm256_xor_si256(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)key.k0));
    r.c1 = _mm256_xor_si256(c, _mm256_srli_epi32(c, 16));
    r.k1 = _mm256_set1_epi32((int)key.k1);
    return r;
}

static inline __m256i r24_8(const rng8 *r, uint32_t base) {
    const __m256i m1 = _mm256_set1_epi32((int)WR_RNG_M1), m2 = _mm256_set1_epi32((int)WR_RNG_M2);
    __m256i x = _mm256_xor_si256(_mm256_set1_epi32((int)(base ^ (base >> 16))), r->c1);
    x = _mm256_mullo_epi32(x, m1);
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
    x = _mm256_mullo_epi32(x, m2);
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    x = _mm256_xor_si256(x, r->k1);
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    x = _mm256_mullo_epi32(x, m1);
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
    x = _mm256_mullo_epi32(x, m2);
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    return _mm256_srli_epi32(x, 8);
}

// 8 lanes of all-ones where bit (lane) of `byte` is set.
static inline __m256i byte_to_lanes(uint32_t byte) {
    const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)byte), lane), lane);
}

static inline uint64_t encode8(const float *g, float *m, float *b, __m256 vbeta, __m256 vomb, const rng8 *rng,
                               uint32_t ctr0) {
    const __m256 one = _mm256_set1_ps(1.0f), neg1 = _mm256_set1_ps(-1.0f);
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 gv = _mm256_loadu_ps(g);
    __m256 mv = _mm256_add_ps(_mm256_mul_ps(vbeta, _mm256_loadu_ps(m)), _mm256_mul_ps(vomb, gv));
    __m256 bv = _mm256_add_ps(_mm256_mul_ps(vbeta, _mm256_loadu_ps(b)),
                              _mm256_mul_ps(vomb, _mm256_and_ps(gv, absm)));
    _mm256_storeu_ps(m, mv);
    _mm256_storeu_ps(b, bv);
    __m256 z = _mm256_div_ps(mv, bv);
    __m256 ok = _mm256_and_ps(_mm256_cmp_ps(bv, _mm256_setzero_ps(), _CMP_GT_OQ),
                              _mm256_cmp_ps(z, z, _CMP_ORD_Q));
    z = _mm256_min_ps(_mm256_max_ps(z, neg1), one);
    z = _mm256_and_ps(z, ok);  // NaN or b <= 0 -> +0
    __m256 t = _mm256_mul_ps(_mm256_add_ps(one, z), _mm256_set1_ps(8388608.0f));
    __m256i T = _mm256_cvttps_epi32(t);  // in [0, 2^24]; signed compare is exact below 2^31
    __m256i lt = _mm256_cmpgt_epi32(T, r24_8(rng, ctr0));
    return (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(lt));
}

void wr_birder_encode_avx2(const float *g, float *m, float *b, size_t n, float beta, wr_rng_key key,
                           uint64_t first_index, uint64_t *bits) {
    WR_CHECK(first_index % 64 == 0);
    const __m256 vbeta = _mm256_set1_ps(beta), vomb = _mm256_set1_ps(1.0f - beta);
    const rng8 rng = rng8_make(key);
    size_t full = n / 64;
    for (size_t w = 0; w < full; w++) {
        size_t j = w * 64;
        uint32_t c = (uint32_t)(first_index + j);
        uint64_t word = 0;
        for (int q = 0; q < 8; q++) {
            size_t o = j + 8 * (size_t)q;
            word |= encode8(g + o, m + o, b + o, vbeta, vomb, &rng, c + 8 * (uint32_t)q) << (8 * q);
        }
        bits[w] = word;
    }
    if (n % 64) {
        size_t j = full * 64;
        wr_birder_encode_ref(g + j, m + j, b + j, n - j, beta, key, first_index + j, bits + full);
    }
}

// Lane mask (for maskload/maskstore of 64-bit lanes) of the first cnt of 4 lanes.
static inline __m256i first_lanes64(size_t cnt) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)cnt), _mm256_setr_epi64x(0, 1, 2, 3));
}

// Bit-sliced counting, 4 words (256 elements) per ymm: workers 7 at a time through a
// carry-save tree of full adders into a 3-bit partial count, then a ripple into the P
// accumulator planes (P constant per instance so the planes stay in registers).
#define FULL_ADD(a, b, c, sum, carry)                                                     \
    do {                                                                                  \
        __m256i ab_ = _mm256_xor_si256((a), (b));                                         \
        __m256i c_ = (c);                                                                 \
        (carry) = _mm256_or_si256(_mm256_and_si256((a), (b)), _mm256_and_si256(ab_, c_)); \
        (sum) = _mm256_xor_si256(ab_, c_);                                                \
    } while (0)

static inline __attribute__((always_inline)) __m256i load_bits4(const uint64_t *const *bits, int n_workers,
                                                                int i, size_t w, int masked, __m256i k,
                                                                __m256i valid) {
    if (i >= n_workers) return _mm256_setzero_si256();
    if (!masked) return _mm256_loadu_si256((const __m256i *)(bits[i] + w));
    return _mm256_and_si256(_mm256_maskload_epi64((const long long *)(bits[i] + w), k), valid);
}

static inline __attribute__((always_inline)) void count_block4(const uint64_t *const *bits, int n_workers,
                                                               const int P, size_t nw, size_t w, int masked,
                                                               __m256i k, __m256i valid, uint64_t *planes) {
    __m256i acc[16];
    for (int p = 0; p < P; p++) acc[p] = _mm256_setzero_si256();
    for (int i = 0; i < n_workers; i += 7) {
        __m256i x[7];
        for (int t = 0; t < 7; t++) x[t] = load_bits4(bits, n_workers, i + t, w, masked, k, valid);
        __m256i s1, c1, s2, c2, b0, c3, b1, b2;
        FULL_ADD(x[0], x[1], x[2], s1, c1);
        FULL_ADD(s1, x[3], x[4], s2, c2);
        FULL_ADD(s2, x[5], x[6], b0, c3);
        FULL_ADD(c1, c2, c3, b1, b2);
        __m256i carry = _mm256_and_si256(acc[0], b0);
        acc[0] = _mm256_xor_si256(acc[0], b0);
        if (P > 1) FULL_ADD(acc[1], b1, carry, acc[1], carry);
        if (P > 2) FULL_ADD(acc[2], b2, carry, acc[2], carry);
        for (int p = 3; p < P; p++) {
            __m256i t = _mm256_and_si256(acc[p], carry);
            acc[p] = _mm256_xor_si256(acc[p], carry);
            carry = t;
        }
    }
    for (int p = 0; p < P; p++) {
        if (masked)
            _mm256_maskstore_epi64((long long *)(planes + (size_t)p * nw + w), k, acc[p]);
        else
            _mm256_storeu_si256((__m256i *)(planes + (size_t)p * nw + w), acc[p]);
    }
}

static inline __attribute__((always_inline)) void count_planes_p4(const uint64_t *const *bits, int n_workers,
                                                                  const int P, size_t n, uint64_t *planes) {
    size_t nw = wr_birder_words(n);
    size_t full = n / 256 * 4;  // words in blocks of 4 with no tail bits
    const __m256i ones = _mm256_set1_epi64x(-1);
    for (size_t w = 0; w < full; w += 4) count_block4(bits, n_workers, P, nw, w, 0, ones, ones, planes);
    if (full < nw) {
        size_t cnt = nw - full;
        long long v[4] = {-1, -1, -1, -1};
        if (n % 64) v[cnt - 1] = (long long)((1ull << (n % 64)) - 1);
        count_block4(bits, n_workers, P, nw, full, 1, first_lanes64(cnt),
                     _mm256_loadu_si256((const __m256i *)v), planes);
    }
}

void wr_birder_count_planes_avx2(const uint64_t *const *bits, int n_workers, size_t n, uint64_t *planes) {
    // One case per plane count, so P is a constant in each kernel call.
    // clang-format off
    switch (wr_birder_planes(n_workers)) {
#define WR_CASE(P) \
    case P: count_planes_p4(bits, n_workers, P, n, planes); break;
        WR_CASE(1) WR_CASE(2) WR_CASE(3) WR_CASE(4) WR_CASE(5) WR_CASE(6) WR_CASE(7) WR_CASE(8)
        WR_CASE(9) WR_CASE(10) WR_CASE(11) WR_CASE(12) WR_CASE(13) WR_CASE(14) WR_CASE(15)
        WR_CASE(16)
#undef WR_CASE
    default: WR_CHECK(0);
    }
    // clang-format on
}

// 32 bytes of 0xff where bit k of x is set (byte k).
static inline __m256i bits_to_bytes(uint32_t x) {
    const __m256i pick = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2,
                                          2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x), pick);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, sel), sel);
}

// Counts of the 64 elements of word w as eight vectors of 8 uint32.
static inline void counts64(const uint64_t *planes, int P, size_t nw, size_t w, __m256i c[8]) {
    if (P <= 8) {  // byte counts, 32 elements per vector and plane
        __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
        for (int p = 0; p < P; p++) {
            uint64_t word = planes[(size_t)p * nw + w];
            __m256i bit = _mm256_set1_epi8((char)(1 << p));
            lo = _mm256_or_si256(lo, _mm256_and_si256(bits_to_bytes((uint32_t)word), bit));
            hi = _mm256_or_si256(hi, _mm256_and_si256(bits_to_bytes((uint32_t)(word >> 32)), bit));
        }
        __m128i q[4] = {_mm256_castsi256_si128(lo), _mm256_extracti128_si256(lo, 1),
                        _mm256_castsi256_si128(hi), _mm256_extracti128_si256(hi, 1)};
        for (int k = 0; k < 4; k++) {
            c[2 * k] = _mm256_cvtepu8_epi32(q[k]);
            c[2 * k + 1] = _mm256_cvtepu8_epi32(_mm_srli_si128(q[k], 8));
        }
        return;
    }
    for (int k = 0; k < 8; k++) c[k] = _mm256_setzero_si256();
    for (int p = 0; p < P; p++) {
        uint64_t word = planes[(size_t)p * nw + w];
        const __m256i bit = _mm256_set1_epi32(1 << p);
        for (int k = 0; k < 8; k++)
            c[k] = _mm256_or_si256(c[k],
                                   _mm256_and_si256(byte_to_lanes((uint32_t)(word >> (8 * k)) & 0xff), bit));
    }
}

// r24 * n < c << 24 in 64-bit lanes (all values below 2^41, so signed compares work).
static inline uint64_t requant8(__m256i r, __m256i c, int n_workers) {
    const __m256i nv = _mm256_set1_epi64x(n_workers);
    __m256i rlo = _mm256_cvtepu32_epi64(_mm256_castsi256_si128(r));
    __m256i rhi = _mm256_cvtepu32_epi64(_mm256_extracti128_si256(r, 1));
    __m256i clo = _mm256_slli_epi64(_mm256_cvtepu32_epi64(_mm256_castsi256_si128(c)), 24);
    __m256i chi = _mm256_slli_epi64(_mm256_cvtepu32_epi64(_mm256_extracti128_si256(c, 1)), 24);
    __m256i lo = _mm256_cmpgt_epi64(clo, _mm256_mul_epu32(rlo, nv));
    __m256i hi = _mm256_cmpgt_epi64(chi, _mm256_mul_epu32(rhi, nv));
    uint32_t ml = (uint32_t)_mm256_movemask_pd(_mm256_castsi256_pd(lo));
    uint32_t mh = (uint32_t)_mm256_movemask_pd(_mm256_castsi256_pd(hi));
    return ml | mh << 4;
}

void wr_birder_requantize_avx2(const uint64_t *planes, int n_workers, size_t n, wr_rng_key key,
                               uint64_t first_index, uint64_t *bits_out) {
    WR_CHECK(first_index % 64 == 0);
    int P = wr_birder_planes(n_workers);
    size_t nw = wr_birder_words(n);
    const rng8 rng = rng8_make(key);
    // For n <= 7 the threshold is an 8-entry table: r24 < ceil(c * 2^24 / n) is the same
    // predicate as r24 * n < c << 24 for integer r24; counts past n always give +1.
    int small = n_workers <= 7;
    uint32_t tab[8];
    for (uint32_t c = 0; c < 8; c++)
        tab[c] = c >= (uint32_t)n_workers
                     ? (1u << 24) + 1
                     : (uint32_t)((((uint64_t)c << 24) + (uint64_t)n_workers - 1) / (uint64_t)n_workers);
    const __m256i tv = _mm256_loadu_si256((const __m256i *)tab);
    for (size_t w = 0; w < nw; w++) {
        uint32_t ctr = (uint32_t)(first_index + w * 64);
        __m256i c[8];
        counts64(planes, P, nw, w, c);
        uint64_t word = 0;
        for (int q = 0; q < 8; q++) {
            __m256i r = r24_8(&rng, ctr + 8 * (uint32_t)q);
            uint64_t k;
            if (small) {
                __m256i lt = _mm256_cmpgt_epi32(_mm256_permutevar8x32_epi32(tv, c[q]), r);
                k = (uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(lt));
            } else {
                k = requant8(r, c[q], n_workers);
            }
            word |= k << (8 * q);
        }
        if (w == nw - 1 && n % 64) word &= (1ull << (n % 64)) - 1;
        bits_out[w] = word;
    }
}

static inline __m256 apply8(__m256 x, __m256 u, __m256 vlr, __m256 vwd) {
    __m256 t = _mm256_mul_ps(vwd, x);
    t = _mm256_add_ps(u, t);
    t = _mm256_mul_ps(vlr, t);
    return _mm256_sub_ps(x, t);
}

// +1.0f where the bit is set, -1.0f elsewhere (they differ only in the sign bit).
static inline __m256 sign8(uint32_t byte) {
    __m256i neg = _mm256_andnot_si256(byte_to_lanes(byte), _mm256_set1_epi32((int)0x80000000u));
    return _mm256_xor_ps(_mm256_set1_ps(1.0f), _mm256_castsi256_ps(neg));
}

// Lane mask of the chunk of 8 starting at element j (all ones unless it is the tail).
static inline __m256i chunk_mask8(size_t n, size_t j) {
    size_t left = n - j;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)WR_MIN(left, (size_t)8)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

void wr_birder_apply_bits_avx2(float *x, const uint64_t *bits, size_t n, float lr, float wd) {
    const __m256 vlr = _mm256_set1_ps(lr), vwd = _mm256_set1_ps(wd);
    size_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 u = sign8((uint32_t)(bits[j / 64] >> (j % 64)) & 0xff);
        _mm256_storeu_ps(x + j, apply8(_mm256_loadu_ps(x + j), u, vlr, vwd));
    }
    if (j < n) {
        __m256i em = chunk_mask8(n, j);
        __m256 u = sign8((uint32_t)(bits[j / 64] >> (j % 64)) & 0xff);
        _mm256_maskstore_ps(x + j, em, apply8(_mm256_maskload_ps(x + j, em), u, vlr, vwd));
    }
}

void wr_birder_decode_bits_avx2(const uint64_t *bits, size_t n, float *u) {
    for (size_t j = 0; j < n; j += 8) {
        __m256 uv = sign8((uint32_t)(bits[j / 64] >> (j % 64)) & 0xff);
        if (j + 8 <= n)
            _mm256_storeu_ps(u + j, uv);
        else
            _mm256_maskstore_ps(u + j, chunk_mask8(n, j), uv);
    }
}

// u = (float)(2c - n) / (float)n: an 8-entry table of exactly these values for small
// n, the division itself otherwise (as exact as the reference's).
static inline __m256 u8(__m256i c, int n_workers, __m256 tab) {
    if (n_workers <= 7) return _mm256_permutevar8x32_ps(tab, c);
    __m256i num = _mm256_sub_epi32(_mm256_add_epi32(c, c), _mm256_set1_epi32(n_workers));
    return _mm256_div_ps(_mm256_cvtepi32_ps(num), _mm256_set1_ps((float)n_workers));
}

static inline __m256 u_table8(int n_workers) {
    float tab[8];
    for (int c = 0; c < 8; c++) {
        float num = (float)(2 * c - n_workers);
        tab[c] = num / (float)n_workers;
    }
    return _mm256_loadu_ps(tab);
}

// Every 8-element chunk's u from the planes, either applied to dst (apply:
// dst = x, x -= lr * (u + wd * x)) or stored into it (dst = u). Inlined with a
// constant `apply`, so each caller gets its own loop with no test in it.
static inline __attribute__((always_inline)) void planes_to(float *dst, int apply, const uint64_t *planes,
                                                            int n_workers, size_t n, float lr, float wd) {
    int P = wr_birder_planes(n_workers);
    size_t nw = wr_birder_words(n);
    const __m256 vlr = _mm256_set1_ps(lr), vwd = _mm256_set1_ps(wd), tab = u_table8(n_workers);
    for (size_t w = 0; w < nw; w++) {
        __m256i c[8];
        counts64(planes, P, nw, w, c);
        for (int q = 0; q < 8; q++) {
            size_t j = w * 64 + 8 * (size_t)q;
            if (j >= n) break;
            __m256 u = u8(c[q], n_workers, tab);
            if (j + 8 <= n) {
                _mm256_storeu_ps(dst + j, apply ? apply8(_mm256_loadu_ps(dst + j), u, vlr, vwd) : u);
            } else {
                __m256i em = chunk_mask8(n, j);
                _mm256_maskstore_ps(dst + j, em,
                                    apply ? apply8(_mm256_maskload_ps(dst + j, em), u, vlr, vwd) : u);
            }
        }
    }
}

void wr_birder_apply_planes_avx2(float *x, const uint64_t *planes, int n_workers, size_t n, float lr,
                                 float wd) {
    planes_to(x, 1, planes, n_workers, n, lr, wd);
}

void wr_birder_decode_planes_avx2(const uint64_t *planes, int n_workers, size_t n, float *u) {
    planes_to(u, 0, planes, n_workers, n, 0.0f, 0.0f);
}
