// layers_linear.c — a linear layer's sparse GEMMs (layers_internal.h): the
// lists of the left operand and the output rows split over the layer's threads.
#include <stdlib.h>

#include "cpu.h"
#include "layers_bf16.h"
#include "layers_internal.h"
#include "wr_common.h"

// Fewer output rows than this per thread: one thread (a thread start costs
// about what 16 rows of the mlp's smallest GEMM do; the BF16 dX's too).
#define SPARSE_MIN_ROWS 16

wr_linear_sparse *wr_linear_sparse_new(const wr_layer *l) {
    const int in = l->in_size, out = l->out_size, B = l->max_batch;
    // No lists where the kernels cannot run (below AVX2, WREN_SIMD=scalar):
    // they hold ~28 bytes per X entry of a max_batch (1000 in cluster mode).
    if (out % 16 != 0 || wr_cpu_level() < WR_ISA_AVX2) return NULL;
    wr_linear_sparse *sp = wr_calloc(1, sizeof *sp);
    wr_sprows_alloc(&sp->x, B, in);
    wr_sprows_alloc(&sp->xt, in, B);
    sp->xtd = wr_alloc_vec((size_t)in * B * sizeof(float));
    return sp;
}

void wr_linear_sparse_free(wr_linear_sparse *sp) {
    if (!sp) return;
    wr_sprows_free(&sp->x);
    wr_sprows_free(&sp->xt);
    free(sp->xtd);
    free(sp);
}

typedef struct {
    const wr_sprows *s;
    const float *B;
    float *C;
    float alpha;
    int N, r0, r1;
} spmm_job;

static void *spmm_run(void *arg) {
    const spmm_job *j = arg;
    wr_spmm(j->s, j->B, j->N, j->N, j->alpha, j->C, j->N, j->r0, j->r1);
    return NULL;
}

// C (s->rows x N, dense) = alpha op(A) B, rows split evenly over the threads.
static void spmm_threads(const wr_layer *l, const wr_sprows *s, const float *B, int N, float alpha,
                         float *C) {
    const int rows = s->rows;
    const int T = WR_MAX(1, WR_MIN(l->threads, rows / SPARSE_MIN_ROWS));
    spmm_job jobs[WR_LAYER_MAX_THREADS];
    for (int t = 0; t < T; t++)
        jobs[t] = (spmm_job){s, B, C, alpha, N, (int)((long)rows * t / T), (int)((long)rows * (t + 1) / T)};
    wr_layer_run_jobs(spmm_run, jobs, sizeof jobs[0], T);
}

int wr_linear_sparse_fwd(wr_layer *l, const float *x, const float *w, float alpha, int B) {
    wr_linear_sparse *sp = l->sp;
    const int in = l->in_size, out = l->out_size;
    if (!sp || !wr_spmm_ok(out)) return 0;
    wr_sprows_build(&sp->x, x, in, B, in, 0, wr_spmm_kb());
    spmm_threads(l, &sp->x, w, out, alpha, l->y);
    return 1;
}

int wr_linear_sparse_dw(wr_layer *l, const float *x, const float *dz, float alpha_w, int B) {
    wr_linear_sparse *sp = l->sp;
    const int in = l->in_size, out = l->out_size;
    if (!sp || !wr_spmm_ok(out)) return 0;
    // X^T's lists: the rows of X transposed (a dense transpose and the vector lister are
    // faster than moving X's lists entry by entry)
    wr_transpose(x, B, in, sp->xtd);
    wr_sprows_build(&sp->xt, sp->xtd, B, in, B, 0, wr_spmm_kb());
    spmm_threads(l, &sp->xt, dz, out, alpha_w, l->dw);
    return 1;
}

typedef struct {
    const wr_layer *l;
    float alpha;
    int r0, r1;
} bf16_job;

static void *bf16_dx_run(void *arg) {
    const bf16_job *j = arg;
    const wr_layer *l = j->l;
    wr_bf16_gemm_nt(l->in_size, l->out_size, j->alpha, l->dz2, l->w2t, l->dx, j->r0, j->r1);
    return NULL;
}

void wr_linear_bf16_dx(wr_layer *l, const float *dzq, const float *wq, float alpha, int B) {
    const int in = l->in_size, out = l->out_size;
    wr_bf16_pairs(dzq, B, out, out, l->dz2);
    wr_bf16_pack_nt(wq, in, out, out, l->w2, l->w2t);
    const int T = WR_MAX(1, WR_MIN(l->threads, B / SPARSE_MIN_ROWS));
    bf16_job jobs[WR_LAYER_MAX_THREADS];
    for (int t = 0; t < T; t++)
        jobs[t] = (bf16_job){l, alpha, (int)((long)B * t / T), (int)((long)B * (t + 1) / T)};
    wr_layer_run_jobs(bf16_dx_run, jobs, sizeof jobs[0], T);
}
