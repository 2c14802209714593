// layers_bf16.c — the BF16 GEMM's packing, dispatch and scalar reference (layers_bf16.h).
#include "layers_bf16.h"

#include <stdatomic.h>
#include <string.h>

#include "cpu.h"
#include "layers_sparse.h"
#include "wr_common.h"

int wr_bf16_level(void) {
    // CPUID does not change (a racing first call stores the same value); the
    // level is checked every time (tests force it)
    static atomic_int has = -1;
    if (atomic_load_explicit(&has, memory_order_relaxed) < 0)
        atomic_store_explicit(&has, __builtin_cpu_supports("avx512bf16") ? 1 : 0, memory_order_relaxed);
    return atomic_load_explicit(&has, memory_order_relaxed) && wr_cpu_level() == WR_ISA_AVX512;
}

int wr_bf16_nt_ok(int N, int K) { return wr_bf16_level() && N > 0 && N % 16 == 0 && K > 0 && K % 2 == 0; }

static uint32_t top16(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u >> 16;
}

void wr_bf16_pairs(const float *A, int rows, int K, int lda, uint32_t *w) {
    const int P = K / 2;
    for (int r = 0; r < rows; r++) {
        const float *a = A + (size_t)r * lda;
        uint32_t *o = w + (size_t)r * P;
        for (int p = 0; p < P; p++) o[p] = top16(a[2 * p]) | top16(a[2 * p + 1]) << 16;
    }
}

void wr_bf16_pack_nt(const float *B, int N, int K, int ldb, uint32_t *tmp, uint32_t *bp) {
    wr_bf16_pairs(B, N, K, ldb, tmp);
    // a transpose of 32-bit words (moved as floats: the tile transpose only shuffles bits)
    wr_transpose((const float *)tmp, N, K / 2, (float *)bp);
}

void wr_bf16_gemm_nt(int N, int K, float alpha, const uint32_t *aw, const uint32_t *bp, float *C, int r0,
                     int r1) {
    WR_CHECK(wr_bf16_nt_ok(N, K) && r0 >= 0 && r0 <= r1);
    wr_bf16_gemm_nt_avx512(N, K, alpha, aw, bp, C, r0, r1);
}

static float bf16_value(float x) {  // the top 16 bits as a float
    uint32_t u = top16(x) << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

// gcc 12.2 at -O2 vectorizes this loop wrongly (the sum of 3 x 0.5 and -5 x
// 0.25 came out 1.75; -O0, -fno-tree-vectorize and clang give 0.25).
#if defined(__clang__)
#define WR_NO_VECTORIZE
#else
#define WR_NO_VECTORIZE __attribute__((optimize("no-tree-vectorize")))
#endif

WR_NO_VECTORIZE void wr_bf16_gemm_nt_ref(int M, int N, int K, float alpha, const float *A, int lda,
                                         const float *B, int ldb, float *C, int ldc) {
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            const float *a = A + (size_t)m * lda, *b = B + (size_t)n * ldb;
            float acc = 0.0f;
            for (int p = 0; p < K / 2; p++) {
                acc = acc + bf16_value(a[2 * p + 1]) * bf16_value(b[2 * p + 1]);
                acc = acc + bf16_value(a[2 * p]) * bf16_value(b[2 * p]);
            }
            C[(size_t)m * ldc + n] = alpha * acc;
        }
}
