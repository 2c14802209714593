// birder_avx512.c — AVX-512 versions of the Birder codec (16 lanes). Each op mirrors
// the scalar reference in birder.c exactly (no FMA, true division), so results are
// bit-identical; a compare into a __mmask16 gives 16 packed bits directly.
#include <immintrin.h>

#include "birder.h"
#include "wr_common.h"

static inline __m512i mix16(__m512i x) {
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)WR_RNG_M1));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)WR_RNG_M2));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    return x;
}

// wr_rng_u32(key, ctr0 + lane) >> 8 for the 16 lanes.
static inline __m512i r24_16(wr_rng_key key, uint32_t ctr0) {
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i x = _mm512_add_epi32(_mm512_set1_epi32((int)ctr0), iota);
    x = mix16(_mm512_xor_si512(x, _mm512_set1_epi32((int)key.k0)));
    x = mix16(_mm512_xor_si512(x, _mm512_set1_epi32((int)key.k1)));
    return _mm512_srli_epi32(x, 8);
}

// One 16-element chunk of the fused encode; returns its 16 bits.
static inline __mmask16 encode16(const float *g, float *m, float *b, __m512 vbeta, __m512 vomb,
                                 wr_rng_key key, uint32_t ctr0) {
    const __m512 one = _mm512_set1_ps(1.0f), neg1 = _mm512_set1_ps(-1.0f);
    __m512 gv = _mm512_loadu_ps(g);
    __m512 mv = _mm512_add_ps(_mm512_mul_ps(vbeta, _mm512_loadu_ps(m)), _mm512_mul_ps(vomb, gv));
    __m512 bv = _mm512_add_ps(_mm512_mul_ps(vbeta, _mm512_loadu_ps(b)),
                              _mm512_mul_ps(vomb, _mm512_abs_ps(gv)));
    _mm512_storeu_ps(m, mv);
    _mm512_storeu_ps(b, bv);
    __m512 z = _mm512_div_ps(mv, bv);
    __mmask16 ok = _mm512_cmp_ps_mask(bv, _mm512_setzero_ps(), _CMP_GT_OQ) &
                   _mm512_cmp_ps_mask(z, z, _CMP_ORD_Q);
    z = _mm512_min_ps(_mm512_max_ps(z, neg1), one);
    z = _mm512_maskz_mov_ps(ok, z);
    __m512 t = _mm512_mul_ps(_mm512_add_ps(one, z), _mm512_set1_ps(8388608.0f));
    __m512i T = _mm512_cvttps_epi32(t);  // t in [0, 2^24]: exact as uint32 truncation
    return _mm512_cmplt_epu32_mask(r24_16(key, ctr0), T);
}

void wr_birder_encode_avx512(const float *g, float *m, float *b, size_t n, float beta,
                             wr_rng_key key, uint64_t first_index, uint64_t *bits) {
    WR_CHECK(first_index % 64 == 0);
    const __m512 vbeta = _mm512_set1_ps(beta), vomb = _mm512_set1_ps(1.0f - beta);
    size_t full = n / 64;
    for (size_t w = 0; w < full; w++) {
        size_t j = w * 64;
        uint32_t c = (uint32_t)(first_index + j);
        uint64_t k0 = encode16(g + j, m + j, b + j, vbeta, vomb, key, c);
        uint64_t k1 = encode16(g + j + 16, m + j + 16, b + j + 16, vbeta, vomb, key, c + 16);
        uint64_t k2 = encode16(g + j + 32, m + j + 32, b + j + 32, vbeta, vomb, key, c + 32);
        uint64_t k3 = encode16(g + j + 48, m + j + 48, b + j + 48, vbeta, vomb, key, c + 48);
        bits[w] = k0 | k1 << 16 | k2 << 32 | k3 << 48;
    }
    if (n % 64) {
        size_t j = full * 64;
        wr_birder_encode_ref(g + j, m + j, b + j, n - j, beta, key, first_index + j, bits + full);
    }
}

// Bit-sliced ripple-carry adder over 8 words (512 elements) per step; only the planes
// that the running count can reach are touched.
void wr_birder_count_planes_avx512(const uint64_t *const *bits, int n_workers, size_t n,
                                   uint64_t *planes) {
    int P = wr_birder_planes(n_workers);
    size_t nw = wr_birder_words(n);
    uint64_t tail = (n % 64) ? (1ull << (n % 64)) - 1 : ~0ull;
    for (size_t w = 0; w < nw; w += 8) {
        size_t cnt = WR_MIN((size_t)8, nw - w);
        __mmask8 k = (__mmask8)((1u << cnt) - 1);
        __m512i valid = _mm512_set1_epi64(-1);
        if (w + cnt == nw) valid = _mm512_mask_set1_epi64(valid, (__mmask8)(1u << (cnt - 1)),
                                                          (long long)tail);
        __m512i acc[16];
        for (int p = 0; p < P; p++) acc[p] = _mm512_setzero_si512();
        int lim = 1;  // planes reachable after adding worker i: planes(i + 1)
        for (int i = 0; i < n_workers; i++) {
            if (i + 1 >= (1 << lim)) lim++;
            __m512i carry = _mm512_and_si512(_mm512_maskz_loadu_epi64(k, bits[i] + w), valid);
            for (int p = 0; p < lim; p++) {
                __m512i t = _mm512_and_si512(acc[p], carry);
                acc[p] = _mm512_xor_si512(acc[p], carry);
                carry = t;
            }
        }
        for (int p = 0; p < P; p++) _mm512_mask_storeu_epi64(planes + (size_t)p * nw + w, k, acc[p]);
    }
}

// Counts of the 16 elements starting at element 16*q of word w.
static inline __m512i counts16(const uint64_t *planes, int P, size_t nw, size_t w, int q) {
    __m512i c = _mm512_setzero_si512();
    for (int p = 0; p < P; p++) {
        __mmask16 kp = (__mmask16)(planes[(size_t)p * nw + w] >> (16 * q));
        c = _mm512_mask_or_epi32(c, kp, c, _mm512_set1_epi32(1 << p));
    }
    return c;
}

// r24 * n < c << 24 in 64-bit lanes, 8 at a time (the birder.h threshold).
static inline __mmask16 requant_cmp64(__m512i r, __m512i c, int n_workers) {
    const __m512i nv = _mm512_set1_epi64(n_workers);
    __m512i rlo = _mm512_cvtepu32_epi64(_mm512_castsi512_si256(r));
    __m512i rhi = _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(r, 1));
    __m512i clo = _mm512_slli_epi64(_mm512_cvtepu32_epi64(_mm512_castsi512_si256(c)), 24);
    __m512i chi = _mm512_slli_epi64(_mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(c, 1)), 24);
    __mmask8 lo = _mm512_cmplt_epu64_mask(_mm512_mul_epu32(rlo, nv), clo);
    __mmask8 hi = _mm512_cmplt_epu64_mask(_mm512_mul_epu32(rhi, nv), chi);
    return (__mmask16)((unsigned)lo | (unsigned)hi << 8);
}

void wr_birder_requantize_avx512(const uint64_t *planes, int n_workers, size_t n,
                                 wr_rng_key key, uint64_t first_index, uint64_t *bits_out) {
    WR_CHECK(first_index % 64 == 0);
    int P = wr_birder_planes(n_workers);
    size_t nw = wr_birder_words(n);
    // For n <= 31 the threshold is a 32-entry table: r24 < ceil(c * 2^24 / n) is the
    // same predicate as r24 * n < c << 24 for integer r24. Counts past n (not produced
    // by count_planes) get 2^24 + 1, i.e. always +1, as in the reference.
    int small = n_workers <= 31;
    uint32_t tab[32];
    for (uint32_t c = 0; c < 32; c++)
        tab[c] = c >= (uint32_t)n_workers
                     ? (1u << 24) + (c > (uint32_t)n_workers)
                     : (uint32_t)((((uint64_t)c << 24) + (uint64_t)n_workers - 1) / (uint64_t)n_workers);
    const __m512i tlo = _mm512_loadu_si512(tab), thi = _mm512_loadu_si512(tab + 16);
    for (size_t w = 0; w < nw; w++) {
        uint32_t ctr = (uint32_t)(first_index + w * 64);
        uint64_t word = 0;
        for (int q = 0; q < 4; q++) {
            __m512i c = counts16(planes, P, nw, w, q);
            __m512i r = r24_16(key, ctr + 16 * (uint32_t)q);
            __mmask16 k = small ? _mm512_cmplt_epu32_mask(r, _mm512_permutex2var_epi32(tlo, c, thi))
                                : requant_cmp64(r, c, n_workers);
            word |= (uint64_t)k << (16 * q);
        }
        if (w == nw - 1 && n % 64) word &= (1ull << (n % 64)) - 1;
        bits_out[w] = word;
    }
}

static inline __m512 apply16(__m512 x, __m512 u, __m512 vlr, __m512 vwd) {
    __m512 t = _mm512_mul_ps(vwd, x);
    t = _mm512_add_ps(u, t);
    t = _mm512_mul_ps(vlr, t);
    return _mm512_sub_ps(x, t);
}

static inline __m512 sign16(__mmask16 k) {
    return _mm512_mask_blend_ps(k, _mm512_set1_ps(-1.0f), _mm512_set1_ps(1.0f));
}

// Element mask of the chunk of 16 starting at j.
static inline __mmask16 chunk_mask(size_t n, size_t j) {
    return n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1);
}

void wr_birder_apply_bits_avx512(float *x, const uint64_t *bits, size_t n, float lr,
                                 float wd) {
    const __m512 vlr = _mm512_set1_ps(lr), vwd = _mm512_set1_ps(wd);
    for (size_t j = 0; j < n; j += 16) {
        __mmask16 em = chunk_mask(n, j);
        __m512 u = sign16((__mmask16)(bits[j / 64] >> (j % 64)));
        __m512 xv = _mm512_maskz_loadu_ps(em, x + j);
        _mm512_mask_storeu_ps(x + j, em, apply16(xv, u, vlr, vwd));
    }
}

void wr_birder_decode_bits_avx512(const uint64_t *bits, size_t n, float *u) {
    for (size_t j = 0; j < n; j += 16)
        _mm512_mask_storeu_ps(u + j, chunk_mask(n, j), sign16((__mmask16)(bits[j / 64] >> (j % 64))));
}

// u = (float)(2c - n) / (float)n: a 32-entry table of exactly these values for small
// n, the division itself otherwise.
typedef struct {
    int small;
    __m512 lo, hi, nf;
    __m512i nv;
} u_table;

static inline u_table u_table_make(int n_workers) {
    u_table t;
    float tab[32];
    for (int c = 0; c < 32; c++) {
        float num = (float)(2 * c - n_workers);
        tab[c] = num / (float)n_workers;
    }
    t.small = n_workers <= 31;
    t.lo = _mm512_loadu_ps(tab);
    t.hi = _mm512_loadu_ps(tab + 16);
    t.nf = _mm512_set1_ps((float)n_workers);
    t.nv = _mm512_set1_epi32(n_workers);
    return t;
}

static inline __m512 u16(const u_table *t, __m512i c) {
    if (t->small) return _mm512_permutex2var_ps(t->lo, c, t->hi);
    __m512 num = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_add_epi32(c, c), t->nv));
    return _mm512_div_ps(num, t->nf);
}

void wr_birder_apply_planes_avx512(float *x, const uint64_t *planes, int n_workers, size_t n,
                                   float lr, float wd) {
    int P = wr_birder_planes(n_workers);
    size_t nw = wr_birder_words(n);
    u_table t = u_table_make(n_workers);
    const __m512 vlr = _mm512_set1_ps(lr), vwd = _mm512_set1_ps(wd);
    for (size_t j = 0; j < n; j += 16) {
        __mmask16 em = chunk_mask(n, j);
        __m512 u = u16(&t, counts16(planes, P, nw, j / 64, (int)(j % 64) / 16));
        __m512 xv = _mm512_maskz_loadu_ps(em, x + j);
        _mm512_mask_storeu_ps(x + j, em, apply16(xv, u, vlr, vwd));
    }
}

void wr_birder_decode_planes_avx512(const uint64_t *planes, int n_workers, size_t n,
                                    float *u) {
    int P = wr_birder_planes(n_workers);
    size_t nw = wr_birder_words(n);
    u_table t = u_table_make(n_workers);
    for (size_t j = 0; j < n; j += 16) {
        __m512 uv = u16(&t, counts16(planes, P, nw, j / 64, (int)(j % 64) / 16));
        _mm512_mask_storeu_ps(u + j, chunk_mask(n, j), uv);
    }
}
