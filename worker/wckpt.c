// wckpt.c — a worker's checkpoint (wckpt.h).
#include "wckpt.h"

#include <stdio.h>
#include <string.h>

#include "checkpoint.h"

static wr_ckpt_expect expect_of(const wr_job_config *cfg, int rank) {
    return (wr_ckpt_expect){WR_CKPT_WORKER, (uint32_t)rank, cfg->job_id, wr_config_digest(cfg)};
}

int wr_wckpt_write(const wr_job_config *cfg, int rank, uint64_t epoch, uint64_t step,
                   const wr_wckpt_state *st, char *err) {
    // The scaler as two u64 words: the scale's bits and the clean-step count.
    uint32_t bits;
    memcpy(&bits, &st->scale, sizeof bits);
    uint64_t scaler[2] = {bits, (uint64_t)st->clean};
    wr_ckpt_section sec[3] = {{"scaler", WR_CKPT_U64, scaler, sizeof scaler}};
    int n = 1;
    if (st->m) sec[n++] = (wr_ckpt_section){"m", WR_CKPT_FP32, st->m, st->d * sizeof(float)};
    if (st->b) sec[n++] = (wr_ckpt_section){"b", WR_CKPT_FP32, st->b, st->d * sizeof(float)};
    wr_ckpt_meta meta = {WR_CKPT_WORKER, (uint32_t)rank, cfg->job_id, epoch, step, wr_config_digest(cfg)};
    char prefix[32];
    snprintf(prefix, sizeof prefix, "worker%d", rank);
    return wr_ckpt_write(cfg->checkpoint_dir, prefix, &meta, sec, n, cfg->checkpoint_keep, err);
}

int wr_wckpt_load(const wr_job_config *cfg, int rank, uint64_t step, float *m, float *b, size_t d,
                  float *scale, int *clean, char *err) {
    char path[WR_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/worker%d-%012llu.ckpt", cfg->checkpoint_dir, rank,
             (unsigned long long)step);
    wr_ckpt ck;
    wr_ckpt_expect ex = expect_of(cfg, rank);
    if (wr_ckpt_load_file(path, &ex, &ck, err) != WR_OK) return WR_ERR;
    const void *sc = NULL, *pm = NULL, *pb = NULL;
    int rc = wr_ckpt_section_get(&ck, "scaler", WR_CKPT_U64, 2 * sizeof(uint64_t), &sc, err);
    if (rc == WR_OK && m) rc = wr_ckpt_section_get(&ck, "m", WR_CKPT_FP32, d * sizeof(float), &pm, err);
    if (rc == WR_OK && b) rc = wr_ckpt_section_get(&ck, "b", WR_CKPT_FP32, d * sizeof(float), &pb, err);
    if (rc == WR_OK) {
        uint64_t scaler[2];
        memcpy(scaler, sc, sizeof scaler);
        uint32_t bits = (uint32_t)scaler[0];
        memcpy(scale, &bits, sizeof bits);
        *clean = (int)scaler[1];
        if (m) memcpy(m, pm, d * sizeof(float));
        if (b) memcpy(b, pb, d * sizeof(float));
    }
    wr_ckpt_free(&ck);
    return rc;
}
