// wckpt.h — a worker's checkpoint (docs/ARCHITECTURE.md, "Checkpoints and
// resume"): the state that exists only on this worker, which a resumed job
// needs to reach the same digests: Birder's m and b over the whole vector and
// the dynamic loss scaler. The parameters are the shards' (PULLed on resume).
// Files are worker<rank>-<step>.ckpt in checkpoint_dir (common/checkpoint.h).
#ifndef WR_WCKPT_H
#define WR_WCKPT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef struct {
    const float *m, *b;  // Birder state [d] (NULL with the fp32 codec: nothing of it)
    size_t d;
    float scale;  // the loss scaler
    int clean;
} wr_wckpt_state;

// Writes rank's state after `step` (epoch for the record), keeping the newest
// checkpoint_keep files. WR_OK or WR_ERR (err names the file and the call).
int wr_wckpt_write(const wr_job_config *cfg, int rank, uint64_t epoch, uint64_t step,
                   const wr_wckpt_state *st, char *err);

// Reads rank's state of exactly `step` into m, b (d floats each; NULL with
// the fp32 codec) and the scaler. WR_OK, or WR_ERR naming the file and what is
// wrong (missing, corrupt, another job's or config's, another size).
int wr_wckpt_load(const wr_job_config *cfg, int rank, uint64_t step, float *m, float *b, size_t d,
                  float *scale, int *clean, char *err);

#endif
