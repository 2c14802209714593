// shard_ckpt.c — the shard's checkpoints (docs/ARCHITECTURE.md,
// "Checkpoints and resume"): the master range and the fp32 codec's
// optimizer state every checkpoint_every steps, written atomically with
// common/checkpoint.h; and on resume the newest valid one, then exactly the
// step the coordinator chose.
#include "shard_internal.h"

// Messages are cut to their buffers on purpose.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#include <stdio.h>
#include <string.h>

#include "checkpoint.h"
#include "log.h"

static void prefix_of(const shard_node *s, char *out, size_t len) { snprintf(out, len, "shard%d", s->index); }

static wr_ckpt_expect expect_of(const shard_node *s) {
    return (wr_ckpt_expect){WR_CKPT_SHARD, (uint32_t)s->index, s->cfg.job_id, wr_config_digest(&s->cfg)};
}

void shard_ckpt_before_step(shard_node *s) {
    uint64_t t = wr_shard_core_step(s->core);
    if (s->cfg.checkpoint_every <= 0 || t == 0 || t % (uint64_t)s->cfg.checkpoint_every != 0) return;
    if (t == s->ckpt_step) return;  // written already (e.g. before an empty step)
    s->ckpt_step = t;
    size_t bytes = wr_shard_core_n(s->core) * sizeof(float);
    wr_ckpt_section sec[3] = {{"x", WR_CKPT_FP32, wr_shard_core_params(s->core), bytes}};
    int n = 1;
    if (wr_shard_core_opt_m(s->core))
        sec[n++] = (wr_ckpt_section){"m", WR_CKPT_FP32, wr_shard_core_opt_m(s->core), bytes};
    if (wr_shard_core_opt_v(s->core))
        sec[n++] = (wr_ckpt_section){"v", WR_CKPT_FP32, wr_shard_core_opt_v(s->core), bytes};
    wr_ckpt_meta meta = {
        WR_CKPT_SHARD, (uint32_t)s->index, s->cfg.job_id, s->mem.epoch, t, wr_config_digest(&s->cfg)};
    char prefix[32], err[WR_ERR_LEN];
    prefix_of(s, prefix, sizeof prefix);
    double t0 = wr_now();
    // A failed write is loud but not fatal: the job goes on, the next one may succeed.
    if (wr_ckpt_write(s->cfg.checkpoint_dir, prefix, &meta, sec, n, s->cfg.checkpoint_keep, err) != WR_OK) {
        s->ckpt_failures++;
        wr_error("checkpoint of step %llu not written: %s", (unsigned long long)t, err);
        return;
    }
    s->ckpt_written++;
    s->t_ckpt += wr_now() - t0;
    wr_debug("checkpoint of step %llu written in %.3f s", (unsigned long long)t, wr_now() - t0);
}

// Puts a checkpoint that was read in place. WR_OK or WR_ERR (err says why).
static int restore(shard_node *s, const wr_ckpt *ck, char *err) {
    size_t bytes = wr_shard_core_n(s->core) * sizeof(float);
    const void *x = NULL, *m = NULL, *v = NULL;
    if (wr_ckpt_section_get(ck, "x", WR_CKPT_FP32, bytes, &x, err) != WR_OK) return WR_ERR;
    if (wr_shard_core_opt_m(s->core) && wr_ckpt_section_get(ck, "m", WR_CKPT_FP32, bytes, &m, err) != WR_OK)
        return WR_ERR;
    if (wr_shard_core_opt_v(s->core) && wr_ckpt_section_get(ck, "v", WR_CKPT_FP32, bytes, &v, err) != WR_OK)
        return WR_ERR;
    return wr_shard_core_restore(s->core, ck->meta.step, x, m, v, err);
}

int shard_ckpt_load_newest(shard_node *s, uint64_t *step, char *err) {
    char prefix[32];
    prefix_of(s, prefix, sizeof prefix);
    wr_ckpt ck;
    wr_ckpt_expect ex = expect_of(s);
    *step = 0;
    int rc = wr_ckpt_load_latest(s->cfg.checkpoint_dir, prefix, &ex, &ck, err);
    if (rc == WR_CKPT_ENOENT) {
        wr_info("resume: no checkpoint of shard %d in %s: starting from step 0", s->index,
                s->cfg.checkpoint_dir);
        return WR_OK;
    }
    if (rc != WR_OK) return WR_ERR;
    rc = restore(s, &ck, err);
    if (rc == WR_OK) {
        *step = ck.meta.step;
        wr_info("resume: %s holds step %llu", ck.path, (unsigned long long)ck.meta.step);
    }
    wr_ckpt_free(&ck);
    return rc;
}

int shard_ckpt_load_step(shard_node *s, uint64_t step, char *err) {
    if (step == wr_shard_core_step(s->core) && (step == 0 || wr_shard_core_has_params(s->core))) return WR_OK;
    if (step == 0) {  // another shard has no checkpoint: everyone starts afresh
        wr_shard_core_reset(s->core);
        return WR_OK;
    }
    char path[WR_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/shard%d-%012llu.ckpt", s->cfg.checkpoint_dir, s->index,
             (unsigned long long)step);
    wr_ckpt ck;
    wr_ckpt_expect ex = expect_of(s);
    if (wr_ckpt_load_file(path, &ex, &ck, err) != WR_OK) return WR_ERR;
    int rc = restore(s, &ck, err);
    wr_ckpt_free(&ck);
    if (rc == WR_OK)
        wr_info("resume: back to step %llu (%s), the newest step every shard holds", (unsigned long long)step,
                path);
    return rc;
}
