// test_synth.c — the synthetic model's gradient kernel (worker/synth.h): the
// SSE2 and AVX-512 versions give the reference's g floats and its sum of
// squares bit for bit, over sizes around the 32-lane and block boundaries,
// every table offset class (wrap-around through the padding), misaligned
// pointers, the streaming-store path, and d = 0; plus the formula itself.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "synth.h"
#include "wr_common.h"

static uint64_t xs_state = 0x9E3779B97F4A7C15ull;
static uint64_t xs64(void) {
    xs_state ^= xs_state << 13;
    xs_state ^= xs_state >> 7;
    xs_state ^= xs_state << 17;
    return xs_state;
}
static float unit_sym(void) { return (float)(xs64() >> 40) * (2.0f / 16777216.0f) - 1.0f; }  // [-1,1)

static float *make_table(void) {
    float *t = wr_alloc_vec((WR_SYNTH_TABLE + WR_SYNTH_PAD) * sizeof(float));
    for (uint32_t i = 0; i < WR_SYNTH_TABLE; i++) t[i] = unit_sym();
    memcpy(t + WR_SYNTH_TABLE, t, WR_SYNTH_PAD * sizeof(float));
    return t;
}

typedef double (*synth_fn)(const float *, const float *, uint32_t, size_t, float *);

// Runs every available version on (x + xoff, g + goff, d, o) and compares with the reference.
static void check_case(const float *tab, const float *xbase, size_t d, uint32_t o, size_t xoff, size_t goff) {
    const float *x = xbase + xoff;
    float *want = wr_alloc_vec((d + 16) * sizeof(float));
    float *got = wr_alloc_vec((d + 16) * sizeof(float));
    double s_ref = wr_synth_grad_ref(x, tab, o, d, want + goff);
    struct {
        const char *name;
        synth_fn fn;
        int ok;
    } v[] = {
        {"sse2", wr_synth_grad_sse2, 1},
        {"avx512", wr_synth_grad_avx512, wr_cpu_max_level() >= WR_ISA_AVX512},
        {"dispatch", wr_synth_grad, 1},
    };
    for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
        if (!v[k].ok) continue;
        memset(got, 0xA5, (d + 16) * sizeof(float));
        double s = v[k].fn(x, tab, o, d, got + goff);
        if (memcmp(&s, &s_ref, sizeof s) != 0)
            fail_msg("%s: d=%zu o=%u xoff=%zu goff=%zu: sum %.17g, reference %.17g", v[k].name, d, o, xoff,
                     goff, s, s_ref);
        if (d && memcmp(got + goff, want + goff, d * sizeof(float)) != 0)
            fail_msg("%s: d=%zu o=%u xoff=%zu goff=%zu: g differs from the reference", v[k].name, d, o, xoff,
                     goff);
        // nothing written outside g[0, d)
        for (size_t j = 0; j < goff; j++) assert_int_equal(((uint32_t *)got)[j], 0xA5A5A5A5u);
        for (size_t j = goff + d; j < d + 16; j++) assert_int_equal(((uint32_t *)got)[j], 0xA5A5A5A5u);
    }
    free(want);
    free(got);
}

static void test_formula(void **st) {
    (void)st;
    float *tab = make_table();
    const size_t d = 70001;
    float *x = wr_alloc_vec(d * sizeof(float)), *g = wr_alloc_vec(d * sizeof(float));
    for (size_t j = 0; j < d; j++) x[j] = 0.01f * unit_sym();
    const uint32_t o = 65000;  // wraps within the first 536 elements
    double s = wr_synth_grad_ref(x, tab, o, d, g), s2 = 0;
    for (size_t j = 0; j < d; j++) {
        float want = 0.01f * x[j] + 0.01f * tab[(j + o) % WR_SYNTH_TABLE];
        if (memcmp(&want, &g[j], 4) != 0) fail_msg("g[%zu] = %.9g, want %.9g", j, g[j], want);
        s2 += (double)g[j] * g[j];
    }
    // the fixed summation order only changes rounding
    assert_true(fabs(s - s2) <= 1e-5 * s2);
    assert_true(s > 0);
    assert_true(wr_synth_grad_ref(x, tab, o, 0, g) == 0.0);
    free(x);
    free(g);
    free(tab);
}

static void test_versions_match(void **st) {
    (void)st;
    float *tab = make_table();
    const size_t dmax = 2 * WR_SYNTH_BLOCK + 100;
    float *x = wr_alloc_vec((dmax + 16) * sizeof(float));
    for (size_t j = 0; j < dmax + 16; j++) x[j] = 0.01f * unit_sym();
    const size_t sizes[] = {0,
                            1,
                            15,
                            31,
                            32,
                            33,
                            63,
                            64,
                            65,
                            1000,
                            WR_SYNTH_BLOCK - 1,
                            WR_SYNTH_BLOCK,
                            WR_SYNTH_BLOCK + 31,
                            WR_SYNTH_BLOCK + 32,
                            2 * WR_SYNTH_BLOCK + 100};
    const uint32_t offs[] = {
        0, 1, 31, 32, 33, WR_SYNTH_TABLE - 32, WR_SYNTH_TABLE - 31, WR_SYNTH_TABLE - 1, 12345};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        for (size_t k = 0; k < sizeof offs / sizeof offs[0]; k++) {
            check_case(tab, x, sizes[i], offs[k], 0, 0);
            check_case(tab, x, sizes[i], offs[k], 3, 1);  // misaligned x and g
        }
    for (int r = 0; r < 20; r++) {
        size_t d = (size_t)(xs64() % dmax);
        check_case(tab, x, d, (uint32_t)xs64() & (WR_SYNTH_TABLE - 1), (size_t)(xs64() % 8),
                   (size_t)(xs64() % 8));
    }
    free(x);
    free(tab);
}

// Past WR_SYNTH_STREAM_BYTES with g 64-byte aligned: the streaming-store path
// (and with g misaligned, the plain one at the same size).
static void test_streaming_path(void **st) {
    (void)st;
    float *tab = make_table();
    const size_t d = WR_SYNTH_STREAM_BYTES / sizeof(float) + 1000 + 7;
    float *x = wr_alloc_vec((d + 16) * sizeof(float));
    for (size_t j = 0; j < d + 16; j++) x[j] = 0.01f * unit_sym();
    check_case(tab, x, d, 777, 0, 0);
    check_case(tab, x, d, 40000, 0, 16);  // g + 16 floats: still 64-byte aligned
    check_case(tab, x, d, 5, 1, 2);       // g misaligned: plain stores
    free(x);
    free(tab);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_formula),
        cmocka_unit_test(test_versions_match),
        cmocka_unit_test(test_streaming_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
