// test_fp8_gemm.c — wr_fp8_gemm against a double-precision product of the
// decoded inputs (and against sgemm of the dequantized inputs), for all four
// transpose combinations, all format pairs, odd sizes, padded strides,
// alpha/beta, the blocked paths (K blocks, N and M panels), degenerate sizes,
// concurrent callers, and wr_fp8_gemm_cached: the cached paths through the same
// checks, bit equality with the uncached call, and the cache key (hits, misses
// on every key field, growth).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cblas.h>

#include "fp8_gemm.h"
#include "hfp8.h"
#include "wr_common.h"

static int quick(void) {
    const char *e = getenv("WREN_TEST_QUICK");
    return e && e[0] && strcmp(e, "0") != 0;
}

static uint64_t xs_state = 0x2545F4914F6CDD1Dull;
static uint64_t xs64(void) {
    xs_state ^= xs_state << 13;
    xs_state ^= xs_state >> 7;
    xs_state ^= xs_state << 17;
    return xs_state;
}

// A random finite code (no NaN, no inf).
static uint8_t rand_code(enum wr_fp8_format f) {
    for (;;) {
        uint8_t c = (uint8_t)(xs64() >> 32);
        if (f == WR_FP8_E4M3B11 && c == 0x80) continue;
        if (f == WR_FP8_E5M2 && (c & 0x7F) >= 0x7C) continue;
        return c;
    }
}

static uint8_t *rand_codes(size_t n, enum wr_fp8_format f) {
    uint8_t *p = wr_malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) p[i] = rand_code(f);
    return p;
}

typedef struct {
    int ta, tb, M, N, K, lda, ldb, ldc;
    enum wr_fp8_format fa, fb;
    float alpha, beta;
} gcase;

// Element of op(X) at (i, k) from codes stored row-major with stride ld.
static double opel(const uint8_t *X, int trans, int ld, int i, int k, enum wr_fp8_format f) {
    size_t idx = trans ? (size_t)k * (size_t)ld + (size_t)i : (size_t)i * (size_t)ld + (size_t)k;
    static float tab[2][256];
    static int init;
    if (!init) {
        for (int c = 0; c < 256; c++) {
            tab[0][c] = wr_fp8_decode((uint8_t)c, WR_FP8_E4M3B11);
            tab[1][c] = wr_fp8_decode((uint8_t)c, WR_FP8_E5M2);
        }
        init = 1;
    }
    return (double)tab[f == WR_FP8_E5M2][X[idx]];
}

// run_case's operand caches: bit 0 caches A, bit 1 caches B (wr_fp8_gemm_cached);
// each call uses a fresh generation, so every call decodes into the cache.
static int g_cache_mode;
static wr_fp8_cache g_ca, g_cb;
static uint64_t g_gen;

// Runs one case; returns the largest error relative to its bound (must be <= 1).
static double run_case(const gcase *g, int check_sgemm) {
    size_t arows = g->ta ? (size_t)g->K : (size_t)g->M;
    size_t brows = g->tb ? (size_t)g->N : (size_t)g->K;
    uint8_t *A = rand_codes(arows * (size_t)g->lda, g->fa);
    uint8_t *B = rand_codes(brows * (size_t)g->ldb, g->fb);
    size_t csz = (size_t)g->M * (size_t)g->ldc;
    float *C = wr_malloc((csz ? csz : 1) * sizeof(float));
    float *C0 = wr_malloc((csz ? csz : 1) * sizeof(float));
    for (size_t i = 0; i < csz; i++) C0[i] = (float)((int)(xs64() % 2001) - 1000) / 64.0f;
    memcpy(C, C0, csz * sizeof(float));
    if (g_cache_mode) {
        g_gen++;
        wr_fp8_gemm_cached(g->ta, g->tb, g->M, g->N, g->K, g->alpha, A, g->fa, g->lda,
                           (g_cache_mode & 1) ? &g_ca : NULL, g_gen, B, g->fb, g->ldb,
                           (g_cache_mode & 2) ? &g_cb : NULL, g_gen, g->beta, C, g->ldc);
    } else {
        wr_fp8_gemm(g->ta, g->tb, g->M, g->N, g->K, g->alpha, A, g->fa, g->lda, B, g->fb, g->ldb, g->beta, C,
                    g->ldc);
    }

    float *Cs = NULL;
    if (check_sgemm) {  // sgemm of the dequantized inputs
        float *Ad = wr_malloc((arows * (size_t)g->lda + 1) * sizeof(float));
        float *Bd = wr_malloc((brows * (size_t)g->ldb + 1) * sizeof(float));
        wr_fp8_decode_array_ref(A, Ad, arows * (size_t)g->lda, g->fa);
        wr_fp8_decode_array_ref(B, Bd, brows * (size_t)g->ldb, g->fb);
        Cs = wr_malloc((csz ? csz : 1) * sizeof(float));
        memcpy(Cs, C0, csz * sizeof(float));
        if (g->M && g->N)
            cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans, g->tb ? CblasTrans : CblasNoTrans,
                        g->M, g->N, g->K, g->alpha, Ad, g->lda, Bd, g->ldb, g->beta, Cs, g->ldc);
        free(Ad);
        free(Bd);
    }
    const double u = 0x1p-24;
    double worst = 0;
    for (int i = 0; i < g->M; i++) {
        for (int j = 0; j < g->ldc; j++) {
            size_t idx = (size_t)i * (size_t)g->ldc + (size_t)j;
            if (j >= g->N) {  // padding of C is never touched
                assert_int_equal(memcmp(&C[idx], &C0[idx], 4), 0);
                continue;
            }
            double s = 0, sa = 0;
            for (int k = 0; k < g->K; k++) {
                double p = opel(A, g->ta, g->lda, i, k, g->fa) * opel(B, g->tb, g->ldb, k, j, g->fb);
                s += p;
                sa += fabs(p);
            }
            double cb = g->beta == 0.0f ? 0.0 : (double)g->beta * (double)C0[idx];
            double want = (double)g->alpha * s + cb;
            // fp32 rounding of K products/sums, the alpha and beta products and the final add.
            double bound = (double)(g->K + 4) * u * (fabs((double)g->alpha) * sa + fabs(cb)) + 1e-30;
            double err = fabs((double)C[idx] - want);
            if (!(err <= bound)) {
                print_error("ta=%d tb=%d M=%d N=%d K=%d %s*%s alpha=%g beta=%g: C[%d][%d]=%.9g "
                            "want %.9g (bound %.3g)\n",
                            g->ta, g->tb, g->M, g->N, g->K, wr_fp8_format_name(g->fa),
                            wr_fp8_format_name(g->fb), (double)g->alpha, (double)g->beta, i, j,
                            (double)C[idx], want, bound);
                fail();
            }
            if (err / bound > worst) worst = err / bound;
            if (Cs) {
                double es = fabs((double)C[idx] - (double)Cs[idx]);
                assert_true(es <= 2 * bound);
            }
        }
    }
    free(A), free(B), free(C), free(C0), free(Cs);
    return worst;
}

static void test_all_combinations(void **state) {
    (void)state;
    const int sizes[][3] = {{1, 1, 1},      {7, 13, 5},  {33, 17, 65}, {64, 64, 64},
                            {129, 67, 301}, {5, 200, 3}, {250, 1, 77}};
    const float ab[][2] = {{1.0f, 0.0f}, {0.5f, -1.25f}, {-2.0f, 1.0f}, {1.0f, 1.0f}};
    const enum wr_fp8_format fm[2] = {WR_FP8_E4M3B11, WR_FP8_E5M2};
    int ncase = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int fa = 0; fa < 2; fa++)
                    for (int fb = 0; fb < 2; fb++) {
                        int M = sizes[si][0], N = sizes[si][1], K = sizes[si][2];
                        int pad = (int)(xs64() % 3) * 5;  // sometimes padded strides
                        const float *s = ab[(size_t)ncase % 4];
                        gcase g = {ta,      tb,     M,      N,    K,   (ta ? M : K) + pad, (tb ? K : N) + pad,
                                   N + pad, fm[fa], fm[fb], s[0], s[1]};
                        run_case(&g, 1);
                        ncase++;
                    }
    print_message("fp8 gemm: %d cases checked\n", ncase);
}

// Small scratch budgets force K blocks (beta then 1), N panels and M panels with
// odd remainders, on every transpose/format combination.
static void test_blocked_small_budget(void **state) {
    (void)state;
    const int sizes[][3] = {{129, 67, 301}, {33, 17, 65}, {250, 1, 77}, {1, 300, 500}, {70, 90, 1}};
    const size_t budgets[] = {4096, 1000, 50000};
    const enum wr_fp8_format fm[2] = {WR_FP8_E4M3B11, WR_FP8_E5M2};
    for (size_t bi = 0; bi < sizeof budgets / sizeof budgets[0]; bi++) {
        wr_fp8_gemm_set_scratch_budget(budgets[bi]);
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
            for (int ta = 0; ta < 2; ta++)
                for (int tb = 0; tb < 2; tb++) {
                    int M = sizes[si][0], N = sizes[si][1], K = sizes[si][2];
                    gcase g = {ta,
                               tb,
                               M,
                               N,
                               K,
                               (ta ? M : K) + 3,
                               (tb ? K : N) + 1,
                               N + 2,
                               fm[(si + (size_t)ta) % 2],
                               fm[(si + (size_t)tb + 1) % 2],
                               0.75f,
                               (si % 2) ? -0.5f : 0.0f};
                    run_case(&g, 1);
                }
    }
    wr_fp8_gemm_set_scratch_budget(0);
}

// Past the default budget with real sizes: wide (N panels) and tall (M panels).
static void test_default_budget_panels(void **state) {
    (void)state;
    int big = quick() ? 9000 : 28000, K = quick() ? 2000 : 600;  // K * (M + N) > 16 Mi
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            gcase w = {ta,          tb,    2,    big, K, ta ? 2 : K, tb ? K : big, big, WR_FP8_E4M3B11,
                       WR_FP8_E5M2, 0.75f, -0.5f};
            run_case(&w, 0);
            gcase t = {ta,   tb,  big, 3, K, ta ? big : K, tb ? K : 3, 3, WR_FP8_E5M2, WR_FP8_E4M3B11,
                       1.0f, 1.0f};
            run_case(&t, 0);
        }
}

// The cached paths (A, B or both from caches, the rest through the scratch)
// through the same double-precision checks, unblocked and under small budgets.
static void test_cached_paths(void **state) {
    (void)state;
    const int sizes[][3] = {{7, 13, 5}, {129, 67, 301}, {250, 1, 77}, {1, 300, 500}};
    const size_t budgets[] = {0, 4096, 1000};
    for (size_t bi = 0; bi < sizeof budgets / sizeof budgets[0]; bi++) {
        wr_fp8_gemm_set_scratch_budget(budgets[bi]);
        for (int mode = 1; mode <= 3; mode++)
            for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
                for (int ta = 0; ta < 2; ta++)
                    for (int tb = 0; tb < 2; tb++) {
                        int M = sizes[si][0], N = sizes[si][1], K = sizes[si][2];
                        gcase g = {ta,
                                   tb,
                                   M,
                                   N,
                                   K,
                                   (ta ? M : K) + 3,
                                   (tb ? K : N) + 1,
                                   N + 2,
                                   (si % 2) ? WR_FP8_E5M2 : WR_FP8_E4M3B11,
                                   (ta + tb) % 2 ? WR_FP8_E5M2 : WR_FP8_E4M3B11,
                                   0.75f,
                                   (si % 2) ? -0.5f : 0.0f};
                        g_cache_mode = mode;
                        run_case(&g, 1);
                    }
    }
    g_cache_mode = 0;
    wr_fp8_gemm_set_scratch_budget(0);
    wr_fp8_cache_free(&g_ca);
    wr_fp8_cache_free(&g_cb);
}

// Cache semantics: bit-equal to wr_fp8_gemm; a key match skips the decode (seen
// through the decode counter and, since the contract says same generation =
// same codes, through codes changed behind the cache's back); any change of
// pointer, generation, format, shape or stride decodes again; buf grows.
static void test_cache_key(void **state) {
    (void)state;
    const int M = 37, N = 29, K = 53;
    uint8_t *A = rand_codes((size_t)M * K + 64, WR_FP8_E4M3B11);
    uint8_t *B = rand_codes((size_t)K * N + 64, WR_FP8_E5M2);
    float *C0 = wr_malloc(sizeof(float) * M * N), *C1 = wr_malloc(sizeof(float) * M * N);
    wr_fp8_cache ca, cb;
    wr_fp8_cache_init(&ca, 10);  // too small: the first use grows it
    wr_fp8_cache_init(&cb, 0);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int lda = ta ? M : K, ldb = tb ? K : N;
            wr_fp8_cache_invalidate(&ca);
            wr_fp8_cache_invalidate(&cb);
            uint64_t da = ca.decodes, db = cb.decodes;
            wr_fp8_gemm(ta, tb, M, N, K, 0.5f, A, WR_FP8_E4M3B11, lda, B, WR_FP8_E5M2, ldb, 0.0f, C0, N);
            for (int rep = 0; rep < 3; rep++) {
                wr_fp8_gemm_cached(ta, tb, M, N, K, 0.5f, A, WR_FP8_E4M3B11, lda, &ca, 5, B, WR_FP8_E5M2, ldb,
                                   &cb, 9, 0.0f, C1, N);
                assert_memory_equal(C0, C1, sizeof(float) * M * N);
            }
            assert_true(ca.decodes == da + 1 && cb.decodes == db + 1);
            assert_true(ca.cap >= (size_t)M * K);
        }
    // Same key, codes changed without a new generation: the stale decoding is
    // used (the documented contract); a new generation picks the change up.
    int lda = K, ldb = N;
    wr_fp8_gemm_cached(0, 0, M, N, K, 1.0f, A, WR_FP8_E4M3B11, lda, &ca, 1, B, WR_FP8_E5M2, ldb, &cb, 1, 0.0f,
                       C0, N);
    uint8_t keep = A[0];
    A[0] = 0x58;  // a nonzero E4M3-b11 value, different from before for at least row 0
    if (keep == 0x58) A[0] = 0x50;
    wr_fp8_gemm_cached(0, 0, M, N, K, 1.0f, A, WR_FP8_E4M3B11, lda, &ca, 1, B, WR_FP8_E5M2, ldb, &cb, 1, 0.0f,
                       C1, N);
    assert_memory_equal(C0, C1, sizeof(float) * M * N);
    uint64_t da = ca.decodes;
    wr_fp8_gemm_cached(0, 0, M, N, K, 1.0f, A, WR_FP8_E4M3B11, lda, &ca, 2, B, WR_FP8_E5M2, ldb, &cb, 1, 0.0f,
                       C1, N);
    assert_true(ca.decodes == da + 1);
    float *C2 = wr_malloc(sizeof(float) * M * N);
    wr_fp8_gemm(0, 0, M, N, K, 1.0f, A, WR_FP8_E4M3B11, lda, B, WR_FP8_E5M2, ldb, 0.0f, C2, N);
    assert_memory_equal(C1, C2, sizeof(float) * M * N);
    assert_true(memcmp(C0, C1, sizeof(float) * N) != 0);  // row 0 did change
    // Each other key field: pointer, format, shape, stride.
    da = ca.decodes;
    wr_fp8_gemm_cached(0, 0, M, N, K, 1.0f, A + 1, WR_FP8_E4M3B11, lda, &ca, 2, B, WR_FP8_E5M2, ldb, &cb, 1,
                       0.0f, C1, N);
    assert_true(ca.decodes == ++da);
    wr_fp8_gemm_cached(0, 0, M, N, K, 1.0f, A + 1, WR_FP8_E5M2, lda, &ca, 2, B, WR_FP8_E5M2, ldb, &cb, 1,
                       0.0f, C1, N);
    assert_true(ca.decodes == ++da);
    wr_fp8_gemm_cached(0, 0, M - 1, N, K, 1.0f, A + 1, WR_FP8_E5M2, lda, &ca, 2, B, WR_FP8_E5M2, ldb, &cb, 1,
                       0.0f, C1, N);
    assert_true(ca.decodes == ++da);
    wr_fp8_gemm_cached(0, 0, M - 1, N, K, 1.0f, A + 1, WR_FP8_E5M2, lda + 1, &ca, 2, B, WR_FP8_E5M2, ldb, &cb,
                       1, 0.0f, C1, N);
    assert_true(ca.decodes == ++da);
    wr_fp8_gemm_cached(0, 0, M - 1, N, K, 1.0f, A + 1, WR_FP8_E5M2, lda + 1, &ca, 2, B, WR_FP8_E5M2, ldb, &cb,
                       1, 0.0f, C1, N);
    assert_true(ca.decodes == da);  // and the same again hits
    // The key is the stored array, not its use: A (M x K stored) decoded as
    // op(A) = A serves a later call that uses it as op(B) = A^T, no decode.
    float *E = wr_malloc(sizeof(float) * N * M), *E2 = wr_malloc(sizeof(float) * N * M);
    wr_fp8_gemm_cached(0, 0, M, N, K, 1.0f, A, WR_FP8_E4M3B11, K, &ca, 7, B, WR_FP8_E5M2, N, &cb, 7, 0.0f, C1,
                       N);
    da = ca.decodes;
    wr_fp8_gemm_cached(1, 1, N, M, K, 1.0f, B, WR_FP8_E5M2, N, NULL, 0, A, WR_FP8_E4M3B11, K, &ca, 7, 0.0f, E,
                       M);
    assert_true(ca.decodes == da);
    wr_fp8_gemm(1, 1, N, M, K, 1.0f, B, WR_FP8_E5M2, N, A, WR_FP8_E4M3B11, K, 0.0f, E2, M);
    assert_memory_equal(E, E2, sizeof(float) * N * M);
    free(E), free(E2);
    wr_fp8_cache_free(&ca);
    wr_fp8_cache_free(&cb);
    wr_fp8_cache_free(NULL);
    free(A), free(B), free(C0), free(C1), free(C2);
}

static void test_degenerate(void **state) {
    (void)state;
    uint8_t A[64] = {0x58}, B[64] = {0x3C};
    float C[16];
    // M = 0 / N = 0: nothing touched.
    for (int i = 0; i < 16; i++) C[i] = 3.0f;
    wr_fp8_gemm(0, 0, 0, 4, 4, 1.0f, A, WR_FP8_E4M3B11, 4, B, WR_FP8_E5M2, 4, 0.0f, C, 4);
    wr_fp8_gemm(0, 0, 4, 0, 4, 1.0f, A, WR_FP8_E4M3B11, 4, B, WR_FP8_E5M2, 1, 0.0f, C, 1);
    for (int i = 0; i < 16; i++) assert_true(C[i] == 3.0f);
    // K = 0: C = beta * C.
    wr_fp8_gemm(0, 0, 4, 4, 0, 1.0f, A, WR_FP8_E4M3B11, 1, B, WR_FP8_E5M2, 4, 0.5f, C, 4);
    for (int i = 0; i < 16; i++) assert_true(C[i] == 1.5f);
    // alpha = 0, beta = 0: C = 0 even if C held NaN (BLAS convention).
    for (int i = 0; i < 16; i++) C[i] = NAN;
    wr_fp8_gemm(0, 0, 4, 4, 4, 0.0f, A, WR_FP8_E4M3B11, 4, B, WR_FP8_E5M2, 4, 0.0f, C, 4);
    for (int i = 0; i < 16; i++) assert_true(C[i] == 0.0f && !signbit(C[i]));
    // beta = 0 overwrites NaN in C with the product.
    memset(A, 0x58, sizeof A);  // 1.0 in E4M3-b11
    memset(B, 0x3C, sizeof B);  // 1.0 in E5M2
    for (int i = 0; i < 16; i++) C[i] = NAN;
    wr_fp8_gemm(1, 1, 4, 4, 4, 2.0f, A, WR_FP8_E4M3B11, 4, B, WR_FP8_E5M2, 4, 0.0f, C, 4);
    for (int i = 0; i < 16; i++) assert_true(C[i] == 8.0f);
    // Extremes of the formats: max * max summed stays finite in fp32.
    memset(A, 0x7F, sizeof A);  // 30
    memset(B, 0x7B, sizeof B);  // 57344
    wr_fp8_gemm(0, 0, 4, 4, 4, 1.0f, A, WR_FP8_E4M3B11, 4, B, WR_FP8_E5M2, 4, 0.0f, C, 4);
    for (int i = 0; i < 16; i++) assert_true(C[i] == 4.0f * 30.0f * 57344.0f);
    // Specials pass through as IEEE arithmetic does: an E5M2 NaN code in row 1
    // of A makes row 1 of C NaN; inf in row 2 gives inf (all B values are > 0).
    memset(A, 0x3C, sizeof A);  // 1.0 in E5M2
    memset(B, 0x58, sizeof B);  // 1.0 in E4M3-b11
    A[1 * 4 + 2] = 0x7E;        // NaN
    A[2 * 4 + 0] = 0x7C;        // +inf
    wr_fp8_gemm(0, 0, 4, 4, 4, 1.0f, A, WR_FP8_E5M2, 4, B, WR_FP8_E4M3B11, 4, 0.0f, C, 4);
    for (int j = 0; j < 4; j++) {
        assert_true(C[0 * 4 + j] == 4.0f && C[3 * 4 + j] == 4.0f);
        assert_true(isnan(C[1 * 4 + j]));
        assert_true(isinf(C[2 * 4 + j]) && C[2 * 4 + j] > 0);
    }
    memset(A, 0x7F, sizeof A);
    memset(B, 0x7B, sizeof B);
    // Scratch can be released and is re-created on demand.
    wr_fp8_gemm_release_scratch();
    wr_fp8_gemm(0, 0, 4, 4, 4, 1.0f, A, WR_FP8_E4M3B11, 4, B, WR_FP8_E5M2, 4, 0.0f, C, 4);
    assert_true(C[5] == 4.0f * 30.0f * 57344.0f);
    wr_fp8_gemm_release_scratch();
}

static void *thread_main(void *arg) {
    int *ok = arg;
    enum { M = 37, N = 29, K = 53 };
    static const uint8_t codes[4] = {0x58, 0x5A, 0xE2, 0x3D};  // 1, 1.25, -2.5, 0.1015625
    uint8_t A[M * K], B[K * N];
    for (int i = 0; i < M * K; i++) A[i] = codes[(i * 7 + *ok) % 4];
    for (int i = 0; i < K * N; i++) B[i] = codes[(i * 3) % 4];
    float C[M * N];
    *ok = 1;
    for (int rep = 0; rep < 50; rep++) {
        wr_fp8_gemm(0, 0, M, N, K, 1.0f, A, WR_FP8_E4M3B11, K, B, WR_FP8_E4M3B11, N, 0.0f, C, N);
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double s = 0;
                for (int k = 0; k < K; k++)
                    s += (double)wr_fp8_decode(A[i * K + k], WR_FP8_E4M3B11) *
                         (double)wr_fp8_decode(B[k * N + j], WR_FP8_E4M3B11);
                if (fabs((double)C[i * N + j] - s) > 1e-4 * (fabs(s) + 1)) *ok = 0;
            }
    }
    wr_fp8_gemm_release_scratch();
    return NULL;
}

// Two threads call at once: each has its own scratch.
static void test_concurrent_callers(void **state) {
    (void)state;
    pthread_t th[2];
    int ok[2] = {0, 1};
    for (int t = 0; t < 2; t++) assert_int_equal(pthread_create(&th[t], NULL, thread_main, &ok[t]), 0);
    for (int t = 0; t < 2; t++) pthread_join(th[t], NULL);
    assert_true(ok[0] == 1 && ok[1] == 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_combinations),
        cmocka_unit_test(test_blocked_small_budget),
        cmocka_unit_test(test_default_budget_panels),
        cmocka_unit_test(test_degenerate),
        cmocka_unit_test(test_concurrent_callers),
        cmocka_unit_test(test_cached_paths),
        cmocka_unit_test(test_cache_key),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    wr_fp8_gemm_release_scratch();
    return rc;
}
