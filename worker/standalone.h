// standalone.h — the single-process trainer: the `single_process` baseline of the
// time-to-accuracy experiment. No cluster, no sockets: the same data, seeds,
// model and HFP8 options as a cluster job with one worker.
#ifndef WR_STANDALONE_H
#define WR_STANDALONE_H

#include "config.h"

// Trains cfg->model on Fashion-MNIST (cfg->data_dir) for cfg->epochs epochs of
// floor(60000 / cfg->batch) steps (or cfg->steps steps if > 0), batch cfg->batch,
// batches from the sharded iterator as rank 0 of 1 with cfg->seed, model options
// from cfg (hfp8, fp8_first_last, loss_scale; max_batch = batch; one OpenBLAS
// thread), lr_t = wr_lr_at(cfg, t, total) (schedule.h).
// The update depends on cfg->codec:
//   fp32:   cfg->optimizer: Adam (adam_beta1/2, adam_eps) or SGD-momentum
//           (momentum), decoupled weight decay cfg->wd (optim.h) — the Adam baseline;
//   birder: Birder with n = 1: m, b EMAs with cfg->beta, x -= lr_t (Q(m/b) + wd x),
//           the random bits keyed (seed, rank 0, step t), counter = index — the
//           same update a 1-worker cluster applies.
// Logs (info) a progress line every cfg->progress_every steps (epoch, step,
// loss and accuracy averaged since the last line, samples/s, loss scale), the
// test accuracy after each epoch (cfg->eval_every_epoch = 1; 0: only at the end;
// -1: never; cfg->eval_every > 0: every eval_every steps and at the end instead,
// unless eval_every_epoch = -1), and `time_to_88` (training seconds — wall time
// from the first step minus earlier evaluations — until the test accuracy first
// reached 0.88 at an evaluation, or -1).
// If summary_path is not NULL, writes one JSON object there at the end:
//   {"mode":"standalone","model":..,"codec":..,"optimizer":..,"hfp8":..,
//    "fp8_first_last":..,"batch":..,"lr":..,"steps":..,"epochs_run":..,
//    "test_accuracy":..,"epoch_accuracy":[..],"seconds":..,"train_seconds":..,
//    "samples_per_s":..,"tta88_seconds":..,"tta88_step":..,"eval_every":..,
//    "evals":..,"eval_seconds":..,"final_loss":..,"overflows":..,"loss_scale":..}
// (epoch_accuracy holds every evaluation in order — per epoch, or every
// eval_every steps; evals is their count; tta88_step 0 if 0.88 not reached)
// (test_accuracy -1 when evaluation is off; synthetic models train without data
// and report accuracy 0; seconds = wall time of the training loop including
// evaluations, samples_per_s = samples / train_seconds, training steps only.)
// Blocking. WR_OK, or WR_ERR with err (bad model spec, missing data, cannot
// write the summary).
int wr_standalone_train(const wr_job_config *cfg, const char *summary_path, char *err);

#endif
