// test_birder.c — the Birder codec: ALGORITHMS.md 1.6 worked examples, unbiasedness
// of Q, key behaviour of the random bits, the exact bit layout, vector == scalar bit
// for bit at every ISA level the CPU has, and count/plane/decode/apply round trips.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <wmmintrin.h>

#include "aes_soft.h"
#include "birder.h"
#include "cpu.h"
#include "rng_aes.h"
#include "wr_common.h"

static int quick(void) {
    const char *e = getenv("WREN_TEST_QUICK");
    return e && e[0] && strcmp(e, "0") != 0;
}

// Small deterministic generator for test inputs (independent of wr_rng).
static uint64_t xs_state = 88172645463325252ull;
static uint64_t xs64(void) {
    xs_state ^= xs_state << 13;
    xs_state ^= xs_state >> 7;
    xs_state ^= xs_state << 17;
    return xs_state;
}
static float unit_float(void) { return (float)(xs64() >> 40) / 16777216.0f; }  // [0,1)

// Random float with the awkward cases mixed in: zeros, denormals, huge, inf, NaN.
static float nasty_float(void) {
    uint32_t k = (uint32_t)(xs64() % 100);
    float s = (xs64() & 1) ? -1.0f : 1.0f;
    if (k < 10) return s * 0.0f;
    if (k < 16) {
        uint32_t u = (uint32_t)(xs64() & 0x007fffffu) | 1u;  // denormal
        float f;
        memcpy(&f, &u, 4);
        return s * f;
    }
    if (k < 21) return s * 1e30f * (1.0f + unit_float());
    if (k < 23) return s * INFINITY;
    if (k < 24) return NAN;
    if (k < 30) return s * 1e-30f * unit_float();
    return s * (unit_float() * 4.0f);
}

static int same_float(float a, float b) {
    if (a != a && b != b) return 1;  // NaN payloads are not part of the contract
    uint32_t x, y;
    memcpy(&x, &a, 4);
    memcpy(&y, &b, 4);
    return x == y;
}

static void assert_same_floats(const float *a, const float *b, size_t n, const char *what) {
    for (size_t j = 0; j < n; j++) {
        if (!same_float(a[j], b[j])) {
            fail_msg("%s: element %zu differs: %a vs %a", what, j, (double)a[j], (double)b[j]);
        }
    }
}

static int get_bit(const uint64_t *bits, size_t j) { return (int)((bits[j / 64] >> (j % 64)) & 1); }

// Asserts |observed fraction - p| <= 4 sigma (+ the 2^-23 grain of the thresholds).
static void assert_fraction(size_t ones, size_t total, double p, const char *what) {
    double frac = (double)ones / (double)total;
    double sigma = sqrt(p * (1.0 - p) / (double)total);
    double tol = 4.0 * sigma + 1.0 / 8388608.0;
    if (fabs(frac - p) > tol)
        fail_msg("%s: fraction %.7f, expected %.7f +- %.7f (n=%zu)", what, frac, p, tol, total);
}

static size_t popcount_bits(const uint64_t *bits, size_t n) {
    size_t s = 0;
    for (size_t w = 0; w < wr_birder_words(n); w++) s += (size_t)__builtin_popcountll(bits[w]);
    return s;
}

// Encodes with beta = 1 so m and b stay as set and z = m/b exactly.
static void encode_fixed_z(float z, size_t n, wr_rng_key key, uint64_t first, uint64_t *bits) {
    float *g = wr_alloc_vec(n * 4), *m = wr_alloc_vec(n * 4), *b = wr_alloc_vec(n * 4);
    for (size_t j = 0; j < n; j++) {
        g[j] = 0.0f;
        m[j] = z;
        b[j] = 1.0f;
    }
    wr_birder_encode(g, m, b, n, 1.0f, key, first, bits);
    for (size_t j = 0; j < n; j++) assert_true(m[j] == z && b[j] == 1.0f);
    free(g);
    free(m);
    free(b);
}

// ---- ALGORITHMS.md 1.6 -------------------------------------------------------------

static void test_planes_count(void **state) {
    (void)state;
    static const int nw[] = {1, 2, 3, 4, 7, 8, 15, 16, 64, 255, 256, 65535};
    static const int want[] = {1, 2, 2, 3, 3, 4, 4, 5, 7, 8, 9, 16};
    for (size_t i = 0; i < sizeof nw / sizeof nw[0]; i++) assert_int_equal(wr_birder_planes(nw[i]), want[i]);
    assert_int_equal(wr_birder_words(0), 0);
    assert_int_equal(wr_birder_words(1), 1);
    assert_int_equal(wr_birder_words(64), 1);
    assert_int_equal(wr_birder_words(65), 2);
}

// t=1 g=0.2 (z = 1, always +1), then t=2 g=-0.4: m=-0.022, b=0.058, z=-0.3793103,
// P(+1) = 0.3103448, checked over many coordinates with the same history.
static void test_worked_example_two_steps(void **state) {
    (void)state;
    size_t n = quick() ? 200000 : 1000000;
    float *g = wr_alloc_vec(n * 4), *m = wr_alloc_vec(n * 4), *b = wr_alloc_vec(n * 4);
    uint64_t *bits = wr_alloc_vec(wr_birder_words(n) * 8);
    for (size_t j = 0; j < n; j++) g[j] = 0.2f;
    wr_birder_encode(g, m, b, n, 0.9f, wr_rng_key_make(7, 0, 1), 0, bits);
    assert_float_equal(m[0], 0.02f, 1e-7f);
    assert_float_equal(b[0], 0.02f, 1e-7f);
    assert_int_equal(popcount_bits(bits, n), n);

    for (size_t j = 0; j < n; j++) g[j] = -0.4f;
    wr_birder_encode(g, m, b, n, 0.9f, wr_rng_key_make(7, 0, 2), 0, bits);
    assert_float_equal(m[0], -0.022f, 1e-7f);
    assert_float_equal(b[0], 0.058f, 1e-7f);
    assert_float_equal(m[0] / b[0], -0.3793103f, 1e-6f);
    for (size_t j = 1; j < n; j++) assert_true(m[j] == m[0] && b[j] == b[0]);
    assert_fraction(popcount_bits(bits, n), n, 0.3103448, "t=2 P(+1)");
    free(g);
    free(m);
    free(b);
    free(bits);
}

// [+,-,-,+,+,+,-,+] packs LSB first into 0xB9; decode gives the signs back.
static void test_packing_example(void **state) {
    (void)state;
    static const float signs[8] = {1, -1, -1, 1, 1, 1, -1, 1};
    float g[8] = {0}, m[8], b[8], u[8];
    for (int j = 0; j < 8; j++) {
        m[j] = signs[j];
        b[j] = 1.0f;
    }
    uint64_t bits[1] = {~0ull};
    wr_birder_encode(g, m, b, 8, 1.0f, wr_rng_key_make(1, 2, 3), 0, bits);
    assert_int_equal(bits[0], 0xB9);
    wr_birder_decode_bits(bits, 8, u);
    for (int j = 0; j < 8; j++) assert_true(u[j] == signs[j]);
}

// Bits {+1,+1,-1,+1} from 4 workers: c = 3, u = 0.5 (planes, counts, decode, apply).
static void test_aggregation_example(void **state) {
    (void)state;
    uint64_t w0[1] = {1}, w1[1] = {1}, w2[1] = {0}, w3[1] = {1};
    const uint64_t *in[4] = {w0, w1, w2, w3};
    int P = wr_birder_planes(4);
    assert_int_equal(P, 3);
    uint64_t planes[3];
    wr_birder_count_planes(in, 4, 1, planes);
    assert_int_equal(planes[0], 1);  // 3 = 0b011
    assert_int_equal(planes[1], 1);
    assert_int_equal(planes[2], 0);
    uint16_t c[1];
    wr_birder_counts(in, 4, 1, c);
    assert_int_equal(c[0], 3);
    float u[1];
    wr_birder_decode_planes(planes, 4, 1, u);
    assert_true(u[0] == 0.5f);
    float x[1] = {2.0f};
    wr_birder_apply_planes(x, planes, 4, 1, 0.5f, 0.0f);
    assert_true(x[0] == 1.75f);
}

// Build planes where every element has count c (n_workers vectors: c all-ones).
static void fill_count(int n_workers, int c, size_t n, uint64_t **vecs, uint64_t *planes) {
    size_t nw = wr_birder_words(n);
    for (int i = 0; i < n_workers; i++)
        for (size_t w = 0; w < nw; w++) vecs[i][w] = i < c ? ~0ull : 0;
    wr_birder_count_planes((const uint64_t *const *)vecs, n_workers, n, planes);
}

// Node re-quantization of 8 signs {+,+,-,+,+,-,+,+}: S = 4, S/G = 0.5, P(q'=+1)=0.75.
// In count terms: n = 8, c = 6 plus signs, u = (2*6-8)/8 = 0.5. Also every c of
// small n is unbiased, and c = 0 / c = n are deterministic.
static void test_requantize_example_and_sweep(void **state) {
    (void)state;
    size_t n = quick() ? 200000 : 1000000;
    size_t nw = wr_birder_words(n);
    uint64_t *vecs[8], *planes = wr_alloc_vec(4 * nw * 8), *out = wr_alloc_vec(nw * 8);
    for (int i = 0; i < 8; i++) vecs[i] = wr_alloc_vec(nw * 8);
    // The example's signs, element 0 only, as the shard sees them.
    static const int signs[8] = {1, 1, -1, 1, 1, -1, 1, 1};
    for (int i = 0; i < 8; i++) vecs[i][0] = signs[i] > 0;
    uint16_t c0[1];
    wr_birder_counts((const uint64_t *const *)vecs, 8, 1, c0);
    assert_int_equal(c0[0], 6);
    float u0[1];
    uint64_t pl[4];
    wr_birder_count_planes((const uint64_t *const *)vecs, 8, 1, pl);
    wr_birder_decode_planes(pl, 8, 1, u0);
    assert_true(u0[0] == 0.5f);

    fill_count(8, 6, n, vecs, planes);
    wr_birder_requantize(planes, 8, n, wr_rng_key_make(5, 0xB0000000u, 9), 0, out);
    assert_fraction(popcount_bits(out, n), n, 0.75, "requantize n=8 c=6");

    static const int ns[] = {1, 3, 7};
    size_t ns_n = quick() ? 50000 : 200000;
    for (size_t k = 0; k < 3; k++)
        for (int c = 0; c <= ns[k]; c++) {
            fill_count(ns[k], c, ns_n, vecs, planes);
            wr_birder_requantize(planes, ns[k], ns_n, wr_rng_key_make(5, (uint64_t)c, 10 + k), 64, out);
            size_t ones = popcount_bits(out, ns_n);
            if (c == 0) assert_int_equal(ones, 0);
            if (c == ns[k]) assert_int_equal(ones, ns_n);
            assert_fraction(ones, ns_n, (double)c / ns[k], "requantize sweep");
        }
    for (int i = 0; i < 8; i++) free(vecs[i]);
    free(planes);
    free(out);
}

// ---- statistics of Q ---------------------------------------------------------------

// Fraction of +1 within 4 sigma of (1+z)/2 on a z grid including -1, 0 and 1.
static void test_unbiased_grid(void **state) {
    (void)state;
    size_t n = quick() ? 200000 : 1000000;
    uint64_t *bits = wr_alloc_vec(wr_birder_words(n) * 8);
    float zs[24];
    int nz = 0;
    for (int i = 0; i <= 16; i++) zs[nz++] = -1.0f + 0.125f * (float)i;
    zs[nz++] = -0.3793103f;
    zs[nz++] = 1e-7f;
    zs[nz++] = -1e-7f;
    zs[nz++] = 0.999f;
    zs[nz++] = -0.999f;
    for (int i = 0; i < nz; i++) {
        encode_fixed_z(zs[i], n, wr_rng_key_make(11, 3, (uint64_t)i), 64 * (uint64_t)i, bits);
        size_t ones = popcount_bits(bits, n);
        if (zs[i] == 1.0f) assert_int_equal(ones, n);
        if (zs[i] == -1.0f) assert_int_equal(ones, 0);
        char what[64];
        snprintf(what, sizeof what, "encode z=%g", (double)zs[i]);
        assert_fraction(ones, n, (1.0 + zs[i]) / 2.0, what);
    }
    free(bits);
}

// Same key -> same bits; other keys (rank, step, seed) -> agreement ~ 0.5;
// consecutive counters uncorrelated.
static void test_keys_and_independence(void **state) {
    (void)state;
    size_t n = quick() ? 200000 : 1000000;
    size_t nw = wr_birder_words(n);
    uint64_t *a = wr_alloc_vec(nw * 8), *a2 = wr_alloc_vec(nw * 8), *o = wr_alloc_vec(nw * 8);
    wr_rng_key ka = wr_rng_key_make(42, 1, 100);
    encode_fixed_z(0.0f, n, ka, 0, a);
    encode_fixed_z(0.0f, n, ka, 0, a2);
    assert_memory_equal(a, a2, nw * 8);
    wr_rng_key others[3] = {wr_rng_key_make(42, 2, 100), wr_rng_key_make(42, 1, 101),
                            wr_rng_key_make(43, 1, 100)};
    for (int k = 0; k < 3; k++) {
        encode_fixed_z(0.0f, n, others[k], 0, o);
        size_t agree = 0;
        for (size_t w = 0; w < nw; w++) agree += (size_t)__builtin_popcountll(~(a[w] ^ o[w]));
        agree -= nw * 64 - n;  // tail bits are zero in both
        assert_fraction(agree, n, 0.5, "agreement of two keys");
    }
    // Consecutive counters: P(bit j == bit j+1) = 0.5, and the shifted-by-64 window
    // (same element index, next word) agrees half the time too.
    size_t same = 0, same64 = 0;
    for (size_t j = 0; j + 1 < n; j++) same += get_bit(a, j) == get_bit(a, j + 1);
    for (size_t j = 0; j + 64 < n; j++) same64 += get_bit(a, j) == get_bit(a, j + 64);
    assert_fraction(same, n - 1, 0.5, "consecutive counters");
    assert_fraction(same64, n - 64, 0.5, "counters 64 apart");
    // The global index is the counter: encoding [64, n) on its own gives the same bits.
    encode_fixed_z(0.0f, n - 64, ka, 64, o);
    assert_memory_equal(o, a + 1, (wr_birder_words(n - 64) - 1) * 8);
    free(a);
    free(a2);
    free(o);
}

// ---- layout --------------------------------------------------------------------------

// Element j -> word j/64 bit j%64, tail bits zero, and readers ignore garbage tails.
static void test_bit_layout(void **state) {
    (void)state;
    static const size_t ns[] = {1, 7, 63, 64, 65, 127, 128, 130, 1000};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        size_t n = ns[k], nw = wr_birder_words(n);
        float *g = calloc(n, 4), *m = calloc(n, 4), *b = calloc(n, 4), *u = calloc(n, 4);
        uint64_t *bits = malloc(nw * 8), *dirty = malloc(nw * 8);
        int *want = calloc(n, sizeof(int));
        for (size_t j = 0; j < n; j++) {
            want[j] = (int)(xs64() & 1);
            m[j] = want[j] ? 1.0f : -1.0f;
            b[j] = 1.0f;
        }
        memset(bits, 0xA5, nw * 8);
        wr_birder_encode(g, m, b, n, 1.0f, wr_rng_key_make(1, 1, 1), 128, bits);
        for (size_t j = 0; j < n; j++) assert_int_equal((bits[j / 64] >> (j % 64)) & 1, want[j]);
        if (n % 64) assert_int_equal(bits[nw - 1] >> (n % 64), 0);

        // Garbage past n is ignored by every reader.
        memcpy(dirty, bits, nw * 8);
        if (n % 64) dirty[nw - 1] |= ~0ull << (n % 64);
        wr_birder_decode_bits(dirty, n, u);
        for (size_t j = 0; j < n; j++) assert_true(u[j] == (want[j] ? 1.0f : -1.0f));
        const uint64_t *in[3] = {dirty, dirty, bits};
        uint64_t planes[2 * 16], rq[16];
        wr_birder_count_planes(in, 3, n, planes);
        for (size_t j = 0; j < n; j++) {
            int c = get_bit(planes, j) | get_bit(planes + nw, j) << 1;
            assert_int_equal(c, want[j] ? 3 : 0);
        }
        if (n % 64) {
            assert_int_equal(planes[nw - 1] >> (n % 64), 0);
            assert_int_equal(planes[2 * nw - 1] >> (n % 64), 0);
        }
        memset(rq, 0xA5, sizeof rq);
        wr_birder_requantize(planes, 3, n, wr_rng_key_make(3, 3, 3), 64, rq);
        for (size_t j = 0; j < n; j++) assert_int_equal(get_bit(rq, j), want[j]);  // c = 0 or n
        if (n % 64) assert_int_equal(rq[nw - 1] >> (n % 64), 0);
        free(g);
        free(m);
        free(b);
        free(u);
        free(bits);
        free(dirty);
        free(want);
    }
}

// ---- every ISA level == scalar reference ------------------------------------------

static const size_t eq_sizes[] = {1, 63, 64, 65, 200, 1000, 4099, 1000003};

// Runs `body` for each ISA level the CPU (and WREN_SIMD) allows; returns how many ran.
static int levels_available(int *levels) {
    int k = 0;
    for (int lvl = WR_ISA_SCALAR; lvl <= (int)wr_cpu_max_level(); lvl++) {
        wr_cpu_force_level(lvl);
        if ((int)wr_cpu_level() == lvl)
            levels[k++] = lvl;
        else
            print_message("level %s capped by WREN_SIMD, not tested\n", wr_isa_name(lvl));
    }
    wr_cpu_force_level(-1);
    return k;
}

// n = 0 touches no memory at any level (NULL pointers are fine).
static void test_empty(void **state) {
    (void)state;
    int levels[3], nl = levels_available(levels);
    for (int l = 0; l < nl; l++) {
        wr_cpu_force_level(levels[l]);
        wr_birder_encode(NULL, NULL, NULL, 0, 0.9f, wr_rng_key_make(1, 1, 1), 0, NULL);
        wr_birder_count_planes(NULL, 3, 0, NULL);
        wr_birder_counts(NULL, 3, 0, NULL);
        wr_birder_requantize(NULL, 3, 0, wr_rng_key_make(1, 1, 1), 0, NULL);
        wr_birder_aggregate(NULL, 3, 0, wr_rng_key_make(1, 1, 1), 0, NULL, NULL);
        wr_birder_apply_bits(NULL, NULL, 0, 0.1f, 0.1f);
        wr_birder_apply_planes(NULL, NULL, 3, 0, 0.1f, 0.1f);
        wr_birder_decode_bits(NULL, 0, NULL);
        wr_birder_decode_planes(NULL, 3, 0, NULL);
        wr_cpu_force_level(-1);
    }
}

static void test_encode_vector_equals_scalar(void **state) {
    (void)state;
    int levels[3], nl = levels_available(levels);
    static const float betas[] = {0.9f, 0.0f, 1.0f, 0.999f};
    for (size_t s = 0; s < sizeof eq_sizes / sizeof eq_sizes[0]; s++) {
        size_t n = eq_sizes[s], nw = wr_birder_words(n);
        float *g = wr_alloc_vec(n * 4), *m0 = wr_alloc_vec(n * 4), *b0 = wr_alloc_vec(n * 4);
        float *mr = wr_alloc_vec(n * 4), *br = wr_alloc_vec(n * 4);
        float *mv = wr_alloc_vec(n * 4), *bv = wr_alloc_vec(n * 4);
        uint64_t *bitr = wr_alloc_vec(nw * 8), *bitv = wr_alloc_vec(nw * 8);
        for (size_t j = 0; j < n; j++) {
            g[j] = nasty_float();
            m0[j] = nasty_float();
            // b: mostly |m| or more (the invariant), sometimes 0, negative or arbitrary.
            uint32_t k = (uint32_t)(xs64() % 10);
            b0[j] = k == 0 ? 0.0f : k == 1 ? nasty_float() : fabsf(m0[j]) * (1.0f + unit_float());
            if (j % 97 == 5) m0[j] = b0[j];  // z exactly +-1 after beta = 1
        }
        for (size_t bi = 0; bi < 4; bi++) {
            // Counters near the 2^32 wrap for one beta.
            uint64_t first = bi == 3 ? (1ull << 32) - 64 * 5 : 64 * (uint64_t)(xs64() % 1000);
            wr_rng_key key = wr_rng_key_make(s, bi, 77);
            memcpy(mr, m0, n * 4);
            memcpy(br, b0, n * 4);
            memset(bitr, 0x5a, nw * 8);
            wr_birder_encode_ref(g, mr, br, n, betas[bi], key, first, bitr);
            for (int l = 0; l < nl; l++) {
                wr_cpu_force_level(levels[l]);
                memcpy(mv, m0, n * 4);
                memcpy(bv, b0, n * 4);
                memset(bitv, 0xa5, nw * 8);
                wr_birder_encode(g, mv, bv, n, betas[bi], key, first, bitv);
                wr_cpu_force_level(-1);
                assert_same_floats(mr, mv, n, "encode m");
                assert_same_floats(br, bv, n, "encode b");
                assert_memory_equal(bitr, bitv, nw * 8);
            }
        }
        free(g);
        free(m0);
        free(b0);
        free(mr);
        free(br);
        free(mv);
        free(bv);
        free(bitr);
        free(bitv);
    }
}

static uint64_t *random_bits(size_t n, int garbage_tail) {
    size_t nw = wr_birder_words(n);
    uint64_t *v = wr_alloc_vec(nw * 8);
    // Skewed densities so counts cover the whole range.
    uint64_t dens = xs64() % 4;
    for (size_t w = 0; w < nw; w++) {
        uint64_t x = xs64();
        if (dens == 1) x &= xs64();
        if (dens == 2) x |= xs64();
        if (dens == 3) x = (xs64() % 8 == 0) ? ~0ull : 0;
        v[w] = x;
    }
    if (!garbage_tail && n % 64) v[nw - 1] &= (1ull << (n % 64)) - 1;
    return v;
}

// Counts, planes, both decoders, requantize and both apply kernels: every level ==
// reference, planes == counts, decoders == their formulas, apply == x - lr*(u + wd*x).
static void check_aggregation(int n_workers, size_t n, const int *levels, int nl) {
    size_t nw = wr_birder_words(n);
    int P = wr_birder_planes(n_workers);
    uint64_t **vecs = malloc(sizeof(uint64_t *) * (size_t)n_workers);
    for (int i = 0; i < n_workers; i++) {
        vecs[i] = random_bits(n, 1);
        vecs[i][0] = ~0ull;  // c = n_workers on word 0 (every plane used), c = 0 on word 1
        if (nw > 1) vecs[i][1] = 0;
    }
    const uint64_t *const *in = (const uint64_t *const *)vecs;
    uint16_t *counts = malloc(n * 2);
    uint64_t *pr = wr_alloc_vec((size_t)P * nw * 8), *pv = wr_alloc_vec((size_t)P * nw * 8);
    uint64_t *qr = wr_alloc_vec(nw * 8), *qv = wr_alloc_vec(nw * 8);
    float *ur = wr_alloc_vec(n * 4), *uv = wr_alloc_vec(n * 4);
    float *x0 = wr_alloc_vec(n * 4), *xr = wr_alloc_vec(n * 4), *xv = wr_alloc_vec(n * 4);
    for (size_t j = 0; j < n; j++) x0[j] = (xs64() % 3 == 0) ? nasty_float() : unit_float() - 0.5f;

    wr_birder_counts_ref(in, n_workers, n, counts);
    wr_birder_count_planes_ref(in, n_workers, n, pr);
    for (size_t j = 0; j < n; j++) {
        unsigned c = 0;
        for (int p = 0; p < P; p++) c |= (unsigned)get_bit(pr + (size_t)p * nw, j) << p;
        if (c != counts[j])
            fail_msg("n_workers %d element %zu: plane count %u, count %u", n_workers, j, c, counts[j]);
        assert_true(counts[j] <= n_workers);
    }
    if (n % 64)
        for (int p = 0; p < P; p++) assert_int_equal(pr[(size_t)p * nw + nw - 1] >> (n % 64), 0);

    // Decoders against their formulas.
    wr_birder_decode_planes_ref(pr, n_workers, n, ur);
    for (size_t j = 0; j < n; j++) {
        float want = (float)(2 * (int)counts[j] - n_workers) / (float)n_workers;
        assert_true(same_float(ur[j], want));
    }
    const float lr = 0.001f * (1.0f + unit_float()), wd = (xs64() & 1) ? 0.0f : 0.01f;
    memcpy(xr, x0, n * 4);
    wr_birder_apply_planes_ref(xr, pr, n_workers, n, lr, wd);
    for (size_t j = 0; j < n; j++) {
        float t = wd * x0[j];
        t = ur[j] + t;
        t = lr * t;
        float want = x0[j] - t;
        assert_true(same_float(xr[j], want));
    }
    wr_birder_requantize_ref(pr, n_workers, n, wr_rng_key_make(9, 0xB0000000u + 1, 3), 128, qr);
    if (n % 64) assert_int_equal(qr[nw - 1] >> (n % 64), 0);
    for (size_t j = 0; j < n; j++) {
        if (counts[j] == 0) assert_int_equal(get_bit(qr, j), 0);
        if (counts[j] == n_workers) assert_int_equal(get_bit(qr, j), 1);
    }

    for (int l = 0; l < nl; l++) {
        wr_cpu_force_level(levels[l]);
        memset(pv, 0xa5, (size_t)P * nw * 8);
        wr_birder_count_planes(in, n_workers, n, pv);
        assert_memory_equal(pr, pv, (size_t)P * nw * 8);

        memset(qv, 0xa5, nw * 8);
        wr_birder_requantize(pr, n_workers, n, wr_rng_key_make(9, 0xB0000000u + 1, 3), 128, qv);
        assert_memory_equal(qr, qv, nw * 8);

        wr_birder_decode_planes(pr, n_workers, n, uv);
        assert_same_floats(ur, uv, n, "decode_planes");
        memcpy(xv, x0, n * 4);
        wr_birder_apply_planes(xv, pr, n_workers, n, lr, wd);
        assert_same_floats(xr, xv, n, "apply_planes");

        // The 1-bit path on the requantized bits, with a dirty tail.
        uint64_t *dirty = qv;
        if (n % 64) dirty[nw - 1] |= ~0ull << (n % 64);
        wr_birder_decode_bits(dirty, n, uv);
        for (size_t j = 0; j < n; j++) assert_true(uv[j] == (get_bit(qr, j) ? 1.0f : -1.0f));
        memcpy(xv, x0, n * 4);
        wr_birder_apply_bits(xv, dirty, n, lr, wd);
        for (size_t j = 0; j < n; j++) {
            float t = wd * x0[j];
            t = uv[j] + t;
            t = lr * t;
            float want = x0[j] - t;
            if (!same_float(xv[j], want))
                fail_msg("apply_bits level %d element %zu: %a vs %a", levels[l], j, (double)xv[j],
                         (double)want);
        }
        wr_cpu_force_level(-1);
    }
    // Reference apply_bits == the vector ones (checked above against the formula).
    memcpy(xr, x0, n * 4);
    wr_birder_apply_bits_ref(xr, qr, n, lr, wd);
    wr_birder_decode_bits_ref(qr, n, ur);
    for (size_t j = 0; j < n; j++) {
        float t = wd * x0[j];
        t = ur[j] + t;
        t = lr * t;
        assert_true(same_float(xr[j], x0[j] - t));
    }

    for (int i = 0; i < n_workers; i++) free(vecs[i]);
    free(vecs);
    free(counts);
    free(pr);
    free(pv);
    free(qr);
    free(qv);
    free(ur);
    free(uv);
    free(x0);
    free(xr);
    free(xv);
}

static void test_aggregation_roundtrip_all_levels(void **state) {
    (void)state;
    int levels[3], nl = levels_available(levels);
    // 300 and 1100 exercise more than 8 planes (16-bit count paths).
    static const int workers[] = {1, 2, 3, 4, 7, 8, 16, 31, 32, 64, 255, 300, 1100};
    for (size_t k = 0; k < sizeof workers / sizeof workers[0]; k++)
        for (size_t s = 0; s < sizeof eq_sizes / sizeof eq_sizes[0]; s++) {
            size_t n = eq_sizes[s];
            // Keep the big sweep moderate: 255 vectors of 1M bits is 32 MB.
            if (n > 100000 && (quick() || workers[k] > 64)) n = 100003;
            if (n > 5000 && workers[k] > 255) n = 4099;
            check_aggregation(workers[k], n, levels, nl);
        }
}

// ---- the requantize generator (rng_aes.h) -------------------------------------------

static void hex16(const char *hex, uint8_t out[16]) {
    for (int i = 0; i < 16; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

__attribute__((target("aes"))) static void aesenc_hw(uint8_t s[16], const uint8_t rk[16]) {
    __m128i x = _mm_aesenc_si128(_mm_loadu_si128((const __m128i *)s), _mm_loadu_si128((const __m128i *)rk));
    _mm_storeu_si128((__m128i *)s, x);
}

// FIPS-197: S-box values (5.1.1: {53} -> {ed}) and rounds 1 and 2 of the Appendix B
// cipher example (state at the start of round r, round key r -> start of round r+1),
// for the byte-wise and the table round; the two agree on random states, and the
// byte-wise one agrees with AES-NI where the CPU has it.
static void test_aes_round_fips197(void **state) {
    (void)state;
    uint8_t sbox[256];
    wr_aes_sbox_make(sbox);
    assert_int_equal(sbox[0x00], 0x63);
    assert_int_equal(sbox[0x01], 0x7c);
    assert_int_equal(sbox[0x53], 0xed);
    assert_int_equal(sbox[0xff], 0x16);
    static const char *const vec[2][3] = {
        {"193de3bea0f4e22b9ac68d2ae9f84808", "a0fafe1788542cb123a339392a6c7605",
         "a49c7ff2689f352b6b5bea43026a5049"},
        {"a49c7ff2689f352b6b5bea43026a5049", "f2c295f27a96b9435935807a7359f67f",
         "aa8f5f0361dde3ef82d24ad26832469a"},
    };
    uint32_t table[256];
    wr_aes_table_make(sbox, table);
    for (int r = 0; r < 2; r++) {
        uint8_t st[16], st2[16], rk[16], want[16];
        hex16(vec[r][0], st);
        hex16(vec[r][1], rk);
        hex16(vec[r][2], want);
        memcpy(st2, st, 16);
        wr_aes_enc_round(st, rk, sbox);
        assert_memory_equal(st, want, 16);
        wr_aes_enc_round_table(st2, rk, table);
        assert_memory_equal(st2, want, 16);
    }
    // The table round == the byte-wise one on random states.
    for (int t = 0; t < 2000; t++) {
        uint8_t a[16], b[16], rk[16];
        for (int i = 0; i < 16; i++) {
            a[i] = (uint8_t)xs64();
            rk[i] = (uint8_t)xs64();
        }
        memcpy(b, a, 16);
        wr_aes_enc_round(a, rk, sbox);
        wr_aes_enc_round_table(b, rk, table);
        assert_memory_equal(a, b, 16);
    }
    // Several table rounds in a row == that many single rounds.
    for (int t = 0; t < 200; t++) {
        uint8_t a[16], b[16], rk[5][16];
        for (int i = 0; i < 16; i++) a[i] = (uint8_t)xs64();
        for (int r = 0; r < 5; r++)
            for (int i = 0; i < 16; i++) rk[r][i] = (uint8_t)xs64();
        memcpy(b, a, 16);
        for (int r = 0; r < 5; r++) wr_aes_enc_round(a, rk[r], sbox);
        wr_aes_enc_rounds_table(b, (const uint8_t(*)[16])rk, 5, table);
        assert_memory_equal(a, b, 16);
    }
    if (!wr_cpu_has_aes()) {
        print_message("no AES-NI: hardware comparison skipped\n");
        return;
    }
    for (int t = 0; t < 2000; t++) {
        uint8_t a[16], b[16], rk[16];
        for (int i = 0; i < 16; i++) {
            a[i] = (uint8_t)xs64();
            rk[i] = (uint8_t)xs64();
        }
        memcpy(b, a, 16);
        wr_aes_enc_round(a, rk, sbox);
        aesenc_hw(b, rk);
        assert_memory_equal(a, b, 16);
    }
}

// The generator's values are pinned (a change would silently change every replica's
// 1-bit broadcast), and requantize_ref follows the rng_aes.h definition element by
// element, including counters that wrap past 2^32.
static void test_rng_aes_definition(void **state) {
    (void)state;
    wr_rng_key key = wr_rng_key_make(1, 0xB0000000u, 7);
    static const uint32_t golden[8] = {0x038811u, 0x6271e7u, 0x822f62u, 0x4cb1f8u,
                                       0xea97e0u, 0x2a65fau, 0xe95ff8u, 0x244577u};
    static const uint32_t ctrs[8] = {0, 1, 15, 16, 63, 64, 0x12345678u, 0xffffffffu};
    for (int i = 0; i < 8; i++)
        if (wr_rng_aes_r24(key, ctrs[i]) != golden[i])
            fail_msg("r24 of counter %#x: %#x, pinned %#x", ctrs[i], wr_rng_aes_r24(key, ctrs[i]), golden[i]);
    static const uint64_t firsts[] = {0, 64, (1ull << 32) - 128, (1ull << 32) + 192, 1ull << 40};
    static const int workers[] = {5, 16, 1000};
    size_t n = 197;
    for (size_t f = 0; f < sizeof firsts / sizeof firsts[0]; f++)
        for (size_t k = 0; k < 3; k++) {
            int nwk = workers[k], P = wr_birder_planes(nwk);
            size_t nw = wr_birder_words(n);
            uint64_t *planes = wr_alloc_vec((size_t)P * nw * 8), out[4];
            for (size_t i = 0; i < (size_t)P * nw; i++) planes[i] = xs64();
            wr_birder_requantize_ref(planes, nwk, n, key, firsts[f], out);
            for (size_t j = 0; j < n; j++) {
                uint64_t c = 0;
                for (int p = 0; p < P; p++) c |= (uint64_t)get_bit(planes + (size_t)p * nw, j) << p;
                uint64_t r = wr_rng_aes_r24(key, (uint32_t)(firsts[f] + j));
                int want = r * (uint64_t)nwk < c << 24;
                if (get_bit(out, j) != want)
                    fail_msg("first %#llx n_workers %d element %zu: bit %d, definition %d",
                             (unsigned long long)firsts[f], nwk, j, get_bit(out, j), want);
            }
            free(planes);
        }
}

typedef void (*requant_fn)(const uint64_t *, int, size_t, wr_rng_key, uint64_t, uint64_t *);

// Every requantize kernel this CPU can run == the reference, bit for bit: random
// planes (counts past n_workers included), n_workers around every path boundary,
// lengths with tails and across chunk boundaries, counters that wrap past 2^32.
static void test_requantize_kernels_equal_ref(void **state) {
    (void)state;
    struct {
        const char *name;
        requant_fn fn;
        int ok;
    } ks[3] = {
        {"avx512", wr_birder_requantize_avx512,
         wr_cpu_max_level() >= WR_ISA_AVX512 && wr_cpu_has_vaes() && wr_cpu_has_avx512vbmi() &&
             wr_cpu_has_gfni()},
        {"avx2", wr_birder_requantize_avx2, wr_cpu_max_level() >= WR_ISA_AVX2 && wr_cpu_has_vaes()},
        {"aesni", wr_birder_requantize_aesni, wr_cpu_max_level() >= WR_ISA_AVX2 && wr_cpu_has_aes()},
    };
    for (int k = 0; k < 3; k++)
        if (!ks[k].ok) print_message("requantize_%s: not supported here, not tested\n", ks[k].name);
    static const int workers[] = {1,  2,  3,  4,  5,   7,   8,   9,   15,  16,  17,   31,
                                  32, 33, 63, 64, 100, 127, 128, 129, 255, 256, 1000, 65535};
    static const size_t lens[] = {1, 13, 64, 65, 1000, 16384, 16447, 70001};
    static const uint64_t firsts[] = {0, 64, 4096, (1ull << 32) - 640, 5ull << 32};
    for (size_t w = 0; w < sizeof workers / sizeof workers[0]; w++)
        for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) {
            int nwk = workers[w], P = wr_birder_planes(nwk);
            size_t n = lens[l], nw = wr_birder_words(n);
            if (quick() && n > 20000) continue;
            uint64_t first = firsts[(w + l) % 5];
            wr_rng_key key = wr_rng_key_make(xs64(), 0xB0000000u + w, l);
            uint64_t *planes = wr_alloc_vec((size_t)P * nw * 8);
            for (size_t i = 0; i < (size_t)P * nw; i++) planes[i] = xs64() & xs64();  // skewed to low counts
            uint64_t *want = wr_alloc_vec(nw * 8), *got = wr_alloc_vec(nw * 8);
            wr_birder_requantize_ref(planes, nwk, n, key, first, want);
            for (int k = 0; k < 3; k++) {
                if (!ks[k].ok) continue;
                memset(got, 0xa5, nw * 8);
                ks[k].fn(planes, nwk, n, key, first, got);
                for (size_t i = 0; i < nw; i++)
                    if (got[i] != want[i])
                        fail_msg("requantize_%s n_workers %d n %zu first %#llx word %zu: %#llx, ref %#llx",
                                 ks[k].name, nwk, n, (unsigned long long)first, i, (unsigned long long)got[i],
                                 (unsigned long long)want[i]);
            }
            free(planes);
            free(want);
            free(got);
        }
}

// One aggregate case: n_workers k, n elements from counter `first`, every variant
// this CPU runs (the fused kernel directly, the dispatch at every level) == the
// scalar reference bit for bit. planes is scratch: filled with garbage beforehand.
static void aggregate_case(int k, size_t n, uint64_t first, const int *levels, int nl) {
    size_t nw = wr_birder_words(n), pw = (size_t)wr_birder_planes(k) * nw;
    uint64_t **v = calloc((size_t)k, sizeof *v);
    for (int i = 0; i < k; i++) v[i] = random_bits(n, 1);
    const uint64_t *const *cv = (const uint64_t *const *)v;
    uint64_t *planes = wr_alloc_vec(pw * 8 + 8), *want = wr_alloc_vec(nw * 8 + 8),
             *got = wr_alloc_vec(nw * 8 + 8);
    wr_rng_key key = wr_rng_key_make(5, 0xB0000003u, (uint64_t)k * 131 + n);
    wr_birder_aggregate_ref(cv, k, n, key, first, planes, want);
    int f512 = wr_cpu_max_level() >= WR_ISA_AVX512 && wr_cpu_has_vaes() && wr_cpu_has_avx512vbmi() &&
               wr_cpu_has_gfni();
    int f2 = wr_cpu_max_level() >= WR_ISA_AVX2 && wr_cpu_has_vaes();
    for (int l = -2; l < nl; l++) {
        if ((l == -2 && !f512) || (l == -1 && !f2)) continue;
        memset(planes, 0x5A, pw * 8 + 8);
        memset(got, 0xA5, nw * 8 + 8);
        if (l == -2) {
            wr_birder_aggregate_avx512(cv, k, n, key, first, planes, got);
        } else if (l == -1) {
            wr_birder_aggregate_avx2(cv, k, n, key, first, planes, got);
        } else {
            wr_cpu_force_level(levels[l]);
            wr_birder_aggregate(cv, k, n, key, first, planes, got);
            wr_cpu_force_level(-1);
        }
        for (size_t i = 0; i < nw; i++)
            if (got[i] != want[i])
                fail_msg("aggregate (%s) n_workers %d n %zu first %#llx word %zu: %#llx, ref %#llx",
                         l == -2   ? "avx512 fused"
                         : l == -1 ? "avx2 fused"
                                   : wr_isa_name(levels[l]),
                         k, n, (unsigned long long)first, i, (unsigned long long)got[i],
                         (unsigned long long)want[i]);
        assert_true(got[nw] == 0xA5A5A5A5A5A5A5A5ull);  // nothing written past the output
    }
    for (int i = 0; i < k; i++) free(v[i]);
    free(v);
    free(planes);
    free(want);
    free(got);
}

// wr_birder_aggregate (every variant) equals count_planes_ref + requantize_ref bit
// for bit: n_workers 1..100, 127, 128, 1025; lengths with tails, around the fused
// kernel's 8-word groups and 128-word chunks; offsets and counters wrapping 2^32.
static void test_aggregate_equals_count_requantize(void **state) {
    (void)state;
    int levels[3], nl = levels_available(levels);
    const size_t lens[] = {1, 63, 64, 65, 511, 512, 513, 8192 + 448, 3 * 8192 + 5, 70001};
    const uint64_t firsts[] = {0, 64, 4096 + 640, (1ull << 32) - 8192 - 64, 7ull << 32};
    const int extra[] = {127, 128, 1025};
    for (int ki = 1; ki <= 103; ki++) {
        int k = ki <= 100 ? ki : extra[ki - 101];
        for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
            size_t n = lens[li];
            if ((n > 20000 && k % 5 != 1) || (k > 200 && n > 5000) || (quick() && n > 20000))
                continue;  // keeps the test short: the long case for a fifth of the worker counts
            aggregate_case(k, n, firsts[((size_t)ki * 3 + li) % 5], levels, nl);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_planes_count),
        cmocka_unit_test(test_worked_example_two_steps),
        cmocka_unit_test(test_packing_example),
        cmocka_unit_test(test_aggregation_example),
        cmocka_unit_test(test_requantize_example_and_sweep),
        cmocka_unit_test(test_unbiased_grid),
        cmocka_unit_test(test_keys_and_independence),
        cmocka_unit_test(test_bit_layout),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_encode_vector_equals_scalar),
        cmocka_unit_test(test_aggregation_roundtrip_all_levels),
        cmocka_unit_test(test_aes_round_fips197),
        cmocka_unit_test(test_rng_aes_definition),
        cmocka_unit_test(test_requantize_kernels_equal_ref),
        cmocka_unit_test(test_aggregate_equals_count_requantize),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
