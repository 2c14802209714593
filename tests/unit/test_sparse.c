// test_sparse.c — the sparse-left-operand GEMM (worker/layers_sparse.h) at
// every ISA level this CPU has (AVX2, AVX-512), bit for bit against the scalar
// reference on the dense operand: plain and transposed operands, densities
// from 0 to 1 (+-0 entries skipped), N of 16 to 784 (column tails), column
// blocks cut at odd places, row ranges (threads), strides, alpha; the lists'
// layout; the transpose; wr_spmm_ok's rule.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "layers_sparse.h"
#include "rng.h"
#include "wr_common.h"

static uint32_t g_ctr;
static float urand(float lo, float hi) {
    uint32_t r = wr_rng_u32(wr_rng_key_make(17, 4, 9), g_ctr++);
    return lo + (hi - lo) * (float)(r >> 8) * (1.0f / 16777216.0f);
}

// One case at the current level: op(A) rows x cols (density d; negative zeros
// too), B cols x N (stride N + 3), C stride N + 5 computed in 1 or 3 row ranges.
static void one_case(int trans, int rows, int cols, int N, float d, int kb, int parts) {
    const int lda = (trans ? rows : cols) + 2, ldb = N + 3, ldc = N + 5;
    const int arows = trans ? cols : rows;
    float *A = malloc(sizeof(float) * ((size_t)arows * lda + 1)), *B = malloc(sizeof(float) * cols * ldb + 4);
    float *C = malloc(sizeof(float) * rows * ldc + 4), *R = malloc(sizeof(float) * rows * ldc + 4);
    for (int i = 0; i < arows * lda; i++) {
        float u = urand(0, 1);
        A[i] = u < d ? urand(-2, 2) : (u < d + (1 - d) / 2 ? 0.0f : -0.0f);
    }
    for (int i = 0; i < cols * ldb; i++) B[i] = urand(-3, 3);
    for (int i = 0; i < rows * ldc; i++) C[i] = R[i] = NAN;  // beta = 0: overwritten
    const float alpha = 0.37f;
    wr_spmm_ref(trans, rows, cols, A, lda, B, ldb, N, alpha, R, ldc);
    wr_sprows s;
    wr_sprows_alloc(&s, rows + 3, cols + 1);
    wr_sprows_build(&s, A, lda, rows, cols, trans, kb);
    for (int p = 0; p < parts; p++)
        wr_spmm(&s, B, ldb, N, alpha, C, ldc, rows * p / parts, rows * (p + 1) / parts);
    for (int r = 0; r < rows; r++)
        if (memcmp(C + (size_t)r * ldc, R + (size_t)r * ldc, sizeof(float) * N) != 0)
            fail_msg("%s trans %d %dx%d N %d d %.2f kb %d: row %d differs from the reference",
                     wr_isa_name(wr_cpu_level()), trans, rows, cols, N, (double)d, kb, r);
    wr_sprows_free(&s);
    free(A), free(B), free(C), free(R);
}

static void all_cases(void) {
    static const int Ns[] = {16, 32, 48, 128, 144, 256, 528, 784};
    static const float ds[] = {0.0f, 0.1f, 0.5f, 1.0f};
    for (int t = 0; t < 2; t++)
        for (size_t n = 0; n < sizeof Ns / sizeof Ns[0]; n++)
            for (size_t di = 0; di < sizeof ds / sizeof ds[0]; di++) {
                one_case(t, 9, 37, Ns[n], ds[di], wr_spmm_kb(), 1);
                one_case(t, 7, 100, Ns[n], ds[di], 13, 3);
            }
    one_case(0, 1, 1, 16, 1.0f, 1, 1);
    one_case(1, 5, 0, 16, 1.0f, 4, 1);  // empty sum: alpha * +0
    one_case(0, 40, 784, 512, 0.5f, wr_spmm_kb(), 3);
    one_case(1, 96, 128, 256, 0.5f, wr_spmm_kb(), 2);
}

static void test_spmm_vs_ref(void **st) {
    (void)st;
    int ran = 0;
    for (int lvl = WR_ISA_AVX2; lvl <= (int)wr_cpu_max_level(); lvl++) {
        wr_cpu_force_level(lvl);
        if ((int)wr_cpu_level() != lvl) continue;  // WREN_SIMD caps it lower
        all_cases();
        ran++;
    }
    wr_cpu_force_level(-1);
    if (!ran) skip();
}

// A product that underflows makes the accumulator -0; the skipped +0 term
// after it leaves it -0 (the dense chain would give +0): kernel == reference.
static void test_spmm_negative_zero(void **st) {
    (void)st;
    if (wr_cpu_level() < WR_ISA_AVX2) skip();
    const float A[2] = {1e-30f, 0.0f};
    float B[2 * 16], C[16], R[16];
    for (int j = 0; j < 16; j++) B[j] = -1e-30f, B[16 + j] = 1.0f;
    wr_spmm_ref(0, 1, 2, A, 2, B, 16, 16, 0.5f, R, 16);
    assert_true(R[0] == 0.0f && signbit(R[0]));
    wr_sprows s;
    wr_sprows_alloc(&s, 1, 2);
    wr_sprows_build(&s, A, 2, 1, 2, 0, wr_spmm_kb());
    wr_spmm(&s, B, 16, 16, 0.5f, C, 16, 0, 1);
    assert_memory_equal(C, R, sizeof C);
    wr_sprows_free(&s);
}

// The lists: per row the non-zero entries in column order, block starts at
// multiples of kb, the same for A and for the transposed storage of A.
static void test_sprows_layout(void **st) {
    (void)st;
    const float A[3 * 5] = {0, 1, 0, 2, 3, -0.0f, 0, 0, 0, 0, 4, 0, 5, 0, NAN};
    float At[5 * 3];
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 5; c++) At[c * 3 + r] = A[r * 5 + c];
    for (int t = 0; t < 2; t++) {
        wr_sprows s;
        wr_sprows_alloc(&s, 3, 5);
        wr_sprows_build(&s, t ? At : A, t ? 3 : 5, 3, 5, t, 2);
        assert_int_equal(s.nkb, 3);
        static const int32_t bs[3][4] = {{0, 1, 2, 3}, {5, 5, 5, 5}, {10, 11, 12, 13}};
        for (int r = 0; r < 3; r++)
            for (int b = 0; b < 4; b++) assert_int_equal(s.bstart[r * 4 + b], bs[r][b]);
        static const int32_t idx[] = {1, 3, 4}, idx2[] = {0, 2, 4};
        for (int e = 0; e < 3; e++) {
            assert_int_equal(s.idx[e], idx[e]);
            assert_int_equal(s.idx[10 + e], idx2[e]);
        }
        assert_true(s.val[0] == 1 && s.val[1] == 2 && s.val[2] == 3 && s.val[10] == 4 && s.val[11] == 5);
        assert_true(isnan(s.val[12]));  // NaN is not zero: kept
        wr_sprows_free(&s);
    }
}

// The vector listers (wr_sprows_rows_avx2, kb a multiple of 8, and
// wr_sprows_rows_avx512, kb a multiple of 16) against the scalar one at every
// level the CPU has: the same block starts and the same listed entries, NaN
// and inf kept and +-0 dropped, columns not a multiple of 8 or 16, and lists
// allocated to the exact shape (the full-vector stores past a row's count
// land in the next row's slot or the allocation's padding: ASan).
static void test_vector_listers(void **st) {
    (void)st;
    if (wr_cpu_max_level() < WR_ISA_AVX2 || wr_cpu_level() < WR_ISA_AVX2) skip();
    static const int shapes[][3] = {{5, 37, 16}, {3, 100, 48}, {4, 16, 16}, {2, 7, 32},
                                    {6, 45, 8},  {3, 96, 24},  {2, 5, 8},   {4, 130, 64}};
    for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
        const int rows = shapes[c][0], cols = shapes[c][1], kb = shapes[c][2], lda = cols + 1;
        float *A = malloc(sizeof(float) * (size_t)rows * lda);
        for (int i = 0; i < rows * lda; i++) {
            float u = urand(0, 1);
            A[i] = u < 0.3f ? 0.0f : u < 0.5f ? -0.0f : u < 0.55f ? NAN : u < 0.6f ? -INFINITY : urand(-2, 2);
        }
        wr_sprows s[3];
        const int top = (int)wr_cpu_level();  // the highest level WREN_SIMD allows
        for (int lvl = WR_ISA_SCALAR; lvl <= top; lvl++) {
            wr_cpu_force_level(lvl);
            assert_int_equal(wr_cpu_level(), lvl);
            wr_sprows_alloc(&s[lvl], rows, cols);
            wr_sprows_build(&s[lvl], A, lda, rows, cols, 0, kb);
        }
        wr_cpu_force_level(-1);
        const int nb = s[0].nkb + 1;
        for (int lvl = WR_ISA_AVX2; lvl <= top; lvl++) {
            assert_int_equal(s[lvl].nkb, s[0].nkb);
            assert_memory_equal(s[lvl].bstart, s[0].bstart, sizeof(int32_t) * rows * nb);
            for (int r = 0; r < rows; r++) {
                const int e0 = s[0].bstart[r * nb], e1 = s[0].bstart[r * nb + nb - 1];
                assert_memory_equal(s[lvl].idx + e0, s[0].idx + e0, sizeof(int32_t) * (e1 - e0));
                assert_memory_equal(s[lvl].val + e0, s[0].val + e0, sizeof(float) * (e1 - e0));
                for (int e = e0; e < e1; e++) assert_false(s[0].val[e] == 0.0f);
            }
        }
        for (int lvl = WR_ISA_SCALAR; lvl <= top; lvl++) wr_sprows_free(&s[lvl]);
        free(A);
    }
}

static void test_transpose(void **st) {
    (void)st;
    static const int shapes[][2] = {{70, 45}, {88, 45}, {16, 8}, {512, 256}, {3, 5}};
    for (int lvl = 0; lvl <= (int)wr_cpu_max_level(); lvl++)
        for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
            wr_cpu_force_level(lvl);
            const int M = shapes[c][0], N = shapes[c][1];
            float *a = malloc(sizeof(float) * M * N), *t = malloc(sizeof(float) * M * N);
            for (int i = 0; i < M * N; i++) a[i] = (float)i;
            wr_transpose(a, M, N, t);
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) assert_true(t[j * M + i] == a[i * N + j]);
            free(a), free(t);
        }
    wr_cpu_force_level(-1);
}

static void test_spmm_ok(void **st) {
    (void)st;
    wr_cpu_force_level(WR_ISA_SCALAR);
    assert_false(wr_spmm_ok(512));
    wr_cpu_force_level(-1);
    if (wr_cpu_level() < WR_ISA_AVX2) skip();
    assert_true(wr_spmm_ok(16) && wr_spmm_ok(512) && wr_spmm_ok(1568));
    assert_false(wr_spmm_ok(0) || wr_spmm_ok(10) || wr_spmm_ok(8) || wr_spmm_ok(520));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spmm_vs_ref),    cmocka_unit_test(test_sprows_layout),
        cmocka_unit_test(test_vector_listers), cmocka_unit_test(test_transpose),
        cmocka_unit_test(test_spmm_ok),        cmocka_unit_test(test_spmm_negative_zero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
