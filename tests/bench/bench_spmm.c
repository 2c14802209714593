// bench_spmm.c — the mlp's GEMMs: the sparse-left-operand GEMM
// (worker/layers_sparse.h) on the mlp's shapes at batch 128, beside OpenBLAS sgemm on the same dense shapes
// (the bound it chases: the dense GEMM a framework would run instead).
// Left operands have half their entries zero (Fashion-MNIST pixels; ReLU
// outputs at init). The lists are built as the layer builds them (X^T: a
// dense transpose, then the row lister) and timed apart. Figures: useful
// GFLOP/s (2 x non-zeros x N / time) and the time ratio sgemm / (spmm +
// lists): > 1 when the sparse GEMM beats the dense one. Then the HFP8 layer's
// dX as a BF16 GEMM (layers_bf16.h; CPUs with AVX512_BF16) beside sgemm on
// the same FP8-valued operands, packing included.
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench_common.h"
#include "cpu.h"
#include "layers_bf16.h"
#include "layers_sparse.h"
#include "wr_common.h"

typedef struct {
    const char *name;
    int trans, rows, cols, N;  // op(A) rows x cols, B cols x N
    const float *A, *B;
    float *C, *at;  // at: A^T dense, for trans
    wr_sprows s;
    long nnz;
} shape;

static void run_list(void *p) {
    shape *h = p;
    const float *a = h->A;
    if (h->trans) {  // A is cols x rows: its transpose's rows
        wr_transpose(h->A, h->cols, h->rows, h->at);
        a = h->at;
    }
    wr_sprows_build(&h->s, a, h->cols, h->rows, h->cols, 0, wr_spmm_kb());
}

static void run_spmm(void *p) {
    shape *h = p;
    wr_spmm(&h->s, h->B, h->N, h->N, 1.0f, h->C, h->N, 0, h->rows);
}

static void run_sgemm(void *p) {
    shape *h = p;
    cblas_sgemm(CblasRowMajor, h->trans ? CblasTrans : CblasNoTrans, CblasNoTrans, h->rows, h->N, h->cols,
                1.0f, h->A, h->trans ? h->rows : h->cols, h->B, h->N, 0.0f, h->C, h->N);
}

static float *random_matrix(size_t n, float density, uint64_t *st) {
    float *m = wr_alloc_vec(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        *st = *st * 6364136223846793005ull + 1442695040888963407ull;
        float u = (float)(*st >> 40) / 16777216.0f;
        m[i] = u < density ? u + 0.25f : 0.0f;
    }
    return m;
}

typedef struct {
    int M, N, K;  // dX = dZ (M x K) W^T, W N x K
    const float *dz, *w;
    float *c;
    uint32_t *aw, *tmp, *bp;
} nt_case;

static void run_bf16(void *p) {
    nt_case *h = p;
    wr_bf16_pairs(h->dz, h->M, h->K, h->K, h->aw);
    wr_bf16_pack_nt(h->w, h->N, h->K, h->K, h->tmp, h->bp);
    wr_bf16_gemm_nt(h->N, h->K, 1.0f, h->aw, h->bp, h->c, 0, h->M);
}

static void run_sgemm_nt(void *p) {
    nt_case *h = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, h->M, h->N, h->K, 1.0f, h->dz, h->K, h->w, h->K,
                0.0f, h->c, h->N);
}

// The mlp's second-layer dX (128 x 256 x 512) on values with at most 5
// significant bits (exact in bf16, as decoded FP8).
static void bench_bf16_dx(uint64_t *st) {
    nt_case h = {128, 512, 256, NULL, NULL, NULL, NULL, NULL, NULL};
    if (!wr_bf16_nt_ok(h.N, h.K)) {
        printf("  bf16 dX: this CPU has no AVX512_BF16 (or runs below AVX-512): sgemm runs\n");
        return;
    }
    float *dz = random_matrix((size_t)h.M * h.K, 1.0f, st), *w = random_matrix((size_t)h.N * h.K, 1.0f, st);
    for (size_t i = 0; i < (size_t)h.M * h.K; i++) dz[i] = (float)(int)(dz[i] * 16.0f) / 16.0f;
    for (size_t i = 0; i < (size_t)h.N * h.K; i++) w[i] = (float)(int)(w[i] * 16.0f) / 16.0f;
    h.dz = dz, h.w = w;
    h.c = wr_alloc_vec((size_t)h.M * h.N * sizeof(float));
    h.aw = wr_alloc_vec((size_t)h.M * h.K / 2 * 4);
    h.tmp = wr_alloc_vec((size_t)h.N * h.K / 2 * 4);
    h.bp = wr_alloc_vec((size_t)h.N * h.K / 2 * 4);
    double t_bf = wr_bench_best(run_bf16, &h, 50), t_bl = wr_bench_best(run_sgemm_nt, &h, 50);
    double gf = 2.0 * h.M * h.N * h.K / t_bf / 1e9;
    printf("  bf16 dX 128x256 -> 512: %6.1f us (%5.1f GFLOP/s, packing included); sgemm %6.1f us (%5.1f); "
           "sgemm/bf16 %.2f\n",
           t_bf * 1e6, gf, t_bl * 1e6, 2.0 * h.M * h.N * h.K / t_bl / 1e9, t_bl / t_bf);
    wr_figure("bf16_dx_gflops", gf, "GFLOP/s");
    wr_figure("bf16_dx_vs_sgemm", t_bl / t_bf, "x");
    free(dz), free(w), free(h.c), free(h.aw), free(h.tmp), free(h.bp);
}

int main(void) {
    if (!wr_spmm_ok(16)) {
        printf("bench_spmm: needs AVX2 (CPU level %s); nothing to measure\n", wr_isa_name(wr_cpu_level()));
        return 0;
    }
    openblas_set_num_threads(1);
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("bench_spmm: CPU level %s, OpenBLAS core %s, OPENBLAS_CORETYPE=%s, 1 thread, density 0.5\n",
           wr_isa_name(wr_cpu_level()), openblas_get_corename(), ct ? ct : "(unset)");
    shape sh[] = {
        {.name = "fwd_784x512", .trans = 0, .rows = 128, .cols = 784, .N = 512},  // X W, layer 1
        {.name = "dw_784x512", .trans = 1, .rows = 784, .cols = 128, .N = 512},   // X^T dZ, layer 1
        {.name = "fwd_512x256", .trans = 0, .rows = 128, .cols = 512, .N = 256},  // H W, layer 2
        {.name = "dw_512x256", .trans = 1, .rows = 512, .cols = 128, .N = 256},   // H^T dZ, layer 2
    };
    uint64_t st = 7;
    for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++) {
        shape *h = &sh[i];
        const float *A = random_matrix((size_t)h->rows * h->cols, 0.5f, &st);
        h->A = A;
        h->B = random_matrix((size_t)h->cols * h->N, 1.0f, &st);
        h->C = wr_alloc_vec((size_t)h->rows * h->N * sizeof(float));
        h->at = wr_alloc_vec((size_t)h->rows * h->cols * sizeof(float));
        h->nnz = 0;
        for (size_t k = 0; k < (size_t)h->rows * h->cols; k++) h->nnz += A[k] != 0.0f;
        wr_sprows_alloc(&h->s, h->rows, h->cols);
        run_list(h);
        double t_list = wr_bench_best(run_list, h, 50);
        double t_sp = wr_bench_best(run_spmm, h, 50);
        double t_bl = wr_bench_best(run_sgemm, h, 50);
        double gf = 2.0 * (double)h->nnz * h->N / t_sp / 1e9;
        double gf_bl = 2.0 * (double)h->rows * h->cols * h->N / t_bl / 1e9;
        printf("  %-12s %3dx%-3d N %3d: spmm %6.1f us (%5.1f GFLOP/s useful) + list %5.1f us; sgemm %6.1f us "
               "(%5.1f GFLOP/s dense); sgemm/(spmm+list) %.2f\n",
               h->name, h->rows, h->cols, h->N, t_sp * 1e6, gf, t_list * 1e6, t_bl * 1e6, gf_bl,
               t_bl / (t_sp + t_list));
        char nm[64];
        snprintf(nm, sizeof nm, "spmm_%s_gflops", h->name);
        wr_figure(nm, gf, "GFLOP/s");
        snprintf(nm, sizeof nm, "spmm_%s_vs_sgemm", h->name);
        wr_figure(nm, t_bl / (t_sp + t_list), "x");
    }
    bench_bf16_dx(&st);
    return 0;
}
