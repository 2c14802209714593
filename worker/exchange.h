// exchange.h — what differs between the worker's training modes: how a step's
// gradient becomes the update applied to the replica, and how the worker
// becomes part of a job and leaves it. The step loop (train.c) is the same
// for every mode; it drives an exchange through the operations below.
//
// Implementations:
//   local  (exchange_local.c)        one process, no cluster (`--standalone`):
//                                    Birder with n = 1, Adam or SGDM applied here
//   ps     (ps_join.c, ps_step.c)    the cluster client of mode=ps: PUSH each
//                                    shard's range, apply each shard's BROADCAST
//   allreduce (ar_mesh.c, ar_algo.c) mode=allreduce (ALGORITHMS.md 1.4): the ps
//                                    exchange's coordinator part (config, join,
//                                    heartbeat, leave: the mode comes with the
//                                    config), no shards; each step exchanges
//                                    CHUNKs with the other workers (hierarchical,
//                                    flat or fp32 ring) and applies the result
//
// An exchange owns all state it needs (optimizer or Birder state, sockets,
// threads); the loop owns the job (wr_train_job: config, model, data). Call
// order: config, join, then for t = job->first_step .. total_steps: members
// (when set), step, digests after steps that are due; leave, free. leave comes after the run or after the first
// failure (the exchange's or the loop's, from config on); free comes last.
//
// Return values of config, join and step: WR_EXIT_OK, or the process exit
// status to stop with (enum wr_exit_status) with err holding a one-line
// reason. An exchange that has already told its peers why it stops (or was
// stopped by them) remembers it, so leave does not tell them again.
#ifndef WR_EXCHANGE_H
#define WR_EXCHANGE_H

#include <stdint.h>

#include "config.h"
#include "keys.h"
#include "summary.h"

// Not an exit status: config, join or step saw the job end with status 0
// without this worker (ps: SHUTDOWN{0, "job done"} to a worker still
// waiting to join). The loop stops and the process exits 0, no summary.
#define WR_EXCHANGE_JOB_DONE 0x200

// The job a worker takes part in (train.h).
typedef struct wr_train_job wr_train_job;

typedef struct {
    int64_t t;                      // step, 1 .. job->total_steps (the step number on the wire)
    float lr;                       // lr_t = wr_lr_at(cfg, t, total_steps)
    int overflow;                   // the loss scale overflowed: g is zero this step
    double t_codec;                 // out: seconds of codec work (encode + apply) within step
    double bytes_sent, bytes_recv;  // out: bytes of the step's messages (headers + payloads)
    double bytes_internode;         // out: of bytes_sent, those to workers of other groups (allreduce)
    // out: 0, or the step this worker goes on from after it rejoined the job
    // during this step (ps: removed by the coordinator, registered again and
    // admitted as a joiner). Step t was not done; the parameters are the job's
    // after step resume_at - 1 and the exchange's own state is fresh; the loop
    // resets its part (loss scale, batch position) and goes on at resume_at.
    int64_t resume_at;
} wr_exchange_step;

// The membership in force at a step (ps: the cluster map of that step's epoch).
typedef struct {
    int position;    // this worker's position among the members in rank order: its data
                     // split, and position 0 carries the "rank 0" duties (progress, evaluation)
    int n;           // members
    uint64_t epoch;  // the membership's epoch (0: no cluster)
} wr_exchange_members;

// A worker's figures every progress_every steps (the loop fills the inputs;
// totals count from this worker's first step).
typedef struct {
    int64_t step, epoch;                 // the last step done, and the data epoch it belongs to (from 1)
    int64_t steps, samples;              // steps done, examples of its local batches
    double seconds;                      // training wall time since its first step
    double loss;                         // mean train loss since the last report
    double train_acc;                    // training accuracy of the batches since the last report
    double acc;                          // the last test accuracy, -1 = none yet
    double t_compute, t_encode, t_comm;  // seconds in each part of the steps
    double bytes_sent, bytes_recv;       // bytes of the step messages
    // out (the exchange): the shard whose broadcasts this worker waited for
    // longest since its last report (-1: no shards), that wait per step (ms)
    int slow_shard;
    double slow_wait_ms;
} wr_exchange_progress;

typedef struct {
    const char *mode;  // the summary's "mode": "standalone", "ps"

    // config: fills job->cfg (local: the command line's; ps: connects,
    // REGISTERs without a model and reads the config of the coordinator's
    // welcome) and job->max_batch (the model's largest batch: evaluation
    // batches too). Blocks up to the connect timeout (ps). Errors: the job
    // config cannot be had or honoured (WR_EXIT_CONFIG), no coordinator
    // (WR_EXIT_NO_COORDINATOR), the coordinator's SHUTDOWN status.
    int (*config)(void *self, wr_train_job *job, char *err);

    // join: becomes part of the job once the loop built job->model and loaded
    // the data (both stay the loop's). Fills job->rank, n_workers, n_shards,
    // total_steps and first_step (1, or a joiner's first step T), and sets
    // the initial parameters in the model (local: as initialised; ps:
    // REGISTERs with d, waits for a cluster map naming it, connects to the
    // shards, starts the heartbeat thread; in the epoch-1 map rank 0 sends the
    // parameters to the shards and every rank PULLs them, a joiner PULLs
    // those after step T - 1). Blocks up to the
    // registration timeout (ps). Errors: a job this worker cannot take part
    // in (WR_EXIT_CONFIG), a map or shard it cannot use, the heartbeat thread
    // not starting, a shard silent past step_timeout (WR_EXIT_FAILURE), the
    // coordinator's SHUTDOWN status.
    int (*join)(void *self, wr_train_job *job, char *err);

    // members: the membership in force at step t, called before step t's
    // compute with t increasing (ps: takes a pending cluster map whose start
    // step 'sf' is <= t). Never blocks. Errors: a map this worker cannot
    // follow (WR_EXIT_FAILURE). NULL: position job->rank of job->n_workers
    // at every step.
    int (*members)(void *self, int64_t t, wr_exchange_members *m, char *err);

    // step: the model's gradient of step s->t is in wr_model_grads; exchanges
    // it and applies the step's update to wr_model_params (the same update on
    // every replica). On return the exchange no longer reads the gradient
    // (the next model step may overwrite it). Blocks until the update is
    // applied (ps: a broadcast wait is bounded by step_timeout +
    // register_timeout, since the job may wait for joiners; other waits by
    // step_timeout). May rejoin the job instead (s->resume_at). Errors: a peer
    // silent past its bound, a lost connection, a refused message
    // (WR_EXIT_FAILURE), the coordinator's SHUTDOWN status.
    int (*step)(void *self, wr_exchange_step *s, char *err);

    // digests: reports the digest of each parameter range after step t (the
    // loop calls it every digest_every steps). Best effort: a send that fails
    // is logged. NULL when there are no replicas to compare (local).
    void (*digests)(void *self, int64_t t);

    // progress: reports p to whoever watches the job (ps: PROGRESS to the
    // coordinator; docs/PROTOCOL.md) and fills its out fields. Best effort,
    // never blocks for long: a send that fails is logged at debug level.
    // NULL: nobody to report to (local).
    void (*progress)(void *self, wr_exchange_progress *p);

    // leave: status WR_EXIT_OK: the run finished; st holds its figures (ps:
    // STATS, then LEAVE). Otherwise the run stops with that status and reason
    // (ps: ERROR to the coordinator with the code of what failed, unless the
    // coordinator stopped the job or was told already). Best effort, blocks
    // about a second at most; sockets stay open until free.
    void (*leave)(void *self, int status, const char *reason, const wr_train_stats *st);

    // free: stops threads, closes sockets (flushing what is queued, up to
    // their linger) and releases self.
    void (*free)(void *self);
} wr_exchange_ops;

// An exchange: its operations and its state (owned by whoever runs it:
// wr_train_run frees it).
typedef struct {
    const wr_exchange_ops *ops;
    void *self;
} wr_exchange;

// The single-process exchange over cfg (copied). Never fails.
wr_exchange wr_exchange_local(const wr_job_config *cfg);

// Options of the ps exchange (one worker of a cluster job).
typedef struct {
    const char *coordinator;  // address of the coordinator (tcp://host:port, ipc://path)
    const char *host;         // name this worker reports (NULL = gethostname)
    const char *group;        // the node (group) it runs on, for mode=allreduce and the map (NULL = host)
    const char *data_bind;    // mode=allreduce: where its data endpoint listens (NULL = derived, allreduce.h)
    const char *data_local;   // mode=allreduce over tcp: its ipc endpoint for its node (NULL = in /tmp,
                              // "none" = the tcp one serves its node too)
    double connect_timeout;   // seconds to wait for the coordinator's first reply
    wr_node_keys keys;        // --key/--coordinator-key (keys.on = 0 without keys)
    int allow_insecure;       // --allow-insecure (for the endpoints a worker binds in later modes)
} wr_ps_opts;

void wr_ps_opts_default(wr_ps_opts *o);

// The cluster client of mode=ps; o (and its strings) must outlive the
// exchange. Never fails: errors show in config.
wr_exchange wr_exchange_ps(const wr_ps_opts *o);

#endif
