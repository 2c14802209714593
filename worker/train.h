// train.h — the worker's training loop, one for every mode (exchange.h says
// what differs between modes). For t = first_step .. total_steps: the
// membership of step t (the exchange's members), this worker's batch (data.h:
// split by its position among the members), forward/backward (model.h), the exchange's step
// (gradient -> update applied to the replica), replica digests every
// digest_every steps, a progress line every progress_every steps, test
// evaluations on the schedule of eval / eval_every with the time-to-accuracy
// bookkeeping, and at the end the summary JSON (summary.h).
#ifndef WR_TRAIN_H
#define WR_TRAIN_H

#include <signal.h>
#include <stdint.h>

#include "config.h"
#include "data.h"
#include "exchange.h"
#include "model.h"
#include "summary.h"

// The job as this worker takes part in it. The loop owns it; the exchange
// fills the fields its comments name (exchange.h).
typedef struct wr_train_job {
    wr_job_config cfg;       // config: the job config
    int max_batch;           // config: the model's largest batch (evaluation batches too)
    int threads;             // the loop: compute threads (model.h; the local exchange's update too)
    wr_model *model;         // the loop, between config and join: the model of cfg->model
    int data_model;          // the loop: 1 = Fashion-MNIST model, 0 = synthetic:D
    wr_dataset train, test;  // the loop: the data (test only when evaluation is on)
    int rank, n_workers;     // join: this worker's rank and the job's worker count
    int n_shards;            // join: shards of the job (0 without a cluster)
    int64_t total_steps;     // join: the job's optimizer steps (lr schedule, loop length)
    int64_t first_step;      // join: the first step this worker trains (1; a joiner's T)
} wr_train_job;

// Steps per epoch of the job: floor(training-set size / batch), at least 1
// (the synthetic model counts WR_FASHION_TRAIN examples).
int64_t wr_train_steps_per_epoch(const wr_train_job *job);

// A stop request from a signal handler (wren-worker: SIGTERM, SIGINT). The
// loop sets `training` while it runs steps and checks `requested` after each
// step: set, it ends the run as finished after that step (summary, the
// exchange's leave with WR_EXIT_OK: ps sends STATS and LEAVE{s = the step}).
typedef struct {
    volatile sig_atomic_t requested;  // the signal number (0 = none)
    volatile sig_atomic_t training;   // 1 while steps run
} wr_train_stop;

typedef struct {
    const char *summary_path;    // NULL = no summary file
    int threads;                 // compute threads (model.h; 0 = OpenBLAS default, layers 1)
    wr_train_stop *stop;         // NULL = no stop requests
    struct wr_metrics *metrics;  // --metrics: the registry the loop publishes to (NULL = none)
} wr_train_opts;

// Runs one worker's part of a job through ex, and frees ex. Blocking (the
// whole run). Returns the process exit status (enum wr_exit_status):
// WR_EXIT_OK, or the status of the first failure, with err holding a
// one-line reason (also logged at error level). A run that cannot write its
// summary ends with WR_EXIT_FAILURE. st (may be NULL) receives the run's
// figures, as far as it got.
int wr_train_run(wr_exchange ex, const wr_train_opts *o, wr_train_stats *st, char *err);

#endif
