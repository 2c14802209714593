// bench_model.c — samples/s of wr_model_step (forward + backward) on one core:
// mlp at B = 64 with HFP8 on (first/last fp32, and all layers FP8) and off, the
// cnn at B = 64 with HFP8 on and off, and the synthetic:110000000 gradient pass.
// Data: real Fashion-MNIST batches from the sharded iterator. Best of 5 runs of
// N steps. OpenBLAS threads = 1. Prints which OPENBLAS_CORETYPE it ran with.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "data.h"
#include "model.h"
#include "wr_common.h"

static double run(const char *spec, int hfp8, int all_fp8, int B, int steps, const wr_dataset *tr) {
    char err[WR_ERR_LEN];
    wr_model *m;
    wr_model_opts o = {hfp8, all_fp8, 0.0f, B, 42, 1};
    if (wr_model_create(spec, &o, &m, err) != WR_OK) {
        fprintf(stderr, "bench_model: %s\n", err);
        exit(1);
    }
    wr_batch_iter it;
    int synth = strncmp(spec, "synthetic:", 10) == 0;
    if (!synth && wr_batch_iter_init(&it, tr, B, 0, 1, 1, err) != WR_OK) {
        fprintf(stderr, "bench_model: %s\n", err);
        exit(1);
    }
    // Batches are fetched outside the timed region.
    const float **xs = calloc(steps, sizeof *xs);
    const uint8_t **ys = calloc(steps, sizeof *ys);
    float *xbuf = synth ? NULL : malloc(sizeof(float) * 784 * B * steps);
    uint8_t *ybuf = synth ? NULL : malloc((size_t)B * steps);
    for (int s = 0; s < steps && !synth; s++) {
        const float *x;
        const uint8_t *y;
        wr_batch_iter_next(&it, &x, &y, NULL, NULL);
        memcpy(xbuf + (size_t)s * 784 * B, x, sizeof(float) * 784 * B);
        memcpy(ybuf + (size_t)s * B, y, (size_t)B);
        xs[s] = xbuf + (size_t)s * 784 * B;
        ys[s] = ybuf + (size_t)s * B;
    }
    double best = 1e30;
    for (int rep = 0; rep < 6; rep++) {  // the first repetition warms up
        double t0 = wr_now();
        for (int s = 0; s < steps; s++) {
            float loss;
            int c, ov;
            wr_model_step(m, xs[s], ys[s], B, &loss, &c, &ov, err);
        }
        double t = wr_now() - t0;
        if (rep > 0 && t < best) best = t;
    }
    if (!synth) wr_batch_iter_free(&it);
    free(xs), free(ys), free(xbuf), free(ybuf);
    wr_model_free(m);
    return best / steps;
}

int main(void) {
    char err[WR_ERR_LEN];
    wr_dataset tr;
    if (wr_dataset_load(NULL, 1, &tr, err) != WR_OK) {
        fprintf(stderr, "bench_model: %s\n", err);
        return 1;
    }
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("bench_model: wr_model_step, one thread, OPENBLAS_CORETYPE=%s, best of 5\n",
           ct ? ct : "(unset)");
    struct {
        const char *spec, *fig;
        int hfp8, all, B, steps;
    } cases[] = {
        {"mlp", "mlp_step_samples_per_s_b64_hfp8", 1, 0, 64, 200},
        {"mlp", "mlp_step_samples_per_s_b64_hfp8_all_layers", 1, 1, 64, 200},
        {"mlp", "mlp_step_samples_per_s_b64_fp32", 0, 0, 64, 200},
        {"mlp", "mlp_step_samples_per_s_b128_hfp8", 1, 0, 128, 100},
        {"cnn", "cnn_step_samples_per_s_b64_hfp8", 1, 0, 64, 10},
        {"cnn", "cnn_step_samples_per_s_b64_fp32", 0, 0, 64, 10},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        double t = run(cases[i].spec, cases[i].hfp8, cases[i].all, cases[i].B, cases[i].steps, &tr);
        printf("  %-4s B=%-3d hfp8 %-3s%s: %.3f ms/step, %.0f samples/s\n", cases[i].spec,
               cases[i].B, cases[i].hfp8 ? "on" : "off", cases[i].all ? " (all layers)" : "",
               t * 1e3, cases[i].B / t);
        wr_figure(cases[i].fig, cases[i].B / t, "samples/s");
    }
    double t = run("synthetic:110000000", 0, 0, 1, 3, NULL);
    printf("  synthetic:110000000: %.1f ms/step (%.2f G params/s)\n", t * 1e3, 0.11 / t);
    wr_figure("synthetic_110M_step_ms", t * 1e3, "ms");
    wr_dataset_free(&tr);
    return 0;
}
