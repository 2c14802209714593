// fp8_gemm.c — FP8 GEMM as OpenBLAS sgemm over exactly decoded fp32 blocks.
//
// Decoding is O(MK + KN) against O(MNK) for the product, so it is done once
// per element wherever the scratch budget allows: with the default budget
// (16 Mi floats = 64 MiB) any problem with K (M + N) <= 16 Mi — every size up to
// M = N = K = 2048 and the usual layer shapes — decodes A and B whole with the
// vector kernel and makes a single sgemm call. Larger problems are cut into
// K blocks (only when K itself is huge), N panels of op(B) and M panels of
// op(A): each B panel is decoded once per K block and each A panel once per
// (K block, N panel) pair, and a panel is at least thousands wide in the
// default budget, so the extra decoding stays a small fraction of the
// multiply-adds. K blocks after the first accumulate into C with beta = 1.
// A hand kernel would have to beat OpenBLAS' own packing and micro-kernels;
// decode-then-sgemm keeps the ratio to sgemm near 1 instead (bench_fp8_gemm).
// wr_fp8_gemm_cached lets a caller that multiplies the same codes in several
// GEMMs (a layer's forward and backward) keep their decoding in a cache it
// owns: a cached operand is decoded whole once and the blocks point into it.
#include "fp8_gemm.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "wr_common.h"

#define WR_SCRATCH_FLOATS_DEFAULT ((size_t)16 << 20)
#define WR_PANEL_MIN 16

static size_t g_budget = WR_SCRATCH_FLOATS_DEFAULT;

void wr_fp8_gemm_set_scratch_budget(size_t floats) { g_budget = floats ? floats : WR_SCRATCH_FLOATS_DEFAULT; }

static __thread float *t_scratch;
static __thread size_t t_cap;  // in floats

static float *scratch_get(size_t nfloats) {
    if (nfloats > t_cap) {
        free(t_scratch);
        t_scratch = wr_alloc_vec(nfloats * sizeof(float));
        t_cap = nfloats;
    }
    return t_scratch;
}

void wr_fp8_gemm_release_scratch(void) {
    free(t_scratch);
    t_scratch = NULL;
    t_cap = 0;
}

// Decodes rows x cols codes (row stride ld) into a dense rows x cols array.
static void decode_block(const uint8_t *src, int ld, int rows, int cols, enum wr_fp8_format f, float *dst) {
    if (ld == cols) {
        wr_fp8_decode_array(src, dst, (size_t)rows * (size_t)cols, f);
        return;
    }
    for (int r = 0; r < rows; r++)
        wr_fp8_decode_array(src + (size_t)r * (size_t)ld, dst + (size_t)r * (size_t)cols, (size_t)cols, f);
}

static void scale_c(int M, int N, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++) {
        float *row = C + (size_t)i * (size_t)ldc;
        if (beta == 0.0f)
            memset(row, 0, (size_t)N * sizeof(float));
        else if (beta != 1.0f)
            for (int j = 0; j < N; j++) row[j] *= beta;
    }
}

void wr_fp8_cache_init(wr_fp8_cache *c, size_t floats) {
    memset(c, 0, sizeof *c);
    if (floats) {
        c->buf = wr_alloc_vec(floats * sizeof(float));
        c->cap = floats;
    }
}

void wr_fp8_cache_free(wr_fp8_cache *c) {
    if (!c) return;
    free(c->buf);
    memset(c, 0, sizeof *c);
}

void wr_fp8_cache_invalidate(wr_fp8_cache *c) { c->valid = 0; }

const float *wr_fp8_cache_get(wr_fp8_cache *c, const uint8_t *src, uint64_t gen, enum wr_fp8_format f,
                              int rows, int cols, int ld) {
    if (c->valid && c->src == src && c->gen == gen && c->fmt == (int)f && c->rows == rows &&
        c->cols == cols && c->ld == ld)
        return c->buf;
    size_t n = (size_t)rows * (size_t)cols;
    if (n > c->cap) {
        free(c->buf);
        c->buf = wr_alloc_vec(n * sizeof(float));
        c->cap = n;
    }
    decode_block(src, ld, rows, cols, f, c->buf);
    c->src = src;
    c->gen = gen;
    c->fmt = (int)f;
    c->rows = rows;
    c->cols = cols;
    c->ld = ld;
    c->valid = 1;
    c->decodes++;
    return c->buf;
}

// Rows r0.. and columns c0.. (rows x cols) of an operand as the GEMM reads
// it untransposed; when `trans` is set X is stored transposed, so the block
// is columns r0.. and rows c0.. of X. Returns a pointer into the operand's
// whole decoding `all` (row stride: X's column count, cols_plain or
// cols_trans) for a cached operand, else decodes into the scratch s (row
// stride: the block's width). *ld = that stride.
static const float *operand_block(const uint8_t *X, int ldx, enum wr_fp8_format f, const float *all,
                                  int trans, size_t cols_plain, size_t cols_trans, size_t r0, size_t c0,
                                  int rows, int cols, float *s, int *ld) {
    size_t all_cols = cols_plain;
    if (trans) {
        size_t t0 = r0;
        int t = rows;
        r0 = c0, c0 = t0;
        rows = cols, cols = t;
        all_cols = cols_trans;
    }
    if (all) {
        *ld = (int)all_cols;
        return all + r0 * all_cols + c0;
    }
    decode_block(X + r0 * (size_t)ldx + c0, ldx, rows, cols, f, s);
    *ld = cols;
    return s;
}

void wr_fp8_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const uint8_t *A,
                 enum wr_fp8_format fa, int lda, const uint8_t *B, enum wr_fp8_format fb, int ldb, float beta,
                 float *C, int ldc) {
    wr_fp8_gemm_cached(trans_a, trans_b, M, N, K, alpha, A, fa, lda, NULL, 0, B, fb, ldb, NULL, 0, beta, C,
                       ldc);
}

void wr_fp8_gemm_cached(int trans_a, int trans_b, int M, int N, int K, float alpha, const uint8_t *A,
                        enum wr_fp8_format fa, int lda, wr_fp8_cache *ca, uint64_t gen_a, const uint8_t *B,
                        enum wr_fp8_format fb, int ldb, wr_fp8_cache *cb, uint64_t gen_b, float beta,
                        float *C, int ldc) {
    WR_CHECK(M >= 0 && N >= 0 && K >= 0);
    WR_CHECK(ldc >= WR_MAX(1, N));
    WR_CHECK(lda >= WR_MAX(1, trans_a ? M : K));
    WR_CHECK(ldb >= WR_MAX(1, trans_b ? K : N));
    if (M == 0 || N == 0) return;
    if (K == 0 || alpha == 0.0f) {
        scale_c(M, N, beta, C, ldc);
        return;
    }
    WR_CHECK(A != NULL && B != NULL && C != NULL);

    // Cached operands are decoded whole (dense, stride = stored columns) and
    // blocks point into them; only the others go through the scratch.
    const float *fa_all = NULL, *fb_all = NULL;
    if (ca)
        fa_all = trans_a ? wr_fp8_cache_get(ca, A, gen_a, fa, K, M, lda)
                         : wr_fp8_cache_get(ca, A, gen_a, fa, M, K, lda);
    if (cb)
        fb_all = trans_b ? wr_fp8_cache_get(cb, B, gen_b, fb, N, K, ldb)
                         : wr_fp8_cache_get(cb, B, gen_b, fb, K, N, ldb);

    // Block sizes: everything at once if the uncached operands fit the budget;
    // otherwise full K (unless K alone is huge), an N panel of half the budget,
    // M panels of the rest (a cached operand is never cut).
    const size_t budget = g_budget, Ms = (size_t)M, Ns = (size_t)N, Ks = (size_t)K;
    size_t kb = Ks, nb = Ns, mb = Ms;
    if (Ks * ((ca ? 0 : Ms) + (cb ? 0 : Ns)) > budget) {
        size_t kmax = WR_MAX(budget / (4 * WR_PANEL_MIN), (size_t)WR_PANEL_MIN);
        kb = WR_MIN(Ks, kmax);
        nb = WR_MIN(Ns, WR_MAX(budget / 2 / kb, (size_t)WR_PANEL_MIN));
        mb = WR_MIN(Ms, WR_MAX((budget - WR_MIN(budget, kb * nb)) / kb, (size_t)WR_PANEL_MIN));
        if (ca) mb = Ms;
        if (cb) nb = Ns;
    }
    size_t b_floats = cb ? 0 : WR_DIV_UP(kb * nb, 16) * 16;  // A part stays 64-byte aligned
    float *sb = NULL, *sa = NULL;
    if (!ca || !cb) {
        sb = scratch_get(b_floats + (ca ? 0 : kb * mb));
        sa = sb + b_floats;
    }

    for (size_t k0 = 0; k0 < Ks; k0 += kb) {
        int k = (int)WR_MIN(kb, Ks - k0);
        float beta_k = k0 == 0 ? beta : 1.0f;
        for (size_t n0 = 0; n0 < Ns; n0 += nb) {
            int n = (int)WR_MIN(nb, Ns - n0);
            int ldb_blk;
            // B is K x N (stored N x K when trans_b)
            const float *pb = operand_block(B, ldb, fb, fb_all, trans_b, Ns, Ks, k0, n0, k, n, sb, &ldb_blk);
            for (size_t m0 = 0; m0 < Ms; m0 += mb) {
                int m = (int)WR_MIN(mb, Ms - m0);
                int lda_blk;
                // A is M x K (stored K x M when trans_a)
                const float *pa = operand_block(A, lda, fa, fa_all, trans_a, Ks, Ms, m0, k0, m, k, sa,
                                                &lda_blk);
                cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                            trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, pa, lda_blk, pb, ldb_blk,
                            beta_k, C + m0 * (size_t)ldc + n0, ldc);
            }
        }
    }
}
