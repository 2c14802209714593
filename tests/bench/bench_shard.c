// bench_shard.c — the shard's per-step work without sockets: n pushes
// accepted (zero-copy) and the step finished (count + requantize + apply for
// 1bit, count + apply for exact, average + Adam for fp32) over one shard's
// range. Sizes: half of the mlp (d = 535818 over 2 shards) and half of
// BERT-Base size (110M over 2 shards). Best of N; the machine is shared, so
// figures are noisy. WREN_BENCH_QUICK=1 skips the 110M case.
//
// FIGURE shard_step_<codec>_<size>_n<workers>_ms        time per step
// FIGURE shard_step_<codec>_<size>_n<workers>_gelems    elements per second (G)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "birder.h"
#include "config.h"
#include "proto.h"
#include "shard.h"

typedef struct {
    wr_shard_core *c;
    int n_workers;
    size_t n;
    uint64_t lo;
    int codec;
    void **push;
    void *out;
} ctx_t;

static void one_step(void *p) {
    ctx_t *a = p;
    char err[WR_ERR_LEN];
    wr_pmsg h;
    for (int r = 0; r < a->n_workers; r++) {
        wr_pmsg_init(&h, WR_MT_PUSH);
        h.step = wr_shard_core_step(a->c) + 1;
        h.shard = 0;
        h.rank = r;
        h.offset = a->lo;
        h.n_elems = a->n;
        h.codec = a->codec;
        size_t len = a->codec == WR_CODEC_BITS ? wr_birder_words(a->n) * 8 : a->n * 4;
        h.payload_len = len;
        if (wr_shard_core_push(a->c, &h, a->push[r], len, err) != WR_OK) {
            fprintf(stderr, "push: %s\n", err);
            exit(1);
        }
    }
    wr_pmsg bh;
    if (wr_shard_core_finish(a->c, a->out, &bh, err) != WR_OK) {
        fprintf(stderr, "finish: %s\n", err);
        exit(1);
    }
}

static void run(const char *codec_name, int job_codec, int bcast, const char *size_name, size_t n,
                int n_workers, int reps) {
    wr_job_config cfg;
    wr_config_defaults(&cfg);
    cfg.codec = job_codec;
    cfg.broadcast = bcast;
    cfg.steps = 1000000;
    char err[WR_ERR_LEN];
    ctx_t a = {0};
    a.n_workers = n_workers;
    a.n = n;
    a.lo = 0;
    a.codec = job_codec == WR_JOB_CODEC_BIRDER ? WR_CODEC_BITS : WR_CODEC_FP32;
    a.c = wr_shard_core_new(&cfg, 0, 0, n, n_workers, cfg.steps, err);
    if (!a.c) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    float *x0 = wr_alloc_vec(n * 4);
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_PARAMS);
    h.shard = 0;
    h.offset = 0;
    h.n_elems = n;
    h.codec = WR_CODEC_FP32;
    wr_shard_core_set_params(a.c, &h, x0, n * 4, err);
    a.push = calloc((size_t)n_workers, sizeof *a.push);
    size_t len = a.codec == WR_CODEC_BITS ? wr_birder_words(n) * 8 : n * 4;
    for (int r = 0; r < n_workers; r++) {
        a.push[r] = wr_alloc_vec(len);
        uint8_t *b = a.push[r];
        for (size_t i = 0; i < len; i++) b[i] = (uint8_t)(i * 131 + (size_t)r * 17 + 1);
        if (a.codec == WR_CODEC_FP32)
            for (size_t i = 0; i < n; i++)
                ((float *)a.push[r])[i] = (float)((i + (size_t)r) % 97) * 1e-3f - 0.05f;
    }
    a.out = wr_alloc_vec(wr_shard_core_bcast_bytes(a.c));
    double t = wr_bench_best(one_step, &a, reps);
    char name[128];
    printf("shard step %-6s %-5s n=%zu workers=%d: %.3f ms (%.2f G elem/s)\n", codec_name, size_name, n,
           n_workers, t * 1e3, (double)n / t / 1e9);
    snprintf(name, sizeof name, "shard_step_%s_%s_n%d_ms", codec_name, size_name, n_workers);
    wr_figure(name, t * 1e3, "ms");
    snprintf(name, sizeof name, "shard_step_%s_%s_n%d_gelems", codec_name, size_name, n_workers);
    wr_figure(name, (double)n / t / 1e9, "Gelem/s");
    for (int r = 0; r < n_workers; r++) free(a.push[r]);
    free(a.push);
    free(a.out);
    free(x0);
    wr_shard_core_free(a.c);
}

int main(void) {
    int quick = getenv("WREN_BENCH_QUICK") != NULL;
    const size_t mlp = 267968, big = 55000000;
    for (int nw = 2; nw <= 4; nw += 2) {
        run("1bit", WR_JOB_CODEC_BIRDER, WR_BCAST_1BIT, "mlp", mlp, nw, 50);
        run("exact", WR_JOB_CODEC_BIRDER, WR_BCAST_EXACT, "mlp", mlp, nw, 50);
        run("fp32", WR_JOB_CODEC_FP32, WR_BCAST_1BIT, "mlp", mlp, nw, 50);
    }
    if (!quick) {
        run("1bit", WR_JOB_CODEC_BIRDER, WR_BCAST_1BIT, "55m", big, 2, 5);
        run("exact", WR_JOB_CODEC_BIRDER, WR_BCAST_EXACT, "55m", big, 2, 5);
    }
    return 0;
}
