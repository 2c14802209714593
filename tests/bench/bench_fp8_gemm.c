// bench_fp8_gemm.c — wr_fp8_gemm beside OpenBLAS sgemm on the same sizes and
// thread count, M = N = K = 256 .. 2048, 1 and 2 OpenBLAS threads.
// GFLOP/s = 2 M N K / best time. The two are timed alternately (best of
// REPS each) so load from other processes hits both alike; the ratio is the
// figure to read. Prints which OpenBLAS core and OPENBLAS_CORETYPE ran.
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "fp8_gemm.h"
#include "hfp8.h"
#include "cpu.h"
#include "wr_common.h"

typedef struct {
    int n;
    const float *a, *b;
    const uint8_t *qa, *qb;
    float *c;
} garg;

static void run_sgemm(void *p) {
    garg *g = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->n, g->n, g->n, 1.0f, g->a, g->n, g->b, g->n,
                0.0f, g->c, g->n);
}

static void run_fp8(void *p) {
    garg *g = p;
    // Forward-pass shape: activations E4M3-b11 times weights E4M3-b11.
    wr_fp8_gemm(0, 0, g->n, g->n, g->n, 1.0f, g->qa, WR_FP8_E4M3B11, g->n, g->qb, WR_FP8_E4M3B11, g->n, 0.0f,
                g->c, g->n);
}

static double time_once(void (*fn)(void *), void *arg) {
    double t0 = wr_now();
    fn(arg);
    return wr_now() - t0;
}

int main(void) {
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("bench_fp8_gemm: OpenBLAS core %s, OPENBLAS_CORETYPE=%s, CPU level %s\n", openblas_get_corename(),
           ct ? ct : "(unset)", wr_isa_name(wr_cpu_level()));
    const int sizes[4] = {256, 512, 1024, 2048};
    const int nmax = 2048;
    size_t nn = (size_t)nmax * nmax;
    float *a = wr_alloc_vec(nn * 4), *b = wr_alloc_vec(nn * 4), *c = wr_alloc_vec(nn * 4);
    uint8_t *qa = wr_alloc_vec(nn), *qb = wr_alloc_vec(nn);
    uint64_t s = 99;
    for (size_t i = 0; i < nn; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        a[i] = (float)((int)((s >> 40) & 0xFFFF) - 32768) / 8192.0f;
        b[i] = (float)((int)((s >> 20) & 0xFFFF) - 32768) / 8192.0f;
    }
    for (int t = 1; t <= 2; t++) {
        openblas_set_num_threads(t);
        for (int si = 0; si < 4; si++) {
            int n = sizes[si];
            size_t e = (size_t)n * n;
            // Dense n x n operands (leading dimension n).
            wr_fp8_encode_array(a, qa, e, WR_FP8_E4M3B11);
            wr_fp8_encode_array(b, qb, e, WR_FP8_E4M3B11);
            wr_fp8_decode_array(qa, a, e, WR_FP8_E4M3B11);  // sgemm gets the same values
            wr_fp8_decode_array(qb, b, e, WR_FP8_E4M3B11);
            garg g = {n, a, b, qa, qb, c};
            int reps = n <= 512 ? 30 : n == 1024 ? 20 : 8;
            double ts = 1e30, tf = 1e30;
            run_sgemm(&g);
            run_fp8(&g);
            for (int r = 0; r < reps; r++) {
                double x = time_once(run_sgemm, &g);
                if (x < ts) ts = x;
                x = time_once(run_fp8, &g);
                if (x < tf) tf = x;
            }
            double flop = 2.0 * n * (double)n * n;
            double gs = flop / ts / 1e9, gf = flop / tf / 1e9, ratio = gf / gs;
            printf("n=%4d threads=%d: sgemm %7.1f GFLOP/s, fp8 gemm %7.1f GFLOP/s, ratio %.3f "
                   "(best of %d)\n",
                   n, t, gs, gf, ratio, reps);
            char nm[96];
            const char *suf = t == 2 ? "_2t" : "";
            snprintf(nm, sizeof nm, "sgemm_gflops_%d%s", n, suf);
            wr_figure(nm, gs, "GFLOP/s");
            snprintf(nm, sizeof nm, "fp8_gemm_gflops_%d%s", n, suf);
            wr_figure(nm, gf, "GFLOP/s");
            snprintf(nm, sizeof nm, "fp8_gemm_vs_sgemm_%d%s", n, suf);
            wr_figure(nm, ratio, "");
        }
    }
    printf("(figures above ran with OpenBLAS core %s, OPENBLAS_CORETYPE=%s)\n", openblas_get_corename(),
           ct ? ct : "(unset)");
    free(a), free(b), free(c), free(qa), free(qb);
    wr_fp8_gemm_release_scratch();
    return 0;
}
