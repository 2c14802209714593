// birder_avx2.c — AVX2 versions of the Birder codec (8 lanes). Each op mirrors the
// scalar reference in birder.c exactly (no FMA, true division); movemask packs 8 bits.
// requantize runs the rng_aes.h generator on VAES (2 AES blocks per ymm) or, without
// VAES, on AES-NI xmm halves (wr_birder_requantize_aesni). aggregate fuses count_planes
// and requantize 256 elements at a time where VAES is there (n_workers <= 31).
#include <immintrin.h>

#include "birder.h"
#include "rng_aes.h"
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
    // No software prefetch: measured slower here than the hardware's alone (5.4 vs
    // 5.75 G elem/s at n = 16, 64M elements), unlike the AVX-512 loop.
    if (!masked) return _mm256_loadu_si256((const __m256i *)(bits[i] + w));
    return _mm256_and_si256(_mm256_maskload_epi64((const long long *)(bits[i] + w), k), valid);
}

// The counts of words w..w+3 (lanes k when `masked`) into acc[0..P-1].
static inline __attribute__((always_inline)) void count_acc4(const uint64_t *const *bits, int n_workers,
                                                             const int P, size_t w, int masked, __m256i k,
                                                             __m256i valid, __m256i acc[16]) {
    for (int p = 0; p < P; p++) acc[p] = _mm256_setzero_si256();
    int i = 0;
    // Whole groups of 7, each input loaded where the tree consumes it (fewer live
    // registers: AVX2 has 16).
    for (; i + 7 <= n_workers; i += 7) {
        __m256i s1, c1, s2, c2, b0, c3, b1, b2;
        FULL_ADD(load_bits4(bits, n_workers, i, w, masked, k, valid),
                 load_bits4(bits, n_workers, i + 1, w, masked, k, valid),
                 load_bits4(bits, n_workers, i + 2, w, masked, k, valid), s1, c1);
        FULL_ADD(s1, load_bits4(bits, n_workers, i + 3, w, masked, k, valid),
                 load_bits4(bits, n_workers, i + 4, w, masked, k, valid), s2, c2);
        FULL_ADD(s2, load_bits4(bits, n_workers, i + 5, w, masked, k, valid),
                 load_bits4(bits, n_workers, i + 6, w, masked, k, valid), b0, c3);
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
    // The last n_workers % 7 one at a time (half-adder ripple).
    for (; i < n_workers; i++) {
        __m256i carry = load_bits4(bits, n_workers, i, w, masked, k, valid);
        for (int p = 0; p < P; p++) {
            __m256i t = _mm256_and_si256(acc[p], carry);
            acc[p] = _mm256_xor_si256(acc[p], carry);
            carry = t;
        }
    }
}

static inline __attribute__((always_inline)) void count_block4(const uint64_t *const *bits, int n_workers,
                                                               const int P, size_t nw, size_t w, int masked,
                                                               const int nt, __m256i k, __m256i valid,
                                                               uint64_t *planes) {
    __m256i acc[16];
    count_acc4(bits, n_workers, P, w, masked, k, valid, acc);
    for (int p = 0; p < P; p++) {
        if (masked)
            _mm256_maskstore_epi64((long long *)(planes + (size_t)p * nw + w), k, acc[p]);
        else if (nt)
            _mm256_stream_si256((__m256i *)(planes + (size_t)p * nw + w), acc[p]);
        else
            _mm256_storeu_si256((__m256i *)(planes + (size_t)p * nw + w), acc[p]);
    }
}

static inline __attribute__((always_inline)) void count_planes_p4(const uint64_t *const *bits, int n_workers,
                                                                  const int P, size_t n, uint64_t *planes) {
    size_t nw = wr_birder_words(n);
    size_t full = n / 256 * 4;  // words in blocks of 4 with no tail bits
    const __m256i ones = _mm256_set1_epi64x(-1);
    // Large outputs go around the caches (see wr_birder_stream_out): aligned planes only.
    if (wr_birder_stream_out((size_t)(n_workers + P) * nw * 8) && (uintptr_t)planes % 32 == 0 &&
        nw % 4 == 0) {
        for (size_t w = 0; w < full; w += 4)
            count_block4(bits, n_workers, P, nw, w, 0, 1, ones, ones, planes);
        _mm_sfence();
    } else {
        for (size_t w = 0; w < full; w += 4)
            count_block4(bits, n_workers, P, nw, w, 0, 0, ones, ones, planes);
    }
    if (full < nw) {
        size_t cnt = nw - full;
        long long v[4] = {-1, -1, -1, -1};
        if (n % 64) v[cnt - 1] = (long long)((1ull << (n % 64)) - 1);
        count_block4(bits, n_workers, P, nw, full, 1, 0, first_lanes64(cnt),
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

// ---- requantize: the rng_aes.h generator, 2 blocks per ymm -------------------
// VAES does a ymm (two blocks) per instruction; without it (AES-NI only) the same
// rounds run on the two xmm halves. Both entry points are compiled with "aes,vaes";
// the AES-NI one runs no VEX.256 AES instruction (`vaes` is 0 in all its inlined
// code), so it only needs AES-NI + AVX2 (cpu.h).
#define WR_RQ_TARGET __attribute__((target("aes,vaes")))
#define WR_RQ_INLINE WR_RQ_TARGET static inline __attribute__((always_inline))

typedef struct {
    __m256i rk[WR_RNG_AES_ROUNDS + 1];  // each round key in both 128-bit lanes
    __m256i pat[2];                     // per stream: lane L's block index offset L, domain d
    uint32_t T[32];                     // threshold T(c) = ceil(c * 2^24 / n), c < 32; 2^24 for c >= n
    uint8_t thi[32];                    // its top byte T(c) >> 16; 255 for c >= n (see rq8_ties)
} rq8_ctx;

static inline void rq8_ctx_make(rq8_ctx *x, wr_rng_key key, int n_workers) {
    wr_rng_aes_keys k;
    wr_rng_aes_keys_make(key, &k);
    for (int r = 0; r <= WR_RNG_AES_ROUNDS; r++)
        x->rk[r] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)k.rk[r]));
    for (int d = 0; d < 2; d++) x->pat[d] = _mm256_setr_epi32(0, d, 0, 0, 1, d, 0, 0);
    for (uint32_t c = 0; c < 32; c++) {
        x->T[c] = c >= (uint32_t)n_workers
                      ? 1u << 24
                      : (uint32_t)((((uint64_t)c << 24) + (uint64_t)n_workers - 1) / (uint64_t)n_workers);
        x->thi[c] = (uint8_t)(c >= (uint32_t)n_workers ? 255 : x->T[c] >> 16);
    }
}

// block(d, idx + L) in 128-bit lane L (rng_aes.h).
WR_RQ_INLINE __m256i rq8_blocks(const rq8_ctx *x, const int vaes, int d, uint32_t idx) {
    __m256i v = _mm256_add_epi32(
        _mm256_blend_epi32(_mm256_setzero_si256(), _mm256_set1_epi32((int)idx), 0x11), x->pat[d]);
    v = _mm256_xor_si256(v, x->rk[0]);
    if (vaes) {
#pragma GCC unroll 8
        for (int r = 1; r <= WR_RNG_AES_ROUNDS; r++) v = _mm256_aesenc_epi128(v, x->rk[r]);
        return v;
    }
    __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
#pragma GCC unroll 8
    for (int r = 1; r <= WR_RNG_AES_ROUNDS; r++) {
        lo = _mm_aesenc_si128(lo, _mm256_castsi256_si128(x->rk[r]));
        hi = _mm_aesenc_si128(hi, _mm256_castsi256_si128(x->rk[r]));
    }
    return _mm256_setr_m128i(lo, hi);
}

// Counts of the 64 elements of word w as bytes (P <= 7): c[0] elements 0..31, c[1]
// 32..63. One broadcast of each plane word serves both halves.
WR_RQ_INLINE void counts_u8_64(const uint64_t *planes, const int P, size_t nw, size_t w, __m256i c[2]) {
    const __m256i pick_lo = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2,
                                             2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i pick_hi = _mm256_add_epi8(pick_lo, _mm256_set1_epi8(4));
    const __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    c[0] = c[1] = _mm256_setzero_si256();
#pragma GCC unroll 16
    for (int p = P - 1; p >= 0; p--) {  // Horner: c = 2c + bit (a set byte is -1)
        __m256i v = _mm256_set1_epi64x((long long)planes[(size_t)p * nw + w]);
        __m256i m0 = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(v, pick_lo), sel), sel);
        __m256i m1 = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(v, pick_hi), sel), sel);
        c[0] = _mm256_sub_epi8(_mm256_add_epi8(c[0], c[0]), m0);
        c[1] = _mm256_sub_epi8(_mm256_add_epi8(c[1], c[1]), m1);
    }
}

// Tie elements settled by r24 = thi[c] << 16 | lo16 < T(c) (rare; c >= n always +1:
// see the AVX-512 version).
WR_RQ_TARGET static uint64_t rq8_ties(const rq8_ctx *x, const int vaes, uint64_t tie, const uint8_t *cnt,
                                      uint32_t ctr) {
    uint16_t lo[64];
    for (int k = 0; k < 4; k++)
        _mm256_storeu_si256((__m256i *)(lo + 16 * k), rq8_blocks(x, vaes, 1, (ctr >> 3) + 2 * (uint32_t)k));
    uint64_t bits = 0;
    for (; tie; tie &= tie - 1) {
        int i = __builtin_ctzll(tie);
        bits |= (uint64_t)(((uint32_t)x->thi[cnt[i]] << 16 | lo[i]) < x->T[cnt[i]]) << i;
    }
    return bits;
}

// 32 elements: hi8 < thi[c] (unsigned bytes) and the ties hi8 == thi[c].
typedef struct {
    uint32_t lt, tie;
} rq8_half;

WR_RQ_INLINE rq8_half rq8_decide(__m256i hi8, __m256i c8, __m256i tab_lo, __m256i tab_hi) {
    // c <= 31: pshufb looks up c & 15 in both 16-entry halves, bit 4 picks one.
    __m256i th = _mm256_blendv_epi8(_mm256_shuffle_epi8(tab_lo, c8), _mm256_shuffle_epi8(tab_hi, c8),
                                    _mm256_slli_epi16(c8, 3));
    __m256i ge = _mm256_cmpeq_epi8(_mm256_max_epu8(hi8, th), hi8);  // hi8 >= th
    rq8_half h;
    h.lt = ~(uint32_t)_mm256_movemask_epi8(ge);
    h.tie = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(hi8, th));
    return h;
}

// Copies a finished chunk of output words to dst: streaming stores (past the caches)
// when `stream` and dst is 32-byte aligned, plain ones otherwise.
static inline void rq8_flush(uint64_t *dst, const uint64_t *buf, size_t cnt, int stream) {
    size_t i = 0;
    if (stream && (uintptr_t)dst % 32 == 0)
        for (; i + 4 <= cnt; i += 4)
            _mm256_stream_si256((__m256i *)(dst + i), _mm256_loadu_si256((const __m256i *)(buf + i)));
    for (; i < cnt; i++) dst[i] = buf[i];
}

// n_workers <= 31, as the AVX-512 rq_small: one word = 2 ymm of hi8 bytes, ties
// listed per chunk and settled after it, then the chunk is written out.
#define WR_RQ_CHUNK 256
WR_RQ_INLINE void rq8_small(const uint64_t *planes, int n_workers, const int P, const int vaes, size_t n,
                            const rq8_ctx *x, uint64_t first_index, uint64_t *bits_out) {
    size_t nw = wr_birder_words(n);
    const __m256i tab_lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)x->thi));
    const __m256i tab_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(x->thi + 16)));
    int stream = wr_birder_stream_out((size_t)(P + 1) * nw * 8);
    for (size_t w0 = 0; w0 < nw; w0 += WR_RQ_CHUNK) {
        size_t cnt = WR_MIN(nw - w0, WR_RQ_CHUNK), nt = 0;
        uint32_t tie_w[WR_RQ_CHUNK];
        uint64_t tie_m[WR_RQ_CHUNK], buf[WR_RQ_CHUNK];
        uint8_t tie_c[WR_RQ_CHUNK][64];  // the counts of each listed word, kept for its ties
        for (size_t i = 0; i < cnt; i++) {
            size_t w = w0 + i;
            uint32_t ctr = (uint32_t)(first_index + w * 64);
            __m256i c[2];
            counts_u8_64(planes, P, nw, w, c);
            rq8_half a = rq8_decide(rq8_blocks(x, vaes, 0, ctr >> 4), c[0], tab_lo, tab_hi);
            rq8_half b = rq8_decide(rq8_blocks(x, vaes, 0, (ctr >> 4) + 2), c[1], tab_lo, tab_hi);
            buf[i] = (uint64_t)a.lt | (uint64_t)b.lt << 32;
            // Written to slot nt every word; the slot only advances past a word with ties.
            _mm256_storeu_si256((__m256i *)tie_c[nt], c[0]);
            _mm256_storeu_si256((__m256i *)(tie_c[nt] + 32), c[1]);
            tie_w[nt] = (uint32_t)i;
            tie_m[nt] = (uint64_t)a.tie | (uint64_t)b.tie << 32;
            nt += tie_m[nt] != 0;
        }
        for (size_t t = 0; t < nt; t++)
            buf[tie_w[t]] |= rq8_ties(x, vaes, tie_m[t], tie_c[t],
                                      (uint32_t)(first_index + (w0 + tie_w[t]) * 64));
        if (w0 + cnt == nw && n % 64) buf[cnt - 1] &= (1ull << (n % 64)) - 1;
        rq8_flush(bits_out + w0, buf, cnt, stream);
    }
    if (stream) _mm_sfence();
}

// Any n_workers: the full r24 of all 64 elements and the 64-bit product test.
WR_RQ_INLINE void rq8_any(const uint64_t *planes, int n_workers, const int vaes, size_t n, const rq8_ctx *x,
                          uint64_t first_index, uint64_t *bits_out) {
    int P = wr_birder_planes(n_workers);
    size_t nw = wr_birder_words(n);
    for (size_t w = 0; w < nw; w++) {
        uint32_t ctr = (uint32_t)(first_index + w * 64);
        uint8_t hi[64];
        uint16_t lo[64];
        for (int k = 0; k < 2; k++)
            _mm256_storeu_si256((__m256i *)(hi + 32 * k),
                                rq8_blocks(x, vaes, 0, (ctr >> 4) + 2 * (uint32_t)k));
        for (int k = 0; k < 4; k++)
            _mm256_storeu_si256((__m256i *)(lo + 16 * k),
                                rq8_blocks(x, vaes, 1, (ctr >> 3) + 2 * (uint32_t)k));
        __m256i c[8];
        counts64(planes, P, nw, w, c);
        uint64_t word = 0;
        for (int q = 0; q < 8; q++) {
            __m256i h = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(hi + 8 * q)));
            __m256i l = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(lo + 8 * q)));
            __m256i r = _mm256_or_si256(_mm256_slli_epi32(h, 16), l);
            word |= requant8(r, c[q], n_workers) << (8 * q);
        }
        if (w == nw - 1 && n % 64) word &= (1ull << (n % 64)) - 1;
        bits_out[w] = word;
    }
}

WR_RQ_INLINE void rq8_run(const uint64_t *planes, int n_workers, const int vaes, size_t n, wr_rng_key key,
                          uint64_t first_index, uint64_t *bits_out) {
    WR_CHECK(first_index % 64 == 0);
    rq8_ctx x;
    rq8_ctx_make(&x, key, n_workers);
    // One instance per plane count for n_workers <= 31 (P <= 5), so P is a constant.
    // clang-format off
    switch (n_workers <= 31 ? wr_birder_planes(n_workers) : 0) {
#define WR_CASE(P) \
    case P: rq8_small(planes, n_workers, P, vaes, n, &x, first_index, bits_out); break;
        WR_CASE(1) WR_CASE(2) WR_CASE(3) WR_CASE(4) WR_CASE(5)
#undef WR_CASE
    default: rq8_any(planes, n_workers, vaes, n, &x, first_index, bits_out);
    }
    // clang-format on
}

WR_RQ_TARGET void wr_birder_requantize_avx2(const uint64_t *planes, int n_workers, size_t n, wr_rng_key key,
                                            uint64_t first_index, uint64_t *bits_out) {
    rq8_run(planes, n_workers, 1, n, key, first_index, bits_out);
}

WR_RQ_TARGET void wr_birder_requantize_aesni(const uint64_t *planes, int n_workers, size_t n, wr_rng_key key,
                                             uint64_t first_index, uint64_t *bits_out) {
    rq8_run(planes, n_workers, 0, n, key, first_index, bits_out);
}

// ---- aggregate: count and requantize fused, 4 words (256 elements) a group -------
// As the AVX-512 version (birder_avx512.c): each group's counts go from count_acc4's
// registers through an L1 copy straight into rq8_small's per-word test, the loads of
// group g + 1 before the arithmetic of group g; planes are not touched. n_workers <= 31.
#define WR_AG8_CHUNK 128
_Static_assert(WR_AG8_CHUNK % 4 == 0, "chunks of whole 4-word groups");
typedef struct {
    size_t nt;
    uint32_t tie_w[WR_AG8_CHUNK];
    uint64_t tie_m[WR_AG8_CHUNK], buf[WR_AG8_CHUNK];
    uint8_t tie_c[WR_AG8_CHUNK][64];
} ag8_chunk;

// rq8_small's hi8 test of words w..w+3 (planes pl[p * 4 + e]) into ch at g = w % chunk.
WR_RQ_INLINE void ag8_rq4(const int P, const int vaes, const rq8_ctx *x, __m256i tab_lo, __m256i tab_hi,
                          const uint64_t *pl, uint64_t first_index, size_t w, size_t g, ag8_chunk *ch) {
    size_t nt = ch->nt;
#pragma GCC unroll 4
    for (size_t e = 0; e < 4; e++) {
        uint32_t ctr = (uint32_t)(first_index + (w + e) * 64);
        __m256i c[2];
        counts_u8_64(pl, P, 4, e, c);
        rq8_half a = rq8_decide(rq8_blocks(x, vaes, 0, ctr >> 4), c[0], tab_lo, tab_hi);
        rq8_half b = rq8_decide(rq8_blocks(x, vaes, 0, (ctr >> 4) + 2), c[1], tab_lo, tab_hi);
        uint64_t tie = (uint64_t)a.tie | (uint64_t)b.tie << 32;
        ch->buf[g + e] = (uint64_t)a.lt | (uint64_t)b.lt << 32;
        _mm256_storeu_si256((__m256i *)ch->tie_c[nt], c[0]);
        _mm256_storeu_si256((__m256i *)(ch->tie_c[nt] + 32), c[1]);
        ch->tie_w[nt] = (uint32_t)(g + e);
        ch->tie_m[nt] = tie;
        nt += tie != 0;
    }
    ch->nt = nt;
}

// Settles the chunk's ties, writes its cnt words at w0 and empties it.
WR_RQ_INLINE void ag8_flush(const rq8_ctx *x, const int vaes, size_t n, uint64_t first_index, size_t w0,
                            size_t cnt, int stream, ag8_chunk *ch, uint64_t *bits_out) {
    for (size_t t = 0; t < ch->nt; t++)
        ch->buf[ch->tie_w[t]] |= rq8_ties(x, vaes, ch->tie_m[t], ch->tie_c[t],
                                          (uint32_t)(first_index + (w0 + ch->tie_w[t]) * 64));
    if (w0 + cnt == wr_birder_words(n) && n % 64) ch->buf[cnt - 1] &= (1ull << (n % 64)) - 1;
    rq8_flush(bits_out + w0, ch->buf, cnt, stream);
    ch->nt = 0;
}

WR_RQ_INLINE void ag8_small(const uint64_t *const *bits, int n_workers, const int P, size_t n,
                            const rq8_ctx *x, uint64_t first_index, uint64_t *bits_out) {
    size_t nw = wr_birder_words(n), full = n / 256 * 4;  // full: words in groups with no tail bits
    const __m256i tab_lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)x->thi));
    const __m256i tab_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(x->thi + 16)));
    const __m256i ones = _mm256_set1_epi64x(-1);
    long long v[4] = {-1, -1, -1, -1};  // the last group's valid bits (count_planes_p4)
    if (n % 64) v[(nw - full) - 1] = (long long)((1ull << (n % 64)) - 1);
    const __m256i valid = _mm256_loadu_si256((const __m256i *)v);
    int stream = wr_birder_stream_out((size_t)(n_workers + 1) * nw * 8);
    ag8_chunk ch;
    ch.nt = 0;
    _Alignas(32) uint64_t grp[2][8 * 4];  // the planes of groups g and g + 1 (L1)
    for (size_t w = 0; w < nw; w += 4) {
        for (int pass = w == 0 ? 0 : 1; pass < 2; pass++) {  // pass 0: the first group, once
            size_t c = w + 4 * (size_t)pass;
            uint64_t *out = grp[(c / 4) & 1];
            __m256i acc[16];
            if (c + 4 <= full)
                count_acc4(bits, n_workers, P, c, 0, ones, ones, acc);
            else if (c < nw)  // the last words: masked loads; words past nw count 0, never written
                count_acc4(bits, n_workers, P, c, 1, first_lanes64(nw - c), valid, acc);
            else
                continue;
            for (int p = 0; p < P; p++) _mm256_store_si256((__m256i *)(out + 4 * p), acc[p]);
        }
        ag8_rq4(P, 1, x, tab_lo, tab_hi, grp[(w / 4) & 1], first_index, w, w % WR_AG8_CHUNK, &ch);
        if ((w + 4) % WR_AG8_CHUNK == 0 || w + 4 >= nw) {
            size_t w0 = w / WR_AG8_CHUNK * WR_AG8_CHUNK;
            ag8_flush(x, 1, n, first_index, w0, WR_MIN(nw - w0, WR_AG8_CHUNK), stream, &ch, bits_out);
        }
    }
    if (stream) _mm_sfence();
}

WR_RQ_TARGET void wr_birder_aggregate_avx2(const uint64_t *const *bits, int n_workers, size_t n,
                                           wr_rng_key key, uint64_t first_index, uint64_t *planes,
                                           uint64_t *bits_out) {
    WR_CHECK(first_index % 64 == 0);
    if (n_workers > 31) {  // counts past rq8_small's table: the two kernels
        wr_birder_count_planes_avx2(bits, n_workers, n, planes);
        wr_birder_requantize_avx2(planes, n_workers, n, key, first_index, bits_out);
        return;
    }
    rq8_ctx x;
    rq8_ctx_make(&x, key, n_workers);
    // clang-format off
    switch (wr_birder_planes(n_workers)) {
#define WR_CASE(P) \
    case P: ag8_small(bits, n_workers, P, n, &x, first_index, bits_out); break;
        WR_CASE(1) WR_CASE(2) WR_CASE(3) WR_CASE(4) WR_CASE(5)
#undef WR_CASE
    default: WR_CHECK(0);
    }
    // clang-format on
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
