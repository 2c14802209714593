// layers_sparse.c — lists of non-zero entries, dispatch, the scalar reference
// and the transpose (layers_sparse.h).
#include "layers_sparse.h"

#include <math.h>
#include <string.h>

#include "cpu.h"
#include "wr_common.h"

int wr_spmm_ok(int N) { return wr_cpu_level() >= WR_ISA_AVX2 && N > 0 && N % 16 == 0; }

// A column block of B's rows at 8 vectors per row stays in L1 (layers_sparse.h).
int wr_spmm_kb(void) { return wr_cpu_level() == WR_ISA_AVX512 ? 64 : 96; }

void wr_sprows_alloc(wr_sprows *s, int max_rows, int max_cols) {
    memset(s, 0, sizeof *s);
    WR_CHECK(max_rows > 0 && max_cols > 0);
    s->max_rows = max_rows;
    s->max_cols = max_cols;
    s->max_nkb = max_cols;  // kb >= 1
    s->cap_entries = (size_t)max_rows * (size_t)max_cols;
    s->idx = wr_alloc_vec((s->cap_entries + 16) * sizeof(int32_t));
    s->val = wr_alloc_vec((s->cap_entries + 16) * sizeof(float));
    s->bstart = wr_alloc_vec((size_t)max_rows * (size_t)(s->max_nkb + 1) * sizeof(int32_t));
    s->cnt = wr_alloc_vec((size_t)max_rows * sizeof(int32_t));
}

void wr_sprows_free(wr_sprows *s) {
    if (!s) return;
    free(s->idx);
    free(s->val);
    free(s->bstart);
    free(s->cnt);
    memset(s, 0, sizeof *s);
}

// Rows of A: branch-free append (the entry is written, the count advances
// only for a non-zero value).
static void build_rows(wr_sprows *s, const float *A, int lda) {
    const int cols = s->cols, nkb = s->nkb, kb = s->kb;
    for (int r = 0; r < s->rows; r++) {
        const float *a = A + (size_t)r * lda;
        int32_t *idx = s->idx + (size_t)r * cols, *bs = s->bstart + (size_t)r * (nkb + 1);
        float *val = s->val + (size_t)r * cols;
        const int32_t base = (int32_t)((size_t)r * cols);
        int n = 0;
        for (int b = 0; b < nkb; b++) {
            bs[b] = base + n;
            int c1 = WR_MIN(cols, (b + 1) * kb);
            for (int c = b * kb; c < c1; c++) {
                float v = a[c];
                idx[n] = c;
                val[n] = v;
                n += v != 0.0f;
            }
        }
        bs[nkb] = base + n;
    }
}

// Rows of A^T (A stored cols x rows): A is read by its rows, each value
// appended to the list of its column; block starts recorded as c crosses them.
static void build_trans(wr_sprows *s, const float *A, int lda) {
    const int rows = s->rows, cols = s->cols, nkb = s->nkb, kb = s->kb;
    memset(s->cnt, 0, (size_t)rows * sizeof(int32_t));
    for (int c = 0; c < cols; c++) {
        if (c % kb == 0)
            for (int r = 0; r < rows; r++)
                s->bstart[(size_t)r * (nkb + 1) + c / kb] = (int32_t)((size_t)r * cols) + s->cnt[r];
        const float *a = A + (size_t)c * lda;
        for (int r = 0; r < rows; r++) {
            float v = a[r];
            size_t at = (size_t)r * cols + (size_t)s->cnt[r];
            s->idx[at] = c;
            s->val[at] = v;
            s->cnt[r] += v != 0.0f;
        }
    }
    for (int r = 0; r < rows; r++) {
        int32_t *bs = s->bstart + (size_t)r * (nkb + 1);
        for (int b = WR_DIV_UP(cols, kb); b < nkb; b++) bs[b] = (int32_t)((size_t)r * cols) + s->cnt[r];
        bs[nkb] = (int32_t)((size_t)r * cols) + s->cnt[r];
    }
}

void wr_sprows_build(wr_sprows *s, const float *A, int lda, int rows, int cols, int trans, int kb) {
    WR_CHECK(rows >= 0 && cols >= 0 && rows <= s->max_rows && cols <= s->max_cols && kb >= 1);
    s->rows = rows;
    s->cols = cols;
    s->kb = kb;
    s->nkb = WR_MAX(1, WR_DIV_UP(cols, kb));
    if (trans)
        build_trans(s, A, lda);
    else if (wr_cpu_level() == WR_ISA_AVX512 && kb % 16 == 0)
        wr_sprows_rows_avx512(s, A, lda);
    else if (wr_cpu_level() >= WR_ISA_AVX2 && kb % 8 == 0)
        wr_sprows_rows_avx2(s, A, lda);
    else
        build_rows(s, A, lda);
}

void wr_spmm(const wr_sprows *s, const float *B, int ldb, int N, float alpha, float *C, int ldc, int r0,
             int r1) {
    WR_CHECK(wr_spmm_ok(N) && s->kb <= wr_spmm_kb() && r0 >= 0 && r1 <= s->rows);
    if (wr_cpu_level() == WR_ISA_AVX512)
        wr_spmm_avx512(s, B, ldb, N, alpha, C, ldc, r0, r1);
    else
        wr_spmm_avx2(s, B, ldb, N, alpha, C, ldc, r0, r1);
}

void wr_spmm_ref(int trans, int rows, int cols, const float *A, int lda, const float *B, int ldb, int N,
                 float alpha, float *C, int ldc) {
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < N; j++) {
            float acc = 0.0f;
            for (int k = 0; k < cols; k++) {
                float a = trans ? A[(size_t)k * lda + r] : A[(size_t)r * lda + k];
                if (a != 0.0f) acc = fmaf(a, B[(size_t)k * ldb + j], acc);
            }
            C[(size_t)r * ldc + j] = alpha * acc;
        }
}

#define TT 32  // transpose tile: 32 x 32 floats read and written per tile

void wr_transpose(const float *a, int M, int N, float *t) {
    if (wr_cpu_level() >= WR_ISA_AVX2) {
        wr_transpose_avx2(a, M, N, t);
        return;
    }
    for (int i0 = 0; i0 < M; i0 += TT)
        for (int j0 = 0; j0 < N; j0 += TT) {
            int i1 = WR_MIN(M, i0 + TT), j1 = WR_MIN(N, j0 + TT);
            for (int j = j0; j < j1; j++)
                for (int i = i0; i < i1; i++) t[(size_t)j * M + i] = a[(size_t)i * N + j];
        }
}
