// birder.c — scalar reference definitions of the Birder codec and the run-time
// dispatch to the AVX2 / AVX-512 versions. The arithmetic order written here is
// the contract (birder.h): the vector files reproduce it op for op.
#include "birder.h"

#include <math.h>
#include <string.h>

#include "aes_soft.h"
#include "cpu.h"
#include "rng_aes.h"
#include "wr_common.h"

#define WR_BIRDER_MAX_WORKERS 65535

int wr_birder_planes(int n_workers) {
    WR_CHECK(n_workers >= 1 && n_workers <= WR_BIRDER_MAX_WORKERS);
    int p = 0;
    while ((1L << p) < (long)n_workers + 1) p++;
    return p;
}

// Mask of the valid bits of word w of an n-element vector.
static inline uint64_t tail_mask(size_t n, size_t w) {
    size_t left = n - w * 64;
    return left >= 64 ? ~0ull : ((1ull << left) - 1);
}

// Q's threshold for z = m/b (birder.h): T in [0, 2^24], P(+1) = T / 2^24.
static inline uint32_t birder_threshold(float m, float b) {
    float z = 0.0f;
    if (b > 0.0f) {
        z = m / b;
        if (z != z)
            z = 0.0f;  // inf/inf
        else if (z > 1.0f)
            z = 1.0f;
        else if (z < -1.0f)
            z = -1.0f;
    }
    float t = 1.0f + z;
    t = t * 8388608.0f;
    return (uint32_t)t;
}

static inline uint32_t birder_r24(wr_rng_key key, uint64_t first_index, size_t j) {
    return wr_rng_u32(key, (uint32_t)(first_index + j)) >> 8;
}

void wr_birder_encode_ref(const float *g, float *m, float *b, size_t n, float beta, wr_rng_key key,
                          uint64_t first_index, uint64_t *bits) {
    WR_CHECK(first_index % 64 == 0);
    const float omb = 1.0f - beta;
    size_t nw = wr_birder_words(n);
    for (size_t w = 0; w < nw; w++) {
        size_t j0 = w * 64, j1 = WR_MIN(n, j0 + 64);
        uint64_t word = 0;
        for (size_t j = j0; j < j1; j++) {
            float gj = g[j];
            float t1 = beta * m[j];
            float t2 = omb * gj;
            float mj = t1 + t2;
            t1 = beta * b[j];
            t2 = omb * fabsf(gj);
            float bj = t1 + t2;
            m[j] = mj;
            b[j] = bj;
            uint32_t T = birder_threshold(mj, bj);
            uint64_t bit = birder_r24(key, first_index, j) < T;
            word |= bit << (j - j0);
        }
        bits[w] = word;
    }
}

// Bit-sliced ripple-carry add of every worker's word into the planes: one word
// (64 elements) at a time, a handful of ALU ops per worker.
void wr_birder_count_planes_ref(const uint64_t *const *bits, int n_workers, size_t n, uint64_t *planes) {
    int P = wr_birder_planes(n_workers);
    size_t nw = wr_birder_words(n);
    for (size_t w = 0; w < nw; w++) {
        uint64_t mask = tail_mask(n, w);
        uint64_t acc[16] = {0};
        for (int i = 0; i < n_workers; i++) {
            uint64_t carry = bits[i][w] & mask;
            for (int p = 0; p < P && carry; p++) {
                uint64_t t = acc[p] & carry;
                acc[p] ^= carry;
                carry = t;
            }
        }
        for (int p = 0; p < P; p++) planes[(size_t)p * nw + w] = acc[p];
    }
}

// Element by element: the plain definition the bit-sliced versions are tested against.
void wr_birder_counts_ref(const uint64_t *const *bits, int n_workers, size_t n, uint16_t *counts) {
    WR_CHECK(n_workers >= 1 && n_workers <= WR_BIRDER_MAX_WORKERS);
    for (size_t j = 0; j < n; j++) {
        unsigned c = 0;
        for (int i = 0; i < n_workers; i++) c += (bits[i][j / 64] >> (j % 64)) & 1;
        counts[j] = (uint16_t)c;
    }
}

static inline uint32_t plane_count(const uint64_t *planes, int P, size_t nw, size_t j) {
    uint32_t c = 0;
    for (int p = 0; p < P; p++) c |= (uint32_t)((planes[(size_t)p * nw + j / 64] >> (j % 64)) & 1) << p;
    return c;
}

// The requantize generator (rng_aes.h) in portable C: the S-box, its column table and
// the round keys once per call, then per 16 elements one stream-0 block (hi8). r24 lies in
// [hi8 << 16, hi8 << 16 | 0xffff] and the test r24 * n < c << 24 is monotone in r24,
// so the two ends settle it unless the threshold falls inside (probability 2^-8);
// only then are the two stream-1 blocks (lo16) of the 16 elements computed.
void wr_birder_requantize_ref(const uint64_t *planes, int n_workers, size_t n, wr_rng_key key,
                              uint64_t first_index, uint64_t *bits_out) {
    WR_CHECK(first_index % 64 == 0);
    int P = wr_birder_planes(n_workers);
    size_t nw = wr_birder_words(n);
    if (nw) memset(bits_out, 0, nw * sizeof(uint64_t));
    uint8_t sbox[256];
    uint32_t table[256];
    wr_aes_sbox_make(sbox);
    wr_aes_table_make(sbox, table);
    wr_rng_aes_keys k;
    wr_rng_aes_keys_make(key, &k);
    const uint64_t nv = (uint64_t)n_workers;
    for (size_t j0 = 0; j0 < n; j0 += 16) {
        uint32_t ctr = (uint32_t)(first_index + j0);
        uint8_t hi[16], lo[32];
        int have_lo = 0;
        wr_rng_aes_block_ref(&k, 0, ctr >> 4, table, hi);
        for (size_t j = j0; j < WR_MIN(n, j0 + 16); j++) {
            size_t e = j - j0;
            uint64_t c = (uint64_t)plane_count(planes, P, nw, j) << 24, r = (uint64_t)hi[e] << 16;
            uint64_t bit = (r | 0xffff) * nv < c;  // every r24 with this hi8 is below
            if (!bit && r * nv < c) {              // the threshold is inside: lo16 decides
                if (!have_lo) {
                    wr_rng_aes_block_ref(&k, 1, ctr >> 3, table, lo);
                    wr_rng_aes_block_ref(&k, 1, (ctr >> 3) + 1, table, lo + 16);
                    have_lo = 1;
                }
                r |= (uint64_t)lo[2 * e + 1] << 8 | lo[2 * e];
                bit = r * nv < c;
            }
            bits_out[j / 64] |= bit << (j % 64);
        }
    }
}

// u = (2c - n) / n, the one formula for the `exact` encoding.
static inline float count_to_u(uint32_t c, int n_workers) {
    float num = (float)(2 * (int32_t)c - n_workers);
    return num / (float)n_workers;
}

static inline float apply_one(float x, float u, float lr, float wd) {
    float t = wd * x;
    t = u + t;
    t = lr * t;
    return x - t;
}

void wr_birder_apply_bits_ref(float *x, const uint64_t *bits, size_t n, float lr, float wd) {
    for (size_t j = 0; j < n; j++) {
        float u = ((bits[j / 64] >> (j % 64)) & 1) ? 1.0f : -1.0f;
        x[j] = apply_one(x[j], u, lr, wd);
    }
}

void wr_birder_apply_planes_ref(float *x, const uint64_t *planes, int n_workers, size_t n, float lr,
                                float wd) {
    int P = wr_birder_planes(n_workers);
    size_t nw = wr_birder_words(n);
    for (size_t j = 0; j < n; j++) {
        float u = count_to_u(plane_count(planes, P, nw, j), n_workers);
        x[j] = apply_one(x[j], u, lr, wd);
    }
}

void wr_birder_decode_bits_ref(const uint64_t *bits, size_t n, float *u) {
    for (size_t j = 0; j < n; j++) u[j] = ((bits[j / 64] >> (j % 64)) & 1) ? 1.0f : -1.0f;
}

void wr_birder_decode_planes_ref(const uint64_t *planes, int n_workers, size_t n, float *u) {
    int P = wr_birder_planes(n_workers);
    size_t nw = wr_birder_words(n);
    for (size_t j = 0; j < n; j++) u[j] = count_to_u(plane_count(planes, P, nw, j), n_workers);
}

// ---- dispatch -------------------------------------------------------------------

#define WR_BIRDER_PICK(fn, ...)                               \
    do {                                                      \
        switch (wr_cpu_level()) {                             \
        case WR_ISA_AVX512: fn##_avx512(__VA_ARGS__); return; \
        case WR_ISA_AVX2: fn##_avx2(__VA_ARGS__); return;     \
        default: fn##_ref(__VA_ARGS__); return;               \
        }                                                     \
    } while (0)

void wr_birder_encode(const float *g, float *m, float *b, size_t n, float beta, wr_rng_key key,
                      uint64_t first_index, uint64_t *bits) {
    WR_BIRDER_PICK(wr_birder_encode, g, m, b, n, beta, key, first_index, bits);
}

void wr_birder_count_planes(const uint64_t *const *bits, int n_workers, size_t n, uint64_t *planes) {
    WR_BIRDER_PICK(wr_birder_count_planes, bits, n_workers, n, planes);
}

void wr_birder_counts(const uint64_t *const *bits, int n_workers, size_t n, uint16_t *counts) {
    wr_birder_counts_ref(bits, n_workers, n, counts);
}

// The requantize kernels also need AES instructions (rng_aes.h): AVX-512 with VAES,
// VBMI and GFNI, AVX2 with VAES, AVX2 with AES-NI on xmm, else the portable reference.
static enum wr_birder_rq_variant rq_pick(void) {
    enum wr_isa lvl = wr_cpu_level();
    if (lvl == WR_ISA_AVX512 && wr_cpu_has_vaes() && wr_cpu_has_avx512vbmi() && wr_cpu_has_gfni())
        return WR_BIRDER_RQ_AVX512;
    if (lvl >= WR_ISA_AVX2 && wr_cpu_has_vaes()) return WR_BIRDER_RQ_AVX2;
    if (lvl >= WR_ISA_AVX2 && wr_cpu_has_aes()) return WR_BIRDER_RQ_AESNI;
    return WR_BIRDER_RQ_REF;
}

const char *wr_birder_requantize_variant(void) {
    static const char *const names[] = {"scalar", "avx2+aesni", "avx2+vaes", "avx512+vaes"};
    return names[rq_pick()];
}

void wr_birder_requantize(const uint64_t *planes, int n_workers, size_t n, wr_rng_key key,
                          uint64_t first_index, uint64_t *bits_out) {
    switch (rq_pick()) {
    case WR_BIRDER_RQ_AVX512:
        wr_birder_requantize_avx512(planes, n_workers, n, key, first_index, bits_out);
        return;
    case WR_BIRDER_RQ_AVX2:
        wr_birder_requantize_avx2(planes, n_workers, n, key, first_index, bits_out);
        return;
    case WR_BIRDER_RQ_AESNI:
        wr_birder_requantize_aesni(planes, n_workers, n, key, first_index, bits_out);
        return;
    default: wr_birder_requantize_ref(planes, n_workers, n, key, first_index, bits_out); return;
    }
}

void wr_birder_aggregate_ref(const uint64_t *const *bits, int n_workers, size_t n, wr_rng_key key,
                             uint64_t first_index, uint64_t *planes, uint64_t *bits_out) {
    wr_birder_count_planes_ref(bits, n_workers, n, planes);
    wr_birder_requantize_ref(planes, n_workers, n, key, first_index, bits_out);
}

// The fused kernels where requantize runs its AVX-512 or AVX2+VAES code; elsewhere
// the two steps.
void wr_birder_aggregate(const uint64_t *const *bits, int n_workers, size_t n, wr_rng_key key,
                         uint64_t first_index, uint64_t *planes, uint64_t *bits_out) {
    switch (rq_pick()) {
    case WR_BIRDER_RQ_AVX512:
        wr_birder_aggregate_avx512(bits, n_workers, n, key, first_index, planes, bits_out);
        return;
    case WR_BIRDER_RQ_AVX2:
        wr_birder_aggregate_avx2(bits, n_workers, n, key, first_index, planes, bits_out);
        return;
    default: break;
    }
    wr_birder_count_planes(bits, n_workers, n, planes);
    wr_birder_requantize(planes, n_workers, n, key, first_index, bits_out);
}

void wr_birder_apply_bits(float *x, const uint64_t *bits, size_t n, float lr, float wd) {
    WR_BIRDER_PICK(wr_birder_apply_bits, x, bits, n, lr, wd);
}

void wr_birder_apply_planes(float *x, const uint64_t *planes, int n_workers, size_t n, float lr, float wd) {
    WR_BIRDER_PICK(wr_birder_apply_planes, x, planes, n_workers, n, lr, wd);
}

void wr_birder_decode_bits(const uint64_t *bits, size_t n, float *u) {
    WR_BIRDER_PICK(wr_birder_decode_bits, bits, n, u);
}

void wr_birder_decode_planes(const uint64_t *planes, int n_workers, size_t n, float *u) {
    WR_BIRDER_PICK(wr_birder_decode_planes, planes, n_workers, n, u);
}
