// bench_model.c — samples/s of wr_model_step (forward + backward) on one core:
// mlp at B = 64 with HFP8 on (first/last fp32, and all layers FP8) and off, B =
// 128 HFP8, the cnn at B = 64 with HFP8 on and off and at B = 128 (the batch of
// scripts/bench-vs-pytorch) with HFP8 on, and the synthetic:110000000
// gradient pass. Data: real Fashion-MNIST batches from the sharded iterator,
// fetched outside the timed region. OpenBLAS threads = 1.
// The machine is shared and noisy: all cases are built first, then measured in
// interleaved short bursts over many rounds, and each reports its best burst
// (and the median). Prints which OPENBLAS_CORETYPE it ran with.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "data.h"
#include "model.h"
#include "wr_common.h"

typedef struct {
    const char *spec, *fig;
    int hfp8, all, B, burst;
    wr_model *m;
    float *x;
    uint8_t *y;
    int nb;  // batches held
    double *t;
} bench_case;

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 15;
    if (rounds < 1) rounds = 1;
    char err[WR_ERR_LEN];
    wr_dataset tr;
    if (wr_dataset_load(NULL, 1, &tr, err) != WR_OK) {
        fprintf(stderr, "bench_model: %s\n", err);
        return 1;
    }
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("bench_model: wr_model_step, one thread, OPENBLAS_CORETYPE=%s, %d interleaved rounds\n",
           ct ? ct : "(unset)", rounds);
    bench_case cs[] = {
        {"mlp", "mlp_step_samples_per_s_b64_hfp8", 1, 0, 64, 40, NULL, NULL, NULL, 0, NULL},
        {"mlp", "mlp_step_samples_per_s_b64_hfp8_all_layers", 1, 1, 64, 40, NULL, NULL, NULL, 0, NULL},
        {"mlp", "mlp_step_samples_per_s_b64_fp32", 0, 0, 64, 40, NULL, NULL, NULL, 0, NULL},
        {"mlp", "mlp_step_samples_per_s_b128_hfp8", 1, 0, 128, 20, NULL, NULL, NULL, 0, NULL},
        {"cnn", "cnn_step_samples_per_s_b64_hfp8", 1, 0, 64, 3, NULL, NULL, NULL, 0, NULL},
        {"cnn", "cnn_step_samples_per_s_b64_fp32", 0, 0, 64, 3, NULL, NULL, NULL, 0, NULL},
        {"cnn", "cnn_step_samples_per_s_b128_hfp8", 1, 0, 128, 2, NULL, NULL, NULL, 0, NULL},
        {"synthetic:110000000", "synthetic_110M_step_ms", 0, 0, 1, 1, NULL, NULL, NULL, 0, NULL},
    };
    const int nc = (int)(sizeof cs / sizeof *cs);
    for (int i = 0; i < nc; i++) {
        wr_model_opts o = {cs[i].hfp8, cs[i].all, 0.0f, cs[i].B, 42, 1};
        if (wr_model_create(cs[i].spec, &o, &cs[i].m, err) != WR_OK) {
            fprintf(stderr, "bench_model: %s\n", err);
            return 1;
        }
        cs[i].t = calloc(rounds, sizeof(double));
        if (strncmp(cs[i].spec, "synthetic:", 10) == 0) continue;
        wr_batch_iter it;
        if (wr_batch_iter_init(&it, &tr, cs[i].B, 0, 1, 1, err) != WR_OK) {
            fprintf(stderr, "bench_model: %s\n", err);
            return 1;
        }
        cs[i].nb = cs[i].burst;
        cs[i].x = malloc(sizeof(float) * 784 * cs[i].B * cs[i].nb);
        cs[i].y = malloc((size_t)cs[i].B * cs[i].nb);
        for (int s = 0; s < cs[i].nb; s++) {
            const float *x;
            const uint8_t *y;
            wr_batch_iter_next(&it, &x, &y, NULL, NULL);
            memcpy(cs[i].x + (size_t)s * 784 * cs[i].B, x, sizeof(float) * 784 * cs[i].B);
            memcpy(cs[i].y + (size_t)s * cs[i].B, y, (size_t)cs[i].B);
        }
        wr_batch_iter_free(&it);
    }
    for (int r = -1; r < rounds; r++)  // round -1 warms up
        for (int i = 0; i < nc; i++) {
            double t0 = wr_now();
            for (int s = 0; s < cs[i].burst; s++) {
                const float *x = cs[i].x ? cs[i].x + (size_t)s * 784 * cs[i].B : NULL;
                const uint8_t *y = cs[i].y ? cs[i].y + (size_t)s * cs[i].B : NULL;
                float loss;
                int c, ov;
                if (wr_model_step(cs[i].m, x, y, cs[i].B, &loss, &c, &ov, err) != WR_OK) {
                    fprintf(stderr, "bench_model: %s\n", err);
                    return 1;
                }
            }
            if (r >= 0) cs[i].t[r] = (wr_now() - t0) / cs[i].burst;
        }
    for (int i = 0; i < nc; i++) {
        qsort(cs[i].t, rounds, sizeof(double), cmp_d);
        double best = cs[i].t[0], med = cs[i].t[rounds / 2];
        if (cs[i].x) {
            printf("  %-4s B=%-3d hfp8 %-3s%-13s: best %.3f ms/step = %6.0f samples/s (median %6.0f)\n",
                   cs[i].spec, cs[i].B, cs[i].hfp8 ? "on" : "off", cs[i].all ? " (all layers)" : "",
                   best * 1e3, cs[i].B / best, cs[i].B / med);
            wr_figure(cs[i].fig, cs[i].B / best, "samples/s");
        } else {
            printf("  %s: best %.1f ms/step (median %.1f), %.2f G params/s\n", cs[i].spec, best * 1e3,
                   med * 1e3, 0.11 / best);
            wr_figure(cs[i].fig, best * 1e3, "ms");
        }
        wr_model_free(cs[i].m);
        free(cs[i].x);
        free(cs[i].y);
        free(cs[i].t);
    }
    wr_dataset_free(&tr);
    return 0;
}
