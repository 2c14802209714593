// summary.h — the figures of a training run and the JSON summary it leaves
// behind (wren-worker --summary FILE), one schema for every mode (train.c
// writes it). scripts/wren-local --demo and scripts/bench-cluster parse it;
// the keys are listed at the end of this file.
#ifndef WR_SUMMARY_H
#define WR_SUMMARY_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef struct {
    double seconds;      // training wall time from the first step, evaluations included
    int64_t steps;       // steps this worker trained (a worker that joined late did fewer than the job)
    int64_t start_step;  // the first of them (1, or a joiner's start step; after a rejoin, the latest)
    int64_t last_step;   // the last step done (LEAVE's 's')
    int64_t samples;     // examples of this worker's local batches over its steps
    int64_t global_batch;
    double test_accuracy;           // last evaluation (-1 if none)
    double best_accuracy;           // best evaluation (-1 if none)
    double tta88_seconds;           // training seconds (wall time minus earlier evaluations) when the
                                    // test accuracy first reached 0.88 at an evaluation, -1 if never
    int64_t tta88_step;             // the step of that evaluation (0 if never)
    double final_loss;              // mean train loss over the last progress window
    double bytes_sent, bytes_recv;  // totals in the step path (headers + payloads)
    double bytes_internode;         // of bytes_sent, to workers of other groups (mode=allreduce; else 0)
    double t_compute, t_encode, t_comm, t_eval;  // seconds spent in each part of the steps
    int64_t evals;                               // test evaluations done
    double step_ms_median;  // median step time (ms; steady state, unlike the mean); 0 = unknown
} wr_train_stats;

// Global samples per second of the training steps: global_batch * steps /
// (seconds - t_eval) — evaluations excluded. 0 when nothing ran.
double wr_train_samples_per_s(const wr_train_stats *s);

// Writes the summary JSON object of a finished run to path atomically (temp
// file, fsync, rename: readers see the old file or the whole new one).
// `mode` is the exchange's ("ps", "standalone"); rank, n_workers and
// n_shards describe the worker in its job (standalone: rank 0 of 1, 0
// shards). Blocking file I/O. WR_OK or WR_ERR naming the path.
int wr_write_summary(const char *path, const char *mode, const wr_job_config *cfg, int rank, int n_workers,
                     int n_shards, const wr_train_stats *s, char *err);

// The summary's path for a worker of rank `rank`: pattern with every
// "{rank}" replaced by the rank (so workers sharing a host write one file
// each). WR_OK, or WR_ERR when the result does not fit in len bytes.
int wr_summary_path(const char *pattern, int rank, char *out, size_t len, char *err);

// Keys: mode, model, codec, broadcast, hfp8, rank, workers, shards, batch,
// steps, accuracy (last test accuracy, -1 = none), best_accuracy,
// final_loss, seconds, samples_per_s (global, training steps only),
// bytes_sent_per_step, bytes_recv_per_step, internode_bytes_sent_per_step
// (mode=allreduce: to other groups, as the transport counted), tta88_seconds (-1 = not
// reached), tta88_step, step_ms (mean), step_ms_median, compute_ms_per_step,
// encode_ms_per_step, comm_ms_per_step, comm_share, eval_seconds. Non-finite
// numbers are written as null.
#endif
