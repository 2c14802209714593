// birder_avx2.c — AVX2 versions of the Birder codec (8 lanes). Each op mirrors the
// scalar reference in birder.c exactly (no FMA, true division); movemask packs 8 bits.
#include <immintrin.h>

#include "birder.h"
#include "wr_common.h"

static inline __m256i mix8(__m256i x) {
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)WR_RNG_M1));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)WR_RNG_M2));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    return x;
}

// wr_rng_u32(key, ctr0 + lane) >> 8 for the 8 lanes.
static inline __m256i r24_8(wr_rng_key key, uint32_t ctr0) {
    __m256i x = _mm256_add_epi32(_mm256_set1_epi32((int)ctr0), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    x = mix8(_mm256_xor_si256(x, _mm256_set1_epi32((int)key.k0)));
    x = mix8(_mm256_xor_si256(x, _mm256_set1_epi32((int)key.k1)));
    return _mm256_srli_epi32(x, 8);
}

// 8 lanes of all-ones where bit (lane) of `byte` is set.
static inline __m256i byte_to_lanes(uint32_t byte) {
    const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)byte), lane), lane);
}

static inline uint64_t encode8(const float *g, float *m, float *b, __m256 vbeta, __m256 vomb,
                               wr_rng_key key, uint32_t ctr0) {
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
    __m256i lt = _mm256_cmpgt_epi32(T, r24_8(key, ctr0));
    return (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(lt));
}

void wr_birder_encode_avx2(const float *g, float *m, float *b, size_t n, float beta,
                           wr_rng_key key, uint64_t first_index, uint64_t *bits) {
    WR_CHECK(first_index % 64 == 0);
    const __m256 vbeta = _mm256_set1_ps(beta), vomb = _mm256_set1_ps(1.0f - beta);
    size_t full = n / 64;
    for (size_t w = 0; w < full; w++) {
        size_t j = w * 64;
        uint32_t c = (uint32_t)(first_index + j);
        uint64_t word = 0;
        for (int q = 0; q < 8; q++) {
            size_t o = j + 8 * (size_t)q;
            word |= encode8(g + o, m + o, b + o, vbeta, vomb, key, c + 8 * (uint32_t)q) << (8 * q);
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

void wr_birder_count_planes_avx2(const uint64_t *const *bits, int n_workers, size_t n,
                                 uint64_t *planes) {
    int P = wr_birder_planes(n_workers);
    size_t nw = wr_birder_words(n);
    uint64_t tail = (n % 64) ? (1ull << (n % 64)) - 1 : ~0ull;
    for (size_t w = 0; w < nw; w += 4) {
        size_t cnt = WR_MIN((size_t)4, nw - w);
        __m256i k = first_lanes64(cnt);
        __m256i valid = _mm256_set1_epi64x(-1);
        if (w + cnt == nw) {
            long long v[4] = {-1, -1, -1, -1};
            v[cnt - 1] = (long long)tail;
            valid = _mm256_loadu_si256((const __m256i *)v);
        }
        __m256i acc[16];
        for (int p = 0; p < P; p++) acc[p] = _mm256_setzero_si256();
        int lim = 1;
        for (int i = 0; i < n_workers; i++) {
            if (i + 1 >= (1 << lim)) lim++;
            __m256i carry = _mm256_and_si256(
                _mm256_maskload_epi64((const long long *)(bits[i] + w), k), valid);
            for (int p = 0; p < lim; p++) {
                __m256i t = _mm256_and_si256(acc[p], carry);
                acc[p] = _mm256_xor_si256(acc[p], carry);
                carry = t;
            }
        }
        for (int p = 0; p < P; p++)
            _mm256_maskstore_epi64((long long *)(planes + (size_t)p * nw + w), k, acc[p]);
    }
}

// Counts of the 8 elements starting at element j.
static inline __m256i counts8(const uint64_t *planes, int P, size_t nw, size_t j) {
    __m256i c = _mm256_setzero_si256();
    for (int p = 0; p < P; p++) {
        uint32_t byte = (uint32_t)(planes[(size_t)p * nw + j / 64] >> (j % 64)) & 0xff;
        c = _mm256_or_si256(c, _mm256_and_si256(byte_to_lanes(byte), _mm256_set1_epi32(1 << p)));
    }
    return c;
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

void wr_birder_requantize_avx2(const uint64_t *planes, int n_workers, size_t n,
                               wr_rng_key key, uint64_t first_index, uint64_t *bits_out) {
    WR_CHECK(first_index % 64 == 0);
    int P = wr_birder_planes(n_workers);
    size_t nw = wr_birder_words(n);
    for (size_t w = 0; w < nw; w++) {
        uint32_t ctr = (uint32_t)(first_index + w * 64);
        uint64_t word = 0;
        for (int q = 0; q < 8; q++) {
            size_t j = w * 64 + 8 * (size_t)q;
            word |= requant8(r24_8(key, ctr + 8 * (uint32_t)q), counts8(planes, P, nw, j), n_workers)
                    << (8 * q);
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
        if (j + 8 <= n) _mm256_storeu_ps(u + j, uv);
        else _mm256_maskstore_ps(u + j, chunk_mask8(n, j), uv);
    }
}

// u = (float)(2c - n) / (float)n, the division itself (as exact as the reference's).
static inline __m256 u8(__m256i c, int n_workers) {
    __m256i num = _mm256_sub_epi32(_mm256_add_epi32(c, c), _mm256_set1_epi32(n_workers));
    return _mm256_div_ps(_mm256_cvtepi32_ps(num), _mm256_set1_ps((float)n_workers));
}

void wr_birder_apply_planes_avx2(float *x, const uint64_t *planes, int n_workers, size_t n,
                                 float lr, float wd) {
    int P = wr_birder_planes(n_workers);
    size_t nw = wr_birder_words(n);
    const __m256 vlr = _mm256_set1_ps(lr), vwd = _mm256_set1_ps(wd);
    for (size_t j = 0; j < n; j += 8) {
        __m256 u = u8(counts8(planes, P, nw, j), n_workers);
        if (j + 8 <= n) {
            _mm256_storeu_ps(x + j, apply8(_mm256_loadu_ps(x + j), u, vlr, vwd));
        } else {
            __m256i em = chunk_mask8(n, j);
            _mm256_maskstore_ps(x + j, em, apply8(_mm256_maskload_ps(x + j, em), u, vlr, vwd));
        }
    }
}

void wr_birder_decode_planes_avx2(const uint64_t *planes, int n_workers, size_t n, float *u) {
    int P = wr_birder_planes(n_workers);
    size_t nw = wr_birder_words(n);
    for (size_t j = 0; j < n; j += 8) {
        __m256 uv = u8(counts8(planes, P, nw, j), n_workers);
        if (j + 8 <= n) _mm256_storeu_ps(u + j, uv);
        else _mm256_maskstore_ps(u + j, chunk_mask8(n, j), uv);
    }
}
