// layers_sparse_kernel.h — the sparse-left-operand GEMM (layers_sparse.h),
// written once over a vector type and included by layers_sparse_avx2.c and
// layers_sparse_avx512.c, which define V, VW, V_ZERO, V_LOAD, V_STORE,
// V_BCAST, V_FMA, V_MUL, and the row lister's LIST_W and LIST_CHUNK. A block of NV <= 8 vectors of C's row stays in
// registers while the row's entries of one column block of A stream by; the
// partial sums go through C between blocks (exact: a store and a load).
// Without V (included on its own, e.g. by scripts/check-layering) it is empty.
#ifdef V
#include <stddef.h>

#define SPMM_INLINE static inline __attribute__((always_inline))
#define WR_SPMM_MINI(a, b) ((a) < (b) ? (a) : (b))

// Rows r0..r1-1, columns j0..j0+NV*VW-1 of C. Each column block of B (kb
// rows x NV vectors) is first copied to a dense buffer: B's own row stride
// (2 KiB for 512 columns) would map its rows to a few L1 sets.
SPMM_INLINE void spmm_cols(const wr_sprows *s, const float *B, int ldb, float alpha, float *C, int ldc,
                           int r0, int r1, int j0, float *pk, const int NV) {
    const int nkb = s->nkb, kb = s->kb, W = NV * VW;
    const V al = V_BCAST(alpha);
    for (int b = 0; b < nkb; b++) {
        const int k0 = b * kb, k1 = WR_SPMM_MINI(s->cols, k0 + kb);
        for (int k = k0; k < k1; k++)
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++)
                V_STORE(pk + (size_t)(k - k0) * W + v * VW, V_LOAD(B + (size_t)k * ldb + j0 + v * VW));
        const float *pb = pk - (size_t)k0 * W;  // entry k reads pb + k W
        for (int r = r0; r < r1; r++) {
            const int32_t *bs = s->bstart + (size_t)r * (nkb + 1) + b;
            const int e1 = bs[1];
            float *c = C + (size_t)r * ldc + j0;
            V acc[8];
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++) acc[v] = b == 0 ? V_ZERO() : V_LOAD(c + v * VW);
            for (int e = bs[0]; e < e1; e++) {
                const V av = V_BCAST(s->val[e]);
                const float *bk = pb + (size_t)s->idx[e] * W;
#pragma GCC unroll 8
                for (int v = 0; v < NV; v++) acc[v] = V_FMA(av, V_LOAD(bk + v * VW), acc[v]);
            }
            if (b == nkb - 1)
#pragma GCC unroll 8
                for (int v = 0; v < NV; v++) acc[v] = V_MUL(al, acc[v]);
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++) V_STORE(c + v * VW, acc[v]);
        }
    }
}

// All of C's columns (N a multiple of VW) in the fewest blocks of at most 8
// vectors, of widths differing by at most one (784 columns at AVX-512: 7
// blocks of 7, not 6 of 8 and a 1-vector block that costs as much as one of 8).
SPMM_INLINE void spmm_all(const wr_sprows *s, const float *B, int ldb, int N, float alpha, float *C, int ldc,
                          int r0, int r1) {
    float pk[WR_SPMM_PACK_FLOATS] __attribute__((aligned(64)));
    const int nvec = N / VW, nblk = (nvec + 7) / 8;
    for (int i = 0, j = 0; i < nblk; i++) {
        const int nv = nvec / nblk + (i < nvec % nblk);
        switch (nv) {
        case 8: spmm_cols(s, B, ldb, alpha, C, ldc, r0, r1, j, pk, 8); break;
        case 7: spmm_cols(s, B, ldb, alpha, C, ldc, r0, r1, j, pk, 7); break;
        case 6: spmm_cols(s, B, ldb, alpha, C, ldc, r0, r1, j, pk, 6); break;
        case 5: spmm_cols(s, B, ldb, alpha, C, ldc, r0, r1, j, pk, 5); break;
        case 4: spmm_cols(s, B, ldb, alpha, C, ldc, r0, r1, j, pk, 4); break;
        case 3: spmm_cols(s, B, ldb, alpha, C, ldc, r0, r1, j, pk, 3); break;
        case 2: spmm_cols(s, B, ldb, alpha, C, ldc, r0, r1, j, pk, 2); break;
        default: spmm_cols(s, B, ldb, alpha, C, ldc, r0, r1, j, pk, 1); break;
        }
        j += nv * VW;
    }
}

// wr_sprows_build's rows (trans = 0), LIST_W columns per step: the including
// file's LIST_CHUNK(a, c, m, val, idx) lists the non-zero values among
// a[c..c+m) (m <= LIST_W; NaN is not zero: kept) with their columns at val
// and idx, writes LIST_W entries (those past the count are scratch: the next
// row's slot, rewritten when that row is listed, or the allocation's padding)
// and returns the count.
_Static_assert(LIST_W <= 16, "wr_sprows_alloc pads the lists by 16 entries for the full-vector stores");
SPMM_INLINE void sprows_rows(wr_sprows *s, const float *A, int lda) {
    const int cols = s->cols, nkb = s->nkb, kb = s->kb;
    for (int r = 0; r < s->rows; r++) {
        const float *a = A + (size_t)r * lda;
        const int32_t base = (int32_t)((size_t)r * cols);
        int32_t *idx = s->idx + base, *bs = s->bstart + (size_t)r * (nkb + 1);
        float *val = s->val + base;
        int n = 0;
        for (int b = 0; b < nkb; b++) {
            bs[b] = base + n;
            const int c1 = WR_SPMM_MINI(cols, (b + 1) * kb);
            for (int c = b * kb; c < c1; c += LIST_W)
                n += LIST_CHUNK(a, c, WR_SPMM_MINI(LIST_W, c1 - c), val + n, idx + n);
        }
        bs[nkb] = base + n;
    }
}

#endif
