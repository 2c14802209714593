// test_hfp8.c — the HFP8 conversions: ALGORITHMS.md 2.3 test vectors, code
// round trips, ties at every midpoint, a sweep of >= 10^7 fp32 inputs against an
// independent reference encoder (exact integer comparison against the table of
// representable values — a different algorithm from the library's), vector ==
// scalar bit for bit at every ISA level the CPU has, stochastic rounding
// probabilities and reproducibility, and amax.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cpu.h"
#include "hfp8.h"
#include "rng.h"
#include "wr_common.h"

static const enum wr_fp8_format k_fmts[2] = {WR_FP8_E4M3B11, WR_FP8_E5M2};

static int quick(void) {
    const char *e = getenv("WREN_TEST_QUICK");
    return e && e[0] && strcmp(e, "0") != 0;
}

static uint32_t f2u(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}
static float u2f(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

// Test-input generator (independent of wr_rng).
static uint64_t xs_state = 0x9E3779B97F4A7C15ull;
static uint64_t xs64(void) {
    xs_state ^= xs_state << 13;
    xs_state ^= xs_state >> 7;
    xs_state ^= xs_state << 17;
    return xs_state;
}

// ---- independent reference encoder ----------------------------------------------
// Every finite value of both formats is an integer multiple of 2^-41 below 2^58,
// and so is every fp32 in [2^-18, 2^17). The reference scales everything by 2^41,
// finds the two representable neighbours of |x| by binary search in the value
// table built from the format definition, and compares 2|x| with lo + hi exactly.
// Below 2^-18 everything rounds to zero (less than half of 2^-16); at or above
// 2^17 everything saturates (past 61440 and 31).

typedef struct {
    int maxcode;
    int e5;
    uint64_t v[128];  // value of magnitude code c, times 2^41
    int qexp;         // min subnormal = 2^-qexp
} ref_fmt;

static ref_fmt g_ref[2];

static void ref_init(void) {
    for (int k = 0; k < 2; k++) {
        ref_fmt *r = &g_ref[k];
        r->e5 = k;
        r->maxcode = k ? 0x7B : 0x7F;
        r->qexp = k ? 16 : 13;
        for (int c = 0; c <= r->maxcode; c++) {
            if (k) {
                int e = c >> 2, m = c & 3;
                r->v[c] = e ? (uint64_t)(4 + m) << (e - 17 + 41) : (uint64_t)m << (41 - 16);
            } else {
                int e = c >> 3, m = c & 7;
                r->v[c] = e ? (uint64_t)(8 + m) << (e - 14 + 41) : (uint64_t)m << (41 - 13);
            }
        }
    }
}

// Largest magnitude code c with v[c] <= X.
static int ref_floor_code(const ref_fmt *r, uint64_t X) {
    int lo = 0, hi = r->maxcode;  // v[lo] <= X invariant (v[0] = 0)
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (r->v[mid] <= X)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

static uint8_t ref_sign(const ref_fmt *r, int neg, int mag) {
    if (r->e5) return (uint8_t)((neg << 7) | mag);
    return mag == 0 ? 0 : (uint8_t)((neg << 7) | mag);
}

// sr = 0: nearest even; sr = 1: stochastic with bits rbits.
static uint8_t ref_encode(float x, enum wr_fp8_format f, int sr, uint32_t rbits) {
    const ref_fmt *r = &g_ref[f == WR_FP8_E5M2];
    uint32_t b = f2u(x);
    int neg = (int)(b >> 31);
    uint32_t a = b & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return r->e5 ? (uint8_t)((neg << 7) | 0x7F) : 0x80;
    if (a >= 0x48000000u) return ref_sign(r, neg, r->maxcode);  // >= 2^17, inf
    if (a < 0x36800000u) {                                      // < 2^-18
        if (!sr || a == 0) return ref_sign(r, neg, 0);
        // Stochastic: P(up) = |x| / min subnormal as a 32-bit fraction, floor.
        int E = (int)(a >> 23);
        uint64_t M = E ? ((a & 0x7FFFFFu) | 0x800000u) : a;
        int s = (E ? E : 1) - 150 + 32 + r->qexp;  // |x| * 2^(32 + qexp) = M * 2^s
        uint64_t frac = s >= 0 ? M << s : (-s >= 64 ? 0 : M >> -s);
        int up = frac + rbits >= (1ull << 32);
        return ref_sign(r, neg, up);
    }
    int E = (int)(a >> 23);
    uint64_t X = (uint64_t)((a & 0x7FFFFFu) | 0x800000u) << (E - 109);
    int c = ref_floor_code(r, X);
    if (c == r->maxcode) return ref_sign(r, neg, c);
    uint64_t lo = r->v[c], hi = r->v[c + 1];
    int mag;
    if (sr) {
        unsigned __int128 num = (unsigned __int128)(X - lo) << 32;
        uint64_t frac = (uint64_t)(num / (hi - lo));
        mag = c + (frac + rbits >= (1ull << 32));
    } else {
        uint64_t two = 2 * X, sum = lo + hi;
        mag = two < sum ? c : two > sum ? c + 1 : ((c & 1) ? c + 1 : c);
    }
    return ref_sign(r, neg, mag);
}

// ---- helpers ----------------------------------------------------------------------

static int max_level(void) { return (int)wr_cpu_max_level(); }

static void fail_code(const char *what, enum wr_fp8_format f, int level, float x, unsigned got,
                      unsigned want) {
    print_error("%s %s level %s: x=%a (0x%08x) got 0x%02x want 0x%02x\n", what, wr_fp8_format_name(f),
                wr_isa_name((enum wr_isa)level), (double)x, f2u(x), got, want);
    fail();
}

static void assert_bits_equal(const float *a, const float *b, size_t n, const char *what, int level) {
    for (size_t i = 0; i < n; i++)
        if (f2u(a[i]) != f2u(b[i])) {
            print_error("%s level %s: element %zu: 0x%08x vs 0x%08x\n", what, wr_isa_name((enum wr_isa)level),
                        i, f2u(a[i]), f2u(b[i]));
            fail();
        }
}

static void assert_codes_equal(const uint8_t *a, const uint8_t *b, size_t n, const float *x, const char *what,
                               enum wr_fp8_format f, int level) {
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) fail_code(what, f, level, x ? x[i] : 0.0f, a[i], b[i]);
}

// ---- ALGORITHMS.md 2.3 -------------------------------------------------------------

typedef struct {
    float x;
    uint8_t c4, c5;
    float v4, v5;
} vec23;

static void test_vectors(void **state) {
    (void)state;
    const vec23 t[] = {
        {1.0f, 0x58, 0x3C, 1.0f, 1.0f},
        {u2f(0x3DCCCCCDu), 0x3D, 0x2E, 0.1015625f, 0.09375f},
        {-2.5f, 0xE2, 0xC1, -2.5f, -2.5f},
        {u2f(0x40490FD0u), 0x65, 0x42, 3.25f, 3.0f},
        {300.0f, 0x7F, 0x5D, 30.0f, 320.0f},
        {1e-5f, 0x00, 0x01, 0.0f, 0x1p-16f},
        {1.0625f, 0x58, 0x3C, 1.0f, 1.0f},
        {1.1875f, 0x5A, 0x3D, 1.25f, 1.25f},
        {1.125f, 0x59, 0x3C, 1.125f, 1.0f},
        {1.375f, 0x5B, 0x3E, 1.375f, 1.5f},
        {31.0f, 0x7F, 0x50, 30.0f, 32.0f},
        {61440.0f, 0x7F, 0x7B, 30.0f, 57344.0f},
        {0x1p-10f, 0x08, 0x14, 0x1p-10f, 0x1p-10f},
        {0x1p-14f, 0x00, 0x04, 0.0f, 0x1p-14f},
        {0x3p-14f, 0x02, 0x0A, 0x1p-12f, 0x3p-14f},
        {0x3p-17f, 0x00, 0x02, 0.0f, 0x1p-15f},
    };
    size_t nt = sizeof t / sizeof t[0];
    assert_int_equal(f2u(t[1].x), 0x3DCCCCCDu);
    for (size_t i = 0; i < nt; i++) {
        uint8_t w4 = t[i].c4, w5 = t[i].c5;
        if (wr_fp8_encode(t[i].x, WR_FP8_E4M3B11) != w4)
            fail_code("vector", WR_FP8_E4M3B11, 0, t[i].x, wr_fp8_encode(t[i].x, WR_FP8_E4M3B11), w4);
        if (wr_fp8_encode(t[i].x, WR_FP8_E5M2) != w5)
            fail_code("vector", WR_FP8_E5M2, 0, t[i].x, wr_fp8_encode(t[i].x, WR_FP8_E5M2), w5);
        assert_int_equal(ref_encode(t[i].x, WR_FP8_E4M3B11, 0, 0), w4);
        assert_int_equal(ref_encode(t[i].x, WR_FP8_E5M2, 0, 0), w5);
        assert_true(wr_fp8_decode(w4, WR_FP8_E4M3B11) == t[i].v4);
        assert_true(wr_fp8_decode(w5, WR_FP8_E5M2) == t[i].v5);
    }
    // The same through the array kernels at every level, each vector padded
    // into a full-width block so the SIMD path (not just the tail) sees it.
    enum { W = 128 };
    float x[W], q[W];
    uint8_t c[W];
    for (int lvl = 0; lvl <= max_level(); lvl++) {
        wr_cpu_force_level(lvl);
        for (size_t i = 0; i < nt; i++) {
            for (int j = 0; j < W; j++) x[j] = t[(i + (size_t)j) % nt].x;
            for (int k = 0; k < 2; k++) {
                enum wr_fp8_format f = k_fmts[k];
                wr_fp8_encode_array(x, c, W, f);
                memcpy(q, x, sizeof q);
                wr_fp8_quantize_inplace(q, W, f);
                for (int j = 0; j < W; j++) {
                    const vec23 *v = &t[(i + (size_t)j) % nt];
                    uint8_t want = k ? v->c5 : v->c4;
                    if (c[j] != want) fail_code("vector array", f, lvl, x[j], c[j], want);
                    assert_true(q[j] == (k ? v->v5 : v->v4));
                }
            }
        }
    }
    wr_cpu_force_level(-1);
    // Signed zero rules and specials.
    assert_int_equal(wr_fp8_encode(-0.0f, WR_FP8_E4M3B11), 0x00);
    assert_int_equal(wr_fp8_encode(-1e-9f, WR_FP8_E4M3B11), 0x00);
    assert_int_equal(wr_fp8_encode(-0.0f, WR_FP8_E5M2), 0x80);
    assert_int_equal(wr_fp8_encode(-1e-9f, WR_FP8_E5M2), 0x80);
    assert_int_equal(wr_fp8_encode(INFINITY, WR_FP8_E4M3B11), 0x7F);
    assert_int_equal(wr_fp8_encode(-INFINITY, WR_FP8_E4M3B11), 0xFF);
    assert_int_equal(wr_fp8_encode(INFINITY, WR_FP8_E5M2), 0x7B);
    assert_int_equal(wr_fp8_encode(-INFINITY, WR_FP8_E5M2), 0xFB);
    assert_int_equal(wr_fp8_encode(NAN, WR_FP8_E4M3B11), 0x80);
    assert_int_equal(wr_fp8_encode(-NAN, WR_FP8_E4M3B11), 0x80);
    assert_int_equal(wr_fp8_encode(NAN, WR_FP8_E5M2) & 0x7F, 0x7F);
    assert_true(isnan(wr_fp8_decode(0x80, WR_FP8_E4M3B11)));
    assert_true(isinf(wr_fp8_decode(0x7C, WR_FP8_E5M2)) && wr_fp8_decode(0xFC, WR_FP8_E5M2) < 0);
    for (int c2 = 0x7D; c2 <= 0x7F; c2++) {
        assert_true(isnan(wr_fp8_decode((uint8_t)c2, WR_FP8_E5M2)));
        assert_true(isnan(wr_fp8_decode((uint8_t)(c2 | 0x80), WR_FP8_E5M2)));
    }
    assert_true(wr_fp8_decode(0x7F, WR_FP8_E4M3B11) == 30.0f);
    assert_true(wr_fp8_decode(0x7B, WR_FP8_E5M2) == 57344.0f);
    assert_true(wr_fp8_decode(0x01, WR_FP8_E4M3B11) == 0x1p-13f);
    assert_true(wr_fp8_max(WR_FP8_E4M3B11) == 30.0f && wr_fp8_max(WR_FP8_E5M2) == 57344.0f);
    // The forward format is OCP E4M3 (bias 7) at 16x the value: OCP 448 = 0x7E, so 28 = 0x7E.
    assert_int_equal(wr_fp8_encode(28.0f, WR_FP8_E4M3B11), 0x7E);
    // Beside the fp16 double-rounding trap of 2.1: 1.125 + 2^-12 must give 1.25 in E5M2.
    assert_int_equal(wr_fp8_encode(1.125f + 0x1p-12f, WR_FP8_E5M2), 0x3D);
}

// All codes decode and re-encode to themselves; the decode table agrees.
static void test_round_trip_codes(void **state) {
    (void)state;
    for (int k = 0; k < 2; k++) {
        enum wr_fp8_format f = k_fmts[k];
        const float *tab = wr_fp8_decode_table(f);
        for (int c = 0; c < 256; c++) {
            float v = wr_fp8_decode((uint8_t)c, f);
            assert_int_equal(f2u(v), f2u(tab[c]));
            int mag = c & 0x7F;
            if (k == 0 && c == 0x80) {
                assert_true(isnan(v));
                assert_int_equal(wr_fp8_encode(v, f), 0x80);
                continue;
            }
            if (k == 1 && mag > 0x7C) {
                assert_true(isnan(v));
                assert_int_equal(wr_fp8_encode(v, f) & 0x7F, 0x7F);
                continue;
            }
            if (k == 1 && mag == 0x7C) {  // inf saturates
                assert_int_equal(wr_fp8_encode(v, f), (c & 0x80) | 0x7B);
                continue;
            }
            if (wr_fp8_encode(v, f) != c) fail_code("round trip", f, 0, v, wr_fp8_encode(v, f), (unsigned)c);
            assert_int_equal(ref_encode(v, f, 0, 0), c);
            // Representable values are exact: stochastic rounding never moves them.
            assert_int_equal(wr_fp8_encode_sr(v, f, 0xFFFFFFFFu), c);
            assert_int_equal(wr_fp8_encode_sr(v, f, 0), c);
            // Codes are monotone in value.
            if (mag > 0 && mag <= (k ? 0x7B : 0x7F))
                assert_true(fabsf(v) > wr_fp8_decode((uint8_t)(mag - 1), f));
        }
    }
}

// Every exact midpoint between neighbouring codes rounds to the even code; one
// fp32 ulp either side goes to the nearer code.
static void test_midpoints(void **state) {
    (void)state;
    for (int k = 0; k < 2; k++) {
        enum wr_fp8_format f = k_fmts[k];
        int maxcode = k ? 0x7B : 0x7F;
        for (int c = 0; c <= maxcode; c++) {
            float lo = wr_fp8_decode((uint8_t)c, f);
            // Above max: the next step beyond the last binade (the RNE overflow threshold).
            float hi = c < maxcode ? wr_fp8_decode((uint8_t)(c + 1), f)
                                   : lo + (lo - wr_fp8_decode((uint8_t)(c - 1), f));
            float mid = (lo + hi) / 2;  // exact: few significant bits
            assert_true(mid - lo == hi - mid);
            int even = (c & 1) ? c + 1 : c;
            int up = c + 1;
            if (even > maxcode) even = maxcode;  // saturating
            if (up > maxcode) up = maxcode;
            for (int s = 0; s < 2; s++) {
                float sg = s ? -1.0f : 1.0f;
                int want_even = even, want_lo = c, want_up = up;
                if (s) {
                    want_even |= 0x80, want_lo |= 0x80, want_up |= 0x80;
                    if (!k) {  // no -0 in E4M3-b11
                        if (even == 0) want_even = 0;
                        if (c == 0) want_lo = 0;
                    }
                }
                float xs[3] = {sg * mid, sg * nextafterf(mid, 0.0f), sg * nextafterf(mid, INFINITY)};
                int ws[3] = {want_even, want_lo, want_up};
                for (int j = 0; j < 3; j++) {
                    if (wr_fp8_encode(xs[j], f) != ws[j])
                        fail_code("midpoint", f, 0, xs[j], wr_fp8_encode(xs[j], f), (unsigned)ws[j]);
                    assert_int_equal(ref_encode(xs[j], f, 0, 0), ws[j]);
                }
                // And through the vector kernels (a full block of the same value).
                float blk[64];
                uint8_t out[64];
                for (int lvl = 0; lvl <= max_level(); lvl++) {
                    wr_cpu_force_level(lvl);
                    for (int j = 0; j < 3; j++) {
                        for (int i = 0; i < 64; i++) blk[i] = xs[j];
                        wr_fp8_encode_array(blk, out, 64, f);
                        for (int i = 0; i < 64; i++)
                            if (out[i] != ws[j])
                                fail_code("midpoint array", f, lvl, xs[j], out[i], (unsigned)ws[j]);
                    }
                }
                wr_cpu_force_level(-1);
            }
        }
    }
}

// >= 10^7 fp32 inputs spread over every exponent and sign (all bit patterns at a
// fixed odd stride, plus a dense random sample of the formats' own range),
// through the scalar encoder and the array kernel of every level, against the
// independent reference.
static void test_sweep_vs_independent_reference(void **state) {
    (void)state;
    const size_t chunk = 1 << 16;
    const uint64_t stride = quick() ? 4099 : 409;  // ~1.05e6 or ~1.05e7 patterns
    float *x = wr_alloc_vec(chunk * sizeof(float));
    uint8_t *want = wr_alloc_vec(chunk), *got = wr_alloc_vec(chunk);
    size_t total = 0;
    uint64_t u = 0;
    int phase = 0;  // 0: strided over all patterns; 1: random in [2^-20, 2^18)
    size_t dense = quick() ? 200000 : 2000000, dense_done = 0;
    while (phase < 2) {
        size_t n = 0;
        while (n < chunk) {
            if (phase == 0) {
                if (u >= (1ull << 32)) break;
                x[n++] = u2f((uint32_t)u);
                u += stride;
            } else {
                if (dense_done >= dense) break;
                uint64_t r = xs64();
                uint32_t e = 107 + (uint32_t)(r % 38);  // 2^-20 .. 2^17
                uint32_t m = (uint32_t)(r >> 8) & 0x7FFFFFu;
                if ((r >> 40) & 1) m &= ~0xFFFFu;  // exact ties are frequent with few bits
                x[n++] = u2f(((uint32_t)((r >> 41) & 1) << 31) | (e << 23) | m);
                dense_done++;
            }
        }
        if (n == 0) {
            phase++;
            continue;
        }
        for (int k = 0; k < 2; k++) {
            enum wr_fp8_format f = k_fmts[k];
            for (size_t i = 0; i < n; i++) {
                want[i] = ref_encode(x[i], f, 0, 0);
                uint8_t s = wr_fp8_encode(x[i], f);
                if (s != want[i]) fail_code("sweep scalar", f, 0, x[i], s, want[i]);
            }
            for (int lvl = 0; lvl <= max_level(); lvl++) {
                wr_cpu_force_level(lvl);
                wr_fp8_encode_array(x, got, n, f);
                assert_codes_equal(got, want, n, x, "sweep array", f, lvl);
            }
            wr_cpu_force_level(-1);
        }
        total += n;
    }
    print_message("sweep: %zu fp32 inputs x 2 formats x %d levels\n", total, max_level() + 1);
    assert_true(total >= (quick() ? 1000000u : 10000000u));
    free(x);
    free(want);
    free(got);
}

// Stochastic rounding with explicit random bits against the independent reference.
static void test_sr_scalar_vs_reference(void **state) {
    (void)state;
    size_t n = quick() ? 300000 : 3000000;
    for (size_t i = 0; i < n; i++) {
        uint64_t r = xs64();
        uint32_t bits = (uint32_t)r;
        if ((r >> 32) & 1) {  // bias toward the formats' range
            uint32_t e = 100 + (uint32_t)((r >> 33) % 46);
            bits = (bits & 0x807FFFFFu) | (e << 23);
        }
        float x = u2f(bits);
        uint32_t rb = (uint32_t)(r >> 32) ^ (uint32_t)(xs64());
        for (int k = 0; k < 2; k++) {
            uint8_t a = wr_fp8_encode_sr(x, k_fmts[k], rb), b = ref_encode(x, k_fmts[k], 1, rb);
            if (a != b) fail_code("sr scalar", k_fmts[k], 0, x, a, b);
        }
    }
}

// ---- vector == scalar, bit for bit -----------------------------------------------

static float edge_value(size_t i) {
    static const uint32_t edges[] = {
        0x00000000u,
        0x80000000u,
        0x7F800000u,
        0xFF800000u,
        0x7FC00000u,
        0xFFC00000u,
        0x7F800001u,
        0xFF800001u,
        0x7FFFFFFFu,
        0xFFFFFFFFu,
        0x7FA00000u,
        0x00000001u,
        0x80000001u,
        0x007FFFFFu,
        0x807FFFFFu,
        0x00800000u,
        0x7F7FFFFFu,
        0xFF7FFFFFu,
        0x41F00000u /* 30 */,
        0x41F80000u /* 31 */,
        0x41F7FFFFu,
        0x47700000u /* 61440 */,
        0x476FFFFFu,
        0x47600000u /* 57344 */,
        0x3A800000u /* 2^-10 */,
        0x38800000u /* 2^-14 */,
        0x37800000u /* 2^-16 */,
        0x37000000u /* 2^-17 */,
        0x39000000u /* 2^-13 */,
        0x38800001u,
        0x387FFFFFu,
        0x3A7FFFFFu,
        0x34000000u /* 2^-23 */,
        0x33000000u,
        0x2F800000u,
        0x4F800000u,
    };
    size_t ne = sizeof edges / sizeof edges[0];
    return u2f(edges[i % ne]);
}

// Random inputs of several kinds: any bit pattern, in-range values, edges.
static void fill_inputs(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint64_t r = xs64();
        switch (r % 4) {
        case 0: x[i] = u2f((uint32_t)(r >> 16)); break;
        case 1: {
            uint32_t e = 100 + (uint32_t)((r >> 8) % 46);
            x[i] = u2f(((uint32_t)(r >> 20) & 0x807FFFFFu) | (e << 23));
            break;
        }
        case 2: x[i] = edge_value((size_t)(r >> 8)); break;
        default: x[i] = (float)((int64_t)(r >> 11) - (1ll << 52)) * 0x1p-48f; break;
        }
    }
}

static void test_vector_equals_scalar(void **state) {
    (void)state;
    const size_t n = quick() ? 50021 : 400009;  // odd: exercises the tails
    float *x = wr_alloc_vec(n * 4), *q0 = wr_alloc_vec(n * 4), *q1 = wr_alloc_vec(n * 4);
    float *d0 = wr_alloc_vec(n * 4), *d1 = wr_alloc_vec(n * 4);
    uint8_t *c0 = wr_alloc_vec(n), *c1 = wr_alloc_vec(n), *codes = wr_alloc_vec(n);
    fill_inputs(x, n);
    for (size_t i = 0; i < n; i++) codes[i] = (uint8_t)(xs64() >> 24);
    for (size_t i = 0; i < 256; i++) codes[i] = (uint8_t)i;
    const uint64_t seeds[3] = {1, 0xDEADBEEFCAFEull, 42};
    const uint64_t offs[3] = {0, 12345, 0xFFFFFFFFull - 1000};  // the last wraps the counter
    for (int k = 0; k < 2; k++) {
        enum wr_fp8_format f = k_fmts[k];
        for (int lvl = 1; lvl <= max_level(); lvl++) {
            // Whole array, then short lengths and unaligned starts for the tails.
            for (size_t start = 0; start < 3; start++) {
                size_t lens[] = {n - start, 0, 1, 7, 15, 16, 17, 31, 33, 63, 64, 65, 100, 1000};
                for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
                    size_t m = lens[li];
                    const float *xs = x + start;
                    wr_cpu_force_level(0);
                    wr_fp8_encode_array(xs, c0, m, f);
                    wr_cpu_force_level(lvl);
                    wr_fp8_encode_array(xs, c1, m, f);
                    assert_codes_equal(c1, c0, m, xs, "encode", f, lvl);
                    wr_fp8_encode_array_ref(xs, c1, m, f);
                    assert_codes_equal(c1, c0, m, xs, "encode_ref", f, lvl);

                    // Scaled encode == encode of the fp32 products, every level
                    // (powers of two up and down, overflowing to inf, a non-power).
                    static const float scales[] = {1.0f, 0x1p-7f, 0x1p9f, 0x1p100f, 3.0f};
                    for (size_t si = 0; si < sizeof scales / sizeof scales[0]; si++) {
                        const float sc = scales[si];
                        for (size_t i = 0; i < m; i++) q0[i] = xs[i] * sc;
                        wr_fp8_encode_array_ref(q0, c0, m, f);
                        wr_fp8_encode_scaled_array_ref(xs, c1, m, sc, f);
                        assert_codes_equal(c1, c0, m, q0, "encode_scaled_ref", f, lvl);
                        wr_cpu_force_level(lvl);
                        wr_fp8_encode_scaled_array(xs, c1, m, sc, f);
                        assert_codes_equal(c1, c0, m, q0, "encode_scaled", f, lvl);
                        wr_cpu_force_level(0);
                        wr_fp8_encode_scaled_array(xs, c1, m, sc, f);
                        assert_codes_equal(c1, c0, m, q0, "encode_scaled (level 0)", f, lvl);
                    }
                    wr_cpu_force_level(lvl);
                    wr_fp8_encode_array_ref(xs, c0, m, f);

                    memcpy(q0, xs, m * 4);
                    memcpy(q1, xs, m * 4);
                    wr_fp8_quantize_inplace_ref(q0, m, f);
                    wr_fp8_quantize_inplace(q1, m, f);
                    assert_bits_equal(q1, q0, m, "quantize", lvl);
                    // Fake quantize is decode(encode(x)).
                    wr_fp8_decode_array_ref(c0, d0, m, f);
                    assert_bits_equal(q0, d0, m, "quantize == decode(encode)", lvl);

                    wr_fp8_decode_array_ref(codes + start, d0, m, f);
                    wr_fp8_decode_array(codes + start, d1, m, f);
                    assert_bits_equal(d1, d0, m, "decode", lvl);

                    for (int s = 0; s < 3; s++) {
                        wr_fp8_encode_sr_array_ref(xs, c0, m, f, seeds[s], offs[s]);
                        wr_fp8_encode_sr_array(xs, c1, m, f, seeds[s], offs[s]);
                        assert_codes_equal(c1, c0, m, xs, "encode_sr", f, lvl);
                        memcpy(q0, xs, m * 4);
                        memcpy(q1, xs, m * 4);
                        wr_fp8_quantize_sr_inplace_ref(q0, m, f, seeds[s], offs[s]);
                        wr_fp8_quantize_sr_inplace(q1, m, f, seeds[s], offs[s]);
                        assert_bits_equal(q1, q0, m, "quantize_sr", lvl);
                        wr_fp8_decode_array_ref(c0, d0, m, f);
                        assert_bits_equal(q0, d0, m, "quantize_sr == decode(encode_sr)", lvl);
                    }
                    if (k == 0) {
                        wr_cpu_force_level(lvl);
                        float a1 = wr_fp8_amax(xs, m), a0 = wr_fp8_amax_ref(xs, m);
                        assert_int_equal(f2u(a1), f2u(a0));
                    }
                }
            }
        }
        wr_cpu_force_level(-1);
    }
    free(x), free(q0), free(q1), free(d0), free(d1), free(c0), free(c1), free(codes);
}

// Arrays of >= 2^23 elements take the non-temporal store path (with a scalar
// head up to the alignment boundary): same bits as the scalar reference.
static void test_large_arrays_streaming(void **state) {
    (void)state;
    const size_t n = ((size_t)1 << 23) + 77;
    float *x = wr_alloc_vec(n * 4);
    uint8_t *c0 = wr_alloc_vec(n + 64), *c1 = wr_alloc_vec(n + 64);
    fill_inputs(x, n);
    for (int k = 0; k < 2; k++) {
        enum wr_fp8_format f = k_fmts[k];
        for (size_t mis = 0; mis < 3; mis++) {  // output start 0, 1 or 2 bytes past alignment
            size_t m = n - mis;
            wr_fp8_encode_array_ref(x + mis, c0 + mis, m, f);
            for (int lvl = 1; lvl <= max_level(); lvl++) {
                wr_cpu_force_level(lvl);
                memset(c1, 0xAA, n + 64);
                wr_fp8_encode_array(x + mis, c1 + mis, m, f);
                assert_codes_equal(c1 + mis, c0 + mis, m, x + mis, "encode (streaming)", f, lvl);
            }
            wr_cpu_force_level(-1);
            // scaled: == encode of the products (x * 2^-3 here)
            float *xsc = wr_alloc_vec(m * 4);
            for (size_t i = 0; i < m; i++) xsc[i] = x[mis + i] * 0.125f;
            wr_fp8_encode_array_ref(xsc, c0 + mis, m, f);
            for (int lvl = 0; lvl <= max_level(); lvl++) {
                wr_cpu_force_level(lvl);
                memset(c1, 0xAA, n + 64);
                wr_fp8_encode_scaled_array(x + mis, c1 + mis, m, 0.125f, f);
                assert_codes_equal(c1 + mis, c0 + mis, m, xsc, "encode_scaled (streaming)", f, lvl);
                assert_int_equal(c1[n], 0xAA);
            }
            wr_cpu_force_level(-1);
            free(xsc);
            wr_fp8_encode_sr_array_ref(x + mis, c0 + mis, m, f, 31, 5 + mis);
            for (int lvl = 1; lvl <= max_level(); lvl++) {
                wr_cpu_force_level(lvl);
                memset(c1, 0xAA, n + 64);
                wr_fp8_encode_sr_array(x + mis, c1 + mis, m, f, 31, 5 + mis);
                assert_codes_equal(c1 + mis, c0 + mis, m, x + mis, "encode_sr (streaming)", f, lvl);
                assert_int_equal(c1[n], 0xAA);  // nothing written past the end
            }
            wr_cpu_force_level(-1);
        }
    }
    free(x), free(c0), free(c1);
}

// ---- stochastic rounding ------------------------------------------------------------

typedef struct {
    float x;
    enum wr_fp8_format f;
    uint8_t lo, hi;
    double p;
} sr_case;

static void test_sr_probability(void **state) {
    (void)state;
    const sr_case cases[] = {
        {u2f(0x3DCCCCCDu), WR_FP8_E4M3B11, 0x3C, 0x3D, 0.8000001907},
        {u2f(0x3DCCCCCDu), WR_FP8_E5M2, 0x2E, 0x2F, 0.4000000954},
        {300.0f, WR_FP8_E5M2, 0x5C, 0x5D, 0.6875},
        {-u2f(0x3DCCCCCDu), WR_FP8_E4M3B11, 0xBC, 0xBD, 0.8000001907},
        {0x3p-18f, WR_FP8_E5M2, 0x00, 0x01, 0.75},     // target subnormal range
        {0x1p-14f, WR_FP8_E4M3B11, 0x00, 0x01, 0.5},   // the RNE tie, unbiased here
        {0x1p-26f, WR_FP8_E5M2, 0x00, 0x01, 0x1p-10},  // far below: fraction truncated
        {30.5f, WR_FP8_E4M3B11, 0x7F, 0x7F, 0.0},      // saturates either way
    };
    const size_t n = 1000000;  // 10^6 draws each (also under WREN_TEST_QUICK: cheap)
    float *x = wr_alloc_vec(n * 4), *q = wr_alloc_vec(n * 4);
    uint8_t *c = wr_alloc_vec(n), *c2 = wr_alloc_vec(n);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const sr_case *t = &cases[ci];
        for (size_t i = 0; i < n; i++) x[i] = t->x;
        for (int lvl = 0; lvl <= max_level(); lvl++) {
            wr_cpu_force_level(lvl);
            wr_fp8_encode_sr_array(x, c, n, t->f, 777 + ci, 1000 * ci);
            size_t ups = 0;
            double sum = 0;
            for (size_t i = 0; i < n; i++) {
                if (c[i] != t->lo && c[i] != t->hi) fail_code("sr range", t->f, lvl, t->x, c[i], t->lo);
                ups += c[i] == t->hi;
                sum += wr_fp8_decode(c[i], t->f);
            }
            double mean = (double)ups / (double)n;
            if (t->lo == t->hi) mean = 0;
            double sigma = sqrt(t->p * (1 - t->p) / (double)n);
            if (fabs(mean - t->p) > 4 * sigma + 1e-12) {
                print_error("sr case %zu level %d: P(up) %.7f want %.10f (4 sigma %.2g)\n", ci, lvl, mean,
                            t->p, 4 * sigma);
                fail();
            }
            // Unbiased where not saturating: E[decode] = x, within 4 sigma.
            if (t->lo != t->hi) {
                double lo = wr_fp8_decode(t->lo, t->f), hi = wr_fp8_decode(t->hi, t->f);
                double sd = fabs(hi - lo) * sigma;
                assert_true(fabs(sum / (double)n - (double)t->x) <= 4 * sd + 1e-30);
            }
            // Reproducible: the same seed/offset gives the same codes; the fused
            // fake-quantize draws the same bits.
            wr_fp8_encode_sr_array(x, c2, n, t->f, 777 + ci, 1000 * ci);
            assert_memory_equal(c, c2, n);
            memcpy(q, x, n * 4);
            wr_fp8_quantize_sr_inplace(q, n, t->f, 777 + ci, 1000 * ci);
            for (size_t i = 0; i < n; i += 997) assert_true(q[i] == wr_fp8_decode(c[i], t->f));
        }
        wr_cpu_force_level(-1);
    }
    free(x), free(q), free(c), free(c2);
}

static void test_sr_reproducible_and_keyed(void **state) {
    (void)state;
    enum { N = 4099 };
    float x[N];
    uint8_t a[N], b[N], s[N];
    for (int i = 0; i < N; i++) x[i] = 0.1f + 0.001f * (float)i;  // none representable-heavy
    for (int k = 0; k < 2; k++) {
        enum wr_fp8_format f = k_fmts[k];
        for (int lvl = 0; lvl <= max_level(); lvl++) {
            wr_cpu_force_level(lvl);
            wr_fp8_encode_sr_array(x, a, N, f, 5, 100);
            // Split in pieces with matching offsets: the same codes.
            wr_fp8_encode_sr_array(x, s, 1000, f, 5, 100);
            wr_fp8_encode_sr_array(x + 1000, s + 1000, N - 1000, f, 5, 1100);
            assert_memory_equal(a, s, N);
            // A different seed, or a shifted offset, gives different bits.
            wr_fp8_encode_sr_array(x, b, N, f, 6, 100);
            assert_true(memcmp(a, b, N) != 0);
            wr_fp8_encode_sr_array(x, b, N, f, 5, 101);
            assert_true(memcmp(a, b, N) != 0);
            // Element i uses wr_rng_u32(wr_rng_key_make(seed, 0, 0), (uint32_t)(offset + i)),
            // including across the 2^32 wrap of the counter.
            uint64_t off = (1ull << 32) - 17;
            wr_fp8_encode_sr_array(x, b, N, f, 9, off);
            wr_rng_key key = wr_rng_key_make(9, 0, 0);
            for (int i = 0; i < N; i++)
                assert_int_equal(b[i],
                                 wr_fp8_encode_sr(x[i], f, wr_rng_u32(key, (uint32_t)(off + (uint64_t)i))));
            // ... and offset + 2^32 replays offset (the documented wrap).
            wr_fp8_encode_sr_array(x, s, N, f, 9, off + (1ull << 32));
            assert_memory_equal(b, s, N);
        }
        wr_cpu_force_level(-1);
    }
    // r = 0 truncates, r = ~0 rounds up anything inexact.
    assert_int_equal(wr_fp8_encode_sr(u2f(0x3DCCCCCDu), WR_FP8_E4M3B11, 0), 0x3C);
    assert_int_equal(wr_fp8_encode_sr(u2f(0x3DCCCCCDu), WR_FP8_E4M3B11, 0xFFFFFFFFu), 0x3D);
    assert_int_equal(wr_fp8_encode_sr(-300.0f, WR_FP8_E5M2, 0xFFFFFFFFu), 0xDD);
    assert_int_equal(wr_fp8_encode_sr(1e6f, WR_FP8_E5M2, 0xFFFFFFFFu), 0x7B);
    assert_int_equal(wr_fp8_encode_sr(-1e-9f, WR_FP8_E4M3B11, 0), 0x00);
    assert_int_equal(wr_fp8_encode_sr(-1e-9f, WR_FP8_E5M2, 0), 0x80);
}

static void test_amax(void **state) {
    (void)state;
    enum { N = 1003 };
    float x[N];
    for (int lvl = 0; lvl <= max_level(); lvl++) {
        wr_cpu_force_level(lvl);
        assert_true(wr_fp8_amax(x, 0) == 0.0f);
        for (int i = 0; i < N; i++) x[i] = (float)(i % 17) - 8.0f;
        assert_true(wr_fp8_amax(x, N) == 8.0f);
        for (int pos = 0; pos < N; pos += 97) {
            x[pos] = -123.5f;
            assert_true(wr_fp8_amax(x, N) == 123.5f);
            x[pos] = -INFINITY;
            assert_true(wr_fp8_amax(x, N) == INFINITY);
            x[pos] = NAN;
            assert_true(isnan(wr_fp8_amax(x, N)));
            x[pos] = 0.0f;
        }
        x[N - 1] = -9.0f;  // in the scalar tail of every kernel
        assert_true(wr_fp8_amax(x, N) == 9.0f);
        x[N - 1] = 0.0f;
    }
    wr_cpu_force_level(-1);
}

int main(void) {
    ref_init();
    print_message("hfp8: CPU max level %s\n", wr_isa_name(wr_cpu_max_level()));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_round_trip_codes),
        cmocka_unit_test(test_midpoints),
        cmocka_unit_test(test_sweep_vs_independent_reference),
        cmocka_unit_test(test_sr_scalar_vs_reference),
        cmocka_unit_test(test_vector_equals_scalar),
        cmocka_unit_test(test_large_arrays_streaming),
        cmocka_unit_test(test_sr_probability),
        cmocka_unit_test(test_sr_reproducible_and_keyed),
        cmocka_unit_test(test_amax),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
