// birder_avx512.c — AVX-512 versions of the Birder codec (16 lanes). Each op mirrors
// the scalar reference in birder.c exactly (no FMA, true division), so results are
// bit-identical; a compare into a __mmask16 gives 16 packed bits directly.
// requantize runs the rng_aes.h generator on VAES (4 AES blocks per zmm), turns
// planes into byte counts with GFNI and looks thresholds up with VBMI byte permutes:
// it is only called where the CPU has all three. aggregate fuses count_planes and
// requantize 512 elements at a time on the same instructions (n_workers <= 127).
#include <immintrin.h>

#include "birder.h"
#include "rng_aes.h"
#include "wr_common.h"

// wr_rng_u32(key, base + lane) >> 8 for 16 lanes, with base a multiple of 16 (so
// base + lane == base ^ lane). The key-only parts are folded into constants: the
// first xorshift of (base ^ lane ^ k0) distributes over the xors, so it costs one
// broadcast of a scalar and one xor; the k1 xor merges into a three-way xor.
typedef struct {
    __m512i c1;  // (lane ^ k0) ^ ((lane ^ k0) >> 16)
    __m512i k1;
} rng16;

static inline rng16 rng16_make(wr_rng_key key) {
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    rng16 r;
    __m512i c = _mm512_xor_si512(iota, _mm512_set1_epi32((int)key.k0));
    r.c1 = _mm512_xor_si512(c, _mm512_srli_epi32(c, 16));
    r.k1 = _mm512_set1_epi32((int)key.k1);
    return r;
}

static inline __m512i r24_16(const rng16 *r, uint32_t base) {
    const __m512i m1 = _mm512_set1_epi32((int)WR_RNG_M1), m2 = _mm512_set1_epi32((int)WR_RNG_M2);
    __m512i x = _mm512_xor_si512(_mm512_set1_epi32((int)(base ^ (base >> 16))), r->c1);
    x = _mm512_mullo_epi32(x, m1);
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_mullo_epi32(x, m2);
    x = _mm512_ternarylogic_epi32(x, _mm512_srli_epi32(x, 16), r->k1, 0x96);  // end of round 1, ^ k1
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, m1);
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_mullo_epi32(x, m2);
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    return _mm512_srli_epi32(x, 8);
}

// One 16-element chunk of the fused encode; returns its 16 bits.
static inline __mmask16 encode16(const float *g, float *m, float *b, __m512 vbeta, __m512 vomb,
                                 const rng16 *rng, uint32_t ctr0) {
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
    return _mm512_cmplt_epu32_mask(r24_16(rng, ctr0), T);
}

void wr_birder_encode_avx512(const float *g, float *m, float *b, size_t n, float beta, wr_rng_key key,
                             uint64_t first_index, uint64_t *bits) {
    WR_CHECK(first_index % 64 == 0);
    const __m512 vbeta = _mm512_set1_ps(beta), vomb = _mm512_set1_ps(1.0f - beta);
    const rng16 rng = rng16_make(key);
    size_t full = n / 64;
    for (size_t w = 0; w < full; w++) {
        size_t j = w * 64;
        uint32_t c = (uint32_t)(first_index + j);
        uint64_t k0 = encode16(g + j, m + j, b + j, vbeta, vomb, &rng, c);
        uint64_t k1 = encode16(g + j + 16, m + j + 16, b + j + 16, vbeta, vomb, &rng, c + 16);
        uint64_t k2 = encode16(g + j + 32, m + j + 32, b + j + 32, vbeta, vomb, &rng, c + 32);
        uint64_t k3 = encode16(g + j + 48, m + j + 48, b + j + 48, vbeta, vomb, &rng, c + 48);
        bits[w] = k0 | k1 << 16 | k2 << 32 | k3 << 48;
    }
    if (n % 64) {
        size_t j = full * 64;
        wr_birder_encode_ref(g + j, m + j, b + j, n - j, beta, key, first_index + j, bits + full);
    }
}

// Bit-sliced counting, 8 words (512 elements) per zmm. Workers are taken 7 at a
// time through a carry-save tree (4 full adders, 8 vpternlog) into a 3-bit partial
// count, which a ripple of full adders adds into the P accumulator planes. P is a
// compile-time constant in each instance so the planes stay in registers.
#ifndef WR_BIRDER_PF
#define WR_BIRDER_PF 512
#endif
#define XOR3(a, b, c) _mm512_ternarylogic_epi64((a), (b), (c), 0x96)
#define MAJ3(a, b, c) _mm512_ternarylogic_epi64((a), (b), (c), 0xE8)

static inline __attribute__((always_inline)) __m512i load_bits(const uint64_t *const *bits, int n_workers,
                                                               int i, size_t w, int masked, __mmask8 k,
                                                               __m512i valid, const size_t pf) {
    if (i >= n_workers) return _mm512_setzero_si512();
    if (!masked) {
        _mm_prefetch((const char *)(bits[i] + w + pf), _MM_HINT_T1);
        return _mm512_loadu_si512(bits[i] + w);
    }
    return _mm512_and_si512(_mm512_maskz_loadu_epi64(k, bits[i] + w), valid);
}

// The counts of words w..w+7 (those in mask k when `masked`) into acc[0..P-1];
// unmasked loads prefetch pf words ahead.
static inline __attribute__((always_inline)) void count_acc(const uint64_t *const *bits, int n_workers,
                                                            const int P, size_t w, int masked, __mmask8 k,
                                                            __m512i valid, const size_t pf, __m512i acc[16]) {
    for (int p = 0; p < P; p++) acc[p] = _mm512_setzero_si512();
    for (int i = 0; i < n_workers; i += 7) {
        __m512i x0 = load_bits(bits, n_workers, i, w, masked, k, valid, pf);
        __m512i x1 = load_bits(bits, n_workers, i + 1, w, masked, k, valid, pf);
        __m512i x2 = load_bits(bits, n_workers, i + 2, w, masked, k, valid, pf);
        __m512i x3 = load_bits(bits, n_workers, i + 3, w, masked, k, valid, pf);
        __m512i x4 = load_bits(bits, n_workers, i + 4, w, masked, k, valid, pf);
        __m512i x5 = load_bits(bits, n_workers, i + 5, w, masked, k, valid, pf);
        __m512i x6 = load_bits(bits, n_workers, i + 6, w, masked, k, valid, pf);
        __m512i s1 = XOR3(x0, x1, x2), c1 = MAJ3(x0, x1, x2);
        __m512i s2 = XOR3(s1, x3, x4), c2 = MAJ3(s1, x3, x4);
        __m512i b0 = XOR3(s2, x5, x6), c3 = MAJ3(s2, x5, x6);
        __m512i b1 = XOR3(c1, c2, c3), b2 = MAJ3(c1, c2, c3);
        // acc += b2:b1:b0 (the running total never exceeds n_workers < 2^P)
        __m512i carry = _mm512_and_si512(acc[0], b0);
        acc[0] = _mm512_xor_si512(acc[0], b0);
        if (P > 1) {
            __m512i t = MAJ3(acc[1], b1, carry);
            acc[1] = XOR3(acc[1], b1, carry);
            carry = t;
        } else {
            carry = _mm512_setzero_si512();
        }
        if (P > 2) {
            __m512i t = MAJ3(acc[2], b2, carry);
            acc[2] = XOR3(acc[2], b2, carry);
            carry = t;
        }
        for (int p = 3; p < P; p++) {
            __m512i t = _mm512_and_si512(acc[p], carry);
            acc[p] = _mm512_xor_si512(acc[p], carry);
            carry = t;
        }
    }
}

static inline __attribute__((always_inline)) void count_block(const uint64_t *const *bits, int n_workers,
                                                              const int P, size_t nw, size_t w, int masked,
                                                              const int nt, __mmask8 k, __m512i valid,
                                                              uint64_t *planes) {
    __m512i acc[16];
    count_acc(bits, n_workers, P, w, masked, k, valid, WR_BIRDER_PF, acc);
    for (int p = 0; p < P; p++) {
        if (masked)
            _mm512_mask_storeu_epi64(planes + (size_t)p * nw + w, k, acc[p]);
        else if (nt)
            _mm512_stream_si512((__m512i *)(planes + (size_t)p * nw + w), acc[p]);
        else
            _mm512_storeu_si512(planes + (size_t)p * nw + w, acc[p]);
    }
}

static inline __attribute__((always_inline)) void count_planes_p(const uint64_t *const *bits, int n_workers,
                                                                 const int P, size_t n, uint64_t *planes) {
    size_t nw = wr_birder_words(n);
    size_t full = n / 512 * 8;  // words in blocks of 8 with no tail bits
    const __m512i ones = _mm512_set1_epi64(-1);
    // Large outputs go around the caches (see wr_birder_stream_out): aligned planes only.
    if (wr_birder_stream_out((size_t)(n_workers + P) * nw * 8) && (uintptr_t)planes % 64 == 0 &&
        nw % 8 == 0) {
        for (size_t w = 0; w < full; w += 8) count_block(bits, n_workers, P, nw, w, 0, 1, 0xff, ones, planes);
        _mm_sfence();
    } else {
        for (size_t w = 0; w < full; w += 8) count_block(bits, n_workers, P, nw, w, 0, 0, 0xff, ones, planes);
    }
    if (full < nw) {
        size_t cnt = nw - full;
        __m512i valid = ones;
        if (n % 64)
            valid = _mm512_mask_set1_epi64(ones, (__mmask8)(1u << (cnt - 1)),
                                           (long long)((1ull << (n % 64)) - 1));
        count_block(bits, n_workers, P, nw, full, 1, 0, (__mmask8)((1u << cnt) - 1), valid, planes);
    }
}

void wr_birder_count_planes_avx512(const uint64_t *const *bits, int n_workers, size_t n, uint64_t *planes) {
    // One case per plane count, so P is a constant in each kernel call.
    // clang-format off
    switch (wr_birder_planes(n_workers)) {
#define WR_CASE(P) \
    case P: count_planes_p(bits, n_workers, P, n, planes); break;
        WR_CASE(1) WR_CASE(2) WR_CASE(3) WR_CASE(4) WR_CASE(5) WR_CASE(6) WR_CASE(7) WR_CASE(8)
        WR_CASE(9) WR_CASE(10) WR_CASE(11) WR_CASE(12) WR_CASE(13) WR_CASE(14) WR_CASE(15)
        WR_CASE(16)
#undef WR_CASE
    default: WR_CHECK(0);
    }
    // clang-format on
}

// Counts of the 64 elements of word w as four vectors of 16 uint32: one masked
// byte add (P <= 8) or two word adds per plane cover all 64 elements, then widen.
static inline __attribute__((always_inline)) void counts64(const uint64_t *planes, int P, size_t nw, size_t w,
                                                           __m512i c[4]) {
    if (P <= 8) {
        __m512i c8 = _mm512_setzero_si512();
        for (int p = 0; p < P; p++)
            c8 = _mm512_mask_add_epi8(c8, _cvtu64_mask64(planes[(size_t)p * nw + w]), c8,
                                      _mm512_set1_epi8((char)(1 << p)));
        c[0] = _mm512_cvtepu8_epi32(_mm512_castsi512_si128(c8));
        c[1] = _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(c8, 1));
        c[2] = _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(c8, 2));
        c[3] = _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(c8, 3));
    } else {
        __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
        for (int p = 0; p < P; p++) {
            uint64_t word = planes[(size_t)p * nw + w];
            __m512i bit = _mm512_set1_epi16((short)(1 << p));
            lo = _mm512_mask_add_epi16(lo, _cvtu32_mask32((uint32_t)word), lo, bit);
            hi = _mm512_mask_add_epi16(hi, _cvtu32_mask32((uint32_t)(word >> 32)), hi, bit);
        }
        c[0] = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(lo));
        c[1] = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(lo, 1));
        c[2] = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(hi));
        c[3] = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(hi, 1));
    }
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

// ---- requantize: the rng_aes.h generator with VAES, 4 blocks per zmm -----------
// Functions that use VAES / VBMI / GFNI carry the target attribute; the dispatcher only
// calls wr_birder_requantize_avx512 when the CPU has all three (cpu.h).
#define WR_RQ_TARGET __attribute__((target("vaes,avx512vbmi,gfni")))

typedef struct {
    __m512i rk[WR_RNG_AES_ROUNDS + 1];  // each round key in all four 128-bit lanes
    __m512i pat[2];                     // per stream: lane L's block index offset L, domain d
    uint32_t T[128];                    // threshold T(c) = ceil(c * 2^24 / n), c < 128; 2^24 for c >= n
    uint8_t thi[128];                   // its top byte T(c) >> 16; 255 for c >= n (see rq_ties)
    __m512i tlo[4];                     // its low 16 bits, c = 0..127 (32 per vector)
} rq_ctx;

static inline void rq_ctx_make(rq_ctx *x, wr_rng_key key, int n_workers) {
    wr_rng_aes_keys k;
    wr_rng_aes_keys_make(key, &k);
    for (int r = 0; r <= WR_RNG_AES_ROUNDS; r++)
        x->rk[r] = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)k.rk[r]));
    for (int d = 0; d < 2; d++) x->pat[d] = _mm512_setr_epi32(0, d, 0, 0, 1, d, 0, 0, 2, d, 0, 0, 3, d, 0, 0);
    for (uint32_t c = 0; c < 128; c++) {
        x->T[c] = c >= (uint32_t)n_workers
                      ? 1u << 24
                      : (uint32_t)((((uint64_t)c << 24) + (uint64_t)n_workers - 1) / (uint64_t)n_workers);
        x->thi[c] = (uint8_t)(c >= (uint32_t)n_workers ? 255 : x->T[c] >> 16);
    }
    uint16_t tl[128];
    for (int c = 0; c < 128; c++) tl[c] = (uint16_t)x->T[c];
    for (int q = 0; q < 4; q++) x->tlo[q] = _mm512_loadu_si512(tl + 32 * q);
}

// block(d, idx + L) in 128-bit lane L (rng_aes.h).
WR_RQ_TARGET static inline __m512i rq_blocks(const rq_ctx *x, int d, uint32_t idx) {
    __m512i v = _mm512_add_epi32(_mm512_maskz_set1_epi32(0x1111, (int)idx), x->pat[d]);
    v = _mm512_xor_si512(v, x->rk[0]);
#pragma GCC unroll 8
    for (int r = 1; r <= WR_RNG_AES_ROUNDS; r++) v = _mm512_aesenc_epi128(v, x->rk[r]);
    return v;
}

// Counts of the 64 elements of word w as bytes (P <= 7), by bit-matrix transposes:
// qword k of q holds byte k of plane p at byte 7 - p (rq_count_index), and GFNI's
// affine map with the matrix q and the unit bytes 1 << e moves bit e of those P
// bytes into byte e: its bit p is bit e of plane p's byte k.
WR_RQ_TARGET static inline __attribute__((always_inline)) __m512i
counts_u8(const uint64_t *planes, const int P, size_t nw, size_t w, __m512i index) {
    __m512i s = _mm512_setzero_si512();  // qword p = plane p's word w (P <= 7: qword 7 stays 0)
#pragma GCC unroll 16
    for (int p = 0; p < P; p++)
        s = _mm512_mask_set1_epi64(s, (__mmask8)(1u << p), (long long)planes[(size_t)p * nw + w]);
    __m512i q = _mm512_permutexvar_epi8(index, s);
    return _mm512_gf2p8affine_epi64_epi8(_mm512_set1_epi64((long long)0x8040201008040201ull), q, 0);
}

// The byte permutation counts_u8 needs for P planes: output byte 8k + 7 - p takes byte
// 8p + k (plane p, byte k); bytes of absent planes take byte 63 (zero).
static inline __m512i rq_count_index(int P) {
    uint8_t idx[64];
    for (int k = 0; k < 8; k++)
        for (int p = 0; p < 8; p++) idx[8 * k + 7 - p] = (uint8_t)(p < P ? 8 * p + k : 63);
    return _mm512_loadu_si512(idx);
}

// The elements of `tie` (hi8 == thi[c]) settled by the full test r24 < T(c), with
// r24 = thi[c] << 16 | lo16: for c < n that is lo16 < T(c) & 0xffff (tlo[c]); for
// c >= n (thi 255, T = 2^24) it always holds. Two more zmm of AES give the 64 lo16;
// counts widen to 16 bits and pick tlo with vpermi2w (64 entries a pair, a second
// pair for counts 64..127 when P = 7). No per-element branch.
WR_RQ_TARGET static inline __attribute__((always_inline)) uint64_t
rq_ties(const rq_ctx *x, const int P, int n_workers, uint64_t tie, __m512i c8, uint32_t ctr) {
    __m512i lo[2] = {rq_blocks(x, 1, ctr >> 3), rq_blocks(x, 1, (ctr >> 3) + 4)};
    __m512i c16[2] = {_mm512_cvtepu8_epi16(_mm512_castsi512_si256(c8)),
                      _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(c8, 1))};
    uint64_t bits = _mm512_cmpgt_epu8_mask(c8, _mm512_set1_epi8((char)(n_workers - 1)));  // c >= n
    for (int h = 0; h < 2; h++) {
        __m512i t = _mm512_permutex2var_epi16(x->tlo[0], c16[h], x->tlo[1]);
        if (P >= 7) {
            __mmask32 up = _mm512_cmpge_epu16_mask(c16[h], _mm512_set1_epi16(64));
            t = _mm512_mask_mov_epi16(t, up, _mm512_permutex2var_epi16(x->tlo[2], c16[h], x->tlo[3]));
        }
        bits |= (uint64_t)_mm512_cmplt_epu16_mask(lo[h], t) << (32 * h);
    }
    return bits & tie;
}

// Copies a finished chunk of output words to dst: streaming stores (past the caches)
// when `stream` and dst is 64-byte aligned, plain ones otherwise.
static inline void rq_flush(uint64_t *dst, const uint64_t *buf, size_t cnt, int stream) {
    size_t i = 0;
    if (stream && (uintptr_t)dst % 64 == 0)
        for (; i + 8 <= cnt; i += 8) _mm512_stream_si512((__m512i *)(dst + i), _mm512_loadu_si512(buf + i));
    for (; i < cnt; i++) dst[i] = buf[i];
}

// n_workers <= 127: every count is a byte, its threshold's top byte one vpermi2b away;
// 64 elements are decided by one zmm of hi8 bytes. Words with ties are listed and
// settled by rq_ties after each chunk of words (a branch per word would mispredict
// on the ~22% of words that have one), then the chunk is written out.
#define WR_RQ_CHUNK 256
WR_RQ_TARGET static inline __attribute__((always_inline)) void rq_small(const uint64_t *planes, int n_workers,
                                                                        const int P, size_t n,
                                                                        const rq_ctx *x, uint64_t first_index,
                                                                        uint64_t *bits_out) {
    size_t nw = wr_birder_words(n);
    const __m512i tlo = _mm512_loadu_si512(x->thi), thh = _mm512_loadu_si512(x->thi + 64);
    const __m512i index = rq_count_index(P);
    int stream = wr_birder_stream_out((size_t)(P + 1) * nw * 8);
    for (size_t w0 = 0; w0 < nw; w0 += WR_RQ_CHUNK) {
        size_t cnt = WR_MIN(nw - w0, WR_RQ_CHUNK), nt = 0;
        uint32_t tie_w[WR_RQ_CHUNK];
        uint64_t tie_m[WR_RQ_CHUNK], buf[WR_RQ_CHUNK];
        for (size_t i = 0; i < cnt; i++) {
            size_t w = w0 + i;
            uint32_t ctr = (uint32_t)(first_index + w * 64);
            __m512i hi8 = rq_blocks(x, 0, ctr >> 4);
            __m512i c8 = counts_u8(planes, P, nw, w, index);
            __m512i th = _mm512_permutex2var_epi8(tlo, c8, thh);
            buf[i] = _mm512_cmplt_epu8_mask(hi8, th);
            tie_w[nt] = (uint32_t)i;
            tie_m[nt] = _mm512_cmpeq_epi8_mask(hi8, th);
            nt += tie_m[nt] != 0;
        }
        for (size_t t = 0; t < nt; t++) {
            size_t w = w0 + tie_w[t];
            buf[tie_w[t]] |= rq_ties(x, P, n_workers, tie_m[t], counts_u8(planes, P, nw, w, index),
                                     (uint32_t)(first_index + w * 64));
        }
        if (w0 + cnt == nw && n % 64) buf[cnt - 1] &= (1ull << (n % 64)) - 1;
        rq_flush(bits_out + w0, buf, cnt, stream);
    }
    if (stream) _mm_sfence();
}

// Any n_workers: the full r24 of all 64 elements and the 64-bit product test.
WR_RQ_TARGET static void rq_any(const uint64_t *planes, int n_workers, size_t n, const rq_ctx *x,
                                uint64_t first_index, uint64_t *bits_out) {
    int P = wr_birder_planes(n_workers);
    size_t nw = wr_birder_words(n);
    for (size_t w = 0; w < nw; w++) {
        uint32_t ctr = (uint32_t)(first_index + w * 64);
        uint8_t hi8[64];
        _mm512_storeu_si512(hi8, rq_blocks(x, 0, ctr >> 4));
        __m512i lo[2] = {rq_blocks(x, 1, ctr >> 3), rq_blocks(x, 1, (ctr >> 3) + 4)};
        __m512i c[4];
        counts64(planes, P, nw, w, c);
        uint64_t word = 0;
        for (int q = 0; q < 4; q++) {
            __m512i h = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(hi8 + 16 * q)));
            __m256i l16 = q & 1 ? _mm512_extracti64x4_epi64(lo[q / 2], 1) : _mm512_castsi512_si256(lo[q / 2]);
            __m512i r = _mm512_or_si512(_mm512_slli_epi32(h, 16), _mm512_cvtepu16_epi32(l16));
            word |= (uint64_t)requant_cmp64(r, c[q], n_workers) << (16 * q);
        }
        if (w == nw - 1 && n % 64) word &= (1ull << (n % 64)) - 1;
        bits_out[w] = word;
    }
}

WR_RQ_TARGET void wr_birder_requantize_avx512(const uint64_t *planes, int n_workers, size_t n, wr_rng_key key,
                                              uint64_t first_index, uint64_t *bits_out) {
    WR_CHECK(first_index % 64 == 0);
    rq_ctx x;
    rq_ctx_make(&x, key, n_workers);
    // One instance per plane count for n_workers <= 127 (P <= 7), so P is a constant.
    // clang-format off
    switch (wr_birder_planes(n_workers)) {
#define WR_CASE(P) \
    case P: rq_small(planes, n_workers, P, n, &x, first_index, bits_out); break;
        WR_CASE(1) WR_CASE(2) WR_CASE(3) WR_CASE(4) WR_CASE(5) WR_CASE(6) WR_CASE(7)
#undef WR_CASE
    default: rq_any(planes, n_workers, n, &x, first_index, bits_out);
    }
    // clang-format on
}

// ---- aggregate: count and requantize fused, 8 words (512 elements) a group -------
// count_planes reads n_workers streams and is bound by memory, requantize by its
// arithmetic; done one after the other the two times add up. Here each group's
// counts go from count_acc's registers through a 64-byte-per-plane stack copy (L1)
// straight into rq_small's per-word test, so the out-of-order core overlaps the
// stream loads of one group with the AES rounds of the last, and no plane goes
// to memory (the caller's planes are not touched). Tie words keep their byte
// counts for rq_ties after each chunk.
#define WR_AG_CHUNK 128
_Static_assert(WR_AG_CHUNK % 8 == 0, "chunks of whole 8-word groups");
// The fused kernel's prefetch distance in words: shorter than count_planes' (measured
// on Zen 4: 32..256 all ~10% faster than 512 here, where the loop runs slower).
#ifndef WR_AG_PF
#define WR_AG_PF 128
#endif
// The counts of words w..w+7 as planes in pl[p * 8 + e] (plane p, word w + e), the
// layout counts_u8 reads with nw = 8. (An 8x8 qword transpose in registers instead
// measured ~12% slower: 24 lane shuffles per group against 8P broadcast loads.)
WR_RQ_TARGET static inline __attribute__((always_inline)) void ag_group(const uint64_t *const *bits,
                                                                        int n_workers, const int P, size_t w,
                                                                        int masked, __mmask8 k, __m512i valid,
                                                                        uint64_t *pl) {
    __m512i acc[16];
    count_acc(bits, n_workers, P, w, masked, k, valid, WR_AG_PF, acc);
    for (int p = 0; p < P; p++) _mm512_store_si512((__m512i *)(pl + 8 * p), acc[p]);
}

// One chunk of output words in the making: the words decided by hi8, and the tie
// words with their tie masks and byte counts for rq_ties.
typedef struct {
    size_t nt;
    uint32_t tie_w[WR_AG_CHUNK];
    uint64_t tie_m[WR_AG_CHUNK], buf[WR_AG_CHUNK];
    __m512i tie_c[WR_AG_CHUNK];
} ag_chunk;

// rq_small's hi8 test of words w..w+7 (their planes pl, ag_group) into ch at g = w % chunk.
WR_RQ_TARGET static inline __attribute__((always_inline)) void
ag_rq8(const int P, const rq_ctx *x, __m512i tlo, __m512i thh, __m512i index, const uint64_t *pl,
       uint64_t first_index, size_t w, size_t g, ag_chunk *ch) {
    size_t nt = ch->nt;  // in a register: ch's stores would otherwise reload it every word
#pragma GCC unroll 8
    for (size_t e = 0; e < 8; e++) {
        uint32_t ctr = (uint32_t)(first_index + (w + e) * 64);
        __m512i hi8 = rq_blocks(x, 0, ctr >> 4);
        __m512i c8 = counts_u8(pl, P, 8, e, index);
        __m512i th = _mm512_permutex2var_epi8(tlo, c8, thh);
        uint64_t tie = _mm512_cmpeq_epi8_mask(hi8, th);
        ch->buf[g + e] = _mm512_cmplt_epu8_mask(hi8, th);
        ch->tie_w[nt] = (uint32_t)(g + e);
        ch->tie_m[nt] = tie;
        ch->tie_c[nt] = c8;
        nt += tie != 0;
    }
    ch->nt = nt;
}

// Settles the chunk's ties and writes its cnt words at w0; empties the chunk.
WR_RQ_TARGET static inline __attribute__((always_inline)) void
ag_flush(const rq_ctx *x, const int P, int n_workers, size_t n, uint64_t first_index, size_t w0, size_t cnt,
         int stream, ag_chunk *ch, uint64_t *bits_out) {
    for (size_t t = 0; t < ch->nt; t++)
        ch->buf[ch->tie_w[t]] |= rq_ties(x, P, n_workers, ch->tie_m[t], ch->tie_c[t],
                                         (uint32_t)(first_index + (w0 + ch->tie_w[t]) * 64));
    if (w0 + cnt == wr_birder_words(n) && n % 64) ch->buf[cnt - 1] &= (1ull << (n % 64)) - 1;
    rq_flush(bits_out + w0, ch->buf, cnt, stream);
    ch->nt = 0;
}

// Software-pipelined: the loads and counts of group g + 1 come before the arithmetic
// of group g in program order, so a group waiting on memory need not hold up the
// AES rounds of the one before it. (On the Zen 4 VM this measured the same as
// count-then-test per group; the prefetch distance and the L1 copy were the gains.)
WR_RQ_TARGET static inline __attribute__((always_inline)) void ag_small(const uint64_t *const *bits,
                                                                        int n_workers, const int P, size_t n,
                                                                        const rq_ctx *x, uint64_t first_index,
                                                                        uint64_t *bits_out) {
    size_t nw = wr_birder_words(n), full = n / 512 * 8;  // full: words in groups with no tail bits
    if (!nw) return;
    const __m512i tlo = _mm512_loadu_si512(x->thi), thh = _mm512_loadu_si512(x->thi + 64);
    const __m512i index = rq_count_index(P), ones = _mm512_set1_epi64(-1);
    __m512i valid = ones;  // the last group's valid bits (count_planes_p)
    if (n % 64)
        valid = _mm512_mask_set1_epi64(ones, (__mmask8)(1u << ((nw - full) - 1)),
                                       (long long)((1ull << (n % 64)) - 1));
    int stream = wr_birder_stream_out((size_t)(n_workers + 1) * nw * 8);
    ag_chunk ch;
    ch.nt = 0;
    _Alignas(64) uint64_t grp[2][8 * 8];  // the planes of groups g and g + 1 (L1)
    for (size_t w = 0; w < nw; w += 8) {
        for (int pass = w == 0 ? 0 : 1; pass < 2; pass++) {  // pass 0: the first group, once
            size_t c = w + 8 * (size_t)pass;
            uint64_t *out = grp[(c / 8) & 1];
            if (c + 8 <= full)
                ag_group(bits, n_workers, P, c, 0, 0xff, ones, out);
            else if (c < nw)  // the last words: masked loads; words past nw count 0, never written
                ag_group(bits, n_workers, P, c, 1, (__mmask8)((1u << WR_MIN(nw - c, 8)) - 1), valid, out);
        }
        ag_rq8(P, x, tlo, thh, index, grp[(w / 8) & 1], first_index, w, w % WR_AG_CHUNK, &ch);
        if ((w + 8) % WR_AG_CHUNK == 0 || w + 8 >= nw) {
            size_t w0 = w / WR_AG_CHUNK * WR_AG_CHUNK;
            ag_flush(x, P, n_workers, n, first_index, w0, WR_MIN(nw - w0, WR_AG_CHUNK), stream, &ch,
                     bits_out);
        }
    }
    if (stream) _mm_sfence();
}

WR_RQ_TARGET void wr_birder_aggregate_avx512(const uint64_t *const *bits, int n_workers, size_t n,
                                             wr_rng_key key, uint64_t first_index, uint64_t *planes,
                                             uint64_t *bits_out) {
    WR_CHECK(first_index % 64 == 0);
    int P = wr_birder_planes(n_workers);
    if (P > 7) {  // counts past a byte: the two kernels, planes as the go-between
        wr_birder_count_planes_avx512(bits, n_workers, n, planes);
        wr_birder_requantize_avx512(planes, n_workers, n, key, first_index, bits_out);
        return;
    }
    rq_ctx x;
    rq_ctx_make(&x, key, n_workers);
    // One instance per plane count, so P is a constant.
    // clang-format off
    switch (P) {
#define WR_CASE(P) \
    case P: ag_small(bits, n_workers, P, n, &x, first_index, bits_out); break;
        WR_CASE(1) WR_CASE(2) WR_CASE(3) WR_CASE(4) WR_CASE(5) WR_CASE(6) WR_CASE(7)
#undef WR_CASE
    default: WR_CHECK(0);
    }
    // clang-format on
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

void wr_birder_apply_bits_avx512(float *x, const uint64_t *bits, size_t n, float lr, float wd) {
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

// Every 16-element chunk's u from the planes, either applied to dst (apply:
// dst = x, x -= lr * (u + wd * x)) or stored into it (dst = u). Inlined with a
// constant `apply`, so each caller gets its own loop with no test in it.
static inline __attribute__((always_inline)) void planes_to(float *dst, int apply, const uint64_t *planes,
                                                            int n_workers, size_t n, float lr, float wd) {
    int P = wr_birder_planes(n_workers);
    size_t nw = wr_birder_words(n);
    u_table t = u_table_make(n_workers);
    const __m512 vlr = _mm512_set1_ps(lr), vwd = _mm512_set1_ps(wd);
    for (size_t w = 0; w < nw; w++) {
        __m512i c[4];
        counts64(planes, P, nw, w, c);
        for (int q = 0; q < 4; q++) {
            size_t j = w * 64 + 16 * (size_t)q;
            if (j >= n) break;
            __mmask16 em = chunk_mask(n, j);
            __m512 u = u16(&t, c[q]);
            if (apply) u = apply16(_mm512_maskz_loadu_ps(em, dst + j), u, vlr, vwd);
            _mm512_mask_storeu_ps(dst + j, em, u);
        }
    }
}

void wr_birder_apply_planes_avx512(float *x, const uint64_t *planes, int n_workers, size_t n, float lr,
                                   float wd) {
    planes_to(x, 1, planes, n_workers, n, lr, wd);
}

void wr_birder_decode_planes_avx512(const uint64_t *planes, int n_workers, size_t n, float *u) {
    planes_to(u, 0, planes, n_workers, n, 0.0f, 0.0f);
}
